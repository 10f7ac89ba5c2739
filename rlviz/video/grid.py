"""Panel layout: an automatic grid of equal cells under a title bar, full-width rows below."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from rlviz.video.draw import BACKGROUND, blank, paste, put_text

if TYPE_CHECKING:
    from rlviz.video.episode import EpisodeExplanation
    from rlviz.video.panels import Panel


def grid_shape(count: int, cell: tuple[int, int], aspect: float = 16 / 9) -> tuple[int, int]:
    """(rows, columns) for ``count`` cells of ``cell`` = (h, w): few empty cells, frame aspect
    near ``aspect``."""
    if count <= 0:
        return (0, 0)
    best, best_score = (1, count), math.inf
    for cols in range(1, count + 1):
        rows = math.ceil(count / cols)
        empty = rows * cols - count
        frame_aspect = (cols * cell[1]) / (rows * cell[0])
        score = 0.5 * empty + abs(math.log(frame_aspect / aspect))
        if score < best_score - 1e-9:
            best, best_score = (rows, cols), score
    return best


class Composer:
    """Arranges panels in an automatic grid under a title bar and renders whole frames.

    Regular panels share a grid of equal cells (the largest tile decides the cell); panels with
    ``wide = True`` (captions, per-action maps) each get a full-width row below the grid. The frame
    size is fixed after :meth:`prepare` and always even (H.264 with yuv420p needs that).

    Args:
        panels: the panels, in reading order.
        title_height: height of the title bar in px (0 for none).
        gap: space between cells in px.
        columns: force the number of grid columns (default: chosen for a ~16:9 frame).
    """

    def __init__(
        self,
        panels: Sequence[Panel],
        *,
        title_height: int = 28,
        gap: int = 4,
        columns: int | None = None,
    ) -> None:
        if not panels:
            raise ValueError("Composer needs at least one panel")
        self.panels = list(panels)
        self.title_height = int(title_height)
        self.gap = int(gap)
        self.columns = columns
        self.size: tuple[int, int] | None = None  # (H, W) after prepare
        self._positions: list[tuple[int, int]] = []
        self._background: np.ndarray | None = None
        self._step_x = 0

    def _layout(self) -> None:
        grid = [p for p in self.panels if not getattr(p, "wide", False)]
        wide = [p for p in self.panels if getattr(p, "wide", False)]
        gap = self.gap
        cell_h = max((p.size[0] for p in grid), default=0)
        cell_w = max((p.size[1] for p in grid), default=0)
        if grid:
            if self.columns:
                cols = min(self.columns, len(grid))
                rows = math.ceil(len(grid) / cols)
            else:
                rows, cols = grid_shape(len(grid), (cell_h, cell_w))
            grid_w = cols * cell_w + (cols + 1) * gap
            grid_h = rows * cell_h + (rows + 1) * gap
        else:
            rows = cols = 0
            grid_w, grid_h = 0, gap
        width = max([grid_w] + [p.size[1] + 2 * gap for p in wide])
        width += width % 2
        for panel in wide:  # stretch full-width rows to the frame, when they can
            fit = getattr(panel, "fit_width", None)
            if fit is not None:
                fit(width - 2 * gap)
        positions: dict[int, tuple[int, int]] = {}
        x_offset = (width - grid_w) // 2
        for i, panel in enumerate(grid):
            r, c = divmod(i, cols)
            y = self.title_height + gap + r * (cell_h + gap) + (cell_h - panel.size[0]) // 2
            x = x_offset + gap + c * (cell_w + gap) + (cell_w - panel.size[1]) // 2
            positions[id(panel)] = (y, x)
        y = self.title_height + grid_h
        for panel in wide:
            positions[id(panel)] = (y, (width - panel.size[1]) // 2)
            y += panel.size[0] + gap
        height = y + (y % 2)
        self.size = (height, width)
        self._positions = [positions[id(p)] for p in self.panels]

    def prepare(self, episode: EpisodeExplanation, title: str = "") -> None:
        """Once per episode: let every panel prepare, fix the layout and draw the static title.

        Args:
            episode: the :class:`rlviz.video.episode.EpisodeExplanation` the frames will show.
            title: left part of the title bar (agent, env, seed); the step is added per frame.
        """
        for panel in self.panels:
            panel.prepare(episode)
        self._layout()
        height, width = self.size
        background = blank(height, width, BACKGROUND)
        if self.title_height:
            put_text(
                background, title, (8, self.title_height // 2), size=14, bold=True, anchor="lm"
            )
        self._background = background
        self._step_x = width - 8

    def frame(self, t: int, episode: EpisodeExplanation) -> np.ndarray:
        """The composed frame for step ``t``: uint8 [H, W, 3] with H and W even."""
        if self._background is None:
            raise RuntimeError("call Composer.prepare(episode) before frame(t, episode)")
        canvas = self._background.copy()
        for panel, (y, x) in zip(self.panels, self._positions, strict=True):
            tile = panel.render(t, episode)
            if tile.shape[:2] != tuple(panel.size):
                raise ValueError(
                    f"{type(panel).__name__}.render returned a {tile.shape[:2]} tile; "
                    f"its size says {tuple(panel.size)}"
                )
            paste(canvas, tile, y, x)
        if self.title_height:
            step = f"step {t + 1:>4d} / {len(episode)}"
            put_text(canvas, step, (self._step_x, self.title_height // 2), size=14, anchor="rm")
        return canvas
