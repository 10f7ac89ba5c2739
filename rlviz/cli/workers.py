"""``--workers`` / ``--address``: the flags of the commands that spread work over Ray, and the
executor they ask for (:func:`rlviz.sweep.make_executor`, set up for headless MiniWorld)."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from contextlib import contextmanager

from rlviz.cli.common import at_least, bad_input

#: Run in every worker before its first task: headless EGL, torch._dynamo before MiniWorld.
WORKER_SETUP = "rlviz.envs.headless:prepare"


def add_worker_flags(p: argparse.ArgumentParser | argparse._ArgumentGroup, what: str) -> None:
    """Add ``--workers`` (default 1: serial) and ``--address``; ``what`` names one task."""
    p.add_argument(
        "--workers",
        type=at_least(0),
        default=1,
        help=f"1: serial; N: {what} as Ray tasks on N cores (0: all); same results",
    )
    p.add_argument("--address", default=None, help="Ray cluster to run on (e.g. auto, HOST:PORT)")


def parallel_executor(args: argparse.Namespace, progress: bool = True):
    """None (serial: the plain calls) or the executor ``--workers`` / ``--address`` ask for;
    without Ray that is the serial one, after a hint on stderr of how to get parallelism."""
    if args.workers == 1 and args.address is None:
        return None
    from rlviz.parallel import make_executor

    with bad_input(RuntimeError, ValueError):  # --address without Ray, --workers < 0
        return make_executor(args.workers, args.address, setup=WORKER_SETUP, progress=progress)


@contextmanager
def parallel(args: argparse.Namespace, progress: bool = True) -> Iterator:
    """:func:`parallel_executor`, closed on leaving ``with parallel(args) as executor:``."""
    executor = parallel_executor(args, progress)
    try:
        yield executor
    finally:
        if executor is not None:
            executor.close()
