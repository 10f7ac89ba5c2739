"""Incremental inference: the policy's outputs on many copies of a frame that differ in one box.

Krypton (Nakandala, Kumar, Papakonstantinou, SIGMOD 2019, https://arxiv.org/abs/1807.06578):
the clean forward runs once and every layer's input is kept; for a batch of patched frames each
conv layer recomputes only the positions whose window touches the changed box (the box grows
with kernel, stride, padding and dilation; elementwise layers keep it), pasted into the clean
activations. From the first layer where the box covers most of the map, and for everything the
engine cannot reason about (flatten, linear and pooling heads), the full computation runs.
Results equal full re-inference up to float rounding (the same sums in another order).
"""

from __future__ import annotations

import warnings
import weakref
from dataclasses import dataclass, field

import torch

from rlviz.methods.incremental.ops import Box, Op, Unsupported, compose, nhwc, window_boxes
from rlviz.methods.incremental.trace import Call, Chain, find_chain, prestage_fn, record, spliced
from rlviz.policy.adapter import PolicyAdapter, PolicyOutput, as_adapter

#: Go to full computation from the first layer whose changed box covers this share of its map.
FULL_FRACTION = 0.75
#: Estimated speed-up below which ``auto`` callers keep plain full passes.
PAYS_FROM = 1.2


@dataclass
class Decision:
    """What the engine does at one layer, and why."""

    layer: str
    kind: str
    mode: str  # "incremental", "full" or "model" (left to the policy's own forward)
    reason: str
    box: tuple[int, int] | None = None
    map_size: tuple[int, int] | None = None


@dataclass
class Plan:
    """Per-layer decisions for one input shape and patch box, with the estimated speed-up."""

    decisions: list[Decision] = field(default_factory=list)
    fallback: str | None = None  # why the whole model runs full passes (None: incremental)
    speedup: float = 1.0  # multiply-adds of full passes / incremental, over the chain's layers

    @property
    def pays(self) -> bool:
        """Whether incremental inference is expected to beat full passes."""
        return self.fallback is None and self.speedup >= PAYS_FROM

    def __str__(self) -> str:
        lines = [f"{'layer':<32} {'kind':<22} {'mode':<12} {'box / map':<16} reason"]
        for d in self.decisions:
            box = f"{d.box[0]}x{d.box[1]} / {d.map_size[0]}x{d.map_size[1]}" if d.box else ""
            lines.append(f"{d.layer:<32} {d.kind:<22} {d.mode:<12} {box:<16} {d.reason}")
        tail = (
            f"fallback: {self.fallback}"
            if self.fallback
            else f"estimated speed-up {self.speedup:.2f}x"
        )
        return "\n".join(lines + [tail])


def _count_calls(call: Call, counts: dict[int, int]) -> None:
    for child in call.children:
        counts[id(child.module)] = counts.get(id(child.module), 0) + 1
        _count_calls(child, counts)


def _probe_inputs(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    low, high = float(x.min()), float(x.max())
    high = high if high > low else low + 1.0
    draws = [torch.rand(2, *x.shape[1:], generator=gen) * (high - low) + low for _ in range(2)]
    return tuple(d.to(x) for d in draws)


class _Structure:
    """The traced chain for one adapter and input shape (reused across calls)."""

    def __init__(self, adapter: PolicyAdapter, like: torch.Tensor) -> None:
        self.prestage = None
        self.chain = Chain()
        if getattr(adapter, "recurrent", False):
            # The state enters every forward: the hooks would see one step, not the chain.
            self.problem = "recurrent policies are not traced (their state enters the forward)"
            return
        xa, xb = _probe_inputs(like)
        with torch.no_grad():  # adapters may settle their forward on the first call (CleanRL)
            adapter.outputs(xa)
        root_a, _ = record(adapter, xa)
        root_b, _ = record(adapter, xb)
        self.chain = find_chain(root_a, root_b, xa)
        self.problem: str | None = None
        if not self.chain.ops:
            self.problem = self.chain.stop or "no layer to reuse"
            return
        counts: dict[int, int] = {}
        _count_calls(root_a, counts)
        shared = [n for n, m in self.chain.modules if counts.get(id(m), 0) != 1]
        if shared:
            self.problem = f"module(s) {shared} run more than once in the forward"
            return
        start = root_a.children[0]
        try:
            if start.arg is not xa:
                self.prestage = self._check_prestage(adapter, start, xa)
            self._check_replay(xa if self.prestage is None else self.prestage(xa))
        except Unsupported as exc:
            self.problem = str(exc)

    @staticmethod
    def _check_prestage(adapter, start: Call, x: torch.Tensor):
        fn = prestage_fn(adapter, start.module)
        full = fn(x)
        if not isinstance(full, torch.Tensor) or full.shape != x.shape:
            raise Unsupported("the forward reshapes its input before the first layer")
        crop = (..., slice(1, -1), slice(2, -1))
        if not torch.equal(fn(x[crop].contiguous()), full[crop]):
            raise Unsupported("what the forward does before its first layer is not elementwise")
        return fn

    def _check_replay(self, h: torch.Tensor) -> None:
        with torch.no_grad():
            for op in self.chain.ops:
                h = op.full(h)
        want = self.chain.out
        if not isinstance(want, torch.Tensor) or want.shape != h.shape:
            raise Unsupported("replaying the layers gives another shape than the model")
        err = float((h - want).abs().max())
        if err > 1e-5 * max(1.0, float(want.abs().max())):
            raise Unsupported(
                f"replaying the layers does not reproduce the model (max diff {err:.3g})"
            )


# Per adapter (weakly: a dropped policy frees its entry), per input shape / dtype / device / mode.
_STRUCTURES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _structure(adapter: PolicyAdapter, like: torch.Tensor) -> _Structure:
    model = adapter.model
    key = (id(model), tuple(like.shape[1:]), like.dtype, like.device, model.training)
    per_adapter = _STRUCTURES.setdefault(adapter, {})
    if key not in per_adapter:
        try:
            per_adapter[key] = _Structure(adapter, like)
        except Exception as exc:  # a forward the probes break: full passes, and say why
            failed = _Structure.__new__(_Structure)
            failed.chain, failed.prestage = Chain(), None
            failed.problem = f"tracing the forward failed: {type(exc).__name__}: {exc}"
            per_adapter[key] = failed
    return per_adapter[key]


def _decide(structure: _Structure, in_size, box: Box, threshold: float):
    """Boxes per op, the number of ops run incrementally and whether the last of them is a
    linear head (then what follows runs on its full output, no pasting); fills the plan."""
    plan = Plan()
    if structure.problem:
        plan.fallback = structure.problem
        return plan, [], 0, False
    boxes, stop, head = [box], None, False
    cost_full = cost_inc = 0.0
    size = in_size
    for i, op in enumerate(structure.chain.ops):
        out_size = op.out_size(size)
        grown = op.grow(boxes[-1]) if stop is None else None
        cost_full += op.work(size if op.terminal else out_size, None)
        if stop is None and not op.terminal and grown.area_fraction >= threshold:
            stop = i
        if stop is None:
            boxes.append(grown)
            work_box = boxes[-2].size if op.terminal else grown.size
            cost_inc += op.work(size if op.terminal else out_size, work_box)
            mode, reason, shown = "incremental", "box grown by the layer's window", grown.size
            if op.terminal:
                reason = "clean output + the box's change (linear)"
                stop, head = i + 1, True
        else:
            cost_inc += op.work(size if op.terminal else out_size, None)
            mode = "full"
            reason = (
                "after the linear head"
                if head
                else f"changed box covers >= {threshold:.0%} of the map"
            )
            shown = grown.size if grown is not None else None
        plan.decisions.append(Decision(op.name, op.kind, mode, reason, shown, out_size))
        size = out_size
    plan.decisions.append(
        Decision("(rest of the forward)", "model code", "model", structure.chain.stop)
    )
    if stop == 0:
        plan.fallback = "the changed box covers most of the first layer's map"
    plan.speedup = cost_full / max(cost_inc, 1.0)
    stop = len(structure.chain.ops) if stop is None else stop
    return plan, boxes, stop, head


def plan(policy, input_shape, box=(8, 8), stride=None, threshold: float = FULL_FRACTION) -> Plan:
    """Per-layer decisions of incremental inference for a network input ``input_shape`` (C, H,
    W) and a changed ``box`` (height, width) placed every ``stride`` pixels (default: the box
    size); from the layer where the box covers ``threshold`` of the map on, all runs full."""
    adapter = as_adapter(policy)
    like = torch.zeros(1, *input_shape, device=adapter.device)
    structure = _structure(adapter, like)
    size = tuple(input_shape[1:])
    rows, cols = (a.to(adapter.device) for a in window_boxes(size, box, stride or box))
    return _decide(structure, size, Box(rows, cols, tuple(box), size), threshold)[0]


class IncrementalRunner:
    """Outputs of a policy on clean frames ``x`` [B, C, H, W] (preprocessed) with one ``box``
    (height, width) per patch replaced, recomputed layer by layer inside the box; ``rows``,
    ``cols`` [P]: each patch's top-left at the input (inside the frame).

    ``plan`` says what runs incrementally; ``plan.fallback`` is set (and :meth:`outputs` does
    full passes) when the model cannot be handled.
    """

    def __init__(self, policy, x, rows, cols, box, threshold: float = FULL_FRACTION) -> None:
        self.adapter = as_adapter(policy)
        self.x = x
        self.x_nhwc = nhwc(x)
        self.box_size = tuple(int(b) for b in box)
        self.structure = _structure(self.adapter, x)
        in_box = Box(rows.to(x.device), cols.to(x.device), self.box_size, tuple(x.shape[-2:]))
        self.in_box = in_box
        self.plan, self.boxes, self.full_from, self.head = _decide(
            self.structure, in_box.map_size, in_box, threshold
        )
        self.ops: list[Op] = self.structure.chain.ops
        self.final = self.switch_input = None
        if self.plan.fallback is None:
            with torch.no_grad():
                h = x if self.structure.prestage is None else self.structure.prestage(x)
                for i, op in enumerate(self.ops):
                    if i == self.full_from and not self.head:
                        self.switch_input = nhwc(h)
                    h = op.clean(h)
                if self.full_from == len(self.ops) and not self.head:
                    self.final = nhwc(h)

    def close(self) -> None:
        """Free the clean activations kept for patching."""
        for op in self.ops:
            op.release()
        self.final = self.switch_input = None

    @torch.no_grad()
    def _full(self, frames, patches, values) -> PolicyOutput:
        """Full re-inference: the patched frames through the whole network."""
        box = self.boxes[0] if self.boxes else self.in_box
        images = self._paste(self.x_nhwc, frames, values, box.take(patches))
        return self.adapter.outputs(images)

    @torch.no_grad()
    def outputs(
        self, frames: torch.Tensor, patches: torch.Tensor, values: torch.Tensor
    ) -> PolicyOutput:
        """Policy outputs for frames ``frames`` [N] with patch ``patches`` [N]'s box set to
        ``values`` [N, C, h, w] (the patched input inside the box)."""
        if self.plan.fallback is not None:
            return self._full(frames, patches, values)
        h = values if self.structure.prestage is None else self.structure.prestage(values)
        last = self.boxes[0].take(patches)
        for i, op in enumerate(self.ops[: self.full_from]):
            box = self.boxes[i + 1].take(patches)
            h = op.step(h, last, box, frames)
            last = box
        if not self.head:  # rebuild the full map where the incremental part ends
            source = self.switch_input if self.full_from < len(self.ops) else self.final
            h = self._paste(source, frames, h, last)
        for op in self.ops[self.full_from :]:
            h = op.full(h)
        stub = self.x[:1].expand(frames.shape[0], *self.x.shape[1:])
        with spliced(self.structure.chain.modules, h):
            return self.adapter.outputs(stub)

    @staticmethod
    def _paste(clean, frames, values, box: Box) -> torch.Tensor:
        zeros = torch.zeros_like(box.rows)
        size = tuple(clean.shape[1:3])
        return compose(clean, frames, zeros, zeros, size, values, box.rows, box.cols)

    def check(self, frames, patches, values, atol_scale: float = 1e-5) -> str | None:
        """Compare incremental and full outputs on a few patches; the problem or None."""
        if self.plan.fallback is not None:
            return None
        try:
            got = self.outputs(frames, patches, values)
        except Exception as exc:  # any failure in the splice means: do not trust it
            return f"incremental run failed: {type(exc).__name__}: {exc}"
        with torch.no_grad():
            want = self._full(frames, patches, values)
        got_tensors, want_tensors = got.tensors(), want.tensors()
        for name in want_tensors:
            a, b = got_tensors[name], want_tensors[name]
            if (a is None) != (b is None):
                return f"{name} missing from one of the runs"
            if a is not None:
                err = float((a - b).abs().max())
                if not err <= atol_scale * max(1.0, float(b.abs().max())):
                    return f"{name} differ from full re-inference by {err:.3g}"
        return None


def warn_fallback(reason: str, what: str = "occlusion") -> None:
    """The warning callers give when a model runs full passes."""
    warnings.warn(
        f"{what}: incremental inference falls back to full passes: {reason}", stacklevel=3
    )
