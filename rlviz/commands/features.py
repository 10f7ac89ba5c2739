"""``rlviz filters | featvis | topk | dissect``: look inside a checkpoint's network.

Examples::

    rlviz filters --checkpoint agents/checkpoints/boxreach.safetensors --out videos/features
    rlviz featvis --objective action:left --objective channel:conv3:5 --steps 256
    rlviz featvis --method deepdream --layers conv2 conv3
    rlviz featvis --method invert --layers conv1 conv2 conv3
    rlviz featvis --method adversarial --episodes 2
    rlviz topk --layer conv3 --units 0 5 7 --k 8 --neighbours
    rlviz dissect --episodes 10 --ablate 5 --ablate-episodes 30

Every command plays the checkpoint in its env (``--env``, default the one it was trained on) to
get observations, and writes PNG figures (plus JSON for ``dissect``) into ``--out``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

DEFAULT_CHECKPOINT = Path("agents/checkpoints/boxreach.safetensors")
DEFAULT_OUT = Path("videos/features")


class _Fail(Exception):
    """Bad input: printed as ``rlviz CMD: error: ...`` with exit status 2."""


def _common(prog: str, description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=f"rlviz {prog}", description=description)
    p.add_argument(
        "--checkpoint",
        type=Path,
        default=DEFAULT_CHECKPOINT,
        help=f"agent checkpoint (.safetensors; default {DEFAULT_CHECKPOINT})",
    )
    p.add_argument(
        "--env",
        default=None,
        help="Gymnasium id (default: the checkpoint's env, else rlviz/BoxReach-v0)",
    )
    p.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help=f"output folder (default {DEFAULT_OUT})"
    )
    p.add_argument(
        "--seed", type=int, default=0, help="episode i is reset with seed + i (default 0)"
    )
    p.add_argument("--max-steps", type=int, default=None, help="cut episodes after this many steps")
    p.add_argument(
        "--deterministic", action="store_true", help="greedy actions instead of sampling"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def _load(args):
    """(adapter, env_id) for the command's checkpoint."""
    if not args.checkpoint.exists():
        raise _Fail(
            f"checkpoint {str(args.checkpoint)!r} does not exist; train one with `rlviz train` "
            f"or pass --checkpoint {DEFAULT_CHECKPOINT}"
        )
    import agents

    try:
        model, config = agents.load_checkpoint(args.checkpoint)
    except (FileNotFoundError, agents.CheckpointError) as exc:
        raise _Fail(str(exc)) from None
    env_id = (
        args.env
        or (config.get("env_id") if isinstance(config, dict) else None)
        or "rlviz/BoxReach-v0"
    )
    return agents.make_adapter(model), env_id


def _make_env(env_id: str):
    from rlviz.render import make_env

    try:
        return make_env(env_id)
    except ValueError as exc:
        raise _Fail(str(exc)) from None


def conv_blocks(model) -> list[str]:
    """The model's conv layers to show by default: its ``conv_layers`` if it names them (our
    agents: post-ReLU blocks), else every ``nn.Conv2d``."""
    from torch import nn

    from rlviz.hooks import list_layers

    named = getattr(model, "conv_layers", None)
    return list(named) if named else list_layers(model, nn.Conv2d)


def _check_layers(model, layers: Sequence[str]) -> list[str]:
    from rlviz.hooks import get_layer

    for layer in layers:
        try:
            get_layer(model, layer)
        except ValueError as exc:
            raise _Fail(str(exc)) from None
    return list(layers)


def collect_dataset(
    env,
    adapter,
    episodes: int,
    *,
    seed: int = 0,
    deterministic: bool = False,
    max_steps: int | None = None,
    ground_truth: bool = False,
    progress: bool = False,
):
    """Play ``episodes`` episodes; returns (obs uint8 [N, H, W, C], goal masks bool [N, H, W] or
    None where the env gives none, list of rollouts). ``ground_truth``: fail without masks."""
    from tqdm.auto import tqdm

    from rlviz.rollout import collect

    if episodes < 1:
        raise _Fail(f"--episodes must be >= 1, got {episodes}")
    rollouts = list(
        tqdm(
            collect(
                env,
                adapter,
                episodes,
                seed=seed,
                deterministic=deterministic,
                info_keys=("success", "goal_mask"),
                max_steps=max_steps,
            ),
            total=episodes,
            desc="playing episodes",
            disable=not progress,
            leave=False,
        )
    )
    obs = np.concatenate([r.obs for r in rollouts])
    masks = None
    if all("goal_mask" in r.infos for r in rollouts):
        masks = np.concatenate([r.infos["goal_mask"] for r in rollouts]).astype(bool)
    elif ground_truth:
        raise _Fail(
            "this env gives no info['goal_mask']; dissection needs an rlviz/BoxReach env "
            "made with ground_truth=True"
        )
    return obs, masks, rollouts


def showcase_index(masks: np.ndarray | None) -> int:
    """Index of a state where the goal box is clearly in view (75th percentile of its visible
    area), or 0 without masks or a visible box."""
    if masks is None:
        return 0
    area = masks.reshape(len(masks), -1).sum(1)
    visible = np.flatnonzero(area > 0)
    if not len(visible):
        return 0
    order = visible[np.argsort(area[visible], kind="stable")]
    return int(order[int(0.75 * (len(order) - 1))])


def pick_frame(
    env, adapter, seed: int, max_steps: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """A frame worth showing: from one episode of the policy, a state where the goal box is
    clearly in view (75th percentile of its visible area), else the first frame.

    Returns:
        (frame uint8 [H, W, C], all the episode's frames [T, H, W, C]).
    """
    import torch

    from rlviz.rollout import run_episode

    episode = run_episode(
        env,
        adapter,
        seed=seed,
        info_keys=("goal_mask",),
        max_steps=max_steps or 200,
        generator=torch.Generator().manual_seed(seed),
    )
    return episode.obs[showcase_index(episode.infos.get("goal_mask"))], episode.obs


def _run(main, prog: str, argv) -> int:
    try:
        return main(list(argv) if argv is not None else None)
    except _Fail as exc:
        print(f"rlviz {prog}: error: {exc}", file=sys.stderr)
        return 2


# ----------------------------------------------------------------------------------------- filters


def _filters(argv) -> int:
    p = _common(
        "filters",
        "First-layer kernels, deeper filter grids, hand kernels vs learned "
        "responses, and every feature map of chosen layers for one frame.",
    )
    p.add_argument(
        "--layers",
        nargs="+",
        default=None,
        help="layers whose feature maps to draw (default: every conv block)",
    )
    args = p.parse_args(argv)
    from torch import nn

    from rlviz.features import (
        plot_feature_maps,
        plot_filter_grid,
        plot_kernel_comparison,
        plot_rgb_filters,
    )
    from rlviz.hooks import list_layers

    adapter, env_id = _load(args)
    model = adapter.model
    layers = _check_layers(model, args.layers or conv_blocks(model))
    env = _make_env(env_id)
    try:
        frame, _ = pick_frame(env, adapter, args.seed, args.max_steps)
    finally:
        env.close()
    out = args.out
    written = [plot_rgb_filters(model, out / "filters_rgb.png")]
    for layer in list_layers(model, nn.Conv2d)[1:]:
        written.append(plot_filter_grid(model, layer, out / f"filters_{layer}.png"))
    written.append(plot_kernel_comparison(adapter, frame, out / "kernels_vs_learned.png"))
    for layer in layers:
        written.append(plot_feature_maps(adapter, frame, layer, out / f"featmaps_{layer}.png"))
    for path in written:
        print(path)
    return 0


def filters_main(argv: Sequence[str] | None = None) -> int:
    """``rlviz filters``; returns the exit status."""
    return _run(_filters, "filters", argv)


# ----------------------------------------------------------------------------------------- featvis


def parse_objective(spec: str, action_names: Sequence[str] | None):
    """An objective from a command-line spec: ``action:K`` / ``logit:K`` (logit of action K, by
    index or name), ``prob:K``, ``logprob:K``, ``value``, ``channel:LAYER:C``,
    ``neuron:LAYER:C[:X:Y]``."""
    from rlviz.features import optvis

    parts = spec.split(":")
    kind = parts[0]

    def action(text: str) -> int:
        if action_names and text in action_names:
            return list(action_names).index(text)
        try:
            return int(text)
        except ValueError:
            raise _Fail(
                f"objective {spec!r}: unknown action {text!r}; use an index or one of "
                f"{list(action_names or [])}"
            ) from None

    try:
        if kind in ("action", "logit") and len(parts) == 2:
            return optvis.action_logit(action(parts[1]))
        if kind == "prob" and len(parts) == 2:
            return optvis.action_prob(action(parts[1]))
        if kind == "logprob" and len(parts) == 2:
            return optvis.action_log_prob(action(parts[1]))
        if kind == "value" and len(parts) == 1:
            return optvis.value()
        if kind == "channel" and len(parts) == 3:
            return optvis.channel(parts[1], int(parts[2]))
        if kind == "neuron" and len(parts) in (3, 5):
            xy = (int(parts[3]), int(parts[4])) if len(parts) == 5 else (None, None)
            return optvis.neuron(parts[1], int(parts[2]), *xy)
    except ValueError:
        pass
    raise _Fail(
        f"cannot read objective {spec!r}; expected action:K, prob:K, logprob:K, value, "
        "channel:LAYER:C or neuron:LAYER:C[:X:Y]"
    )


def _featvis(argv) -> int:
    p = _common(
        "featvis",
        "Activation maximisation, DeepDream, inversion and adversarial examples on a checkpoint.",
    )
    p.add_argument(
        "--method",
        choices=("maximise", "deepdream", "invert", "adversarial"),
        default="maximise",
        help="what to compute (default maximise)",
    )
    p.add_argument(
        "--objective",
        action="append",
        default=None,
        metavar="SPEC",
        help="maximise: action:K | prob:K | logprob:K | value | channel:LAYER:C | "
        "neuron:LAYER:C[:X:Y]; repeat for several (default: every action's logit and the value)",
    )
    p.add_argument(
        "--param",
        choices=("fourier", "pixels"),
        default="fourier",
        help="image parameterisation (fourier: colours decorrelated by the env's own frames)",
    )
    p.add_argument(
        "--steps",
        type=int,
        default=None,
        help="optimisation steps (default 256; deepdream: per octave, 10; invert: 400)",
    )
    p.add_argument(
        "--lr", type=float, default=0.05, help="maximise / invert: Adam step size (default 0.05)"
    )
    p.add_argument(
        "--tv",
        type=float,
        default=None,
        help="total-variation weight (maximise default 0.01; invert default 0.5)",
    )
    p.add_argument("--l2", type=float, default=0.0, help="maximise: L2 weight (default 0)")
    p.add_argument(
        "--blur", type=float, default=0.0, help="maximise: blur-penalty weight (default 0)"
    )
    p.add_argument(
        "--no-transforms", action="store_true", help="maximise: no jitter / scale / rotate"
    )
    p.add_argument(
        "--layers",
        nargs="+",
        default=None,
        help="deepdream / invert: layers (default: every conv block)",
    )
    p.add_argument(
        "--channel",
        type=int,
        default=None,
        help="deepdream: one channel instead of the whole layer",
    )
    p.add_argument("--octaves", type=int, default=3, help="deepdream: pyramid levels (default 3)")
    p.add_argument(
        "--episodes", type=int, default=1, help="adversarial: episodes to attack (default 1)"
    )
    p.add_argument(
        "--eps-max",
        type=float,
        default=0.1,
        help="adversarial: largest L-inf epsilon (default 0.1)",
    )
    p.add_argument("--attacks", default="fgsm,pgd", help="adversarial: comma-separated fgsm,pgd")
    args = p.parse_args(argv)
    from rlviz.features import optvis

    adapter, env_id = _load(args)
    model = adapter.model
    env = _make_env(env_id)
    out = args.out
    progress = not args.no_progress
    written = []
    try:
        frame, episode = pick_frame(env, adapter, args.seed, args.max_steps)
        size = frame.shape[:2]
        if args.method == "maximise":
            n_actions = adapter(frame).logits.shape[1]
            names = adapter.action_names or [str(k) for k in range(n_actions)]
            specs = args.objective or [f"action:{names[k]}" for k in range(n_actions)] + ["value"]
            tv = 0.01 if args.tv is None else args.tv
            # colours decorrelated by the statistics of this env's frames, not ImageNet's
            colours = optvis.color_correlation(episode) if episode.shape[-1] == 3 else False
            results, titles = [], []
            for spec in specs:
                objective = parse_objective(spec, adapter.action_names)
                if tv:
                    objective = objective - tv * optvis.total_variation()
                if args.l2:
                    objective = objective - args.l2 * optvis.l2()
                if args.blur:
                    objective = objective - args.blur * optvis.blur()
                if args.param == "fourier":
                    param = optvis.fourier(
                        size, channels=episode.shape[-1], decorrelate=colours, seed=args.seed
                    )
                else:
                    param = optvis.pixels(size, channels=episode.shape[-1], seed=args.seed)
                try:
                    results.append(
                        optvis.optimize(
                            adapter,
                            objective,
                            param=param,
                            transforms=[] if args.no_transforms else None,
                            steps=args.steps or 256,
                            lr=args.lr,
                            seed=args.seed,
                            progress=progress,
                        )
                    )
                except (ValueError, KeyError) as exc:
                    raise _Fail(f"objective {spec!r}: {exc}") from None
                titles.append(spec)
                print(
                    f"{spec}: objective {results[-1].initial[0]:.3f} -> {results[-1].final[0]:.3f}"
                )
            written.append(
                optvis.plot_visualisations(
                    results,
                    out / "featvis.png",
                    titles,
                    suptitle=f"Activation maximisation ({args.param}, {args.steps or 256} steps, TV {tv:g}); "
                    "dotted: objective at the start",
                )
            )
        elif args.method == "deepdream":
            from rlviz.features import deepdream, plot_dreams

            layers = _check_layers(model, args.layers or conv_blocks(model))
            dreams = [
                deepdream(
                    adapter,
                    frame,
                    layer,
                    args.channel,
                    octaves=args.octaves,
                    steps=args.steps or 10,
                    seed=args.seed,
                    progress=progress,
                )
                for layer in layers
            ]
            written.append(plot_dreams(frame, dreams, out / "deepdream.png"))
        elif args.method == "invert":
            from rlviz.features import invert, plot_inversions

            layers = _check_layers(model, args.layers or conv_blocks(model))
            inversions = []
            for layer in layers:
                inv = invert(
                    adapter,
                    frame,
                    layer,
                    steps=args.steps or 400,
                    lr=args.lr,
                    param=args.param,
                    tv_weight=0.5 if args.tv is None else args.tv,
                    seed=args.seed,
                    progress=progress,
                )
                print(
                    f"{layer}: relative feature distance {inv.initial_distance:.3f} -> {inv.final_distance:.4f}"
                )
                inversions.append(inv)
            written.append(plot_inversions(frame, inversions, out / "inversion.png"))
        else:
            from rlviz.features import (
                minimal_perturbation,
                plot_adversarial_example,
                plot_epsilon_histogram,
            )

            attacks = [a.strip() for a in args.attacks.split(",") if a.strip()]
            bad = sorted(set(attacks) - {"fgsm", "pgd"})
            if bad or not attacks:
                raise _Fail(f"--attacks must name fgsm and/or pgd, got {args.attacks!r}")
            obs, _, _ = collect_dataset(
                env,
                adapter,
                args.episodes,
                seed=args.seed,
                deterministic=args.deterministic,
                max_steps=args.max_steps,
                progress=progress,
            )
            # an agent pushing against a wall sees the same frame for many steps: attack each
            # distinct frame once, so repeats do not pile up in the histogram
            _, first = np.unique(obs.reshape(len(obs), -1), axis=0, return_index=True)
            n_all, obs = len(obs), obs[np.sort(first)]
            print(f"{len(obs)} distinct frames of {n_all} played")
            results = [
                minimal_perturbation(adapter, obs, method=a, eps_max=args.eps_max, seed=args.seed)
                for a in attacks
            ]
            for r in results:
                eps = r.epsilon[r.found] * 255
                median = (
                    f"median {np.median(eps):.2f}/255, min {eps.min():.2f}/255"
                    if len(eps)
                    else "none"
                )
                print(
                    f"{r.method}: {r.found.sum()}/{len(r.epsilon)} frames flipped within "
                    f"{args.eps_max * 255:.1f}/255; {median}"
                )
            written.append(
                plot_epsilon_histogram(
                    results,
                    out / "adversarial_epsilon.png",
                    title=f"Smallest action-changing L-inf epsilon over {len(obs)} distinct frames",
                )
            )
            best = results[-1]
            if best.found.any():
                index = int(np.argmin(np.where(best.found, best.epsilon, np.inf)))
                written.append(
                    plot_adversarial_example(
                        best, obs, index, out / "adversarial_example.png", adapter.action_names
                    )
                )
    finally:
        env.close()
    for path in written:
        print(path)
    return 0


def featvis_main(argv: Sequence[str] | None = None) -> int:
    """``rlviz featvis``; returns the exit status."""
    return _run(_featvis, "featvis", argv)


# -------------------------------------------------------------------------------------------- topk


def _topk(argv) -> int:
    p = _common(
        "topk",
        "The states that activate chosen units most, with the receptive-field "
        "patch of each peak; optionally nearest neighbours of a frame in feature space.",
    )
    p.add_argument("--layer", default=None, help="layer (default: the last conv block)")
    p.add_argument(
        "--units",
        type=int,
        nargs="+",
        default=None,
        help="unit indices (default: the 4 whose peak varies most across states)",
    )
    p.add_argument("--k", type=int, default=8, help="states per unit (default 8)")
    p.add_argument(
        "--episodes", type=int, default=4, help="episodes to collect states from (default 4)"
    )
    p.add_argument(
        "--min-separation",
        type=int,
        default=5,
        help="keep chosen states at least this many steps apart (default 5)",
    )
    p.add_argument(
        "--neighbours", action="store_true", help="also draw nearest neighbours of --query"
    )
    p.add_argument(
        "--query",
        type=int,
        default=None,
        help="index of the query state (default: one with the goal box well in view)",
    )
    args = p.parse_args(argv)
    from rlviz.features import (
        layer_features,
        nearest_neighbours,
        pixel_neighbours,
        plot_neighbours,
        plot_top_k,
        top_k_examples,
    )
    from rlviz.features._common import layer_activations

    adapter, env_id = _load(args)
    model = adapter.model
    layer = _check_layers(model, [args.layer or conv_blocks(model)[-1]])[0]
    env = _make_env(env_id)
    try:
        obs, masks, rollouts = collect_dataset(
            env,
            adapter,
            args.episodes,
            seed=args.seed,
            deterministic=args.deterministic,
            max_steps=args.max_steps,
            progress=not args.no_progress,
        )
    finally:
        env.close()
    acts = layer_activations(adapter, obs, layer)[layer]
    n_units = acts.shape[1]
    if args.units is None:
        peaks = acts.reshape(len(acts), n_units, -1).amax(-1)
        units = [int(u) for u in peaks.std(0).argsort(descending=True)[:4]]
    else:
        units = args.units
    bad = [u for u in units if not 0 <= u < n_units]
    if bad:
        raise _Fail(f"layer {layer!r} has {n_units} units (0..{n_units - 1}); got --units {bad}")
    examples = [
        top_k_examples(adapter, obs, layer, u, args.k, min_separation=args.min_separation)
        for u in units
    ]
    written = [plot_top_k(examples, obs, args.out / f"topk_{layer}.png")]
    if args.neighbours:
        query = showcase_index(masks) if args.query is None else args.query
        if not 0 <= query < len(obs):
            raise _Fail(f"--query must index one of the {len(obs)} collected states, got {query}")
        # neighbours from other episodes: within its own one a state's neighbours are just the
        # steps around it (or identical frames while the agent is stuck)
        episode_of = np.concatenate([np.full(len(r), i) for i, r in enumerate(rollouts)])
        near = np.flatnonzero(episode_of == episode_of[query])
        if len(near) == len(obs):
            raise _Fail("--neighbours needs states from at least 2 episodes; raise --episodes")
        features = layer_features(adapter, obs, layer)
        rows = [
            nearest_neighbours(
                adapter, obs, obs[query], layer, k=args.k, exclude=near, features=features
            ),
            pixel_neighbours(obs, obs[query], k=args.k, exclude=near),
        ]
        names = adapter.action_names or [
            str(i) for i in range(int(max(r.actions.max() for r in rollouts)) + 1)
        ]
        captions = np.array([names[a] for r in rollouts for a in r.actions])
        written.append(
            plot_neighbours(obs, obs[query], rows, args.out / "neighbours.png", captions=captions)
        )
    for path in written:
        print(path)
    return 0


def topk_main(argv: Sequence[str] | None = None) -> int:
    """``rlviz topk``; returns the exit status."""
    return _run(_topk, "topk", argv)


# ----------------------------------------------------------------------------------------- dissect


def _dissect(argv) -> int:
    p = _common(
        "dissect",
        "Network dissection against the goal-box mask (Bau et al. 2017), and "
        "optionally the success-rate cost of switching the best detectors off.",
    )
    p.add_argument(
        "--layers", nargs="+", default=None, help="layers to dissect (default: every conv block)"
    )
    p.add_argument(
        "--episodes", type=int, default=10, help="episodes of states to dissect on (default 10)"
    )
    p.add_argument(
        "--quantile",
        type=float,
        default=0.995,
        help="unit activation quantile threshold (default 0.995)",
    )
    p.add_argument(
        "--iou-threshold",
        type=float,
        default=0.04,
        help="IoU above which a unit is a detector (default 0.04)",
    )
    p.add_argument(
        "--ablate",
        type=int,
        default=0,
        metavar="K",
        help="switch off the top K detectors vs K random units and compare success (default 0: no)",
    )
    p.add_argument(
        "--ablate-episodes",
        type=int,
        default=20,
        help="episodes per ablation condition (default 20)",
    )
    p.add_argument(
        "--random-draws", type=int, default=5, help="random-unit control draws (default 5)"
    )
    args = p.parse_args(argv)
    from rlviz.features import ablation_study, dissect, plot_ablation, plot_dissection
    from rlviz.features._common import save_json

    if not 0 < args.quantile < 1:
        raise _Fail(f"--quantile must be in (0, 1), got {args.quantile}")
    adapter, env_id = _load(args)
    model = adapter.model
    layers = _check_layers(model, args.layers or conv_blocks(model))
    progress = not args.no_progress
    env = _make_env(env_id)
    written = []
    try:
        obs, masks, _ = collect_dataset(
            env,
            adapter,
            args.episodes,
            seed=args.seed,
            deterministic=args.deterministic,
            max_steps=args.max_steps,
            ground_truth=True,
            progress=progress,
        )
        result = dissect(adapter, obs, masks, layers, quantile=args.quantile)
        counts = result.count(args.iou_threshold)
        print(f"{len(obs)} states, goal box visible in {int(masks.any((1, 2)).sum())}")
        for layer in layers:
            best = result.top(1, layers=[layer])[0]
            print(
                f"{layer}: {counts[layer]}/{len(result.thresholds[layer])} units with IoU > {args.iou_threshold:g}; "
                f"best #{best.unit} IoU {best.iou:.3f} precision {best.precision:.2f}"
            )
        written.append(
            plot_dissection(
                result,
                args.out / "dissection.png",
                iou_threshold=args.iou_threshold,
                adapter=adapter,
                obs=obs,
                masks=masks,
            )
        )
        report = {
            "checkpoint": str(args.checkpoint),
            "env_id": env_id,
            "states": len(obs),
            "quantile": args.quantile,
            "iou_threshold": args.iou_threshold,
            "detectors_per_layer": counts,
            "units_per_layer": {layer: len(result.thresholds[layer]) for layer in layers},
            "units": [vars(s) for s in result.scores()],
        }
        if args.ablate:
            top = result.top(args.ablate)
            channels = {layer: len(result.thresholds[layer]) for layer in layers}
            # ablation runs on fresh episodes (seeds after the dissection's), so it is not judged
            # on the states the detectors were picked on
            study = ablation_study(
                env,
                adapter,
                top,
                channels,
                episodes=args.ablate_episodes,
                random_draws=args.random_draws,
                seed=args.seed + args.episodes,
                deterministic=args.deterministic,
                obs=obs,
                max_steps=args.max_steps,
                progress=progress,
            )
            summary = study.summary()
            print(
                f"success: intact {summary['baseline']:.2f}, top-{study.k} detectors off {summary['targeted']:.2f}, "
                f"{study.k} random units off {summary['random_mean']:.2f} +- {summary['random_std']:.2f}"
            )
            written.append(plot_ablation(study, args.out / "ablation.png"))
            report["ablation"] = {
                **summary,
                "units": study.units,
                "random_units": study.random_units,
            }
        written.append(save_json(report, args.out / "dissection.json"))
    finally:
        env.close()
    for path in written:
        print(path)
    return 0


def dissect_main(argv: Sequence[str] | None = None) -> int:
    """``rlviz dissect``; returns the exit status."""
    return _run(_dissect, "dissect", argv)
