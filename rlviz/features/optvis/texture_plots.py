"""Figures for texture synthesis and style transfer (:mod:`rlviz.features.optvis.texture`)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from rlviz.features._common import display_rgb, new_figure
from rlviz.features.optvis.texture import TextureResult
from rlviz.io import save_figure


def _show(ax, image: np.ndarray, title: str, caption: str = "") -> None:
    ax.imshow(display_rgb(image), interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=8)
    if caption:
        ax.set_xlabel(caption, fontsize=7)


def plot_textures(
    rows: Sequence[tuple[str, np.ndarray, Sequence[TextureResult]]],
    path: str | os.PathLike,
    title: str | None = None,
) -> Path:
    """One row per texture source: the source, then what each layer set's Gram matrices keep.

    Args:
        rows: (label, source image uint8 [H, W, C], results of :func:`synthesize_texture`).
        path: where the PNG goes.
    """
    if not rows:
        raise ValueError("plot_textures needs at least one (label, image, results) row")
    cols = 1 + max(len(results) for _, _, results in rows)
    fig = new_figure(2.2 * cols, 2.0 * len(rows) + 0.4)
    axes = fig.subplots(len(rows), cols, squeeze=False)
    for i, (label, source, results) in enumerate(rows):
        _show(axes[i, 0], source, label, "texture source")
        for j in range(1, cols):
            if j > len(results):
                axes[i, j].set_axis_off()
                continue
            r = results[j - 1]
            caption = f"Gram dist {r.style_start[0]:.2f} -> {r.style_end[0]:.4f}"
            _show(axes[i, j], r.image, "Gram of " + " + ".join(r.style_layers), caption)
    fig.suptitle(
        title or "Texture synthesis: images from noise matching each layer's Gram matrices",
        fontsize=10,
    )
    return save_figure(fig, path)


def plot_style_transfer(
    content_image: np.ndarray,
    rows: Sequence[tuple[str, np.ndarray, Sequence[tuple[str, TextureResult]]]],
    path: str | os.PathLike,
    captions: Sequence[Sequence[str]] | None = None,
    title: str | None = None,
) -> Path:
    """One row per style source: the content frame, the style source, then each restyled frame.

    Args:
        rows: (style label, style image uint8 [H, W, C], [(label, result of :func:`style_transfer`
            on ``content_image``), ...]).
        captions: optional extra text per row and image (content, style, results...), e.g. the
            policy's action probabilities.
    """
    if not rows:
        raise ValueError("plot_style_transfer needs at least one (label, style image, results) row")
    cols = 2 + max(len(results) for _, _, results in rows)
    fig = new_figure(2.4 * cols, 2.4 * len(rows) + 0.4)
    axes = fig.subplots(len(rows), cols, squeeze=False)
    first = None
    for i, (style_label, style_image, results) in enumerate(rows):
        extra = list(captions[i]) if captions is not None else []
        extra += [""] * (cols - len(extra))
        _show(axes[i, 0], content_image, "content (observation)", extra[0])
        _show(axes[i, 1], style_image, f"style: {style_label}", extra[1])
        for j in range(2, cols):
            if j - 2 >= len(results):
                axes[i, j].set_axis_off()
                continue
            label, r = results[j - 2]
            first = first or r
            text = (
                f"style {r.style_start[0]:.3f} -> {r.style_end[0]:.4f}, "
                f"content {r.content_start[0]:.3f} -> {r.content_end[0]:.3f}"
            )
            _show(axes[i, j], r.image, label, text + (f"\n{extra[j]}" if extra[j] else ""))
    what = (
        f"content of {first.content_layer}, Gram matrices of {' + '.join(first.style_layers)}"
        if first
        else ""
    )
    fig.suptitle(
        title or f"Style transfer of an observation: {what} (relative distances)", fontsize=10
    )
    return save_figure(fig, path)
