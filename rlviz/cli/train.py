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

from rlviz.cli.common import CliError, command, new_parser


def build_parser() -> argparse.ArgumentParser:
    """The ``rlviz train`` argument parser."""
    from rlviz.agents.config import Config, add_dataclass_arguments

    parser = new_parser(
        "train",
        "Train a PPO agent on a BoxReach env. Runs go to runs/<run-name>/ "
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
    base.update(args)  # flags given now win (e.g. a larger --total-steps)
    try:
        cfg = config_from_dict(base)
    except (TypeError, ValueError) as exc:
        parser.error(str(exc))
    if cfg.run_name is None:
        cfg.run_name = path.parent.name
        cfg.runs_dir = str(path.parent.parent)
    # Provenance: how the run started, then each resume.
    return cfg, f"{saved.get('command') or '?'} && rlviz train {shlex.join(argv)}", str(path)


@command("train")
def main(argv: Sequence[str] | None = None) -> int:
    """``rlviz train``: parse flags into a config, train, print where the checkpoint is."""
    from rlviz.agents.checkpoint import CheckpointError
    from rlviz.agents.config import Config
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
    try:
        summary = train(cfg, command=provenance, resume=resume)
    except (ValueError, CheckpointError) as exc:
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


if __name__ == "__main__":
    sys.exit(main())
