"""Keep a long render's footprint flat: hand freed heap back to the OS, pin torch's threads."""

from __future__ import annotations

import ctypes
from collections.abc import Iterator
from contextlib import contextmanager

import torch

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


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run the block with ``n`` torch intra-op threads, then restore the caller's setting.

    A rollout makes one batch-1 forward pass per step: too little work to share, and on a busy
    machine OpenMP threads spin-waiting between such passes cost ~10x the pass itself.
    """
    before = torch.get_num_threads()
    if before != n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if before != n:
            torch.set_num_threads(before)
