"""Static figures of state maps: scatters coloured by what the agent did or expected, and a
thumbnail mosaic of the observations laid out on the map.

Matplotlib runs on the Agg backend; figures are written atomically (:func:`rlviz.io.atomic_path`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from PIL import Image  # noqa: E402

from rlviz.io import atomic_path  # noqa: E402
from rlviz.statemap.dataset import StateDataset  # noqa: E402
from rlviz.statemap.quality import format_quality  # noqa: E402

# colour name -> (label on the colour bar / legend, "continuous" | "categorical", colormap)
COLORS: dict[str, tuple[str, str, str]] = {
    "value": ("value V(s)", "continuous", "viridis"),
    "action": ("action taken", "categorical", "tab10"),
    "greedy": ("most likely action", "categorical", "tab10"),
    "entropy": ("policy entropy (nats)", "continuous", "magma"),
    "time_to_goal": ("steps to goal", "continuous", "plasma_r"),
    "box_visible": ("goal box visible", "categorical", "coolwarm"),
    "step": ("step in episode", "continuous", "cividis"),
    "episode": ("episode", "continuous", "turbo"),
    "success": ("episode succeeded", "categorical", "coolwarm"),
    "reward": ("reward", "continuous", "viridis"),
}


def save_figure(fig: Figure, path: str | os.PathLike, dpi: int = 120) -> Path:
    """Write ``fig`` as PNG to ``path`` atomically, close it and return the path."""
    path = Path(path)
    try:
        with atomic_path(path, suffix=".png") as tmp:
            fig.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight")
    finally:
        plt.close(fig)
    return path


def color_values(
    dataset: StateDataset, color: str
) -> tuple[np.ndarray, str, str, list[str] | None]:
    """The per-state array behind a colour name: ``(values [N], label, kind, category_names)``,
    ``kind`` ``"continuous"`` or ``"categorical"`` (whose categories 0..K-1 the names label)."""
    if color not in COLORS:
        raise ValueError(f"unknown colour {color!r}; choose one of {', '.join(COLORS)}")
    label, kind, _ = COLORS[color]
    names: list[str] | None = None
    if color == "value":
        values = dataset.values
        if np.isnan(values).all():
            raise ValueError(
                "colour 'value' needs a policy with a critic; this dataset has no values"
            )
    elif color == "action":
        values, names = dataset.actions, list(dataset.action_names)
    elif color == "greedy":
        values, names = dataset.probs.argmax(1), list(dataset.action_names)
    elif color == "entropy":
        p = np.clip(dataset.probs, 1e-12, 1.0)
        values = -(p * np.log(p)).sum(1)
    elif color == "time_to_goal":
        values = dataset.time_to_goal
    elif color == "box_visible":
        if "box_visible" not in dataset.info:
            have = ", ".join(sorted(dataset.info)) or "none"
            raise ValueError(
                "colour 'box_visible' needs the env's ground truth (info 'box_visible'); "
                f"this dataset has infos: {have}. Collect with ground_truth=True"
            )
        values = dataset.info["box_visible"].reshape(len(dataset), -1)[:, 0].astype(int)
        names = ["no", "yes"]
    elif color == "step":
        values = dataset.steps
    elif color == "episode":
        values = dataset.episodes
    elif color == "success":
        values, names = dataset.success.astype(int), ["failed", "succeeded"]
    else:  # reward
        values = dataset.rewards
    return np.asarray(values), label, kind, names


def scatter_map(
    xy: np.ndarray,
    values: np.ndarray,
    *,
    kind: str = "continuous",
    label: str = "",
    category_names: Sequence[str] | None = None,
    title: str = "State map",
    subtitle: str | None = None,
    cmap: str | None = None,
    missing_label: str = "n/a",
    ax: plt.Axes | None = None,
) -> Figure:
    """Scatter of map positions ``xy`` [N, 2] coloured by ``values`` [N].

    Continuous values get a colour bar labelled ``label`` (NaN drawn as small grey points, e.g.
    time to goal in failed episodes); categorical ones (ints 0..K-1) a legend with
    ``category_names``. The caller saves the figure (e.g. with :func:`save_figure`).
    """
    xy = np.asarray(xy)
    values = np.asarray(values)
    if xy.ndim != 2 or xy.shape[1] != 2:
        raise ValueError(f"xy must be [N, 2], got {xy.shape}")
    if values.shape != (len(xy),):
        raise ValueError(f"values must be [N={len(xy)}], got {values.shape}")
    if kind not in ("continuous", "categorical"):
        raise ValueError(f"kind must be 'continuous' or 'categorical', got {kind!r}")
    fig, ax = plt.subplots(figsize=(7, 6)) if ax is None else (ax.figure, ax)
    size = float(np.clip(3000 / max(len(xy), 1), 2, 30))
    if kind == "continuous":
        v = values.astype(float)
        missing = ~np.isfinite(v)
        if missing.any():
            ax.scatter(
                *xy[missing].T, s=size * 0.5, c="lightgrey", linewidths=0, label=missing_label
            )
        if not missing.all():  # a colour bar over no values would show a made-up 0..1 range
            sc = ax.scatter(
                *xy[~missing].T, c=v[~missing], s=size, cmap=cmap or "viridis", linewidths=0
            )
            fig.colorbar(sc, ax=ax, label=label)
        if missing.any():
            ax.legend(loc="best", fontsize=8, markerscale=2)
    else:
        codes = values.astype(int)
        k = int(codes.max()) + 1 if codes.size else 0
        names = list(category_names) if category_names is not None else [str(i) for i in range(k)]
        if len(names) < k:
            raise ValueError(f"{k} categories but only {len(names)} names: {names}")
        palette = plt.get_cmap(cmap or "tab10")
        colours = [
            palette(i / max(len(names) - 1, 1)) if palette.N > 20 else palette(i)
            for i in range(len(names))
        ]
        for code in range(k):
            sel = codes == code
            if sel.any():
                ax.scatter(
                    *xy[sel].T,
                    s=size,
                    color=colours[code],
                    linewidths=0,
                    label=f"{names[code]} ({sel.sum()})",
                )
        ax.legend(title=label, loc="best", fontsize=8, markerscale=2)
    ax.set_title(title if subtitle is None else f"{title}\n{subtitle}", fontsize=10)
    ax.set_xlabel("map x")
    ax.set_ylabel("map y")
    ax.set_aspect("equal", adjustable="datalim")
    return fig


def plot_state_map(
    dataset: StateDataset,
    xy: np.ndarray,
    color: str,
    path: str | os.PathLike,
    *,
    title: str | None = None,
    quality: Mapping[str, float] | None = None,
) -> Path:
    """Write a scatter of the dataset's states at ``xy`` [N, 2] coloured by ``color`` (a name in
    :data:`COLORS`) to the PNG ``path``, with the quality numbers in the subtitle."""
    values, label, kind, names = color_values(dataset, color)
    if len(xy) != len(dataset):
        raise ValueError(f"xy has {len(xy)} rows but the dataset has {len(dataset)} states")
    layer = dataset.meta.get("layer", "?")
    title = title or f"States by {label} (layer {layer}, {len(dataset)} states)"
    fig = scatter_map(
        xy,
        values,
        kind=kind,
        label=label,
        category_names=names,
        title=title,
        subtitle=None if quality is None else format_quality(quality),
        cmap=COLORS[color][2],
        missing_label="no goal ahead (episode failed)" if color == "time_to_goal" else "n/a",
    )
    return save_figure(fig, path)


def _thumbnail(frame: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    img = Image.fromarray(frame if frame.shape[-1] != 1 else frame[..., 0])
    return np.asarray(img.convert("RGB").resize(size, Image.BILINEAR))


def mosaic_cells(xy: np.ndarray, grid: tuple[int, int]) -> dict[tuple[int, int], int]:
    """Snap points to a ``(rows, cols)`` grid over their bounding box: ``{(row, col): index}``
    of the point nearest each occupied cell's centre (row 0 at the top, i.e. the largest y)."""
    rows, cols = grid
    xy = np.asarray(xy, dtype=float)
    lo, hi = xy.min(0), xy.max(0)
    span = np.maximum(hi - lo, 1e-12)
    u = (xy - lo) / span  # [0, 1]
    col = np.minimum((u[:, 0] * cols).astype(int), cols - 1)
    row = np.minimum(((1 - u[:, 1]) * rows).astype(int), rows - 1)
    centre_u = np.stack([(col + 0.5) / cols, 1 - (row + 0.5) / rows], axis=1)
    dist = ((u - centre_u) ** 2).sum(1)
    chosen: dict[tuple[int, int], int] = {}
    for i in np.argsort(dist, kind="stable"):  # closest first: the first point a cell sees wins
        chosen.setdefault((int(row[i]), int(col[i])), int(i))
    return chosen


def plot_mosaic(
    xy: np.ndarray,
    obs: np.ndarray,
    path: str | os.PathLike,
    *,
    cols: int = 20,
    thumb_width: int = 40,
    labels: np.ndarray | None = None,
    label_names: Sequence[str] | None = None,
    title: str = "Observations laid out on the state map",
) -> Path:
    """Write a mosaic of observation thumbnails placed where their states lie on the map.

    Points are snapped to a grid of ``cols`` columns (rows follow the map's aspect), one thumbnail
    per occupied cell (the state nearest the cell centre), so thumbnails never overlap. With
    ``labels`` (ints 0..K-1, e.g. actions) each thumbnail gets a coloured border and a legend.
    ``xy``: [N, 2] map positions; ``obs``: uint8 [N, H, W, C] observations.
    """
    xy = np.asarray(xy)
    obs = np.asarray(obs)
    if obs.ndim != 4 or obs.dtype != np.uint8 or len(obs) != len(xy):
        raise ValueError(f"obs must be uint8 [N={len(xy)}, H, W, C], got {obs.dtype} {obs.shape}")
    if cols < 1 or thumb_width < 4:
        raise ValueError(f"need cols >= 1 and thumb_width >= 4, got {cols}, {thumb_width}")
    h, w = obs.shape[1:3]
    tw, th = thumb_width, max(1, round(thumb_width * h / w))
    span = np.ptp(xy, axis=0)
    # Rows so that a cell's shape on the map matches a thumbnail's: the picture keeps its aspect.
    rows = max(1, round(cols * (span[1] / max(span[0], 1e-12)) * tw / th))
    cells = mosaic_cells(xy, (rows, cols))
    canvas = np.full((rows * th, cols * tw, 3), 255, np.uint8)
    palette = plt.get_cmap("tab10")
    border = max(1, tw // 20)
    for (r, c), i in cells.items():
        tile = _thumbnail(obs[i], (tw, th)).copy()
        if labels is not None:
            rgb = (np.array(palette(int(labels[i]))[:3]) * 255).astype(np.uint8)
            tile[:border], tile[-border:], tile[:, :border], tile[:, -border:] = rgb, rgb, rgb, rgb
        canvas[r * th : (r + 1) * th, c * tw : (c + 1) * tw] = tile
    lo, hi = xy.min(0), xy.max(0)
    fig_w = 10.0
    fig, ax = plt.subplots(figsize=(fig_w, max(2.0, fig_w * canvas.shape[0] / canvas.shape[1])))
    ax.imshow(canvas, extent=(lo[0], hi[0], lo[1], hi[1]), aspect="auto", interpolation="nearest")
    ax.set_title(f"{title} ({len(cells)} of {len(xy)} states shown)", fontsize=10)
    ax.set_xlabel("map x")
    ax.set_ylabel("map y")
    if labels is not None:
        k = int(np.max(labels)) + 1
        names = list(label_names) if label_names is not None else [str(j) for j in range(k)]
        handles = [
            Line2D([], [], marker="s", linestyle="", color=palette(j), label=names[j])
            for j in range(min(k, len(names)))
        ]
        ax.legend(
            handles=handles,
            title="border: action",
            loc="upper left",
            bbox_to_anchor=(1.01, 1),
            fontsize=8,
        )
    return save_figure(fig, path)
