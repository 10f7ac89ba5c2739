"""The actor-critic CNN that rlviz explains.

Layers are addressed by name (``conv1``, ``conv2``, ``conv3``, [``fc``,] ``policy``, ``value``) so the
engine's hooks and methods can find them. Each ``convN`` block outputs its *post-ReLU* feature map
(the conv itself is ``convN.conv``, the activation ``convN.relu``), which is what CAM / Grad-CAM
want. Two heads:

* ``head="gap"``: global average pooling of ``conv3`` -> linear ``policy`` and ``value``. The logits
  are then exactly ``sum_k w_k mean_xy(A_k(x, y))``, so CAM is exact. Pooling throws away where a
  feature is, so ``conv3`` also sees two coordinate channels (CoordConv, Liu et al. 2018,
  https://arxiv.org/abs/1807.03247): its units can mean "red on the left", which a steering policy
  needs.
* ``head="mlp"``: flatten ``conv3`` -> ``fc`` (ReLU) -> linear ``policy`` and ``value``.

On a 60x80 frame the maps are 15x20 (conv1), 8x10 (conv2) and 8x10 (conv3).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import nn

#: Action names in index order; the same as ``envs.ACTION_NAMES`` (kept here so that importing the
#: policy never imports the simulator).
ACTION_NAMES: tuple[str, ...] = ("left", "forward", "right")

HEADS = ("gap", "mlp")


@dataclass
class Architecture:
    """Everything needed to rebuild an :class:`ActorCritic` (stored in checkpoint configs)."""

    head: str = "gap"
    """``gap`` (global average pooling, exact CAM) or ``mlp`` (flatten + hidden layer)."""
    channels: tuple[int, ...] = (16, 32, 32)
    """Output channels of conv1, conv2, conv3."""
    kernels: tuple[int, ...] = (8, 3, 3)
    strides: tuple[int, ...] = (4, 2, 1)
    hidden: int = 256
    """Width of ``fc`` (mlp head only)."""
    coord_channels: bool = True
    """Feed x/y coordinate channels to the last conv block (gap head: lets units encode position)."""
    obs_shape: tuple[int, int, int] = (60, 80, 3)
    """(H, W, C) of the observations the network reads (C = frames x channels per frame)."""
    frames: int = 1
    """K, frames per observation, stacked on the channel axis oldest first (1: no memory)."""
    action_names: tuple[str, ...] = field(default_factory=lambda: ACTION_NAMES)

    def to_dict(self) -> dict:
        """JSON-friendly dict (tuples become lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict) -> Architecture:
        """Inverse of :meth:`to_dict`; unknown keys raise so a newer config is not half-read."""
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(
                f"unknown architecture fields {unknown}; expected a subset of {sorted(known)} "
                "(was the checkpoint written by a newer rlviz?)"
            )
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


class ConvBlock(nn.Module):
    """``relu(conv(x))``, optionally with two coordinate channels (x, y in [-1, 1]) appended to x."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, coords: bool = False):
        super().__init__()
        self.coords = coords
        self.conv = nn.Conv2d(
            c_in + (2 if coords else 0), c_out, kernel, stride, padding=(kernel - 1) // 2
        )
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.coords:
            b, _, h, w = x.shape
            ys = torch.linspace(-1.0, 1.0, h, device=x.device, dtype=x.dtype)
            xs = torch.linspace(-1.0, 1.0, w, device=x.device, dtype=x.dtype)
            grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"))  # [2, h, w]
            x = torch.cat([x, grid.unsqueeze(0).expand(b, -1, -1, -1)], dim=1)
        return self.relu(self.conv(x))


class ActorCritic(nn.Module):
    """pi(a|img) and V(img) from one CNN trunk.

    ``forward(x)`` takes float [B, 3K, H, W] in [0, 1] (K = ``arch.frames``, oldest frame first)
    and returns ``(logits [B, A], value [B])``. With K > 1 only ``conv1`` changes (3K input
    channels); every later layer, the heads and the exactness of CAM are as for one frame.
    Build from an :class:`Architecture` or keyword arguments of one.
    """

    def __init__(self, arch: Architecture | None = None, **kwargs) -> None:
        super().__init__()
        if arch is None:
            arch = Architecture(**kwargs)
        elif kwargs:
            raise TypeError("pass either an Architecture or keyword arguments, not both")
        if arch.head not in HEADS:
            raise ValueError(f"head={arch.head!r}; expected one of {HEADS}")
        if not len(arch.channels) == len(arch.kernels) == len(arch.strides) >= 1:
            raise ValueError(
                f"channels {arch.channels}, kernels {arch.kernels} and strides {arch.strides} must "
                "have the same non-zero length"
            )
        h, w, c = arch.obs_shape
        if int(arch.frames) < 1 or c % int(arch.frames):
            raise ValueError(
                f"obs_shape {tuple(arch.obs_shape)} cannot hold frames={arch.frames}: the channel "
                "count must be frames x channels per frame (e.g. (60, 80, 6) for 2 RGB frames)"
            )
        self.arch = arch
        self.action_names = tuple(arch.action_names)
        n = len(arch.channels)
        c_in = c
        for i, (c_out, k, s) in enumerate(
            zip(arch.channels, arch.kernels, arch.strides, strict=True)
        ):
            coords = arch.coord_channels and i == n - 1
            self.add_module(f"conv{i + 1}", ConvBlock(c_in, c_out, k, s, coords=coords))
            c_in = c_out
        with torch.no_grad():
            fmap = self.features(torch.zeros(1, c, h, w))
        self.feature_shape = tuple(fmap.shape[1:])  # (C, h, w) of the last conv map
        n_actions = len(self.action_names)
        if arch.head == "gap":
            self.pool = nn.AdaptiveAvgPool2d(1)
            width = c_in
        else:
            self.fc = nn.Linear(int(np.prod(self.feature_shape)), arch.hidden)
            width = arch.hidden
        self.policy = nn.Linear(width, n_actions)
        self.value = nn.Linear(width, 1)
        self._init_weights()

    @property
    def conv_layers(self) -> list[str]:
        """Names of the conv blocks, input to output (``["conv1", "conv2", "conv3"]``)."""
        return [f"conv{i + 1}" for i in range(len(self.arch.channels))]

    @property
    def observation_layout(self):
        """The :class:`rlviz.ObservationLayout` of the observations the network reads: K frames
        of ``C / K`` channels on the last axis, oldest first."""
        from rlviz.layout import ObservationLayout  # lazy: the policy stands without rlviz

        frames = int(self.arch.frames)
        channels = int(self.arch.obs_shape[2]) // frames
        return ObservationLayout(frames=frames, channels=channels, order="HWC", source="user")

    @property
    def cam_layer(self) -> str:
        """The layer whose (post-ReLU) map the heads read: the natural CAM / Grad-CAM layer."""
        return self.conv_layers[-1]

    def _init_weights(self) -> None:
        # CleanRL's choice: orthogonal init, small policy gain so the first policy is near uniform.
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nn.init.orthogonal_(module.weight, gain=float(np.sqrt(2)))
                nn.init.zeros_(module.bias)
        nn.init.orthogonal_(self.policy.weight, gain=0.01)
        nn.init.orthogonal_(self.value.weight, gain=1.0)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The last conv block's map, float [B, C, h, w]."""
        for name in self.conv_layers:
            x = getattr(self, name)(x)
        return x

    def trunk(self, x: torch.Tensor) -> torch.Tensor:
        """The vector both heads read, [B, D]."""
        fmap = self.features(x)
        if self.arch.head == "gap":
            return self.pool(fmap).flatten(1)
        return torch.relu(self.fc(fmap.flatten(1)))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(logits [B, A], value [B])`` for float input [B, 3K, H, W] in [0, 1]."""
        h = self.trunk(x)
        return self.policy(h), self.value(h).squeeze(-1)


def preprocess(
    obs: np.ndarray | torch.Tensor, device: torch.device | str | None = None
) -> torch.Tensor:
    """uint8 frames [B, H, W, 3K] (or one [H, W, 3K]) -> float32 [B, 3K, H, W] in [0, 1].

    K = 1 for one RGB frame; a stack of K frames (oldest first, :class:`envs.wrappers.StackFrames`)
    keeps its frame order on the channel axis, the canonical rlviz network input.

    Raises:
        ValueError: for anything other than uint8 channel-last RGB frames or stacks of them.
    """
    t = torch.as_tensor(obs)
    if t.ndim == 3:
        t = t.unsqueeze(0)
    if t.ndim != 4 or t.shape[-1] % 3 or t.dtype != torch.uint8:
        raise ValueError(
            f"preprocess expects uint8 RGB frames shaped [B, H, W, 3] (or K stacked frames, "
            f"[B, H, W, 3K]); got {t.dtype} {tuple(t.shape)}. Pass the env's observations "
            "unchanged."
        )
    if device is not None:
        t = t.to(device, non_blocking=True)
    return t.permute(0, 3, 1, 2).float().div_(255.0)


def _adapter_preprocess(channels: int):
    """The adapter's preprocess for a network reading ``channels`` input channels (3K)."""

    def run(obs: torch.Tensor) -> torch.Tensor:
        # The engine hands a batched tensor; accept already-preprocessed float CHW input as well.
        if obs.dtype == torch.uint8:
            return preprocess(obs)
        if obs.ndim == 4 and obs.shape[1] == channels:
            return obs.float()
        raise ValueError(
            f"expected uint8 frames [B, H, W, {channels}] or float [B, {channels}, H, W]; got "
            f"{obs.dtype} {tuple(obs.shape)}"
        )

    return run


def make_adapter(model: nn.Module, action_names: Sequence[str] | None = None):
    """An :class:`rlviz.PolicyAdapter` for ``model`` with our preprocessing and action names, and
    for an :class:`ActorCritic` with memory its observation layout (K frames on the channel axis).

    Returns:
        PolicyAdapter whose ``outputs(x)`` gives logits [B, A] and value [B].
    """
    from rlviz import PolicyAdapter

    names = (
        action_names if action_names is not None else getattr(model, "action_names", ACTION_NAMES)
    )
    if not isinstance(model, ActorCritic) or model.arch.frames == 1:
        # One RGB frame: its shape says so, and float [B, 3, H, W] input keeps working.
        return PolicyAdapter(model, preprocess=_adapter_preprocess(3), action_names=names)
    # A stack's shape is ambiguous ([H, W, 6]: two RGB frames or six gray ones?): declare it.
    return PolicyAdapter(
        model,
        preprocess=_adapter_preprocess(int(model.arch.obs_shape[2])),
        action_names=names,
        layout=model.observation_layout,
    )
