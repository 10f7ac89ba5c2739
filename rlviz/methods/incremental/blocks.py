"""Composite ops: a run of ops (a residual branch) and torchvision-style residual blocks."""

from __future__ import annotations

import torch
from torch import nn

from rlviz.methods.incremental.ops import Box, Op, Unsupported, compose, nhwc


class Sequence(Op):
    """Ops run one after the other (a residual branch)."""

    kind = "sequence"

    def __init__(self, name: str, ops: list[Op]) -> None:
        self.name, self.ops = name, ops
        self.macs = sum(op.macs for op in ops)

    def full(self, h):
        for op in self.ops:
            h = op.full(h)
        return h

    def clean(self, h):
        for op in self.ops:
            h = op.clean(h)
        return h

    def out_size(self, in_size):
        for op in self.ops:
            in_size = op.out_size(in_size)
        return in_size

    def boxes(self, box: Box) -> list[Box]:
        out = [box]
        for op in self.ops:
            out.append(op.grow(out[-1]))
        return out

    def grow(self, box):
        return self.boxes(box)[-1]

    def run(self, values, boxes: list[Box], frames, index):
        for op, box_in, box_out in zip(self.ops, boxes, boxes[1:], strict=False):
            values = op.step(values, box_in.take(index), box_out.take(index), frames)
        return values

    def release(self):
        for op in self.ops:
            op.release()


class Residual(Op):
    """``post(main(x) + shortcut(x))`` (torchvision's BasicBlock / Bottleneck): the output box is
    the hull of the two branches' boxes."""

    kind = "residual"

    def __init__(self, name: str, module: nn.Module, main: Sequence, shortcut: Sequence, post: Op):
        self.name, self.module = name, module
        self.main, self.shortcut, self.post = main, shortcut, post
        self.macs = main.macs + shortcut.macs

    def clean(self, h):
        main, short = self.main.clean(h), self.shortcut.clean(h)
        self.main_clean, self.short_clean = nhwc(main), nhwc(short)
        return self.post.full(main + short)

    def out_size(self, in_size):
        return self.main.out_size(in_size)

    def _branch_boxes(self, box):
        return self.main.boxes(box), self.shortcut.boxes(box)

    def grow(self, box):
        main, short = self._branch_boxes(box)
        a, b = main[-1], short[-1]
        out = a.map_size
        if b.map_size != out:
            raise Unsupported(f"branches give maps {a.map_size} and {b.map_size}")
        starts, sizes = [], []
        for ra, rb, la, lb, n in zip(
            (a.rows, a.cols), (b.rows, b.cols), a.size, b.size, out, strict=True
        ):
            lo = torch.minimum(ra, rb)
            size = min(int((torch.maximum(ra + la, rb + lb) - lo).max()), n)
            starts.append(torch.minimum(lo, torch.full_like(lo, n - size)))
            sizes.append(size)
        return Box(starts[0], starts[1], tuple(sizes), out)

    def step(self, values, box_in, box_out, frames):
        # box_in / box_out are already the batch's boxes; the branch boxes are grown again here.
        main_boxes, short_boxes = self._branch_boxes(box_in)
        index = torch.arange(frames.shape[0], device=frames.device)
        total = None
        for branch, boxes, clean in (
            (self.main, main_boxes, self.main_clean),
            (self.shortcut, short_boxes, self.short_clean),
        ):
            out = branch.run(values, boxes, frames, index) if branch.ops else values
            last = boxes[-1]
            part = compose(
                clean, frames, box_out.rows, box_out.cols, box_out.size, out, last.rows, last.cols
            )
            total = part if total is None else total + part
        return self.post.full(total)

    def release(self):
        self.main.release()
        self.shortcut.release()
        self.main_clean = self.short_clean = None
