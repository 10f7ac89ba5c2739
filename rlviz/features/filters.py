"""Filters: the learned kernels themselves, and classic hand-made kernels for comparison.

First-layer kernels that read RGB are drawn as small colour tiles (for a policy that sees a stack
of K frames, K tiles per unit: the kernel's slice over each frame's channels); deeper kernels (one 2-D kernel
per input channel) as per-channel grids. The hand kernels (blur, edges, sharpen) applied to an
observation, beside the learned first layer's responses, show what a convolution does.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from rlviz.features._common import (
    check_frames,
    display_rgb,
    frames_strip,
    grid_shape,
    image_grid,
    new_figure,
    observations,
)
from rlviz.features.featmaps import feature_maps
from rlviz.hooks import get_layer, list_layers
from rlviz.io import save_figure
from rlviz.layout import ObservationLayout, resolve_layout
from rlviz.policy import PolicyAdapter

#: Classic 3x3 kernels, for showing what convolution does to an image.
HAND_KERNELS: dict[str, np.ndarray] = {
    "blur (box)": np.full((3, 3), 1.0 / 9.0),
    "blur (Gaussian)": np.outer([1, 2, 1], [1, 2, 1]) / 16.0,
    "edge (Sobel x)": np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], dtype=np.float64),
    "edge (Sobel y)": np.array([[-1, -2, -1], [0, 0, 0], [1, 2, 1]], dtype=np.float64),
    "edge (Laplacian)": np.array([[0, 1, 0], [1, -4, 1], [0, 1, 0]], dtype=np.float64),
    "sharpen": np.array([[0, -1, 0], [-1, 5, -1], [0, -1, 0]], dtype=np.float64),
}


def first_conv_layer(model: nn.Module) -> str:
    """Name of the first ``nn.Conv2d`` in registration order."""
    convs = list_layers(model, nn.Conv2d)
    if not convs:
        raise ValueError(
            "the model has no nn.Conv2d layer; filters can only be drawn for conv layers"
        )
    return convs[0]


def conv_weight(model: nn.Module, layer: str) -> np.ndarray:
    """Kernels of conv layer ``layer`` as float32 [C_out, C_in, kh, kw]."""
    module = get_layer(model, layer)
    if not isinstance(module, nn.Conv2d):
        convs = ", ".join(list_layers(model, nn.Conv2d)) or "(none)"
        raise ValueError(
            f"layer {layer!r} is a {type(module).__name__}, not nn.Conv2d; conv layers: {convs}"
        )
    return module.weight.detach().float().cpu().numpy()


def normalise_kernels(weight: np.ndarray, mode: str = "minmax") -> np.ndarray:
    """Each kernel (leading axis) scaled into [0, 1] on its own, float32 of ``weight``'s shape.

    ``"minmax"`` stretches each kernel's range to [0, 1]; ``"symmetric"`` maps 0 to grey (0.5) and
    the largest magnitude to 0 or 1, so the sign of a weight stays readable.
    """
    w = np.asarray(weight, dtype=np.float32)
    flat = w.reshape(len(w), -1)
    if mode == "minmax":
        lo, hi = flat.min(1, keepdims=True), flat.max(1, keepdims=True)
        out = (flat - lo) / np.maximum(hi - lo, 1e-12)
    elif mode == "symmetric":
        mag = np.abs(flat).max(1, keepdims=True)
        out = 0.5 + 0.5 * flat / np.maximum(mag, 1e-12)
    else:
        raise ValueError(f"mode must be 'minmax' or 'symmetric', got {mode!r}")
    return out.reshape(w.shape)


def rgb_filters(model: nn.Module, layer: str | None = None, mode: str = "minmax") -> np.ndarray:
    """First-layer kernels as RGB tiles, each normalised on its own: float32 [C_out, kh, kw, 3]
    in [0, 1]."""
    layer = layer or first_conv_layer(model)
    weight = conv_weight(model, layer)
    if weight.shape[1] == 1:
        weight = np.repeat(weight, 3, axis=1)
    if weight.shape[1] != 3:
        raise ValueError(
            f"layer {layer!r} reads {weight.shape[1]} input channels; RGB tiles need 3 (or 1). "
            "For a frame stack use frame_filters(model, layout) (K tiles per unit), or draw it "
            "per channel with plot_filter_grid"
        )
    return normalise_kernels(weight, mode).transpose(0, 2, 3, 1)


def frame_filters(
    model: nn.Module,
    layout: ObservationLayout | str,
    layer: str | None = None,
    mode: str = "minmax",
) -> np.ndarray:
    """First-layer kernels over a stack of K frames, one RGB tile per (unit, frame): float32
    [C_out, K, kh, kw, 3] in [0, 1] (gray frames repeated to RGB).

    The kernel of a unit reading K*C channels (frame-major, oldest first, as the layout's network
    input) is split into K slices of C channels. Each unit is normalised over all its K slices
    together, so a frame the unit ignores shows as a flat tile (grey with ``"symmetric"``).
    """
    layout = resolve_layout(layout, None)
    layer = layer or first_conv_layer(model)
    weight = conv_weight(model, layer)
    k, c = layout.frames, layout.channels
    if weight.shape[1] != k * c:
        raise ValueError(
            f"layer {layer!r} reads {weight.shape[1]} input channels, but the layout {layout} "
            f"gives {k * c}; pass the layout the policy was trained on (adapter.layout)"
        )
    out, _, kh, kw = weight.shape
    tiles = normalise_kernels(weight, mode).reshape(out, k, c, kh, kw).transpose(0, 1, 3, 4, 2)
    return np.repeat(tiles[..., :1], 3, axis=-1) if c < 3 else tiles[..., :3]


def filter_grid(
    model: nn.Module, layer: str, max_out: int = 32, max_in: int = 16, mode: str = "symmetric"
) -> np.ndarray:
    """Per-channel kernels of ``layer``, each 2-D kernel normalised on its own: float32
    [min(C_out, max_out), min(C_in, max_in), kh, kw] in [0, 1]."""
    weight = conv_weight(model, layer)[:max_out, :max_in]
    out, inp, kh, kw = weight.shape
    return normalise_kernels(weight.reshape(out * inp, kh, kw), mode).reshape(out, inp, kh, kw)


def apply_kernels(
    frame: np.ndarray, kernels: dict[str, np.ndarray] | None = None
) -> dict[str, np.ndarray]:
    """The luminance of one frame [H, W, C] convolved with each hand kernel (reflect padding):
    kernel name -> float32 response [H, W]."""
    frame = check_frames(frame, "frame")[0]
    kernels = HAND_KERNELS if kernels is None else kernels
    rgb = torch.as_tensor(display_rgb(frame), dtype=torch.float32) / 255.0
    grey = (rgb @ torch.tensor([0.299, 0.587, 0.114]))[None, None]
    out = {}
    for name, kernel in kernels.items():
        k = torch.as_tensor(np.asarray(kernel, dtype=np.float32))
        if k.ndim != 2:
            raise ValueError(f"hand kernel {name!r} must be 2-D, got shape {tuple(k.shape)}")
        ph, pw = k.shape[0] // 2, k.shape[1] // 2
        padded = F.pad(grey, (pw, k.shape[1] - 1 - pw, ph, k.shape[0] - 1 - ph), mode="reflect")
        out[name] = F.conv2d(padded, k[None, None])[0, 0].numpy()
    return out


def plot_rgb_filters(
    model: nn.Module,
    path: str | os.PathLike,
    layer: str | None = None,
    mode: str = "minmax",
    layout: ObservationLayout | str | None = None,
) -> Path:
    """Draw the first layer's kernels as RGB tiles on a grid; returns the PNG path.

    With a stacked ``layout`` (K frames), each unit is a strip of K tiles, oldest left (see
    :func:`frame_filters`).
    """
    layer = layer or first_conv_layer(model)
    if layout is not None and resolve_layout(layout, None).stacked:
        return plot_frame_filters(model, layout, path, layer, mode)
    tiles = rgb_filters(model, layer, mode)
    kh, kw = tiles.shape[1:3]
    title = f"{layer!r}: {len(tiles)} RGB kernels {kh}x{kw} (each {mode}-normalised)"
    return save_figure(_tile_figure(tiles, 16, 0.75, 0.6, title), path)


def plot_frame_filters(
    model: nn.Module,
    layout: ObservationLayout | str,
    path: str | os.PathLike,
    layer: str | None = None,
    mode: str = "minmax",
) -> Path:
    """Draw a first layer over K stack frames: per unit, K small tiles (oldest -> newest);
    returns the PNG path."""
    layer = layer or first_conv_layer(model)
    tiles = frame_filters(model, layout, layer, mode)
    n, k, kh, kw = tiles.shape[:4]
    strips = [frames_strip((unit * 255.0 + 0.5).astype(np.uint8), gap=1) for unit in tiles]
    title = (
        f"{layer!r}: {n} kernels {kh}x{kw} over {k} stack frames (oldest -> newest; each unit "
        f"{mode}-normalised over its frames)"
    )
    return save_figure(_tile_figure(strips, max(1, 16 // k), 0.5 * k + 0.25, 0.7, title), path)


def _tile_figure(tiles, max_cols: int, tile_width: float, margin: float, title: str):
    """Images on a near-square grid, each titled by its index; ``margin``: inches for titles."""
    rows, cols = grid_shape(len(tiles), max_cols=max_cols)
    fig, axes = image_grid(tile_width * cols + 0.4, 0.75 * rows + margin, rows, cols)
    axes = axes.ravel()
    for i, (ax, tile) in enumerate(zip(axes, tiles, strict=False)):
        ax.imshow(tile, interpolation="nearest")
        ax.set_title(str(i), fontsize=6)
    fig.suptitle(title, fontsize=9)
    return fig


def plot_filter_grid(
    model: nn.Module,
    layer: str,
    path: str | os.PathLike,
    max_out: int = 32,
    max_in: int = 16,
) -> Path:
    """Draw a deeper layer's kernels: rows = output channels, columns = input channels; returns the path.

    Each 2-D kernel is normalised on its own around grey: dark = negative, light = positive weight.
    """
    grid = filter_grid(model, layer, max_out=max_out, max_in=max_in)
    n_out, n_in, kh, kw = grid.shape
    c_out, c_in = conv_weight(model, layer).shape[:2]
    # One image with 1-pixel gaps is far faster to draw than n_out * n_in axes.
    canvas = np.full((n_out * (kh + 1) - 1, n_in * (kw + 1) - 1), np.nan, dtype=np.float32)
    for o in range(n_out):
        for i in range(n_in):
            canvas[o * (kh + 1) : o * (kh + 1) + kh, i * (kw + 1) : i * (kw + 1) + kw] = grid[o, i]
    fig = new_figure(
        min(16.0, 1.5 + 0.3 * n_in * (kw + 1) / 2), min(20.0, 1.2 + 0.3 * n_out * (kh + 1) / 2)
    )
    ax = fig.subplots()
    ax.imshow(canvas, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.set_xticks(
        [i * (kw + 1) + (kw - 1) / 2 for i in range(n_in)],
        [str(i) for i in range(n_in)],
        fontsize=6,
    )
    ax.set_yticks(
        [o * (kh + 1) + (kh - 1) / 2 for o in range(n_out)],
        [str(o) for o in range(n_out)],
        fontsize=6,
    )
    ax.set_xlabel(f"input channel (showing {n_in} of {c_in})")
    ax.set_ylabel(f"output channel (showing {n_out} of {c_out})")
    ax.set_title(
        f"{layer!r}: {kh}x{kw} kernels per channel pair (grey = 0, light = positive)", fontsize=9
    )
    return save_figure(fig, path)


def plot_kernel_comparison(
    adapter: PolicyAdapter,
    frame: np.ndarray,
    path: str | os.PathLike,
    layer: str | None = None,
    n_learned: int = 8,
    kernels: dict[str, np.ndarray] | None = None,
) -> Path:
    """Frame, its responses to the hand kernels, and the learned first layer's strongest responses.

    Returns the PNG path.
    """
    layer = layer or first_conv_layer(adapter.model)
    obs, layout = observations(adapter, frame, "frame")
    frame = layout.newest_frame(obs[:1])[0]  # hand kernels read the frame the agent acts on
    hand = apply_kernels(frame, kernels)
    learned = feature_maps(adapter, obs[:1], layer)
    energy = np.abs(learned).reshape(len(learned), -1).mean(1)
    strongest = np.argsort(-energy, kind="stable")[:n_learned]
    cols = max(len(hand), len(strongest)) + 1
    fig, axes = image_grid(1.7 * cols, 3.9, 2, cols)
    for row in range(2):
        axes[row, 0].imshow(display_rgb(frame))
        axes[row, 0].set_title("observation", fontsize=8)
    for ax, (name, response) in zip(axes[0, 1:], hand.items(), strict=False):
        if name.startswith("blur") or name == "sharpen":  # still an image: the frame's grey scale
            ax.imshow(response, cmap="gray", vmin=0.0, vmax=1.0)
        else:
            lim = float(np.abs(response).max()) or 1.0
            ax.imshow(response, cmap="RdBu_r", vmin=-lim, vmax=lim)
        ax.set_title(name, fontsize=8)
    for ax, c in zip(axes[1, 1:], strongest, strict=False):
        lim = float(np.abs(learned[c]).max()) or 1.0
        ax.imshow(learned[c], cmap="RdBu_r", vmin=-lim, vmax=lim, interpolation="nearest")
        ax.set_title(f"{layer} ch {c}", fontsize=8)
    fig.suptitle(
        f"Top: hand-made 3x3 kernels on the frame's luminance. Bottom: learned {layer!r} responses "
        f"({learned.shape[1]}x{learned.shape[2]}, strongest {len(strongest)} of {len(learned)}; red +, blue -)",
        fontsize=9,
    )
    return save_figure(fig, path)
