"""Linear heads that end the spatial chain: global average pooling and Flatten + Linear.

Both are linear in the map, so a patched frame's output is the clean output plus the head applied
to the change inside the box: the full map is never rebuilt.
"""

from __future__ import annotations

import torch
from torch import nn

from rlviz.methods.incremental.ops import Box, Op, Unsupported, compose, nhwc, pair


class Terminal(Op):
    """A linear head on the whole map (it ends the spatial chain): its clean output plus the
    contribution of the box's change, so the full map is never rebuilt."""

    terminal = True

    def clean(self, h):
        self.map_nhwc = nhwc(h)
        self.out_clean = self.full(h)
        return self.out_clean

    def delta(self, values, box, frames) -> torch.Tensor:
        """New minus clean values inside the box, [N, C, h, w]."""
        return values - compose(self.map_nhwc, frames, box.rows, box.cols, box.size)

    def release(self):
        self.map_nhwc = self.out_clean = None


class GlobalAvgPool(Terminal):
    """``AdaptiveAvgPool2d(1)``: the clean mean plus the box's summed change / (H W)."""

    kind = "global average pool"

    def __init__(self, name: str, module: nn.Module) -> None:
        if pair(module.output_size) != (1, 1):
            raise Unsupported(f"AdaptiveAvgPool2d(output_size={module.output_size})")
        self.name, self.module = name, module

    def step(self, values, box_in, box_out, frames):
        change = self.delta(values, box_in, frames).sum(dim=(2, 3), keepdim=True)
        area = box_in.map_size[0] * box_in.map_size[1]
        return self.out_clean[frames] + change / area


class Flatten(Op):
    """``nn.Flatten`` before a linear layer (merged into :class:`FlattenLinear`); alone it needs
    the full map."""

    kind = "flatten"

    def __init__(self, name: str, module: nn.Flatten) -> None:
        if module.start_dim != 1 or module.end_dim != -1:
            raise Unsupported(f"Flatten(start_dim={module.start_dim}, end_dim={module.end_dim})")
        self.name, self.module = name, module

    def grow(self, box):
        return Box(box.rows, box.cols, box.map_size, box.map_size)  # covers the map: run full


class FlattenLinear(Terminal):
    """``Flatten`` then ``Linear``: the clean output plus W[:, box] @ (change in the box), one
    matrix product per distinct box position."""

    kind = "flatten + linear"

    def __init__(self, name: str, flatten: Flatten, linear: nn.Linear) -> None:
        self.name, self.flatten, self.linear = name, flatten, linear
        self._blocks: dict = {}

    def work(self, size, box):
        total = self.linear.in_features * self.linear.out_features
        return float(total * (box[0] * box[1] / (size[0] * size[1]) if box else 1.0))

    def full(self, h):
        return self.linear(self.flatten.full(h))

    def clean(self, h):
        self._blocks = {}
        self.map_chw = tuple(h.shape[1:])
        return super().clean(h)

    def _block(self, r: int, c: int, size) -> torch.Tensor:
        key = (r, c, size)
        if key not in self._blocks:  # the weights that read the box at (r, c): [out, C h w]
            w = self.linear.weight.view(-1, *self.map_chw)
            self._blocks[key] = w[:, :, r : r + size[0], c : c + size[1]].reshape(w.shape[0], -1)
        return self._blocks[key]

    def step(self, values, box_in, box_out, frames):
        change = self.delta(values, box_in, frames).flatten(1)
        width = box_in.map_size[1]
        key = box_in.rows * width + box_in.cols
        # Patches sorted by box position: each position is one in-place matrix product on a
        # contiguous slice (no gather / scatter per position).
        order = torch.argsort(key)
        keys, counts = torch.unique_consecutive(key[order], return_counts=True)
        change, out = change[order], self.out_clean[frames[order]]
        start = 0
        for k, n in zip(keys.tolist(), counts.tolist(), strict=True):
            block = self._block(k // width, k % width, box_in.size)
            out[start : start + n].addmm_(change[start : start + n], block.T)
            start += n
        result = torch.empty_like(out)
        result[order] = out
        return result

    def release(self):
        super().release()
        self._blocks = {}
