"""GPU check (issue 28): every attribution method's ms/frame on CUDA and on CPU, in one run, and a
long video's frames/s on each.

    .venv/bin/python benchmarks/gpu_check.py [--batch 256] [--cpu-frames 32] [--video-steps 2000]
        [--skip-video] [--out gpu_check.json]

* models: the shipped BoxReach agent (60x80 RGB; a random-init one when the checkpoint is absent)
  and Stable-Baselines3's NatureCNN (``ActorCriticCnnPolicy``, untrained) on 84x84x4 stacks.
* per method (``rlviz.available_methods()``): ms per frame of ``rlviz.explain`` on a batch of
  ``--batch`` frames (one warm-up call first; CUDA timings synchronise). On the CPU only
  ``--cpu-frames`` frames are timed per method (occlusion of 256 frames takes minutes there).
* video: ``render_video`` of a ``--video-steps``-step ALE Pong episode (SB3 PPO CnnPolicy,
  untrained; gradient + gradcam), frames/s end to end, the attribution batch chosen for the
  device (:func:`rlviz.explain.device_batch`).

Without CUDA it runs the CPU rows only and says so. The machine may be shared: timings are
a loaded machine's unless said otherwise.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

warnings.filterwarnings("ignore")


def boxreach_agent():
    """(adapter, description, a batch maker) for the shipped BoxReach agent."""
    from rlviz import agents

    path = ROOT / "agents" / "checkpoints" / "boxreach.safetensors"
    if path.exists():
        model, _ = agents.load_checkpoint(path)
        name = "BoxReach agent (shipped checkpoint)"
    else:
        from rlviz.agents.config import Config
        from rlviz.agents.ppo import build_model  # noqa: F401  (only when no checkpoint)

        model = build_model(Config())
        name = "BoxReach agent (random init)"
    rng = np.random.default_rng(0)
    return (
        agents.make_adapter(model),
        name,
        lambda n: rng.integers(0, 256, (n, 60, 80, 3), np.uint8),
    )


def nature_cnn():
    """(adapter, description, a batch maker) for SB3's NatureCNN on 84x84x4 uint8 stacks."""
    from gymnasium import spaces
    from stable_baselines3.common.policies import ActorCriticCnnPolicy

    from rlviz import PolicyAdapter

    torch.manual_seed(0)
    obs_space = spaces.Box(0, 255, (4, 84, 84), np.uint8)
    policy = ActorCriticCnnPolicy(obs_space, spaces.Discrete(6), lambda _: 3e-4)
    rng = np.random.default_rng(0)
    adapter = PolicyAdapter.from_sb3(policy, layout="4x1:CHW")
    return (
        adapter,
        "NatureCNN 84x84x4 (SB3, untrained)",
        lambda n: rng.integers(0, 256, (n, 4, 84, 84), np.uint8),
    )


def method_rows(adapter, make, device: torch.device, frames: int, batch: int) -> dict:
    """ms/frame of each method on ``frames`` frames in batches of ``batch``."""
    from rlviz import available_methods, explain

    adapter.model.to(device)
    obs = make(frames)
    rows = {}
    for name in available_methods():
        try:
            explain(adapter, obs[:2], methods=[name], batch_size=batch)  # warm-up: hooks, kernels
        except ValueError as exc:  # e.g. CAM needs a GAP head, which NatureCNN has not
            rows[name] = f"n/a: {str(exc).split(';')[0]}"
            print(f"  {name:22s} {rows[name]}", flush=True)
            continue
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        explain(adapter, obs, methods=[name], batch_size=batch)
        if device.type == "cuda":
            torch.cuda.synchronize()
        rows[name] = round(1000 * (time.perf_counter() - start) / frames, 3)
        print(f"  {name:22s} {rows[name]:9.3f} ms/frame", flush=True)
    return rows


def video_row(device: torch.device, steps: int) -> dict:
    """frames/s of a ``steps``-step Pong video on ``device``."""
    from long_episode import agent, pong

    from rlviz import render_video

    env = pong(steps)
    adapter = agent(env)
    with tempfile.TemporaryDirectory() as tmp:
        summary = render_video(
            env,
            adapter,
            Path(tmp) / "pong.mp4",
            methods=("gradient", "gradcam"),
            max_steps=steps,
            device=device,
        )
    return {
        "steps": summary.frames,
        "seconds": round(summary.seconds, 1),
        "fps": round(summary.fps, 1),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=256, help="frames per attribution batch")
    p.add_argument("--cpu-frames", type=int, default=32, help="frames timed per method on CPU")
    p.add_argument("--video-steps", type=int, default=2000)
    p.add_argument("--skip-video", action="store_true")
    p.add_argument("--out", default=None, help="also write the figures as JSON here")
    args = p.parse_args()
    devices = [torch.device("cpu")]
    if torch.cuda.is_available():
        devices.insert(0, torch.device("cuda"))
        print(f"CUDA: {torch.cuda.get_device_name(0)}")
    else:
        print("no CUDA device: CPU rows only (the CUDA path is untested here)")
    torch.set_num_threads(max(1, torch.get_num_threads()))
    results: dict = {"cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
    for device in devices:
        frames = args.batch if device.type == "cuda" else args.cpu_frames
        for build in (boxreach_agent, nature_cnn):
            adapter, name, make = build()
            print(f"{device.type}: {name}, {frames} frames, batch {args.batch}", flush=True)
            results[f"{device.type}|{name}"] = method_rows(
                adapter, make, device, frames, args.batch
            )
        if not args.skip_video:
            row = video_row(device, args.video_steps)
            print(
                f"{device.type}: {row['steps']}-step Pong video: {row['fps']} frames/s", flush=True
            )
            results[f"{device.type}|video"] = row
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
