"""Find the conv stack at the start of a policy's forward by watching it run (module hooks).

The forward is run twice with hooks on every sub-module, which records the calls as a tree. The
chain is the longest run of calls, from the network input, in which each call reads the previous
one's output and is a layer with a known rule (conv, local pooling, elementwise), a torchvision
residual block, or a module whose own calls form such a chain. Whatever comes after the chain
(flatten, linear and pooling heads, the policy's own glue) is left to the model's code: the
chain's modules are switched to return a given activation and the policy's forward runs as is.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import nn

from rlviz.methods.incremental.blocks import Residual, Sequence
from rlviz.methods.incremental.heads import Flatten, FlattenLinear, GlobalAvgPool
from rlviz.methods.incremental.ops import (
    POINTWISE,
    ConcatConst,
    Conv,
    Op,
    Pointwise,
    Pool,
    Unsupported,
)


@dataclass
class Call:
    """One module call seen by the hooks: its first input, output and the calls it made."""

    name: str
    module: nn.Module | None
    arg: object
    out: object = None
    children: list[Call] = field(default_factory=list)


def record(adapter, x: torch.Tensor) -> tuple[Call, object]:
    """The call tree of ``adapter.outputs(x)`` (root: a virtual call whose input is ``x``)."""
    root = Call("", None, x)
    stack = [root]
    handles = []

    def pre(name):
        def hook(module, args):
            call = Call(name, module, args[0] if args else None)
            stack[-1].children.append(call)
            stack.append(call)

        return hook

    def post(module, args, out):
        stack.pop().out = out

    for name, module in adapter.model.named_modules():
        if name:
            handles.append(module.register_forward_pre_hook(pre(name)))
            handles.append(module.register_forward_hook(post))
    try:
        with torch.no_grad():
            result = adapter.outputs(x)
    finally:
        for handle in handles:
            handle.remove()
    return root, result


def _is_residual_block(module: nn.Module) -> bool:
    names = ("conv1", "bn1", "conv2", "bn2", "relu", "downsample")
    return type(module).__name__ in ("BasicBlock", "Bottleneck") and all(
        hasattr(module, n) for n in names
    )


def _leaf_op(name: str, module: nn.Module) -> Op:
    if isinstance(module, nn.AdaptiveAvgPool2d):
        return GlobalAvgPool(name, module)
    if isinstance(module, nn.Flatten):
        return Flatten(name, module)
    if isinstance(module, nn.Conv2d):
        return Conv(name, module)
    if isinstance(module, (nn.MaxPool2d, nn.AvgPool2d)):
        return Pool(name, module)
    if isinstance(module, POINTWISE + (nn.modules.batchnorm._BatchNorm,)):
        return Pointwise(name, module)
    raise Unsupported(f"no incremental rule for {type(module).__name__}")


def _module_ops(name: str, module: nn.Module) -> list[Op]:
    """Ops of a module from its type alone (used inside residual blocks, whose calls we know)."""
    if isinstance(module, nn.Sequential):
        return [
            op
            for child, sub in module.named_children()
            for op in _module_ops(f"{name}.{child}", sub)
        ]
    return [_leaf_op(name, module)]


def _residual(name: str, module: nn.Module) -> Residual:
    parts = ["conv1", "bn1", "relu", "conv2", "bn2"]
    if type(module).__name__ == "Bottleneck":
        parts += ["relu", "conv3", "bn3"]
    main = [_leaf_op(f"{name}.{p}", getattr(module, p)) for p in parts]
    down = module.downsample
    short = _module_ops(f"{name}.downsample", down) if down is not None else []
    post = Pointwise(f"{name}.relu", module.relu)
    return Residual(
        name, module, Sequence(f"{name} main", main), Sequence(f"{name} shortcut", short), post
    )


@dataclass
class Chain:
    """The ops of the conv stack, the outermost modules they replace, and where the chain stopped."""

    ops: list[Op] = field(default_factory=list)
    modules: list[tuple[str, nn.Module]] = field(default_factory=list)
    out: object = None  # the chain's last activation in the traced run
    stop: str = ""  # why the chain ends where it does
    flat: bool = False  # past a linear head: only elementwise layers may follow


def _concat_constant(call: Call, other: Call | None, first: Call) -> torch.Tensor | None:
    """Channels appended to ``call``'s input before its first sub-call, if they are the same for
    every frame of both traced runs (input-independent)."""
    x, inner = call.arg, first.arg
    if not (isinstance(x, torch.Tensor) and isinstance(inner, torch.Tensor)) or other is None:
        return None
    if (
        inner.ndim != 4
        or x.ndim != 4
        or inner.shape[2:] != x.shape[2:]
        or inner.shape[1] <= x.shape[1]
    ):
        return None
    c = x.shape[1]
    extra = inner[:, c:]
    other_inner = other.children[0].arg if other.children else None
    if not torch.equal(inner[:, :c], x) or not isinstance(other_inner, torch.Tensor):
        return None
    if other_inner.shape != inner.shape or not torch.equal(other_inner[:, c:], extra):
        return None
    if not torch.equal(extra, extra[:1].expand_as(extra)):
        return None
    return extra[:1].clone()


def _append_leaf(call: Call, label: str, chain: Chain) -> bool:
    last = chain.ops[-1] if chain.ops else None
    try:
        if isinstance(call.module, nn.Linear) and isinstance(last, Flatten):
            chain.ops[-1] = FlattenLinear(f"{last.name} + {call.name}", last, call.module)
            chain.flat = True
            return True
        op = _leaf_op(call.name, call.module)
        if chain.flat and not isinstance(op, Pointwise):
            raise Unsupported("only elementwise layers are followed after a linear head")
    except Unsupported as exc:
        chain.stop = f"{label}: {exc}"
        return False
    chain.ops.append(op)
    chain.flat = chain.flat or getattr(op, "terminal", False)
    return True


def expand(call: Call, other: Call | None, chain: Chain) -> bool:
    """Append ``call``'s ops to ``chain``; True if the whole call was absorbed."""
    module = call.module
    label = f"{call.name} ({type(module).__name__})"
    if _is_residual_block(module) and not chain.flat:
        try:
            chain.ops.append(_residual(call.name, module))
        except Unsupported as exc:
            chain.stop = f"{label}: {exc}"
            return False
        return True
    if not call.children:
        return _append_leaf(call, label, chain)
    first = call.children[0]
    prev = call.arg
    if first.arg is not prev:
        extra = _concat_constant(call, other, first)
        if extra is None:
            chain.stop = f"{label}: its forward changes the input before calling {first.name}"
            return False
        chain.ops.append(ConcatConst(f"{call.name} (constant channels)", extra))
        prev = first.arg
    return expand_children(call, other, prev, chain)


def expand_children(call: Call, other: Call | None, prev: object, chain: Chain) -> bool:
    """Absorb ``call``'s sub-calls while each reads the previous one's output."""
    others = other.children if other is not None else []
    for i, child in enumerate(call.children):
        if child.arg is not prev:
            chain.stop = f"{child.name}: reads something other than the previous layer's output"
            return False
        twin = others[i] if i < len(others) and others[i].name == child.name else None
        before = len(chain.modules)
        if not expand(child, twin, chain):
            return False
        del chain.modules[before:]
        chain.modules.append((child.name, child.module))
        chain.out = prev = child.out
    if call.out is not prev:
        chain.stop = f"{call.name}: returns something other than its last layer's output"
        return False
    return True


def find_chain(root: Call, other: Call, network_input: torch.Tensor) -> Chain:
    """The chain starting from the network input (or from what the forward makes of it before
    its first module, see :func:`prestage`)."""
    chain = Chain()
    if not root.children:
        chain.stop = "the policy's forward calls no sub-module of adapter.model"
        return chain
    start = root.children[0].arg
    root.out = object()  # the root returns logits: the chain always stops inside it
    expand_children(root, other, start, chain)
    if len(chain.modules) == 0 and not chain.ops:
        chain.stop = chain.stop or "no layer to reuse"
    return chain


class _Abort(Exception):
    def __init__(self, value):
        self.value = value


def prestage_fn(adapter, module: nn.Module):
    """What the policy's forward does to its input before calling ``module`` (e.g. x / 255)."""

    def run(x: torch.Tensor) -> torch.Tensor:
        def hook(_m, args):
            raise _Abort(args[0])

        handle = module.register_forward_pre_hook(hook)
        try:
            adapter.outputs(x)
        except _Abort as stop:
            return stop.value
        finally:
            handle.remove()
        raise Unsupported(f"the forward did not call {type(module).__name__} on this input")

    return run


@contextmanager
def spliced(modules: list[tuple[str, nn.Module]], activation: torch.Tensor):
    """Make the chain's modules pass their input through, the last one return ``activation``, so
    the policy's own forward computes only what follows the chain. Not thread-safe."""
    saved = []
    try:
        for i, (_, module) in enumerate(modules):
            saved.append((module, module.__dict__.get("forward")))
            last = i == len(modules) - 1
            module.forward = (lambda *a, **k: activation) if last else (lambda h, *a, **k: h)
        yield
    finally:
        for module, original in saved:
            if original is None:
                module.__dict__.pop("forward", None)
            else:
                module.forward = original
