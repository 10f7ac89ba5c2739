"""Helpers shared by the feature tools: layer activations in batches, image conversion, figures."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from rlviz.adapters import PolicyAdapter
from rlviz.hooks import capture, get_layer


class _StopForward(Exception):
    """Raised from a hook once every wanted layer has been recorded, to skip the rest of the net."""


def forward_to_layers(
    adapter: PolicyAdapter, x: torch.Tensor, layers: str | Sequence[str]
) -> dict[str, torch.Tensor]:
    """Run ``x`` [B, C, H, W] (preprocessed) through the model only as far as ``layers``.

    Stopping early lets a conv layer be read on inputs of any size (the fully connected head would
    reject them) and saves the head's compute. The graph is kept, so gradients can flow to ``x``.

    Returns:
        dict layer name -> activation tensor ([B, C, h, w] for a conv layer, [B, D] for a linear one).
    """
    names = [layers] if isinstance(layers, str) else list(layers)
    modules = [get_layer(adapter.model, name) for name in names]
    handles = []
    with capture(adapter.model, names) as acts:

        def stop(_module: nn.Module, _inputs: tuple, _output: torch.Tensor) -> None:
            if all(name in acts for name in names):
                raise _StopForward

        try:
            # Registered after capture's hooks, so on the same module they run after recording.
            handles = [module.register_forward_hook(stop) for module in modules]
            try:
                adapter.outputs(x)
            except _StopForward:
                pass
        finally:
            for handle in handles:
                handle.remove()
        missing = [name for name in names if name not in acts]
        if missing:
            raise ValueError(
                f"layer(s) {missing} were not called in the model's forward; "
                "pick layers that the policy actually runs (see rlviz.list_layers(model))"
            )
        return dict(acts)


@torch.no_grad()
def layer_activations(
    adapter: PolicyAdapter,
    obs: np.ndarray | torch.Tensor,
    layers: str | Sequence[str],
    batch_size: int = 128,
) -> dict[str, torch.Tensor]:
    """Activations of ``layers`` for a batch of raw observations, computed in chunks.

    Returns:
        dict layer name -> float32 CPU tensor [N, C, h, w] (conv) or [N, D] (linear).
    """
    names = [layers] if isinstance(layers, str) else list(layers)
    if len(obs) == 0:
        raise ValueError("got 0 observations; pass a non-empty batch [N, H, W, C]")
    chunks: dict[str, list[torch.Tensor]] = {name: [] for name in names}
    for start in range(0, len(obs), batch_size):
        x = adapter.preprocess(obs[start : start + batch_size])
        acts = forward_to_layers(adapter, x, names)
        for name in names:
            chunks[name].append(acts[name].detach().float().cpu())
    return {name: torch.cat(parts) for name, parts in chunks.items()}


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


def _publishable(tmp: str) -> None:
    """Give a mkstemp file (private, 0600) the permissions a plain ``open()`` would."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)


def save_figure(fig, path: str | os.PathLike) -> Path:
    """Write ``fig`` as PNG at ``path`` atomically (temp file + rename); returns the path."""
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ValueError(
            f"figures are written as PNG; got path {str(path)!r}, use a name ending in .png"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".png.tmp", dir=path.parent)
    os.close(fd)
    try:
        fig.savefig(tmp, format="png")
        _publishable(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def grid_shape(n: int, max_cols: int = 8) -> tuple[int, int]:
    """(rows, cols) of a near-square grid holding ``n`` tiles, at most ``max_cols`` wide."""
    cols = max(1, min(max_cols, int(np.ceil(np.sqrt(n * 4 / 3)))))
    return int(np.ceil(n / cols)), cols


def channel_count(act: torch.Tensor, layer: str) -> int:
    """Channels (units) of an activation [B, C, ...]; a clear error for scalars."""
    if act.ndim < 2:
        raise ValueError(
            f"layer {layer!r} gives a {act.ndim}-d output; a unit needs a channel axis"
        )
    return act.shape[1]


def check_unit(act: torch.Tensor, layer: str, channel: int) -> None:
    """Raise if ``channel`` is not a valid unit index of layer ``layer``."""
    n = channel_count(act, layer)
    if not 0 <= channel < n:
        raise ValueError(f"layer {layer!r} has {n} channels (0..{n - 1}); got channel {channel}")


def save_json(data: object, path: str | os.PathLike) -> Path:
    """Write ``data`` as indented JSON at ``path`` atomically (temp file + rename); returns the path."""
    import json

    path = Path(path)
    text = json.dumps(data, indent=2) + "\n"  # fails before touching the disk if not JSON-able
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".json.tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        _publishable(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path
