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
import time
from collections.abc import Sequence

from rlviz.cli.common import (
    CliError,
    add_shared,
    at_least,
    bad_input,
    check_method_names,
    command,
    output_name,
    picked,
    play_env,
    policy_from_args,
    require_checkpoint,
    track_new_folders,
)
from rlviz.cli.episodes import add_window_flags, episode_parser, window_args
from rlviz.cli.trust import methods_from_option
from rlviz.cli.workers import add_worker_flags, parallel
from rlviz.options import VideoOptions

X264_PRESETS = tuple("ultrafast superfast veryfast faster fast medium slow slower veryslow".split())


#: The VideoOptions fields that are ``rlviz video`` flags as they are (default and help there).
OPTION_FLAGS = (
    "episodes", "seed", "fps", "gif", "layer", "deterministic", "normalize", "per_action",
    "max_steps", "crf", "preset", "name_prefix",
)  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    """The command's argument parser."""
    p = episode_parser(
        "video",
        "Render annotated explanation videos of a checkpoint.",
        VideoOptions,
        "a folder, or a .mp4/.gif file (default videos/NAME/, NAME from the checkpoint)",
        OPTION_FLAGS,
        gif=dict(action="store_true"),
        normalize=dict(choices=("episode", "frame")),
        per_action=dict(metavar="METHOD"),
        crf=dict(choices=range(52), metavar="0..51"),
        preset=dict(choices=X264_PRESETS),
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
        type=at_least(1),
        default=5,
        help="episodes played to fit the state map with --embedding fit (default 5)",
    )
    add_shared(p, "device")
    add_window_flags(p)
    add_shared(p, "no_progress", no_progress=dict(help="no progress bar"))
    add_worker_flags(p, "episodes (explained and encoded)")
    return p


def _check_outputs(args: argparse.Namespace) -> None:
    from rlviz.video import check_writable, output_paths

    with bad_input(ValueError, OSError):
        for path in output_paths(
            args.out, args.episodes, gif=args.gif, name_prefix=args.name_prefix
        ):
            track_new_folders(path.parent)
            check_writable(path)


def _state_map(env, adapter, args: argparse.Namespace):
    """The embedding ``--embedding`` asks for: fitted now, loaded, or None."""
    from rlviz.video import fit_state_embedding

    if args.embedding == "none":
        return None
    if args.embedding != "fit":
        from rlviz.statemap import StateEmbedding

        with bad_input(FileNotFoundError, ValueError):
            return StateEmbedding.load(args.embedding)
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
    return embedding


def _render(executor):
    """``render_video``, or its twin that explains and encodes each episode as a task on
    ``executor`` (``--workers``; the same files)."""
    from rlviz.parallel import SerialExecutor

    if executor is None or isinstance(executor, SerialExecutor):
        from rlviz.video import render_video

        return render_video
    from rlviz.video.parallel import render_video_parallel

    return lambda env, adapter, **options: render_video_parallel(env, adapter, executor, **options)


@command("video")
def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; returns the exit status (0 ok, 2 bad input)."""
    args = build_parser().parse_args(argv)
    methods = methods_from_option(args) or args.methods
    if args.fps <= 0:
        raise CliError(f"--fps must be > 0, got {args.fps}")
    # Cheap checks first: a typo must not cost a checkpoint load and an env start.
    require_checkpoint(args.checkpoint)
    if args.out is None:
        args.out = f"videos/{output_name(args.checkpoint)}/"
    check_method_names(methods + ([args.per_action] if args.per_action else []))
    _check_outputs(args)
    window = window_args(args)
    policy = policy_from_args(args, layers=[args.layer])
    with play_env(policy) as env, parallel(args, progress=not args.no_progress) as executor:
        options = VideoOptions(
            **picked(args, *OPTION_FLAGS),
            methods=methods,
            embedding=_state_map(env, policy.adapter, args),
            **window,
            agent_name=args.checkpoint.name,
            progress=not args.no_progress,
        )
        summary = _render(executor)(env, policy.adapter, out=args.out, options=options)
    print(summary)
    return 0
