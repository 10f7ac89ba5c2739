"""Long runs (issue 21): a long episode renders with flat memory, and a long training run made of
many short ``--resume`` segments ends bit for bit where the same run in one go ends.

Both stand in for the real thing at test cost: a 5,000-step episode of the tiny ``SquareEnv`` at
small panel sizes instead of 10,000 MiniWorld frames (``benchmarks/video_speed.py --memory
100,1000,10000`` measures those), and a few updates of a tiny agent instead of two hours.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
TESTS = Path(__file__).resolve().parent

# ------------------------------------------------------------------------------ flat memory

# Run in a fresh process per episode length: a warm-up render (imports, fonts, codecs), then the
# high-water mark of resident memory is reset (Linux clear_refs) and one episode rendered.
_RENDER_CHILD = """
import json, sys, tempfile
import numpy as np
from helpers import SquareEnv, tiny_policy
import rlviz.video.pipeline as pipeline
from rlviz.video.panels import ActionPanel, MapPanel, ValuePanel

def status(key):
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) * 1024 for l in f if l.startswith(key + ":"))

kept = []
explain = pipeline.explain_episode
def keep_count(*args, **kwargs):  # what the pipeline holds for the episode while composing
    ep = explain(*args, **kwargs)
    r = ep.rollout
    arrays = [r.obs, r.actions, r.probs, r.values, r.rewards, *r.infos.values(), *ep.maps.values()]
    # The episode's per-step data, in RAM or in the spool's chunk files (the same bytes).
    size = lambda a: int(np.prod(a.shape)) * np.dtype(a.dtype).itemsize
    kept.append(sum(size(a) for a in arrays if a is not None) / len(r))
    return ep
pipeline.explain_episode = keep_count

steps = int(sys.argv[1])
size = (64, 96)
panels = lambda: [MapPanel("gradient", size=size), ActionPanel(size=size), ValuePanel(size=size)]
policy = tiny_policy()
with tempfile.TemporaryDirectory() as tmp:
    def render(n, name):
        return pipeline.render_video(SquareEnv(max_steps=n, goal=False), policy,
            out=f"{tmp}/{name}.mp4", methods=["gradient"], panels=panels, embedding=None,
            max_steps=n)
    render(20, "warm")
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # VmHWM := current RSS
    except OSError:
        print(json.dumps({"reset": False}))
        sys.exit()
    before = status("VmRSS")
    summary = render(steps, "long")
    print(json.dumps({"reset": True, "frames": summary.frames, "before": before,
                      "peak": status("VmHWM"), "kept_per_step": kept[-1]}))
"""


def _render_peak(steps: int) -> dict:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(TESTS), str(ROOT), os.environ.get("PYTHONPATH", "")]),
        "OMP_NUM_THREADS": "1",
    }
    done = subprocess.run(
        [sys.executable, "-c", _RENDER_CHILD, str(steps)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")
def test_long_episode_renders_with_flat_memory():
    short, long = _render_peak(500), _render_peak(5000)
    if not (short["reset"] and long["reset"]):
        pytest.skip("cannot reset the peak RSS here (/proc/self/clear_refs not writable)")
    assert (short["frames"], long["frames"]) == (500, 5000)
    growth = (long["peak"] - short["peak"]) / (long["frames"] - short["frames"])
    # What must grow with T: the episode's per-step arrays (observation 30x40x3 uint8, goal mask,
    # a float16 map, pi, V: ~7.2 KB a step, measured in the child). At their peak they exist
    # about twice (the rollout's list of frames next to their stacked copy; float32 maps next to
    # their float16 normalised ones), measured ~17 KB a step here; 3x leaves room for allocator
    # noise. A composed frame (~90 KB at these panel sizes, 1.6 MB at the default ones) kept per
    # step would break it many times over.
    bound = 3 * long["kept_per_step"]
    assert growth < bound, (
        f"peak RSS grows {growth / 1024:.1f} KB per step (500 -> 5000 steps: "
        f"{short['peak'] / 2**20:.0f} -> {long['peak'] / 2**20:.0f} MB); bound {bound / 1024:.1f} "
        f"KB = 3 x the {long['kept_per_step'] / 1024:.1f} KB a step the episode keeps"
    )


# --------------------------------------------------------------------- resume without drift

# Episodes of exactly num_steps steps (SquareEnv without a goal never ends early), so every
# segment ends at an episode boundary: a resume restarts the in-progress episodes with their
# seeds, which only equals carrying on when there are none. The env workers import this id's
# module ("test_long_runs:") themselves: they are spawned, not forked.
FIXED_ENV = "rlviz-test/FixedSquare-v0"
NUM_STEPS = 32
if FIXED_ENV not in gym.registry:
    gym.register(
        FIXED_ENV, entry_point="helpers:SquareEnv", kwargs={"goal": False, "max_steps": 32}
    )

STEPS_PER_UPDATE = 4 * NUM_STEPS
UPDATES = 6


def _train_args(runs: Path, total_updates: int) -> list[str]:
    # --no-anneal-lr: the annealed rate depends on --total-steps, which each segment raises.
    # --no-async-learner: the background learner acts with weights one update old, by design.
    return [
        "--env-id",
        f"test_long_runs:{FIXED_ENV}",
        "--runs-dir",
        str(runs),
        "--run-name",
        "r",
        "--num-envs",
        "4",
        "--num-steps",
        str(NUM_STEPS),
        "--channels",
        "4",
        "8",
        "8",
        "--hidden",
        "32",
        "--update-epochs",
        "2",
        "--num-minibatches",
        "2",
        "--no-anneal-lr",
        "--no-async-learner",
        "--seed",
        "3",
        "--no-progress",
        "--total-steps",
        str(total_updates * STEPS_PER_UPDATE),
    ]


def _differences(a, b, where: str = "") -> list[str]:
    """Every place where the nested training states ``a`` and ``b`` differ (tensors bitwise)."""
    if isinstance(a, dict) and isinstance(b, dict):
        if set(a) != set(b):
            return [f"{where}: keys {sorted(a)} vs {sorted(b)}"]
        return [d for k in a for d in _differences(a[k], b[k], f"{where}.{k}")]
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [f"{where}: {len(a)} vs {len(b)} entries"]
        return [
            d
            for i, (x, y) in enumerate(zip(a, b, strict=True))
            for d in _differences(x, y, f"{where}[{i}]")
        ]
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        same = a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
        return [] if same else [f"{where}: tensors differ"]
    return [] if a == b else [f"{where}: {a!r} vs {b!r}"]


@pytest.fixture(scope="module")
def one_go_and_segments(tmp_path_factory):
    """The training states of one run of UPDATES updates and of UPDATES one-update resumes."""
    from rlviz.agents.checkpoint import load_training_state
    from rlviz.cli.train import main

    whole, parts = tmp_path_factory.mktemp("whole"), tmp_path_factory.mktemp("parts")
    assert main(_train_args(whole, UPDATES)) == 0
    assert main(_train_args(parts, 1)) == 0
    for k in range(2, UPDATES + 1):
        total = str(k * STEPS_PER_UPDATE)
        assert main(["--resume", str(parts / "r"), "--total-steps", total, "--no-progress"]) == 0
    states = [load_training_state(d / "r" / "checkpoint.safetensors") for d in (whole, parts)]
    for state in states:
        state.pop("time_s")  # wall time, the one thing that may differ
    return states


@pytest.mark.slow
def test_resumed_segments_keep_counters_exact(one_go_and_segments):
    whole, parts = one_go_and_segments
    assert whole["steps"] == parts["steps"] == UPDATES * STEPS_PER_UPDATE
    assert whole["learner"]["updates"] == parts["learner"]["updates"] == UPDATES
    # one episode per env per update (fixed-length episodes): none lost or counted twice
    assert whole["episode_counts"] == parts["episode_counts"] == [UPDATES] * 4
    assert whole["episodes"] == parts["episodes"] == 4 * UPDATES
    adam_steps = {int(v["step"]) for v in parts["learner"]["optimizer"]["state"].values()}
    assert adam_steps == {UPDATES * 2 * 2}  # updates x epochs x minibatches
    assert torch.equal(whole["learner"]["minibatch_rng"], parts["learner"]["minibatch_rng"])


@pytest.mark.slow
def test_resumed_segments_match_one_run_bitwise(one_go_and_segments):
    whole, parts = one_go_and_segments
    assert _differences(whole, parts) == []
