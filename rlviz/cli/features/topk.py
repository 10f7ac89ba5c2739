"""``rlviz topk``: the states that activate chosen units most, with the receptive-field patch of
each peak; optionally the nearest neighbours of a frame in feature space."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import numpy as np

from rlviz.cli.common import (
    CliError,
    add_shared,
    at_least,
    check_layers,
    command,
    play_env,
    print_paths,
)
from rlviz.cli.features.common import feature_parser, load, play_states, showcase_index


def build_parser() -> argparse.ArgumentParser:
    """The ``rlviz topk`` argument parser."""
    p = feature_parser(
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
    p.add_argument("--k", type=at_least(1), default=8, help="states per unit (default 8)")
    add_shared(
        p, "episodes", episodes=dict(default=4, help="episodes to collect states from (default 4)")
    )
    p.add_argument(
        "--min-separation",
        type=at_least(0),
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
    return p


def _units(acts, layer: str, asked: list[int] | None) -> list[int]:
    """``--units`` checked against the layer's ``acts`` [N, C, ...]; default the 4 units whose
    peak varies most across states."""
    n_units = acts.shape[1]
    if asked is None:
        peaks = acts.reshape(len(acts), n_units, -1).amax(-1)
        return [int(u) for u in peaks.std(0).argsort(descending=True)[:4]]
    bad = [u for u in asked if not 0 <= u < n_units]
    if bad:
        raise CliError(f"layer {layer!r} has {n_units} units (0..{n_units - 1}); got --units {bad}")
    return asked


def _neighbours(adapter, obs, masks, rollouts, layer: str, args: argparse.Namespace):
    """The neighbours figure of ``--query``: nearest states in feature and in pixel space."""
    from rlviz.features import nearest_neighbours, pixel_neighbours, plot_neighbours

    query = showcase_index(masks) if args.query is None else args.query
    if not 0 <= query < len(obs):
        raise CliError(f"--query must index one of the {len(obs)} collected states, got {query}")
    # Neighbours from other episodes: within its own one a state's neighbours are just the steps
    # around it (or identical frames while the agent is stuck).
    episode_of = np.concatenate([np.full(len(r), i) for i, r in enumerate(rollouts)])
    near = np.flatnonzero(episode_of == episode_of[query])
    if len(near) == len(obs):
        raise CliError("--neighbours needs states from at least 2 episodes; raise --episodes")
    rows = [
        nearest_neighbours(adapter, obs, obs[query], layer, k=args.k, exclude=near),
        pixel_neighbours(obs, obs[query], k=args.k, exclude=near),
    ]
    names = adapter.action_names or [
        str(i) for i in range(int(max(r.actions.max() for r in rollouts)) + 1)
    ]
    captions = np.array([names[a] for r in rollouts for a in r.actions])
    return plot_neighbours(obs, obs[query], rows, args.out / "neighbours.png", captions=captions)


@command("topk")
def topk_main(argv: Sequence[str] | None = None) -> int:
    """``rlviz topk``; returns the exit status."""
    from rlviz.features import plot_top_k, top_k_examples
    from rlviz.hooks import default_layer, layer_activations

    args = build_parser().parse_args(argv)
    policy = load(args)
    adapter = policy.adapter
    layer = check_layers(policy.model, [args.layer or default_layer(policy.model)])[0]
    with play_env(policy) as env:
        obs, masks, rollouts = play_states(args, env, adapter)
    acts = layer_activations(adapter, obs, layer, stop_early=True)[layer]
    examples = [
        top_k_examples(adapter, obs, layer, u, args.k, min_separation=args.min_separation)
        for u in _units(acts, layer, args.units)
    ]
    written = [plot_top_k(examples, obs, args.out / f"topk_{layer}.png")]
    if args.neighbours:
        written.append(_neighbours(adapter, obs, masks, rollouts, layer, args))
    print_paths(written)
    return 0
