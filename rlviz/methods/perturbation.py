"""Perturbation saliency for RL agents (Greydanus et al. 2018, "Visualizing and Understanding Atari
Agents", https://arxiv.org/abs/1711.00138).

For a grid of centres (every ``stride`` pixels) blur the frame locally: x' = x (1 - M) + blur(x) M,
with M a Gaussian bump of ``mask_sigma`` pixels at the centre, and score how much the policy's
output moves: S = 1/2 ||f(x) - f(x')||^2. By default f is the vector of action logits (the paper's
actor saliency); pass ``target="value"`` for the critic saliency, or any target for its own change.
Scores live on the grid ([B, rows, cols], :meth:`attribute_raw`) and are interpolated to the frame.
Every centre of every frame is one image in a big batch, cut into passes of ``batch_size`` images.
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch

from rlviz.methods.base import ReplacementMethod, scalar_per_sample
from rlviz.methods.registry import register
from rlviz.ops import gaussian_blur
from rlviz.policy import PolicyOutput
from rlviz.targets import as_target


class AllLogits:
    """The whole logit vector [B, A]: Greydanus' actor saliency compares all of it."""

    def __call__(self, out: PolicyOutput) -> torch.Tensor:
        return out.logits


def grid_centres(size: int, stride: int) -> torch.Tensor:
    """Centres of the ``stride``-pixel cells tiling an axis of ``size`` pixels: [ceil(size/stride)].

    Centring the sample points in their cells makes plain bilinear upsampling line up exactly
    with the pixels when ``size`` is a multiple of ``stride``.
    """
    return torch.arange(math.ceil(size / stride), dtype=torch.float64) * stride + (stride - 1) / 2


@lru_cache(maxsize=16)
def _gaussian_masks(
    size: tuple[int, int], stride: int, sigma: float, device: torch.device, dtype: torch.dtype
) -> torch.Tensor:
    axes = []
    for n in size:
        centres = grid_centres(n, stride)
        pixels = torch.arange(n, dtype=torch.float64)
        axes.append(torch.exp(-0.5 * ((pixels[None, :] - centres[:, None]) / sigma) ** 2))
    rows, cols = axes
    bumps = rows[:, None, :, None] * cols[None, :, None, :]
    bumps = bumps / bumps.amax(dim=(2, 3), keepdim=True)
    return bumps.reshape(-1, *size).to(device=device, dtype=dtype)


def _interp_matrix(centres: torch.Tensor, size: int) -> torch.Tensor:
    """[size, len(centres)] linear interpolation from values at ``centres`` to every pixel (held
    constant beyond the outermost centres)."""
    pixels = torch.arange(size, dtype=torch.float64).clamp(centres[0], centres[-1])
    matrix = torch.zeros(size, len(centres), dtype=torch.float64)
    if len(centres) == 1:
        matrix[:, 0] = 1.0
        return matrix
    right = torch.searchsorted(centres, pixels, right=False).clamp(1, len(centres) - 1)
    left = right - 1
    frac = (pixels - centres[left]) / (centres[right] - centres[left])
    rows = torch.arange(size)
    matrix[rows, left] = 1 - frac
    matrix[rows, right] += frac
    return matrix


@register("perturbation", "Perturbation saliency", aliases=("greydanus",))
class PerturbationSaliency(ReplacementMethod):
    """Greydanus et al. 2018 blurred-mask saliency; >= 0, large where blurring moves the output.

    Args:
        stride: pixels between perturbation centres (the paper: 5).
        mask_sigma: width of the Gaussian perturbation mask in pixels (the paper: 5).
        blur_sigma: sigma of the blur that replaces the masked pixels (the paper: 3).

    The target defaults to all action logits (not the greedy action as in other methods);
    ``target="value"`` gives the critic saliency, other targets the squared change of that scalar.
    """

    # pass_elements stays the default although passes are forward only (occlusion doubles it):
    # each pass first writes its blended images, and passes of 2^23 elements (582 frames of
    # 60x80x3, 33 MB) left the buffer out of cache by the time conv1 read it; at 2^22 the method
    # ran ~20-35% faster on the agent (issue 19; 2-core CPU).
    low_res = True
    signed = False

    def __init__(self, stride: int = 5, mask_sigma: float = 5.0, blur_sigma: float = 3.0) -> None:
        if int(stride) < 1 or float(mask_sigma) <= 0 or float(blur_sigma) < 0:
            raise ValueError(
                f"need stride >= 1, mask_sigma > 0, blur_sigma >= 0; got {stride}, {mask_sigma}, "
                f"{blur_sigma}"
            )
        self.stride = int(stride)
        self.mask_sigma = float(mask_sigma)
        self.blur_sigma = float(blur_sigma)

    def _resolve_target(self, spec):
        return AllLogits() if spec is None else as_target(spec)

    def masks(self, size: tuple[int, int], device=None, dtype=torch.float32) -> torch.Tensor:
        """Gaussian masks for every centre, peak 1: [rows * cols, H, W] (cached per size)."""
        return _gaussian_masks(
            (int(size[0]), int(size[1])),
            self.stride,
            self.mask_sigma,
            torch.device(device or "cpu"),
            dtype,
        )

    @staticmethod
    def _values(values: torch.Tensor, batch: int) -> torch.Tensor:
        """A target's output, one scalar [B] or one vector [B, K] per sample."""
        if values.ndim not in (1, 2):
            raise ValueError(
                f"a target must return [B] or [B, K] values; got shape {tuple(values.shape)}"
            )
        return scalar_per_sample(values, batch)

    def _replacement(self, x):
        return gaussian_blur(x, self.blur_sigma)

    def _changes(self, adapter, x, blurred, target, clean, request) -> torch.Tensor:
        """Saliency per blur centre [b, rows, cols]: half the squared change of the target."""
        b, _, h, w = x.shape
        masks = self.masks((h, w), x.device, x.dtype)
        rows, cols = len(grid_centres(h, self.stride)), len(grid_centres(w, self.stride))
        scores = x.new_zeros(b, masks.shape[0])
        with request.passes(x, masks.shape[0]) as blocks:
            for block in blocks:
                n_c = block.jobs_per_frame
                # x (1 - M) + blur(x) M, one broadcast op (lerp is the fastest here).
                perturbed = torch.lerp(
                    x[block.frames, None],
                    blurred[block.frames, None],
                    masks[None, block.jobs, None],
                    out=block.images,
                ).flatten(0, 1)
                out = adapter.outputs(perturbed, request.states, block.rows)
                values = self._values(block.target(target)(out), len(perturbed))
                change = clean[block.frames, None] - values.view(-1, n_c, *values.shape[1:])
                scores[block.frames, block.jobs] = 0.5 * change.reshape(
                    -1, n_c, change[0, 0].numel()
                ).square().sum(-1)
        return scores.view(b, rows, cols)

    def _upsample(self, maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        ry = _interp_matrix(grid_centres(size[0], self.stride), size[0]).to(maps)
        rx = _interp_matrix(grid_centres(size[1], self.stride), size[1]).to(maps)
        return ry @ maps @ rx.T
