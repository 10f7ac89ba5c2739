"""The episode data model the panels read: a rollout plus its maps, map positions and views."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rlviz.layout import ObservationLayout
from rlviz.memory import MemoryReliance
from rlviz.rollout import CompressedFrames, Rollout
from rlviz.video.draw import display_frame

__all__ = ["CompressedFrames", "EpisodeExplanation"]


@dataclass
class EpisodeExplanation:
    """Everything the panels show about one episode, indexed by step t = 0 .. T-1.

    Attributes:
        rollout: the episode (observations, actions, pi, V, rewards, ground-truth infos).
        maps: method name -> [T, H, W] in [0, 1] (float16 from the pipeline), normalised as
            ``normalize`` says ([-1, 1] for signed methods).
        map_ranges: method name -> (low, high) raw attribution values at 0 and 1 of the colour
            scale (the episode's range; per-frame scaling shows the episode's range for reference).
        map_signed: method name -> whether its maps are signed ([-1, 1], diverging colours).
        action_names: labels of the actions.
        normalize: ``"episode"`` (one colour scale for the whole episode), ``"frame"`` (each frame
            scaled on its own, as captum and pytorch-grad-cam show maps) or ``"running"`` (live
            rendering: scale of the episode so far).
        target_name: what the maps explain, for the panel footers (e.g. ``"log pi(a_t|s_t)"``).
        action_maps: method -> [T, A, H, W]: a map per action k of log pi(k|s_t), all actions on
            one scale (for :class:`rlviz.video.panels.PerActionPanel`).
        embedding: the fitted :class:`rlviz.statemap.StateEmbedding`, or None.
        embedding_xy: float32 [T, 2]: each state's position on that map.
        top_down: T uint8 [h, w, 3] top-down maps (indexable), or None when the env has none.
        meta: title parts: ``agent``, ``env``, ``seed``, ``episode``.
        horizon: x-axis length of time plots (defaults to T).
        layout: how an observation holds its frames (default: the rollout's); a stack is shown
            by its newest frame, its frames one by one in the stack panel.
        frame_maps: method -> [T, K, H, W], one map per stack frame (oldest first), on the scale
            of that method's ``maps`` (for :class:`rlviz.video.panels.StackPanel`).
        frame_shares: float32 [T, K], attribution mass per stack frame of ``frame_maps``.
        memory: per-step :class:`rlviz.memory.MemoryReliance` (``kl``, ``share``) for a policy
            with memory, else None (for :class:`rlviz.video.panels.MemoryPanel`).
        newest_maps: the methods whose ``maps`` of a stacked episode are the newest frame's own
            map (the others are collapsed over the frames).
    """

    rollout: Rollout
    maps: dict[str, np.ndarray]
    map_ranges: dict[str, tuple[float, float]] = field(default_factory=dict)
    map_signed: dict[str, bool] = field(default_factory=dict)
    action_names: tuple[str, ...] = ()
    normalize: str = "episode"
    target_name: str | None = "log \u03c0(a_t | s_t)"
    action_maps: dict[str, np.ndarray] = field(default_factory=dict)
    embedding: Any = None
    embedding_xy: np.ndarray | None = None
    top_down: Sequence[np.ndarray] | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    horizon: int | None = None
    layout: ObservationLayout | None = None
    frame_maps: dict[str, np.ndarray] = field(default_factory=dict)
    frame_shares: np.ndarray | None = None
    memory: MemoryReliance | None = None
    newest_maps: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        n = len(self.rollout)
        if self.layout is None:
            self.layout = getattr(self.rollout, "layout", None)
        if not self.action_names:
            self.action_names = tuple(f"a{k}" for k in range(self.rollout.action_count))
        per_step = {f"maps[{k!r}]": m for k, m in self.maps.items()}
        per_step.update({f"frame_maps[{k!r}]": m for k, m in self.frame_maps.items()})
        per_step.update(embedding_xy=self.embedding_xy, memory=self.memory)
        for name, value in per_step.items():
            if value is not None and len(value) != n:
                raise ValueError(f"{name} has {len(value)} steps for an episode of {n}")
        for name, m in self.frame_maps.items():
            if m.ndim != 4:
                raise ValueError(f"frame_maps[{name!r}] must be [T, K, H, W]; got {list(m.shape)}")
        if self.top_down is not None and len(self.top_down) < n:
            raise ValueError(f"top_down has {len(self.top_down)} frames for {n} steps")

    def __len__(self) -> int:
        return len(self.rollout)

    @property
    def stacked(self) -> bool:
        """Whether each observation is a stack of frames (shown by its newest frame)."""
        return self.layout is not None and self.layout.stacked

    @property
    def obs_shape(self) -> tuple[int, ...]:
        """Shape of one observation as displayed, (H, W, C)."""
        return self.frame(0).shape

    def frame(self, t: int) -> np.ndarray:
        """Observation t as shown: uint8 [H, W, 3] (the newest frame of a stack)."""
        if self.stacked:
            return self.layout.newest_frame(self.rollout.obs[t])[0]
        return display_frame(self.rollout.obs[t])

    def stack_frames(self, t: int) -> np.ndarray:
        """The frames of observation t, oldest first: uint8 [K, H, W, 3] (K = 1 unstacked)."""
        if self.layout is None:
            return display_frame(self.rollout.obs[t])[None]
        return self.layout.display_frames(self.rollout.obs[t])[0]

    def title(self) -> str:
        """The title bar's text: agent, env, seed, episode."""
        parts = [
            f"{key}: {self.meta[key]}"
            for key in ("agent", "env", "seed", "episode", "steps")
            if self.meta.get(key) is not None
        ]
        return "    ".join(parts)
