"""The caption strip: whether the goal is in view and the latest events, from the env's info."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from rlviz.video.draw import (
    ACCENT,
    BAD,
    GOOD,
    MUTED,
    PANEL_BG,
    TEXT,
    blank,
    fade,
    put_text,
    text_width,
)
from rlviz.video.events import episode_events, goal_truth
from rlviz.video.panels.base import Panel

if TYPE_CHECKING:
    from rlviz.video.episode import EpisodeExplanation


class CaptionPanel(Panel):
    """A full-width strip: a state chip (goal in view or not) and the latest events, held a while.

    The goal's name and visibility come from the env's info (see :mod:`rlviz.video.events`).
    """

    wide = True

    def __init__(self, height: int = 30, hold: int = 8, width: int = 640) -> None:
        super().__init__((height, width), "")
        self.hold = int(hold)
        self._events: list[list[str]] = []
        self._visible: np.ndarray | None = None
        self._goal = "goal"

    def fit_width(self, width: int) -> None:
        """Stretch to the frame's width (called by the Composer)."""
        self.size = (self.size[0], int(width))
        self._base = blank(*self.size, PANEL_BG)

    def prepare(self, episode: EpisodeExplanation) -> None:
        self._base = blank(*self.size, PANEL_BG)
        self._events = episode_events(episode.rollout, episode.action_names)
        truth = goal_truth(episode.rollout.infos, len(episode))
        self._visible, self._goal = truth.visible, truth.name

    def render(self, t: int, episode: EpisodeExplanation) -> np.ndarray:
        tile = self._require_prepared().copy()
        h = self.size[0]
        x = 8
        if self._visible is not None:
            seen = bool(self._visible[t])
            label = f"{self._goal} in view" if seen else f"{self._goal} not in view"
            color = GOOD if seen else MUTED
            tile[4 : h - 4, x : x + text_width(label, 13, True) + 12] = color
            drawn = put_text(
                tile, label, (x + 6, h // 2), size=13, bold=True, color=(20, 20, 20), anchor="lm"
            )
            x = drawn[2] + 18
        latest: dict[str, int] = {}  # event -> last step it happened (repeats shown once)
        for s in range(max(0, t - self.hold + 1), t + 1):
            latest.update({e: s for e in self._events[s]})
        recent = sorted(((s, e) for e, s in latest.items()), reverse=True)[:3]
        for s, event in recent:  # newest first, older ones fade
            color = ACCENT if "reached" in event else (BAD if "away" in event else TEXT)
            color = fade(color, 1.0 - 0.6 * (t - s) / max(self.hold, 1))
            drawn = put_text(
                tile, event, (x, h // 2), size=13, bold=s == t, color=color, anchor="lm"
            )
            x = drawn[2] + 16
            if x > self.size[1]:
                break
        return tile
