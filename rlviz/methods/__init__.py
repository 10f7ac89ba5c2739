# ruff: noqa: I001  (import order below is the registration order)
"""Attribution methods: one file per family, each method registered under a name.

>>> from rlviz.methods import available_methods, get_method
>>> maps = get_method("gradcam").attribute(adapter, frames, TakenAction(actions))  # [B, H, W]

Add a method by subclassing :class:`AttributionMethod`, writing ``_maps(adapter, x, target,
request)`` (``request``: a :class:`rlviz.methods.base.MapRequest`) and decorating the class with
``@register("name", "Title", aliases=(...))``.
"""

from rlviz.methods.base import AttributionMethod, reduce_channels
from rlviz.methods.registry import (
    available_methods,
    check_methods,
    get_method,
    is_signed,
    method_options,
    method_title,
    register,
)

# Importing the families registers them (order = available_methods() order).
from rlviz.methods.saliency import Gradient, GradientSigned, GradientXInput, SmoothGrad
from rlviz.methods.integrated_gradients import IntegratedGradients
from rlviz.methods.guided_backprop import GuidedBackprop
from rlviz.methods.occlusion import Occlusion
from rlviz.methods.perturbation import PerturbationSaliency
from rlviz.methods.cam import CAM, GradCAM, GradCAMPlusPlus

__all__ = [
    "CAM",
    "AttributionMethod",
    "GradCAM",
    "GradCAMPlusPlus",
    "Gradient",
    "GradientSigned",
    "GradientXInput",
    "GuidedBackprop",
    "IntegratedGradients",
    "Occlusion",
    "PerturbationSaliency",
    "SmoothGrad",
    "available_methods",
    "check_methods",
    "get_method",
    "is_signed",
    "method_options",
    "method_title",
    "reduce_channels",
    "register",
]
