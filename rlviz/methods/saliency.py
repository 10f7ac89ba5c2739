"""Input-gradient saliency: vanilla gradient, signed gradient, gradient x input, SmoothGrad.

- Simonyan, Vedaldi & Zisserman 2013, "Deep Inside Convolutional Networks",
  https://arxiv.org/abs/1312.6034 (|d target / d pixel|, max over colour channels).
- Shrikumar et al. 2016, "Not Just a Black Box", https://arxiv.org/abs/1605.01713
  (gradient x input).
- Smilkov et al. 2017, "SmoothGrad", https://arxiv.org/abs/1706.03825 (average over noisy copies).

One backward pass per batch of frames: the target is summed over the batch, which gives every
frame its own gradient because frames do not interact (eval-mode models).
"""

from __future__ import annotations

import torch

from rlviz.methods.base import (
    SIGNED_REDUCTIONS,
    AttributionMethod,
    check_reduction,
    freeze_target,
    scalar_per_sample,
)
from rlviz.methods.registry import register
from rlviz.policy import PolicyAdapter
from rlviz.policy.adapter import State
from rlviz.targets import Target


def input_gradients(
    adapter: PolicyAdapter,
    x: torch.Tensor,
    target: Target,
    rows: torch.Tensor | None = None,
    states: State | None = None,
) -> torch.Tensor:
    """d target / d x for a preprocessed batch ``x`` [B, C, H, W]; returns [B, C, H, W].

    ``states``: a recurrent policy's state entering each frame; ``rows`` names the frame each
    input was made from (default: input i is frame i).

    Only the input's gradient is computed (``torch.autograd.grad``); parameter ``.grad`` fields are
    never touched and the caller's ``x`` is not modified.
    """
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        values = scalar_per_sample(target(adapter.outputs(x, states, rows)), x.shape[0])
        if not values.requires_grad:
            raise ValueError(
                "the target does not depend on the input through autograd (does the policy's "
                "forward run under torch.no_grad() or detach its input?)"
            )
        (grad,) = torch.autograd.grad(values.sum(), x, allow_unused=True)
    return torch.zeros_like(x) if grad is None else grad


@register("gradient", "Saliency (gradient)", aliases=("saliency", "vanilla_gradient"))
class Gradient(AttributionMethod):
    """Vanilla gradient saliency (Simonyan et al. 2013): |d target / d pixel|, max over channels.

    Args:
        reduce: how colour channels are collapsed: ``abs_max`` (the paper), ``sum``, ``abs_sum``,
            ``l2``.
    """

    def __init__(self, reduce: str = "abs_max") -> None:
        self.reduce = check_reduction(reduce)
        self.signed = reduce in SIGNED_REDUCTIONS

    def _maps(self, adapter, x, target, request):
        grads = input_gradients(adapter, x, target, None, request.states)
        return request.reduce_input(grads, self.reduce)


@register("gradient_signed", "Signed gradient")
class GradientSigned(Gradient):
    """Signed gradient, summed over channels: where brightening a pixel raises (> 0) or lowers the
    target."""

    def __init__(self, reduce: str = "sum") -> None:
        super().__init__(reduce)


@register("grad_x_input", "Gradient x input", aliases=("input_x_gradient",))
class GradientXInput(Gradient):
    """Gradient x input (Shrikumar et al. 2016), summed over channels: a first-order estimate of
    each pixel's contribution relative to a black image."""

    def __init__(self, reduce: str = "sum") -> None:
        super().__init__(reduce)

    def _maps(self, adapter, x, target, request):
        grads = input_gradients(adapter, x, target, None, request.states)
        return request.reduce_input(grads * x, self.reduce)


@register("smoothgrad", "SmoothGrad")
class SmoothGrad(AttributionMethod):
    """SmoothGrad (Smilkov et al. 2017): the gradient averaged over noisy copies of each frame.

    The noise is drawn once per call from ``seed`` with shape [samples, C, H, W] and the same draws
    are used for every frame: maps are reproducible, independent of chunking, and consecutive video
    frames do not flicker from the noise alone.

    Args:
        samples: noisy copies per frame (forward+backward passes per frame).
        stdev: noise standard deviation in preprocessed input units (0.15 = 15% of a [0, 1] range,
            the paper's recommended 10-20%).
        seed: seed of the noise generator.
        absolute: average |gradient| (as captum's ``NoiseTunnel(Saliency)``) rather than the signed
            gradient.
        reduce: channel reduction after averaging (see :class:`Gradient`).
    """

    perturbs_input = True

    def __init__(
        self,
        samples: int = 25,
        stdev: float = 0.15,
        seed: int = 0,
        absolute: bool = True,
        reduce: str = "abs_max",
    ) -> None:
        if int(samples) < 1:
            raise ValueError(f"samples must be >= 1, got {samples}")
        if float(stdev) < 0:
            raise ValueError(f"stdev must be >= 0, got {stdev}")
        self.samples = int(samples)
        self.stdev = float(stdev)
        self.seed = int(seed)
        self.absolute = bool(absolute)
        self.reduce = check_reduction(reduce)
        self.signed = not absolute and reduce in SIGNED_REDUCTIONS

    def images_per_frame(self) -> int:
        return self.samples

    def noise(self, shape: tuple[int, ...], device: torch.device | str = "cpu") -> torch.Tensor:
        """The noise added to every frame of input shape ``shape`` (C, H, W): [samples, C, H, W]."""
        generator = torch.Generator(device="cpu").manual_seed(self.seed)
        noise = torch.randn((self.samples, *shape), generator=generator) * self.stdev
        return noise.to(device)

    def _maps(self, adapter, x, target, request):
        target = freeze_target(adapter, x, target, request.states)
        noise = self.noise(tuple(x.shape[1:]), x.device).to(x.dtype)
        total = torch.zeros_like(x)
        with request.passes(x, self.samples) as blocks:
            for block in blocks:
                noisy = torch.add(
                    x[block.frames, None], noise[None, block.jobs], out=block.images
                ).flatten(0, 1)
                grads = input_gradients(
                    adapter, noisy, block.target(target), block.rows, request.states
                )
                grads = grads.abs_() if self.absolute else grads
                total[block.frames] += grads.view(-1, block.jobs_per_frame, *x.shape[1:]).sum(dim=1)
        return request.reduce_input(total / self.samples, self.reduce)
