"""Layer attribution reduced by NMF: which few features of a hidden layer a decision rests on.

Following "Understanding RL Vision" (Hilton et al., Distill 2020, https://distill.pub/2020/
understanding-rl-vision): attribute a target (V(s) or an action's log-probability) to a hidden
layer's activations with activation x gradient, then factorise the non-negative part of that
attribution over all positions of all frames, ``X [N*h*w, C] ~ W [N*h*w, F] @ H [F, C]``, with
scikit-learn's NMF. Each of the F rows of ``H`` is a direction in channel space (a "feature"),
each column of ``W`` says where in each frame that feature carries the decision.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from rlviz.hooks import activations, default_layer
from rlviz.ops import evenly_spaced
from rlviz.policy import PolicyAdapter, as_adapter
from rlviz.targets import as_target, subset_target

#: Signs of the attribution factorised: evidence for the target, against it, or either.
SIGNS = ("positive", "negative", "abs")


@dataclass
class NMFAttribution:
    """Layer attribution of a set of frames, factorised into a few features.

    Attributes:
        layer: the hidden layer attributed to.
        target: a name for what was explained (``"value"``, ``"action 2"``, ...).
        maps: float32 [N, F, h, w], each feature's attribution at layer resolution (>= 0).
        directions: float32 [F, C], each feature's direction in channel space (rows of NMF's H).
        reconstruction_error: ``||X - W H|| / ||X||`` (Frobenius), 0 for an exact factorisation.
        scale: float32 [F], a high percentile of each feature's maps (for a shared colour scale).
        raw: float32 [N, C, h, w] attribution before factorising (kept only with ``keep_raw``).
    """

    layer: str
    target: str
    maps: np.ndarray
    directions: np.ndarray
    reconstruction_error: float
    scale: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    raw: np.ndarray | None = None

    @property
    def n_features(self) -> int:
        return int(self.directions.shape[0])

    def upsampled(
        self, size: tuple[int, int], start: int = 0, stop: int | None = None
    ) -> np.ndarray:
        """Feature maps of frames [start, stop) at ``size``: float32 [n, F, H, W] (bilinear; a
        long episode's are upsampled a block of frames at a time)."""
        from rlviz.maps import upsample

        maps = self.maps[start:stop]
        n, f, h, w = maps.shape
        flat = upsample(maps.reshape(n * f, h, w), size)
        return np.asarray(flat, dtype=np.float32).reshape(n, f, *size)


def layer_attribution(
    policy: PolicyAdapter | torch.nn.Module,
    obs: np.ndarray,
    layer: str | None = None,
    target: object = "value",
    batch_size: int = 128,
) -> np.ndarray:
    """Activation x gradient of ``target`` at ``layer`` for raw observations ``obs`` [N, ...].

    Args:
        target: ``"value"``, an action index (its logit), or any :mod:`rlviz.targets` callable
            (e.g. ``TakenAction(actions)``, split per batch like the attribution methods do).

    Returns:
        float32 [N, C, h, w] (or [N, D] for a linear layer).
    """
    adapter = as_adapter(policy)
    layer = layer or default_layer(adapter.model)
    fn = as_target(target)
    chunks = []
    for start in range(0, len(obs), batch_size):
        x = adapter.preprocess(obs[start : start + batch_size])
        part = subset_target(fn, slice(start, start + len(x)))
        holder: dict = {}

        def run(inp: torch.Tensor, holder: dict = holder) -> object:
            holder["out"] = adapter.outputs(inp)
            return holder["out"]

        with torch.enable_grad():
            act = activations(adapter.model, x, layer, forward=run)[layer]
            score = part(holder["out"]).sum()
            (grad,) = torch.autograd.grad(score, act)
        chunks.append((act * grad).detach().float().cpu().numpy())
    return np.concatenate(chunks).astype(np.float32, copy=False)


def _signed_part(raw: np.ndarray, sign: str) -> np.ndarray:
    if sign == "positive":
        return np.maximum(raw, 0)
    if sign == "negative":
        return np.maximum(-raw, 0)
    if sign == "abs":
        return np.abs(raw)
    raise ValueError(f"sign={sign!r}; expected one of {SIGNS}")


def factorize(
    attribution: np.ndarray, n_features: int = 4, sign: str = "positive", seed: int = 0
) -> tuple[np.ndarray, np.ndarray, float]:
    """NMF of a layer attribution [N, C, h, w] over channels.

    Returns:
        (maps float32 [N, F, h, w], directions float32 [F, C] with unit-norm rows, relative
        reconstruction error). Directions are scaled to unit norm and maps by the inverse, so
        maps are comparable across features.
    """
    from sklearn.decomposition import NMF
    from sklearn.exceptions import ConvergenceWarning

    a = np.asarray(attribution, dtype=np.float32)
    if a.ndim == 2:  # a linear layer: one "position" per frame
        a = a[:, :, None, None]
    if a.ndim != 4:
        raise ValueError(f"attribution must be [N, C, h, w] or [N, D], got shape {a.shape}")
    n, c, h, w = a.shape
    if not 1 <= n_features <= c:
        raise ValueError(f"n_features must be in 1..{c} (the layer's channels), got {n_features}")
    x = _signed_part(a, sign).transpose(0, 2, 3, 1).reshape(-1, c)
    total = float(np.linalg.norm(x))
    if total == 0.0:  # nothing to factorise (e.g. a dead layer): zero maps, unit directions
        return (
            np.zeros((n, n_features, h, w), np.float32),
            np.eye(n_features, c, dtype=np.float32),
            0.0,
        )
    x = x / total  # NMF's tolerance is absolute; scale so it means the same for any layer
    model = NMF(n_components=n_features, init="nndsvda", max_iter=400, random_state=seed)
    with warnings.catch_warnings():
        # not converging in max_iter is common and harmless here: the error is reported
        warnings.simplefilter("ignore", ConvergenceWarning)
        weights = model.fit_transform(x)
    comps = model.components_
    error = float(np.linalg.norm(x - weights @ comps))
    norms = np.linalg.norm(comps, axis=1)
    norms = np.where(norms > 0, norms, 1.0)
    directions = (comps / norms[:, None]).astype(np.float32)
    weights = weights * norms[None, :] * total
    maps = weights.reshape(n, h, w, n_features).transpose(0, 3, 1, 2).astype(np.float32)
    return maps, directions, error


def nmf_attribution(
    policy: PolicyAdapter | torch.nn.Module,
    obs: np.ndarray,
    layer: str | None = None,
    target: object = "value",
    n_features: int = 4,
    *,
    sign: str = "positive",
    seed: int = 0,
    batch_size: int = 128,
    keep_raw: bool = False,
    percentile: float = 99.5,
) -> NMFAttribution:
    """URV's layer attribution: activation x gradient of ``target`` at ``layer``, reduced by NMF.

    Args:
        policy: a :class:`PolicyAdapter` or an ``nn.Module``.
        obs: raw observations [N, ...] (e.g. every step of a few episodes: the features are
            fitted jointly, so they mean the same in every frame).
        layer: the hidden layer (default: the model's CAM layer, its last conv block).
        target: ``"value"`` (default), an action index, or a :mod:`rlviz.targets` callable.
        n_features: F, how many features to keep.
        sign: factorise the ``"positive"`` attribution (evidence for the target), the
            ``"negative"`` one, or ``"abs"``.

    Returns:
        :class:`NMFAttribution` (maps [N, F, h, w], directions [F, C], reconstruction error).
    """
    adapter = as_adapter(policy)
    layer = layer or default_layer(adapter.model)
    raw = layer_attribution(adapter, obs, layer, target, batch_size)
    maps, directions, error = factorize(raw, n_features, sign, seed)
    result = _attribution(layer, target, maps, directions, error, percentile)
    result.raw = raw if keep_raw else None
    return result


def _attribution(layer, target, maps, directions, error, percentile) -> NMFAttribution:
    """The :class:`NMFAttribution` of ``maps`` [N, F, h, w], each feature's colour scale its
    ``percentile`` over every frame."""
    flat = maps.transpose(1, 0, 2, 3).reshape(maps.shape[1], -1)
    scale = np.percentile(flat, percentile, axis=1).astype(np.float32) if flat.size else flat[:, 0]
    return NMFAttribution(
        layer, _target_name(target), maps, directions, error, np.maximum(scale, 1e-12)
    )


def _target_name(target: object) -> str:
    if isinstance(target, str):
        return target
    return f"action {target}" if isinstance(target, (int, np.integer)) else type(target).__name__


#: Above this many frames the NMF is fitted on this many of them, evenly spaced, and every frame
#: is then projected onto the fitted directions a batch at a time (see
#: :func:`nmf_attribution_streamed`): a long episode's layer attribution is never all in memory.
NMF_FIT_FRAMES = 2048


def project(attribution: np.ndarray, directions: np.ndarray, total: float, sign: str) -> np.ndarray:
    """Non-negative weights of each position of ``attribution`` [n, C, h, w] on fixed unit
    ``directions`` [F, C] (NMF with H held, scikit-learn's coordinate descent): maps [n, F, h, w]
    in the attribution's units. ``total`` scales the data as :func:`factorize` did (its
    tolerance is absolute)."""
    from sklearn.decomposition import non_negative_factorization
    from sklearn.exceptions import ConvergenceWarning

    a = np.asarray(attribution, dtype=np.float32)
    if a.ndim == 2:
        a = a[:, :, None, None]
    n, c, h, w = a.shape
    f = len(directions)
    x = _signed_part(a, sign).transpose(0, 2, 3, 1).reshape(-1, c)
    if total == 0.0:
        return np.zeros((n, f, h, w), np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        weights, _, _ = non_negative_factorization(
            x / total,
            H=np.asarray(directions, np.float32),
            n_components=f,
            init="custom",
            update_H=False,
            max_iter=400,
        )
    return (weights * total).reshape(n, h, w, f).transpose(0, 3, 1, 2).astype(np.float32)


def nmf_attribution_streamed(
    adapter: PolicyAdapter,
    obs,
    layer: str,
    target: object,
    n_features: int,
    *,
    sign: str = "positive",
    seed: int = 0,
    batch_size: int = 128,
    fit_frames: int = NMF_FIT_FRAMES,
    percentile: float = 99.5,
) -> NMFAttribution:
    """:func:`nmf_attribution` for many frames at flat memory: the directions are fitted on
    ``fit_frames`` frames spread evenly over ``obs`` (a disk-backed episode is read a batch at a
    time), then every frame's layer attribution is computed a batch at a time and projected onto
    them (:func:`project`). Only the maps at layer resolution are kept ([N, F, h, w], e.g. 4 x 7
    x 7 floats a frame)."""
    n = len(obs)
    fn = as_target(target)
    picked = evenly_spaced(n, fit_frames)
    fit_raw = layer_attribution(adapter, obs[picked], layer, subset_target(fn, picked), batch_size)
    _, directions, error = factorize(fit_raw, n_features, sign, seed)
    total = float(np.linalg.norm(_signed_part(fit_raw, sign)))
    del fit_raw
    maps = []
    for start in range(0, n, batch_size):
        stop = min(start + batch_size, n)
        raw = layer_attribution(
            adapter, obs[start:stop], layer, subset_target(fn, slice(start, stop)), batch_size
        )
        maps.append(project(raw, directions, total, sign))
    return _attribution(layer, target, np.concatenate(maps), directions, error, percentile)


def direction_objective(layer: str, direction: Sequence[float] | np.ndarray):
    """An optvis objective: the layer's activation projected on ``direction`` [C], averaged over
    positions (URV's feature visualisation of an NMF direction)."""
    from rlviz.features.optvis import Objective

    d = torch.as_tensor(np.asarray(direction, dtype=np.float32))

    def fn(ctx) -> torch.Tensor:
        act = ctx.acts[layer]
        if act.shape[1] != d.numel():
            raise ValueError(
                f"direction has {d.numel()} channels but layer {layer!r} has {act.shape[1]}"
            )
        shape = (1, -1) + (1,) * (act.ndim - 2)
        proj = (act * d.to(act).reshape(shape)).sum(1)
        return proj.reshape(len(act), -1).mean(1)

    return Objective(fn, f"direction({layer!r})", frozenset([layer]))


def visualize_directions(
    policy: PolicyAdapter | torch.nn.Module,
    result: NMFAttribution,
    size: tuple[int, int],
    steps: int = 96,
    seed: int = 0,
    frames: int | None = None,
) -> list[np.ndarray]:
    """A feature visualisation of each NMF direction: uint8 [H, W, 3] images, one per feature.

    For a frame-stacked policy (``frames`` > 1, default the adapter's layout) each image is the
    newest frame of the visualised stack.
    """
    from rlviz.explorer.sprites import newest_rgb
    from rlviz.features import optvis

    adapter = as_adapter(policy)
    if frames is None:
        frames = adapter.layout.frames if adapter.layout is not None else 1
    images = []
    for f in range(result.n_features):
        objective = direction_objective(result.layer, result.directions[f])
        objective = objective - 1e-2 * optvis.total_variation()
        vis = optvis.optimize(
            adapter, objective, steps=steps, seed=seed + f, size=size, progress=False
        )
        images.append(newest_rgb(vis.image, frames))
    return images
