"""The fitted state map (t-SNE or PCA) with the current state and its recent trail."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageDraw

from rlviz.maps import colorize
from rlviz.video.draw import ACCENT, MUTED, PANEL_BG, fade, format_number, put_text
from rlviz.video.panels.base import HEADER, TILE, Panel

if TYPE_CHECKING:
    from rlviz.video.episode import EpisodeExplanation


class EmbeddingPanel(Panel):
    """The fitted t-SNE (or PCA) map of states, with the current state and its recent trail.

    The background (every fitted state, coloured by its stored value when there is one) is drawn
    once; each frame draws only the trail of the last ``trail`` states and the current one.
    """

    def __init__(
        self, trail: int = 20, size: tuple[int, int] = TILE, title: str = "State map (t-SNE)"
    ) -> None:
        super().__init__(size, title)
        self.trail = int(trail)
        self._pixels: np.ndarray | None = None

    def available(self, episode: EpisodeExplanation) -> bool:
        return episode.embedding is not None and episode.embedding_xy is not None

    def _to_px(self, unit: np.ndarray) -> np.ndarray:
        h, w = self.size
        x0, x1, y0, y1 = 8, w - 8, HEADER + 4, h - 8
        return np.stack([x0 + unit[:, 0] * (x1 - x0), y1 - unit[:, 1] * (y1 - y0)], 1)

    def prepare(self, episode: EpisodeExplanation) -> None:
        embedding = episode.embedding
        if embedding is None or episode.embedding_xy is None:
            raise ValueError("EmbeddingPanel needs episode.embedding and episode.embedding_xy")
        self.title = f"State map ({'t-SNE' if embedding.method == 'tsne' else 'PCA'})"
        tile = self._header_tile()
        bg = embedding.background()
        pts = self._to_px(embedding.to_unit(bg["xy"]))
        values = bg.get("values")
        if values is not None and np.ptp(values) > 0:
            v = (np.asarray(values, np.float32) - np.min(values)) / np.ptp(values)
            colors = self._faded(colorize(v[None, None, :], "viridis")[0, 0])
            self._value_bar(tile, float(np.min(values)), float(np.max(values)))
        else:
            colors = np.broadcast_to(np.asarray((95, 95, 110), np.uint8), (len(pts), 3))
        ij = np.round(pts).astype(np.int64)
        for dy in (0, 1):  # 2x2 px dots, vectorised
            for dx in (0, 1):
                yy = (ij[:, 1] + dy).clip(0, self.size[0] - 1)
                xx = (ij[:, 0] + dx).clip(0, self.size[1] - 1)
                tile[yy, xx] = colors
        self._base = tile
        self._pixels = self._to_px(embedding.to_unit(episode.embedding_xy))

    @staticmethod
    def _faded(colors: np.ndarray) -> np.ndarray:
        """Dot colours mixed into the panel (the trail and the cursor stay on top)."""
        return (
            0.55 * np.asarray(colors, np.float32)[..., :3] + 0.45 * np.asarray(PANEL_BG)
        ).astype(np.uint8)

    def _value_bar(self, tile: np.ndarray, low: float, high: float) -> None:
        """The dots' colour scale in the header: "V(s)  low [bar] high", right-aligned."""
        width, y = 70, HEADER // 2
        ramp = np.linspace(0.0, 1.0, width, dtype=np.float32)[None, :].repeat(6, axis=0)
        bar = self._faded(colorize(ramp, "viridis"))
        right = put_text(
            tile, format_number(high), (self.size[1] - 6, y), size=10, color=MUTED, anchor="rm"
        )
        x = right[0] - 4 - width
        tile[y - 3 : y + 3, x : x + width] = bar
        left = put_text(tile, format_number(low), (x - 4, y), size=10, color=MUTED, anchor="rm")
        put_text(tile, "V(s)", (left[0] - 6, y), size=10, color=MUTED, anchor="rm")

    def render(self, t: int, episode: EpisodeExplanation) -> np.ndarray:
        tile = self._require_prepared()
        img = Image.fromarray(tile)
        draw = ImageDraw.Draw(img)
        start = max(0, t - self.trail)
        trail = [tuple(p) for p in self._pixels[start : t + 1].tolist()]
        n = len(trail)
        for i in range(1, n):  # older segments fade into the background
            draw.line([trail[i - 1], trail[i]], fill=fade((255, 255, 255), i / n), width=2)
        x, y = trail[-1]
        draw.ellipse([x - 5, y - 5, x + 5, y + 5], fill=ACCENT, outline=(0, 0, 0))
        return np.asarray(img).copy()
