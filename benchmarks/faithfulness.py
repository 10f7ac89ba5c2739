"""Faithfulness of every attribution method on the BoxReach policy, scored with ground truth.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/faithfulness.py [--checkpoint PATH] [--frames 64]
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/faithfulness.py --random-init   # no checkpoint

Frames: a fixed set (independent of the policy under test) from the default task
``rlviz/BoxReach-v0`` with ``ground_truth=True``: the scripted oracle plays seeded episodes with 30%
random actions mixed in (so the box is seen from many places), and every 3rd frame where the red
box covers at least ``--min-box-pixels`` pixels is kept, until ``--frames`` frames.

For each method (its default options and target: the greedy action's log-prob; Greydanus
perturbation: all logits), the table gives:

* pointing: share of frames whose map maximum lies inside the goal-box mask dilated by 1 pixel;
* mass in box: mean share of positive attribution inside the box, next to the box's mean pixel
  share (what a map blind to the box scores) and their ratio;
* deletion / insertion AUC: probability of the greedy action as the most-attributed pixels are
  blacked out (lower is better) or put back into a blurred frame (higher is better), 20 steps.

Reference rows: ``random`` (uniform noise maps: chance level) and ``box mask`` (the ground truth
itself used as a map).
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import rlviz  # noqa: E402
from rlviz import metrics  # noqa: E402

CHECKPOINT = Path(__file__).resolve().parents[1] / "agents" / "checkpoints" / "boxreach.safetensors"


def collect_frames(n_frames: int, min_pixels: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(frames uint8 [N, 60, 80, 3], goal masks bool [N, 60, 80]) where the goal box is visible."""
    import gymnasium as gym

    from rlviz import envs  # noqa: F401  (registers the ids)
    from rlviz.envs.oracle import OracleAgent

    env = gym.make("rlviz/BoxReach-v0", ground_truth=True)
    oracle = OracleAgent()
    rng = np.random.default_rng(seed)
    frames, masks = [], []
    episode = 0
    try:
        while len(frames) < n_frames:
            obs, info = env.reset(seed=seed * 1000 + episode)
            episode += 1
            step, done = 0, False
            while not done and len(frames) < n_frames:
                if step % 3 == 0 and info["goal_mask"].sum() >= min_pixels:
                    frames.append(obs.copy())
                    masks.append(info["goal_mask"].copy())
                action = int(rng.integers(3)) if rng.random() < 0.3 else oracle(env.unwrapped)
                obs, _, terminated, truncated, info = env.step(action)
                done = terminated or truncated
                step += 1
            if episode > 50 * n_frames:
                raise RuntimeError("could not find enough frames with the goal box visible")
    finally:
        env.close()
    return np.stack(frames), np.stack(masks)


def load_policy(checkpoint: Path, random_init: bool):
    from rlviz import agents

    if checkpoint.exists() and not random_init:
        model, _config = agents.load_checkpoint(checkpoint)
        label = f"checkpoint {checkpoint.name}"
    elif random_init:
        torch.manual_seed(0)
        model = agents.ActorCritic()
        label = "RANDOM-INIT ActorCritic (no trained checkpoint: numbers are not meaningful)"
    else:
        raise SystemExit(
            f"no checkpoint at {checkpoint}; train one (rlviz train) or pass --random-init to "
            "exercise the script on an untrained network"
        )
    model.eval()
    return agents.make_adapter(model), label


def score(adapter, frames, masks, maps, batch_size):
    pointing = metrics.pointing_game(maps, masks, tolerance=1).mean()
    mass = metrics.mass_in_mask(maps, masks).mean()
    share = metrics.mask_share(masks).mean()
    deletion = metrics.auc(metrics.deletion_curve(adapter, frames, maps, batch_size=batch_size))
    insertion = metrics.auc(metrics.insertion_curve(adapter, frames, maps, batch_size=batch_size))
    return dict(
        pointing=pointing,
        mass=mass,
        share=share,
        ratio=mass / share,
        deletion=deletion.mean(),
        insertion=insertion.mean(),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, default=CHECKPOINT)
    parser.add_argument("--random-init", action="store_true", help="untrained ActorCritic")
    parser.add_argument("--frames", type=int, default=64)
    parser.add_argument("--min-box-pixels", type=int, default=20)
    parser.add_argument("--methods", nargs="*", default=None)
    parser.add_argument("--batch-size", type=int, default=512)
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore", message="guided backprop")

    t0 = time.perf_counter()
    frames, masks = collect_frames(args.frames, args.min_box_pixels)
    adapter, label = load_policy(args.checkpoint, args.random_init)
    print(f"policy: {label}")
    print(
        f"{len(frames)} frames from rlviz/BoxReach-v0 (goal box >= {args.min_box_pixels} px, mean "
        f"{masks.sum((1, 2)).mean():.0f} px of {masks[0].size}); collected in "
        f"{time.perf_counter() - t0:.1f} s; {time.strftime('%Y-%m-%d %H:%M')}"
    )
    print()
    print(
        "| method               | pointing | mass in box | box share | mass/share "
        "| deletion AUC (lower) | insertion AUC (higher) | s |"
    )
    print("|---|---|---|---|---|---|---|---|")
    rows = {}
    methods = args.methods or rlviz.available_methods()
    references = {
        "random": np.random.default_rng(0).random(masks.shape).astype(np.float32),
        "box mask": masks.astype(np.float32),
    }
    for name in [*methods, *references]:
        t = time.perf_counter()
        if name in references:
            maps = references[name]
        else:
            try:
                maps = rlviz.explain(adapter, frames, methods=[name], batch_size=args.batch_size)[
                    name
                ]
            except ValueError as exc:  # e.g. CAM on a network without a GAP head
                print(f"| {name:<20} | n/a: {exc} |")
                continue
        row = score(adapter, frames, masks, maps, args.batch_size)
        rows[name] = row
        print(
            f"| {name:<20} | {row['pointing']:.2f} | {row['mass']:.3f} | {row['share']:.3f} | "
            f"{row['ratio']:.2f} | {row['deletion']:.3f} | {row['insertion']:.3f} | "
            f"{time.perf_counter() - t:.1f} |",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
