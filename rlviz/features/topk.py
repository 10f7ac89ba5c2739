"""Dataset examples: the states that drive a unit most, with the receptive field of the peak.

Receptive fields come from the conv stack's geometry (kernel, stride, padding, dilation), as in
Araujo et al., "Computing Receptive Fields of Convolutional Neural Networks", Distill 2019.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from rlviz.features._common import (
    check_unit,
    forward_to_layers,
    frames_strip,
    image_grid,
    observations,
)
from rlviz.hooks import get_layer, list_layers
from rlviz.io import save_figure
from rlviz.layout import ObservationLayout
from rlviz.policy import PolicyAdapter

# Layers that act on each position alone: they leave the receptive field as it is. Norm layers that
# pool statistics over space (LayerNorm, GroupNorm, InstanceNorm) are counted here too, by the
# usual convention: they rescale a unit but do not move the region it reads.
_POINTWISE = (
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.PReLU,
    nn.ELU,
    nn.SELU,
    nn.CELU,
    nn.GELU,
    nn.SiLU,
    nn.Mish,
    nn.Tanh,
    nn.Sigmoid,
    nn.Hardtanh,
    nn.Hardswish,
    nn.Hardsigmoid,
    nn.Softplus,
    nn.Identity,
    nn.BatchNorm2d,
    nn.GroupNorm,
    nn.LayerNorm,
    nn.InstanceNorm2d,
    nn.LocalResponseNorm,
    nn.Dropout,
    nn.Dropout2d,
)
# Layers after which every unit sees the whole input.
_GLOBAL = (nn.Linear, nn.Flatten, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.LSTM, nn.GRU)


@dataclass(frozen=True)
class ReceptiveField:
    """Where in the input a unit of one layer looks, per axis (rows, columns).

    Unit (i, j) of the layer reads input rows ``start[0] + i * stride[0]`` up to
    ``start[0] + i * stride[0] + size[0] - 1`` (and the same for columns). ``start`` is negative
    when padding makes the first unit's field hang over the image edge. ``is_global``: the layer
    comes after a flatten / linear / global pooling, so every unit sees the whole input.
    """

    layer: str
    size: tuple[int, int]
    stride: tuple[int, int]
    start: tuple[int, int]
    is_global: bool = False

    @property
    def padding(self) -> tuple[int, int]:
        """How far the first unit's field reaches past the top / left edge (-start)."""
        return (-self.start[0], -self.start[1])

    def box(self, row: int, col: int, height: int, width: int) -> tuple[int, int, int, int]:
        """Input region of unit (row, col), clipped to a ``height`` x ``width`` image.

        Returns:
            (y0, x0, y1, x1) with exclusive ends.
        """
        if self.is_global:
            return (0, 0, height, width)
        y0 = self.start[0] + row * self.stride[0]
        x0 = self.start[1] + col * self.stride[1]
        return (
            max(0, y0),
            max(0, x0),
            min(height, y0 + self.size[0]),
            min(width, x0 + self.size[1]),
        )


def _pair(value) -> tuple[int, int]:
    if isinstance(value, (tuple, list)):
        return (int(value[0]), int(value[1]))
    return (int(value), int(value))


def _geometry(module: nn.Module):
    """(kernel, stride, padding, dilation) pairs of a spatial layer, or None if it is pointwise."""
    if isinstance(module, _POINTWISE):
        return None
    if isinstance(module, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)):
        kernel = _pair(module.kernel_size)
        stride = _pair(module.stride if module.stride is not None else module.kernel_size)
        dilation = _pair(getattr(module, "dilation", 1))
        padding = module.padding
        if padding == "valid":
            padding = (0, 0)
        elif padding == "same":
            # PyTorch puts the odd extra pixel of 'same' padding at the end.
            padding = tuple(d * (k - 1) // 2 for k, d in zip(kernel, dilation, strict=False))
        return kernel, stride, _pair(padding), dilation
    raise ValueError(
        f"cannot compute a receptive field through {type(module).__name__}; supported: Conv2d, "
        "MaxPool2d, AvgPool2d, pointwise activations / norms / dropout, and flatten / linear / global "
        "pooling (which make fields global). Pass the conv stack's modules explicitly instead"
    )


def receptive_fields(
    modules: nn.Module | Sequence[nn.Module | tuple[str, nn.Module]],
) -> list[ReceptiveField]:
    """Receptive field of every layer in a conv stack applied in order.

    Args:
        modules: the layers in the order the forward pass applies them: a sequence of modules or
            (name, module) pairs, or one module whose leaf submodules run in registration order
            (an ``nn.Sequential``; also true of most hand-written CNNs).

    Returns:
        one :class:`ReceptiveField` per layer, in order (named by dotted name, or by position).
    """
    if isinstance(modules, nn.Module):
        named = [(n, m) for n, m in modules.named_modules() if n and not list(m.children())]
        if not named:  # a single leaf layer
            named = [("0", modules)]
    else:
        named = [
            item if isinstance(item, tuple) else (str(i), item) for i, item in enumerate(modules)
        ]
    size, jump, start = [1, 1], [1, 1], [0, 0]
    is_global = False
    fields = []
    for name, module in named:
        if isinstance(module, _GLOBAL):
            is_global = True
        elif not is_global:
            geometry = _geometry(module)
            if geometry is not None:
                kernel, stride, padding, dilation = geometry
                for axis in range(2):
                    reach = dilation[axis] * (kernel[axis] - 1)  # effective kernel size - 1
                    start[axis] -= padding[axis] * jump[axis]
                    size[axis] += reach * jump[axis]
                    jump[axis] *= stride[axis]
        fields.append(ReceptiveField(name, tuple(size), tuple(jump), tuple(start), is_global))
    return fields


def receptive_field_or_none(model: nn.Module, layer: str) -> ReceptiveField | None:
    """:func:`receptive_field`, or None (with a warning) when the stack holds a layer whose
    geometry is unknown, so callers can fall back to a coarser answer."""
    try:
        return receptive_field(model, layer)
    except ValueError as exc:
        if "not found" in str(exc):
            raise
        warnings.warn(f"no receptive field for {layer!r} ({exc})", stacklevel=3)
        return None


def receptive_field(model: nn.Module, layer: str) -> ReceptiveField:
    """Receptive field of layer ``layer`` (dotted name) of ``model``.

    Assumes the model applies its leaf layers in registration order up to ``layer`` (true for
    ``nn.Sequential`` stacks and the usual ``conv1, conv2, ...`` CNNs); otherwise call
    :func:`receptive_fields` with the modules in forward order.
    """
    target_ids = {id(m) for m in get_layer(model, layer).modules()}
    leaves = [(n, m) for n, m in model.named_modules() if n and not list(m.children())]
    inside = [i for i, (_, m) in enumerate(leaves) if id(m) in target_ids]
    if not inside:
        raise ValueError(
            f"layer {layer!r} has no leaf layers; available: {', '.join(list_layers(model))}"
        )
    stack = leaves[: inside[-1] + 1]
    field = receptive_fields(stack)[-1]
    return ReceptiveField(layer, field.size, field.stride, field.start, field.is_global)


@dataclass
class TopExamples:
    """The ``k`` states that activate one unit most.

    Attributes:
        layer, channel: the unit.
        indices: int64 [k], positions of the states in the dataset, strongest first.
        scores: float32 [k], the unit's peak activation in each state.
        positions: int64 [k, 2], (row, col) of the peak in the layer's map ((0, 0) for a 1-d layer).
        boxes: int64 [k, 4], (y0, x0, y1, x1) of the peak's receptive field in frame pixels,
            clipped to the frame, exclusive ends (the whole frame for a 1-d layer).
        field: the layer's receptive field (in network-input pixels).
        layout: how the dataset's observations hold their frames (boxes are in frame pixels and
            apply to every stack frame alike); None reads them as single frames [N, H, W, C].
    """

    layer: str
    channel: int
    indices: np.ndarray
    scores: np.ndarray
    positions: np.ndarray
    boxes: np.ndarray
    field: ReceptiveField
    layout: ObservationLayout | None = None

    def crops(self, obs: np.ndarray, frames: str = "newest") -> list[np.ndarray]:
        """The receptive-field patches of ``obs`` (the dataset passed in).

        Args:
            frames: ``"newest"``: the patch of the newest stack frame; ``"all"``: of every frame.

        Returns:
            per example, uint8 [h, w, C] for single frames [N, H, W, C] (as stored); for stacks,
            RGB [h, w, 3] (``"newest"``) or [K, h, w, 3] (``"all"``, oldest first).
        """
        _check_frames_arg(frames)
        layout = self.layout or ObservationLayout(1, np.shape(obs)[-1], "HWC")
        boxes = zip(self.indices, self.boxes, strict=False)
        if not layout.stacked and layout.order == "HWC" and frames == "newest":
            return [np.asarray(obs)[i, y0:y1, x0:x1] for i, (y0, x0, y1, x1) in boxes]
        crops = []
        for i, (y0, x0, y1, x1) in boxes:
            shown = layout.display_frames(np.asarray(obs)[i : i + 1])[0, :, y0:y1, x0:x1]
            crops.append(shown[-1] if frames == "newest" else shown)
        return crops


def _check_frames_arg(frames: str) -> None:
    if frames not in ("newest", "all"):
        raise ValueError(
            f"frames must be 'newest' (the newest stack frame) or 'all' (every frame); got "
            f"{frames!r}"
        )


@torch.no_grad()
def top_k_examples(
    adapter: PolicyAdapter,
    obs: np.ndarray,
    layer: str,
    channel: int,
    k: int = 9,
    *,
    min_separation: int = 0,
    batch_size: int = 128,
    field: ReceptiveField | None = None,
) -> TopExamples:
    """The ``k`` states of ``obs`` where unit (``layer``, ``channel``) peaks highest.

    ``obs`` is a batch of raw observations in the adapter's layout (single frames [N, H, W, C],
    or stacks such as [N, K, H, W, C] or [N, H, W, K*C]).

    Args:
        min_separation: skip states closer than this many indices to one already chosen, so a
            rollout's near-identical consecutive frames do not fill every slot.
        field: the layer's receptive field; computed with :func:`receptive_field` if not given
            (the whole frame, with a warning, if the stack has a layer of unknown geometry).
    """
    obs, layout = observations(adapter, obs)
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    peaks, where = [], []
    input_hw = None
    for start in range(0, len(obs), batch_size):
        x = adapter.preprocess(obs[start : start + batch_size])
        input_hw = x.shape[-2:]
        act = forward_to_layers(adapter, x, layer)[layer]
        check_unit(act, layer, channel)
        unit = act[:, channel].reshape(len(x), -1).float()
        value, flat = unit.max(dim=1)
        width = act.shape[-1] if act.ndim == 4 else 1
        peaks.append(value.cpu())
        where.append(
            torch.stack([flat // width, flat % width], dim=1).cpu()
            if act.ndim == 4
            else torch.zeros(len(x), 2, dtype=torch.long)
        )
    scores = torch.cat(peaks).numpy()
    positions = torch.cat(where).numpy()

    chosen: list[int] = []
    for index in np.argsort(-scores, kind="stable"):
        if all(abs(int(index) - c) >= min_separation for c in chosen):
            chosen.append(int(index))
            if len(chosen) == k:
                break
    chosen_arr = np.asarray(chosen, dtype=np.int64)

    if field is None:
        # unknown geometry: crop the whole frame rather than fail
        field = receptive_field_or_none(adapter.model, layer) or ReceptiveField(
            layer, (0, 0), (1, 1), (0, 0), True
        )
    in_h, in_w = int(input_hw[0]), int(input_hw[1])
    frame_h, frame_w = layout.image_size(tuple(obs.shape[1:]))
    # Network input and frame can differ in size when preprocess resizes: scale the box.
    sy, sx = frame_h / in_h, frame_w / in_w
    boxes = []
    for row, col in positions[chosen_arr]:
        y0, x0, y1, x1 = field.box(int(row), int(col), in_h, in_w)
        top_left = int(np.floor(y0 * sy)), int(np.floor(x0 * sx))
        boxes.append((*top_left, int(np.ceil(y1 * sy)), int(np.ceil(x1 * sx))))
    return TopExamples(
        layer=layer,
        channel=channel,
        indices=chosen_arr,
        scores=scores[chosen_arr].astype(np.float32),
        positions=positions[chosen_arr].astype(np.int64),
        boxes=np.asarray(boxes, dtype=np.int64).reshape(-1, 4),
        field=field,
        layout=layout,
    )


def _shown(layout: ObservationLayout, obs: np.ndarray, index: int, frames: str) -> np.ndarray:
    """Observation ``index`` as RGB frames [K', H, W, 3]: the newest only, or every frame."""
    shown = layout.display_frames(obs[index : index + 1])[0]
    return shown[-1:] if frames == "newest" else shown


def plot_top_k(
    examples: TopExamples | Sequence[TopExamples],
    obs: np.ndarray,
    path: str | os.PathLike,
    frames: str = "newest",
) -> Path:
    """Draw, per unit, its top states with the receptive field boxed (upper row) and the patches
    themselves (lower row); returns the PNG path.

    Args:
        frames: for stacked observations, draw the newest frame (``"newest"``) or every frame
            side by side, oldest left, each with the box (``"all"``).
    """
    from matplotlib.patches import Rectangle

    _check_frames_arg(frames)
    units = [examples] if isinstance(examples, TopExamples) else list(examples)
    if not units:
        raise ValueError("plot_top_k needs at least one TopExamples")
    obs = np.asarray(obs)
    layout = units[0].layout or ObservationLayout(1, obs.shape[-1], "HWC")
    layout.image_size(tuple(obs.shape[1:]))  # the dataset the examples came from
    cols = max(len(u.indices) for u in units)
    wide = layout.frames if frames == "all" else 1
    width = 1.55 * cols * (1 + 0.8 * (wide - 1)) + 0.3
    fig, axes = image_grid(width, 2.55 * len(units) + 0.4, 2 * len(units), cols)
    for u, unit in enumerate(units):
        for j, (index, score, box) in enumerate(
            zip(unit.indices, unit.scores, unit.boxes, strict=False)
        ):
            y0, x0, y1, x1 = (int(v) for v in box)
            top, bottom = axes[2 * u, j], axes[2 * u + 1, j]
            shown = _shown(layout, obs, int(index), frames)
            width, gap = shown.shape[2], 2
            top.imshow(frames_strip(shown, gap))
            for f in range(len(shown)):  # the same field in every frame shown
                top.add_patch(
                    Rectangle(
                        (f * (width + gap) + x0 - 0.5, y0 - 0.5),
                        x1 - x0,
                        y1 - y0,
                        fill=False,
                        edgecolor="yellow",
                        linewidth=1.2,
                    )
                )
            top.set_title(f"#{index}  act {score:.2f}", fontsize=7)
            patch = frames_strip(shown[:, y0:y1, x0:x1], 1)
            bottom.imshow(patch, interpolation="nearest")
            bottom.set_title(f"patch {y1 - y0}x{x1 - x0}", fontsize=7)
        rf = unit.field
        label = (
            "whole frame"
            if rf.is_global
            else f"RF {rf.size[0]}x{rf.size[1]}, stride {rf.stride[0]}x{rf.stride[1]}"
        )
        axes[2 * u, 0].text(
            -0.08,
            0.5,
            f"{unit.layer} ch {unit.channel}\n{label}",
            transform=axes[2 * u, 0].transAxes,
            ha="right",
            va="center",
            fontsize=8,
            rotation=90,
        )
    which = {"newest": "", "all": "; stack frames oldest -> newest"}[frames]
    if layout.stacked and frames == "newest":
        which = f"; newest of {layout.frames} stack frames"
    fig.suptitle(
        "Top-activating states per unit (yellow: receptive field of the peak) and their patches"
        + which,
        fontsize=10,
    )
    return save_figure(fig, path)
