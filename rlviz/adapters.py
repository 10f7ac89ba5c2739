"""PolicyAdapter: one interface over any policy network.

Every explanation method talks to a policy only through an adapter: ``preprocess`` turns raw
observations (uint8 frames, HWC) into the float tensor the network reads, and ``outputs`` maps that
tensor to action logits (and, when the policy has a critic, a value). Gradients are always taken with
respect to the preprocessed tensor, so maps have the network's input resolution.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

Preprocess = Callable[[torch.Tensor], torch.Tensor]
ForwardFn = Callable[[torch.Tensor], "torch.Tensor | tuple | PolicyOutput"]


@dataclass
class PolicyOutput:
    """What a policy says about a batch: ``logits`` [B, A] and optionally ``value`` [B]."""

    logits: torch.Tensor
    value: torch.Tensor | None = None

    @property
    def log_probs(self) -> torch.Tensor:
        """log pi(.|s), [B, A]."""
        return torch.log_softmax(self.logits, dim=-1)

    @property
    def probs(self) -> torch.Tensor:
        """pi(.|s), [B, A]."""
        return torch.softmax(self.logits, dim=-1)


def to_tensor_batch(
    obs: np.ndarray | torch.Tensor | Sequence, device: torch.device
) -> torch.Tensor:
    """Observations as a batched tensor on ``device``: adds the batch axis to a single frame."""
    if isinstance(obs, (list, tuple)):
        obs = np.stack([np.asarray(o) for o in obs])
    tensor = torch.as_tensor(np.asarray(obs) if not isinstance(obs, torch.Tensor) else obs)
    if tensor.ndim == 3:
        tensor = tensor.unsqueeze(0)
    if tensor.ndim != 4:
        raise ValueError(
            f"expected observations shaped [B, H, W, C] or [B, C, H, W] (or one frame without B), "
            f"got shape {tuple(tensor.shape)}"
        )
    return tensor.to(device)


def default_preprocess(obs: torch.Tensor) -> torch.Tensor:
    """uint8 [B, H, W, C] -> float32 [B, C, H, W] in [0, 1]; float [B, C, H, W] passes through.

    Channel-last is recognised by a last axis of 1, 3 or 4 channels; uint8 is scaled by 1/255.
    """
    channels_last = obs.shape[-1] in (1, 3, 4) and obs.shape[1] not in (1, 3, 4)
    if channels_last:
        obs = obs.permute(0, 3, 1, 2)
    if obs.dtype == torch.uint8:
        return obs.float().div_(255.0)
    return obs.float()


def _as_policy_output(raw: object) -> PolicyOutput:
    if isinstance(raw, PolicyOutput):
        return raw
    if isinstance(raw, torch.Tensor):
        return PolicyOutput(logits=raw)
    if isinstance(raw, (tuple, list)) and len(raw) == 2:
        logits, value = raw
        if value is not None:
            value = value.reshape(value.shape[0], -1)[:, 0]
        return PolicyOutput(logits=logits, value=value)
    raise TypeError(
        "the policy's forward must return logits [B, A], a (logits, value) pair or a PolicyOutput; "
        f"got {type(raw).__name__}"
    )


class PolicyAdapter:
    """Wraps a policy network for explanation.

    Args:
        model: the ``nn.Module`` that owns the layers (hooks and dotted layer names refer to it).
        forward: maps the preprocessed input [B, C, H, W] to logits [B, A], ``(logits, value)`` or a
            :class:`PolicyOutput`. Defaults to ``model(x)``.
        preprocess: raw observations (batched tensor) -> network input. Defaults to
            :func:`default_preprocess` (uint8 HWC -> float CHW / 255).
        action_names: labels for the action axis, used by panels and plots.
    """

    def __init__(
        self,
        model: nn.Module,
        forward: ForwardFn | None = None,
        preprocess: Preprocess | None = None,
        action_names: Sequence[str] | None = None,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(
                f"PolicyAdapter needs the nn.Module that owns the layers, got {type(model).__name__}; "
                "wrap a plain function with PolicyAdapter(module, forward=fn)"
            )
        self.model = model
        self._forward = forward if forward is not None else model
        self._preprocess = preprocess if preprocess is not None else default_preprocess
        self.action_names = tuple(action_names) if action_names is not None else None

    @classmethod
    def from_sb3(cls, model, action_names: Sequence[str] | None = None) -> PolicyAdapter:
        """Stable-Baselines3 PPO/A2C/DQN policy (or algorithm); see :func:`rlviz.integrations.from_sb3`."""
        from rlviz.integrations import from_sb3

        return from_sb3(model, action_names=action_names)

    @classmethod
    def from_cleanrl(
        cls,
        agent: nn.Module,
        n_actions: int | None = None,
        action_names: Sequence[str] | None = None,
    ) -> PolicyAdapter:
        """CleanRL-style agent; see :func:`rlviz.integrations.from_cleanrl`."""
        from rlviz.integrations import from_cleanrl

        return from_cleanrl(agent, n_actions=n_actions, action_names=action_names)

    @classmethod
    def from_callable(
        cls, fn, preprocess: Preprocess | None = None, action_names: Sequence[str] | None = None
    ) -> PolicyAdapter:
        """nn.Module or plain function returning logits or (logits, value)."""
        from rlviz.integrations import from_callable

        return from_callable(fn, preprocess=preprocess, action_names=action_names)

    @property
    def device(self) -> torch.device:
        """Device of the model's first parameter (CPU for a parameter-free model)."""
        for param in self.model.parameters():
            return param.device
        return torch.device("cpu")

    def preprocess(self, obs: np.ndarray | torch.Tensor | Sequence) -> torch.Tensor:
        """Raw observations (one frame or a batch) -> float network input [B, C, H, W]."""
        return self._preprocess(to_tensor_batch(obs, self.device))

    def outputs(self, x: torch.Tensor) -> PolicyOutput:
        """Network outputs for a preprocessed batch ``x`` [B, C, H, W] (keeps the autograd graph)."""
        return _as_policy_output(self._forward(x))

    @torch.no_grad()
    def __call__(self, obs: np.ndarray | torch.Tensor | Sequence) -> PolicyOutput:
        """Outputs for raw observations, without gradients."""
        return self.outputs(self.preprocess(obs))

    def logits(self, obs: np.ndarray | torch.Tensor | Sequence) -> torch.Tensor:
        """Action logits [B, A] for raw observations."""
        return self(obs).logits

    def value(self, obs: np.ndarray | torch.Tensor | Sequence) -> torch.Tensor:
        """State values [B]; raises if the policy has no critic."""
        value = self(obs).value
        if value is None:
            raise ValueError(
                "this policy has no value head; pass a forward that returns (logits, value)"
            )
        return value

    def probs(self, obs: np.ndarray | torch.Tensor | Sequence) -> torch.Tensor:
        """Action probabilities [B, A] for raw observations."""
        return self(obs).probs
