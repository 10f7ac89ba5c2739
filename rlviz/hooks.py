"""Named layers, the one activations API and the one default-layer rule.

Layers are addressed by dotted name (``"features_extractor.cnn.4"``), as ``model.get_submodule``
understands them. Capturing never changes the caller's train/eval mode or ``requires_grad`` flags,
and hooks are always removed. Every reader of layer outputs (features, state maps, videos) goes
through :func:`activations` (one pass, graph kept) or :func:`layer_activations` (raw observations
in batches, no grad).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Protocol

import torch
from torch import nn

#: How :func:`layer_activations` may pool each output: keep it, flatten it to [N, D], or average a
#: [N, C, h, w] map over space to [N, C] (other shapes are flattened).
POOLS = ("flatten", "avg")


class Policy(Protocol):
    """What :func:`layer_activations` needs of a policy (a :class:`rlviz.PolicyAdapter` has it)."""

    model: nn.Module

    def preprocess(self, obs: Any) -> torch.Tensor: ...

    def outputs(self, x: torch.Tensor) -> Any: ...


def list_layers(
    model: nn.Module, kind: type[nn.Module] | tuple[type[nn.Module], ...] | None = None
) -> list[str]:
    """Dotted names of the model's submodules (optionally only those of type ``kind``), in order."""
    return [
        name
        for name, module in model.named_modules()
        if name and (kind is None or isinstance(module, kind))
    ]


def get_layer(model: nn.Module, name: str) -> nn.Module:
    """The submodule called ``name``; a wrong name raises with the list of valid ones."""
    try:
        return model.get_submodule(name)
    except AttributeError:
        available = ", ".join(list_layers(model)) or "(the model has no submodules)"
        raise ValueError(f"layer {name!r} not found; available: {available}") from None


def _policy_layers(model: nn.Module, kind) -> list[str]:
    """``list_layers`` without target networks (``q_net_target``, ``actor_target``, ...): copies
    that frameworks such as SB3 keep for training and the policy never calls."""
    return [
        name
        for name in list_layers(model, kind)
        if not any(part.endswith("_target") for part in name.split("."))
    ]


def last_conv_layer(model: nn.Module) -> str:
    """Name of the last ``nn.Conv2d`` in registration order (target networks skipped): the usual
    Grad-CAM layer."""
    convs = _policy_layers(model, nn.Conv2d)
    if not convs:
        raise ValueError("the model has no nn.Conv2d layer; name a layer explicitly with layer=...")
    return convs[-1]


def default_layer(model: nn.Module) -> str:
    """The layer used when none is named (CAM methods, state maps, single-layer feature tools).

    The model's own ``cam_layer`` attribute if it names one (rlviz agents: the last conv block,
    after its ReLU), else the last ``nn.Conv2d``.
    """
    name = getattr(model, "cam_layer", None)
    return name if isinstance(name, str) else last_conv_layer(model)


def default_layers(model: nn.Module) -> list[str]:
    """The layers shown when none are named (feature maps, dissection, dreams): the model's
    ``conv_layers`` if it names them (rlviz agents: post-ReLU blocks), else every ``nn.Conv2d``."""
    named = getattr(model, "conv_layers", None)
    return list(named) if named else _policy_layers(model, nn.Conv2d)


class Captured(dict):
    """Activations by layer name, filled by :func:`capture` during a forward pass.

    ``calls[name]`` counts the layer's calls since the block began (a trunk shared by two heads
    runs twice per forward); ``earlier[name]`` keeps the first output when there were several.
    """

    def __init__(self) -> None:
        super().__init__()
        self.calls: dict[str, int] = {}
        self.earlier: dict[str, torch.Tensor] = {}


@contextmanager
def capture(model: nn.Module, layers: str | Sequence[str]) -> Iterator[Captured]:
    """Record the outputs of ``layers`` during forward passes inside the ``with`` block.

    The recorded tensor is the layer's own output (part of the autograd graph, so gradients can be
    taken with ``torch.autograd.grad``); the model continues with a copy so that an in-place op
    downstream (``ReLU(inplace=True)``) cannot overwrite what was recorded. Hooks are removed on exit,
    also when the block raises.

    Yields a dict name -> Tensor, overwritten by each forward pass.
    """
    names = [layers] if isinstance(layers, str) else list(layers)
    modules = [get_layer(model, name) for name in names]
    captured = Captured()
    handles = []

    def make_hook(name: str):
        def hook(_module: nn.Module, _inputs: tuple, output: torch.Tensor) -> torch.Tensor:
            if not isinstance(output, torch.Tensor):
                raise TypeError(
                    f"layer {name!r} returns {type(output).__name__}; rlviz can only hook layers returning a Tensor"
                )
            count = captured.calls.get(name, 0)
            if count == 1:
                captured.earlier[name] = captured[name]
            captured.calls[name] = count + 1
            captured[name] = output
            return output.clone()

        return hook

    try:
        for name, module in zip(names, modules, strict=True):
            handles.append(module.register_forward_hook(make_hook(name)))
        yield captured
    finally:
        for handle in handles:
            handle.remove()


def hook_count(model: nn.Module) -> int:
    """Number of forward/backward hooks currently on the model (for leak tests)."""
    total = 0
    for module in model.modules():
        total += len(module._forward_hooks) + len(module._forward_pre_hooks)
        total += len(module._backward_hooks) + len(getattr(module, "_backward_pre_hooks", {}))
    return total


class _StopForward(Exception):
    """Raised from a hook once every wanted layer has been recorded, to skip the rest of the net."""


def activations(
    model: nn.Module,
    x: torch.Tensor,
    layers: str | Sequence[str],
    *,
    forward: Callable[[torch.Tensor], object] | None = None,
    stop_early: bool = False,
) -> dict[str, torch.Tensor]:
    """Outputs of ``layers`` of ``model`` (one dotted name or several) for one forward pass of
    the network input ``x`` [B, C, H, W], graph kept: name -> [B, C, h, w] (conv) or [B, D].

    Args:
        forward: what runs the network (``adapter.outputs``); defaults to ``model(x)``.
        stop_early: stop the pass once every layer has run: saves the head's compute and lets a
            conv layer read inputs of any size (a fully connected head would reject them).
    """
    names = [layers] if isinstance(layers, str) else list(layers)
    run = forward if forward is not None else model
    handles = []
    with capture(model, names) as acts:

        def stop(_module: nn.Module, _inputs: tuple, _output: torch.Tensor) -> None:
            if all(name in acts for name in names):
                raise _StopForward

        try:
            if stop_early:
                # Registered after capture's hooks, so on the same module they run after recording.
                handles = [get_layer(model, name).register_forward_hook(stop) for name in names]
            try:
                run(x)
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
        for name, first in acts.earlier.items():
            # The same layer on the same input (actor(x) and critic(x) over one trunk) gives the
            # same activations; on different inputs there is no single answer.
            if first.shape != acts[name].shape or not torch.equal(first, acts[name]):
                raise ValueError(
                    f"layer {name!r} is called {acts.calls[name]} times in one forward on "
                    "different inputs (e.g. one encoder run per frame), so its activations are "
                    "not one tensor; name a layer that runs once"
                )
        return dict(acts)


def pool_activation(act: torch.Tensor, pool: str | None) -> torch.Tensor:
    """``act`` [N, ...] pooled as :data:`POOLS` describes (``None`` keeps it as it is)."""
    if pool is None:
        return act
    if pool not in POOLS:
        raise ValueError(f"pool={pool!r} is not one of {POOLS} (or None to keep the shape)")
    if act.ndim == 4 and pool == "avg":
        return act.mean(dim=(2, 3))
    return act.reshape(act.shape[0], -1)


@torch.no_grad()
def layer_activations(
    policy: Policy,
    obs: Sequence | torch.Tensor,
    layers: str | Sequence[str],
    *,
    batch_size: int = 256,
    pool: str | None = None,
    stop_early: bool = False,
) -> dict[str, torch.Tensor]:
    """Outputs of ``layers`` for a batch of raw observations ``obs`` [N, ...], run through
    ``policy``'s ``preprocess`` and ``outputs`` in batches without gradients: name -> float32
    CPU tensor [N, ...].

    Args:
        batch_size: observations per forward pass (memory knob; results do not depend on it).
        pool: ``None`` (each layer's own shape), ``"flatten"`` or ``"avg"``; see :data:`POOLS`.
        stop_early: see :func:`activations`.
    """
    names = [layers] if isinstance(layers, str) else list(layers)
    if len(obs) == 0:
        raise ValueError("got 0 observations; pass a non-empty batch [N, H, W, C]")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if pool is not None and pool not in POOLS:
        raise ValueError(f"pool={pool!r} is not one of {POOLS} (or None to keep the shape)")
    chunks: dict[str, list[torch.Tensor]] = {name: [] for name in names}
    for start in range(0, len(obs), batch_size):
        x = policy.preprocess(obs[start : start + batch_size])
        acts = activations(policy.model, x, names, forward=policy.outputs, stop_early=stop_early)
        for name in names:
            chunks[name].append(pool_activation(acts[name].detach(), pool).float().cpu())
    return {name: torch.cat(parts) for name, parts in chunks.items()}
