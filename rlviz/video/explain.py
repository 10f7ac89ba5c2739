"""Explain a whole episode in batches for the video panels: maps float16, one scale per episode.

Attribution runs chunk by chunk (:func:`rlviz.explain.explain_rollout`, ``EXPLAIN_BATCH`` frames
per pass); raw maps go to disk while the colour scale is gathered, then are scaled chunk by chunk,
so a long episode never holds its activations, gradients or maps in memory at once.

A policy has memory when it sees a stack of frames (its layout has K > 1) or carries a recurrent
state. Such an episode gets a memory-reliance trace; a stack also gets one map per stack frame of
one input-space method, for the stack panel (:class:`TimeMaps`).
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext
from typing import Any

import numpy as np
import torch

from rlviz.explain import EXPLAIN_BATCH, MapJob, episode_chunk, explain_rollout, frame_share
from rlviz.layout import ObservationLayout
from rlviz.maps import EpisodeScale, normalize_stack, scale_block
from rlviz.memory import DEFAULT_BATCH as MEMORY_BATCH
from rlviz.memory import MemoryReliance, has_memory, memory_reliance, per_frame_mode, stack_method
from rlviz.methods import is_signed
from rlviz.policy import PolicyAdapter, as_adapter
from rlviz.rollout import Rollout, State, with_layout
from rlviz.spool import Spool, blocks
from rlviz.statemap.policy_states import place_states
from rlviz.targets import ActionLogit, TakenAction
from rlviz.video.episode import EpisodeExplanation

#: The faithfulness table's choice (BENCHMARKS "Faithfulness"): occlusion puts 13x its pixel
#: share of attribution on the goal box and points at it in 80% of frames, the best of the input
#: methods; Grad-CAM is the layer view. Incremental occlusion makes it affordable in videos.
DEFAULT_METHODS = ("occlusion", "gradcam")


def episode_states(adapter: PolicyAdapter, rollout: Rollout) -> State | None:
    """The state entering each step for a recurrent policy (``rollout.states``), else None."""
    if not adapter.recurrent:
        return None
    states = getattr(rollout, "states", None)
    if states is None:
        raise ValueError(
            "a recurrent policy is explained with the state entering each step, but this rollout "
            "has no states; play it with rlviz.rollout.run_episode / collect (which record them) "
            "or replay its observations with rlviz.rollout.episode_outputs"
        )
    if len(states[0]) != len(rollout):
        raise ValueError(
            f"rollout.states has {len(states[0])} steps for an episode of {len(rollout)}; record "
            "one state per step (the one entering it)"
        )
    return states


class TimeMaps:
    """Per-frame maps of a stacked episode: what the map panels and the stack panel show.

    The map panels draw the newest frame, so a stacked episode's input-space methods (gradient
    family, SmoothGrad, IG, guided backprop) are computed per frame (the same backward pass, each
    frame's channels reduced alone) and the panel shows the newest frame's own map: the collapsed
    map would paint where things *were* in past frames onto the newest one. Occlusion and
    perturbation keep their collapsed ("where") map, whose patch covers every frame at a place,
    and the CAM family's layer has mixed the frames already: their panels say "all frames". The
    first input-space method also fills the stack panel (every frame with its map, one scale).
    """

    def __init__(self, layout: ObservationLayout | None, methods: Sequence[str]) -> None:
        self.stacked = layout is not None and layout.stacked
        inputs = [m for m in methods if per_frame_mode(m) == "input"]
        self.method = stack_method(methods) if self.stacked else None
        self.missing = self.stacked and not inputs
        self.frame_maps: dict[str, np.ndarray] = {}
        self.shares: np.ndarray | None = None
        self.newest: list[str] = []  # methods whose map panels show the newest frame's map

    def per_frame(self, method: str) -> bool:
        """Whether ``method`` runs per frame (stacked episodes, input-space methods)."""
        return self.stacked and per_frame_mode(method) == "input"

    def add(
        self, method: str, raw: np.ndarray, mode: str, signed: bool
    ) -> tuple[np.ndarray, tuple[float, float]]:
        """Per-frame raw maps [T, K, H, W] -> (the newest frame's scaled maps [T, H, W], range);
        the stack method's are kept whole, with their frame shares."""
        scaled, ranges = normalize_stack(raw, mode, signed)
        self.newest.append(method)
        if method == self.method:
            self.frame_maps[method] = scaled
            self.shares = frame_share(raw)
        return np.ascontiguousarray(scaled[:, -1]), ranges


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
    spool: Spool | None = None,
) -> EpisodeExplanation:
    """Explain a whole episode in batches (never frame by frame) for the video panels.

    Args:
        methods: attribution methods; each explains log pi(a_t|s_t) of the action taken.
        normalize: ``"episode"`` (one fixed colour scale) or ``"frame"``.
        per_action: a method name to also compute one map per action (PerActionPanel).
        embedding: a fitted ``StateEmbedding`` the states are placed on (from ``embedding_layer``,
            default ``embedding.meta["layer"]``).
        batch_size: images per forward/backward pass (memory knob; None: the method's default).
        spool: keep the maps in this :class:`rlviz.spool.Spool` (disk-backed, flat memory for
            long episodes); None: numpy arrays.

    Two passes, chunk by chunk (:func:`rlviz.explain.explain_rollout`): the first keeps the raw
    maps on disk and gathers each colour scale exactly (:class:`rlviz.maps.EpisodeScale`), the
    second scales them. A recurrent policy is explained with the state entering each step held
    fixed (``rollout.states``); a policy with memory also gets a memory-reliance trace, a stack
    of K frames per-frame maps of one input-space method and their shares (:class:`TimeMaps`).

    Returns:
        An :class:`EpisodeExplanation` with maps float16 [T, H, W] in [0, 1].
    """
    adapter = as_adapter(policy)
    # decided when the episode was recorded; a rollout built by hand reads as the adapter does
    layout = rollout.layout if rollout.layout is not None else adapter.layout
    adapter = with_layout(adapter, layout)  # an env's stack layout reaches every method
    states = episode_states(adapter, rollout)
    n = len(rollout)
    taken = TakenAction(rollout.actions)
    time_maps = TimeMaps(layout, methods)
    jobs = [MapJob(name, name, taken, time_maps.per_frame(name)) for name in methods]
    groups = {name: [name] for name in methods}  # colour scale -> the jobs sharing it
    if time_maps.missing:  # no input-space method among them: the stack panel's own maps
        jobs.append(MapJob(_STACK, time_maps.method, taken, True))
        groups[_STACK] = [_STACK]
    if per_action:
        keys = [f"{_ACTIONS}{k}" for k in range(rollout.probs.shape[1])]
        # Each action's logit, not log pi(k): log pi of a confident action saturates (its
        # gradient carries a factor 1 - pi), which left the chosen action's map blank.
        jobs += [
            MapJob(key, per_action, ActionLogit(np.full(n, k, np.int64)))
            for k, key in enumerate(keys)
        ]
        groups[_ACTIONS] = keys
    method_of = {job.key: job.method for job in jobs}
    signed = {group: is_signed(method_of[keys[0]]) for group, keys in groups.items()}
    stack_key = next((j.key for j in jobs if j.method == time_maps.method and j.per_frame), None)
    with Spool() if spool is None else nullcontext(spool) as store:
        raw = {job.key: store.array(f"raw-{job.key}", episode_chunk(batch_size)) for job in jobs}
        scales = {
            group: EpisodeScale(n * len(keys), signed[group]) for group, keys in groups.items()
        }
        shares = []
        for _, part in explain_rollout(
            adapter, rollout.obs, jobs, layer=layer, batch_size=batch_size, states=states
        ):
            for group, keys in groups.items():
                for key in keys:
                    scales[group].update(part[key])
            if stack_key is not None:
                shares.append(frame_share(part[stack_key]))
            for key, block in part.items():
                raw[key].extend(block)
            del part
        out = _scaled(store, raw, groups, scales, normalize, signed, stack_key)
        for array in raw.values():
            array.discard()  # pass 2 is done with them
        # the caller holds no spool: hand back arrays (short episodes)
        kept = np.asarray if spool is None else (lambda array: array)
        maps = {name: kept(out[name]) for name in methods}
        frame_maps = {time_maps.method: kept(out[_FRAMES])} if _FRAMES in out else {}
        action_maps = {per_action: kept(out[_ACTIONS])} if per_action else {}
    ranges = {
        name: (-scales[name].high if signed[name] else 0.0, scales[name].high)
        for name in [*methods, *([_ACTIONS] if per_action else [])]
    }
    xy = None
    if embedding is not None:
        xy = place_states(adapter, rollout.obs, embedding, embedding_layer, states)
    memory = None
    if has_memory(adapter, layout):
        memory = episode_memory(adapter, rollout, states, layout)
    return EpisodeExplanation(
        rollout=rollout,
        maps=maps,
        map_ranges=ranges,
        map_signed={job.method: is_signed(job.method) for job in jobs},
        action_names=tuple(action_names or adapter.action_names or ()),
        normalize=normalize,
        action_maps=action_maps,
        embedding=embedding if xy is not None else None,
        embedding_xy=xy,
        top_down=top_down,
        meta=dict(meta or {}),
        layout=layout,
        frame_maps=frame_maps,
        frame_shares=np.concatenate(shares) if shares else None,
        memory=memory,
        newest_maps=tuple(j.method for j in jobs if j.per_frame and j.method in maps),
    )


#: Keys of the maps that are not a method's own: the stack panel's fallback method, the
#: per-action maps (one job per action, one scale), and the stack method's per-frame maps.
_STACK, _ACTIONS, _FRAMES = "stack:", "action:", "frames:"


def _scaled(store, raw, groups, scales, mode, signed, stack_key) -> dict:
    """Pass 2: every group's raw maps on its scale, chunk by chunk into float16 arrays of
    ``store``: per method [T, H, W] (a per-frame method: its newest frame's), the stack
    method's [T, K, H, W] under ``_FRAMES``, the per-action maps [T, A, H, W] under ``_ACTIONS``."""
    out = {}
    for group, keys in groups.items():
        high = scales[group].high
        streams = [raw[key].chunks() for key in keys]
        for parts in zip(*streams, strict=True):
            blocks = [block for _, block in parts]
            # per action: [n, A, H, W], one scale over every action
            block = np.stack(blocks, axis=1) if group == _ACTIONS else blocks[0]
            # [n, N, H, W]: the N maps of a step share its scale in "frame" mode
            flat = block.reshape(len(block), -1, block.shape[-1]) if block.ndim == 4 else block
            scaled = scale_block(flat, mode, signed[group], high).reshape(block.shape)
            if group == _ACTIONS:
                _put(out, store, _ACTIONS, scaled)
            elif scaled.ndim == 4:
                if group != _STACK:
                    _put(out, store, group, np.ascontiguousarray(scaled[:, -1]))
                if keys[0] == stack_key:
                    _put(out, store, _FRAMES, scaled)
            else:
                _put(out, store, group, scaled)
    return out


def _put(out: dict, store, key: str, block: np.ndarray) -> None:
    if key not in out:
        out[key] = store.array(f"maps-{key}")
    out[key].extend(block)


def episode_memory(adapter, rollout: Rollout, states, layout):
    """Memory reliance of the taken actions, a block of steps at a time (the blocks of
    :func:`rlviz.memory.memory_reliance`'s own passes, so the same numbers)."""
    parts = []
    for first, obs in blocks(rollout.obs, MEMORY_BATCH):
        rows = slice(first, first + len(obs))
        held = None if states is None else tuple(s[rows] for s in states)
        taken = TakenAction(rollout.actions[rows])
        parts.append(memory_reliance(adapter, obs, taken, states=held, layout=layout))
    kl = np.concatenate([part.kl for part in parts])
    return MemoryReliance(kl=kl, share=np.concatenate([part.share for part in parts]))
