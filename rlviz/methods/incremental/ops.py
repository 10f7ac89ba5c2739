"""Layer ops that recompute only a changed box of their output (Krypton-style incremental inference).

Every op maps a full activation [B, C, H, W] to the next one (``full``), remembers what it needs
from the clean forward (``clean``), tells how a changed box of its input grows (``grow``) and
recomputes its output inside the grown box for a batch of patches (``step``). A box is the same
size for every patch of a batch (the largest one, moved inward at the map's edges) so a batch is
one convolution; a box larger than the changed region is still exact, only slower.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class Box:
    """Per-patch box of changed positions on a map: start rows / cols [P] (long), one size."""

    rows: torch.Tensor
    cols: torch.Tensor
    size: tuple[int, int]
    map_size: tuple[int, int]

    @property
    def area_fraction(self) -> float:
        """Share of the map the box covers."""
        return self.size[0] * self.size[1] / (self.map_size[0] * self.map_size[1])

    def take(self, index: torch.Tensor) -> Box:
        """The boxes of patches ``index``."""
        return Box(self.rows[index], self.cols[index], self.size, self.map_size)


class Unsupported(Exception):
    """A layer the incremental engine cannot reason about; the message says why."""


def _floor_div(a: torch.Tensor, b: int) -> torch.Tensor:
    return torch.div(a, b, rounding_mode="floor")


def _ceil_div(a: torch.Tensor, b: int) -> torch.Tensor:
    return -torch.div(-a, b, rounding_mode="floor")


def grow_axis(start, length, k, s, before, d, size_out) -> tuple[torch.Tensor, int]:
    """Output positions whose window (kernel k, stride s, padding ``before``, dilation d) touches
    input positions [start, start + length): one size for all patches, kept inside the map."""
    lo = _ceil_div(start + before - d * (k - 1), s).clamp(min=0)
    hi = (_floor_div(start + length - 1 + before, s) + 1).clamp(max=size_out)
    size = min(int((hi - lo).max()), size_out)
    return torch.minimum(lo, torch.full_like(lo, size_out - size)).clamp(min=0), size


def nhwc(h: torch.Tensor) -> torch.Tensor:
    """Maps [B, C, H, W] stored as [B, H, W, C] (contiguous): the layout :func:`compose` reads."""
    return h.permute(0, 2, 3, 1).contiguous()


def compose(
    clean: torch.Tensor,
    frames: torch.Tensor,
    rows: torch.Tensor,
    cols: torch.Tensor,
    size: tuple[int, int],
    values: torch.Tensor | None = None,
    vrows: torch.Tensor | None = None,
    vcols: torch.Tensor | None = None,
) -> torch.Tensor:
    """Windows of the perturbed maps: ``clean[frames]`` with ``values`` pasted in.

    Args:
        clean: clean maps [B, H', W', C] (from :func:`nhwc`, padded: all coordinates here are in
            its frame).
        frames: which clean map each patch starts from, [N].
        rows, cols: top-left of each window, [N]; size: (height, width) of the windows.
        values: recomputed values [N, C, h, w] with top-left at (vrows, vcols) [N]; the part of
            them outside the window is dropped.

    Returns:
        [N, C, *size] in channels-last memory (what CPU convolutions run fastest on).
    """
    n = frames.shape[0]
    if values is not None:  # one spare window takes the writes that fall outside
        frames, rows, cols = (torch.cat([t, t[:1]]) for t in (frames, rows, cols))
    # Each window row is one contiguous run of w * C floats in an NHWC map: view the map as
    # overlapping runs and copy [N * h] of them with index_select (memcpy per run; ~10x faster
    # than advanced indexing, which copies float by float).
    b, height, width, c = clean.shape
    runs = clean.view(-1).as_strided((b * height * width - size[1] + 1, size[1] * c), (c, 1))
    first = ((frames * height + rows)[:, None] + torch.arange(size[0], device=rows.device)) * width
    out = runs.index_select(0, (first + cols[:, None]).view(-1))
    out = out.view(-1, size[0], size[1], c)  # [N (+1), h, w, C]
    if values is not None:
        _paste(out, values, vrows - rows[:n], vcols - cols[:n])
    return out[:n].permute(0, 3, 1, 2)


def _paste(out: torch.Tensor, values: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor) -> None:
    """``out[k]`` [H, W, C] gets ``values[k]`` [C, h, w] at offset (dy[k], dx[k]); positions
    outside go to the spare window ``out[-1]``. One index_put for the whole batch."""
    n, (height, width), (h, w) = values.shape[0], out.shape[1:3], values.shape[-2:]
    r = dy[:, None] + torch.arange(h, device=dy.device)
    c = dx[:, None] + torch.arange(w, device=dx.device)
    inside = ((r >= 0) & (r < height))[:, :, None] & ((c >= 0) & (c < width))[:, None, :]
    index = torch.arange(n, device=dy.device)[:, None, None].expand(n, h, w)
    if not bool(inside.all()):
        index = torch.where(inside, index, n)
    r = r.clamp(0, height - 1)[:, :, None].expand(n, h, w)
    c = c.clamp(0, width - 1)[:, None, :].expand(n, h, w)
    out.index_put_((index, r, c), values.permute(0, 2, 3, 1))


def window_starts(size: int, window: int, stride: int) -> list[int]:
    """Start offsets of windows along an axis: every ``stride`` pixels until the window reaches the
    end (the last one may hang over the edge and is clipped), as captum's Occlusion."""
    if window > size:
        raise ValueError(f"occlusion window {window} is larger than the input ({size} pixels)")
    count = math.ceil((size - window) / stride) + 1
    return [k * stride for k in range(count)]


def window_boxes(size, window, stride) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-left [P] of every window's box in the order of ``window_masks``: the window itself,
    moved inward where it hangs over the edge (the box only has to contain what changes)."""

    axes = [
        torch.tensor([min(s, n - w) for s in window_starts(n, w, st)])
        for n, w, st in zip(size, window, stride, strict=True)
    ]
    rows, cols = axes
    return rows.repeat_interleave(len(cols)), cols.repeat(len(rows))


class Op:
    """One step of the chain. ``macs`` estimates multiply-adds per output position (cost model)."""

    name: str = ""
    kind: str = ""
    macs: int = 0
    terminal: bool = False  # a linear head: step returns its full output
    module: nn.Module | None = None  # the layer, for ops that are one

    def full(self, h: torch.Tensor) -> torch.Tensor:
        """The whole map through the op (the layer's own forward)."""
        return self.module(h)

    def clean(self, h: torch.Tensor) -> torch.Tensor:
        """``full`` on the clean maps, keeping what ``step`` needs."""
        return self.full(h)

    def out_size(self, in_size: tuple[int, int]) -> tuple[int, int]:
        return in_size

    def grow(self, box: Box) -> Box:
        return box

    def step(self, values, box_in: Box, box_out: Box, frames) -> torch.Tensor:
        raise NotImplementedError

    def work(self, size: tuple[int, int], box: tuple[int, int] | None) -> float:
        """Estimated multiply-adds per image on a map of ``size`` (all of it, or only ``box``)."""
        area = box[0] * box[1] if box else size[0] * size[1]
        return float(self.macs * area)

    def release(self) -> None:
        """Drop the clean-forward cache."""


POINTWISE = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU,
    nn.Mish, nn.Tanh, nn.Sigmoid, nn.Hardtanh, nn.Hardswish, nn.Hardsigmoid, nn.Softplus,
    nn.Identity, nn.Dropout, nn.Dropout2d,
)  # fmt: skip


class Pointwise(Op):
    """Elementwise layers (activations, eval-mode batch norm and dropout): the box is kept."""

    kind = "pointwise"

    def __init__(self, name: str, module: nn.Module) -> None:
        if isinstance(module, (nn.Dropout, nn.Dropout2d, nn.modules.batchnorm._BatchNorm)) and (
            module.training
        ):
            raise Unsupported(f"{type(module).__name__} in training mode is not elementwise")
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and not module.track_running_stats:
            raise Unsupported("batch norm without running statistics uses the batch's statistics")
        self.name, self.module = name, module

    def step(self, values, box_in, box_out, frames):
        return self.module(values)


class ConcatConst(Op):
    """Channels appended to the input that do not depend on it (CoordConv's coordinate maps)."""

    kind = "concat constant channels"

    def __init__(self, name: str, extra: torch.Tensor) -> None:
        self.name, self.extra = name, extra  # [1, Ce, H, W]
        self.extra_nhwc = nhwc(extra)

    def full(self, h):
        return torch.cat([h, self.extra.expand(h.shape[0], -1, -1, -1)], dim=1)

    def step(self, values, box_in, box_out, frames):
        zeros = torch.zeros_like(box_in.rows)
        extra = compose(self.extra_nhwc, zeros, box_in.rows, box_in.cols, box_in.size)
        return torch.cat([values, extra], dim=1)


def pair(value) -> tuple[int, int]:
    """``value`` as (height, width)."""
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[1]))


class Windowed(Op):
    """Shared by convolutions and local pooling: output position o reads input rows
    o * s - before ... o * s - before + d (k - 1)."""

    pad_value = 0.0

    def _geometry(self, k, s, d, padding) -> None:
        self.k, self.s, self.d = pair(k), pair(s), pair(d)
        if isinstance(padding, str):
            if padding == "valid":
                padding = (0, 0)
            elif padding == "same":
                total = [d_ * (k_ - 1) for k_, d_ in zip(self.k, self.d, strict=True)]
                self.before = tuple(t // 2 for t in total)
                self.after = tuple(t - t // 2 for t in total)
                return
            else:
                raise Unsupported(f"padding {padding!r}")
        self.before = self.after = pair(padding)

    def _out_axis(self, n: int, i: int, ceil: bool = False) -> int:
        span = n + self.before[i] + self.after[i] - self.d[i] * (self.k[i] - 1) - 1
        out = (-(-span // self.s[i]) if ceil else span // self.s[i]) + 1
        if ceil and (out - 1) * self.s[i] >= n + self.before[i]:
            out -= 1  # PyTorch drops a last window that starts in the right padding
        return out

    def out_size(self, in_size):
        return tuple(
            self._out_axis(n, i, getattr(self, "ceil", False)) for i, n in enumerate(in_size)
        )

    def clean(self, h):
        self.in_size = tuple(h.shape[-2:])
        self.size_out = self.out_size(self.in_size)
        # Margins so that every window of a valid output position lies inside the padded map.
        extra = [
            max(
                self.after[i],
                (o - 1) * self.s[i] - self.before[i] + self.d[i] * (self.k[i] - 1) - n + 1,
            )
            for i, (n, o) in enumerate(zip(self.in_size, self.size_out, strict=True))
        ]
        pad = (self.before[1], extra[1], self.before[0], extra[0])
        self.padded = nhwc(F.pad(h, pad, value=self.pad_value))
        return self.full(h)

    def grow(self, box):
        out = self.out_size(box.map_size)
        rows, h = grow_axis(
            box.rows, box.size[0], self.k[0], self.s[0], self.before[0], self.d[0], out[0]
        )
        cols, w = grow_axis(
            box.cols, box.size[1], self.k[1], self.s[1], self.before[1], self.d[1], out[1]
        )
        return Box(rows, cols, (h, w), out)

    def window(self, values, box_in: Box, box_out: Box, frames) -> torch.Tensor:
        """The padded input windows that ``box_out`` reads, with ``values`` pasted in."""
        size = tuple(
            (box_out.size[i] - 1) * self.s[i] + self.d[i] * (self.k[i] - 1) + 1 for i in (0, 1)
        )
        rows, cols = box_out.rows * self.s[0], box_out.cols * self.s[1]  # padded coordinates
        vrows, vcols = box_in.rows + self.before[0], box_in.cols + self.before[1]
        return compose(self.padded, frames, rows, cols, size, values, vrows, vcols)

    def step(self, values, box_in, box_out, frames):
        return self._apply(self.window(values, box_in, box_out, frames))

    def release(self):
        self.padded = None


class Conv(Windowed):
    kind = "conv"

    def __init__(self, name: str, module: nn.Conv2d) -> None:
        if module.padding_mode != "zeros":
            raise Unsupported(f"padding_mode={module.padding_mode!r} (only zero padding)")
        self.name, self.module = name, module
        self._geometry(module.kernel_size, module.stride, module.dilation, module.padding)
        self.macs = (
            module.in_channels
            // module.groups
            * math.prod(module.kernel_size)
            * module.out_channels
        )

    def _apply(self, window):
        m = self.module
        return F.conv2d(window, m.weight, m.bias, m.stride, 0, m.dilation, m.groups)


class Pool(Windowed):
    kind = "pool"

    def __init__(self, name: str, module: nn.Module) -> None:
        self.name, self.module = name, module
        if isinstance(module, nn.MaxPool2d):
            if module.return_indices:
                raise Unsupported("MaxPool2d(return_indices=True)")
            self.pad_value, dilation, self.ceil = -math.inf, module.dilation, module.ceil_mode
        else:  # AvgPool2d: padded zeros count as in PyTorch only when count_include_pad
            if module.ceil_mode or module.divisor_override is not None:
                raise Unsupported("AvgPool2d with ceil_mode or divisor_override")
            if not module.count_include_pad and pair(module.padding) != (0, 0):
                raise Unsupported("AvgPool2d(count_include_pad=False) with padding")
            dilation, self.ceil = 1, False
        stride = module.stride if module.stride is not None else module.kernel_size
        self._geometry(module.kernel_size, stride, dilation, module.padding)
        self.macs = math.prod(self.k)

    def _apply(self, window):
        if isinstance(self.module, nn.MaxPool2d):
            return F.max_pool2d(window, self.k, self.s, 0, self.d)
        return F.avg_pool2d(window, self.k, self.s, 0)
