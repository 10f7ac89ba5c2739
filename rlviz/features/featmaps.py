"""Feature maps: every channel of a chosen layer for one frame, on a grid."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from rlviz.features._common import BATCH, grid_shape, image_grid, observations
from rlviz.hooks import layer_activations
from rlviz.io import save_figure
from rlviz.policy import PolicyAdapter


def feature_maps(
    adapter: PolicyAdapter, frame: np.ndarray | torch.Tensor, layer: str
) -> np.ndarray:
    """Activations of every channel of ``layer`` for one raw observation (a frame [H, W, C],
    or a stack in the adapter's layout): float32 [C, h, w], the layer's own resolution."""
    frame, layout = observations(adapter, frame, "frame")
    if len(frame) != 1:
        raise ValueError(f"feature_maps takes one observation ({layout}), got {len(frame)} of them")
    act = layer_activations(adapter, frame, layer, batch_size=BATCH, stop_early=True)[layer][0]
    if act.ndim != 3:
        raise ValueError(
            f"layer {layer!r} outputs shape {tuple(act.shape)} per frame; feature maps need a "
            "conv-like layer with [C, h, w] output (see rlviz.list_layers(model, torch.nn.Conv2d))"
        )
    return act.numpy().astype(np.float32)


def plot_feature_maps(
    adapter: PolicyAdapter,
    frame: np.ndarray,
    layer: str,
    path: str | os.PathLike,
    *,
    max_channels: int = 64,
    order: str = "index",
    shared_scale: bool = False,
) -> Path:
    """Draw the frame and up to ``max_channels`` channel maps of ``layer`` on a grid; returns the PNG path.

    Args:
        order: ``"index"`` keeps channel order; ``"mean"`` shows the most active channels first.
        shared_scale: one colour scale for all channels (compare magnitudes) instead of one each
            (see each map's pattern).
    """
    maps = feature_maps(adapter, frame, layer)
    if order not in ("index", "mean"):
        raise ValueError(f"order must be 'index' or 'mean', got {order!r}")
    channels = np.arange(len(maps))
    if order == "mean":
        channels = np.argsort(-maps.reshape(len(maps), -1).mean(1), kind="stable")
    channels = channels[:max_channels]
    rows, cols = grid_shape(len(channels) + 1, max_cols=10)
    fig, axes = image_grid(1.6 * cols, 1.35 * rows + 0.5, rows, cols)
    axes = axes.ravel()
    frame, layout = observations(adapter, frame, "frame")
    axes[0].imshow(layout.newest_frame(frame)[0])
    axes[0].set_title("observation" + (" (newest frame)" if layout.stacked else ""), fontsize=8)
    vmin, vmax = (float(maps.min()), float(maps.max())) if shared_scale else (None, None)
    for ax, c in zip(axes[1:], channels, strict=False):
        ax.imshow(maps[c], cmap="viridis", vmin=vmin, vmax=vmax, interpolation="nearest")
        ax.set_title(f"ch {c}  max {maps[c].max():.2f}", fontsize=7)
    scale = "shared colour scale" if shared_scale else "colour scale per channel"
    fig.suptitle(
        f"Feature maps of {layer!r}: {len(channels)} of {len(maps)} channels, "
        f"{maps.shape[1]}x{maps.shape[2]} ({scale})",
        fontsize=10,
    )
    return save_figure(fig, path)
