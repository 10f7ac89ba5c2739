"""A policy's states on a state map: fit one from played episodes, place an episode's states on it.

The video's state-map panel and the explorer's state view both read a layer's features of each
state (:func:`rlviz.statemap.dataset.layer_features`); the map's ``meta`` names that layer and its
pooling, so new states land where the fitted ones did.
"""

from __future__ import annotations

from contextlib import nullcontext

import numpy as np
import torch

from rlviz.hooks import default_layer
from rlviz.ops import torch_threads
from rlviz.policy import PolicyAdapter, as_adapter
from rlviz.rollout import State, collect
from rlviz.statemap.dataset import layer_features
from rlviz.statemap.embedding import StateEmbedding

#: States placed on the state map per pass (their features are never all held).
EMBED_BATCH = 256


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
    """A :class:`rlviz.statemap.StateEmbedding` fitted on ``layer``'s features of every state of
    ``episodes`` played episodes. Its ``point_data["value"]`` holds V(s) (the panel colours the
    background by it) and its ``meta`` the layer and pooling, so :func:`place_states` can place
    new states on it.
    """
    adapter = as_adapter(policy)
    # the model's CAM layer (what `rlviz tsne` maps by default), else the last nn.Conv2d
    layer = layer or default_layer(adapter.model)
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


def embedding_layer_of(embedding) -> tuple[str | None, str]:
    """(layer, pool) an embedding was fitted on, from its metadata (``layer``, ``pool``)."""
    meta = getattr(embedding, "meta", {}) or {}
    return meta.get("layer"), meta.get("pool", "flatten")


def place_states(
    adapter: PolicyAdapter,
    obs: np.ndarray,
    embedding,
    layer: str | None = None,
    states: State | None = None,
) -> np.ndarray:
    """float32 [T, 2]: where each observation lands on a fitted state ``embedding`` (fast path).

    ``layer`` defaults to the one the map was fitted on (``embedding.meta["layer"]``); a recurrent
    policy reads each step with its entering ``states`` [T, ...] held.
    """
    fitted, pool = embedding_layer_of(embedding)
    layer = layer or fitted
    if layer is None:
        raise ValueError(
            "the state embedding does not say which layer it was fitted on (meta['layer']); "
            "pass embedding_layer=..."
        )
    placed = []
    for s in range(0, len(obs), EMBED_BATCH):  # in chunks: a long episode's features never held
        held = None if states is None else tuple(part[s : s + EMBED_BATCH] for part in states)
        with adapter.holding_state(held) if held is not None else nullcontext():
            feats = layer_features(adapter, obs[s : s + EMBED_BATCH], layer, pool, EMBED_BATCH)
        placed.append(embedding.transform(feats, fast=True))
    return np.concatenate(placed)
