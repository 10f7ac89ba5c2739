"""Fault injection (issue 21): a process SIGKILLed (by pid) while it writes a checkpoint, a video, a
dataset or an explorer report leaves no half-written file under any output name, and training
resumes from the last complete checkpoint to the same final step count.

The writer is paused at the right moment by rlviz.io's test hook (``RLVIZ_FAULT_PAUSE``): the
matching write has its temp file complete on disk and is about to publish it when the test kills
the process.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TESTS = Path(__file__).resolve().parent


def run_until_paused(code_or_argv, tmp_path: Path, pause: str, timeout: float = 240) -> None:
    """Start a Python process, wait until the write ``pause`` names is paused, SIGKILL it."""
    signal_file = tmp_path / "paused.signal"
    env = {
        **os.environ,
        "RLVIZ_FAULT_PAUSE": pause,
        "RLVIZ_FAULT_SIGNAL": str(signal_file),
        "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]),
        "OMP_NUM_THREADS": "1",
    }
    argv = code_or_argv if isinstance(code_or_argv, list) else ["-c", code_or_argv]
    proc = subprocess.Popen(
        [sys.executable, *argv],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + timeout
        while not signal_file.exists():
            if proc.poll() is not None:
                raise AssertionError(
                    f"ended before the write ({proc.returncode}): "
                    f"{proc.stderr.read().decode()[-2000:]}"
                )
            assert time.monotonic() < deadline, "the paused write never came"
            time.sleep(0.1)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(30)
        proc.stderr.close()
        # ffmpeg children of a killed writer (video) end on their own at EOF; do not wait on them
    signal_file.unlink()


def visible_files(folder: Path) -> list[str]:
    """Files a user or a reader sees: everything but hidden temp files."""
    return sorted(
        str(p.relative_to(folder))
        for p in folder.rglob("*")
        if p.is_file() and not p.name.startswith(".")
    )


def leftover_temps(folder: Path) -> list[Path]:
    return [p for p in folder.rglob(".*.tmp")]


def test_killed_write_leaves_the_old_file_and_the_next_write_cleans_up(tmp_path):
    target = tmp_path / "out" / "big.bin"
    target.parent.mkdir()
    target.write_bytes(b"old")
    code = (
        "from rlviz.io import atomic_write_bytes\n"
        f"atomic_write_bytes({str(target)!r}, b'x' * (8 << 20))\n"
    )
    run_until_paused(code, tmp_path, "big.bin")
    assert target.read_bytes() == b"old"  # never half a file
    [temp] = leftover_temps(target.parent)
    assert temp.stat().st_size == 8 << 20  # (the killed writer's complete temp, hidden)
    from rlviz.io import atomic_write_bytes

    atomic_write_bytes(target, b"new")  # the next write of the name removes the dead one's temp
    assert target.read_bytes() == b"new" and leftover_temps(target.parent) == []


def test_killed_video_render_leaves_no_video(tmp_path):
    out = tmp_path / "videos"
    code = (
        "from helpers import SquareEnv, tiny_policy\n"
        "from rlviz import render_video\n"
        f"render_video(SquareEnv(max_steps=20), tiny_policy(), out={str(out)!r}, episodes=2,\n"
        "    methods=['gradient'], embedding=None, progress=False)\n"
    )
    run_until_paused(code, tmp_path, "*-episode-1.mp4")  # the second video's publish
    assert visible_files(out) == ["rl-explain-episode-0.mp4"]  # the finished one only


def test_killed_dataset_write_leaves_no_dataset(tmp_path):
    out = tmp_path / "ds.npz"
    code = (
        "import sys; sys.path.insert(0, 'tests')\n"
        "from test_bad_inputs import _tiny_dataset\n"
        f"_tiny_dataset(__import__('pathlib').Path({str(out)!r}))\n"
    )
    run_until_paused(code, tmp_path, "ds.npz")
    assert not out.exists() and len(leftover_temps(tmp_path)) == 1


def test_killed_explorer_report_has_no_page(tmp_path):
    out = tmp_path / "report"
    code = (
        "from helpers import SquareEnv, tiny_policy\n"
        "from rlviz.explorer import explore\n"
        f"explore(SquareEnv(max_steps=8), tiny_policy(), out={str(out)!r}, episodes=1,\n"
        "    methods=['gradient'], map_method='pca', nmf=False, network=False, progress=False)\n"
    )
    run_until_paused(code, tmp_path, "index.html")  # the page goes last: it commits the report
    assert "index.html" not in visible_files(out)
    for name in visible_files(out):  # every file that is there is whole
        path = out / name
        if name.endswith(".js"):
            assert path.read_text().rstrip().endswith((";", "}")), name
        if name.endswith(".png"):
            assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name


TINY_ENV = {"size": 5, "num_distractors": 0, "fast": True, "max_episode_steps": 30}
TINY_ENV.update(obs_height=30, obs_width=40)


def _train_argv(runs: Path, *extra: str) -> list[str]:
    return [
        "-m",
        "rlviz.cli",
        "train",
        "--env-id",
        "rlviz/BoxReachSmall-v0",
        "--env-kwargs",
        json.dumps(TINY_ENV),
        "--runs-dir",
        str(runs),
        "--run-name",
        "tiny",
        "--num-envs",
        "4",
        "--num-steps",
        "32",
        "--no-progress",
        *extra,
    ]


@pytest.mark.slow
def test_killed_checkpoint_write_resumes_from_the_last_complete_one(tmp_path):
    from rlviz.agents import load_checkpoint
    from rlviz.agents.checkpoint import load_training_state

    runs = tmp_path / "runs"
    ckpt = runs / "tiny" / "checkpoint.safetensors"
    # a checkpoint every update (128 steps); killed while writing the 2nd one
    argv = _train_argv(runs, "--total-steps", "512", "--checkpoint-every", "128")
    run_until_paused(argv, tmp_path, "checkpoint.state.safetensors:2")
    _, config = load_checkpoint(ckpt)  # whole, and its hashes match
    assert config["steps"] == 128 and load_training_state(ckpt)["steps"] == 128
    # the whole set, and the previous whole one kept before it was replaced (the first, here too)
    assert sorted(p.name for p in (runs / "tiny").glob("checkpoint.*")) == [
        "checkpoint.json",
        "checkpoint.prev.json",
        "checkpoint.prev.safetensors",
        "checkpoint.prev.state.safetensors",
        "checkpoint.safetensors",
        "checkpoint.state.safetensors",
    ]
    proc = _resume(runs / "tiny")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "warning: skipped" not in proc.stderr  # the newest set was whole: no fallback
    _, config = load_checkpoint(ckpt)
    state = load_training_state(ckpt)
    assert config["steps"] == 512 and state["steps"] == 512 and state["learner"]["updates"] == 4
    assert leftover_temps(runs) == []  # the resumed run's writes removed the killed one's temps


def _resume(run: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "rlviz.cli", "train", "--resume", str(run), "--no-progress"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        timeout=600,
    )


@pytest.mark.slow
def test_kill_between_the_renames_resumes_from_the_previous_checkpoint(tmp_path):
    from rlviz.agents import load_checkpoint
    from rlviz.agents.checkpoint import CheckpointError, load_training_state, previous_path

    runs = tmp_path / "runs"
    ckpt = runs / "tiny" / "checkpoint.safetensors"
    argv = _train_argv(runs, "--total-steps", "512", "--checkpoint-every", "128")
    # The 2nd save (step 256) is killed after its state and weights were renamed into place,
    # before its config was: the newest files are a mix of two saves.
    run_until_paused(argv, tmp_path, "checkpoint.json:2")
    with pytest.raises(CheckpointError, match="does not match the SHA-256"):
        load_checkpoint(ckpt)  # mixed: rejected, never loaded half-new
    _, prev_config = load_checkpoint(previous_path(ckpt))  # the kept one is whole
    assert prev_config["steps"] == 128
    proc = _resume(runs / "tiny")
    assert proc.returncode == 0, proc.stderr[-3000:]
    [warning] = [line for line in proc.stderr.splitlines() if "warning: skipped" in line]
    assert "checkpoint.state.safetensors" in warning and "checkpoint.prev.safetensors" in warning
    assert "step 128" in warning
    _, config = load_checkpoint(ckpt)
    state = load_training_state(ckpt)
    assert config["steps"] == 512 and state["steps"] == 512 and state["learner"]["updates"] == 4
    # the log was cut back to the step resumed from: every update once
    with open(runs / "tiny" / "progress.csv") as f:
        assert [int(r["step"]) for r in csv.DictReader(f)] == [128, 256, 384, 512]
    assert leftover_temps(runs) == []
