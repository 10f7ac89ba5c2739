"""Objectives for activation maximisation: small callables that compose with + / - / weights.

An objective maps the state of one optimisation step (:class:`Context`) to one number per image,
[B], to be *maximised*. Unit objectives read recorded layer activations; policy objectives read
the policy's outputs; regularisers read the image and are penalties (>= 0) meant to be subtracted::

    channel("conv2", 5) - 0.5 * neuron("conv3", 1) - 1e-2 * total_variation()

The split of objective / parameterisation / transform follows Lucid and lucent (Olah et al.,
"Feature Visualization", Distill 2017).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from rlviz.features._common import check_unit
from rlviz.ops import gaussian_blur
from rlviz.policy import PolicyOutput


@dataclass
class Context:
    """What an objective can read at one step.

    Attributes:
        acts: layer name -> activation of the transformed image ([B, C, h, w] or [B, D]).
        out: the policy's outputs on the transformed image (None when no objective needs them).
        image: the parameterised image before transforms, [B, C, H, W] in [0, 1].
    """

    acts: dict[str, torch.Tensor]
    out: PolicyOutput | None
    image: torch.Tensor


@dataclass
class Objective:
    """A term to maximise: ``fn(context) -> Tensor [B]`` plus what it needs from the forward pass."""

    fn: Callable[[Context], torch.Tensor]
    name: str
    layers: frozenset[str] = field(default_factory=frozenset)
    needs_output: bool = False

    def __call__(self, ctx: Context) -> torch.Tensor:
        return self.fn(ctx)

    def _combine(self, other: Objective, op: Callable, symbol: str) -> Objective:
        return Objective(
            lambda ctx: op(self(ctx), other(ctx)),
            f"{self.name} {symbol} {other.name}",
            self.layers | other.layers,
            self.needs_output or other.needs_output,
        )

    def __add__(self, other: Objective | float) -> Objective:
        if isinstance(other, (int, float)):
            return Objective(
                lambda ctx: self(ctx) + other,
                f"{self.name} + {other:g}",
                self.layers,
                self.needs_output,
            )
        return self._combine(as_objective(other), torch.add, "+")

    def __radd__(self, other: float) -> Objective:
        # sum([...]) starts from 0.
        if isinstance(other, (int, float)) and other == 0:
            return self
        return self.__add__(other)

    def __sub__(self, other: Objective | float) -> Objective:
        if isinstance(other, (int, float)):
            return self + (-other)
        return self._combine(as_objective(other), torch.sub, "-")

    def __rsub__(self, other: float) -> Objective:
        return (-self) + other

    def __neg__(self) -> Objective:
        return Objective(lambda ctx: -self(ctx), f"-({self.name})", self.layers, self.needs_output)

    def __mul__(self, weight: float) -> Objective:
        if not isinstance(weight, (int, float)):
            raise TypeError(f"objectives can be scaled by numbers, not {type(weight).__name__}")
        return Objective(
            lambda ctx: weight * self(ctx),
            f"{weight:g}*{self.name}",
            self.layers,
            self.needs_output,
        )

    __rmul__ = __mul__

    def __truediv__(self, weight: float) -> Objective:
        return self * (1.0 / weight)


def as_objective(obj: Objective | Callable[[Context], torch.Tensor]) -> Objective:
    """An :class:`Objective` as is; a plain ``fn(context) -> [B]`` wrapped (reading no layers)."""
    if isinstance(obj, Objective):
        return obj
    if callable(obj):
        return Objective(obj, getattr(obj, "__name__", "custom"), frozenset(), True)
    raise TypeError(f"expected an Objective or a callable on a Context, got {type(obj).__name__}")


def _act(ctx: Context, layer: str, c: int) -> torch.Tensor:
    act = ctx.acts[layer]
    check_unit(act, layer, c)
    return act[:, c]


def channel(layer: str, c: int) -> Objective:
    """Mean activation of channel ``c`` of ``layer`` over all positions (the value, for a linear layer)."""

    def fn(ctx: Context) -> torch.Tensor:
        a = _act(ctx, layer, c)
        return a.reshape(len(a), -1).mean(1)

    return Objective(fn, f"channel({layer!r}, {c})", frozenset([layer]))


def neuron(layer: str, c: int, x: int | None = None, y: int | None = None) -> Objective:
    """Activation of channel ``c`` at one position (column ``x``, row ``y``; default the centre)."""

    def fn(ctx: Context) -> torch.Tensor:
        a = _act(ctx, layer, c)
        if a.ndim == 1:
            return a
        h, w = a.shape[-2:]
        row = h // 2 if y is None else y
        col = w // 2 if x is None else x
        if not (0 <= row < h and 0 <= col < w):
            raise ValueError(
                f"layer {layer!r} maps are {h}x{w}; position (x={col}, y={row}) is outside"
            )
        return a[:, row, col]

    where = "centre" if x is None and y is None else f"x={x}, y={y}"
    return Objective(fn, f"neuron({layer!r}, {c}, {where})", frozenset([layer]))


def _output(ctx: Context) -> PolicyOutput:
    if ctx.out is None:
        raise RuntimeError("this objective needs the policy outputs, but they were not computed")
    return ctx.out


def _action(k: int, field: str) -> Objective:
    """The policy output ``field`` ("logits", "probs", "log_probs") of action ``k``."""

    def fn(ctx: Context) -> torch.Tensor:
        values = getattr(_output(ctx), field)
        if not 0 <= k < values.shape[-1]:
            raise ValueError(f"action {k} out of range: the policy has {values.shape[-1]} actions")
        return values[:, k]

    return Objective(fn, f"action_{field[:-1]}({k})", needs_output=True)


def action_logit(k: int) -> Objective:
    """The logit of action ``k``."""
    return _action(k, "logits")


def action_prob(k: int) -> Objective:
    """pi(k | image). Saturates near 1; :func:`action_log_prob` keeps a useful gradient there."""
    return _action(k, "probs")


def action_log_prob(k: int) -> Objective:
    """log pi(k | image)."""
    return _action(k, "log_probs")


def value() -> Objective:
    """The critic's V(image)."""

    def fn(ctx: Context) -> torch.Tensor:
        v = _output(ctx).value
        if v is None:
            raise ValueError(
                "objective value() needs a policy with a value head; this adapter returns none"
            )
        return v

    return Objective(fn, "value()", needs_output=True)


def l2(constant: float = 0.5) -> Objective:
    """Penalty: mean squared distance of the image from grey level ``constant``. Subtract it."""
    return Objective(lambda ctx: (ctx.image - constant).pow(2).flatten(1).mean(1), "l2()")


def total_variation(beta: float = 1.0) -> Objective:
    """Penalty: mean of (dx^2 + dy^2)^(beta/2) over pixels (Mahendran & Vedaldi's TV^beta prior,
    https://arxiv.org/abs/1412.0035). beta=1 keeps edges; beta=2 smooths more. Subtract it."""

    def fn(ctx: Context) -> torch.Tensor:
        img = ctx.image
        dx = img[..., :-1, 1:] - img[..., :-1, :-1]
        dy = img[..., 1:, :-1] - img[..., :-1, :-1]
        # the small constant keeps the gradient finite where the image is flat (beta < 2)
        return (dx.pow(2) + dy.pow(2) + 1e-8).pow(beta / 2).flatten(1).mean(1)

    return Objective(fn, f"total_variation({beta:g})")


def blur(sigma: float = 1.0) -> Objective:
    """Penalty: mean squared difference between the image and its (fixed) blurred copy, pulling
    the image towards smoothness a little each step. Subtract it."""

    def fn(ctx: Context) -> torch.Tensor:
        target = gaussian_blur(ctx.image.detach(), sigma, truncate=2.5)
        return (ctx.image - target).pow(2).flatten(1).mean(1)

    return Objective(fn, f"blur({sigma:g})")


def feature_distance(layer: str, target: torch.Tensor) -> Objective:
    """Penalty: ||phi(image) - target||^2 / ||target||^2 per image, for inverting a layer's code.
    ``target`` is the layer's activation [B, ...] (or [1, ...], broadcast). Subtract it."""
    target = target.detach()
    norm = target.flatten(1).pow(2).sum(1).clamp_min(1e-12)

    def fn(ctx: Context) -> torch.Tensor:
        act = ctx.acts[layer]
        if act.shape[1:] != target.shape[1:]:
            raise ValueError(
                f"layer {layer!r} gives {tuple(act.shape[1:])}, target is {tuple(target.shape[1:])}"
            )
        return (act - target.to(act)).flatten(1).pow(2).sum(1) / norm.to(act)

    return Objective(fn, f"feature_distance({layer!r})", frozenset([layer]))


def dream(layer: str, c: int | None = None) -> Objective:
    """DeepDream's objective: mean squared activation of ``layer`` (or of its channel ``c``)."""

    def fn(ctx: Context) -> torch.Tensor:
        a = ctx.acts[layer] if c is None else _act(ctx, layer, c)
        return a.pow(2).reshape(len(a), -1).mean(1)

    return Objective(fn, f"dream({layer!r}{'' if c is None else f', {c}'})", frozenset([layer]))
