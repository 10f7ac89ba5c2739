"""DeepDream: amplify what a layer already sees in an observation.

Mordvintsev, Olah, Tyka, "Inceptionism: Going Deeper into Neural Networks" (Google Research blog,
2015). Gradient ascent on the squared activations of a layer, starting from a real frame, over an
image pyramid (octaves: coarse to fine) with random shifts, and with each step's gradient
normalised by its mean magnitude so step sizes mean the same at every octave.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from rlviz.features._common import check_frames, display_rgb, new_figure, to_uint8
from rlviz.features.optvis.objectives import Objective, as_objective, dream
from rlviz.features.optvis.optimize import evaluate
from rlviz.io import save_figure
from rlviz.policy import PolicyAdapter


@dataclass
class Dream:
    """Result of :func:`deepdream`.

    Attributes:
        image: uint8 [H, W, C], the dreamed frame.
        tensor: float32 [C, H, W] in [0, 1], the same before quantisation.
        trace: float32 [steps], the objective at each step (all octaves in order).
        sizes: the octave sizes (H, W) used, coarse to fine.
        objective: the objective's readable name.
        initial / final: the objective on the original frame and on the dream (full size).
    """

    image: np.ndarray
    tensor: torch.Tensor
    trace: np.ndarray
    sizes: list[tuple[int, int]]
    objective: str
    initial: float
    final: float


def _usable(
    adapter: PolicyAdapter, objective: Objective, size: tuple[int, int], channels: int
) -> bool:
    """Whether the objective can be computed on an input of ``size`` (small octaves can shrink a
    conv layer's output to nothing, or no longer fit a fully connected head)."""
    try:
        with torch.no_grad():
            evaluate(adapter, objective, torch.zeros(1, channels, *size, device=adapter.device))
        return True
    except (RuntimeError, ValueError):
        return False


def deepdream(
    adapter: PolicyAdapter,
    frame: np.ndarray,
    layer: str | None = None,
    channel: int | None = None,
    *,
    objective: Objective | None = None,
    octaves: int = 3,
    octave_scale: float = 1.4,
    steps: int = 10,
    step_size: float = 0.01,
    jitter: int = 2,
    seed: int = 0,
    progress: bool = True,
) -> Dream:
    """Dream on one raw frame [H, W, C]: maximise ``dream(layer, channel)`` (or ``objective``).

    Args:
        octaves: pyramid levels; each is ``octave_scale`` times smaller than the next. Levels too
            small for the objective's layer are skipped (see ``Dream.sizes``).
        steps: gradient steps per octave; step_size: size of one normalised step (input units).
        jitter: random shift in pixels per step (undone after the step).
    """
    from tqdm.auto import tqdm

    if objective is None:
        if layer is None:
            raise ValueError("deepdream needs layer=... (e.g. 'conv2') or an objective=...")
        objective = dream(layer, channel)
    objective = as_objective(objective)
    if octaves < 1 or octave_scale <= 1.0:
        raise ValueError(f"need octaves >= 1 and octave_scale > 1, got {octaves}, {octave_scale}")
    frame = check_frames(frame, "frame")
    base = adapter.preprocess(frame[:1]).detach()
    channels, h, w = base.shape[1:]
    sizes = [
        (max(1, round(h / octave_scale**i)), max(1, round(w / octave_scale**i)))
        for i in range(octaves)
    ][::-1]
    sizes = [s for s in sizes if _usable(adapter, objective, s, channels)]
    if not sizes or sizes[-1] != (h, w):
        raise ValueError(f"objective {objective.name} cannot be computed on the {h}x{w} frame")

    generator = torch.Generator().manual_seed(seed)
    detail = torch.zeros(1, channels, *sizes[0], device=base.device)
    trace = []
    bar = tqdm(
        total=steps * len(sizes),
        desc=f"deepdream {objective.name[:30]}",
        disable=not progress,
        leave=False,
    )
    image = base
    for size in sizes:
        octave_base = (
            F.interpolate(base, size=size, mode="bilinear", align_corners=False, antialias=True)
            if size != (h, w)
            else base
        )
        detail = F.interpolate(detail, size=size, mode="bilinear", align_corners=False)
        image = (octave_base + detail).clamp(0.0, 1.0)
        for _ in range(steps):
            dy, dx = (int(v) for v in torch.randint(-jitter, jitter + 1, (2,), generator=generator))
            shifted = torch.roll(image, (dy, dx), dims=(-2, -1)).requires_grad_(True)
            value = evaluate(adapter, objective, shifted)
            (grad,) = torch.autograd.grad(value.sum(), shifted)
            grad = torch.roll(grad, (-dy, -dx), dims=(-2, -1))
            with torch.no_grad():
                step = step_size * grad / grad.abs().mean().clamp_min(1e-12)
                image = (image + step).clamp(0.0, 1.0)
            trace.append(float(value.detach().mean()))
            bar.update(1)
        detail = image - octave_base
    bar.close()
    with torch.no_grad():
        start = float(evaluate(adapter, objective, base).mean())
        end = float(evaluate(adapter, objective, image.detach()).mean())
    final = image.detach()[0].float().cpu()
    trace = np.asarray(trace, dtype=np.float32)
    return Dream(to_uint8(final), final, trace, sizes, objective.name, start, end)


def plot_dreams(
    frame: np.ndarray,
    dreams: Sequence[Dream],
    path: str | os.PathLike,
    titles: Sequence[str] | None = None,
) -> Path:
    """The original frame, then each dream with its objective trace; returns the PNG path."""
    if not dreams:
        raise ValueError("plot_dreams needs at least one Dream")
    titles = list(titles) if titles is not None else [d.objective for d in dreams]
    cols = 1 + len(dreams)
    fig = new_figure(2.6 * cols, 4.0)
    axes = fig.subplots(2, cols, squeeze=False, height_ratios=[2.2, 1.0])
    axes[0, 0].imshow(display_rgb(check_frames(frame, "frame")[0]))
    axes[0, 0].set_title("observation", fontsize=8)
    for ax in axes[:, 0]:
        ax.set_axis_off()
    for j, (d, title) in enumerate(zip(dreams, titles, strict=False), start=1):
        axes[0, j].imshow(display_rgb(d.image))
        axes[0, j].set_axis_off()
        axes[0, j].set_title(f"{title}\nobjective {d.initial:.3g} -> {d.final:.3g}", fontsize=8)
        axes[1, j].plot(d.trace, linewidth=1)
        axes[1, j].set_xlabel(
            f"step ({len(d.sizes)} octaves: {d.sizes[0][0]}x{d.sizes[0][1]} .. "
            f"{d.sizes[-1][0]}x{d.sizes[-1][1]})",
            fontsize=6,
        )
        axes[1, j].set_ylabel("objective", fontsize=7)
        axes[1, j].tick_params(labelsize=6)
    fig.suptitle(
        "DeepDream: gradient ascent on a layer's squared activations, from the frame", fontsize=10
    )
    return save_figure(fig, path)
