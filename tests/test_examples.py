"""The examples/ scripts run end to end at a tiny budget (real SB3, real MiniWorld, real ffmpeg)."""

import subprocess
import sys
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_example(script: str, *args: str) -> str:
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / script), *args],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


@pytest.mark.slow
@pytest.mark.parametrize("script", ["sb3_boxreach.py", "cleanrl_agent.py"])
def test_rl_examples_write_an_explanation_video(script, tmp_path):
    out = tmp_path / "example.mp4"
    stdout = run_example(script, "--steps", "128", "--max-steps", "12", "--out", str(out))
    assert "frames: 12" in stdout
    frames = iio.imread(out)
    assert frames.shape[0] == 12 and frames.shape[-1] == 3
    assert frames.std() > 10  # panels, not a blank frame


@pytest.mark.slow
def test_resnet_example_writes_gradcam_strip(tmp_path):
    out = tmp_path / "resnet.png"
    run_example("resnet_gradcam.py", "--out", str(out))
    strip = iio.imread(out)
    assert strip.shape == (224, 4 * 224, 3)
    # Each explanation tile differs from the input it overlays.
    tiles = np.split(strip.astype(int), 4, axis=1)
    assert all(np.abs(tile - tiles[0]).mean() > 1 for tile in tiles[1:])
