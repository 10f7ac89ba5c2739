"""The flags ``rlviz video`` and ``rlviz explore`` share: the checkpoint, the methods, how
episodes are played, and ``--from-step`` / ``--to-step`` (play whole episodes, explain and draw
only a window of steps)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from rlviz.cli.common import CliError, add_shared, at_least, new_parser
from rlviz.cli.trust import add_methods_from
from rlviz.options import EpisodeOptions, add_option_flags, comma_separated

#: How the command line reads the EpisodeOptions fields both commands take.
EPISODE_FLAGS = dict(
    episodes=dict(type=at_least(1)),
    seed=dict(type=at_least(0)),
    deterministic=dict(action="store_true"),
    max_steps=dict(type=at_least(1)),
)


def episode_parser(
    name: str,
    description: str,
    options: type[EpisodeOptions],
    out_help: str,
    fields: Sequence[str],
    **changes: dict,
) -> argparse.ArgumentParser:
    """The parser of ``rlviz NAME``: ``--checkpoint`` (required), ``--env``, ``--out``,
    ``--methods``, ``--methods-from``, then a flag per field of ``options`` in ``fields``
    (``changes``: as :func:`rlviz.options.add_option_flags` takes them)."""
    p = new_parser(name, description)
    add_shared(
        p,
        "checkpoint",
        "env",
        "out",
        checkpoint=dict(required=True, default=None, help="agent checkpoint (.safetensors)"),
        out=dict(type=str, default=None, help=out_help),
    )
    add_option_flags(p, options, "methods", methods=dict(type=comma_separated, metavar="A,B"))
    add_methods_from(p)
    add_option_flags(p, options, *fields, **EPISODE_FLAGS, **changes)
    return p


def add_window_flags(p: argparse.ArgumentParser) -> None:
    """Add ``--from-step`` and ``--to-step`` to a command that explains episodes."""
    window = dict(from_step=dict(metavar="T"), to_step=dict(metavar="T"))
    add_option_flags(p, EpisodeOptions, "from_step", "to_step", **window)


def window_args(args: argparse.Namespace) -> dict:
    """``from_step`` / ``to_step`` for the options, checked (a one-line error for an empty
    window)."""
    from rlviz.explain import check_window

    try:
        check_window(args.from_step, args.to_step, args.max_steps)
    except ValueError as exc:
        raise CliError(
            str(exc)
            .replace("from_step", "--from-step")
            .replace("to_step", "--to-step")
            .replace("max_steps", "--max-steps")
        ) from None
    return {"from_step": args.from_step, "to_step": args.to_step}
