"""``rlviz train``: the command line of the PPO trainer.

Read the pieces top to bottom: :mod:`agents.config` (every flag, documented once),
:mod:`agents.ppo` (buffer, GAE, the clipped loss, the learner step) and :mod:`agents.trainer`
(collection, the background learner, logging, checkpoints, resume).
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from agents.checkpoint import CheckpointError, read_config
from agents.config import (
    Config,
    add_dataclass_arguments,
    config_from_dict,
    default_run_name,
    resolve_device,
)
from agents.diagnostics import COLUMNS
from agents.ppo import Learner, RolloutBuffer, compute_gae
from agents.trainer import Trainer, init_weights, train


def _resume_path(arg: str) -> Path:
    path = Path(arg)
    if path.is_dir():
        path = path / "checkpoint.safetensors"
    return path


def build_parser() -> argparse.ArgumentParser:
    """The ``rlviz train`` argument parser."""
    parser = argparse.ArgumentParser(
        prog="rlviz train",
        description="Train a PPO agent on a BoxReach env. Runs go to runs/<run-name>/ "
        "(checkpoint, progress.csv, learning_curve.png).",
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


def main(argv: list[str] | None = None) -> int:
    """``rlviz train``: parse flags into a :class:`Config`, train, print where the checkpoint is."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = vars(parser.parse_args(argv))
    resume = args.pop("resume")
    if resume is not None:
        path = _resume_path(resume)
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
        base.update(args)  # flags given now win (e.g. a larger --total-steps)
        try:
            cfg = config_from_dict(base)
        except (TypeError, ValueError) as exc:
            parser.error(str(exc))
        if cfg.run_name is None:
            cfg.run_name = path.parent.name
            cfg.runs_dir = str(path.parent.parent)
        # Provenance: how the run started, then each resume.
        command = f"{saved.get('command') or '?'} && rlviz train {shlex.join(argv)}"
        resume = str(path)
    else:
        try:
            cfg = Config(**args)
        except ValueError as exc:
            parser.error(str(exc))
        command = "rlviz train " + shlex.join(argv) if argv else "rlviz train"
    try:
        summary = train(cfg, command=command, resume=resume)
    except (ValueError, CheckpointError) as exc:
        print(f"rlviz train: {exc}", file=sys.stderr)
        return 2
    last = summary["last"]
    print(
        f"trained {summary['steps']} steps in {summary['time_s']:.0f} s ({summary['sps']:.0f} steps/s); "
        f"success (last 100 episodes) {last.get('success_rate_100', float('nan')):.2f}\n"
        f"checkpoint: {summary['checkpoint']}\n"
        f"evaluate:   rlviz evaluate --checkpoint {summary['checkpoint']}"
    )
    return 0


# Names other code imports from here (agents.train was once the whole trainer).
__all__ = [
    "COLUMNS",
    "Config",
    "Learner",
    "RolloutBuffer",
    "Trainer",
    "add_dataclass_arguments",
    "build_parser",
    "compute_gae",
    "config_from_dict",
    "default_run_name",
    "init_weights",
    "main",
    "resolve_device",
    "train",
]

if __name__ == "__main__":
    sys.exit(main())
