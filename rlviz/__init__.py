"""rlviz: see why a pixel-based policy acts as it does.

The engine imports only torch and numpy at import time; environment code, miniworld and
Stable-Baselines3 are never imported by ``import rlviz``. The parts that need more (videos: PIL and
ffmpeg; the explorer; Gymnasium wrappers; sweeps) load on first use, e.g. ``rlviz.render_video``
or ``rlviz.wrappers.RecordExplanationVideo``.
"""

import importlib

from rlviz.explain import explain, frame_share
from rlviz.hooks import capture, get_layer, list_layers
from rlviz.layout import LayoutError, ObservationLayout
from rlviz.maps import colorize, normalize, overlay, upsample
from rlviz.memory import MemoryReliance, memory_reliance
from rlviz.methods import AttributionMethod, available_methods, get_method
from rlviz.policy import PolicyAdapter, PolicyOutput
from rlviz.targets import (
    ActionLogit,
    ActionMean,
    ActionProb,
    ActionStd,
    Entropy,
    MostLikelyAction,
    TakenAction,
    Value,
)

__version__ = "0.1.0"

# name -> (module, attribute or None for the module itself), imported on first access.
_LAZY = {
    "render_video": ("rlviz.video.pipeline", "render_video"),
    "explore": ("rlviz.explorer", "explore"),
    "wrappers": ("rlviz.wrappers", None),
    "video": ("rlviz.video", None),
    "statemap": ("rlviz.statemap", None),
    "explorer": ("rlviz.explorer", None),
    "features": ("rlviz.features", None),
    "trust": ("rlviz.faithfulness", "trust"),
    "faithfulness": ("rlviz.faithfulness", None),
}


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'rlviz' has no attribute {name!r}")
    module_name, attribute = _LAZY[name]
    module = importlib.import_module(module_name)
    value = module if attribute is None else getattr(module, attribute)
    globals()[name] = value
    return value


__all__ = [
    "ActionLogit",
    "ActionMean",
    "ActionProb",
    "ActionStd",
    "AttributionMethod",
    "Entropy",
    "LayoutError",
    "MemoryReliance",
    "MostLikelyAction",
    "ObservationLayout",
    "PolicyAdapter",
    "PolicyOutput",
    "TakenAction",
    "Value",
    "__version__",
    "available_methods",
    "capture",
    "colorize",
    "explain",
    "explore",
    "frame_share",
    "get_layer",
    "get_method",
    "list_layers",
    "memory_reliance",
    "normalize",
    "overlay",
    "render_video",
    "upsample",
]
