"""Report-wide views of the explorer: the state map over every explored step, and the NMF layer
attribution shared by all episodes."""

from __future__ import annotations

import warnings

import numpy as np

from rlviz.explorer.nmf import (
    NMF_FIT_FRAMES,
    NMFAttribution,
    nmf_attribution,
    nmf_attribution_streamed,
    visualize_directions,
)
from rlviz.hooks import layer_activations
from rlviz.ops import evenly_spaced
from rlviz.policy import PolicyAdapter
from rlviz.spool import Spool

#: Above this many states the state map is fitted on this many, evenly spaced, and every state is
#: placed on it (:func:`rlviz.statemap.policy_states.place_states`).
STATEMAP_FIT_STATES = 2048

#: Steps whose NMF maps are upsampled at once (float32 at map size: ~28 KB a step for 4 features).
SHEET_BLOCK = 256

#: Legend colours of NMF features (colour-blind-safe Okabe-Ito order), as RGB.
FEATURE_COLORS = (
    (230, 159, 0),
    (86, 180, 233),
    (0, 158, 115),
    (240, 228, 66),
    (0, 114, 178),
    (213, 94, 0),
    (204, 121, 167),
    (255, 255, 255),
)


def state_map(
    adapter: PolicyAdapter,
    obs: np.ndarray,
    values: np.ndarray,
    *,
    layer: str | None = None,
    embedding=None,
    method: str = "tsne",
    seed: int = 0,
) -> dict | None:
    """Every explored state placed on a 2-D map of ``layer``'s features.

    With ``embedding`` (a fitted :class:`rlviz.statemap.embedding.StateEmbedding`) states are
    placed on it; else a map is fitted on these states (t-SNE, perplexity scaled to their count).

    Returns:
        ``{"xy": [N, 2] in [0, 1] (y up), "layer", "method"}``, or None with fewer than 5 states.
    """
    from rlviz.hooks import default_layer
    from rlviz.statemap.embedding import StateEmbedding
    from rlviz.statemap.policy_states import place_states

    if embedding is not None:
        xy = place_states(adapter, obs, embedding, layer)
        return {"xy": np.round(embedding.to_unit(xy), 4).tolist(), "layer": layer, "method": "fit"}
    if len(obs) < 5:
        return None
    layer = layer or default_layer(adapter.model)
    # a long episode: the map is fitted on states spread evenly over it, and every state is then
    # placed on it a batch at a time (its features, ~12 KB a step for a conv layer, never all held)
    fit = evenly_spaced(len(obs), STATEMAP_FIT_STATES)
    sampled = len(fit) < len(obs)
    fit_obs = obs[fit] if sampled else obs
    feats = layer_activations(adapter, fit_obs, layer, pool="flatten")[layer].numpy()
    # as fit_state_embedding: perplexity 30, lowered for small maps
    perplexity = min(30.0, max(2.0, (len(feats) - 1) / 3 - 1))
    emb = StateEmbedding(method=method, perplexity=perplexity, seed=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a small report's perplexity warning is expected
        meta = {"layer": layer, "pool": "flatten"}
        emb.fit(feats, point_data={"value": np.asarray(values)[fit]}, meta=meta)
    del feats
    xy = emb.to_unit(place_states(adapter, obs, emb, layer) if sampled else emb.embedding_)
    return {"xy": np.round(xy, 4).tolist(), "layer": layer, "method": method}


def nmf_view(
    adapter: PolicyAdapter,
    obs: np.ndarray,
    *,
    layer: str | None,
    target,
    n_features: int,
    vis_steps: int,
    seed: int = 0,
    map_size: tuple[int, int] | None = None,
    layout=None,
    keep: Spool | None = None,
) -> tuple[NMFAttribution, np.ndarray, list[np.ndarray], dict]:
    """NMF layer attribution over all explored steps, for the page.

    Returns:
        (the :class:`NMFAttribution`, uint8 maps [N, F, h, w] at ``map_size`` (default the
        frame size) on one scale per feature, feature visualisations uint8 [H, W, 3] per
        feature (a stack's newest frame), the legend's JSON). ``layout`` (an
        :class:`rlviz.ObservationLayout`, default read off ``obs``) gives the frame size.
        With ``keep`` the uint8 maps are an array on disk there.
    """
    from rlviz.hooks import default_layer

    layout = layout or adapter.layout_for(obs[:1])
    size = tuple(int(s) for s in layout.image_size(obs.shape[1:]))
    layer = layer or default_layer(adapter.model)
    probe = layer_activations(adapter, obs[:1], layer, stop_early=True)[layer]
    n_features = min(n_features, probe.shape[1])
    if len(obs) > NMF_FIT_FRAMES:  # a long episode: fitted on a sample, projected a batch at a time
        result = nmf_attribution_streamed(adapter, obs, layer, target, n_features, seed=seed)
    else:
        result = nmf_attribution(adapter, obs, layer, target, n_features=n_features, seed=seed)
    blocks = []  # upsampled a block of steps at a time: float32 at map size is 4 bytes a pixel
    maps = keep.array(keep.unique("nmf")) if keep is not None else None
    for start in range(0, len(obs), SHEET_BLOCK):
        up = result.upsampled(map_size or size, start, start + SHEET_BLOCK)
        block = np.clip(np.round(up / result.scale[None, :, None, None] * 255.0), 0, 255)
        if maps is not None:
            maps.extend(block.astype(np.uint8))
        else:
            blocks.append(block.astype(np.uint8))
    if maps is None:
        maps = np.concatenate(blocks)
    images = (
        visualize_directions(
            adapter, result, size, steps=vis_steps, seed=seed, frames=layout.frames
        )
        if vis_steps
        else []
    )
    legend = {
        "layer": result.layer,
        "target": result.target,
        "error": round(result.reconstruction_error, 4),
        "features": [
            {
                "color": list(FEATURE_COLORS[f % len(FEATURE_COLORS)]),
                "top_channels": [int(c) for c in np.argsort(-result.directions[f])[:3]],
                "share": round(float(result.maps[:, f].sum() / max(result.maps.sum(), 1e-12)), 4),
            }
            for f in range(result.n_features)
        ],
    }
    return result, maps, images, legend
