"""Colour scales of explanation maps: one scale per episode (or per frame), chunk by chunk.

A leaf of :mod:`rlviz.video`: the episode explainer, the stack timeline, the wrappers and the
explorer all scale maps here.
"""

from __future__ import annotations

import numpy as np

from rlviz.maps import normalize as normalize_map
from rlviz.methods import get_method

NORMALIZE_MODES = ("episode", "frame")
#: Display maps are stored as float16: [0, 1] to 1/2048, half the memory of float32.
MAP_DTYPE = np.float16


def is_signed(method: str) -> bool:
    """Whether ``method``'s maps are signed (diverging colours, [-1, 1])."""
    return bool(getattr(get_method(method), "signed", False))


def normalize_maps(
    raw: np.ndarray, mode: str, signed: bool = False, percentile: float = 99.5, chunk: int = 128
) -> tuple[np.ndarray, tuple[float, float]]:
    """Maps [T, ...] scaled by :func:`rlviz.maps.normalize`, chunk by chunk.

    ``"episode"``: one scale, the ``percentile`` of the episode's magnitudes (as ``normalize``
    computes it), applied to ``chunk`` frames at a time so that normalising a long episode needs
    no whole-episode temporaries beyond one magnitude copy.

    Returns:
        (maps in ``MAP_DTYPE`` [T, ...] in [0, 1] ([-1, 1] if signed), the raw values at the ends
        of the episode's colour scale).
    """
    if mode not in NORMALIZE_MODES:
        raise ValueError(f"normalize={mode!r}; expected one of {NORMALIZE_MODES}")
    raw = np.asarray(raw, dtype=np.float32)
    magnitude = np.abs(raw) if signed else np.maximum(raw, 0)
    high = float(np.percentile(magnitude, percentile, overwrite_input=True)) if raw.size else 0.0
    del magnitude
    out = np.empty(raw.shape, MAP_DTYPE)
    for start in range(0, len(raw), chunk):
        part = raw[start : start + chunk]
        if mode == "episode":
            out[start : start + chunk] = normalize_map(part, signed=signed, scale=np.float32(high))
        else:
            out[start : start + chunk] = normalize_map(
                part, mode="frame", signed=signed, percentile=percentile
            )
    return out, (-high if signed else 0.0, high)


def normalize_stack(
    raw: np.ndarray, mode: str, signed: bool
) -> tuple[np.ndarray, tuple[float, float]]:
    """:func:`normalize_maps` of maps [T, N, H, W] (N maps per step: actions, stack frames), the
    N maps of a step sharing its scale in ``"frame"`` mode."""
    n = raw.shape[0]
    scaled, ranges = normalize_maps(raw.reshape(n, -1, raw.shape[-1]), mode, signed)
    return scaled.reshape(raw.shape), ranges


class EpisodeScale:
    """The top of an episode's colour scale, ``np.percentile(magnitudes, percentile)`` over all
    its maps, from blocks of maps seen one at a time: exact, holding only the magnitudes at or
    above the percentile's rank (0.5% of them at 99.5), so a long episode's raw maps need not be
    in memory at once.

    Args:
        steps: the episode's steps (blocks of maps [n, ...] add up to them).
        signed: magnitudes are |maps| (else max(maps, 0)).
    """

    def __init__(self, steps: int, signed: bool = False, percentile: float = 99.5) -> None:
        self.steps, self.signed, self.percentile = int(steps), bool(signed), percentile
        self.total: int | None = None
        self._keep = 0
        self._top = np.empty(0, np.float32)
        self._seen = 0

    def update(self, raw: np.ndarray) -> None:
        """Add a block of maps [n, ...] (float32)."""
        raw = np.asarray(raw, dtype=np.float32)
        if self.total is None:
            per_step = int(np.prod(raw.shape[1:], dtype=np.int64))
            self.total = self.steps * per_step
            self._keep = self.total - self._rank()[0] if self.total else 0
        magnitude = (np.abs(raw) if self.signed else np.maximum(raw, 0)).ravel()
        self._seen += magnitude.size
        if len(self._top) >= self._keep and self._keep:
            magnitude = magnitude[magnitude >= self._top[0]]  # below the k-th largest: never kept
        top = np.concatenate([self._top, magnitude])
        if len(top) > self._keep:
            top = np.partition(top, len(top) - self._keep)[len(top) - self._keep :]
        # the smallest kept value first: the threshold the next block is filtered with
        self._top = np.partition(top, 0) if len(top) else top

    def _rank(self) -> tuple[int, float]:
        # numpy's "linear" method: virtual index (n - 1) * q, its floor and fraction
        index = (self.total - 1) * np.true_divide(self.percentile, 100)
        low = int(np.floor(index))
        return low, float(index - np.floor(index))

    @property
    def high(self) -> float:
        """The scale's top (0.0 for an empty episode)."""
        if not self.total:
            return 0.0
        if self._seen != self.total:
            raise ValueError(
                f"EpisodeScale saw {self._seen} values of the {self.total} its {self.steps} steps "
                "hold; update it with every block of the episode first"
            )
        low, gamma = self._rank()
        top = np.sort(self._top)
        first = self.total - len(top)  # the rank of top[0] in the sorted episode
        if low >= self.total - 1:
            return float(top[-1])
        a, b = top[low - first], top[low + 1 - first]
        diff = b - a  # numpy's _lerp, in float32 as np.percentile of float32 values computes it
        return float(b - diff * (1 - gamma) if gamma >= 0.5 else a + diff * gamma)


def scale_block(
    raw: np.ndarray, mode: str, signed: bool, high: float, percentile: float = 99.5
) -> np.ndarray:
    """A block of raw maps [n, ...] on the episode's scale ``high`` (``"episode"``) or each
    frame's own (``"frame"``), as :func:`normalize_maps` scales them, in ``MAP_DTYPE``."""
    out = np.empty(raw.shape, MAP_DTYPE)
    for start in range(0, len(raw), 128):
        part = raw[start : start + 128]
        if mode == "episode":
            out[start : start + 128] = normalize_map(part, signed=signed, scale=np.float32(high))
        else:
            out[start : start + 128] = normalize_map(
                part, mode="frame", signed=signed, percentile=percentile
            )
    return out
