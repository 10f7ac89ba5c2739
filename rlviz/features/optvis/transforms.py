"""Random transforms applied to the image before each forward pass.

Asking the objective to hold under small shifts, scalings and rotations removes the adversarial
high-frequency patterns that maximise a unit only at one exact alignment (Olah et al. 2017). All
transforms keep the image's size (the policy reads 60x80 frames; nothing is upsampled to 224),
are differentiable, and draw their randomness from the ``generator`` they are given, so a seeded
run is repeatable. A transform is any ``fn(image [B, C, H, W], generator) -> [B, C, H, W]``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

Transform = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


def _pick(options: Sequence[float], generator: torch.Generator) -> float:
    return float(options[int(torch.randint(len(options), (1,), generator=generator))])


def jitter(pixels: int) -> Transform:
    """Shift the image by a random whole number of pixels in [-pixels, pixels] on each axis
    (reflect-padded, same size)."""
    if pixels < 0:
        raise ValueError(f"jitter needs pixels >= 0, got {pixels}")

    def fn(image: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        if pixels == 0:
            return image
        h, w = image.shape[-2:]
        d = min(pixels, h - 1, w - 1)
        dy, dx = (int(v) for v in torch.randint(0, 2 * d + 1, (2,), generator=generator))
        padded = F.pad(image, (d, d, d, d), mode="reflect")
        return padded[..., dy : dy + h, dx : dx + w]

    return fn


def _affine(image: torch.Tensor, scale: float = 1.0, degrees: float = 0.0) -> torch.Tensor:
    """Zoom by ``scale`` and rotate by ``degrees`` about the centre, same size, reflection padding."""
    n, _, h, w = image.shape
    a = math.radians(degrees)
    # affine_grid works in [-1, 1] on each axis; the aspect ratio keeps rotations rigid on H != W.
    r = h / w
    cos, sin = math.cos(a) / scale, math.sin(a) / scale
    theta = torch.tensor(
        [[cos, -sin * r, 0.0], [sin / r, cos, 0.0]], dtype=image.dtype, device=image.device
    )
    grid = F.affine_grid(theta.expand(n, 2, 3), list(image.shape), align_corners=False)
    return F.grid_sample(
        image, grid, mode="bilinear", padding_mode="reflection", align_corners=False
    )


def random_scale(scales: Sequence[float]) -> Transform:
    """Zoom by a factor drawn from ``scales`` (e.g. ``(0.95, 1.0, 1.05)``), same size."""
    scales = list(scales)
    if not scales or min(scales) <= 0:
        raise ValueError(f"scales must be positive factors, got {scales}")

    def fn(image: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        s = _pick(scales, generator)
        return image if s == 1.0 else _affine(image, scale=s)

    return fn


def random_rotate(degrees: Sequence[float]) -> Transform:
    """Rotate by an angle drawn from ``degrees`` (e.g. ``range(-5, 6)``) about the centre."""
    degrees = list(degrees)
    if not degrees:
        raise ValueError("random_rotate needs at least one angle")

    def fn(image: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        d = _pick(degrees, generator)
        return image if d == 0 else _affine(image, degrees=d)

    return fn


def compose(*transforms: Transform) -> Transform:
    """Apply ``transforms`` in order."""

    def fn(image: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        for t in transforms:
            image = t(image, generator)
        return image

    return fn


def standard_transforms() -> list[Transform]:
    """Lucid's robustness recipe scaled down for 60x80 frames: jitter 3, scale 0.95..1.05,
    rotate -5..5 degrees, jitter 2."""
    return [
        jitter(3),
        random_scale([0.95 + 0.01 * i for i in range(11)]),
        random_rotate(list(range(-5, 6))),
        jitter(2),
    ]
