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
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import closing, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rlviz.agents.checkpoint import LoadedPolicy


def _shipped_checkpoint() -> Path:
    """The shipped agent, found where ``rlviz.agents`` is installed (not relative to the working
    folder: a default that exists only inside the repository misleads everywhere else)."""
    import importlib.util

    spec = importlib.util.find_spec("rlviz.agents")  # finds, does not import (fast --help)
    if spec is None or not spec.submodule_search_locations:
        return Path("agents/checkpoints/boxreach.safetensors")
    return Path(list(spec.submodule_search_locations)[0]) / "checkpoints" / "boxreach.safetensors"


DEFAULT_CHECKPOINT = _shipped_checkpoint()
ENV_HELP = "Gymnasium id (default: the checkpoint's env, else rlviz/BoxReach-v0)"


class CliError(Exception):
    """Bad input: printed as the one line ``rlviz COMMAND: error: MESSAGE``, exit status 2."""


@contextmanager
def bad_input(*types: type[Exception], prefix: str = "") -> Iterator[None]:
    """An exception of ``types`` (default ValueError) raised inside becomes a :class:`CliError`
    with ``prefix`` and its message: what the user gave is wrong, not the code."""
    caught = types or (ValueError,)
    try:
        yield
    except caught as exc:
        raise CliError(f"{prefix}{exc}") from None


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


# Folders check_out_dir created during this command: a failing command leaves none of them empty.
_CREATED: list[Path] = []


def track_new_folders(path: str | Path) -> None:
    """Note the folders of ``path`` (itself included) that do not exist yet: if the command then
    fails, those it created and left empty are removed."""
    path = Path(path)
    _CREATED.extend(reversed([p for p in (path, *path.parents) if not p.exists()]))


def _remove_empty_created() -> None:
    for folder in reversed(_CREATED):
        try:
            folder.rmdir()  # only if empty
        except OSError:
            pass
    _CREATED.clear()


def warn(name: str, message: str) -> None:
    """``rlviz NAME: MESSAGE`` on stderr: something the user should know; the command goes on."""
    print(f"rlviz {name}: {message}", file=sys.stderr)


def _say_kept(name: str, renamed: dict[Path, Path]) -> None:
    """One line on stderr: which existing outputs were kept and what this run's are called."""
    if not renamed:
        return
    (asked, new), more = next(iter(renamed.items())), len(renamed) - 1
    others = f" and {more} more, likewise" if more else ""
    warn(
        name,
        f"kept the existing {asked.name} in {str(asked.parent)!r}; wrote {new.name}{others} "
        "(pass --overwrite to replace them)",
    )


def command(
    name: str, keep_existing: bool = True
) -> Callable[[Callable[[list[str] | None], int]], Callable[..., int]]:
    """Decorate ``rlviz NAME``'s ``main(argv) -> int`` so a :class:`CliError` becomes one line
    on stderr and exit status 2, and a full disk, an unwritable path or a missing optional
    package one line and exit status 1: never a traceback for those.

    ``keep_existing``: the command never replaces an existing output unless it is given
    ``--overwrite`` (:func:`rlviz.io.keep_existing`: a new name, said on stderr)."""
    from contextlib import nullcontext

    from rlviz.io import keep_existing as keep

    def wrap(main: Callable[[list[str] | None], int]) -> Callable[..., int]:
        @functools.wraps(main)
        def run(argv: Sequence[str] | None = None) -> int:
            _CREATED.clear()
            ok = False
            try:
                with keep() if keep_existing else nullcontext({}) as renamed:
                    status = int(main(None if argv is None else list(argv)) or 0)
                    _say_kept(name, renamed)
                ok = status == 0
                return status
            except CliError as exc:
                print(f"rlviz {name}: error: {exc}", file=sys.stderr)
                return 2
            except (OSError, ImportError) as exc:
                message = environment_error(exc)
                if message is None:
                    raise
                print(f"rlviz {name}: error: {message}", file=sys.stderr)
                return 1
            finally:
                if not ok:
                    _remove_empty_created()
                _CREATED.clear()

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


class Parser(argparse.ArgumentParser):
    """argparse with rlviz's manners: a usage error is the one line ``rlviz NAME: error: ...``
    (exit status 2), and an unknown flag is named, with its near match, before anything else
    (``--checkpont`` must not surface as "--checkpoint is required")."""

    def error(self, message: str):  # noqa: D102  (argparse's hook)
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")

    def unknown_flags(self, args: Sequence[str]) -> list[str]:
        """The ``--flags`` in ``args`` this parser does not know, each with its near match."""
        import difflib

        known = [s for s in self._option_string_actions if s.startswith("--")]
        found = []
        for arg in args:
            if arg == "--":
                break
            flag = arg.split("=", 1)[0]
            if flag.startswith("--") and flag not in self._option_string_actions:
                # A prefix (abbreviations are off) is the likelier intent than a look-alike.
                near = [k for k in known if k.startswith(flag)][:1] or difflib.get_close_matches(
                    flag, known, n=1, cutoff=0.6
                )
                found.append(f"{arg} (did you mean {near[0]}?)" if near else arg)
        return found

    def parse_known_args(self, args=None, namespace=None):  # noqa: D102
        argv = list(sys.argv[1:] if args is None else args)
        unknown = self.unknown_flags(argv)
        if unknown:
            self.error(f"unrecognized arguments: {' '.join(unknown)}")
        parsed, rest = super().parse_known_args(argv, namespace)
        if getattr(parsed, "no_progress", True) is False and not sys.stderr.isatty():
            parsed.no_progress = True  # bars only on a terminal: a log or a pipe stays clean
        if getattr(parsed, "overwrite", False):
            from rlviz.io import replace_existing

            replace_existing()
        return parsed, rest


def in_range(low: float, high: float) -> Callable[[str], float]:
    """An argparse ``type``: a number in [``low``, ``high``], else a usage error saying so."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(
                f"expected a number in [{low:g}, {high:g}], got {text}"
            )
        return value

    parse.__name__ = f"number in [{low:g}, {high:g}]"
    return parse


def new_parser(
    name: str, description: str, overwrite: bool = True, **kwargs: Any
) -> argparse.ArgumentParser:
    """The parser of ``rlviz NAME``; abbreviations off, so ``--layer`` never means ``--layers``.
    ``overwrite``: the command writes outputs, and takes ``--overwrite`` to replace old ones."""
    parser = Parser(prog=f"rlviz {name}", description=description, allow_abbrev=False, **kwargs)
    if overwrite:
        parser.add_argument(
            "--overwrite",
            action="store_true",
            help="replace existing output files (default: keep them and write new names)",
        )
    return parser


# The options several commands share, ``--max-steps`` for max_steps: keyword arguments, tuned per
# command by add_shared(parser, name=dict(default=..., help=...)).
SHARED: dict[str, dict[str, Any]] = {
    "checkpoint": dict(
        type=Path,
        default=DEFAULT_CHECKPOINT,
        help=f"agent checkpoint (.safetensors; default {DEFAULT_CHECKPOINT})",
    ),
    "env": dict(default=None, help=ENV_HELP),
    "episodes": dict(type=at_least(1), default=1, help="episodes to play"),
    "seed": dict(type=at_least(0), default=0, help="episode i is reset with seed + i (default 0)"),
    "out": dict(type=Path, help="output folder"),
    "max_steps": dict(type=at_least(1), default=None, help="cut episodes after this many steps"),
    "deterministic": dict(action="store_true", help="greedy actions instead of sampling"),
    "device": dict(default="cpu", help="cpu, cuda or auto"),
    "no_progress": dict(action="store_true", help="no progress bars"),
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
        kwargs = {**SHARED[name], **changes.get(name, {})}
        flags = ("--" + name.replace("_", "-"), *kwargs.pop("flags", ()))
        parser.add_argument(*flags, **kwargs)


def check_out_dir(path: str | Path, flag: str = "--out") -> Path:
    """``path`` as a folder that exists (created if needed) and takes a new file, else a
    :class:`CliError` saying why; run it before the work, so a bad ``--out`` costs nothing."""
    import tempfile

    path = Path(path)
    if path.exists() and not path.is_dir():
        raise CliError(f"{flag} {str(path)!r} is a file; expected a folder: give a folder path")
    track_new_folders(path)
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
    if path.name.endswith(".state.safetensors"):
        weights = path.with_name(path.name[: -len(".state.safetensors")] + ".safetensors")
        raise CliError(
            f"{str(path)!r} is the optimizer state a run keeps for --resume, not a policy; pass "
            f"its weights, --checkpoint {weights}"
        )
    if not path.exists():
        if path.resolve() == DEFAULT_CHECKPOINT.resolve():
            raise CliError(
                f"the shipped agent {str(path)!r} is missing from this install; reinstall rlviz "
                "or pass --checkpoint PATH (one `rlviz train` wrote)"
            )
        hint = f" or pass --checkpoint {DEFAULT_CHECKPOINT} (the shipped agent)"
        raise CliError(
            f"checkpoint {str(path)!r} does not exist; train one with `rlviz train`"
            + (hint if DEFAULT_CHECKPOINT.exists() else "")
        )
    return path


def output_name(checkpoint: str | Path) -> str:
    """The name a checkpoint's default outputs go under, so two checkpoints never share one:
    the file's stem (``boxreach``), with the run folder for a run's generic names
    (``runs/X/checkpoint.safetensors`` -> ``X``, ``runs/X/snapshots/step_100.safetensors`` ->
    ``X-step_100``)."""
    path = Path(checkpoint).absolute()
    stem = path.name.split(".")[0] or "checkpoint"
    if path.parent.name == "snapshots":
        return f"{path.parent.parent.name}-{stem}"
    if stem in ("checkpoint", "latest", "final", "model", "agent"):
        return path.parent.name or stem
    return stem


def progress_on(args: argparse.Namespace) -> bool:
    """Progress bars: on unless ``--no-progress``, and only on a terminal (a log stays clean)."""
    return not getattr(args, "no_progress", False) and sys.stderr.isatty()


def load_policy(
    path: str | Path,
    env_id: str | None = None,
    device="cpu",
    env_kwargs: dict | None = None,
    layers: Iterable[str | None] = (),
) -> LoadedPolicy:
    """The checkpoint at ``path`` ready to play in ``env_id`` (default: the one it trained in),
    see :func:`agents.checkpoint.load_policy`; every problem with it is a :class:`CliError`.

    With :func:`policy_env`, the one check every command passes before it plays an episode:
    ``layers`` (None entries: a default) must name layers of the model."""
    require_checkpoint(path)
    try:
        from rlviz.agents.checkpoint import CheckpointError
        from rlviz.agents.checkpoint import load_policy as load
    except ImportError as exc:
        raise CliError(
            f"playing a checkpoint needs the envs/ and agents/ packages of the rlviz repository "
            f"({exc}); run from a clone with `pip install -e .`"
        ) from None
    with bad_input(FileNotFoundError, CheckpointError):
        policy = load(path, device=device, env_id=env_id, env_kwargs=env_kwargs)
    check_layers(policy.model, [layer for layer in layers if layer])
    return policy


def resolve_device(name: str):
    """The torch device ``--device NAME`` asks for (``auto``: cuda when there is one)."""
    from rlviz.agents.config import resolve_device as resolve

    with bad_input():
        return resolve(name)


def policy_from_args(args: argparse.Namespace, layers: Iterable[str | None] = ()) -> LoadedPolicy:
    """:func:`load_policy` of ``--checkpoint`` on ``--device``, to play in ``--env``."""
    device = resolve_device(args.device)
    return load_policy(args.checkpoint, env_id=args.env, device=device, layers=layers)


def make_env(env_id: str, **kwargs: Any):
    """``gymnasium.make(env_id, **kwargs)``; rlviz/... ids register first and get the env's
    ground truth (masks, poses in ``info``) unless ``ground_truth=False`` is given."""
    import gymnasium as gym

    if env_id.startswith("rlviz/"):
        from rlviz import envs  # noqa: F401  (registers the ids; prepares headless GL before MiniWorld)

        kwargs.setdefault("ground_truth", True)
    from rlviz.agents.vecenv import register_optional_envs

    register_optional_envs(env_id)
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
    from rlviz.agents.evaluate import check_env_fits

    if policy.env_id.startswith("rlviz/"):
        overrides.setdefault("ground_truth", True)
    with bad_input(ValueError, TypeError, prefix=f"--env {policy.env_id}: "):
        try:
            env = policy.make_env(**overrides)
        except TypeError as exc:
            if "ground_truth" not in str(exc) or "ground_truth" not in overrides:
                raise
            # An env that has no ground truth to give (CartPole, Atari): made without it.
            overrides.pop("ground_truth")
            kwargs = {k: v for k, v in policy.env_kwargs.items() if k != "ground_truth"}
            env = policy._replace(env_kwargs=kwargs).make_env(**overrides)
    try:  # before any episode: a model and an env that do not fit fail here, in one line
        check_env_fits(policy.model, env)
    except ValueError as exc:
        env.close()
        raise CliError(f"--env {policy.env_id}: {exc}") from None
    return env


def play_env(policy: LoadedPolicy, **overrides: Any) -> closing:
    """:func:`policy_env`, closed on leaving ``with play_env(policy) as env:``."""
    return closing(policy_env(policy, **overrides))


def check_layers(model, layers: Iterable[str]) -> list[str]:
    """``layers`` as a list once each names a layer of ``model``, else a :class:`CliError`
    listing the available ones."""
    from rlviz.hooks import get_layer

    layers = list(layers)
    for layer in layers:
        with bad_input():
            get_layer(model, layer)
    return layers


def check_method_names(names: Sequence[str]) -> list[str]:
    """``--methods`` as a list once each names a registered method, else a :class:`CliError`
    listing the valid ones."""
    from rlviz.methods.registry import check_methods

    with bad_input():
        return check_methods(names, "--methods")


def picked(args: argparse.Namespace, *names: str) -> dict[str, Any]:
    """The flags ``names`` of ``args``, as keyword arguments of the same names."""
    return {name: getattr(args, name) for name in names}


def print_paths(paths: Iterable[str | Path]) -> None:
    """One written file a line (as written: a kept file's new name), the last thing a command
    prints."""
    from rlviz.io import written_path

    for path in paths:
        print(written_path(path))
