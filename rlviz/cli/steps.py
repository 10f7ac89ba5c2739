"""``--from-step`` / ``--to-step``: play whole episodes, explain and draw only a window of steps."""

from __future__ import annotations

import argparse

from rlviz.cli.common import CliError


def add_window_flags(p: argparse.ArgumentParser) -> None:
    """Add ``--from-step`` and ``--to-step`` to a command that explains episodes."""
    p.add_argument(
        "--from-step",
        type=int,
        default=0,
        metavar="T",
        help="explain and draw steps from T on (the episode is still played from its start)",
    )
    p.add_argument(
        "--to-step",
        type=int,
        default=None,
        metavar="T",
        help="explain and draw steps before T only (default: to the episode's end)",
    )


def window_args(args: argparse.Namespace) -> dict:
    """``from_step`` / ``to_step`` for the API, checked (a one-line error for an empty window);
    empty when the whole episode is asked for."""
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
    if args.from_step == 0 and args.to_step is None:
        return {}
    return {"from_step": args.from_step, "to_step": args.to_step}
