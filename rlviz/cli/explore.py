"""``rlviz explore``: an interactive HTML report of a checkpoint playing its env.

Open ``OUT/index.html`` in a browser (from disk, no server): scrub the timeline and every view
follows: the observation with attribution overlays per method and target, pi, V, reward, GAE
advantage and entropy, bookmarks, a t-SNE map of the states, NMF layer features, a network tab.

Example::

    rlviz explore --checkpoint agents/checkpoints/boxreach.safetensors --episodes 4 --out explorer/
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from rlviz.cli.common import (
    CliError,
    add_shared,
    at_least,
    check_method_names,
    check_out_dir,
    command,
    in_range,
    output_name,
    picked,
    play_env,
    policy_from_args,
    progress_on,
    require_checkpoint,
    warn,
)
from rlviz.cli.episodes import add_window_flags, episode_parser, window_args
from rlviz.cli.trust import methods_from_option
from rlviz.cli.workers import add_worker_flags, parallel
from rlviz.explorer.sprites import MAP_CODECS
from rlviz.options import ExploreOptions, comma_separated

#: The ExploreOptions fields that are ``rlviz explore`` flags as they are (default, help there).
OPTION_FLAGS = (
    "episodes", "seed", "targets", "layer", "gamma", "lam", "nmf_layer", "nmf_target",
    "optvis_steps", "deterministic", "max_steps", "map_codec",
)  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    """The command's argument parser."""
    p = episode_parser(
        "explore",
        "Write an interactive HTML report (explorer) of a checkpoint.",
        ExploreOptions,
        "report folder (default explorer/NAME/, NAME from the checkpoint)",
        (*OPTION_FLAGS, "nmf_features", "units_per_layer"),
        targets=dict(type=comma_separated, metavar="A,B"),
        gamma=dict(type=in_range(0, 1)),
        lam=dict(type=in_range(0, 1)),
        nmf_features=dict(type=at_least(0), note="0: no NMF."),
        units_per_layer=dict(
            type=at_least(0), flag="--units", metavar="N", note="0: no network tab."
        ),
        nmf_target=dict(note="Here: value or taken."),
        optvis_steps=dict(type=at_least(0)),
        map_codec=dict(choices=MAP_CODECS),
    )
    p.add_argument(
        "--map", choices=("tsne", "pca", "none"), default="tsne", help="state map (default tsne)"
    )
    add_shared(p, "no_progress")
    add_shared(p, "device")
    add_window_flags(p)
    add_worker_flags(p, "blocks of episodes and each episode's attribution")
    return p


def _report_folder(args: argparse.Namespace) -> Path:
    """``--out`` (default explorer/NAME); a folder that already holds a report is kept, unless
    ``--overwrite``, and the report goes to the first free NAME-2, NAME-3, ... (said on stderr):
    its files refer to each other, so the whole folder is renamed, never single files."""
    out = Path("explorer") / output_name(args.checkpoint) if args.out is None else Path(args.out)
    if args.overwrite or not (out / "index.html").exists():
        return out
    n = 2
    while (out.with_name(f"{out.name}-{n}") / "index.html").exists():
        n += 1
    new = out.with_name(f"{out.name}-{n}")
    warn(
        "explore",
        f"kept the report in {str(out)!r}; writing {str(new)!r} (pass --overwrite to replace it)",
    )
    return new


@command("explore")
def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; returns the exit status (0 ok, 2 bad input)."""
    from rlviz.explorer import explore
    from rlviz.explorer.episode import TARGETS
    from rlviz.io import allow_overwrite

    args = build_parser().parse_args(argv)
    methods = methods_from_option(args) or args.methods
    targets = args.targets
    if not methods:
        raise CliError("--methods is empty; name at least one, e.g. --methods gradient")
    unknown = sorted(set(targets) - set(TARGETS))
    if unknown:
        raise CliError(f"unknown --targets {unknown}; valid: {', '.join(TARGETS)}")
    if args.nmf_target not in ("value", "taken"):
        raise CliError(f"--nmf-target must be value or taken, got {args.nmf_target!r}")
    check_method_names(methods)
    require_checkpoint(args.checkpoint)
    args.out = _report_folder(args)
    check_out_dir(args.out)
    window = window_args(args)
    policy = policy_from_args(args, layers=[args.layer, args.nmf_layer])
    progress = progress_on(args)
    with play_env(policy) as env, parallel(args, progress) as executor:
        with allow_overwrite():  # the folder was chosen above; its files refer to each other
            options = ExploreOptions(
                **picked(args, *OPTION_FLAGS),
                methods=methods,
                **window,
                statemap=args.map != "none",
                map_method="tsne" if args.map == "none" else args.map,
                nmf=args.nmf_features > 0,
                nmf_features=max(1, args.nmf_features),
                network=args.units_per_layer > 0,
                units_per_layer=max(1, args.units_per_layer),
                title=f"rlviz explorer \u00b7 {args.checkpoint.name} \u00b7 {policy.env_id}",
                progress=progress,
            )
            summary = explore(env, policy.adapter, out=args.out, options=options, executor=executor)
    print(summary)
    print(f"open file://{summary.path.resolve()}")
    return 0
