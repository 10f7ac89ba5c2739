"""``rlviz filters``: first-layer kernels, deeper filter grids, hand kernels vs learned responses,
and every feature map of chosen layers for one frame."""

from __future__ import annotations

from collections.abc import Sequence

from rlviz.cli.common import command, print_paths
from rlviz.cli.features.common import feature_parser, layers_arg, load, pick_frame, play_env


def build_parser():
    """The ``rlviz filters`` argument parser."""
    p = feature_parser(
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
    return p


@command("filters")
def filters_main(argv: Sequence[str] | None = None) -> int:
    """``rlviz filters``; returns the exit status."""
    from torch import nn

    from rlviz.features import (
        plot_feature_maps,
        plot_filter_grid,
        plot_kernel_comparison,
        plot_rgb_filters,
    )
    from rlviz.hooks import list_layers

    args = build_parser().parse_args(argv)
    policy = load(args)
    model, adapter, out = policy.model, policy.adapter, args.out
    layers = layers_arg(model, args.layers)
    with play_env(policy) as env:
        frame, _ = pick_frame(env, adapter, args.seed, args.max_steps)
    written = [plot_rgb_filters(model, out / "filters_rgb.png", layout=adapter.layout)]
    for layer in list_layers(model, nn.Conv2d)[1:]:
        written.append(plot_filter_grid(model, layer, out / f"filters_{layer}.png"))
    written.append(plot_kernel_comparison(adapter, frame, out / "kernels_vs_learned.png"))
    for layer in layers:
        written.append(plot_feature_maps(adapter, frame, layer, out / f"featmaps_{layer}.png"))
    print_paths(written)
    return 0
