"""``rlviz trust``: which attribution map to trust for this agent.

Plays a checkpoint, keeps ``--frames`` steps of its episodes and scores every method on them:
cascading randomisation (output layer first) and the random-logit test, Efficient MPRT,
deletion / insertion against a random pixel order, ground truth where the env gives masks, cost.
Writes ``trust.json``, ``trust.csv`` and ``trust.png``; prints one verdict a method.

Example::

    rlviz trust --checkpoint agents/checkpoints/boxreach.safetensors   # -> trust/boxreach/
    rlviz video --checkpoint agents/checkpoints/boxreach.safetensors \
        --methods-from trust/boxreach/trust.json
"""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Sequence
from pathlib import Path

from rlviz.cli.common import (
    CliError,
    add_shared,
    at_least,
    bad_input,
    check_method_names,
    check_out_dir,
    command,
    new_parser,
    picked,
    play_env,
    policy_from_args,
    require_checkpoint,
)
from rlviz.options import comma_separated


def build_parser() -> argparse.ArgumentParser:
    """The ``rlviz trust`` argument parser."""
    p = new_parser("trust", "Sanity checks, deletion / insertion and ground truth per method.")
    add_shared(
        p,
        "checkpoint",
        "env",
        "episodes",
        "seed",
        "out",
        episodes=dict(default=2, help="episodes to record (default 2)"),
        out=dict(
            type=str,
            default=None,
            help="folder for trust.json/.csv/.png (default trust/NAME/, NAME the checkpoint's "
            "file stem, with -random-init for --random-init)",
        ),
    )
    p.add_argument(
        "--frames",
        type=at_least(2),
        default=96,
        help="steps kept, spread evenly over the episodes (default 96)",
    )
    p.add_argument(
        "--methods", default=None, help="comma-separated methods (default: every registered one)"
    )
    p.add_argument(
        "--targets",
        default="taken,logits",
        help="taken (log pi of the action taken) and/or logits (Greydanus' whole-logit score, "
        "perturbation only); default taken,logits",
    )
    p.add_argument(
        "--mask-key",
        default="auto",
        help="info key with a bool [H, W] object mask per step for ground truth; 'auto' "
        "(goal_mask when the env has it, default) or 'none'",
    )
    p.add_argument(
        "--steps", type=at_least(2), default=20, help="deletion / insertion steps (default 20)"
    )
    p.add_argument(
        "--random-init",
        action="store_true",
        help="score a randomly initialised network of the checkpoint's architecture instead",
    )
    add_shared(p, "deterministic", "max_steps", "device")
    return p


def add_methods_from(parser: argparse.ArgumentParser) -> None:
    """``--methods-from TRUST_JSON`` for the commands that draw maps (video, explore)."""
    parser.add_argument(
        "--methods-from",
        default=None,
        metavar="TRUST_JSON",
        help="take the methods from a trust.json of `rlviz trust`: at most 2 that pass every "
        "check, most mass on the ground-truth object first (overrides --methods)",
    )


def methods_from_option(args: argparse.Namespace) -> list[str] | None:
    """The methods ``--methods-from`` names, None without it; a bad file is a :class:`CliError`."""
    if getattr(args, "methods_from", None) is None:
        return None
    from rlviz.faithfulness.report import methods_from

    with bad_input(prefix="--methods-from: "):
        return methods_from(args.methods_from)


def _methods(text: str | None) -> list[str] | None:
    if text is None:
        return None
    names = comma_separated(text)
    if not names:
        raise CliError("--methods is empty; name at least one, e.g. --methods occlusion,gradcam")
    return check_method_names(names)


def _targets(text: str) -> list[str]:
    from rlviz.faithfulness.run import TARGETS

    names = comma_separated(text)
    bad = [n for n in names if n not in TARGETS]
    if bad or not names:
        raise CliError(
            f"--targets {text!r}: expected a comma-separated subset of {', '.join(TARGETS)}"
        )
    return names


def _random_init(loaded, seed: int):
    """The checkpoint's architecture with fresh weights (``torch.manual_seed(seed)``)."""
    import torch

    from rlviz.agents.checkpoint import LoadedPolicy
    from rlviz.agents.policy import ActorCritic, make_adapter

    torch.manual_seed(seed)
    model = ActorCritic(loaded.model.arch).to(loaded.model.policy.weight.device).eval()
    return LoadedPolicy(model, make_adapter(model), *loaded[2:])


@command("trust")
def main(argv: Sequence[str] | None = None) -> int:
    """``rlviz trust``."""
    args = build_parser().parse_args(argv)
    methods = _methods(args.methods)
    targets = _targets(args.targets)
    require_checkpoint(args.checkpoint)  # before --out's folder is made
    if args.out is None:
        stem = Path(args.checkpoint).name.split(".")[0]
        args.out = f"trust/{stem}{'-random-init' if args.random_init else ''}/"
    out = check_out_dir(args.out)
    loaded = policy_from_args(args)
    if args.random_init:
        loaded = _random_init(loaded, args.seed)
    import rlviz

    mask_key = None if args.mask_key == "none" else args.mask_key
    with play_env(loaded) as env:
        if mask_key not in (None, "auto"):
            _, info = env.reset(seed=args.seed)
            if mask_key not in info:
                raise CliError(
                    f"--mask-key {mask_key!r} is not in {loaded.env_id}'s info; keys there: "
                    f"{', '.join(sorted(info)) or '(none)'}; pass one of them or --mask-key none"
                )
        report = rlviz.trust(
            loaded.adapter,
            env,
            methods,
            mask_key=mask_key,
            targets=targets,
            out=out,
            progress=functools.partial(print, file=sys.stderr, flush=True),
            **picked(args, "episodes", "frames", "seed", "steps", "deterministic", "max_steps"),
        )
    s = report.settings
    print(
        f"{s['frames']} frames of {s['episodes']} episodes ({s['steps_recorded']} steps), "
        f"{s['seconds']:.0f} s; checks: randomisation rho < {report.thresholds['rho']}, eMPRT > "
        f"{report.thresholds['emprt']}, deletion/insertion gain > {report.thresholds['gain_se']} "
        f"SE, ground truth mass/share >= {report.thresholds['mass_ratio']}"
    )
    for line in report.verdicts():
        print(line)
    for path in report.paths:
        print(path)
    return 0
