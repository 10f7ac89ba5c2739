"""Drawing primitives for video frames with numpy and PIL (no matplotlib figure per frame).

Text is rendered once per distinct string into a cached alpha mask and blended in with numpy, so a
frame's labels cost microseconds. Fonts: DejaVu Sans (system, or the copy matplotlib ships) when
found, else PIL's built-in font.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from rlviz.maps import colorize

BACKGROUND = (22, 22, 26)
PANEL_BG = (34, 34, 40)
TEXT = (232, 232, 232)
MUTED = (150, 150, 158)
ACCENT = (255, 196, 0)
GOOD = (80, 200, 120)
BAD = (235, 90, 80)
BAR = (90, 110, 150)
GRID = (60, 60, 70)

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


@lru_cache(maxsize=1024)  # labels repeat (action names, axis ticks); per-step ones (t = 1234) churn
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


def display_frame(obs: np.ndarray) -> np.ndarray:
    """An observation as an RGB image: uint8 [H, W, 3] (grey/stacked frames: the last channel)."""
    obs = np.asarray(obs)
    if obs.ndim == 2:
        obs = obs[:, :, None]
    if obs.ndim != 3:
        raise ValueError(f"expected an image observation [H, W, C], got shape {obs.shape}")
    if obs.shape[0] in (1, 3, 4) and obs.shape[2] not in (1, 3, 4):  # channel-first
        obs = np.moveaxis(obs, 0, -1)
    if obs.dtype != np.uint8:
        scale = 255.0 if obs.max(initial=0) <= 1.0 else 1.0
        obs = np.clip(obs * scale, 0, 255).astype(np.uint8)
    if obs.shape[2] == 3:
        return obs
    if obs.shape[2] == 4:  # RGBA: drop alpha
        return obs[:, :, :3]
    return np.repeat(obs[:, :, -1:], 3, axis=2)  # grey or a frame stack: the newest channel


def colorbar(height: int, width: int, cmap: str | np.ndarray, signed: bool = False) -> np.ndarray:
    """A vertical colour bar, high values on top: uint8 [height, width, 3]."""
    low = -1.0 if signed else 0.0
    ramp = np.linspace(1.0, low, height, dtype=np.float32)[:, None].repeat(width, axis=1)
    return colorize(ramp, cmap, signed=signed)


def _ramp(stops: Sequence[tuple[float, Sequence[int]]]) -> np.ndarray:
    """A uint8 [256, 3] colour table through ``(position in [0, 1], RGB)`` stops."""
    at = np.linspace(0.0, 1.0, 256)
    positions = [p for p, _ in stops]
    table = np.stack([np.interp(at, positions, [c[i] for _, c in stops]) for i in range(3)], axis=1)
    table = np.round(table).astype(np.uint8)
    table.setflags(write=False)
    return table


# Attribution colours chosen away from the scene's own: the goal box is red, the distractors
# yellow, green, purple and blue, the floor black and white. A red-topped scale (inferno's
# middle, RdBu_r's positive half) vanished on the red goal box; cyan does not occur in the room.
#: Unsigned maps (Grad-CAM, occlusion magnitudes): dark teal -> cyan -> white.
ATTRIBUTION_LUT = _ramp([(0.0, (10, 40, 60)), (0.6, (0, 220, 255)), (1.0, (235, 255, 255))])
#: Signed maps, [-1, 1]: magenta (against the action) -> grey -> cyan (for it).
SIGNED_LUT = _ramp([(0.0, (255, 70, 255)), (0.5, (120, 120, 128)), (1.0, (0, 235, 255))])
#: The outline of a map's top mass (>= half its scale), drawn round it on any frame colour.
OUTLINE = (255, 255, 255)


def darken(frame: np.ndarray, amount: float) -> np.ndarray:
    """``frame`` (uint8) at ``amount`` of its brightness: a map drawn over it stands out."""
    return (frame.astype(np.float32) * amount + 0.5).astype(np.uint8)


def outline(image: np.ndarray, mask: np.ndarray, color: Sequence[int] = OUTLINE) -> None:
    """Draw, in place, the 1 px inner border of ``mask`` [H, W] (bool, image-sized) on ``image``."""
    if not mask.any():
        return
    inner = mask.copy()
    inner[1:] &= mask[:-1]
    inner[:-1] &= mask[1:]
    inner[:, 1:] &= mask[:, :-1]
    inner[:, :-1] &= mask[:, 1:]
    image[mask & ~inner] = color


def format_number(value: float) -> str:
    """A short label for an axis or colour-bar end: 3 significant digits, else scientific."""
    if value == 0 or not np.isfinite(value):
        return f"{value:.0f}"
    if 1e-2 <= abs(value) < 1e3:
        return f"{value:.3g}"
    return f"{value:.1e}"


def fade(color: Sequence[int], amount: float, into: Sequence[int] = PANEL_BG) -> tuple[int, ...]:
    """``color`` mixed with ``into``: ``amount`` 1 keeps the colour, 0 gives ``into``."""
    return tuple(int(amount * c + (1 - amount) * b) for c, b in zip(color, into, strict=True))
