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
