"""Guided backpropagation (Springenberg et al. 2014, "Striving for Simplicity",
https://arxiv.org/abs/1412.6806).

The input gradient, except that at every ReLU only positive gradient flows back: the ReLU's own
backward already zeroes positions whose input was negative, and we additionally zero negative
incoming gradient. We do this with a gradient hook on each ReLU's output tensor (registered by a
forward hook that lives for one call), which also works for ``ReLU(inplace=True)`` and for a ReLU
module used several times in one forward.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

from rlviz.methods.base import SIGNED_REDUCTIONS, AttributionMethod, check_reduction
from rlviz.methods.registry import register
from rlviz.methods.saliency import input_gradients


def _clamp_negative(grad: torch.Tensor) -> torch.Tensor:
    return grad.clamp(min=0)


def _guide(_module: nn.Module, _inputs: tuple, output: torch.Tensor) -> None:
    if isinstance(output, torch.Tensor) and output.requires_grad:
        # A tensor hook dies with the graph, so nothing outlives this call.
        output.register_hook(_clamp_negative)


@register("guided_backprop", "Guided backprop")
class GuidedBackprop(AttributionMethod):
    """Guided backpropagation through the model's ``nn.ReLU`` modules.

    ReLUs called as functions (``F.relu``/``torch.relu``) cannot be hooked; if the model has no
    ``nn.ReLU`` module the result equals the plain gradient and a warning says so.

    Args:
        reduce: channel reduction (see :class:`rlviz.methods.saliency.Gradient`).
    """

    def __init__(self, reduce: str = "abs_max") -> None:
        self.reduce = check_reduction(reduce)
        self.signed = reduce in SIGNED_REDUCTIONS

    def _maps(self, adapter, x, target, request):
        relus = [m for m in adapter.model.modules() if isinstance(m, nn.ReLU)]
        if not relus:
            warnings.warn(
                "guided backprop found no nn.ReLU module in the model (functional relu calls "
                "cannot be hooked): the result is the plain gradient",
                stacklevel=4,
            )
        handles = []
        try:
            for relu in relus:
                handles.append(relu.register_forward_hook(_guide))
            grads = input_gradients(adapter, x, target, None, request.states)
        finally:
            for handle in handles:
                handle.remove()
        return request.reduce_input(grads, self.reduce)
