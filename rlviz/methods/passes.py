"""How a method's work is cut into network passes: ``frames`` x ``jobs`` images (path steps,
noise draws, windows) in rectangular blocks of at most ``pass_size`` images, each written into
one reused input buffer."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from rlviz.targets import Target, subset_target


def job_blocks(frames: int, per_frame: int, pass_size: int) -> Iterator[tuple[slice, slice]]:
    """Split ``frames`` x ``per_frame`` jobs (path steps, noise draws, windows) into passes.

    Each pass is a rectangular block: whole frames with all their jobs when a frame fits in a pass,
    else one frame with a run of its jobs. Blocks let methods build a pass's inputs with one
    broadcast op ([frames, jobs, C, H, W]) instead of gathering rows.

    Yields:
        (frame slice, job slice), covering every (frame, job) pair once, with at most
        ``pass_size`` pairs per block.
    """
    if per_frame <= pass_size:
        step = pass_size // per_frame
        for start in range(0, frames, step):
            yield slice(start, min(start + step, frames)), slice(0, per_frame)
    else:
        for frame in range(frames):
            for start in range(0, per_frame, pass_size):
                yield slice(frame, frame + 1), slice(start, min(start + pass_size, per_frame))


class PassBuffer:
    """One input buffer reused by every pass of a call (and by later calls on the same thread).

    A fresh tensor per pass costs page faults on first touch (tens of MB of new memory each time)
    that can rival a small network's forward pass; writing each pass into the same memory avoids
    them. ``block(k, j)`` is a contiguous [k, j, C, H, W] view to fill with one broadcast op
    (``out=``) and hand to the network as ``.flatten(0, 1)``. Use it through :func:`pass_buffer`.
    """

    def __init__(self, data: torch.Tensor) -> None:
        self.data = data

    def block(self, k: int, j: int) -> torch.Tensor:
        """The first k x j images as [k, j, C, H, W] (contiguous)."""
        return self.data[: k * j].view(k, j, *self.data.shape[1:])


_WORKSPACE = threading.local()


@contextmanager
def pass_buffer(
    x: torch.Tensor, frames: int, per_frame: int, pass_size: int
) -> Iterator[PassBuffer]:
    """A :class:`PassBuffer` big enough for the largest block :func:`job_blocks` yields.

    The memory is kept per thread (at most ``pass_size`` images of the last frame shape, i.e.
    up to a few x DEFAULT_PASS_ELEMENTS floats by default) and lent to one user at a time; a
    nested user gets fresh memory.
    """
    images = min(pass_size, frames * per_frame)
    cached = getattr(_WORKSPACE, "data", None)
    busy = getattr(_WORKSPACE, "busy", False)
    fits = (
        cached is not None
        and cached.shape[1:] == x.shape[1:]
        and cached.dtype == x.dtype
        and cached.device == x.device
        and cached.shape[0] >= images
    )
    if busy:
        yield PassBuffer(x.new_empty(images, *x.shape[1:]))
        return
    if not fits:
        _WORKSPACE.data = None  # let the old buffer go before making the new one
        _WORKSPACE.data = cached = x.new_empty(images, *x.shape[1:])
    _WORKSPACE.busy = True
    try:
        yield PassBuffer(cached)
    finally:
        _WORKSPACE.busy = False


def block_rows(frames: slice, jobs: int) -> torch.Tensor:
    """The frame of each of a block's images: frame f repeated for each of its ``jobs``."""
    return torch.arange(frames.start, frames.stop).repeat_interleave(jobs)


def block_target(target: Target, frames: slice, jobs: int) -> Target:
    """``target`` for a block's images: frame f's entry repeated for each of its ``jobs``."""
    return subset_target(target, block_rows(frames, jobs))


@dataclass(frozen=True)
class Block:
    """One network pass of a chunk: jobs ``jobs`` of each frame in ``frames`` (the slices of
    :func:`job_blocks`), built in ``images``, a contiguous buffer view [frames, jobs, C, H, W] to
    fill (``out=``) and hand to the network as ``.flatten(0, 1)``."""

    frames: slice
    jobs: slice
    images: torch.Tensor

    @property
    def jobs_per_frame(self) -> int:
        return self.jobs.stop - self.jobs.start

    @property
    def rows(self) -> torch.Tensor:
        """The frame of each of the pass's images (it reads that frame's recurrent state)."""
        return block_rows(self.frames, self.jobs_per_frame)

    def target(self, target: Target) -> Target:
        """``target`` for the pass's images: each frame's entry repeated for each of its jobs."""
        return block_target(target, self.frames, self.jobs_per_frame)
