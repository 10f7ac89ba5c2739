"""Time in explanation videos: which layout and states an episode has, and its per-frame maps.

A policy has memory when it sees a stack of frames (its layout has K > 1) or carries a recurrent
state. Such an episode gets a memory-reliance trace; a stack also gets one map per stack frame of
one input-space method, for the stack panel (:mod:`rlviz.video.panels.frame_stack`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from rlviz.explain import frame_share
from rlviz.layout import ObservationLayout
from rlviz.maps import normalize_stack
from rlviz.memory import per_frame_mode, stack_method
from rlviz.policy import PolicyAdapter
from rlviz.rollout import Rollout

State = tuple[torch.Tensor, ...]

__all__ = ["TimeMaps", "episode_states"]


def episode_states(adapter: PolicyAdapter, rollout: Rollout) -> State | None:
    """The state entering each step for a recurrent policy (``rollout.states``), else None."""
    if not adapter.recurrent:
        return None
    states = getattr(rollout, "states", None)
    if states is None:
        raise ValueError(
            "a recurrent policy is explained with the state entering each step, but this rollout "
            "has no states; play it with rlviz.rollout.run_episode / collect (which record them) "
            "or replay its observations with rlviz.rollout.episode_outputs"
        )
    if len(states[0]) != len(rollout):
        raise ValueError(
            f"rollout.states has {len(states[0])} steps for an episode of {len(rollout)}; record "
            "one state per step (the one entering it)"
        )
    return states


class TimeMaps:
    """Per-frame maps of a stacked episode: what the map panels and the stack panel show.

    The map panels draw the newest frame, so a stacked episode's input-space methods (gradient
    family, SmoothGrad, IG, guided backprop) are computed per frame (the same backward pass, each
    frame's channels reduced alone) and the panel shows the newest frame's own map: the collapsed
    map would paint where things *were* in past frames onto the newest one. Occlusion and
    perturbation keep their collapsed ("where") map, whose patch covers every frame at a place,
    and the CAM family's layer has mixed the frames already: their panels say "all frames". The
    first input-space method also fills the stack panel (every frame with its map, one scale).
    """

    def __init__(self, layout: ObservationLayout | None, methods: Sequence[str]) -> None:
        self.stacked = layout is not None and layout.stacked
        inputs = [m for m in methods if per_frame_mode(m) == "input"]
        self.method = stack_method(methods) if self.stacked else None
        self.missing = self.stacked and not inputs
        self.frame_maps: dict[str, np.ndarray] = {}
        self.shares: np.ndarray | None = None
        self.newest: list[str] = []  # methods whose map panels show the newest frame's map

    def per_frame(self, method: str) -> bool:
        """Whether ``method`` runs per frame (stacked episodes, input-space methods)."""
        return self.stacked and per_frame_mode(method) == "input"

    def add(
        self, method: str, raw: np.ndarray, mode: str, signed: bool
    ) -> tuple[np.ndarray, tuple[float, float]]:
        """Per-frame raw maps [T, K, H, W] -> (the newest frame's scaled maps [T, H, W], range);
        the stack method's are kept whole, with their frame shares."""
        scaled, ranges = normalize_stack(raw, mode, signed)
        self.newest.append(method)
        if method == self.method:
            self.frame_maps[method] = scaled
            self.shares = frame_share(raw)
        return np.ascontiguousarray(scaled[:, -1]), ranges
