"""Curves over the whole episode with a cursor at step t: value and reward (:class:`ValuePanel`),
memory reliance (:class:`MemoryPanel`, policies with memory only)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageDraw

from rlviz.video.draw import ACCENT, BAD, GOOD, GRID, MUTED, PANEL_BG, format_number, put_text
from rlviz.video.panels.base import HEADER, TILE, Panel

if TYPE_CHECKING:
    from rlviz.video.episode import EpisodeExplanation

SHARE_COLOUR = (255, 170, 60)
KL_COLOUR = (120, 200, 255)
VALUE_COLOUR = (110, 180, 255)
#: Nats at the top of the KL axis at least (KL below ~0.1 nats hardly changes the action).
KL_FLOOR = 0.1


class TimePlot(Panel):
    """A plot over the episode's steps: the past in full colour, a cursor at step t, the future
    faded, and the values at t written under the plot (:meth:`caption`).

    ``prepare`` draws the whole plot into the area ``self._plot`` = (x0, x1, y0, y1) for
    ``self._horizon`` steps: a frame (:meth:`_frame`), its curves, then labels and legend
    (:meth:`_finish`, which keeps the tile).
    """

    def __init__(self, size: tuple[int, int], title: str) -> None:
        super().__init__(size, title)
        self._dim: np.ndarray | None = None
        self._plot = (0, 0, 0, 0)
        self._horizon = 2

    def _frame(self, guide_y: float) -> tuple[Image.Image, ImageDraw.ImageDraw]:
        """The header tile as an image to draw on: the plot's frame, a guide line at ``guide_y``."""
        x0, x1, y0, y1 = self._plot
        img = Image.fromarray(self._header_tile())
        draw = ImageDraw.Draw(img)
        draw.rectangle([x0, y0, x1, y1], outline=GRID)
        draw.line([(x0, guide_y), (x1, guide_y)], fill=GRID)
        return img, draw

    def _finish(self, img: Image.Image, labels: list, legend: list) -> None:
        """Write the ``labels`` ((text, (x, y), anchor): small, muted) and the ``legend`` ((text,
        colour), right to left in the header) on the drawn tile, and keep it."""
        bright = np.asarray(img).copy()
        for text, xy, anchor in labels:
            put_text(bright, text, xy, size=10, color=MUTED, anchor=anchor)
        x = self.size[1] - 8
        for text, colour in legend:
            x = put_text(bright, text, (x, HEADER // 2), size=11, color=colour, anchor="rm")[0] - 10
        self._keep(bright)

    def _keep(self, bright: np.ndarray) -> None:
        """Keep the drawn tile and a copy with the plot area faded: how the future looks."""
        x0, x1, y0, y1 = self._plot
        area = (slice(y0 + 1, y1), slice(x0 + 1, x1))
        dim = bright.copy()
        inner = dim[area].astype(np.float32)
        dim[area] = (0.35 * inner + 0.65 * np.asarray(PANEL_BG)).astype(np.uint8)
        self._base, self._dim = bright, dim

    def caption(self, t: int, episode: EpisodeExplanation) -> str:
        """The values at step ``t``, written under the plot."""
        raise NotImplementedError

    def render(self, t: int, episode: EpisodeExplanation) -> np.ndarray:
        bright = self._require_prepared()
        x0, x1, y0, y1 = self._plot
        cursor = int(round(x0 + (x1 - x0) * t / (self._horizon - 1)))
        tile = self._dim.copy()
        tile[:, : cursor + 1] = bright[:, : cursor + 1]
        tile[y0:y1, max(cursor - 1, 0) : cursor + 1] = ACCENT
        put_text(tile, self.caption(t, episode), (x0, self.size[0] - 6), size=12, anchor="lb")
        return tile


class ValuePanel(TimePlot):
    """V(s_t) and rewards over the episode with a moving cursor; the future is dimmed."""

    def __init__(self, size: tuple[int, int] = TILE, title: str = "Value and reward") -> None:
        super().__init__(size, title)

    def prepare(self, episode: EpisodeExplanation) -> None:
        rollout = episode.rollout
        h, w = self.size
        # Room below for the step axis's labels and the value line; a small tile keeps the
        # plot (ticks only, no labels) rather than a negative height.
        labelled = h - 40 - (HEADER + 8) >= 24
        x0, x1, y0 = 40, w - 10, HEADER + 8
        y1 = h - 40 if labelled else max(y0 + 1, h - 30)
        self._plot = (x0, x1, y0, y1)
        horizon = max(int(episode.horizon or len(episode)), 2)
        self._horizon = horizon
        values = rollout.values
        rewards = rollout.rewards
        series = [rewards] if values is None else [values, rewards]
        lo = min(float(np.min(s)) for s in series if len(s)) if len(rewards) else 0.0
        hi = max(float(np.max(s)) for s in series if len(s)) if len(rewards) else 1.0
        lo, hi = min(lo, 0.0), max(hi, 1e-6)
        pad = 0.08 * (hi - lo)
        lo, hi = lo - pad, hi + pad

        def px(t: np.ndarray, v: np.ndarray) -> list[tuple[float, float]]:
            xs = x0 + (x1 - x0) * t / (horizon - 1)
            ys = y1 - (y1 - y0) * (v - lo) / (hi - lo)
            return list(zip(xs.tolist(), ys.tolist(), strict=True))

        img, draw = self._frame(px(np.array([0.0]), np.array([0.0]))[0][1])
        steps = np.arange(len(rollout), dtype=np.float64)
        if values is not None and len(values) > 1:
            draw.line(px(steps, values.astype(np.float64)), fill=VALUE_COLOUR, width=2)
        for t in np.flatnonzero(rewards != 0):
            (x, y), (_, yz) = px(np.array([t, t]), np.array([rewards[t], 0.0]))
            color = GOOD if rewards[t] > 0 else BAD
            draw.line([(x, yz), (x, y)], fill=color, width=2)
            draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=color)
        for step in (0, (horizon - 1) // 2, horizon - 1):  # the time axis: steps
            x = px(np.array([float(step)]), np.array([0.0]))[0][0]
            draw.line([(x, y1), (x, y1 + 3)], fill=MUTED)
        labels = [(format_number(hi - pad), (x0 - 4, y0), "rt")]
        labels.append((format_number(lo + pad), (x0 - 4, y1), "rb"))
        if labelled:  # the time axis's steps
            mid = (horizon - 1) // 2
            mid_x = px(np.array([float(mid)]), np.array([0.0]))[0][0]
            labels += [("0", (x0, y1 + 4), "lt"), (f"step {mid}", (mid_x, y1 + 4), "mt")]
            labels.append((str(horizon - 1), (x1, y1 + 4), "rt"))
        legend = [("reward", GOOD)] + ([("V(s)", VALUE_COLOUR)] if values is not None else [])
        self._finish(img, labels, legend)

    def caption(self, t: int, episode: EpisodeExplanation) -> str:
        rollout = episode.rollout
        ret = float(rollout.rewards[: t + 1].sum())
        value = "" if rollout.values is None else f"V={rollout.values[t]:+.2f}   "
        return f"{value}r={rollout.rewards[t]:+.2f}   return={ret:.2f}"


class MemoryPanel(TimePlot):
    """Memory reliance over the episode with a moving cursor; the future is dimmed.

    Two traces from ``episode.memory`` (:func:`rlviz.memory.memory_reliance`): the share of the
    attribution mass on the memory (past frames or recurrent state), in [0, 1], and
    KL(pi(.|s_t) || pi without memory), scaled to the episode's largest KL.
    """

    def __init__(self, size: tuple[int, int] = TILE, title: str = "Memory reliance") -> None:
        super().__init__(size, title)

    def available(self, episode: EpisodeExplanation) -> bool:
        return episode.memory is not None

    def prepare(self, episode: EpisodeExplanation) -> None:
        memory = episode.memory
        if memory is None:
            raise ValueError("MemoryPanel needs episode.memory (policies with memory only)")
        h, w = self.size
        x0, x1, y0, y1 = 34, w - 10, HEADER + 8, h - 30
        self._plot = (x0, x1, y0, y1)
        self._horizon = horizon = max(int(episode.horizon or len(episode)), 2)
        # A floor keeps a policy that barely uses its memory flat at the bottom, not noise
        # stretched to the full height.
        self._kl_top = max(float(np.max(memory.kl, initial=0.0)), KL_FLOOR)
        steps = np.arange(len(memory), dtype=np.float64)

        def px(v: np.ndarray) -> list[tuple[float, float]]:
            xs = x0 + (x1 - x0) * steps / (horizon - 1)
            ys = y1 - (y1 - y0) * np.clip(v, 0.0, 1.0)
            return list(zip(xs.tolist(), ys.tolist(), strict=True))

        img, draw = self._frame((y0 + y1) / 2)
        if len(memory) > 1:
            draw.line(px(memory.kl.astype(np.float64) / self._kl_top), fill=KL_COLOUR, width=2)
            draw.line(px(memory.share.astype(np.float64)), fill=SHARE_COLOUR, width=2)
        labels = [("1", (x0 - 4, y0), "rt"), ("0", (x0 - 4, y1), "rb")]
        kl_label = f"KL (top {format_number(self._kl_top)} nats)"
        self._finish(img, labels, [(kl_label, KL_COLOUR), ("share", SHARE_COLOUR)])

    def caption(self, t: int, episode: EpisodeExplanation) -> str:
        memory = episode.memory
        return f"memory share {float(memory.share[t]):.2f}   KL {float(memory.kl[t]):.3f} nats"
