"""``rlviz explore``: an interactive HTML report of a checkpoint playing its env.

Open ``OUT/index.html`` in a browser (from disk, no server): scrub the timeline and every view
follows: the observation with attribution overlays per method and target, pi, V, reward, GAE
advantage and entropy, bookmarks, a t-SNE map of the states, NMF layer features, a network tab.

Example::

    rlviz explore --checkpoint agents/checkpoints/boxreach.safetensors --episodes 4 --out explorer/
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from rlviz.cli.common import (
    CliError,
    add_shared,
    at_least,
    check_out_dir,
    command,
    in_range,
    load_policy,
    new_parser,
    output_name,
    policy_env,
    progress_on,
    require_at_least,
    require_checkpoint,
    resolve_device,
)
from rlviz.cli.steps import add_window_flags, window_args
from rlviz.cli.trust import add_methods_from, methods_from_option
from rlviz.cli.workers import add_worker_flags, parallel_executor
from rlviz.video.explain import DEFAULT_METHODS


def build_parser() -> argparse.ArgumentParser:
    """The command's argument parser."""
    p = new_parser("explore", "Write an interactive HTML report (explorer) of a checkpoint.")
    add_shared(
        p,
        "checkpoint",
        "env",
        "episodes",
        "out",
        "seed",
        checkpoint=dict(required=True, default=None, help="agent checkpoint (.safetensors)"),
        episodes=dict(default=2, help="episodes to explore (default 2)"),
        out=dict(
            type=str,
            default=None,
            help="report folder (default explorer/NAME/, NAME from the checkpoint)",
        ),
    )
    p.add_argument(
        "--methods",
        default=",".join(DEFAULT_METHODS),
        help="comma-separated attribution methods (default %(default)s: the most faithful input method and Grad-CAM)",
    )
    p.add_argument(
        "--targets",
        default="taken,value,actions",
        help="what maps explain: taken, value, actions (per action, first method only); "
        "default all three",
    )
    p.add_argument("--layer", default=None, help="layer for CAM methods (default: the last conv)")
    add_methods_from(p)
    p.add_argument(
        "--gamma", type=in_range(0, 1), default=0.99, help="discount for GAE (default 0.99)"
    )
    p.add_argument("--lam", type=in_range(0, 1), default=0.95, help="GAE lambda (default 0.95)")
    p.add_argument(
        "--nmf-features", type=int, default=4, help="NMF layer features (0: none; default 4)"
    )
    p.add_argument("--nmf-layer", default=None, help="layer for NMF attribution (default: CAM's)")
    p.add_argument(
        "--nmf-target",
        default="value",
        help="NMF attribution target: value or taken (default value)",
    )
    p.add_argument(
        "--units", type=int, default=4, help="network tab: units per layer (0: no tab; default 4)"
    )
    p.add_argument(
        "--optvis-steps",
        type=at_least(0),
        default=64,
        help="feature visualisation steps (default 64)",
    )
    p.add_argument(
        "--map", choices=("tsne", "pca", "none"), default="tsne", help="state map (default tsne)"
    )
    add_shared(p, "deterministic", "max_steps", "no_progress")
    add_shared(p, "device")
    add_window_flags(p)
    add_worker_flags(p, "blocks of episodes and each episode's attribution")
    return p


def _report_folder(args: argparse.Namespace) -> Path:
    """``--out`` (default explorer/NAME); a folder that already holds a report is kept, unless
    ``--overwrite``, and the report goes to the first free NAME-2, NAME-3, ... (said on stderr):
    its files refer to each other, so the whole folder is renamed, never single files."""
    out = (
        Path(args.out) if args.out is not None else Path("explorer") / output_name(args.checkpoint)
    )
    if args.overwrite or not (out / "index.html").exists():
        return out
    n = 2
    while (out.with_name(f"{out.name}-{n}") / "index.html").exists():
        n += 1
    new = out.with_name(f"{out.name}-{n}")
    print(
        f"rlviz explore: kept the report in {str(out)!r}; writing {str(new)!r} "
        "(pass --overwrite to replace it)",
        file=sys.stderr,
    )
    return new


def _split(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


@command("explore")
def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; returns the exit status (0 ok, 2 bad input)."""
    from rlviz.explorer import explore
    from rlviz.explorer.episode import TARGETS
    from rlviz.io import allow_overwrite
    from rlviz.video.explain import check_methods

    args = build_parser().parse_args(argv)
    methods = methods_from_option(args) or _split(args.methods)
    targets = _split(args.targets)
    require_at_least("--episodes", args.episodes, 1)
    require_at_least("--nmf-features", args.nmf_features, 0)
    require_at_least("--units", args.units, 0)
    if not methods:
        raise CliError("--methods is empty; name at least one, e.g. --methods gradient")
    unknown = sorted(set(targets) - set(TARGETS))
    if unknown:
        raise CliError(f"unknown --targets {unknown}; valid: {', '.join(TARGETS)}")
    if args.nmf_target not in ("value", "taken"):
        raise CliError(f"--nmf-target must be value or taken, got {args.nmf_target!r}")
    try:
        check_methods(methods)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    require_checkpoint(args.checkpoint)
    args.out = _report_folder(args)
    check_out_dir(args.out)
    window = window_args(args)
    device = resolve_device(args.device)
    policy = load_policy(
        args.checkpoint, env_id=args.env, device=device, layers=[args.layer, args.nmf_layer]
    )
    env = policy_env(policy)
    executor = parallel_executor(args, progress=progress_on(args))
    try:
        with allow_overwrite():  # the folder was chosen above; its files refer to each other
            summary = explore(
                env,
                policy.adapter,
                out=args.out,
                episodes=args.episodes,
                methods=methods,
                targets=targets,
                seed=args.seed,
                layer=args.layer,
                gamma=args.gamma,
                lam=args.lam,
                deterministic=args.deterministic,
                max_steps=args.max_steps,
                **window,
                statemap=args.map != "none",
                map_method="tsne" if args.map == "none" else args.map,
                nmf=args.nmf_features > 0,
                nmf_layer=args.nmf_layer,
                nmf_target=args.nmf_target,
                nmf_features=max(1, args.nmf_features),
                network=args.units > 0,
                units_per_layer=max(1, args.units),
                optvis_steps=args.optvis_steps,
                title=f"rlviz explorer \u00b7 {args.checkpoint.name} \u00b7 {policy.env_id}",
                progress=progress_on(args),
                executor=executor,
            )
    finally:
        env.close()
        if executor is not None:
            executor.close()
    print(summary)
    print(f"open file://{summary.path.resolve()}")
    return 0
