"""Inversion: which images give the same code at a layer as a given frame?

Mahendran & Vedaldi, "Understanding Deep Image Representations by Inverting Them", CVPR 2015
(https://arxiv.org/abs/1412.0035). Minimise ||phi(x) - phi(x0)||^2 / ||phi(x0)||^2 plus a
total-variation prior (and optionally an L2 prior) from a random start. What survives in the
reconstruction is what the layer keeps; what comes back scrambled, it has thrown away.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rlviz.features._common import check_frames, display_rgb, image_grid
from rlviz.features.optvis.objectives import feature_distance, l2, total_variation
from rlviz.features.optvis.optimize import optimize_and_measure
from rlviz.features.optvis.param import ImageParam, noise_image
from rlviz.features.optvis.texture import layer_targets
from rlviz.features.optvis.transforms import Transform
from rlviz.io import save_figure
from rlviz.policy import PolicyAdapter


@dataclass
class Inversion:
    """Result of :func:`invert`.

    Attributes:
        layer: the inverted layer.
        image: uint8 [H, W, C], the reconstruction.
        trace: float32 [steps], the total objective per step (minus the loss).
        initial_distance / final_distance: relative squared feature distance
            ||phi(x) - phi(x0)||^2 / ||phi(x0)||^2 at the random start and at the end.
    """

    layer: str
    image: np.ndarray
    trace: np.ndarray
    initial_distance: float
    final_distance: float


def invert(
    adapter: PolicyAdapter,
    frame: np.ndarray,
    layer: str,
    *,
    steps: int = 400,
    tv_weight: float = 0.5,
    tv_beta: float = 1.0,
    l2_weight: float = 0.0,
    param: str | ImageParam = "pixels",
    lr: float = 0.05,
    transforms: Sequence[Transform] = (),
    seed: int = 0,
    progress: bool = True,
) -> Inversion:
    """Reconstruct one raw frame [H, W, C] from ``layer``'s activation of it.

    Args:
        tv_weight / tv_beta: weight and exponent of the TV^beta prior.
        l2_weight: weight of a pull towards mid-grey.
        param: ``"pixels"`` or ``"fourier"`` parameterisation of the reconstruction, from noise
            (or any :class:`~rlviz.features.optvis.ImageParam`).
    """
    frame = check_frames(frame, "frame")
    if len(frame) != 1:
        raise ValueError(f"invert takes one frame [H, W, C], got {len(frame)} frames")
    x0 = adapter.preprocess(frame).detach()
    distance = feature_distance(layer, layer_targets(adapter, x0, layer)[layer])
    objective = -distance - tv_weight * total_variation(tv_beta)
    if l2_weight:
        objective = objective - l2_weight * l2()
    run = dict(steps=steps, lr=lr, transforms=transforms, seed=seed, progress=progress)
    image = noise_image(param, x0, seed)
    result, (start,), (end,) = optimize_and_measure(adapter, objective, image, [distance], **run)
    return Inversion(layer, result.image, result.trace, float(start.mean()), float(end.mean()))


def plot_inversions(
    frame: np.ndarray, inversions: Sequence[Inversion], path: str | os.PathLike
) -> Path:
    """The frame and its reconstruction from each layer, with the feature distances; returns the path."""
    if not inversions:
        raise ValueError("plot_inversions needs at least one Inversion")
    cols = 1 + len(inversions)
    fig, (axes,) = image_grid(2.4 * cols, 2.5, 1, cols)
    axes[0].imshow(display_rgb(check_frames(frame, "frame")[0]))
    axes[0].set_title("observation", fontsize=8)
    for ax, inv in zip(axes[1:], inversions, strict=False):
        ax.imshow(display_rgb(inv.image))
        ax.set_title(
            f"from {inv.layer!r}\nrel. feature dist {inv.initial_distance:.2f} -> {inv.final_distance:.3f}",
            fontsize=7,
        )
    fig.suptitle(
        "Inversion of layer codes with a total-variation prior (Mahendran & Vedaldi 2015)",
        fontsize=10,
    )
    return save_figure(fig, path)
