"""Regenerate the example explanation videos in videos/ from a checkpoint (default: shipped).

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/make_example_videos.py [--checkpoint PATH]
        [--env rlviz/BoxReach-v0] [--search 60] [--out videos/]

Plays seeds 0 .. ``--search``-1 (rollouts only, cheap), picks

* ``success.mp4``:    the first episode that reaches the red box,
* ``failure.mp4``:    the first that runs out of time,
* ``distractor.mp4``: the episode that gets closest to a distractor box (walking up to the wrong
  box is the behaviour the maps should help explain), success or not,

then renders each with all panels (the default maps, occlusion and Grad-CAM; policy, value,
t-SNE map, top-down view, captions, per-action saliency) and writes ``frame.png``, a still of a composed frame for the
README. Episodes are replayed exactly: ``render_video(seed=s)`` resets with seed s and samples
actions with a generator seeded by s, as the search did. Videos stay under 3 MB (x264 preset
``medium``, CRF 23; long episodes are cut at ``--max-steps``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rlviz import agents  # noqa: E402
from rlviz.cli.common import make_env  # noqa: E402
from rlviz.io import save_image  # noqa: E402
from rlviz.rollout import run_episode  # noqa: E402
from rlviz.video import fit_state_embedding, render_video  # noqa: E402

MAX_BYTES = 3_000_000


def replay(env, policy, seed: int, max_steps: int, info_keys, capture=None):
    """Episode ``seed`` as ``render_video(seed=seed, episodes=1)`` plays it: reset with ``seed``,
    actions sampled from a generator seeded with it."""
    gen = torch.Generator().manual_seed(seed)
    return run_episode(
        env,
        policy,
        seed=seed,
        generator=gen,
        max_steps=max_steps,
        info_keys=info_keys,
        capture=capture,
    )


def search(env, policy, seeds: range, max_steps: int) -> dict[str, int]:
    """Seeds of a success, a failure and the closest approach to a distractor."""
    found: dict[str, int] = {}
    gaps: dict[int, float] = {}
    for seed in seeds:
        rollout = replay(env, policy, seed, max_steps, ("success", "agent_pos", "distractor_pos"))
        kind = "success" if rollout.success else "failure"
        found.setdefault(kind, seed)
        infos = rollout.infos
        if "distractor_pos" in infos and infos["distractor_pos"].size:
            gap = np.linalg.norm(
                infos["distractor_pos"] - infos["agent_pos"][:, None], axis=-1
            ).min()
            gaps[seed] = float(gap)
        print(f"seed {seed:3d}: {kind:7s} {len(rollout):4d} steps", flush=True)
    # Prefer an episode not already shown as the success or the failure.
    fresh = {s: g for s, g in gaps.items() if s not in found.values()} or gaps
    if fresh:
        found["distractor"] = min(fresh, key=fresh.get)
        print(
            f"closest approach to a distractor: {fresh[found['distractor']]:.2f} m "
            f"(seed {found['distractor']})"
        )
    return found


def save_still(env, policy, embedding, seed: int, max_steps: int, path: Path, meta: dict) -> None:
    """A composed frame of episode ``seed`` (the box in view, the most map on it), as PNG
    (atomic)."""
    from rlviz.video import Composer, default_panels, explain_episode, select_panels
    from rlviz.video.explain import DEFAULT_METHODS
    from rlviz.video.pipeline import top_down_capture

    methods = list(DEFAULT_METHODS)  # the still shows what `rlviz video` shows by default
    panels = default_panels(methods, per_action="gradient")
    rollout = replay(
        env, policy, seed, max_steps, ("success", "goal_mask", "box_visible"),
        capture=top_down_capture(env, panels),
    )  # fmt: skip
    episode = explain_episode(
        policy,
        rollout,
        methods,
        per_action="gradient",
        embedding=embedding,
        top_down=rollout.views,
        meta={**meta, "seed": seed},
    )
    composer = Composer(select_panels(panels, episode))
    composer.prepare(episode, episode.title())
    # Of the steps with the box in view, show the one where the first map puts the most (positive)
    # attribution on the goal box, on the episode's shared colour scale: the still shows what the
    # faithfulness table measures, and a near-empty overlay explains nothing.
    visible = np.flatnonzero(rollout.infos["box_visible"]) if "box_visible" in rollout.infos else []
    steps = visible if len(visible) else np.arange(len(rollout))
    maps = np.clip(episode.maps[methods[0]][steps].astype(np.float32), 0, None)
    if "goal_mask" in rollout.infos:
        maps = maps * rollout.infos["goal_mask"][steps]
    strength = maps.mean(axis=(1, 2))
    t = int(steps[int(np.argmax(strength))])
    save_image(composer.frame(t, episode), path)
    print(f"wrote {path} (step {t + 1} of seed {seed})")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--checkpoint", type=Path, default=ROOT / "agents" / "checkpoints" / "boxreach.safetensors"
    )
    p.add_argument("--env", default="rlviz/BoxReach-v0")
    p.add_argument("--search", type=int, default=60, help="seeds to try")
    p.add_argument("--max-steps", type=int, default=250)
    p.add_argument("--out", type=Path, default=ROOT / "videos")
    p.add_argument("--agent-name", default=None, help="title-bar name (default: the file name)")
    args = p.parse_args()
    if not args.checkpoint.exists():
        sys.exit(
            f"checkpoint {args.checkpoint} does not exist; "
            "train one (rlviz train) or pass --checkpoint"
        )
    model, _ = agents.load_checkpoint(args.checkpoint)
    agent_name = args.agent_name or args.checkpoint.name
    policy = agents.make_adapter(model)
    env = make_env(args.env)
    try:
        seeds = search(env, policy, range(args.search), args.max_steps)
        embedding = fit_state_embedding(
            env, policy, episodes=12, seed=10_000, max_steps=args.max_steps
        )
        args.out.mkdir(parents=True, exist_ok=True)
        for name in ("success", "failure", "distractor"):
            if name not in seeds:
                print(f"no {name} episode among {args.search} seeds; none written")
                continue
            path = args.out / f"{name}.mp4"
            summary = render_video(
                env,
                policy,
                out=path,
                seed=seeds[name],
                embedding=embedding,
                per_action="gradient",
                max_steps=args.max_steps,
                agent_name=agent_name,
                preset="medium",
                crf=23,
            )
            size = path.stat().st_size
            print(
                f"wrote {path}: seed {seeds[name]}, {summary.frames} frames, "
                f"{'success' if summary.successes else 'no success'}, {size / 1e6:.2f} MB"
            )
            if size > MAX_BYTES:
                print(f"  warning: {path.name} is over 3 MB; lower --max-steps")
        save_still(
            env,
            policy,
            embedding,
            seeds.get("success", 0),
            args.max_steps,
            args.out / "frame.png",
            {"agent": agent_name, "env": args.env},
        )
    finally:
        env.close()


if __name__ == "__main__":
    main()
