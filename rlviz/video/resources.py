"""Keep a long render's footprint flat: hand freed heap back to the OS, pin torch's threads."""

from __future__ import annotations

import ctypes
from collections.abc import Iterator
from contextlib import contextmanager

import torch

_LIBC = None


def release_freed_memory() -> None:
    """Hand freed heap memory back to the OS (glibc ``malloc_trim``; a no-op elsewhere).

    glibc keeps freed blocks of a few MB (an episode's temporary maps) in the heap, so resident
    memory would creep up with episode length although the data is gone; trimming between the
    stages of an episode keeps the process's footprint at what it really holds.
    """
    global _LIBC
    if _LIBC is None:
        try:
            _LIBC = ctypes.CDLL("libc.so.6")
            _LIBC.malloc_trim  # noqa: B018  (raises AttributeError off glibc)
        except (OSError, AttributeError):
            _LIBC = False
    if _LIBC:
        _LIBC.malloc_trim(0)


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
