"""Network dissection: which units segment the goal box?

Bau, Zhou, Khosla, Oliva, Torralba, "Network Dissection: Quantifying Interpretability of Deep
Visual Representations", CVPR 2017 (https://arxiv.org/abs/1704.05796). Per unit k: the threshold
T_k is the top quantile (0.995) of its activations over the whole dataset; the activation map of
each frame is upsampled to mask resolution and thresholded, M_k(x) = S_k(x) > T_k; the unit's IoU
with a concept c is sum_x |M_k(x) & L_c(x)| / sum_x |M_k(x) | L_c(x)|, summed over the dataset.
Here the concepts come from the simulator (BoxReach ``info["goal_mask"]``), not from annotators.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from rlviz.features._common import BATCH, new_figure, observations
from rlviz.features.topk import ReceptiveField, receptive_field_or_none, top_k_examples
from rlviz.hooks import layer_activations, list_layers
from rlviz.io import save_figure
from rlviz.policy import PolicyAdapter

#: Bau et al.'s IoU above which a unit counts as a detector of a concept.
DEFAULT_IOU_THRESHOLD = 0.04


@dataclass(frozen=True)
class UnitScore:
    """How well one unit segments one concept over the dataset."""

    layer: str
    unit: int
    concept: str
    iou: float
    precision: float
    recall: float
    threshold: float


@dataclass
class Dissection:
    """Per-unit scores of a dissection run.

    Attributes:
        layers: the layers dissected, in order.
        concepts: the concept names (e.g. ``["goal box"]``).
        quantile: the activation quantile used as each unit's threshold.
        thresholds: layer -> float32 [C], T_k per unit.
        iou / precision / recall: layer -> float32 [C, K] per unit and concept.
        n_frames: dataset size.
    """

    layers: list[str]
    concepts: list[str]
    quantile: float
    thresholds: dict[str, np.ndarray]
    iou: dict[str, np.ndarray]
    precision: dict[str, np.ndarray]
    recall: dict[str, np.ndarray]
    n_frames: int

    def _concept(self, concept: str | None) -> int:
        if concept is None:
            return 0
        if concept not in self.concepts:
            raise ValueError(f"unknown concept {concept!r}; this dissection has {self.concepts}")
        return self.concepts.index(concept)

    def scores(self, concept: str | None = None) -> list[UnitScore]:
        """Every unit of every layer scored on ``concept`` (default: the first), best IoU first."""
        c = self._concept(concept)
        rows = [
            UnitScore(
                layer,
                unit,
                self.concepts[c],
                float(self.iou[layer][unit, c]),
                float(self.precision[layer][unit, c]),
                float(self.recall[layer][unit, c]),
                float(self.thresholds[layer][unit]),
            )
            for layer in self.layers
            for unit in range(len(self.thresholds[layer]))
        ]
        return sorted(rows, key=lambda r: (-r.iou, self.layers.index(r.layer), r.unit))

    def top(
        self, k: int, concept: str | None = None, layers: Sequence[str] | None = None
    ) -> list[UnitScore]:
        """The ``k`` best units on ``concept`` (optionally only from ``layers``)."""
        rows = self.scores(concept)
        if layers is not None:
            rows = [r for r in rows if r.layer in layers]
        return rows[:k]

    def detectors(
        self, iou_threshold: float = DEFAULT_IOU_THRESHOLD, concept: str | None = None
    ) -> list[UnitScore]:
        """Units whose IoU with ``concept`` exceeds ``iou_threshold``, best first."""
        return [r for r in self.scores(concept) if r.iou > iou_threshold]

    def count(
        self, iou_threshold: float = DEFAULT_IOU_THRESHOLD, concept: str | None = None
    ) -> dict[str, int]:
        """Number of detector units per layer (IoU above ``iou_threshold``)."""
        c = self._concept(concept)
        return {layer: int((self.iou[layer][:, c] > iou_threshold).sum()) for layer in self.layers}

    def units_per_layer(self) -> dict[str, int]:
        """Layer -> how many units it has (what random units are drawn from)."""
        return {layer: len(self.thresholds[layer]) for layer in self.layers}

    def report(
        self, iou_threshold: float = DEFAULT_IOU_THRESHOLD, concept: str | None = None
    ) -> dict:
        """The run as JSON-able numbers: states, quantile, detectors and units per layer, and
        every unit's score on ``concept``, best first."""
        return {
            "states": self.n_frames,
            "quantile": self.quantile,
            "iou_threshold": iou_threshold,
            "detectors_per_layer": self.count(iou_threshold, concept),
            "units_per_layer": self.units_per_layer(),
            "units": [vars(s) for s in self.scores(concept)],
        }


def upsample_maps(
    act: torch.Tensor,
    size: tuple[int, int],
    field: ReceptiveField | None = None,
    input_size: tuple[int, int] | None = None,
) -> torch.Tensor:
    """Activation maps [N, C, h, w] resampled bilinearly to ``size`` (H, W) -> [N, C, H, W].

    With the layer's receptive ``field`` (and the network input size), each unit is placed at the
    centre of its field rather than spread evenly over the frame: for an unpadded strided stack the
    units' fields cluster in the middle, and even spreading would misplace edge units by up to
    half a field. Pixels beyond the outermost centres take the edge unit's value.
    """
    n, c, h, w = act.shape
    if field is None or field.is_global or input_size is None:
        return F.interpolate(act, size=size, mode="bilinear", align_corners=False)
    coords = []
    for axis, (units, out_len, in_len) in enumerate(zip((h, w), size, input_size, strict=True)):
        pixel = (torch.arange(out_len, dtype=torch.float32) + 0.5) * (in_len / out_len) - 0.5
        centre0 = field.start[axis] + (field.size[axis] - 1) / 2.0
        index = (pixel - centre0) / field.stride[axis]  # fractional unit index of each output pixel
        coords.append(index / (units - 1) * 2 - 1 if units > 1 else torch.zeros_like(index))
    gy, gx = torch.meshgrid(coords[0], coords[1], indexing="ij")
    grid = torch.stack([gx, gy], dim=-1).to(act)[None].expand(n, -1, -1, -1)
    return F.grid_sample(act, grid, mode="bilinear", padding_mode="border", align_corners=True)


def _as_concepts(masks, n_frames: int) -> dict[str, np.ndarray]:
    concepts = masks if isinstance(masks, Mapping) else {"goal box": masks}
    out = {}
    for name, mask in concepts.items():
        mask = np.asarray(mask)
        if mask.ndim != 3 or len(mask) != n_frames:
            raise ValueError(
                f"mask {name!r} must be bool [N, H, W] with N = {n_frames} frames, got shape {mask.shape}; "
                "collect rollouts with ground_truth=True and pass rollout.infos['goal_mask']"
            )
        out[name] = mask.astype(bool)
    if not out:
        raise ValueError("no concept masks given")
    return out


def dissect(
    adapter: PolicyAdapter,
    obs: np.ndarray,
    masks: np.ndarray | Mapping[str, np.ndarray],
    layers: str | Sequence[str] | None = None,
    *,
    quantile: float = 0.995,
    upsample: str = "field",
    batch_size: int = 64,
) -> Dissection:
    """Score every unit of ``layers`` as a segmenter of each concept mask.

    Args:
        obs: raw observations in the adapter's layout: frames [N, H, W, C] or stacks (e.g.
            [N, K, H, W, C]); masks are of the newest frame, the one the agent acts on.
        masks: bool [N, H, W] for one concept (named "goal box"), or a dict name -> [N, H, W].
        layers: conv layers to dissect (default: every ``nn.Conv2d``).
        quantile: each unit's threshold is this quantile of its activations over all frames and
            positions (Bau et al. use 0.995: a unit is "on" at its top 0.5%).
        upsample: ``"field"`` places units at their receptive-field centres (falling back to
            bilinear, with a warning, for a layer of unknown geometry); ``"bilinear"`` spreads them
            evenly over the frame (Bau et al.'s plain upsampling).
    """
    obs, _ = observations(adapter, obs)
    if not 0.0 < quantile < 1.0:
        raise ValueError(f"quantile must be in (0, 1), got {quantile}")
    if upsample not in ("field", "bilinear"):
        raise ValueError(f"upsample must be 'field' or 'bilinear', got {upsample!r}")
    concepts = _as_concepts(masks, len(obs))
    mask_size = next(iter(concepts.values())).shape[1:]
    if layers is None:
        layers = list_layers(adapter.model, nn.Conv2d)
    layers = [layers] if isinstance(layers, str) else list(layers)
    if not layers:
        raise ValueError(
            "no layers to dissect: the model has no nn.Conv2d; pass layers=[...] explicitly"
        )

    acts = layer_activations(adapter, obs, layers, batch_size=batch_size, stop_early=True)
    input_size = tuple(adapter.preprocess(obs[:1]).shape[-2:])
    thresholds, iou, precision, recall = {}, {}, {}, {}
    names = list(concepts)
    label = {name: torch.from_numpy(m) for name, m in concepts.items()}
    concept_area = torch.tensor([float(m.sum()) for m in concepts.values()], dtype=torch.float64)
    for layer in layers:
        a = acts[layer]
        if a.ndim != 4:
            raise ValueError(
                f"layer {layer!r} outputs {tuple(a.shape[1:])} per frame; dissection needs [C, h, w] maps"
            )
        channels = a.shape[1]
        per_unit = a.transpose(0, 1).reshape(channels, -1)
        # kthvalue is exact and has no size limit (torch.quantile stops at 2**24 values).
        k = min(per_unit.shape[1], max(1, int(np.ceil(quantile * per_unit.shape[1]))))
        t = per_unit.kthvalue(k, dim=1).values
        field = receptive_field_or_none(adapter.model, layer) if upsample == "field" else None
        inter = torch.zeros(channels, len(names), dtype=torch.float64)
        on = torch.zeros(channels, dtype=torch.float64)
        for start in range(0, len(obs), batch_size):
            up = upsample_maps(a[start : start + batch_size], mask_size, field, input_size)
            fired = up > t[None, :, None, None]
            on += fired.sum((0, 2, 3)).double()
            for j, name in enumerate(names):
                lab = label[name][start : start + batch_size]
                inter[:, j] += (fired & lab[:, None]).sum((0, 2, 3)).double()
        union = on[:, None] + concept_area[None, :] - inter
        thresholds[layer] = t.numpy().astype(np.float32)
        iou[layer] = (inter / union.clamp_min(1)).numpy().astype(np.float32)
        precision[layer] = (inter / on[:, None].clamp_min(1)).numpy().astype(np.float32)
        recall[layer] = (inter / concept_area[None, :].clamp_min(1)).numpy().astype(np.float32)
    return Dissection(layers, names, quantile, thresholds, iou, precision, recall, len(obs))


def unit_segmentation(
    adapter: PolicyAdapter,
    obs: np.ndarray,
    layer: str,
    unit: int,
    threshold: float,
    upsample: str = "field",
) -> np.ndarray:
    """Where unit (``layer``, ``unit``) is on (above ``threshold``) in each frame, at frame
    size: bool [N, H, W]."""
    obs, layout = observations(adapter, obs)
    acts = layer_activations(adapter, obs, layer, batch_size=BATCH, stop_early=True)
    a = acts[layer][:, unit : unit + 1]
    field = receptive_field_or_none(adapter.model, layer) if upsample == "field" else None
    input_size = tuple(adapter.preprocess(obs[:1]).shape[-2:])
    size = layout.image_size(tuple(obs.shape[1:]))
    return (upsample_maps(a, size, field, input_size)[:, 0] > threshold).numpy()


def plot_dissection(
    result: Dissection,
    path: str | os.PathLike,
    *,
    iou_threshold: float = DEFAULT_IOU_THRESHOLD,
    concept: str | None = None,
    adapter: PolicyAdapter | None = None,
    obs: np.ndarray | None = None,
    masks: np.ndarray | None = None,
    n_units: int = 4,
    n_frames: int = 5,
) -> Path:
    """Detectors per layer, IoU of every unit ranked per layer, and (given ``adapter``, ``obs`` and
    ``masks``) the top units' segmentations on the frames where they fire most; returns the PNG path.
    """
    c = result._concept(concept)
    name = result.concepts[c]
    counts = result.count(iou_threshold, name)
    show_units = adapter is not None and obs is not None and masks is not None
    top = result.top(n_units, name) if show_units else []
    fig = new_figure(max(10.0, 1.6 * n_frames + 0.5), 3.4 + 1.45 * len(top))
    if top:
        upper, lower = fig.subfigures(2, 1, height_ratios=[2.2, 1.45 * len(top)])
        frame_axes = lower.subplots(len(top), n_frames, squeeze=False)
    else:
        upper, frame_axes = fig, None
    ax_count, ax_rank = upper.subplots(1, 2, width_ratios=[1, 1.6])
    totals = [len(result.thresholds[layer]) for layer in result.layers]
    bars = ax_count.bar(
        range(len(result.layers)), [counts[layer] for layer in result.layers], color="tab:red"
    )
    for bar, layer, total in zip(bars, result.layers, totals, strict=False):
        ax_count.annotate(
            f"{counts[layer]}/{total}",
            (bar.get_x() + bar.get_width() / 2, bar.get_height()),
            ha="center",
            va="bottom",
            fontsize=8,
        )
    ax_count.set_xticks(range(len(result.layers)), result.layers, fontsize=8)
    ax_count.set_ylabel(f"units with IoU > {iou_threshold:g}")
    ax_count.set_ylim(0, max(1, *counts.values()) * 1.15)
    ax_count.yaxis.get_major_locator().set_params(integer=True)
    ax_count.set_title(f"'{name}' detectors per layer", fontsize=9)
    for layer in result.layers:
        ranked = np.sort(result.iou[layer][:, c])[::-1]
        ax_rank.plot(np.arange(1, len(ranked) + 1), ranked, marker=".", label=layer)
    ax_rank.axhline(
        iou_threshold,
        color="grey",
        linestyle="--",
        linewidth=1,
        label=f"threshold {iou_threshold:g}",
    )
    ax_rank.set_xlabel("unit rank within layer")
    ax_rank.set_ylabel(f"IoU with '{name}'")
    ax_rank.set_title("units ranked by IoU", fontsize=9)
    ax_rank.legend(fontsize=7)
    if show_units:
        obs, layout = observations(adapter, obs)
        masks = np.asarray(masks, dtype=bool)
        for ax in frame_axes.ravel():
            ax.set_axis_off()
        for r, score in enumerate(top, start=1):
            best = top_k_examples(
                adapter,
                obs,
                score.layer,
                score.unit,
                k=n_frames,
                min_separation=max(1, len(obs) // (4 * n_frames)),
            )
            seg = unit_segmentation(
                adapter, obs[best.indices], score.layer, score.unit, score.threshold
            )
            for j, index in enumerate(best.indices):
                ax = frame_axes[r - 1, j]
                # NetDissect style: the frame dimmed except where the unit is on (no overlay
                # colour to confuse with the boxes' own colours)
                shown = layout.newest_frame(obs[index : index + 1])[0].astype(np.float32) / 255.0
                shown = np.where(seg[j][..., None], shown, 0.3 * shown)
                ax.imshow(shown)
                if masks[index].any():
                    ax.contour(
                        masks[index].astype(float), levels=[0.5], colors="cyan", linewidths=0.8
                    )
                if j == 0:
                    ax.set_title(
                        f"{score.layer} #{score.unit}: IoU {score.iou:.3f}, prec {score.precision:.2f}",
                        fontsize=7,
                        loc="left",
                    )
    fig.suptitle(
        f"Network dissection on {result.n_frames} frames (unit threshold: {result.quantile:g} quantile)"
        + ("; bright: unit on, cyan: goal-box mask" if show_units else ""),
        fontsize=10,
    )
    return save_figure(fig, path)
