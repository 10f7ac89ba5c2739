"""The sweep's table: one row per snapshot, saliency drift between rows, unit comparison, and
the outputs (CSV, JSON, figure), each written atomically through :mod:`rlviz.io`."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from rlviz.faithfulness.checks import spearman
from rlviz.io import json_ready, save_csv, save_figure


def _mean(values: Sequence[float]) -> float:
    return float(np.mean(values)) if len(values) else float("nan")


def episode_summary(blocks: Sequence[Mapping]) -> dict:
    """Per-episode lists of a checkpoint's episode blocks (in block order) joined and averaged."""
    successes = [s for b in blocks for s in b["successes"]]
    steps = [n for b in blocks for n in b["steps"]]
    ablated = [b["ablated"] for b in blocks]
    out = {
        "episodes": len(successes),
        "success_rate": _mean(successes),
        "mean_steps": _mean(steps),
        "success_ablated": float("nan"),
    }
    if ablated and all(a is not None for a in ablated):
        out["success_ablated"] = _mean([s for a in ablated for s in a["successes"]])
    out["ablation_drop"] = out["success_rate"] - out["success_ablated"]
    return out


def build_rows(
    checkpoints: Sequence[str],
    labels: Sequence[str],
    analyses: Mapping[str, Mapping],
    episodes: Mapping[str, Sequence[Mapping]],
    methods: Sequence[str],
) -> list[dict]:
    """One flat row per checkpoint, in the order given; drift compares each row to the one before."""
    rows, previous = [], None
    for checkpoint, label in zip(checkpoints, labels, strict=True):
        a = analyses[checkpoint]
        row = {"label": label, "checkpoint": str(checkpoint), "steps": a["steps"]}
        row.update(episode_summary(episodes[checkpoint]))
        row["ablation_kl"] = a["ablation_kl"]
        row["ablation_flips"] = a["ablation_flips"]
        row["top_units"] = " ".join(
            f"{layer}#{u}" for layer, units in a["top_units"].items() for u in units
        )
        if a["memory_reliance"] is not None:
            row["memory_kl"] = a["memory_reliance"]["kl"]
            row["memory_share"] = a["memory_reliance"]["share"]
        row["mask_share"] = a["mask_share"]
        for m in methods:
            row[f"pointing_{m}"] = a["faithfulness"][m]["pointing"]
            row[f"mass_{m}"] = a["faithfulness"][m]["mass"]
        for m in methods:
            drift = float("nan")
            if previous is not None:
                drift = float(np.nanmean(spearman(previous["maps"][m], a["maps"][m])))
            row[f"drift_{m}"] = drift
        row.update({f"detectors_{layer}": count for layer, count in a["detectors"].items()})
        row["detectors_total"] = sum(a["detectors"].values())
        rows.append(row)
        previous = a
    return rows


def unit_comparison(before: Mapping, after: Mapping) -> dict:
    """Which box detectors of ``before`` (an analysis) survived in ``after``, which were born,
    which were lost: lists of ``"layer#unit"``, with the counts per layer."""
    b = {f"{layer}#{unit}" for layer, unit, _ in before["detector_units"]}
    a = {f"{layer}#{unit}" for layer, unit, _ in after["detector_units"]}

    def key(name: str) -> tuple[str, int]:
        layer, unit = name.rsplit("#", 1)
        return layer, int(unit)

    out = {
        "survived": sorted(a & b, key=key),
        "born": sorted(a - b, key=key),
        "lost": sorted(b - a, key=key),
    }
    out["per_layer"] = {
        layer: {
            k: sum(1 for n in out[k] if key(n)[0] == layer) for k in ("survived", "born", "lost")
        }
        for layer in after["detectors"]
    }
    return out


def write_csv(rows: Sequence[Mapping], path: str | os.PathLike) -> Path:
    """The rows as CSV (columns: the union of the rows' keys, first seen first; NaN left empty)."""
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    cells = [{k: "" if v is None else v for k, v in json_ready(dict(row)).items()} for row in rows]
    return save_csv(cells, columns, path)


def _lines(ax, steps, rows, columns: Mapping[str, str], ylabel: str, title: str = "") -> None:
    shown = []
    for column, label in columns.items():
        values = [r.get(column, float("nan")) for r in rows]
        values = [float("nan") if v is None else float(v) for v in values]
        shown += values
        ax.plot(steps, values, marker="o", label=label)
    ax.set_ylabel(ylabel, fontsize=8)
    ax.set_title(title or ylabel, fontsize=9)
    ax.tick_params(labelsize=7)
    finite = [v for v in shown if np.isfinite(v)]
    if finite and max(finite) == min(finite) == 0:  # all zero: say 0..1, not -0.04..0.04
        ax.set_ylim(-0.05, 1.0)
    if len(columns) > 1:
        ax.legend(fontsize=6)
    # Steps as 200k / 1.2M on the axis, not a "1e6" offset in the corner.
    from matplotlib.ticker import FuncFormatter

    ax.xaxis.set_major_formatter(
        FuncFormatter(lambda x, _: f"{x / 1e6:g}M" if abs(x) >= 1e6 else f"{x / 1e3:g}k")
    )


def plot_sweep(
    rows: Sequence[Mapping], methods: Sequence[str], path: str | os.PathLike, title: str = ""
) -> Path:
    """Every metric of the table against training steps, one panel per metric; returns the PNG."""
    from matplotlib.figure import Figure

    # Training steps in all: a fine-tune's snapshots continue its init checkpoint's axis.
    steps = [r.get("steps_in_all", r["steps"]) for r in rows]
    layers = [k[len("detectors_") :] for k in rows[0] if k.startswith("detectors_")]
    panels = [
        (
            {"success_rate": "intact", "success_ablated": "top detectors off"},
            "success rate",
            "Success on held-out seeds",
        ),
        ({"mean_steps": "all episodes"}, "mean steps", "Steps per episode"),
        ({f"pointing_{m}": m for m in methods}, "pointing game", "Map peaks on the box"),
        (
            {**{f"mass_{m}": m for m in methods}, "mask_share": "chance (box area)"},
            "mass in box",
            "Attribution mass on the box",
        ),
        ({f"detectors_{layer}": layer for layer in layers}, "units", "Box-detector units"),
        (
            {"ablation_drop": "success drop", "ablation_kl": "KL on probe frames"},
            "ablation",
            "Top detectors switched off",
        ),
        (
            {f"drift_{m}": m for m in methods},
            "rank corr. to previous",
            "Saliency drift between snapshots",
        ),
    ]
    if any("memory_kl" in r for r in rows):
        memory = {"memory_kl": "KL, memory removed", "memory_share": "grad x input share"}
        panels.append((memory, "memory reliance", "Memory reliance"))
    fig = Figure(figsize=(13, 6), dpi=100, layout="constrained")
    axes = fig.subplots(2, 4, squeeze=False).ravel()
    # Where a fine-tune took over from its init checkpoint (runs swept together, one axis).
    starts = sorted({r["steps_in_all"] - r["steps"] for r in rows if "steps_in_all" in r} - {0})
    for ax, (columns, ylabel, panel_title) in zip(axes, panels, strict=False):
        _lines(ax, steps, rows, columns, ylabel, panel_title)
        ax.set_xlabel("training steps", fontsize=8)
        for start in starts:
            ax.axvline(start, color="0.6", linestyle="--", linewidth=1)
    for start in starts:
        axes[0].annotate(
            "fine-tune",
            (start, 0),  # at the foot of the line: the legend sits at the top
            xycoords=("data", "axes fraction"),
            xytext=(3, 4),
            textcoords="offset points",
            fontsize=7,
            color="0.4",
        )
    for ax in axes[len(panels) :]:
        ax.set_axis_off()
    fig.suptitle(title or f"Sweep over {len(rows)} snapshots", fontsize=10)
    return save_figure(fig, path)
