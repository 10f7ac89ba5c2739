"""Cost of time in the engine: per-frame maps, recurrent episodes, memory reliance in a video.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/time_speed.py [--frames 128] [--steps 60]
        [--reps 5] [--quick]

* per-frame vs collapsed: ``attribute(..., per_frame=True)`` vs the collapsed map on a K=4 stack
  (agents.ActorCritic, 4 RGB frames of 60x80 on the channel axis), ``--frames`` frames in one
  call, for the gradient (target <= 1.1x: the same backward pass), grad x input, integrated
  gradients (16 steps) and occlusion (whose "when" mode perturbs each frame alone: ~K x).
* recurrent vs single frame: ms per frame to explain a ``--steps``-step episode (gradient +
  Grad-CAM, the video's default methods) with a CNN + LSTM policy, each step with its recorded
  state held, vs the same CNN without the LSTM (target <= 1.3x).
* memory reliance in a video: ``rlviz.render_video`` of a ``--steps``-step BoxReach episode by a
  K=2 stacked agent end to end (default panels, memory trace and stack panel included) vs the
  memory-reliance pass alone on the same episode (target <= 10% of end to end).

Medians over ``--reps`` repeats after one warm-up. The machine may be shared: figures vary.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import rlviz  # noqa: E402
from rlviz import (  # noqa: E402
    agents,
    envs,  # noqa: F401  (registers rlviz/BoxReach-v0)
)
from rlviz.envs.wrappers import StackFrames  # noqa: E402
from rlviz.memory import memory_reliance  # noqa: E402
from rlviz.methods import get_method  # noqa: E402
from rlviz.ops import torch_threads  # noqa: E402
from rlviz.rollout import episode_outputs  # noqa: E402
from rlviz.targets import TakenAction  # noqa: E402
from rlviz.video import render_video  # noqa: E402

warnings.filterwarnings("ignore")
H, W = 60, 80


def median_seconds(fn, reps: int) -> float:
    """Median wall time of ``fn()`` over ``reps`` runs after one warm-up run."""
    fn()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def stacked_agent(frames: int) -> rlviz.PolicyAdapter:
    torch.manual_seed(0)
    model = agents.ActorCritic(obs_shape=(H, W, 3 * frames), frames=frames).eval()
    return agents.make_adapter(model)


def per_frame_cost(frames: int, reps: int) -> list[tuple[str, float, float]]:
    """(method, collapsed s, per-frame s) on a K=4 stack."""
    adapter = stacked_agent(4)
    obs = np.random.default_rng(0).integers(0, 256, (frames, H, W, 12), dtype=np.uint8)
    options = {"integrated_gradients": {"steps": 16}, "occlusion": {"window": 8, "stride": 8}}
    rows = []
    for name in ("gradient", "grad_x_input", "integrated_gradients", "occlusion"):
        method = get_method(name, **options.get(name, {}))
        collapsed = median_seconds(lambda m=method: m.attribute(adapter, obs), reps)
        split = median_seconds(lambda m=method: m.attribute(adapter, obs, per_frame=True), reps)
        rows.append((name, collapsed, split))
    return rows


class Trunk(nn.Module):
    """The CNN both policies share (Nature-DQN-like, for 60x80 RGB)."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(3, 16, 8, stride=4),
            nn.ReLU(),
            nn.Conv2d(16, 32, 3, stride=2),
            nn.ReLU(),
            nn.Conv2d(32, 32, 3, stride=1),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(32 * 4 * 7, 128),
            nn.ReLU(),
        )

    def forward(self, x):
        return self.net(x)


class SingleFrame(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.trunk, self.pi, self.v = Trunk(), nn.Linear(128, 3), nn.Linear(128, 1)

    def forward(self, x):
        h = self.trunk(x)
        return self.pi(h), self.v(h)[:, 0]


class Recurrent(SingleFrame):
    """The same CNN and heads with an LSTM cell between them: state (h, c), [B, 128] each."""

    def __init__(self) -> None:
        super().__init__()
        self.cell = nn.LSTMCell(128, 128)

    def step(self, x, state):
        h, c = self.cell(self.trunk(x), state)
        return (self.pi(h), self.v(h)[:, 0]), (h, c)


def recurrent_cost(steps: int, reps: int) -> tuple[float, float]:
    """(single-frame s, recurrent s) to explain one episode with gradient + Grad-CAM."""
    obs = np.random.default_rng(1).integers(0, 256, (steps, H, W, 3), dtype=np.uint8)
    single = rlviz.PolicyAdapter(SingleFrame().eval())
    model = Recurrent().eval()
    recurrent = rlviz.PolicyAdapter(
        model,
        state_forward=model.step,
        initial_state=lambda b: (torch.zeros(b, 128), torch.zeros(b, 128)),
    )
    _, _, states = episode_outputs(recurrent, obs)
    actions = TakenAction(np.zeros(steps, np.int64))
    methods = ["gradient", "gradcam"]
    base = median_seconds(lambda: rlviz.explain(single, obs, methods, target=actions), reps)
    held = median_seconds(
        lambda: rlviz.explain(recurrent, obs, methods, target=actions, states=states), reps
    )
    return base, held


def memory_overhead(steps: int, reps: int) -> tuple[float, float, int]:
    """(end-to-end video s, memory-reliance s, frames) for one stacked BoxReach episode."""
    adapter = stacked_agent(2)
    env = StackFrames(gym.make("rlviz/BoxReach-v0", max_episode_steps=steps), 2)
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "run.mp4"
        last = {}

        def video():
            last["summary"] = render_video(env, adapter, out=out, max_steps=steps, seed=0)

        end_to_end = median_seconds(video, max(1, reps // 2))
        summary = last["summary"]
    from rlviz.rollout import run_episode

    rollout = run_episode(env, adapter, seed=0, max_steps=steps)
    target = TakenAction(rollout.actions)
    with torch_threads(1):  # as render_video runs it
        memory = median_seconds(lambda: memory_reliance(adapter, rollout.obs, target), reps)
    return end_to_end, memory, summary.frames


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=128)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run")
    args = parser.parse_args()
    if args.quick:
        args.frames, args.steps, args.reps = 16, 12, 1
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")

    print(f"\nper-frame vs collapsed maps, K=4 RGB stack 60x80, {args.frames} frames per call")
    for name, collapsed, split in per_frame_cost(args.frames, args.reps):
        ms = 1000 / args.frames
        print(
            f"  {name:22s} collapsed {collapsed * ms:7.2f} ms/frame   per-frame "
            f"{split * ms:7.2f} ms/frame   {split / collapsed:5.2f}x"
            + ("   (target <= 1.1x)" if name == "gradient" else "")
        )

    base, held = recurrent_cost(args.steps, args.reps)
    ms = 1000 / args.steps
    print(f"\nrecurrent episode attribution, gradient + Grad-CAM, {args.steps} steps")
    print(
        f"  single-frame CNN {base * ms:7.2f} ms/frame   CNN + LSTM, states held "
        f"{held * ms:7.2f} ms/frame   {held / base:5.2f}x   (target <= 1.3x)"
    )

    end_to_end, memory, frames = memory_overhead(args.steps, args.reps)
    print(f"\nmemory reliance in a video, BoxReach, K=2 stack, {frames} frames")
    print(
        f"  end to end {end_to_end:6.2f} s ({1000 * end_to_end / frames:6.1f} ms/frame)   "
        f"memory reliance {1000 * memory / frames:6.2f} ms/step   "
        f"{100 * memory / end_to_end:5.1f}% of end to end   (target <= 10%)"
    )


if __name__ == "__main__":
    main()
