"""Helpers shared by the feature tools: layer activations, frame checks, image conversion, figures.

Figures and JSON are written with :mod:`rlviz.io` (atomic).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from rlviz.hooks import activations
from rlviz.layout import LayoutError, ObservationLayout
from rlviz.policy import PolicyAdapter
from rlviz.rollout import Rollout, collect

# Frames per forward pass of the feature tools (memory knob; results do not depend on it).
BATCH = 128


def forward_to_layers(
    adapter: PolicyAdapter, x: torch.Tensor, layers: str | Sequence[str]
) -> dict[str, torch.Tensor]:
    """Run ``x`` [B, C, H, W] (preprocessed) through the model only as far as ``layers``.

    :func:`rlviz.hooks.activations` with ``stop_early``: a conv layer can be read on inputs of any
    size and the head's compute is saved. The graph is kept, so gradients can flow to ``x``.
    """
    return activations(adapter.model, x, layers, forward=adapter.outputs, stop_early=True)


def play_episodes(
    env,
    adapter: PolicyAdapter,
    episodes: int,
    *,
    seed: int = 0,
    deterministic: bool = False,
    max_steps: int | None = None,
    info_keys: Sequence[str] = ("success",),
    progress: bool = False,
) -> list[Rollout]:
    """Play ``episodes`` episodes of ``adapter`` in ``env`` (episode i reset with ``seed + i``,
    action sampling seeded from ``seed``) keeping ``info_keys``: the rollouts the feature tools
    look at. ``progress`` shows a bar of episodes."""
    from tqdm.auto import tqdm

    rollouts = collect(
        env,
        adapter,
        episodes,
        seed=seed,
        deterministic=deterministic,
        info_keys=tuple(info_keys),
        max_steps=max_steps,
    )
    bar = tqdm(rollouts, total=episodes, desc="playing episodes", disable=not progress, leave=False)
    return list(bar)


def network_input(adapter: PolicyAdapter, images) -> torch.Tensor:
    """Raw frames (uint8 [H, W, C] / [N, H, W, C]) preprocessed, or network input (float
    [N, C, H, W]) as it is, on the adapter's device."""
    if isinstance(images, torch.Tensor) and images.is_floating_point() and images.ndim == 4:
        return images.to(adapter.device)
    return adapter.preprocess(
        np.asarray(images) if not isinstance(images, torch.Tensor) else images
    )


def check_frames(obs: np.ndarray, name: str = "obs") -> np.ndarray:
    """Validate raw frames: uint8 [N, H, W, 3]; returns them as a numpy array."""
    obs = np.asarray(obs)
    if obs.ndim == 3:
        obs = obs[None]
    if obs.ndim != 4 or obs.shape[-1] not in (1, 3, 4):
        raise ValueError(
            f"{name} must be frames shaped [N, H, W, C] (or one [H, W, C]), got shape {obs.shape}; "
            "pass the raw observations, e.g. rollout.obs"
        )
    return obs


def observations(
    adapter: PolicyAdapter, obs, name: str = "obs"
) -> tuple[np.ndarray, ObservationLayout]:
    """Raw observations (one or a batch) as an array [N, *obs_shape] and their layout.

    The layout is the adapter's (declared, or read off the shape when unambiguous), so stacks in
    any of the supported layouts pass; a shape that does not fit it raises, naming ``name``.
    """
    layout = adapter.layout_for(obs)
    try:
        batch = layout.batch(obs)
    except LayoutError as exc:
        raise LayoutError(f"{name}: {exc}") from None
    return batch.numpy() if isinstance(batch, torch.Tensor) else np.asarray(batch), layout


def frames_strip(frames: np.ndarray, gap: int = 2) -> np.ndarray:
    """Frames [K, H, W, 3] side by side (oldest left) with ``gap`` white columns between."""
    k, h, w = frames.shape[:3]
    strip = np.full((h, k * w + (k - 1) * gap, 3), 255, dtype=np.uint8)
    for i, frame in enumerate(frames):
        strip[:, i * (w + gap) : i * (w + gap) + w] = frame
    return strip


def to_uint8(image: torch.Tensor | np.ndarray) -> np.ndarray:
    """A float image in [0, 1] as uint8: [C, H, W] or [B, C, H, W] -> [H, W, C] / [B, H, W, C]."""
    if isinstance(image, torch.Tensor):
        image = image.detach().float().cpu().numpy()
    image = np.asarray(image, dtype=np.float32)
    if image.ndim == 3:
        image = image.transpose(1, 2, 0)
    elif image.ndim == 4:
        image = image.transpose(0, 2, 3, 1)
    else:
        raise ValueError(
            f"expected an image [C, H, W] or a batch [B, C, H, W], got shape {image.shape}"
        )
    return (np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def display_rgb(frame: np.ndarray) -> np.ndarray:
    """A frame as something imshow draws in colour: 1 channel -> grey RGB, 4 -> first 3."""
    frame = np.asarray(frame)
    if frame.ndim == 3 and frame.shape[-1] == 1:
        return np.repeat(frame, 3, axis=-1)
    if frame.ndim == 3 and frame.shape[-1] == 4:
        return frame[..., :3]
    return frame


def new_figure(width: float, height: float):
    """A matplotlib Figure that needs no pyplot (no global state, no GUI backend)."""
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def image_grid(width: float, height: float, rows: int, cols: int):
    """A :func:`new_figure` and its axes [rows, cols] with frames and ticks hidden, for images."""
    fig = new_figure(width, height)
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.ravel():
        ax.set_axis_off()
    return fig, axes


def grid_shape(n: int, max_cols: int = 8) -> tuple[int, int]:
    """(rows, cols) of a near-square grid holding ``n`` tiles, at most ``max_cols`` wide."""
    cols = max(1, min(max_cols, int(np.ceil(np.sqrt(n * 4 / 3)))))
    return int(np.ceil(n / cols)), cols


def check_unit(act: torch.Tensor, layer: str, channel: int) -> None:
    """Raise if ``channel`` is not a valid unit index of ``layer``'s activation [B, C, ...]."""
    if act.ndim < 2:
        raise ValueError(
            f"layer {layer!r} gives a {act.ndim}-d output; a unit needs a channel axis"
        )
    n = act.shape[1]
    if not 0 <= channel < n:
        raise ValueError(f"layer {layer!r} has {n} channels (0..{n - 1}); got channel {channel}")
