"""Integrated Gradients (Sundararajan, Taly & Yan 2017, https://arxiv.org/abs/1703.01365).

attr_i = (x_i - x'_i) * integral_0^1 d target(x' + a (x - x')) / d x_i  da, approximated by a
quadrature rule over ``steps`` points on the straight path from the baseline x' to x. All frames'
path points go through the network together, ``batch_size`` images per pass.
"""

from __future__ import annotations

import numpy as np
import torch

from rlviz.methods.base import (
    SIGNED_REDUCTIONS,
    AttributionMethod,
    check_reduction,
    freeze_target,
    scalar_per_sample,
)
from rlviz.methods.registry import register
from rlviz.methods.saliency import input_gradients
from rlviz.ops import fill_values
from rlviz.policy import PolicyAdapter, as_adapter

RULES = ("gausslegendre", "riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid")


def quadrature(rule: str, steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Points and weights on [0, 1] for the path integral: (alphas [steps], weights [steps]).

    ``riemann_trapezoid`` is the textbook rule (weights sum to 1); captum's variant of the same
    name scales by 1/steps instead of 1/(steps - 1).
    """
    n = int(steps)
    if rule == "gausslegendre":
        if n < 1:
            raise ValueError(f"gausslegendre needs steps >= 1, got {steps}")
        nodes, weights = np.polynomial.legendre.leggauss(n)
        return torch.tensor(0.5 * (nodes + 1.0)), torch.tensor(0.5 * weights)
    if rule not in RULES:
        raise ValueError(f"unknown quadrature rule {rule!r}; use one of {RULES}")
    if n < 2:
        raise ValueError(f"{rule} needs steps >= 2, got {steps}")
    k = torch.arange(n, dtype=torch.float64)
    if rule == "riemann_trapezoid":
        weights = torch.full((n,), 1.0 / (n - 1), dtype=torch.float64)
        weights[[0, -1]] /= 2
        return k / (n - 1), weights
    offset = {"riemann_left": 0.0, "riemann_right": 1.0, "riemann_middle": 0.5}[rule]
    return (k + offset) / n, torch.full((n,), 1.0 / n, dtype=torch.float64)


class _Weighted:
    """A target scaled per sample: folds the quadrature weight into the backward pass for free."""

    def __init__(self, target, weights: torch.Tensor) -> None:
        self.target, self.weights = target, weights

    def __call__(self, out):
        return self.target(out) * self.weights


@register("integrated_gradients", "Integrated gradients", aliases=("ig",))
class IntegratedGradients(AttributionMethod):
    """Integrated Gradients, summed over colour channels (so maps sum to ~ target(x) - target(x')).

    Args:
        steps: points on the path (forward+backward passes per frame).
        baseline: x': ``"zeros"`` (black), ``"mean"`` (each frame's mean colour), ``"blur"``
            (the frame blurred, sigma ``blur_sigma``), a number, or a tensor broadcastable to a
            preprocessed frame [C, H, W].
        rule: quadrature rule, one of ``RULES`` (Gauss-Legendre converges fastest).
        reduce: channel reduction (``sum`` keeps completeness).
        blur_sigma: sigma in pixels for the ``"blur"`` baseline.
    """

    perturbs_input = True

    def __init__(
        self,
        steps: int = 32,
        baseline: object = "zeros",
        rule: str = "gausslegendre",
        reduce: str = "sum",
        blur_sigma: float = 5.0,
    ) -> None:
        self.alphas, self.weights = quadrature(rule, steps)
        self.steps, self.baseline, self.rule = int(steps), baseline, rule
        self.reduce = check_reduction(reduce)
        self.blur_sigma = float(blur_sigma)
        self.signed = reduce in SIGNED_REDUCTIONS

    def __repr__(self) -> str:
        return (
            f"IntegratedGradients(steps={self.steps}, baseline={self.baseline!r}, "
            f"rule={self.rule!r}, reduce={self.reduce!r})"
        )

    def images_per_frame(self) -> int:
        return self.steps

    def baseline_for(self, x: torch.Tensor) -> torch.Tensor:
        """The baseline x' for preprocessed frames ``x`` [B, C, H, W]: [B, C, H, W]."""
        return fill_values(x, self.baseline, self.blur_sigma).expand_as(x)

    def _maps(self, adapter, x, target, request):
        target = freeze_target(adapter, x, target, request.states)
        base = self.baseline_for(x)
        diff = x - base
        alphas = self.alphas.to(x.device, x.dtype)
        weights = self.weights.to(x.device, x.dtype)
        total = torch.zeros_like(x)
        with request.passes(x, self.steps) as blocks:
            for block in blocks:
                n_steps = block.jobs_per_frame
                points = torch.addcmul(
                    base[block.frames, None],
                    diff[block.frames, None],
                    alphas[block.jobs].view(1, -1, 1, 1, 1),
                    out=block.images,
                ).flatten(0, 1)
                k = points.shape[0] // n_steps
                weighted = _Weighted(block.target(target), weights[block.jobs].repeat(k))
                grads = input_gradients(adapter, points, weighted, block.rows, request.states)
                total[block.frames] += grads.view(k, n_steps, *x.shape[1:]).sum(dim=1)
        return request.reduce_input(total * diff, self.reduce)

    def attribute_with_delta(
        self,
        adapter: PolicyAdapter,
        obs: object,
        target: object = None,
        *,
        batch_size: int | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Maps and the convergence delta: (float32 [B, H, W], float32 [B]).

        delta = sum of the attributions - (target(x) - target(x')); it goes to 0 as ``steps``
        grows, so it tells whether ``steps`` is enough. Needs ``reduce="sum"``.
        """
        if self.reduce != "sum":
            raise ValueError(
                f"the convergence delta needs reduce='sum' (completeness); got {self.reduce!r}"
            )
        adapter = as_adapter(adapter)
        maps = self.attribute(adapter, obs, target, batch_size=batch_size)
        gap = _EndpointGap(self).attribute_raw(adapter, obs, target, batch_size=batch_size)
        return maps, maps.double().sum(dim=(1, 2)).float() - gap[:, 0, 0]


class _EndpointGap(AttributionMethod):
    """target(x) - target(baseline) per frame as a [B, 1, 1] 'map', run through the same driver."""

    low_res = True

    def __init__(self, ig: IntegratedGradients) -> None:
        self.ig = ig

    def _maps(self, adapter, x, target, request):
        target = freeze_target(adapter, x, target, request.states)
        with torch.no_grad():
            top = target(adapter.outputs(x, request.states))
            bottom = target(adapter.outputs(self.ig.baseline_for(x), request.states))
            top, bottom = (scalar_per_sample(v, x.shape[0]) for v in (top, bottom))
        return (top - bottom).view(-1, 1, 1)
