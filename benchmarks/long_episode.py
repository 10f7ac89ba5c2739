"""Long episodes at flat memory (issue 28): a video and an explorer report of 200 / 2,000 / 10,000
steps of ALE Pong, each row in a fresh process.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/long_episode.py [--steps 200,2000,10000]
        [--kinds video,explore] [--out BENCHMARKS-long.json]

* agent: a Stable-Baselines3 PPO ``CnnPolicy``, **untrained** (random init, seed 0): what is
  measured is rlviz's cost per step, which does not depend on what the weights learned.
* env: ``ALE/Pong-v5`` (frameskip=1, sticky actions off) -> ``AtariPreprocessing`` (frame skip 4,
  84x84 gray) -> ``FrameStackObservation(4)``: observations uint8 [4, 84, 84]. A game of Pong
  ends when a side reaches 21 points (~800 agent steps for an untrained agent), so the env starts
  a new game when one ends (``Endless``): one episode of exactly ``steps`` steps.
* video: ``rlviz.render_video`` with methods gradient + gradcam, no state map; explorer:
  ``rlviz.explore`` with the same methods, state map and NMF on, network tab off.
* each row: wall seconds, frames/s (steps / wall), peak RSS of the process (``ru_maxrss``,
  imports included), output bytes, and bytes per step.

The machine is shared with other work: timings are a loaded machine's.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
METHODS = ("gradient", "gradcam")


def pong(steps: int):
    """Pong as the SB3 Atari recipe sees it, a new game started when one ends."""
    import ale_py
    import gymnasium as gym
    from gymnasium.wrappers import AtariPreprocessing, FrameStackObservation

    gym.register_envs(ale_py)

    class Endless(gym.Wrapper):
        """A game that ends starts the next one: one episode runs until its step limit."""

        def step(self, action):
            obs, reward, terminated, truncated, info = self.env.step(action)
            if terminated:
                obs, info = self.env.reset()
                terminated = False
            return obs, reward, terminated, truncated, info

    env = gym.make("ALE/Pong-v5", frameskip=1, repeat_action_probability=0.0)
    env = AtariPreprocessing(env, frame_skip=4, screen_size=84, grayscale_obs=True)
    env = FrameStackObservation(env, 4)
    return Endless(env)


def agent(env):
    """An untrained SB3 PPO CnnPolicy (seed 0) as a PolicyAdapter."""
    from stable_baselines3 import PPO

    from rlviz import PolicyAdapter

    model = PPO("CnnPolicy", env, seed=0, device="cpu", n_steps=64, batch_size=64)
    try:
        return PolicyAdapter.from_sb3(model, layout="4x1:CHW")  # 4 gray frames, oldest first
    except TypeError:  # an rlviz before layouts were declared here (--rlviz): read off the shape
        return PolicyAdapter.from_sb3(model)


def row(kind: str, steps: int) -> dict:
    """One measurement, in this process."""
    import torch

    from rlviz import explore, render_video

    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    env = pong(steps)
    adapter = agent(env)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        if kind == "video":
            out = Path(tmp) / "pong.mp4"
            render_video(env, adapter, out, methods=METHODS, seed=0, max_steps=steps)
            size = out.stat().st_size
        else:
            out = Path(tmp) / "report"
            explore(
                env,
                adapter,
                out,
                episodes=1,
                methods=METHODS,
                seed=0,
                max_steps=steps,
                network=False,
            )
            size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
        wall = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KB on Linux
    return {
        "kind": kind,
        "steps": steps,
        "wall_s": round(wall, 1),
        "frames_per_s": round(steps / wall, 1),
        "peak_rss_gb": round(peak / 1e9, 3),
        "output_mb": round(size / 1e6, 2),
        "bytes_per_step": round(size / steps),
    }


def codec_error(steps: int) -> dict:
    """The lossy map sheets of a long episode (``map_codec="auto"``: WebP) against the lossless
    ones (``"png"``) of the same report: bytes and the error of every map pixel, as the page
    reads it (the red channel)."""
    import base64
    import io
    import re

    import numpy as np
    from PIL import Image

    from rlviz import explore

    warnings.filterwarnings("ignore")
    env = pong(steps)
    adapter = agent(env)
    sheets, sizes = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for codec in ("png", "auto"):
            out = Path(tmp) / codec
            explore(env, adapter, out, episodes=1, methods=METHODS, seed=0, max_steps=steps,
                    network=False, map_codec=codec)  # fmt: skip
            sizes[codec] = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
            found = []
            for part in sorted((out / "data" / "ep0").glob("chunk_*.js")):
                for url in re.findall(
                    r"data:image/[a-z]+;base64,[A-Za-z0-9+/=]+", part.read_text()
                ):
                    image = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
                    pixels = np.asarray(image)
                    found.append(pixels[..., 0] if pixels.ndim == 3 else pixels)
            sheets[codec] = found
    err = np.concatenate(
        [
            np.abs(a.astype(int) - b.astype(int)).ravel()
            for a, b in zip(*sheets.values(), strict=True)
        ]
    )
    return {
        "steps": steps,
        "png_kb_per_step": round(sizes["png"] / steps / 1e3, 1),
        "webp_kb_per_step": round(sizes["auto"] / steps / 1e3, 1),
        "mean_abs_error_255": round(float(err.mean()), 2),
        "p99_abs_error_255": int(np.percentile(err, 99)),
        "max_abs_error_255": int(err.max()),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", default="200,2000,10000")
    p.add_argument("--kinds", default="video,explore")
    p.add_argument("--out", default=None, help="also write the rows as JSON here")
    p.add_argument(
        "--rlviz",
        default=None,
        help="measure the rlviz package of this source tree instead (e.g. a git worktree of an "
        "older commit), for a before/after on the same machine",
    )
    p.add_argument(
        "--codec-error",
        type=int,
        default=0,
        metavar="STEPS",
        help="only: explore STEPS steps with lossless and with lossy (auto) map sheets and print "
        "the bytes per step and the lossy maps' error",
    )
    p.add_argument("--row", default=None, help=argparse.SUPPRESS)  # kind:steps, in a child
    args = p.parse_args()
    if args.codec_error:
        print(json.dumps(codec_error(args.codec_error)))
        return
    if args.row:
        kind, steps = args.row.split(":")
        print(json.dumps(row(kind, int(steps))))
        return
    rows = []
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    if args.rlviz:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [args.rlviz, env.get("PYTHONPATH")]))
    for kind in args.kinds.split(","):
        for steps in (int(s) for s in args.steps.split(",")):
            done = subprocess.run(
                [sys.executable, str(Path(__file__).resolve()), "--row", f"{kind}:{steps}"],
                capture_output=True,
                text=True,
                env=env,
                cwd=args.rlviz or ROOT,
            )
            if done.returncode != 0:
                print(done.stderr[-2000:], file=sys.stderr)
                raise SystemExit(f"{kind} {steps} steps failed")
            result = json.loads(done.stdout.strip().splitlines()[-1])
            rows.append(result)
            print(
                f"| {kind} | {steps:,} | {result['wall_s']} s | {result['frames_per_s']} | "
                f"{result['peak_rss_gb']} GB | {result['output_mb']} MB | "
                f"{result['bytes_per_step'] / 1e3:.1f} KB |",
                flush=True,
            )
    for kind in {r["kind"] for r in rows}:
        mine = sorted((r for r in rows if r["kind"] == kind), key=lambda r: r["steps"])
        if len(mine) > 1:
            ratio = mine[-1]["peak_rss_gb"] / mine[0]["peak_rss_gb"]
            print(
                f"{kind}: peak RSS {mine[-1]['steps']:,} / {mine[0]['steps']:,} steps = {ratio:.2f}x"
            )
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
