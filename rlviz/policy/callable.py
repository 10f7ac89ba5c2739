"""Plain functions as policies: a module to hold them, so hooks and devices have an owner."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


class _FunctionModule(nn.Module):
    """Holds a plain function so it can sit where an ``nn.Module`` is expected (no addressable layers)."""

    def __init__(self, fn: Callable) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, x: torch.Tensor):
        return self.fn(x)


def callable_module(fn: Callable | nn.Module) -> nn.Module:
    """``fn`` itself if it is an ``nn.Module``, else a parameter-free module that calls it."""
    return fn if isinstance(fn, nn.Module) else _FunctionModule(fn)
