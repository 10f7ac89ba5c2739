"""Disk-backed per-step arrays: a long episode's observations and maps live in chunk files, not RAM.

A :class:`Spool` is one temp folder (``rlviz-spool-<pid>-*`` under ``$RLVIZ_TMPDIR`` or the system
temp dir) that holds :class:`StepArray` chunk files. It is removed when the ``with`` block ends,
however it ends (an exception, Ctrl-C, ``SIGTERM`` while it is open), at interpreter exit if
never closed, and a folder left by a killed process (``SIGKILL``: nothing runs) is removed by the
next spool opened on the machine (its pid is gone).

Chunks are written with plain file writes and read back with ``np.load`` one at a time, not
memory-mapped: a mapped page that was touched counts in the process's resident memory until it is
unmapped, so a memmap of a whole episode grows RSS as much as a list would.

:func:`map_large_blocks` and :func:`release_freed_memory` keep the heap flat too: what a chunk
freed goes back to the OS instead of staying in glibc's heap.
"""

from __future__ import annotations

import atexit
import ctypes
import os
import shutil
import signal
import tempfile
import threading
import weakref
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from rlviz.io import pid_alive

#: Steps per chunk file: a chunk of 84x84x4 observations is ~7 MB, of float32 maps ~7-30 MB.
CHUNK_STEPS = 256
_PREFIX = "rlviz-spool-"
_open: weakref.WeakSet[Spool] = weakref.WeakSet()


def spool_root() -> Path:
    """Where spools are made: ``$RLVIZ_TMPDIR``, else the system temp dir."""
    return Path(os.environ.get("RLVIZ_TMPDIR") or tempfile.gettempdir())


def remove_stale(root: Path | None = None) -> list[Path]:
    """Remove spool folders of processes that no longer run (killed before they could clean up)."""
    removed = []
    root = Path(root) if root is not None else spool_root()
    for path in root.glob(_PREFIX + "*"):
        try:
            pid = int(path.name[len(_PREFIX) :].split("-", 1)[0])
        except ValueError:
            continue
        if pid != os.getpid() and not pid_alive(pid):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


class _Sigterm:
    """While a spool is open in the main thread, SIGTERM raises SystemExit (so ``finally`` blocks
    and the spool's cleanup run) instead of ending the process at once; restored after."""

    depth = 0
    previous = None
    lock = threading.Lock()

    @classmethod
    def enter(cls) -> bool:
        if threading.current_thread() is not threading.main_thread():
            return False
        with cls.lock:
            if cls.depth == 0:
                if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
                    return False  # the application handles SIGTERM itself: leave it
                cls.previous = signal.signal(signal.SIGTERM, _raise_exit)
            cls.depth += 1
            return True

    @classmethod
    def leave(cls) -> None:
        with cls.lock:
            cls.depth -= 1
            if cls.depth == 0 and threading.current_thread() is threading.main_thread():
                signal.signal(signal.SIGTERM, cls.previous or signal.SIG_DFL)


def _raise_exit(signum, frame):
    raise SystemExit(128 + signum)


class Spool:
    """A temp folder of per-step chunk files, removed on close (use it as a context manager).

    Args:
        chunk: steps per chunk file of the arrays made here.
        root: parent folder (default :func:`spool_root`).
    """

    def __init__(self, chunk: int = CHUNK_STEPS, root: str | os.PathLike | None = None) -> None:
        if chunk < 1:
            raise ValueError(f"chunk must be >= 1 step, got {chunk}")
        self.chunk = int(chunk)
        root = Path(root) if root is not None else spool_root()
        root.mkdir(parents=True, exist_ok=True)
        remove_stale(root)
        self.path = Path(tempfile.mkdtemp(prefix=f"{_PREFIX}{os.getpid()}-", dir=root))
        self._names: set[str] = set()
        self._signal = _Sigterm.enter()
        _open.add(self)

    def unique(self, stem: str) -> str:
        """``stem`` numbered so that no array made here has the name (``stem1``, ``stem2``...)."""
        self._count = getattr(self, "_count", 0) + 1
        return f"{stem}{self._count}"

    def array(self, name: str, chunk: int | None = None) -> StepArray:
        """A new empty :class:`StepArray` stored here under ``name``."""
        if name in self._names:
            raise ValueError(f"spool array {name!r} exists already")
        self._names.add(name)
        return StepArray(self.path / name, chunk or self.chunk)

    def close(self) -> None:
        """Remove the folder and everything in it (again: nothing)."""
        if self.path is not None:
            shutil.rmtree(self.path, ignore_errors=True)
            self.path = None
            if self._signal:
                _Sigterm.leave()
                self._signal = False

    @property
    def closed(self) -> bool:
        return self.path is None

    def __enter__(self) -> Spool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@atexit.register
def _close_all() -> None:
    for spool in list(_open):
        spool.close()


class _StepReads:
    """Reading shared by :class:`StepArray` and :class:`StepWindow`: a key on the first axis (an
    int, a slice, an integer or bool array, ``...``) is resolved here, then numpy indexing runs on
    the rest. Subclasses read one step ``_step(t)``, a run of steps ``_run(start, stop)`` and a
    list of steps ``_gather(index)``, each index already in range."""

    def __getitem__(self, key):
        rest = ()
        if isinstance(key, tuple):
            key, rest = key[0], key[1:]
        n = len(self)
        if isinstance(key, (int, np.integer)):
            t = int(key) + n if key < 0 else int(key)
            if not 0 <= t < n:
                raise IndexError(f"step {key} out of range for {n} steps")
            return _rest(self._step(t), rest, True)
        if isinstance(key, slice):
            start, stop, step = key.indices(n)
            if step == 1:
                out = self._run(start, max(start, stop))
            else:
                out = self._gather(np.arange(start, stop, step))
        elif key is Ellipsis:
            out = self._run(0, n)
        else:
            index = np.asarray(key)
            if index.dtype == bool:
                index = np.flatnonzero(index)
            index = np.where(index < 0, index + n, index)
            outside = (index < 0) | (index >= n)
            if outside.any():
                bad = np.asarray(key).ravel()[np.flatnonzero(outside.ravel())[0]]
                raise IndexError(f"step {bad} out of range for {n} steps")
            out = self._gather(index)
        return _rest(out, rest, False)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __array__(self, dtype=None, copy=None):
        whole = self._run(0, len(self))
        return whole if dtype is None else whole.astype(dtype, copy=False)

    def __iter__(self) -> Iterator[np.ndarray]:
        for _, block in self.chunks():
            yield from block

    def window(self, start: int, stop: int) -> StepWindow:
        """Steps [start, stop) as a read-only view (no copy)."""
        return StepWindow(self, start, stop)


class StepArray(_StepReads):
    """An array [T, ...] appended one step (or block) at a time and kept in chunk files.

    Reads take ints, slices and integer arrays on the first axis (then numpy indexing on the
    rest) and load only the chunks they touch; the last chunk read stays cached, so a pass in
    step order reads each chunk once. ``np.asarray`` gives the whole array (short episodes).
    """

    def __init__(self, folder: Path, chunk: int = CHUNK_STEPS) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=False)
        self.chunk = int(chunk)
        self._files = 0  # chunk files written
        # the chunk being filled: its first _filled rows. A new block after each flush, so a view
        # read from the old one stays valid; reads of these steps are views, never a restack
        self._block: np.ndarray | None = None
        self._filled = 0
        self._item: tuple[tuple[int, ...], np.dtype] | None = None
        self._cache: tuple[int, np.ndarray] | None = None

    # ---------------------------------------------------------------------------- writing
    def _check_item(self, shape: tuple[int, ...], dtype: np.dtype) -> None:
        """Fix the step shape and dtype on the first write; refuse a step of another later."""
        if self._item is None:
            self._item = (shape, dtype)
        elif (shape, dtype) != self._item:
            raise ValueError(
                f"step of shape {shape} {dtype} added to a StepArray of {self._item[0]} "
                f"{self._item[1]}; every step must have the same shape and dtype"
            )

    def append(self, step) -> None:
        """Add one step."""
        step = np.asarray(step)
        self._check_item(step.shape, step.dtype)
        if self._block is None:
            self._block = np.empty((self.chunk, *step.shape), step.dtype)
        self._block[self._filled] = step
        self._filled += 1
        if self._filled == self.chunk:
            self._flush()

    def extend(self, steps) -> None:
        """Add steps [n, ...] (a block); whole chunks are written straight from it."""
        steps = np.asarray(steps)
        if len(steps) == 0:
            return
        self._check_item(steps.shape[1:], steps.dtype)
        i = 0
        while i < len(steps) and self._filled:  # top up the chunk being filled
            self.append(steps[i])
            i += 1
        while len(steps) - i >= self.chunk:
            self._write(steps[i : i + self.chunk])
            i += self.chunk
        for step in steps[i:]:
            self.append(step)

    def _flush(self) -> None:
        self._write(self._block[: self._filled])
        self._block, self._filled = None, 0

    def _write(self, block: np.ndarray) -> None:
        with open(self.folder / f"{self._files:06d}.npy", "wb") as f:
            np.save(f, block, allow_pickle=False)
        self._files += 1

    def discard(self) -> None:
        """Delete the chunk files now (the array is empty afterwards)."""
        shutil.rmtree(self.folder, ignore_errors=True)
        self.folder.mkdir(parents=True, exist_ok=True)
        self._files, self._block, self._filled, self._cache = 0, None, 0, None

    # ---------------------------------------------------------------------------- reading
    def __len__(self) -> int:
        return self._files * self.chunk + self._filled

    @property
    def item_shape(self) -> tuple[int, ...]:
        return self._item[0] if self._item is not None else ()

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self), *self.item_shape)

    @property
    def dtype(self) -> np.dtype:
        return self._item[1] if self._item is not None else np.dtype(np.float32)

    @property
    def nbytes(self) -> int:
        return len(self) * int(np.prod(self.item_shape, dtype=np.int64)) * self.dtype.itemsize

    def _chunk(self, c: int) -> np.ndarray:
        if c == self._files:
            return self._block[: self._filled] if self._filled else self._empty(0)
        if self._cache is not None and self._cache[0] == c:
            return self._cache[1]
        block = np.load(self.folder / f"{c:06d}.npy", allow_pickle=False)
        self._cache = (c, block)
        return block

    def _empty(self, n: int) -> np.ndarray:
        return np.empty((n, *self.item_shape), self.dtype)

    def chunks(self, start: int = 0, stop: int | None = None) -> Iterator[tuple[int, np.ndarray]]:
        """(first step, block) for each chunk-aligned block of steps [start, stop)."""
        stop = len(self) if stop is None else min(stop, len(self))
        t = start
        while t < stop:
            c = t // self.chunk
            end = min((c + 1) * self.chunk, stop)
            block = self._chunk(c)
            yield t, block[t - c * self.chunk : end - c * self.chunk]
            t = end

    def _step(self, t: int) -> np.ndarray:
        c = t // self.chunk
        return self._chunk(c)[t - c * self.chunk]

    def _run(self, start: int, stop: int) -> np.ndarray:
        parts = [block for _, block in self.chunks(start, stop)]
        if not parts:
            return self._empty(0)
        return parts[0].copy() if len(parts) == 1 else np.concatenate(parts)

    def _gather(self, index: np.ndarray) -> np.ndarray:
        out = self._empty(len(index))
        for i, t in enumerate(index.tolist()):
            out[i] = self._step(t)
        return out


class StepWindow(_StepReads):
    """Steps [start, stop) of a :class:`StepArray` (or another window), read like one."""

    def __init__(self, base, start: int, stop: int) -> None:
        n = len(base)
        start, stop = max(0, min(start, n)), max(0, min(stop, n))
        self.base, self.start, self.stop = base, start, max(start, stop)

    def __len__(self) -> int:
        return self.stop - self.start

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self), *self.base.shape[1:])

    @property
    def dtype(self) -> np.dtype:
        return self.base.dtype

    def chunks(self, start: int = 0, stop: int | None = None) -> Iterator[tuple[int, np.ndarray]]:
        stop = len(self) if stop is None else min(stop, len(self))
        for t, block in self.base.chunks(self.start + start, self.start + stop):
            yield t - self.start, block

    def _step(self, t: int) -> np.ndarray:
        return self.base[self.start + t]

    def _run(self, start: int, stop: int) -> np.ndarray:
        return self.base[self.start + start : self.start + stop]

    def _gather(self, index: np.ndarray) -> np.ndarray:
        return self.base[index + self.start]


def _rest(out: np.ndarray, rest: tuple, single: bool) -> np.ndarray:
    """Index what the first axis selected with the rest of a tuple key."""
    if not rest:
        return out
    return out[rest] if single else out[(slice(None), *rest)]


def window(array, start: int, stop: int):
    """Steps [start, stop) of an array, StepArray or window (numpy: a view)."""
    if isinstance(array, (StepArray, StepWindow)):
        return array.window(start, stop)
    return array[start:stop]


def blocks(array, size: int, start: int = 0, stop: int | None = None):
    """(first step, block) over [start, stop) in blocks of ``size`` steps (numpy or StepArray)."""
    stop = len(array) if stop is None else min(stop, len(array))
    for t in range(start, stop, size):
        yield t, np.asarray(array[t : min(t + size, stop)])


_LIBC = None


#: glibc mallopt's M_MMAP_THRESHOLD; blocks at least this big are mapped and unmapped on free.
_M_MMAP_THRESHOLD = -3
#: 1 MB: a chunk's maps and activations (MBs each) are mapped, small objects stay in the heap.
MMAP_THRESHOLD = 1 << 20


def _libc():
    global _LIBC
    if _LIBC is None:
        try:
            _LIBC = ctypes.CDLL("libc.so.6")
            _LIBC.malloc_trim  # noqa: B018  (raises AttributeError off glibc)
        except (OSError, AttributeError):
            _LIBC = False
    return _LIBC


def map_large_blocks() -> None:
    """Make glibc map every block of :data:`MMAP_THRESHOLD` or more and unmap it when freed.

    By default glibc raises its mapping threshold each time a mapped block is freed (up to
    32 MB), so a long episode's chunk-sized arrays end up carved out of the heap, which then
    fragments and grows with the number of chunks: peak memory would creep up with episode
    length although each chunk is freed. A fixed threshold keeps it flat. Process-wide; a
    no-op off glibc.
    """
    libc = _libc()
    if libc:
        libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)


def release_freed_memory() -> None:
    """Hand freed heap memory back to the OS (glibc ``malloc_trim``; a no-op elsewhere).

    glibc keeps freed blocks of a few MB (an episode's temporary maps) in the heap, so resident
    memory would creep up with episode length although the data is gone; trimming between the
    stages of an episode keeps the process's footprint at what it really holds.
    """
    libc = _libc()
    if libc:
        libc.malloc_trim(0)
