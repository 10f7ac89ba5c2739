"""The one way rlviz writes files: a temp file beside the target, then ``os.replace``.

A crash, a kill or an exception mid-write leaves any previous file intact and no half-written file
under the final name; the temp file is hidden (``.name.*.tmp``) and removed on failure.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

import numpy as np

TEMP_SUFFIX = ".tmp"


def _publishable(tmp: str | os.PathLike) -> None:
    """Give a mkstemp file (private, 0600) the permissions a plain ``open()`` would."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)


@contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temp path beside ``path`` for a writer that takes a file name (ffmpeg, savefig).

    On success the temp file replaces ``path`` in one step; on any exception it is removed.
    ``suffix`` keeps an extension on the temp name for writers that read the format from it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        prefix=f".{path.name}.", suffix=f"{suffix}{TEMP_SUFFIX}", dir=path.parent
    )
    os.close(fd)
    try:
        yield Path(tmp)
        _publishable(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """Open a binary temp file beside ``path``; on success it replaces ``path`` (fsynced)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        yield handle
        handle.flush()
        os.fsync(handle.fileno())


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; returns the path."""
    with atomic_output(path) as handle:
        handle.write(data)
    return Path(path)


def save_json(data: object, path: str | os.PathLike) -> Path:
    """Write ``data`` as indented JSON at ``path`` atomically; returns the path."""
    text = json.dumps(data, indent=2) + "\n"  # fails before touching the disk if not JSON-able
    return atomic_write_bytes(path, text.encode())


def atomic_savez(path: str | os.PathLike, arrays: Mapping[str, np.ndarray]) -> Path:
    """Write ``arrays`` to a compressed ``.npz`` at ``path`` atomically; returns the path."""
    # Writing through a file object stops numpy from appending another ".npz" to the name.
    with atomic_output(path) as handle:
        np.savez_compressed(handle, **arrays)
    return Path(path)


def save_figure(fig, path: str | os.PathLike) -> Path:
    """Write a matplotlib ``fig`` as PNG at ``path`` atomically; returns the path."""
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ValueError(
            f"figures are written as PNG; got path {str(path)!r}, use a name ending in .png"
        )
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png")
    return path


def save_image(image: np.ndarray, path: str | os.PathLike) -> Path:
    """Write a uint8 [H, W, 3] (or [H, W]) array as PNG at ``path`` atomically; returns the path."""
    from PIL import Image

    with atomic_output(path) as handle:
        Image.fromarray(np.ascontiguousarray(image)).save(handle, format="PNG")
    return Path(path)
