"""``rlviz.explain``: several attribution methods on the same frames in one call."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from torch import nn

from rlviz.methods import AttributionMethod, get_method, method_options
from rlviz.policy import PolicyAdapter, as_adapter


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
    results: dict[str, np.ndarray] = {}
    for name, method in zip(names, built, strict=True):
        results[name] = method.attribute(
            adapter,
            obs,
            target,
            layer=layer,
            batch_size=batch_size,
            per_frame=per_frame,
            states=states,
        ).numpy()
    return results


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
