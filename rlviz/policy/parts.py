"""PolicyParts: what a constructor for someone else's policy hands the adapter.

``sb3``, ``cleanrl`` and ``frameworks`` return these instead of building a :class:`PolicyAdapter`,
so none of them imports the adapter and imports flow one way.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields

from torch import nn

from rlviz.layout import ObservationLayout


@dataclass
class PolicyParts:
    """The pieces of a :class:`~rlviz.policy.PolicyAdapter` (see its arguments)."""

    module: nn.Module
    forward: Callable | None = None
    preprocess: Callable | None = None
    layout: ObservationLayout | None = None
    scale: float | None = None
    state_forward: Callable | None = None
    initial_state: Callable | None = None
    output: str | None = None
    accepts: tuple = ()
    action_space: object = None
    cam_layer: str | None = None

    def adapter_kwargs(self) -> dict:
        """Everything but the module, as keyword arguments of ``PolicyAdapter``."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "module"}
