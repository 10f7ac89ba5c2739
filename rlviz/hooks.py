"""Capture activations of named layers for one call, and always let go of the hooks.

Layers are addressed by dotted name (``"features_extractor.cnn.4"``), as ``model.get_submodule``
understands them. Capturing never changes the caller's train/eval mode or ``requires_grad`` flags.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn


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


def last_conv_layer(model: nn.Module) -> str:
    """Name of the last ``nn.Conv2d`` in registration order: the usual Grad-CAM layer."""
    convs = list_layers(model, nn.Conv2d)
    if not convs:
        raise ValueError("the model has no nn.Conv2d layer; name a layer explicitly with layer=...")
    return convs[-1]


class Captured(dict):
    """Activations by layer name, filled by :func:`capture` during a forward pass."""


@contextmanager
def capture(model: nn.Module, layers: str | Sequence[str]) -> Iterator[Captured]:
    """Record the outputs of ``layers`` during forward passes inside the ``with`` block.

    The recorded tensor is the layer's own output (part of the autograd graph, so gradients can be
    taken with ``torch.autograd.grad``); the model continues with a copy so that an in-place op
    downstream (``ReLU(inplace=True)``) cannot overwrite what was recorded. Hooks are removed on exit,
    also when the block raises.

    Yields:
        dict name -> Tensor, overwritten by each forward pass.
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
