"""The policy's output at step t: pi(a | s) per action, or a Box policy's mean, std and action."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from rlviz.video.draw import ACCENT, BAR, GRID, MUTED, TEXT, put_text, text_width
from rlviz.video.panels.base import HEADER, TILE, Panel

if TYPE_CHECKING:
    from rlviz.video.episode import EpisodeExplanation


class ActionPanel(Panel):
    """Bars of pi(a | s_t) per action; the action taken is highlighted, the entropy printed."""

    def __init__(self, size: tuple[int, int] = TILE, title: str = "Policy  \u03c0(a | s)") -> None:
        super().__init__(size, title)
        self._rows: list[int] = []
        self._bar = (0, 0, 0)

    def prepare(self, episode: EpisodeExplanation) -> None:
        tile = self._header_tile()
        names = episode.action_names
        n = len(names)
        label_w = max(text_width(name, 12) for name in names) + 12
        top, bottom = HEADER + 10, self.size[0] - 26
        row_h = max(12, (bottom - top) // max(n, 1))
        bar_h = int(min(26, row_h * 0.7))
        x0, x1 = 8 + label_w, self.size[1] - 48
        self._rows = [top + i * row_h + (row_h - bar_h) // 2 for i in range(n)]
        self._bar = (x0, x1, bar_h)
        for name, y in zip(names, self._rows, strict=True):
            put_text(tile, name, (x0 - 8, y + bar_h // 2), size=12, anchor="rm")
            tile[y : y + bar_h, x0:x1] = GRID
        self._base = tile

    def render(self, t: int, episode: EpisodeExplanation) -> np.ndarray:
        if episode.rollout.continuous:
            return self._render_box(t, episode)
        tile = self._require_prepared().copy()
        probs = episode.rollout.probs[t]
        taken = int(episode.rollout.actions[t]) if t < len(episode.rollout.actions) else -1
        x0, x1, bar_h = self._bar
        for k, y in enumerate(self._rows):
            p = float(probs[k])
            chosen = k == taken
            tile[y : y + bar_h, x0 : x0 + int(round(p * (x1 - x0)))] = ACCENT if chosen else BAR
            at = (x1 + 6, y + bar_h // 2)
            put_text(
                tile, f"{p:.2f}", at, color=ACCENT if chosen else TEXT, bold=chosen, anchor="lm"
            )
        p = np.clip(probs.astype(np.float64), 1e-12, 1.0)
        entropy = float(-(p * np.log(p)).sum())
        label = episode.action_names[taken] if taken >= 0 else "?"
        taken_note = f"{episode.meta.get('action_label', 'taken')}: {label}"
        return self._footer(tile, taken_note, f"entropy {entropy:.2f} nats")

    def _render_box(self, t: int, episode: EpisodeExplanation) -> np.ndarray:
        """A Box policy: per dimension, a bar from 0 to the mean, a whisker of mean +/- std and a
        tick at the action taken, on one symmetric scale for the whole episode."""
        tile = self._require_prepared().copy()
        rollout = episode.rollout
        mean = rollout.action_mean[t]
        std = rollout.action_std[t] if rollout.action_std is not None else np.zeros_like(mean)
        taken = rollout.actions[t] if t < len(rollout.actions) else mean
        spread = rollout.action_std if rollout.action_std is not None else 0.0
        top = float(np.max(np.abs(rollout.action_mean) + spread, initial=1.0))
        x0, x1, bar_h = self._bar
        mid, half = (x0 + x1) // 2, (x1 - x0) / 2

        def at(v: float) -> int:
            return int(np.clip(round(mid + v / top * half), x0, x1 - 1))

        for d, y in enumerate(self._rows):
            m, s = float(mean[d]), float(std[d])
            lo, hi = sorted((mid, at(m)))
            tile[y : y + bar_h, lo : hi + 1] = BAR
            tile[y + bar_h // 2, at(m - s) : at(m + s) + 1] = TEXT  # the +/- std whisker
            tile[y : y + bar_h, mid] = MUTED
            a = at(float(np.asarray(taken).reshape(-1)[d]))
            tile[y : y + bar_h, max(a - 1, x0) : a + 2] = ACCENT
            put_text(tile, f"{m:+.2f}", (x1 + 6, y + bar_h // 2), size=12, anchor="lm")
        return self._footer(tile, "mean ± std, | taken", f"scale ±{top:.2f}")

    def _footer(self, tile: np.ndarray, left: str, right: str) -> np.ndarray:
        """The bottom line: what was taken (left, accent colour) and a summary (right, muted)."""
        h, w = self.size
        put_text(tile, left, (8, h - 6), size=12, color=ACCENT, anchor="lb")
        put_text(tile, right, (w - 8, h - 6), size=11, color=MUTED, anchor="rb")
        return tile
