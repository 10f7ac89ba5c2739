"""Explain a whole episode in batches for the video panels: maps float16, one scale per episode.

Attribution runs in passes of ``EXPLAIN_BATCH`` frames into one preallocated array, and maps are
normalised chunk by chunk, so a long episode never holds its activations, gradients or raw maps
more than once.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext
from typing import Any

import numpy as np
import torch

from rlviz.explain import explain
from rlviz.memory import memory_reliance
from rlviz.methods import available_methods, get_method
from rlviz.policy import PolicyAdapter, as_adapter
from rlviz.rollout import Rollout
from rlviz.statemap.dataset import layer_features
from rlviz.targets import TakenAction
from rlviz.video.episode import EpisodeExplanation
from rlviz.video.scale import (  # noqa: F401  (MAP_DTYPE, NORMALIZE_MODES: part of this API)
    MAP_DTYPE,
    NORMALIZE_MODES,
    is_signed,
    normalize_maps,
    normalize_stack,
)
from rlviz.video.timeline import (
    State,
    TimeMaps,
    episode_layout,
    episode_states,
    has_memory,
    with_layout,
)

#: The faithfulness table's choice (BENCHMARKS "Faithfulness"): occlusion puts 13x its pixel
#: share of attribution on the goal box and points at it in 80% of frames, the best of the input
#: methods; Grad-CAM is the layer view. Incremental occlusion makes it affordable in videos.
DEFAULT_METHODS = ("occlusion", "gradcam")
#: Frames per attribution pass: big enough to batch well, small enough that a long episode's
#: activations and gradients are never all alive at once (memory flat in episode length).
EXPLAIN_BATCH = 128
#: States placed on the state map per pass (their features are never all held).
EMBED_BATCH = 256


def check_methods(methods: Sequence[str]) -> None:
    """Raise ``ValueError`` naming the valid methods when one of ``methods`` is unknown."""
    for name in methods:
        try:
            get_method(name)
        except ValueError:
            raise ValueError(
                f"unknown attribution method {name!r}; valid: {', '.join(available_methods())}"
            ) from None


def attribute_episode(
    adapter: PolicyAdapter,
    obs: np.ndarray,
    method: str,
    actions: np.ndarray,
    *,
    layer: str | None = None,
    batch_size: int | None = EXPLAIN_BATCH,
    per_frame: bool = False,
    states: State | None = None,
) -> np.ndarray:
    """Raw maps float32 [T, H, W] ([T, K, H, W] ``per_frame``) of ``method`` for
    log pi(actions_t | s_t), chunk by chunk into one preallocated array (no list of chunks plus a
    concatenated copy). A recurrent policy's step t is explained with ``states`` [T, ...] held."""
    step = batch_size or EXPLAIN_BATCH
    out = None
    for start in range(0, len(obs), step):
        rows = slice(start, start + step)
        part = explain(
            adapter,
            obs[rows],
            methods=[method],
            layer=layer,
            target=TakenAction(actions[rows]),
            per_frame=per_frame,
            states=None if states is None else tuple(s[rows] for s in states),
        )[method]
        if out is None:
            out = np.empty((len(obs), *part.shape[1:]), np.float32)
        out[start : start + len(part)] = part
    return out


def per_action_maps(
    adapter: PolicyAdapter, rollout: Rollout, method: str, normalize: str, **options: Any
) -> np.ndarray:
    """[T, A, H, W]: a map of log pi(k | s_t) for every action k, all actions on one scale."""
    n = len(rollout)
    per = [
        attribute_episode(adapter, rollout.obs, method, np.full(n, k, np.int64), **options)
        for k in range(rollout.probs.shape[1])
    ]
    return normalize_stack(np.stack(per, axis=1), normalize, is_signed(method))[0]


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


def explain_episode(
    policy: PolicyAdapter | torch.nn.Module,
    rollout: Rollout,
    methods: Sequence[str] = DEFAULT_METHODS,
    *,
    layer: str | None = None,
    normalize: str = "episode",
    per_action: str | None = None,
    embedding=None,
    embedding_layer: str | None = None,
    top_down: Sequence[np.ndarray] | None = None,
    action_names: Sequence[str] | None = None,
    batch_size: int | None = EXPLAIN_BATCH,
    meta: dict[str, Any] | None = None,
) -> EpisodeExplanation:
    """Explain a whole episode in batches (never frame by frame) for the video panels.

    Args:
        policy: the policy that played ``rollout``.
        methods: attribution methods (``rlviz.methods`` names); each explains log pi(a_t|s_t) of
            the action taken.
        layer: layer for CAM-type methods (default: the method's, usually the last conv).
        normalize: ``"episode"`` (one fixed colour scale) or ``"frame"``.
        per_action: a method name to also compute one map per action (PerActionPanel).
        embedding: a fitted ``StateEmbedding``; states are placed on it (``transform(fast=True)``).
        embedding_layer: the layer its features come from (default: ``embedding.meta["layer"]``).
        top_down: per-step top-down images of the episode, if any.
        batch_size: images per forward/backward pass (memory knob; None: the method's default).

    A policy with memory gets more: a recurrent one is explained step by step with the state
    entering each step held fixed (``rollout.states``), and a memory-reliance trace
    (:func:`rlviz.memory.memory_reliance`: one extra forward and backward pass per step). A stack
    of K frames gets per-frame maps of the first input-space method (the stack panel) and their
    frame shares; its map panels show the newest frame's own map (see :class:`TimeMaps`).

    Returns:
        An :class:`EpisodeExplanation` with maps float16 [T, H, W] in [0, 1].
    """
    adapter = as_adapter(policy)
    layout = episode_layout(adapter, rollout)
    adapter = with_layout(adapter, layout)  # an env's stack layout reaches every method
    states = episode_states(adapter, rollout)
    options = {"layer": layer, "batch_size": batch_size, "states": states}
    maps, ranges, signs = {}, {}, {}
    time_maps = TimeMaps(layout, methods)
    for name in methods:  # one method at a time: one raw [T, H, W] float32 alive at once
        signs[name] = is_signed(name)
        per_frame = time_maps.per_frame(name)
        raw = attribute_episode(
            adapter, rollout.obs, name, rollout.actions, per_frame=per_frame, **options
        )
        if per_frame:
            maps[name], ranges[name] = time_maps.add(name, raw, normalize, signs[name])
        else:
            maps[name], ranges[name] = normalize_maps(raw, normalize, signs[name])
        del raw
    if time_maps.missing:  # no input-space method among them: the stack panel's own maps
        name = time_maps.method
        raw = attribute_episode(
            adapter, rollout.obs, name, rollout.actions, per_frame=True, **options
        )
        time_maps.add(name, raw, normalize, is_signed(name))
        signs.setdefault(name, is_signed(name))
    action_maps = {}
    if per_action:
        signs[per_action] = is_signed(per_action)
        action_maps[per_action] = per_action_maps(
            adapter, rollout, per_action, normalize, **options
        )
    xy = None
    if embedding is not None:
        xy = place_states(adapter, rollout.obs, embedding, embedding_layer, states)
    memory = None
    if has_memory(adapter, layout):
        memory = memory_reliance(
            adapter, rollout.obs, TakenAction(rollout.actions), states=states, layout=layout
        )
    return EpisodeExplanation(
        rollout=rollout,
        maps=maps,
        map_ranges=ranges,
        map_signed=signs,
        action_names=tuple(action_names or adapter.action_names or ()),
        normalize=normalize,
        action_maps=action_maps,
        embedding=embedding if xy is not None else None,
        embedding_xy=xy,
        top_down=top_down,
        meta=dict(meta or {}),
        layout=layout,
        frame_maps=time_maps.frame_maps,
        frame_shares=time_maps.shares,
        memory=memory,
        newest_maps=tuple(m for m in time_maps.newest if m in maps),
    )
