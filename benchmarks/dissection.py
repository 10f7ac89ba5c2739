"""Box-detector units of the shipped agent (network dissection) and what switching them off costs.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/dissection.py [--checkpoint PATH] [--quick]

1. Plays ``--episodes`` episodes (seeds 0..E-1, actions sampled) with ground truth on and dissects
   every conv block against the goal-box mask (Bau et al. 2017: per-unit threshold at the 0.995
   activation quantile, IoU summed over the dataset), for the trained agent and, as a control, for
   the same architecture with random weights (seeded) on the same frames; then again with each
   unit thresholded at the quantile matching the box's share of pixels (so IoU can reach 1).
2. Ablation on fresh episodes (seeds 1000..): success rate intact, with the top-k detectors
   (highest IoU over all layers; by default in the matched-quantile dissection) zeroed, and with
   k random units of the same layers zeroed (``--random-draws`` draws, excluding the detectors);
   all conditions replay the same seeds and the same action-sampling random numbers. Also the
   action-distribution change on the dissection states.

Prints the tables that go into BENCHMARKS.md ("Inside the network") and writes dissection.png,
dissection_matched.png, ablation_k*.png and dissection_benchmark.json to ``--out``.
"""

from __future__ import annotations

import argparse
import datetime
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rlviz import agents  # noqa: E402
from rlviz.cli.common import make_env  # noqa: E402
from rlviz.cli.features import collect_dataset  # noqa: E402
from rlviz.features import ablation_study, dissect, plot_ablation, plot_dissection  # noqa: E402
from rlviz.hooks import default_layers  # noqa: E402
from rlviz.io import save_json  # noqa: E402


def dissection_table(name: str, result, thresholds: list[float]) -> list[str]:
    counts = [result.count(t) for t in thresholds]
    head = " ".join(f"{'IoU>' + format(t, 'g'):>8}" for t in thresholds)
    lines = [
        f"{name}:",
        f"  {'layer':<7} {'units':>5} {head} {'best IoU':>9} {'(unit':>5} {'precision)':>10} "
        f"{'mean IoU top-5':>14}",
    ]
    for layer in result.layers:
        top = result.top(5, layers=[layer])
        cells = " ".join(f"{c[layer]:>8}" for c in counts)
        lines.append(
            f"  {layer:<7} {len(result.thresholds[layer]):>5} {cells} {top[0].iou:>9.3f} "
            f"{top[0].unit:>5} {top[0].precision:>10.2f} {np.mean([s.iou for s in top]):>14.3f}"
        )
    return lines


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", type=Path, default=agents.SHIPPED_CHECKPOINT)
    p.add_argument("--env", default=None, help="default: the checkpoint's env")
    p.add_argument("--episodes", type=int, default=20, help="dissection episodes (default 20)")
    p.add_argument("--quantile", type=float, default=0.995)
    p.add_argument("--iou-threshold", type=float, default=0.04)
    p.add_argument(
        "--k",
        type=int,
        nargs="*",
        default=[1, 3, 5, 10],
        help="numbers of detectors to ablate (none: dissection only)",
    )
    p.add_argument(
        "--ablate-episodes", type=int, default=50, help="episodes per ablation condition"
    )
    p.add_argument("--random-draws", type=int, default=5)
    p.add_argument(
        "--rank-by",
        choices=("matched", "standard"),
        default="matched",
        help="which dissection ranks the detectors to ablate: thresholds at the quantile "
        "matching the box's coverage (default) or at --quantile",
    )
    p.add_argument("--max-steps", type=int, default=None)
    p.add_argument("--out", type=Path, default=Path("videos/features"))
    p.add_argument("--quick", action="store_true", help="tiny settings, to check the script runs")
    args = p.parse_args()
    if args.quick:
        args.episodes, args.k, args.ablate_episodes, args.random_draws = 2, [2], 2, 1
        args.max_steps = args.max_steps or 30
    if not args.checkpoint.exists():
        print(
            f"checkpoint {args.checkpoint} does not exist yet; pass --checkpoint", file=sys.stderr
        )
        return 2

    started = time.time()
    model, config = agents.load_checkpoint(args.checkpoint)
    adapter = agents.make_adapter(model)
    env_id = args.env or config.get("env_id") or "rlviz/BoxReach-v0"
    layers = default_layers(model)
    print(
        f"# rlviz dissection benchmark, {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M UTC}"
    )
    print(
        f"checkpoint {args.checkpoint} ({config.get('steps', '?')} steps), env {env_id}, "
        f"torch {torch.__version__}, threads {torch.get_num_threads()}"
    )
    env = make_env(env_id)
    report: dict = {
        "checkpoint": str(args.checkpoint),
        "env_id": env_id,
        "quantile": args.quantile,
        "iou_threshold": args.iou_threshold,
    }
    try:
        t0 = time.time()
        obs, masks, rollouts = collect_dataset(
            env, adapter, args.episodes, seed=0, max_steps=args.max_steps, ground_truth=True
        )
        visible = masks.any((1, 2))
        print(
            f"\ndataset: {len(obs)} states from {args.episodes} episodes (seeds 0..{args.episodes - 1}), "
            f"success {np.mean([r.success for r in rollouts]):.2f}; goal box in view in {visible.mean():.0%} "
            f"of states, covering {masks[visible].mean():.1%} of the frame when in view "
            f"({time.time() - t0:.0f} s)"
        )
        t0 = time.time()
        result = dissect(adapter, obs, masks, layers, quantile=args.quantile)
        torch.manual_seed(12345)  # not the seed a training run is likely to have started from
        random_model = agents.ActorCritic(model.arch)
        random_result = dissect(
            agents.make_adapter(random_model), obs, masks, layers, quantile=args.quantile
        )
        # a unit on in (1 - q) of all pixels can at best cover that much of the mask: IoU <= this
        ceiling = min(1.0, (1 - args.quantile) / masks.mean())
        print(
            f"\nNetwork dissection vs the goal-box mask (threshold: {args.quantile:g} quantile per unit; "
            f"detector: IoU > {args.iou_threshold:g}; the box covers {masks.mean():.2%} of all pixels, so "
            f"IoU <= {ceiling:.2f} at this quantile) ({time.time() - t0:.0f} s)"
        )
        # Bau et al.'s 0.04 and two stricter thresholds: a red box on grey is easy to segment
        thresholds = sorted({args.iou_threshold, 0.1, 0.2})
        for line in dissection_table("trained agent", result, thresholds):
            print(line)
        for line in dissection_table(
            "same architecture, random weights (control)", random_result, thresholds
        ):
            print(line)
        # Second view: threshold each unit at the quantile that matches the box's coverage, so a
        # perfect box detector could reach IoU 1 (the 0.995 quantile caps IoU at `ceiling`).
        matched_q = float(1 - masks.mean())
        matched = dissect(adapter, obs, masks, layers, quantile=matched_q)
        matched_random = dissect(
            agents.make_adapter(random_model), obs, masks, layers, quantile=matched_q
        )
        print(
            f"\nSame, thresholded at the {matched_q:.3f} quantile (= 1 - the box's share of pixels):"
        )
        for line in dissection_table("trained agent", matched, [0.1, 0.2, 0.3]):
            print(line)
        for line in dissection_table(
            "same architecture, random weights (control)", matched_random, [0.1, 0.2, 0.3]
        ):
            print(line)
        report["matched_quantile"] = matched_q
        plot_dissection(
            matched,
            args.out / "dissection_matched.png",
            iou_threshold=0.2,
            adapter=adapter,
            obs=obs,
            masks=masks,
        )
        report["detectors_trained_matched"] = {str(t): matched.count(t) for t in (0.1, 0.2, 0.3)}
        report["detectors_random_init_matched"] = {
            str(t): matched_random.count(t) for t in (0.1, 0.2, 0.3)
        }
        report.update(result.report(args.iou_threshold))  # states, units per layer, every unit
        report["iou_ceiling"] = ceiling
        report["detectors_trained"] = {str(t): result.count(t) for t in thresholds}
        report["detectors_random_init"] = {str(t): random_result.count(t) for t in thresholds}
        plot_dissection(
            result,
            args.out / "dissection.png",
            iou_threshold=args.iou_threshold,
            adapter=adapter,
            obs=obs,
            masks=masks,
        )

        channels = result.units_per_layer()
        if args.k:
            print(
                f"\nAblation: success over {args.ablate_episodes} episodes (seeds 1000..), actions sampled; "
                f"detectors ranked by the {args.rank_by} dissection; random = {args.random_draws} draws of "
                "as many units from the same layers"
            )
            print(
                f"  {'k':>3} {'intact':>6} {'top-k off':>9} {'random off':>16} "
                f"{'KL top-k':>8} {'KL random':>9} {'flips top-k':>11} {'flips rnd':>9}  units off (layer:unit)"
            )
        report["ablation"] = {}
        for k in args.k:
            t0 = time.time()
            top = (matched if args.rank_by == "matched" else result).top(k)
            study = ablation_study(
                env,
                adapter,
                top,
                channels,
                episodes=args.ablate_episodes,
                random_draws=args.random_draws,
                seed=1000,
                obs=obs,
                max_steps=args.max_steps,
            )
            s = study.summary()
            units = ",".join(f"{u.layer}:{u.unit}" for u in top)
            draws = " ".join(f"{r.rate:.2f}" for r in study.random)
            print(
                f"  {k:>3} {s['baseline']:>6.2f} {s['targeted']:>9.2f} "
                f"{s['random_mean']:>7.2f} +- {s['random_std']:.2f} {s['kl_targeted']:>8.3f} "
                f"{s['kl_random_mean']:>9.3f} {s['flip_targeted']:>11.0%} {s['flip_random_mean']:>9.0%}"
                f"  {units}  (random draws: {draws}; {time.time() - t0:.0f} s)"
            )
            report["ablation"][str(k)] = {
                **study.report(),
                "random_rates": [r.rate for r in study.random],
            }
            plot_ablation(
                study,
                args.out / f"ablation_k{k}.png",
                title=f"Top-{k} goal-box detectors off vs {k} random units off "
                f"({args.ablate_episodes} episodes each)",
            )
    finally:
        env.close()
    save_json(report, args.out / "dissection_benchmark.json")
    print(f"\nfigures and JSON in {args.out}/; total {time.time() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
