"""``rlviz filters``: first-layer kernels, deeper filter grids, hand kernels vs learned responses,
and every feature map of chosen layers for one frame."""

from __future__ import annotations

from collections.abc import Sequence

from rlviz.cli.common import command, play_env, print_paths, progress_on
from rlviz.cli.features.common import add_layers_flag, feature_parser, layers_arg, load, pick_frame


def build_parser():
    """The ``rlviz filters`` argument parser."""
    p = feature_parser(
        "filters",
        "First-layer kernels, deeper filter grids, hand kernels vs learned "
        "responses, and every feature map of chosen layers for one frame.",
    )
    add_layers_flag(p, "layers whose feature maps to draw")
    return p


@command("filters")
def filters_main(argv: Sequence[str] | None = None) -> int:
    """``rlviz filters``; returns the exit status."""
    from torch import nn
    from tqdm.auto import tqdm

    from rlviz.features import (
        plot_feature_maps,
        plot_filter_grid,
        plot_kernel_comparison,
        plot_rgb_filters,
    )
    from rlviz.hooks import list_layers

    args = build_parser().parse_args(argv)
    policy = load(args, layers=args.layers or ())
    model, adapter, out = policy.model, policy.adapter, args.out
    layers = layers_arg(model, args.layers)
    deeper = list_layers(model, nn.Conv2d)[1:]
    # ~10 s in all (the env's start and one episode, then each figure): one bar over the stages.
    with tqdm(
        total=3 + len(deeper) + len(layers), desc="filters", disable=not progress_on(args)
    ) as bar:
        bar.set_postfix_str("playing an episode for a frame")
        with play_env(policy) as env:
            frame, _ = pick_frame(env, adapter, args.seed, args.max_steps)
        bar.update()
        stages = [(lambda: plot_rgb_filters(model, out / "filters_rgb.png", layout=adapter.layout))]
        stages += [
            (lambda layer=layer: plot_filter_grid(model, layer, out / f"filters_{layer}.png"))
            for layer in deeper
        ]
        stages.append(
            lambda: plot_kernel_comparison(adapter, frame, out / "kernels_vs_learned.png")
        )
        stages += [
            (
                lambda layer=layer: plot_feature_maps(
                    adapter, frame, layer, out / f"featmaps_{layer}.png"
                )
            )
            for layer in layers
        ]
        written = []
        for stage in stages:
            written.append(stage())
            bar.set_postfix_str(written[-1].name)
            bar.update()
    print_paths(written)
    return 0
