"""rlviz: see why a pixel-based policy acts as it does.

The engine imports only torch and numpy at import time; environment code, miniworld and
Stable-Baselines3 are never imported by ``import rlviz``.
"""

from rlviz.adapters import PolicyAdapter, PolicyOutput
from rlviz.explain import explain
from rlviz.hooks import capture, get_layer, list_layers
from rlviz.maps import colorize, normalize, overlay, upsample
from rlviz.methods import AttributionMethod, available_methods, get_method
from rlviz.render import render_video
from rlviz.targets import (
    ActionLogit,
    ActionProb,
    Entropy,
    MostLikelyAction,
    TakenAction,
    Value,
)

__version__ = "0.1.0"

__all__ = [
    "ActionLogit",
    "ActionProb",
    "AttributionMethod",
    "Entropy",
    "MostLikelyAction",
    "PolicyAdapter",
    "PolicyOutput",
    "TakenAction",
    "Value",
    "__version__",
    "available_methods",
    "capture",
    "colorize",
    "explain",
    "get_layer",
    "get_method",
    "list_layers",
    "normalize",
    "overlay",
    "render_video",
    "upsample",
]
