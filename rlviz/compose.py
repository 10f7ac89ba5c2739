"""Lay panel tiles out into video frames with numpy and PIL (no matplotlib figure per frame).

Text is rendered once per distinct string into a cached alpha mask and blended in with numpy, so a
frame's labels cost microseconds. Fonts: DejaVu Sans (system, or the copy matplotlib ships) when
found, else PIL's built-in font.
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageDraw, ImageFont

if TYPE_CHECKING:
    from rlviz.panels import Panel

BACKGROUND = (22, 22, 26)
PANEL_BG = (34, 34, 40)
TEXT = (232, 232, 232)
MUTED = (150, 150, 158)
ACCENT = (255, 196, 0)

_FONT_FILES = {False: "DejaVuSans.ttf", True: "DejaVuSans-Bold.ttf"}
_SYSTEM_FONT_DIRS = (
    "/usr/share/fonts/truetype/dejavu",
    "/usr/share/fonts/dejavu",
    "/usr/share/fonts/TTF",
)


def _font_paths(bold: bool) -> list[Path]:
    name = _FONT_FILES[bold]
    paths = [Path(d) / name for d in _SYSTEM_FONT_DIRS]
    spec = importlib.util.find_spec("matplotlib")  # locate without importing matplotlib
    if spec is not None and spec.origin:
        paths.append(Path(spec.origin).parent / "mpl-data" / "fonts" / "ttf" / name)
    return paths


@lru_cache(maxsize=32)
def get_font(size: int = 12, bold: bool = False) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """A font of ``size`` px: DejaVu Sans if any copy is found, else PIL's default font."""
    for path in _font_paths(bold):
        if path.is_file():
            try:
                return ImageFont.truetype(str(path), size)
            except OSError:  # unreadable or not a font: try the next
                continue
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has no sized default font
        return ImageFont.load_default()


@lru_cache(maxsize=4096)
def text_mask(text: str, size: int = 12, bold: bool = False) -> np.ndarray:
    """Coverage of ``text`` drawn in the font of ``size``: float32 [h, w] in [0, 1] (cached)."""
    font = get_font(size, bold)
    left, top, right, bottom = font.getbbox(text or " ")
    width, height = max(1, right - min(left, 0)), max(1, bottom - min(top, 0))
    img = Image.new("L", (width, height), 0)
    ImageDraw.Draw(img).text((-min(left, 0), -min(top, 0)), text, fill=255, font=font)
    mask = np.asarray(img, dtype=np.float32) / 255.0
    mask.flags.writeable = False
    return mask


def text_width(text: str, size: int = 12, bold: bool = False) -> int:
    """Width in pixels of ``text`` as :func:`put_text` draws it."""
    return int(text_mask(text, size, bold).shape[1])


def put_text(
    canvas: np.ndarray,
    text: str,
    xy: tuple[int, int],
    *,
    size: int = 12,
    color: Sequence[int] = TEXT,
    bold: bool = False,
    anchor: str = "lt",
) -> tuple[int, int, int, int]:
    """Blend ``text`` into ``canvas`` (uint8 [H, W, 3], in place), clipped to the canvas.

    ``anchor``: horizontal ``l``/``m``/``r`` + vertical ``t``/``m``/``b`` of ``xy`` = (x, y).

    Returns:
        The (x0, y0, x1, y1) box the text covers.
    """
    mask = text_mask(text, size, bold)
    h, w = mask.shape
    x, y = int(xy[0]), int(xy[1])
    x -= {"l": 0, "m": w // 2, "r": w}[anchor[0]]
    y -= {"t": 0, "m": h // 2, "b": h}[anchor[1]]
    x0, y0 = max(x, 0), max(y, 0)
    x1, y1 = min(x + w, canvas.shape[1]), min(y + h, canvas.shape[0])
    if x1 <= x0 or y1 <= y0:
        return (x, y, x + w, y + h)
    alpha = mask[y0 - y : y1 - y, x0 - x : x1 - x, None]
    region = canvas[y0:y1, x0:x1].astype(np.float32)
    region += alpha * (np.asarray(color, np.float32) - region)
    canvas[y0:y1, x0:x1] = region.astype(np.uint8)
    return (x, y, x + w, y + h)


def blank(height: int, width: int, color: Sequence[int] = PANEL_BG) -> np.ndarray:
    """A uint8 [height, width, 3] image filled with ``color``."""
    return np.full((height, width, 3), np.asarray(color, np.uint8), dtype=np.uint8)


def upscale(image: np.ndarray, factor: int) -> np.ndarray:
    """Nearest-neighbour upscale by an integer ``factor``: [h, w, ...] -> [h*f, w*f, ...]."""
    if factor == 1:
        return image
    return np.repeat(np.repeat(image, factor, axis=0), factor, axis=1)


def fit_nearest(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Nearest-neighbour resize of ``image`` [h, w, ...] to [height, width, ...] (index lookup)."""
    rows = (np.arange(height) * image.shape[0] // height).clip(0, image.shape[0] - 1)
    cols = (np.arange(width) * image.shape[1] // width).clip(0, image.shape[1] - 1)
    return image[rows[:, None], cols[None, :]]


def paste(canvas: np.ndarray, tile: np.ndarray, y: int, x: int) -> None:
    """Copy ``tile`` into ``canvas`` with its top-left corner at (y, x), clipped (in place)."""
    h = min(tile.shape[0], canvas.shape[0] - y)
    w = min(tile.shape[1], canvas.shape[1] - x)
    if h > 0 and w > 0:
        canvas[y : y + h, x : x + w] = tile[:h, :w]


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

    def prepare(self, episode, title: str = "") -> None:
        """Once per episode: let every panel prepare, fix the layout and draw the static title.

        Args:
            episode: the :class:`rlviz.render.EpisodeExplanation` the frames will show.
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

    def frame(self, t: int, episode) -> np.ndarray:
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
            total = len(episode)
            put_text(
                canvas,
                f"step {t + 1:>4d} / {total}",
                (self._step_x, self.title_height // 2),
                size=14,
                anchor="rm",
            )
        return canvas
