"""Occlusion (Zeiler & Fergus 2014, "Visualizing and Understanding Convolutional Networks",
https://arxiv.org/abs/1311.2901).

Slide a ``window`` over the frame with ``stride``, replace the pixels under it by ``fill`` and
record how much the target drops: target(x) - target(x with the window filled). A pixel's score is
the mean drop over the windows that cover it (captum's convention). All windows of all frames go
through the network as one big batch, cut into passes of ``batch_size`` images.
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch

from rlviz.methods.base import DEFAULT_PASS_ELEMENTS, ReplacementMethod, scalar_per_sample
from rlviz.methods.incremental.occlusion import MODES, occlusion_drops
from rlviz.methods.incremental.ops import window_starts
from rlviz.methods.registry import register
from rlviz.ops import fill_values


def _pair(value: int | tuple[int, int], what: str) -> tuple[int, int]:
    pair = (value, value) if isinstance(value, int) else tuple(value)
    if len(pair) != 2 or any(int(v) < 1 for v in pair):
        raise ValueError(f"{what} must be a positive int or (height, width), got {value!r}")
    return int(pair[0]), int(pair[1])


@lru_cache(maxsize=16)
def window_masks(
    size: tuple[int, int], window: tuple[int, int], stride: tuple[int, int], device=None
) -> torch.Tensor:
    """Boolean masks of every window position: [P, H, W], P = rows x columns of positions
    (cached per geometry; do not modify)."""
    axes = []
    for n, w, s in zip(size, window, stride, strict=True):
        starts = torch.tensor(window_starts(n, w, s), device=device)
        pixels = torch.arange(n, device=device)
        axes.append((pixels >= starts[:, None]) & (pixels < starts[:, None] + w))
    rows, cols = axes
    return (rows[:, None, :, None] & cols[None, :, None, :]).reshape(-1, *size)


@lru_cache(maxsize=16)
def _window_weights(size, window, stride, device, dtype) -> torch.Tensor:
    """[P, H * W]: window masks divided by how many windows cover each pixel, so that
    ``drops @ weights`` is the mean drop over covering windows (0 where none covers)."""
    masks = window_masks(size, window, stride, device).reshape(-1, size[0] * size[1]).to(dtype)
    return masks / masks.sum(dim=0).clamp(min=1)


@register("occlusion", "Occlusion")
class Occlusion(ReplacementMethod):
    """Occlusion sensitivity: signed, > 0 where hiding the pixels lowers the target.

    Args:
        window: occluder size in pixels, int or (height, width).
        stride: step between occluder positions, int or (height, width).
        fill: what the occluder shows: a number, ``"mean"`` (the frame's mean colour), ``"blur"``
            (the frame blurred with ``blur_sigma``) or a tensor broadcastable to [C, H, W].
        blur_sigma: sigma in pixels for ``fill="blur"``.
        incremental: ``"auto"`` recomputes only each window's receptive field, layer by layer
            (:mod:`rlviz.methods.incremental`; equal to full passes up to float rounding) when the
            model's plan says it pays; ``True`` always tries (warns and runs full passes for a
            model it cannot handle); ``False`` runs the whole network on every occluded image.
    """

    pass_elements = 2 * DEFAULT_PASS_ELEMENTS  # forward only: no graph to keep
    signed = True

    def __init__(
        self,
        window: int | tuple[int, int] = 8,
        stride: int | tuple[int, int] = 4,
        fill: object = "mean",
        blur_sigma: float = 5.0,
        incremental: bool | str = "auto",
    ) -> None:
        self.window = _pair(window, "window")
        self.stride = _pair(stride, "stride")
        self.fill = fill
        self.blur_sigma = float(blur_sigma)
        if incremental not in MODES:
            raise ValueError(f"incremental must be one of {MODES}, got {incremental!r}")
        self.incremental = incremental

    def windows(self, size: tuple[int, int]) -> int:
        """Number of occluder positions on an input of spatial ``size``."""
        return math.prod(
            len(window_starts(n, w, s))
            for n, w, s in zip(size, self.window, self.stride, strict=True)
        )

    def _replacement(self, x):
        return fill_values(x, self.fill, self.blur_sigma)

    def _changes(self, adapter, x, fill, target, clean, request) -> torch.Tensor:
        """Mean target drop per pixel [b, H, W] with each window of ``x`` replaced by ``fill``."""
        b, _, h, w = x.shape
        masks = window_masks((h, w), self.window, self.stride, x.device)
        weights = _window_weights((h, w), self.window, self.stride, x.device, x.dtype)
        # A recurrent policy's state enters the forward: incremental inference falls back then.
        drops = occlusion_drops(
            adapter, x, target, clean, fill, masks, self.window, self.stride, request.pass_size,
            self.incremental,
        )  # fmt: skip
        if drops is None:
            drops = self._full_drops(adapter, x, fill, target, clean, masks, request)
        return (drops @ weights).view(b, h, w)

    @staticmethod
    def _full_drops(adapter, x, fill, target, clean, masks, request) -> torch.Tensor:
        """Target drops [b, windows], every occluded image through the whole network."""
        drops = x.new_zeros(x.shape[0], masks.shape[0])
        with request.passes(x, masks.shape[0]) as blocks:
            for block in blocks:
                frame_fill = fill[block.frames] if fill.shape[0] > 1 else fill
                occluded = torch.where(
                    masks[None, block.jobs, None],
                    frame_fill[:, None],
                    x[block.frames, None],
                    out=block.images,
                ).flatten(0, 1)
                out = adapter.outputs(occluded, request.states, block.rows)
                values = scalar_per_sample(block.target(target)(out), len(occluded))
                drops[block.frames, block.jobs] = clean[block.frames, None] - values.view(
                    -1, block.jobs_per_frame
                )
        return drops
