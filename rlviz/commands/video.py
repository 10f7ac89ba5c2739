"""``rlviz video``: annotated explanation videos of a checkpoint playing its env.

Each frame shows what the agent sees with saliency / Grad-CAM overlays, pi(a|s) with the action
taken, V(s) and rewards over time, where the state sits on a t-SNE map of the agent's states, the
room from above, and event captions. One MP4 (or GIF) per episode.

Example::

    rlviz video --checkpoint agents/checkpoints/boxreach.safetensors --env rlviz/BoxReach-v0 \\
        --episodes 3 --methods gradient,gradcam --out videos/
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path


def build_parser() -> argparse.ArgumentParser:
    """The command's argument parser."""
    p = argparse.ArgumentParser(
        prog="rlviz video", description="Render annotated explanation videos of a checkpoint."
    )
    p.add_argument("--checkpoint", type=Path, required=True, help="agent checkpoint (.safetensors)")
    p.add_argument(
        "--env",
        default=None,
        help="Gymnasium id (default: the checkpoint's env, else rlviz/BoxReach-v0)",
    )
    p.add_argument("--episodes", type=int, default=1, help="episodes to render (default 1)")
    p.add_argument(
        "--methods",
        default="gradient,gradcam",
        help="comma-separated attribution methods, one map panel each (default gradient,gradcam)",
    )
    p.add_argument(
        "--out", default="videos/", help="a folder, or a .mp4/.gif file (default videos/)"
    )
    p.add_argument(
        "--seed", type=int, default=0, help="episode i is reset with seed + i (default 0)"
    )
    p.add_argument("--fps", type=float, default=15, help="frames per second (default 15)")
    p.add_argument(
        "--gif", action="store_true", help="write GIFs instead of MP4s (with a folder --out)"
    )
    p.add_argument(
        "--layer", default=None, help="layer for CAM methods (default: the last conv block)"
    )
    p.add_argument(
        "--deterministic", action="store_true", help="greedy actions instead of sampling"
    )
    p.add_argument(
        "--normalize",
        choices=("episode", "frame"),
        default="episode",
        help="colour scale over the whole episode (default) or per frame",
    )
    p.add_argument(
        "--per-action",
        default=None,
        metavar="METHOD",
        help="add a row of per-action maps of METHOD (what makes it turn left vs right)",
    )
    p.add_argument(
        "--embedding",
        default="fit",
        metavar="PATH|fit|none",
        help="state map: an embedding.npz from `rlviz tsne`, 'fit' (fit a t-SNE on "
        "--map-episodes extra episodes first, default) or 'none'",
    )
    p.add_argument(
        "--map-episodes",
        type=int,
        default=5,
        help="episodes played to fit the state map with --embedding fit (default 5)",
    )
    p.add_argument("--max-steps", type=int, default=None, help="cut episodes after this many steps")
    p.add_argument(
        "--crf", type=int, default=23, help="x264 quality, lower is better and larger (default 23)"
    )
    p.add_argument(
        "--preset",
        default="veryfast",
        help="x264 speed preset: ultrafast .. veryslow (default veryfast)",
    )
    p.add_argument("--name-prefix", default="rl-explain", help="file name prefix in a folder --out")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def _fail(message: str) -> int:
    print(f"rlviz video: error: {message}", file=sys.stderr)
    return 2


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; returns the exit status (0 ok, 2 bad input)."""
    args = build_parser().parse_args(list(argv) if argv is not None else None)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    if args.episodes < 1:
        return _fail(f"--episodes must be >= 1, got {args.episodes}")
    if args.fps <= 0:
        return _fail(f"--fps must be > 0, got {args.fps}")
    if not args.checkpoint.exists():
        return _fail(
            f"checkpoint {str(args.checkpoint)!r} does not exist; train one with `rlviz train` or "
            "pass the shipped agents/checkpoints/boxreach.safetensors"
        )
    from rlviz.methods import available_methods, get_method

    for name in methods + ([args.per_action] if args.per_action else []):
        try:
            get_method(name)
        except ValueError:
            return _fail(f"unknown method {name!r}; valid: {', '.join(available_methods())}")
    from rlviz.render import output_paths
    from rlviz.video import check_writable

    try:
        for path in output_paths(
            args.out, args.episodes, gif=args.gif, name_prefix=args.name_prefix
        ):
            check_writable(path)
    except (ValueError, OSError) as exc:
        return _fail(str(exc))

    import agents

    try:
        model, config = agents.load_checkpoint(args.checkpoint)
    except (FileNotFoundError, agents.CheckpointError) as exc:
        return _fail(str(exc))
    adapter = agents.make_adapter(model)
    trained_on = config.get("env_id") if isinstance(config, dict) else None
    env_id = args.env or trained_on or "rlviz/BoxReach-v0"
    # The env variant the agent was trained on (e.g. num_distractors), unless another id is asked.
    env_kwargs = dict(config.get("env_kwargs") or {}) if env_id == trained_on else {}

    from rlviz.render import fit_state_embedding, make_env, render_video

    try:
        env = make_env(env_id, **env_kwargs)
    except ValueError as exc:
        return _fail(str(exc))
    try:
        embedding = None
        if args.embedding == "fit":
            start = time.perf_counter()
            embedding = fit_state_embedding(
                env,
                adapter,
                episodes=args.map_episodes,
                seed=args.seed + 100_000,
                deterministic=args.deterministic,
                max_steps=args.max_steps,
                progress=not args.no_progress,
            )
            print(
                f"state map: t-SNE of {len(embedding.embedding_)} states from "
                f"{args.map_episodes} episodes, {time.perf_counter() - start:.1f} s"
            )
        elif args.embedding != "none":
            from rlviz.embedding import StateEmbedding

            try:
                embedding = StateEmbedding.load(args.embedding)
            except (FileNotFoundError, ValueError) as exc:
                return _fail(str(exc))
        summary = render_video(
            env,
            adapter,
            out=args.out,
            methods=methods,
            episodes=args.episodes,
            seed=args.seed,
            layer=args.layer,
            fps=args.fps,
            embedding=embedding,
            deterministic=args.deterministic,
            normalize=args.normalize,
            per_action=args.per_action,
            max_steps=args.max_steps,
            gif=args.gif,
            agent_name=args.checkpoint.name,
            progress=not args.no_progress,
            name_prefix=args.name_prefix,
            crf=args.crf,
            preset=args.preset,
        )
    finally:
        env.close()
    print(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
