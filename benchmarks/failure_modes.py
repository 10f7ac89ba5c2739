"""How a checkpoint fails: replays the held-out evaluation episodes and sorts the failures.

Same seeds and the same action sampling as ``rlviz evaluate`` (a generator seeded by the episode
seed). A failed episode is

* "stuck at a distractor": the agent moved less than ``--still`` m over its last 100 steps while a
  distractor box was within ``--near`` m (pushing into it),
* "stuck elsewhere": moved less than ``--still`` m, no distractor that close (turning on the spot,
  or pressed against a wall),
* "wandering": anything else (it kept moving and never reached the red box).

For each failure it also prints how often the red box was in view. Over all episodes it splits
the steps into: before the box first came into view (searching), blocked (a forward step that left
the frame unchanged: pressed against a wall or a box, often one outside the view), and box out of
view again after it had been seen (lost; "of which near the box" counts those within 2 m of it,
where the box drops below the camera and a memoryless policy starts searching again); and it
counts left and right turns (a policy that turns one way only has to circle to reach a box on its
other side).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/failure_modes.py [--checkpoint PATH] [--episodes 200]
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rlviz import agents  # noqa: E402
from rlviz.agents.checkpoint import load_policy  # noqa: E402
from rlviz.agents.evaluate import held_out_seeds  # noqa: E402
from rlviz.agents.vecenv import newest_frame  # noqa: E402
from rlviz.rollout import run_episode  # noqa: E402


def classify(positions: np.ndarray, distractors: np.ndarray, still: float, near: float) -> str:
    """Failure kind from the agent's positions [T, 2] and distractor positions [T, D, 2]."""
    tail = positions[-100:]
    spread = float(np.linalg.norm(tail - tail.mean(axis=0), axis=-1).max())
    if spread >= still:
        return "wandering"
    if distractors.size:
        gaps = np.linalg.norm(distractors[-100:] - tail[:, None], axis=-1).min(axis=1)
        if float(gaps.mean()) < near:
            return "stuck at a distractor"
    return "stuck elsewhere"


def step_phases(rollout, action_names, frame_stack: int = 1) -> dict[str, int]:
    """Steps of one episode spent searching, blocked, and with the box lost after seeing it (and
    how many of those within 2 m of the box, where it drops below the camera). ``frame_stack``:
    K of stacked observations, whose newest frames are compared."""
    visible = np.asarray(rollout.infos["box_visible"], bool)
    seen = np.maximum.accumulate(visible)
    forward = rollout.actions == action_names.index("forward")
    # The frame after step t is obs[t + 1]; the last step's (terminal) frame is not kept.
    frames = newest_frame(np.asarray(rollout.obs), frame_stack)
    unchanged = np.zeros(len(forward), bool)
    unchanged[:-1] = (frames[1:] == frames[:-1]).all(axis=(1, 2, 3))
    blocked = forward & unchanged
    lost = seen & ~visible & ~blocked
    near = np.linalg.norm(rollout.infos["agent_pos"] - rollout.infos["box_pos"], axis=-1) < 2.0
    return {
        "searching": int((~seen).sum()),
        "blocked": int(blocked.sum()),
        "lost after seeing": int(lost.sum()),
        "of which near the box": int((lost & near).sum()),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", type=Path, default=agents.SHIPPED_CHECKPOINT)
    p.add_argument("--episodes", type=int, default=200)
    p.add_argument("--seed-start", type=int, default=10**6)
    p.add_argument("--still", type=float, default=0.5, help="metres (see above)")
    p.add_argument("--near", type=float, default=1.0, help="metres (see above)")
    p.add_argument("--deterministic", action="store_true", help="greedy actions")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    loaded = load_policy(args.checkpoint)
    policy, frame_stack = loaded.adapter, loaded.model.arch.frames
    # Ground truth (box in view, poses) sorts the failures; the policy still sees pixels only.
    env = loaded.make_env(ground_truth=True)
    kinds: dict[str, list[int]] = {}
    names = policy.action_names
    action_counts = np.zeros(len(names), dtype=np.int64)  # over all episodes
    phases: Counter[str] = Counter()  # steps per phase over all episodes (see step_phases)
    ok_steps = []
    seeds = held_out_seeds(args.episodes, start=args.seed_start)
    try:
        for seed in seeds:
            rollout = run_episode(
                env,
                policy,
                seed=seed,
                deterministic=args.deterministic,
                generator=torch.Generator().manual_seed(seed),
                info_keys=("success", "agent_pos", "distractor_pos", "box_visible", "box_pos"),
            )
            action_counts += np.bincount(rollout.actions, minlength=len(names))
            phases.update(step_phases(rollout, names, frame_stack))
            if rollout.success:
                ok_steps.append(len(rollout))
                continue
            infos = rollout.infos
            kind = classify(infos["agent_pos"], infos["distractor_pos"], args.still, args.near)
            kinds.setdefault(kind, []).append(seed)
            in_view = float(np.mean(infos["box_visible"]))
            print(
                f"seed {seed}: {len(rollout)} steps, {kind}, box in view {in_view:.0%}", flush=True
            )
    finally:
        env.close()
    failures = sum(len(v) for v in kinds.values())
    print(f"{args.checkpoint.name}: {failures} failures in {len(seeds)} episodes")
    for kind, which in sorted(kinds.items(), key=lambda kv: -len(kv[1])):
        print(f"  {kind:22s} {len(which):3d}")
    per_episode = ", ".join(
        f"{n} {c / len(seeds):.1f}" for n, c in zip(names, action_counts, strict=True)
    )
    print(f"actions per episode: {per_episode}; successful episodes {np.mean(ok_steps):.1f} steps")
    print("steps per episode: " + ", ".join(f"{k} {v / len(seeds):.1f}" for k, v in phases.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
