"""``rlviz train``: train a PPO agent on a BoxReach env; runs go to ``runs/<run-name>/``.

The flags are the fields of :class:`agents.config.Config` (documented there, once); the trainer
is :func:`agents.trainer.train`. This module only turns the command line into a config.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

from rlviz.cli.common import CliError, bad_input, command, new_parser


def build_parser() -> argparse.ArgumentParser:
    """The ``rlviz train`` argument parser."""
    from rlviz.agents.config import Config, add_dataclass_arguments

    parser = new_parser(
        "train",
        "Train a PPO agent on a BoxReach env. Runs go to runs/<run-name>/ "
        "(checkpoint, progress.csv, learning_curve.png).",
        overwrite=False,  # a run folder is its own: --resume continues it
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--resume",
        metavar="PATH",
        default=None,
        help="continue a run from its checkpoint (run folder or checkpoint.safetensors): weights, "
        "optimizer, counters and RNG; flags given now override the saved config",
    )
    add_dataclass_arguments(parser, Config, suppress_defaults=True, aliases={"env_id": ["--env"]})
    return parser


def resume_path(arg: str) -> Path:
    """The checkpoint ``--resume ARG`` names: ARG, or ``ARG/checkpoint.safetensors`` for a run."""
    path = Path(arg)
    return path / "checkpoint.safetensors" if path.is_dir() else path


def _resumed_config(parser: argparse.ArgumentParser, args: dict, argv: list[str], resume: str):
    """``(config, command, checkpoint)`` of ``--resume``: the saved config, flags given now win."""
    from rlviz.agents.checkpoint import CheckpointError, read_config
    from rlviz.agents.config import config_from_dict

    path = resume_path(resume)
    if not path.exists():
        parser.error(
            f"--resume {resume}: {str(path)!r} does not exist; pass a run folder "
            "(runs/NAME) or its checkpoint.safetensors"
        )
    try:
        saved = read_config(path)
    except (FileNotFoundError, CheckpointError) as exc:
        parser.error(str(exc))
    base = dict(saved.get("train_config", {}))
    _check_fixed_on_resume(base, args, resume)
    base.update(args)  # flags given now win (e.g. a larger --total-steps)
    try:
        cfg = config_from_dict(base)
    except (TypeError, ValueError) as exc:
        parser.error(str(exc))
    if cfg.run_name is None:
        cfg.run_name = path.parent.name
        cfg.runs_dir = str(path.parent.parent)
    done = int(saved.get("steps", 0))
    if done >= cfg.total_steps:
        parser.error(
            f"--resume {resume}: the run is already at {done:,} >= {cfg.total_steps:,} steps "
            f"(--total-steps); nothing to do: pass a larger --total-steps, e.g. "
            f"--total-steps {2 * cfg.total_steps}"
        )
    # Provenance: how the run started, then each resume.
    return cfg, f"{saved.get('command') or '?'} && rlviz train {shlex.join(argv)}", str(path)


# Config fields that fix the network or what it reads: a resumed run keeps its saved weights and
# optimizer, so these cannot change (flag spelling, config key).
FIXED_ON_RESUME = {
    "head": "--head",
    "channels": "--channels",
    "hidden": "--hidden",
    "frame_stack": "--frame-stack",
    "env_id": "--env-id",
    "env_kwargs": "--env-kwargs",
    "num_envs": "--num-envs",
}


def _norm(value):
    return list(value) if isinstance(value, tuple) else value


def _check_fixed_on_resume(saved: dict, given: dict, resume: str) -> None:
    """A :class:`CliError` naming the first flag given now that would change the resumed run's
    network or env (its weights and optimizer state would not fit)."""
    for key, flag in FIXED_ON_RESUME.items():
        if key in given and key in saved and _norm(given[key]) != _norm(saved[key]):
            was = saved[key]
            was = " ".join(map(str, was)) if isinstance(was, list | tuple) else was
            raise CliError(
                f"{flag} cannot change on --resume (the run {resume!r} was trained with {flag} "
                f"{was}; its weights and optimizer fit only that); leave {flag} out, or start a "
                f"new run (--run-name NEW)"
            )


def _check_init_from(cfg) -> None:
    """``--init-from``'s checkpoint read and compared with this run's network flags before the
    run folder exists: one line naming the flag that differs."""
    from rlviz.agents.checkpoint import CheckpointError, read_config

    path = Path(cfg.init_from)
    if not path.exists():
        raise CliError(f"--init-from {str(path)!r} does not exist; pass a checkpoint .safetensors")
    with bad_input(FileNotFoundError, CheckpointError):
        arch = read_config(path).get("architecture") or {}
    wanted = {
        "--head": ("head", cfg.head),
        "--channels": ("channels", list(cfg.channels)),
        "--hidden": ("hidden", cfg.hidden),
        "--frame-stack": ("frames", cfg.frame_stack),
    }
    for flag, (key, value) in wanted.items():
        if key == "hidden" and cfg.head != "mlp":
            continue  # only the mlp head has a hidden layer
        if key in arch and _norm(arch[key]) != value:
            have = arch[key]
            have = " ".join(map(str, have)) if isinstance(have, list) else have
            now = " ".join(map(str, value)) if isinstance(value, list) else value
            raise CliError(
                f"--init-from {str(path)!r} was trained with {flag} {have}, this run asks for "
                f"{flag} {now}; pass {flag} {have} (weights load only into the same network)"
            )


@command("train", keep_existing=False)
def main(argv: Sequence[str] | None = None) -> int:
    """``rlviz train``: parse flags into a config, train, print where the checkpoint is."""
    from rlviz.agents.checkpoint import CheckpointError
    from rlviz.agents.config import Config, default_run_name
    from rlviz.agents.trainer import train

    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = vars(parser.parse_args(argv))
    resume = args.pop("resume")
    if resume is not None:
        cfg, provenance, resume = _resumed_config(parser, args, argv, resume)
    else:
        try:
            cfg = Config(**args)
        except ValueError as exc:
            parser.error(str(exc))
        provenance = "rlviz train " + shlex.join(argv) if argv else "rlviz train"
        if cfg.init_from:
            _check_init_from(cfg)
    run_dir = Path(cfg.runs_dir) / (cfg.run_name or default_run_name(cfg))
    existed = run_dir.exists()
    try:
        summary = train(cfg, command=provenance, resume=resume)
    except (ValueError, CheckpointError) as exc:
        if not existed:
            _remove_if_unused(run_dir)
        raise CliError(str(exc)) from None
    last = summary["last"]
    print(
        f"trained {summary['steps']} steps in {summary['time_s']:.0f} s "
        f"({summary['sps']:.0f} steps/s); "
        f"success (last 100 episodes) {last.get('success_rate_100', float('nan')):.2f}\n"
        f"checkpoint: {summary['checkpoint']}\n"
        f"evaluate:   rlviz evaluate --checkpoint {summary['checkpoint']}"
    )
    return 0


def _remove_if_unused(run_dir: Path) -> None:
    """Remove a run folder this failed command created, unless it holds a checkpoint."""
    import shutil

    if run_dir.is_dir() and not any(run_dir.rglob("*.safetensors")):
        shutil.rmtree(run_dir, ignore_errors=True)
