"""rlviz: see why a pixel-based policy acts as it does.

The engine imports only torch and numpy at import time; environment code, miniworld and
Stable-Baselines3 are never imported by ``import rlviz``.
"""

from rlviz.adapters import PolicyAdapter, PolicyOutput
from rlviz.hooks import capture, get_layer, list_layers
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
    "Entropy",
    "MostLikelyAction",
    "PolicyAdapter",
    "PolicyOutput",
    "TakenAction",
    "Value",
    "__version__",
    "capture",
    "get_layer",
    "list_layers",
]
