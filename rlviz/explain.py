"""``rlviz.explain``: several attribution methods on the same frames in one call, and the one
loop that explains a recorded episode chunk by chunk (:func:`explain_rollout`)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from rlviz.methods import AttributionMethod, get_method, method_options
from rlviz.ops import resolve_device
from rlviz.policy import PolicyAdapter, as_adapter
from rlviz.targets import as_target, subset_target


def explain(
    policy: PolicyAdapter | nn.Module,
    obs: object,
    methods: str | AttributionMethod | Iterable[str | AttributionMethod] = ("gradient", "gradcam"),
    layer: str | None = None,
    target: object = None,
    batch_size: int | None = None,
    per_frame: bool = False,
    states: object = None,
    **options: object,
) -> dict[str, np.ndarray]:
    """Attribution maps of ``obs`` under each of ``methods``.

    Args:
        policy: a :class:`PolicyAdapter`, or an ``nn.Module`` (wrapped with the default adapter).
        obs: raw observations, e.g. uint8 [B, H, W, C] or one frame.
        methods: names (see ``rlviz.available_methods()``) or configured method objects.
        layer: layer for the CAM family (default: the last conv layer); others ignore it.
        target: what to explain (see :meth:`AttributionMethod.attribute`).
        batch_size: most images per forward/backward pass.
        per_frame: one map per stack frame, oldest first, for policies that see K frames
            (input methods reduce each frame's channels alone; occlusion and perturbation
            perturb one frame at a time; the CAM family draws on the newest frame only).
        states: for a recurrent policy, the state entering each observation (tuple of
            tensors [B, ...], e.g. ``rollout.states``); each step is explained with it fixed.
        **options: method options. ``name={...}`` (e.g. ``occlusion={"window": 6}``) goes to that
            method only; a plain ``key=value`` goes to every named method that accepts ``key``
            (e.g. ``steps=64`` reaches integrated_gradients).

    Returns:
        dict method name -> float32 [B, H, W] numpy maps ([B, K, H, W] with ``per_frame``), in
        the order of ``methods``.
    """
    adapter = as_adapter(policy)
    if isinstance(methods, (str, AttributionMethod)):
        methods = [methods]
    methods = list(methods)
    names = [m if isinstance(m, str) else m.name for m in methods]
    per_method = {k: v for k, v in options.items() if isinstance(v, dict) and k in names}
    shared = {k: v for k, v in options.items() if k not in per_method}
    used: set[str] = set()
    built: list[AttributionMethod] = []
    for spec in methods:
        if isinstance(spec, AttributionMethod):
            built.append(spec)
            continue
        accepted = set(method_options(spec))
        kwargs = {k: v for k, v in shared.items() if k in accepted}
        used.update(kwargs)
        kwargs.update(per_method.get(spec, {}))
        built.append(get_method(spec, **kwargs))
    unused = sorted(set(shared) - used)
    if unused:
        raise TypeError(
            f"option(s) {unused} are not accepted by any of the methods {names}; pass per-method "
            "options as name={...}"
        )
    how = dict(layer=layer, batch_size=batch_size, per_frame=per_frame, states=states)
    return {
        name: method.attribute(adapter, obs, target, **how).numpy()
        for name, method in zip(names, built, strict=True)
    }


def frame_share(maps: np.ndarray) -> np.ndarray:
    """Attribution mass per stack frame: per-frame maps [B, K, H, W] -> shares [B, K] summing
    to 1 (|map| summed per frame; an all-zero map shares equally)."""
    maps = np.asarray(maps)
    if maps.ndim != 4:
        raise ValueError(
            f"frame_share needs per-frame maps [B, K, H, W] (explain(..., per_frame=True)); got "
            f"shape {list(maps.shape)}"
        )
    mass = np.abs(maps).sum(axis=(2, 3), dtype=np.float64)
    total = mass.sum(axis=1, keepdims=True)
    equal = np.full_like(mass, 1.0 / maps.shape[1])
    return np.where(total > 0, mass / np.where(total > 0, total, 1.0), equal).astype(np.float32)


#: Frames per attribution pass of an episode: big enough to batch well, small enough that a long
#: episode's activations and gradients are never all alive at once (memory flat in its length).
EXPLAIN_BATCH = 128
#: Steps explained per chunk of an episode (a multiple of the batch, so passes split the same
#: way whatever the chunking): each chunk's raw maps are handed on before the next is computed.
EPISODE_CHUNK = 256


@dataclass(frozen=True)
class MapJob:
    """One map row of an episode, filed under ``key`` (e.g. ``"gradient|value"``): ``method``
    explaining ``target`` (anything :func:`explain` takes; per-step targets such as
    ``TakenAction(actions)`` are cut to each pass's rows) at every step, ``per_frame``: one map
    per stack frame ([K, H, W] a step)."""

    key: str
    method: str
    target: object = None
    per_frame: bool = False


def episode_chunk(batch_size: int | None) -> int:
    """Steps per chunk for ``batch_size`` frames per pass: a multiple of the batch near
    :data:`EPISODE_CHUNK`."""
    batch = batch_size or EXPLAIN_BATCH
    return batch * max(1, EPISODE_CHUNK // batch)


def explain_rollout(
    policy: PolicyAdapter | nn.Module,
    obs,
    jobs: Iterable[MapJob],
    *,
    layer: str | None = None,
    batch_size: int | None = EXPLAIN_BATCH,
    states: object = None,
    start: int = 0,
    stop: int | None = None,
) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
    """Raw maps of a recorded episode, chunk by chunk: the one loop that explains an episode
    (the video and the explorer differ only in what they do with the maps).

    Args:
        obs: observations [T, ...] in the policy's layout: an array or an
            :class:`rlviz.spool.StepArray` (only one chunk of it is read at a time).
        batch_size: frames per forward/backward pass; passes start at multiples of it, so the
            maps are those of one pass over the episode in ``batch_size`` batches.
        states: a recurrent policy's state entering each step (tuple of [T, ...] tensors).
        start, stop: explain steps [start, stop) only (a window of the episode).

    Yields:
        (first step of the chunk, key -> float32 raw maps [n, H, W] ([n, K, H, W] per frame)).
    """
    adapter = as_adapter(policy)
    jobs = [(job, as_target(job.target)) for job in jobs]
    step = batch_size or EXPLAIN_BATCH
    stop = len(obs) if stop is None else min(stop, len(obs))
    chunk = episode_chunk(step)
    for first in range(start, stop, chunk):
        last = min(first + chunk, stop)
        block = np.asarray(obs[first:last])
        out: dict[str, np.ndarray] = {}
        for job, target in jobs:
            parts = []
            for s in range(first, last, step):
                rows = slice(s, min(s + step, last))
                part = explain(
                    adapter,
                    block[rows.start - first : rows.stop - first],
                    methods=[job.method],
                    layer=layer,
                    target=subset_target(target, rows),
                    per_frame=job.per_frame,
                    states=None if states is None else tuple(x[rows] for x in states),
                )
                parts.append(part[job.method])
            out[job.key] = np.concatenate(parts).astype(np.float32, copy=False)
        yield first, out


def attribute_episode(
    policy: PolicyAdapter | nn.Module,
    obs,
    method: str,
    target: object,
    *,
    layer: str | None = None,
    batch_size: int | None = EXPLAIN_BATCH,
    per_frame: bool = False,
    states: object = None,
) -> np.ndarray:
    """Raw maps float32 [T, H, W] ([T, K, H, W] ``per_frame``) of one method and target over a
    whole episode: :func:`explain_rollout` of one job, gathered into one array."""
    job = MapJob("maps", method, target, per_frame)
    chunks = explain_rollout(policy, obs, [job], layer=layer, batch_size=batch_size, states=states)
    return np.concatenate([part["maps"] for _, part in chunks])


#: Frames per attribution pass on a GPU: a CUDA card keeps 256 84x84x4 frames' activations and
#: gradients in well under 1 GB and is faster per frame with bigger batches.
CUDA_BATCH = 256


def device_batch(device) -> int:
    """Frames per attribution pass for ``device``: :data:`CUDA_BATCH` on CUDA, else
    :data:`EXPLAIN_BATCH` (CPU: bigger batches only cost memory)."""
    return CUDA_BATCH if torch.device(device).type == "cuda" else EXPLAIN_BATCH


def on_device(policy: PolicyAdapter | nn.Module, device) -> PolicyAdapter:
    """``policy`` as an adapter with its model moved to ``device`` (``"cpu"``, ``"cuda"``,
    ``"auto"``; see :func:`rlviz.ops.resolve_device` for the error when CUDA is absent)."""
    adapter = as_adapter(policy)
    adapter.model.to(resolve_device(device))
    return adapter


def check_window(from_step: int, to_step: int | None, max_steps: int | None = None) -> None:
    """Raise a one-line ``ValueError`` for a step window that cannot hold a step."""
    if from_step < 0:
        raise ValueError(f"from_step must be >= 0, got {from_step}")
    if to_step is not None and to_step <= from_step:
        raise ValueError(
            f"to_step={to_step} must be above from_step={from_step}; the window is the steps "
            "[from_step, to_step)"
        )
    if max_steps is not None and from_step >= max_steps:
        raise ValueError(
            f"from_step={from_step} is at or past max_steps={max_steps}; no step would be drawn"
        )
