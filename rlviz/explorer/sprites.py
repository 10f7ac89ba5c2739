"""Sprite sheets: a sequence of small uint8 images as one PNG grid, the page's compact frames.

Tile t sits at row ``t // cols``, column ``t % cols``; the page cuts it out with ``drawImage``.
"""

from __future__ import annotations

import base64
import io
import math

import numpy as np

#: Columns of a sheet: 16 tiles of 80 px make a 1280 px wide image, well inside browser limits.
DEFAULT_COLS = 16


def sheet(tiles: np.ndarray, cols: int = DEFAULT_COLS) -> np.ndarray:
    """Tiles uint8 [T, h, w] or [T, h, w, C] as one grid image [rows*h, cols*w(, C)], zero-padded."""
    tiles = np.asarray(tiles)
    if tiles.dtype != np.uint8:
        raise ValueError(f"sprite tiles must be uint8, got {tiles.dtype}; quantise them first")
    if tiles.ndim not in (3, 4) or len(tiles) == 0:
        raise ValueError(
            f"sprite tiles must be [T, h, w] or [T, h, w, C] with T > 0, got {tiles.shape}"
        )
    n, h, w = tiles.shape[:3]
    cols = max(1, min(cols, n))
    rows = math.ceil(n / cols)
    grid = np.zeros((rows * cols, *tiles.shape[1:]), np.uint8)
    grid[:n] = tiles
    grid = grid.reshape(rows, cols, *tiles.shape[1:]).swapaxes(1, 2)
    return grid.reshape(rows * h, cols * w, *tiles.shape[3:])


def png_bytes(image: np.ndarray) -> bytes:
    """A uint8 [H, W] (gray) or [H, W, 3/4] image as PNG bytes (zlib level 9: written once, read often)."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image)).save(buffer, format="PNG", compress_level=9)
    return buffer.getvalue()


def data_url(image: bytes, kind: str = "png") -> str:
    """PNG (or ``kind`` WebP) bytes as a ``data:`` URL. The page reads map pixels back through a
    canvas, which a ``file://`` image would taint; a data URL is same-origin."""
    return f"data:image/{kind};base64," + base64.b64encode(image).decode("ascii")


#: How the map sheets of an explorer report are stored: ``png`` lossless; ``webp`` lossy at
#: :data:`WEBP_QUALITY`; ``auto`` lossless for episodes written whole (<= 256 steps) and lossy
#: for long episodes written in parts.
MAP_CODECS = ("auto", "png", "webp")

#: WebP quality of lossy map sheets. A noisy gradient map (an untrained Atari CNN's: 7.3 bits a
#: pixel of entropy, which no lossless format beats) takes ~3.2x fewer bytes than PNG at a mean
#: error of ~4 / 255 (BENCHMARKS.md, "Long episodes": benchmarks/long_episode.py --codec-error).
WEBP_QUALITY = 60


def map_url(maps: np.ndarray, cols: int, lossy: bool) -> str:
    """Map tiles uint8 [T, h, w] as one sheet's data URL: PNG, or WebP at :data:`WEBP_QUALITY`."""
    grid = sheet(maps, cols)
    if not lossy:
        return data_url(png_bytes(grid))
    from PIL import Image

    buffer = io.BytesIO()
    # method 4 (libwebp's default effort): as fast as PNG here; 6 saves 3% at 3x the time
    Image.fromarray(np.ascontiguousarray(grid)).save(
        buffer, format="WEBP", quality=WEBP_QUALITY, method=4
    )
    return data_url(buffer.getvalue(), "webp")


def quantize(maps: np.ndarray, signed: bool = False) -> np.ndarray:
    """Maps in [0, 1] (``signed``: [-1, 1]) as uint8 (signed: 128 is 0)."""
    m = np.asarray(maps, dtype=np.float32)
    if signed:
        m = (np.clip(m, -1, 1) + 1.0) * 0.5
    return np.clip(np.round(m * 255.0), 0, 255).astype(np.uint8)


def newest_rgb(image: np.ndarray, frames: int = 1) -> np.ndarray:
    """The newest frame of a network-input image uint8 [H, W, K*C] (frames oldest first, as
    feature visualisations come) as RGB uint8 [H, W, 3], for a sheet of frame-sized tiles."""
    from rlviz.layout import ObservationLayout

    image = np.asarray(image)
    channels = image.shape[-1]
    frames = frames if frames > 1 and channels % frames == 0 else 1
    layout = ObservationLayout(frames=frames, channels=channels // frames, order="HWC")
    return layout.display_frames(image[None])[0, -1]
