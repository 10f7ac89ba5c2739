"""``rlviz dissect``: network dissection against the goal-box mask (Bau et al. 2017,
https://arxiv.org/abs/1704.05796), and optionally the success-rate cost of switching the best
detectors off."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from rlviz.cli.common import (
    CliError,
    add_shared,
    at_least,
    command,
    in_range,
    picked,
    play_env,
    print_paths,
    warn,
)
from rlviz.cli.features.common import add_layers_flag, feature_parser, layers_arg, load, play_states


def build_parser() -> argparse.ArgumentParser:
    """The ``rlviz dissect`` argument parser."""
    p = feature_parser(
        "dissect",
        "Network dissection against the goal-box mask (Bau et al. 2017), and "
        "optionally the success-rate cost of switching the best detectors off.",
    )
    add_layers_flag(p, "layers to dissect")
    add_shared(
        p,
        "episodes",
        episodes=dict(default=10, help="episodes of states to dissect on (default 10)"),
    )
    p.add_argument(
        "--quantile",
        type=float,
        default=0.995,
        help="unit activation quantile threshold (default 0.995)",
    )
    p.add_argument(
        "--iou-threshold",
        type=in_range(0, 1),
        default=0.04,
        help="IoU above which a unit is a detector (default 0.04)",
    )
    p.add_argument(
        "--ablate",
        type=at_least(0),
        default=0,
        metavar="K",
        help="switch off the top K detectors vs K random units and compare success (default 0: no)",
    )
    p.add_argument(
        "--ablate-episodes",
        type=at_least(1),
        default=20,
        help="episodes per ablation condition (default 20)",
    )
    p.add_argument(
        "--random-draws", type=at_least(1), default=5, help="random-unit control draws (default 5)"
    )
    return p


def _print_dissection(result, layers: list[str], obs, masks, threshold: float) -> None:
    counts = result.count(threshold)
    print(f"{len(obs)} states, goal box visible in {int(masks.any((1, 2)).sum())}")
    for layer in layers:
        best = result.top(1, layers=[layer])[0]
        print(
            f"{layer}: {counts[layer]}/{len(result.thresholds[layer])} units with IoU > "
            f"{threshold:g}; best #{best.unit} IoU {best.iou:.3f} precision {best.precision:.2f}"
        )


def _ablate(env, adapter, result, layers: list[str], obs, args: argparse.Namespace):
    """Switch off the top ``--ablate`` detectors vs as many random units; returns the study."""
    from rlviz.features import ablation_study

    channels = {layer: len(result.thresholds[layer]) for layer in layers}
    # Ablation runs on fresh episodes (seeds after the dissection's), so it is not judged on the
    # states the detectors were picked on.
    study = ablation_study(
        env,
        adapter,
        result.top(args.ablate),
        channels,
        episodes=args.ablate_episodes,
        seed=args.seed + args.episodes,
        obs=obs,
        progress=not args.no_progress,
        **picked(args, "random_draws", "deterministic", "max_steps"),
    )
    from rlviz.features.ablation import SMALL_SAMPLE, binomial_margin, format_units

    summary = study.summary()
    n, draws = len(study.baseline.successes), len(study.random)
    spread = (
        f"+- {summary['random_std']:.2f} over {draws} draws"
        if draws > 1
        else "(1 draw: no spread; raise --random-draws)"
    )
    print(f"ablated: {format_units(study.units)} (the top {study.k} detectors by IoU)")
    print(
        f"success over {n} episodes each: intact {summary['baseline']:.2f}, top-{study.k} "
        f"detectors off {summary['targeted']:.2f}, {study.k} random units off "
        f"{summary['random_mean']:.2f} {spread}"
    )
    if n < SMALL_SAMPLE:
        warn(
            "dissect",
            f"warning: {n} episodes per condition is a small sample (each rate "
            f"+-{binomial_margin(n):.2f} at 95%); pass --ablate-episodes {SMALL_SAMPLE} or more",
        )
    return study


@command("dissect")
def dissect_main(argv: Sequence[str] | None = None) -> int:
    """``rlviz dissect``; returns the exit status."""
    from rlviz.features import dissect, plot_ablation, plot_dissection
    from rlviz.io import save_json

    args = build_parser().parse_args(argv)
    if not 0 < args.quantile < 1:
        raise CliError(f"--quantile must be in (0, 1), got {args.quantile}")
    policy = load(args, layers=args.layers or ())
    adapter = policy.adapter
    layers = layers_arg(policy.model, args.layers)
    with play_env(policy) as env:
        obs, masks, _ = play_states(args, env, adapter, ground_truth=True)
        result = dissect(adapter, obs, masks, layers, quantile=args.quantile)
        _print_dissection(result, layers, obs, masks, args.iou_threshold)
        written = [
            plot_dissection(
                result,
                args.out / "dissection.png",
                iou_threshold=args.iou_threshold,
                adapter=adapter,
                obs=obs,
                masks=masks,
            )
        ]
        report = {
            "checkpoint": str(args.checkpoint),
            "env_id": policy.env_id,
            "states": len(obs),
            "quantile": args.quantile,
            "iou_threshold": args.iou_threshold,
            "detectors_per_layer": result.count(args.iou_threshold),
            "units_per_layer": {layer: len(result.thresholds[layer]) for layer in layers},
            "units": [vars(s) for s in result.scores()],
        }
        if args.ablate:
            study = _ablate(env, adapter, result, layers, obs, args)
            written.append(plot_ablation(study, args.out / "ablation.png"))
            report["ablation"] = {
                **study.summary(),
                "units": study.units,
                "random_units": study.random_units,
            }
    written.append(save_json(report, args.out / "dissection.json"))
    print_paths(written)
    return 0
