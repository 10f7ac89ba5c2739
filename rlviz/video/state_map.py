"""Fit the state map a video's state-map panel shows: play episodes, map a layer's features."""

from __future__ import annotations

import numpy as np
import torch

from rlviz.hooks import default_layer
from rlviz.policy import PolicyAdapter, as_adapter
from rlviz.rollout import collect
from rlviz.statemap.dataset import layer_features
from rlviz.statemap.embedding import StateEmbedding
from rlviz.video.resources import torch_threads


def default_embedding_layer(model: torch.nn.Module) -> str:
    """The layer a state map is fitted on by default: :func:`rlviz.hooks.default_layer` (the
    model's CAM layer, what ``rlviz tsne`` maps by default, else the last ``nn.Conv2d``)."""
    return default_layer(model)


def fit_state_embedding(
    env,
    policy: PolicyAdapter | torch.nn.Module,
    episodes: int = 8,
    *,
    seed: int | None = 100_000,
    layer: str | None = None,
    pool: str = "flatten",
    method: str = "tsne",
    deterministic: bool = False,
    max_steps: int | None = None,
    progress: bool = False,
) -> StateEmbedding:
    """Play ``episodes`` episodes and fit a state map on ``layer``'s features of every state.

    The map's ``point_data["value"]`` holds V(s) (the panel colours the background by it) and its
    ``meta`` the layer and pooling, so :func:`rlviz.video.explain.explain_episode` can place new
    states on it.

    Returns:
        A fitted :class:`rlviz.statemap.StateEmbedding` (``embedding_`` [N, 2]).
    """
    adapter = as_adapter(policy)
    layer = layer or default_embedding_layer(adapter.model)
    features, values = [], []
    rollouts = collect(
        env,
        adapter,
        episodes,
        seed=seed,
        deterministic=deterministic,
        max_steps=max_steps,
        info_keys=(),
    )
    if progress:
        from tqdm.auto import tqdm  # optional dependency, only for the bar

        rollouts = iter(tqdm(rollouts, total=episodes, unit="ep", desc="fitting the state map"))
    while True:
        with torch_threads(1):  # batch-1 rollout passes: see render_video(threads=...)
            rollout = next(rollouts, None)
            if rollout is None:
                break
            features.append(layer_features(adapter, rollout.obs, layer, pool))
        values.append(
            rollout.values if rollout.values is not None else np.zeros(len(rollout), np.float32)
        )
    feats = np.concatenate(features)
    perplexity = min(30.0, max(2.0, (len(feats) - 1) / 3 - 1))
    embedding = StateEmbedding(method=method, perplexity=perplexity, seed=seed or 0)
    return embedding.fit(
        feats,
        point_data={"value": np.concatenate(values)},
        meta={"layer": layer, "pool": pool},
        progress=progress,
    )
