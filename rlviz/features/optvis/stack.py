"""Frame-stack parameterisation: feature visualisation for policies that see K frames.

A stacked policy reads one input [B, K*C, H, W] with frame k in channels k*C .. k*C+C-1 (the
:class:`rlviz.ObservationLayout` convention). :class:`StackImage` builds that input from one
per-frame parameterisation (Fourier or pixels, colour decorrelated per frame), and either
optimises every frame ("what motion drives this unit?") or only the newest one with the past
frames held fixed ("what should appear now, given this history?").
"""

from __future__ import annotations

import numpy as np
import torch

from rlviz.features.optvis.param import ImageParam, fourier, pixels
from rlviz.layout import ObservationLayout, resolve_layout

#: What a StackImage optimises: every stack frame, or only the newest.
FRAMES = ("all", "newest")


class StackImage(ImageParam):
    """K frames of C channels as one network input [B, K*C, H, W] in [0, 1], oldest first.

    Args:
        layout: the policy's observation layout (K frames, C channels per frame).
        size / batch: (H, W) of each frame, and how many images are optimised at once.
        frames: ``"all"`` optimises every frame; ``"newest"`` only the newest, the past frames
            fixed to ``context``'s (or mid grey).
        base: per-frame parameterisation, ``"fourier"`` (default) or ``"pixels"``.
        context: a raw observation in ``layout`` whose past frames are kept (``frames="newest"``).
        **options: passed to the per-frame parameterisation (``sd``, ``decorrelate``, ...).
    """

    name = "stack"

    def __init__(
        self,
        layout: ObservationLayout | str,
        size: tuple[int, int],
        batch: int = 1,
        *,
        frames: str = "all",
        base: str = "fourier",
        context: np.ndarray | torch.Tensor | None = None,
        seed: int = 0,
        **options,
    ) -> None:
        self.layout = resolve_layout(layout, None)
        k, c = self.layout.frames, self.layout.channels
        if frames not in FRAMES:
            raise ValueError(
                f"frames must be 'all' (optimise the whole stack) or 'newest' (only the newest "
                f"frame); got {frames!r}"
            )
        if base not in ("fourier", "pixels"):
            raise ValueError(f"base must be 'fourier' or 'pixels', got {base!r}")
        super().__init__(size, batch, k * c)
        self.frames = frames
        self._free = k if frames == "all" else 1
        if base == "fourier":
            options.setdefault("decorrelate", c == 3)
        make = fourier if base == "fourier" else pixels
        self.inner = make(self.size, batch * self._free, channels=c, seed=seed, **options)
        self.params = self.inner.params
        self.past = self._past(context) if frames == "newest" else None

    def _past(self, context) -> torch.Tensor:
        """The fixed past frames [B, (K-1)*C, H, W]: ``context``'s, or mid grey."""
        k, c = self.layout.frames, self.layout.channels
        h, w = self.size
        if context is None:
            return torch.full((self.batch, (k - 1) * c, h, w), 0.5)
        x = self.layout.to_network(context)
        if tuple(x.shape[1:]) != (k * c, h, w) or x.shape[0] != 1:
            raise ValueError(
                f"context must be one observation of layout {self.layout} with {h}x{w} frames; "
                f"it reads as a network input of shape {list(x.shape)}"
            )
        return x[:, : (k - 1) * c].expand(self.batch, -1, -1, -1).clone()

    def __call__(self) -> torch.Tensor:
        free = self.inner()  # [B * free frames, C, H, W], frame-major within each image
        free = free.reshape(self.batch, self._free * self.layout.channels, *self.size)
        if self.past is None:
            return free
        return torch.cat([self.past.to(free), free], dim=1)


#: :class:`StackImage` by the lowercase name the other parameterisations have.
stack = StackImage


def network_layout(layout: ObservationLayout) -> ObservationLayout:
    """The layout of a network input [B, K*C, H, W] in [0, 1] for ``layout``'s frames."""
    return ObservationLayout(layout.frames, layout.channels, "CHW", scale=1.0, source="user")
