"""``rlviz featvis``: activation maximisation, DeepDream, inversion and adversarial examples.

One function per ``--method`` in :data:`METHODS`; each gets the parsed flags and a
:class:`Scene` (the policy, its env and one episode's frames) and returns the files it wrote.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rlviz.cli.common import (
    CliError,
    add_shared,
    at_least,
    bad_input,
    command,
    play_env,
    print_paths,
)
from rlviz.cli.features.common import (
    add_layers_flag,
    feature_parser,
    layers_arg,
    load,
    optimisation,
    pick_frame,
    play_states,
)
from rlviz.cli.features.texture import add_arguments as add_texture_arguments
from rlviz.cli.features.texture import style, texture

OBJECTIVE_FORMS = "action:K, prob:K, logprob:K, value, channel:LAYER:C or neuron:LAYER:C[:X:Y]"


def build_parser() -> argparse.ArgumentParser:
    """The ``rlviz featvis`` argument parser."""
    p = feature_parser(
        "featvis",
        "Activation maximisation, DeepDream, inversion and adversarial examples on a checkpoint.",
    )
    p.add_argument(
        "--method",
        choices=tuple(METHODS),
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
        type=at_least(1),
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
    add_layers_flag(p, "deepdream / invert: layers")
    p.add_argument(
        "--channel",
        type=int,
        default=None,
        help="deepdream: one channel instead of the whole layer",
    )
    p.add_argument("--octaves", type=int, default=3, help="deepdream: pyramid levels (default 3)")
    add_shared(p, "episodes", episodes=dict(help="adversarial: episodes to attack (default 1)"))
    p.add_argument(
        "--eps-max",
        type=float,
        default=0.1,
        help="adversarial: largest L-inf epsilon (default 0.1)",
    )
    p.add_argument("--attacks", default="fgsm,pgd", help="adversarial: comma-separated fgsm,pgd")
    add_texture_arguments(p)
    return p


@dataclass
class Scene:
    """What every method works on: the policy, its env and a frame worth showing."""

    adapter: object  # rlviz.PolicyAdapter
    env: object  # the Gymnasium env the checkpoint plays in
    frame: np.ndarray  # uint8 [H, W, C], the goal box well in view
    episode: np.ndarray  # uint8 [T, H, W, C], the episode the frame is from


def parse_objective(spec: str, action_names: Sequence[str] | None):
    """An objective from a command-line spec: ``action:K`` / ``logit:K`` (logit of action K, by
    index or name), ``prob:K``, ``logprob:K``, ``value``, ``channel:LAYER:C``,
    ``neuron:LAYER:C[:X:Y]``."""
    from rlviz.features import optvis

    kind, *rest = spec.split(":")

    def action(text: str) -> int:
        if action_names and text in action_names:
            return list(action_names).index(text)
        try:
            return int(text)
        except ValueError:
            raise CliError(
                f"objective {spec!r}: unknown action {text!r}; use an index or one of "
                f"{list(action_names or [])}"
            ) from None

    per_action = {
        "action": optvis.action_logit,
        "logit": optvis.action_logit,
        "prob": optvis.action_prob,
        "logprob": optvis.action_log_prob,
    }
    try:
        if kind in per_action and len(rest) == 1:
            return per_action[kind](action(rest[0]))
        if kind == "value" and not rest:
            return optvis.value()
        if kind == "channel" and len(rest) == 2:
            return optvis.channel(rest[0], int(rest[1]))
        if kind == "neuron" and len(rest) in (2, 4):
            xy = (int(rest[2]), int(rest[3])) if len(rest) == 4 else (None, None)
            return optvis.neuron(rest[0], int(rest[1]), *xy)
    except ValueError:
        pass
    raise CliError(f"cannot read objective {spec!r}; expected {OBJECTIVE_FORMS}")


def _regularised(objective, args: argparse.Namespace, tv: float):
    """``objective`` minus the ``--tv`` / ``--l2`` / ``--blur`` penalties asked for."""
    from rlviz.features import optvis

    if tv:
        objective = objective - tv * optvis.total_variation()
    if args.l2:
        objective = objective - args.l2 * optvis.l2()
    if args.blur:
        objective = objective - args.blur * optvis.blur()
    return objective


def maximise(args: argparse.Namespace, scene: Scene) -> list[Path]:
    """Activation maximisation of each ``--objective`` (default every action's logit, value)."""
    from rlviz.features import optvis

    adapter, episode = scene.adapter, scene.episode
    size, channels = scene.frame.shape[:2], episode.shape[-1]
    n_actions = adapter(scene.frame).logits.shape[1]
    names = adapter.action_names or [str(k) for k in range(n_actions)]
    specs = args.objective or [f"action:{names[k]}" for k in range(n_actions)] + ["value"]
    tv = 0.01 if args.tv is None else args.tv
    steps = args.steps or 256
    # Colours decorrelated by the statistics of this env's frames, not ImageNet's.
    colours = optvis.color_correlation(episode) if channels == 3 else False
    results = []
    for spec in specs:
        objective = _regularised(parse_objective(spec, adapter.action_names), args, tv)
        if args.param == "fourier":
            param = optvis.fourier(size, channels=channels, decorrelate=colours, seed=args.seed)
        else:
            param = optvis.pixels(size, channels=channels, seed=args.seed)
        with bad_input(ValueError, KeyError, prefix=f"objective {spec!r}: "):
            transforms = [] if args.no_transforms else None
            run = optimisation(args, steps)
            result = optvis.optimize(adapter, objective, param=param, transforms=transforms, **run)
        results.append(result)
        print(f"{spec}: objective {result.initial[0]:.3f} -> {result.final[0]:.3f}")
    suptitle = (
        f"Activation maximisation ({args.param}, {steps} steps, TV {tv:g}); "
        "dotted: objective at the start"
    )
    return [optvis.plot_visualisations(results, args.out / "featvis.png", specs, suptitle=suptitle)]


def deepdream(args: argparse.Namespace, scene: Scene) -> list[Path]:
    """DeepDream of the frame on each of ``--layers`` (or one ``--channel`` of them)."""
    from rlviz.features import deepdream as dream
    from rlviz.features import plot_dreams

    dreams = [
        dream(
            scene.adapter,
            scene.frame,
            layer,
            args.channel,
            octaves=args.octaves,
            steps=args.steps or 10,
            seed=args.seed,
            progress=not args.no_progress,
        )
        for layer in layers_arg(scene.adapter.model, args.layers)
    ]
    return [plot_dreams(scene.frame, dreams, args.out / "deepdream.png")]


def invert(args: argparse.Namespace, scene: Scene) -> list[Path]:
    """The image each of ``--layers`` sees in the frame: feature inversion."""
    from rlviz.features import invert as invert_layer
    from rlviz.features import plot_inversions

    inversions = []
    for layer in layers_arg(scene.adapter.model, args.layers):
        tv = 0.5 if args.tv is None else args.tv
        run = optimisation(args, 400)
        inv = invert_layer(scene.adapter, scene.frame, layer, param=args.param, tv_weight=tv, **run)
        print(
            f"{layer}: relative feature distance {inv.initial_distance:.3f} -> "
            f"{inv.final_distance:.4f}"
        )
        inversions.append(inv)
    return [plot_inversions(scene.frame, inversions, args.out / "inversion.png")]


def _distinct_frames(args: argparse.Namespace, scene: Scene) -> np.ndarray:
    """The frames of ``--episodes`` episodes, each distinct frame once."""
    obs, _, _ = play_states(args, scene.env, scene.adapter)
    # An agent pushing against a wall sees the same frame for many steps: attack each distinct
    # frame once, so repeats do not pile up in the histogram.
    _, first = np.unique(obs.reshape(len(obs), -1), axis=0, return_index=True)
    distinct = obs[np.sort(first)]
    print(f"{len(distinct)} distinct frames of {len(obs)} played")
    return distinct


def adversarial(args: argparse.Namespace, scene: Scene) -> list[Path]:
    """The smallest L-inf perturbation that changes the action, per ``--attacks`` method."""
    from rlviz.features import (
        minimal_perturbation,
        plot_adversarial_example,
        plot_epsilon_histogram,
    )

    attacks = [a.strip() for a in args.attacks.split(",") if a.strip()]
    bad = sorted(set(attacks) - {"fgsm", "pgd"})
    if bad or not attacks:
        raise CliError(f"--attacks must name fgsm and/or pgd, got {args.attacks!r}")
    obs = _distinct_frames(args, scene)
    results = [
        minimal_perturbation(scene.adapter, obs, method=a, eps_max=args.eps_max, seed=args.seed)
        for a in attacks
    ]
    for r in results:
        eps = r.epsilon[r.found] * 255
        median = f"median {np.median(eps):.2f}/255, min {eps.min():.2f}/255" if len(eps) else "none"
        print(
            f"{r.method}: {r.found.sum()}/{len(r.epsilon)} frames flipped within "
            f"{args.eps_max * 255:.1f}/255; {median}"
        )
    title = f"Smallest action-changing L-inf epsilon over {len(obs)} distinct frames"
    written = [plot_epsilon_histogram(results, args.out / "adversarial_epsilon.png", title=title)]
    best = results[-1]
    if best.found.any():
        index = int(np.argmin(np.where(best.found, best.epsilon, np.inf)))
        path = args.out / "adversarial_example.png"
        written.append(plot_adversarial_example(best, obs, index, path, scene.adapter.action_names))
    return written


#: The methods that read ``--layers``.
LAYER_METHODS = ("deepdream", "invert", "texture", "style")

#: ``--method`` name -> the function that computes and draws it.
METHODS: dict[str, Callable[[argparse.Namespace, Scene], list[Path]]] = {
    "maximise": maximise,
    "deepdream": deepdream,
    "invert": invert,
    "adversarial": adversarial,
    "texture": texture,
    "style": style,
}


@command("featvis")
def featvis_main(argv: Sequence[str] | None = None) -> int:
    """``rlviz featvis``; returns the exit status."""
    args = build_parser().parse_args(argv)
    if args.layers and args.method not in LAYER_METHODS:
        raise CliError(
            f"--layers is used by --method {', '.join(LAYER_METHODS)}, not {args.method}; "
            "drop it or pick one of those"
        )
    policy = load(args, layers=args.layers or ())
    with play_env(policy) as env:
        frame, episode = pick_frame(env, policy.adapter, args.seed, args.max_steps)
        written = METHODS[args.method](args, Scene(policy.adapter, env, frame, episode))
    print_paths(written)
    return 0
