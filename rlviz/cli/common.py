"""What every ``rlviz`` command shares: its parser, the shared options, the one error type, the
one checkpoint loader and env maker.

The only part of rlviz that imports ``envs`` and ``agents``; always inside functions, so building
a parser (``--help``) stays fast and ``import rlviz.cli`` pulls in no env code.
"""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agents.checkpoint import LoadedPolicy

DEFAULT_CHECKPOINT = Path("agents/checkpoints/boxreach.safetensors")
ENV_HELP = "Gymnasium id (default: the checkpoint's env, else rlviz/BoxReach-v0)"


class CliError(Exception):
    """Bad input: printed as the one line ``rlviz COMMAND: error: MESSAGE``, exit status 2."""


def command(name: str) -> Callable[[Callable[[list[str] | None], int]], Callable[..., int]]:
    """Decorate ``rlviz NAME``'s ``main(argv) -> int`` so a :class:`CliError` becomes one line
    on stderr and exit status 2, never a traceback."""

    def wrap(main: Callable[[list[str] | None], int]) -> Callable[..., int]:
        @functools.wraps(main)
        def run(argv: Sequence[str] | None = None) -> int:
            try:
                return int(main(None if argv is None else list(argv)) or 0)
            except CliError as exc:
                print(f"rlviz {name}: error: {exc}", file=sys.stderr)
                return 2

        return run

    return wrap


def new_parser(name: str, description: str, **kwargs: Any) -> argparse.ArgumentParser:
    """The parser of ``rlviz NAME``; abbreviations off, so ``--layer`` never means ``--layers``."""
    return argparse.ArgumentParser(
        prog=f"rlviz {name}", description=description, allow_abbrev=False, **kwargs
    )


# The options several commands share: flags and keyword arguments, tuned per command by
# add_shared(parser, name=dict(default=..., help=...)).
SHARED: dict[str, tuple[tuple[str, ...], dict[str, Any]]] = {
    "checkpoint": (
        ("--checkpoint",),
        dict(
            type=Path,
            default=DEFAULT_CHECKPOINT,
            help=f"agent checkpoint (.safetensors; default {DEFAULT_CHECKPOINT})",
        ),
    ),
    "env": (("--env",), dict(default=None, help=ENV_HELP)),
    "episodes": (("--episodes",), dict(type=int, default=1, help="episodes to play")),
    "seed": (
        ("--seed",),
        dict(type=int, default=0, help="episode i is reset with seed + i (default 0)"),
    ),
    "out": (("--out",), dict(type=Path, help="output folder")),
    "max_steps": (
        ("--max-steps",),
        dict(type=int, default=None, help="cut episodes after this many steps"),
    ),
    "deterministic": (
        ("--deterministic",),
        dict(action="store_true", help="greedy actions instead of sampling"),
    ),
    "device": (("--device",), dict(default="cpu", help="cpu, cuda or auto")),
    "no_progress": (("--no-progress",), dict(action="store_true", help="no progress bars")),
}


def add_shared(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    *names: str,
    **changes: dict[str, Any],
) -> None:
    """Add the shared options ``names`` (keys of :data:`SHARED`) to ``parser``, in that order.

    ``changes[name]`` updates that option's keyword arguments (a command's default or help);
    its ``flags`` entry, if any, adds spellings (``flags=("--env-id",)``).
    """
    unknown = sorted(set(changes) - set(names))
    if unknown:
        raise ValueError(f"changes for options not added: {unknown}; added: {list(names)}")
    for name in names:
        flags, kwargs = SHARED[name]
        kwargs = {**kwargs, **changes.get(name, {})}
        flags = flags + tuple(kwargs.pop("flags", ()))
        parser.add_argument(*flags, **kwargs)


def require_at_least(flag: str, value: float, minimum: float) -> None:
    """Raise :class:`CliError` unless ``value >= minimum``."""
    if value < minimum:
        raise CliError(f"{flag} must be >= {minimum:g}, got {value}")


def require_checkpoint(path: str | Path) -> Path:
    """``path`` if that checkpoint exists, else a :class:`CliError` that says how to get one."""
    path = Path(path)
    if not path.exists():
        raise CliError(
            f"checkpoint {str(path)!r} does not exist; train one with `rlviz train` or pass "
            f"--checkpoint {DEFAULT_CHECKPOINT} (the shipped agent)"
        )
    return path


def load_policy(
    path: str | Path, env_id: str | None = None, device="cpu", env_kwargs: dict | None = None
) -> LoadedPolicy:
    """The checkpoint at ``path`` ready to play in ``env_id`` (default: the one it trained in),
    see :func:`agents.checkpoint.load_policy`; every problem with it is a :class:`CliError`."""
    require_checkpoint(path)
    try:
        from agents.checkpoint import CheckpointError
        from agents.checkpoint import load_policy as load
    except ImportError as exc:
        raise CliError(
            f"playing a checkpoint needs the envs/ and agents/ packages of the rlviz repository "
            f"({exc}); run from a clone with `pip install -e .`"
        ) from None
    try:
        return load(path, device=device, env_id=env_id, env_kwargs=env_kwargs)
    except (FileNotFoundError, CheckpointError) as exc:
        raise CliError(str(exc)) from None


def resolve_device(name: str):
    """The torch device ``--device NAME`` asks for (``auto``: cuda when there is one)."""
    from agents.config import resolve_device as resolve

    try:
        return resolve(name)
    except ValueError as exc:
        raise CliError(str(exc)) from None


def make_env(env_id: str, **kwargs: Any):
    """``gymnasium.make(env_id, **kwargs)``; rlviz/... ids register first and get the env's
    ground truth (masks, poses in ``info``) unless ``ground_truth=False`` is given."""
    import gymnasium as gym

    if env_id.startswith("rlviz/"):
        import envs  # noqa: F401  (registers the ids; prepares headless GL before MiniWorld)

        kwargs.setdefault("ground_truth", True)
    try:
        return gym.make(env_id, **kwargs)
    except gym.error.Error as exc:
        known = sorted(k for k in gym.registry if k.startswith("rlviz/"))
        raise CliError(
            f"cannot make env {env_id!r} ({exc}); rlviz ids: {', '.join(known)}"
        ) from None


def check_layers(model, layers: Iterable[str]) -> list[str]:
    """``layers`` as a list once each names a layer of ``model``, else a :class:`CliError`
    listing the available ones."""
    from rlviz.hooks import get_layer

    layers = list(layers)
    for layer in layers:
        try:
            get_layer(model, layer)
        except ValueError as exc:
            raise CliError(str(exc)) from None
    return layers


def print_paths(paths: Iterable[str | Path]) -> None:
    """One written file a line, the last thing a command prints."""
    for path in paths:
        print(path)
