"""Nearest neighbours of a frame in a layer's feature space (L2), beside those in pixel space.

Frames whose features are close are states the network treats alike; comparing with pixel-space
neighbours shows what the layer ignores (texture, exact position) and what it keeps.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from rlviz.features._common import BATCH, check_frames, display_rgb, image_grid, observations
from rlviz.io import save_figure
from rlviz.policy import PolicyAdapter
from rlviz.statemap.dataset import layer_features


@dataclass
class Neighbours:
    """The ``k`` nearest frames of a dataset to a query.

    Attributes:
        indices: int64 [k], dataset positions, nearest first.
        distances: float32 [k], L2 distances in the space searched.
        space: the layer name, or ``"pixels"``.
    """

    indices: np.ndarray
    distances: np.ndarray
    space: str


def _nearest(
    bank: torch.Tensor, query: torch.Tensor, k: int, exclude: Iterable[int], space: str
) -> Neighbours:
    distances = torch.cdist(query[None].double(), bank.double())[0]
    excluded = [int(i) for i in exclude]
    if excluded:
        distances[excluded] = float("inf")
    available = int(torch.isfinite(distances).sum())
    if available == 0:
        raise ValueError("every frame of the dataset is excluded; nothing to compare with")
    order = torch.argsort(distances, stable=True)[: min(k, available)]
    return Neighbours(order.numpy().astype(np.int64), distances[order].float().numpy(), space)


def nearest_neighbours(
    adapter: PolicyAdapter,
    obs: np.ndarray,
    query: np.ndarray,
    layer: str,
    k: int = 8,
    *,
    exclude: Iterable[int] = (),
    features: torch.Tensor | None = None,
    batch_size: int = BATCH,
) -> Neighbours:
    """The ``k`` frames of ``obs`` [N, H, W, C] nearest to ``query`` [H, W, C] in ``layer``'s
    feature space (L2 over the flattened activation).

    Args:
        exclude: dataset indices to skip (the query itself, or its neighbours in time).
        features: precomputed :func:`rlviz.statemap.layer_features` of ``obs`` [N, D] (numpy or
            torch), to reuse across queries.
    """
    obs, _ = observations(adapter, obs)
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    if features is None:
        features = layer_features(adapter, obs, layer, batch_size=batch_size)
    bank = torch.as_tensor(features)
    if len(bank) != len(obs):
        raise ValueError(
            f"features has {len(bank)} rows for {len(obs)} frames; compute them from obs"
        )
    q = torch.as_tensor(
        layer_features(adapter, observations(adapter, query, "query")[0], layer, batch_size=BATCH)
    )
    if len(q) != 1:
        raise ValueError(f"query must be one frame [H, W, C], got {len(q)} frames")
    return _nearest(bank, q[0], k, exclude, layer)


def pixel_neighbours(
    obs: np.ndarray, query: np.ndarray, k: int = 8, *, exclude: Iterable[int] = ()
) -> Neighbours:
    """The ``k`` frames of ``obs`` nearest to ``query`` in raw pixel space (L2 on [0, 1] values)."""
    obs = check_frames(obs)
    query = check_frames(query, "query")
    bank = torch.as_tensor(obs.reshape(len(obs), -1), dtype=torch.float32) / 255.0
    q = torch.as_tensor(query.reshape(-1), dtype=torch.float32) / 255.0
    if q.numel() != bank.shape[1]:
        raise ValueError(
            f"query has shape {query.shape[1:]}, dataset frames {obs.shape[1:]}; they must match"
        )
    return _nearest(bank, q, k, exclude, "pixels")


def plot_neighbours(
    obs: np.ndarray,
    query: np.ndarray,
    rows: Neighbours | list[Neighbours],
    path: str | os.PathLike,
    *,
    captions: np.ndarray | None = None,
) -> Path:
    """A strip per neighbour set: the query, then its neighbours with their distances.

    Args:
        captions: optional per-frame labels (e.g. the action taken) printed under each frame.

    Returns the PNG path.
    """
    obs = check_frames(obs)
    rows = [rows] if isinstance(rows, Neighbours) else list(rows)
    cols = 1 + max(len(r.indices) for r in rows)
    fig, axes = image_grid(1.45 * cols, 1.55 * len(rows) + 0.45, len(rows), cols)
    for r, found in enumerate(rows):
        axes[r, 0].imshow(display_rgb(check_frames(query, "query")[0]))
        axes[r, 0].set_title("query", fontsize=8, fontweight="bold")
        axes[r, 0].text(
            -0.1,
            0.5,
            found.space,
            transform=axes[r, 0].transAxes,
            rotation=90,
            ha="right",
            va="center",
            fontsize=8,
        )
        for ax, index, dist in zip(axes[r, 1:], found.indices, found.distances, strict=False):
            ax.imshow(display_rgb(obs[index]))
            extra = f"\n{captions[index]}" if captions is not None else ""
            ax.set_title(f"#{index}  d={dist:.2f}{extra}", fontsize=7)
    spaces = " vs ".join(repr(r.space) for r in rows)
    fig.suptitle(f"Nearest neighbours of the query frame (L2): {spaces}", fontsize=10)
    return save_figure(fig, path)
