"""What every ``rlviz`` command shares: its parser, the shared options, the one error type, the
one checkpoint loader and env maker.

The only part of rlviz that imports ``rlviz.envs`` and ``rlviz.agents``; always inside functions, so building
a parser (``--help``) stays fast and ``import rlviz.cli`` pulls in no env code.
"""

from __future__ import annotations

import argparse
import errno
import functools
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rlviz.agents.checkpoint import LoadedPolicy

DEFAULT_CHECKPOINT = Path("agents/checkpoints/boxreach.safetensors")
ENV_HELP = "Gymnasium id (default: the checkpoint's env, else rlviz/BoxReach-v0)"


class CliError(Exception):
    """Bad input: printed as the one line ``rlviz COMMAND: error: MESSAGE``, exit status 2."""


# OS errors that are the user's machine, not a bug: one line and exit status 1, no traceback.
_ENVIRONMENT_ERRNOS = {
    errno.ENOSPC: "no space left on the device; free some space or choose another --out",
    errno.EDQUOT: "disk quota exceeded; free some space or choose another --out",
    errno.EROFS: "the file system is read-only; choose a writable --out",
    errno.EACCES: "permission denied; choose a writable --out or fix the permissions",
    errno.EPERM: "operation not permitted; choose a writable --out or fix the permissions",
}

# Our own packages: a missing module among them is a broken install or a bug, never hidden.
_OWN_PACKAGES = {"rlviz"}  # rlviz.envs and rlviz.agents included


def environment_error(exc: BaseException) -> str | None:
    """The one-line message for an error of the user's environment (disk full, read-only or
    forbidden path, a missing optional dependency), or None for anything else."""
    if isinstance(exc, OSError) and exc.errno in _ENVIRONMENT_ERRNOS:
        where = f" writing {exc.filename!r}" if exc.filename else ""
        return f"{os.strerror(exc.errno)}{where}: {_ENVIRONMENT_ERRNOS[exc.errno]}"
    if isinstance(exc, ModuleNotFoundError) and exc.name:
        top = exc.name.split(".")[0]
        if top not in _OWN_PACKAGES:
            return f"this needs the package {top!r}, which is not installed; `pip install {top}`"
    return None


def command(name: str) -> Callable[[Callable[[list[str] | None], int]], Callable[..., int]]:
    """Decorate ``rlviz NAME``'s ``main(argv) -> int`` so a :class:`CliError` becomes one line
    on stderr and exit status 2, and a full disk, an unwritable path or a missing optional
    package one line and exit status 1: never a traceback for those."""

    def wrap(main: Callable[[list[str] | None], int]) -> Callable[..., int]:
        @functools.wraps(main)
        def run(argv: Sequence[str] | None = None) -> int:
            try:
                return int(main(None if argv is None else list(argv)) or 0)
            except CliError as exc:
                print(f"rlviz {name}: error: {exc}", file=sys.stderr)
                return 2
            except (OSError, ImportError) as exc:
                message = environment_error(exc)
                if message is None:
                    raise
                print(f"rlviz {name}: error: {message}", file=sys.stderr)
                return 1

        return run

    return wrap


def at_least(minimum: int) -> Callable[[str], int]:
    """An argparse ``type``: an int >= ``minimum``, else a usage error saying so (exit 2)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {value}")
        return value

    parse.__name__ = f"int >= {minimum}"
    return parse


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
    "episodes": (("--episodes",), dict(type=at_least(1), default=1, help="episodes to play")),
    "seed": (
        ("--seed",),
        dict(type=at_least(0), default=0, help="episode i is reset with seed + i (default 0)"),
    ),
    "out": (("--out",), dict(type=Path, help="output folder")),
    "max_steps": (
        ("--max-steps",),
        dict(type=at_least(1), default=None, help="cut episodes after this many steps"),
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


def check_out_dir(path: str | Path, flag: str = "--out") -> Path:
    """``path`` as a folder that exists (created if needed) and takes a new file, else a
    :class:`CliError` saying why; run it before the work, so a bad ``--out`` costs nothing."""
    import tempfile

    path = Path(path)
    if path.exists() and not path.is_dir():
        raise CliError(f"{flag} {str(path)!r} is a file; expected a folder: give a folder path")
    try:
        path.mkdir(parents=True, exist_ok=True)
        # A real file, not os.access: root passes access checks on read-only mounts and /proc.
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as exc:
        raise CliError(
            f"{flag} {str(path)!r} is not a writable folder ({exc.strerror}); choose another {flag}"
        ) from None
    return path


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
        from rlviz.agents.checkpoint import CheckpointError
        from rlviz.agents.checkpoint import load_policy as load
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
    from rlviz.agents.config import resolve_device as resolve

    try:
        return resolve(name)
    except ValueError as exc:
        raise CliError(str(exc)) from None


def make_env(env_id: str, **kwargs: Any):
    """``gymnasium.make(env_id, **kwargs)``; rlviz/... ids register first and get the env's
    ground truth (masks, poses in ``info``) unless ``ground_truth=False`` is given."""
    import gymnasium as gym

    if env_id.startswith("rlviz/"):
        from rlviz import envs  # noqa: F401  (registers the ids; prepares headless GL before MiniWorld)

        kwargs.setdefault("ground_truth", True)
    try:
        return gym.make(env_id, **kwargs)
    except gym.error.Error as exc:
        known = sorted(k for k in gym.registry if k.startswith("rlviz/"))
        raise CliError(
            f"cannot make env {env_id!r} ({exc}); rlviz ids: {', '.join(known)}"
        ) from None


def policy_env(policy: LoadedPolicy, **overrides: Any):
    """The env ``policy`` plays in (:meth:`LoadedPolicy.make_env`: its id and kwargs, ``overrides``
    winning, in the checkpoint's frame stack, so the policy reads the K*C channels it trained
    on), with ground truth on for rlviz ids as :func:`make_env` has it; failures are a
    :class:`CliError`."""
    if policy.env_id.startswith("rlviz/"):
        overrides.setdefault("ground_truth", True)
    try:
        return policy.make_env(**overrides)
    except ValueError as exc:
        raise CliError(str(exc)) from None


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
