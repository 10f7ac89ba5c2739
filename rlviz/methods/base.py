"""The contract every attribution method keeps, and the batching driver they share.

A method turns raw observations [B, ...] and a target (what to explain) into one map per frame,
float32 [B, H, W] on the CPU, where H, W is the spatial size of the network's input. Subclasses
write only ``_maps``: a chunk of preprocessed frames, its target and a :class:`MapRequest` (pass
size, layer, per-frame layout, recurrent states) in, maps out. The driver here does the rest the
same way for all of them: preprocessing, resolving the target, splitting a long episode into chunks
that fit in memory, and collecting the results on the CPU.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
from torch import nn

from rlviz.layout import ObservationLayout
from rlviz.methods.passes import Block, job_blocks, pass_buffer
from rlviz.ops import upsample_tensor
from rlviz.policy import PolicyAdapter, PolicyOutput, as_adapter
from rlviz.policy.adapter import State
from rlviz.targets import MostLikelyAction, TakenAction, Target, as_target, subset_target

# Input elements per forward/backward pass when the caller gives no batch_size: enough images to
# keep the CPU/GPU busy (~290 frames of 60x80x3) while bounding activation memory for big inputs
# (~27 frames at 224x224x3). Larger passes were slower for backward passes on a CPU (cache misses,
# BENCHMARKS.md); forward-only methods keep no graph and use twice as many.
DEFAULT_PASS_ELEMENTS = 1 << 22

Obs = np.ndarray | torch.Tensor | Sequence


#: Channel reductions (:func:`reduce_channels`), each (attribution, channel axis) -> map.
_REDUCE = {
    "abs_max": lambda attr, dim: attr.abs().amax(dim=dim),
    "sum": lambda attr, dim: attr.sum(dim=dim),
    "abs_sum": lambda attr, dim: attr.abs().sum(dim=dim),
    "l2": lambda attr, dim: attr.square().sum(dim=dim).sqrt(),
}
REDUCTIONS = tuple(_REDUCE)
SIGNED_REDUCTIONS = ("sum",)


def reduce_channels(attr: torch.Tensor, how: str, dim: int = 1) -> torch.Tensor:
    """Collapse the channel axis ``dim`` of a per-input attribution [B, C, H, W] -> [B, H, W].

    ``abs_max``: max over channels of |a| (Simonyan et al. 2013); ``sum``: signed sum (keeps
    completeness for Integrated Gradients); ``abs_sum``: sum of |a|; ``l2``: Euclidean norm.
    """
    return _REDUCE[check_reduction(how)](attr, dim)


def only_frame(layout: ObservationLayout, x: torch.Tensor) -> list[torch.Tensor]:
    """Per stack frame k, a bool mask [1, K*C, 1, 1] of frame k's channels of input ``x``."""
    masks = []
    for k in range(layout.frames):
        mask = torch.zeros(1, x.shape[1], 1, 1, dtype=torch.bool, device=x.device)
        mask[:, k * layout.channels : (k + 1) * layout.channels] = True
        masks.append(mask)
    return masks


def check_reduction(how: str) -> str:
    """``how`` if it names a channel reduction (:func:`reduce_channels`), else ``ValueError``."""
    if how not in REDUCTIONS:
        raise ValueError(f"unknown channel reduction {how!r}; use one of {REDUCTIONS}")
    return how


def scalar_per_sample(values: torch.Tensor, batch: int) -> torch.Tensor:
    """Check a target's output is one number per sample, [B] (or [B, K] for vector targets)."""
    if values.ndim == 0 or values.shape[0] != batch:
        raise ValueError(
            f"a target must return one value per sample, shape [{batch}]; got shape "
            f"{tuple(values.shape)}. Use rlviz.targets (TakenAction, ActionLogit, Value, ...)"
        )
    return values


def freeze_greedy(target: Target, out: PolicyOutput) -> Target:
    """Fix MostLikelyAction to the greedy action of the clean frames ``out``.

    Methods that evaluate the network on changed inputs (noise, a path, occluders) must keep
    explaining the same action; otherwise the argmax may flip from one perturbation to the next.
    """
    if isinstance(target, MostLikelyAction):
        return TakenAction(out.logits.detach().argmax(dim=-1).cpu())
    return target


def freeze_target(
    adapter: PolicyAdapter, x: torch.Tensor, target: Target, states: State | None = None
) -> Target:
    """:func:`freeze_greedy` with the clean forward pass (entering ``states``, for a recurrent
    policy) run only when the target needs it."""
    if not isinstance(target, MostLikelyAction):
        return target
    with torch.no_grad():
        return freeze_greedy(target, adapter.outputs(x, states))


@dataclass(frozen=True)
class MapRequest:
    """What a method's ``_maps`` is given besides the frames and the target: everything else the
    maps depend on, passed in the open (no context variable, no state held on the adapter)."""

    pass_size: int  # most images per network pass
    layer: str | None = None  # the layer the caller named (CAM family), None: the default
    # In a per-frame call, the layout whose stack frames the maps are split into ([b, K, ...]).
    per_frame: ObservationLayout | None = None
    # A recurrent policy's state entering each frame of the chunk, rows [b, ...]: every forward
    # of the chunk's frames reads it (``adapter.outputs(x, states, rows)``).
    states: State | None = None

    def reduce_input(self, attr: torch.Tensor, how: str) -> torch.Tensor:
        """An input attribution [b, K*C, H, W] -> [b, H, W], or [b, K, H, W] per frame.

        The one place input-space methods collapse channels, so every one of them gets per-frame
        maps (each stack frame's channels reduced on their own) for free.
        """
        if self.per_frame is None:
            return reduce_channels(attr, how)
        return reduce_channels(self.per_frame.split_input(attr), how, dim=2)

    def replaced_maps(
        self,
        x: torch.Tensor,
        replacement: torch.Tensor,
        score: Callable[[torch.Tensor], torch.Tensor],
    ) -> torch.Tensor:
        """Maps of a method that replaces parts of ``x`` by ``replacement`` (an occluder's fill,
        a blur) and scores the input it is given, ``score(replaced) -> [b, ...]``.

        "Where" (one map): ``score(replacement)``, the same spot replaced in every stack frame.
        "When" (per frame): one stack frame replaced at a time, the others left as they are; the
        maps stacked [b, K, ...].
        """
        if self.per_frame is None:
            return score(replacement)
        return torch.stack(
            [score(torch.where(only, replacement, x)) for only in only_frame(self.per_frame, x)],
            dim=1,
        )

    @contextmanager
    def passes(self, x: torch.Tensor, jobs_per_frame: int) -> Iterator[Iterator[Block]]:
        """The :class:`Block` s that cover ``jobs_per_frame`` jobs (path steps, noise draws,
        windows) of every frame of ``x`` [b, ...], at most ``pass_size`` images each, all filling
        one reused buffer (:func:`pass_buffer`)."""
        frames = x.shape[0]
        with pass_buffer(x, frames, jobs_per_frame, self.pass_size) as buffer:
            yield (
                Block(f, j, buffer.block(f.stop - f.start, j.stop - j.start))
                for f, j in job_blocks(frames, jobs_per_frame, self.pass_size)
            )


def _on_newest_frame(maps: torch.Tensor, frames: int) -> torch.Tensor:
    """Maps [B, h, w] as per-frame maps [B, K, h, w] that are 0 on every frame but the newest."""
    out = maps.new_zeros(maps.shape[0], frames, *maps.shape[1:])
    out[:, -1] = maps
    return out


# -- input checks (issue 21): a bad input fails here with what to do, not deep inside torch ------


def check_observations(obs: Obs) -> Obs:
    """``obs`` ready for a pass: NaN / Inf observations raise ``ValueError``; a numpy view with
    negative strides (``obs[:, ::-1]``, which torch cannot wrap) becomes a contiguous copy."""
    if isinstance(obs, np.ndarray):
        if any(stride < 0 for stride in obs.strides):
            obs = np.ascontiguousarray(obs)
        finite = np.isfinite(obs) if obs.dtype.kind in "fc" else None
    elif isinstance(obs, torch.Tensor):
        finite = torch.isfinite(obs).cpu().numpy() if obs.is_floating_point() else None
    else:
        finite = None
    if finite is not None and not finite.all():
        first = tuple(int(i) for i in np.argwhere(~finite)[0])
        raise ValueError(
            f"observations shaped {list(np.shape(obs))} hold {int((~finite).sum())} NaN/Inf "
            f"values (first at index {list(first)}); expected finite pixels: fix the env or "
            "preprocessing, or replace them with np.nan_to_num"
        )
    return obs


def _network_rejected(exc: RuntimeError, obs: Obs, method: str) -> RuntimeError:
    """The model's own error on ``obs``, said with what was given and what to check."""
    dtype = getattr(obs, "dtype", type(obs).__name__)
    return RuntimeError(
        f"{method}: the policy's network failed on observations shaped {list(np.shape(obs))} "
        f"({dtype}): {exc}. Expected observations like the env the policy was trained on: check "
        "their shape, channels and layout (PolicyAdapter(model, layout=...))"
    )


def _model_warnings(model: nn.Module) -> None:
    if not model.training:
        return
    stochastic = (nn.Dropout, nn.Dropout2d, nn.modules.batchnorm._BatchNorm)
    if any(isinstance(m, stochastic) and m.training for m in model.modules()):
        warnings.warn(
            "the model is in training mode and has dropout or batch-norm layers: maps will be "
            "random or depend on the batch. rlviz leaves the mode alone; call model.eval() first",
            stacklevel=3,
        )


class AttributionMethod:
    """Base class: ``attribute(adapter, obs, target) -> float32 [B, H, W]``.

    Subclasses set ``name`` and implement :meth:`_maps`. Class attributes describe the method to
    callers (panels, ``explain``):

    * ``needs_layer``: it reads an inner layer (``layer=`` dotted name; default last conv).
    * ``signed``: maps can be negative (normalise with ``signed=True``).
    * ``low_res``: ``_maps`` returns a coarse map that :meth:`attribute` upsamples;
      :meth:`attribute_raw` returns it unchanged.
    """

    name: ClassVar[str] = ""
    #: What panels and plots print; set by ``@register`` (see ``method_title``).
    title: ClassVar[str] = ""
    needs_layer: ClassVar[bool] = False
    low_res: ClassVar[bool] = False
    #: Whether the method evaluates the network on altered inputs (then the greedy target is fixed
    #: on the clean frames first).
    perturbs_input: ClassVar[bool] = False
    #: Input elements per network pass when no batch_size is given (memory vs. speed).
    pass_elements: ClassVar[int] = DEFAULT_PASS_ELEMENTS
    #: What ``per_frame=True`` gives: ``input`` (each stack frame's channels reduced alone),
    #: ``when`` (the method perturbs one frame at a time) or ``newest`` (a layer mixes the
    #: frames, so the map is drawn on the newest frame only).
    per_frame_mode: ClassVar[str] = "input"
    signed: bool = False

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({opts})"

    # -- what subclasses provide -------------------------------------------------------------

    def images_per_frame(self) -> int:
        """Network inputs one frame costs (steps, noise draws, windows + 1); used for chunking."""
        return 1

    def _maps(
        self, adapter: PolicyAdapter, x: torch.Tensor, target: Target, request: MapRequest
    ) -> torch.Tensor:
        """Maps for preprocessed frames ``x`` [b, C, H, W]: [b, H, W] (or [b, h, w] if low_res;
        [b, K, ...] when ``request.per_frame`` is set)."""
        raise NotImplementedError

    def _resolve_target(self, spec: object) -> Target:
        return as_target(spec)

    def _upsample(self, maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """Low-res maps [b, h, w] -> [b, *size] (bilinear, half-pixel centres)."""
        return upsample_tensor(maps, size)

    # -- public API --------------------------------------------------------------------------

    def attribute(
        self,
        adapter: PolicyAdapter | nn.Module,
        obs: Obs,
        target: object = None,
        *,
        layer: str | None = None,
        batch_size: int | None = None,
        per_frame: bool = False,
        states: Sequence[torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Attribution maps for a batch of raw observations.

        Args:
            adapter: the policy (an ``nn.Module`` is wrapped in a default ``PolicyAdapter``).
            obs: raw observations, e.g. uint8 [B, H, W, C] (one frame without B is fine), or
                anything ``adapter.preprocess`` accepts.
            target: what to explain: ``None`` (greedy action's log-prob), an action index (its
                logit), ``"value"``, ``"entropy"``, or a callable such as ``TakenAction(actions)``.
            layer: dotted layer name for layer methods (CAM family); ignored by the others.
            batch_size: most images per forward/backward pass (memory knob). Frames are grouped
                so a pass stays under it; results do not depend on it.
            per_frame: one map per stack frame (oldest first) for policies that see K frames
                (see :attr:`per_frame_mode`).
            states: for a recurrent policy, the state entering each observation (a tuple of
                tensors [B, ...], as rollouts record); each step is explained with it held fixed.

        Returns:
            float32 [B, H, W] on the CPU, H, W the network input's spatial size; [B, K, H, W]
            with ``per_frame``.
        """
        return self._run(
            adapter, obs, target, layer=layer, batch_size=batch_size, per_frame=per_frame,
            states=states,
        )  # fmt: skip

    def attribute_raw(
        self, adapter: PolicyAdapter | nn.Module, obs: Obs, target: object = None, **options
    ) -> torch.Tensor:
        """Like :meth:`attribute` (the same keyword options) but before upsampling: float32
        [B, h, w] (the layer's or the perturbation grid's resolution; equal to :meth:`attribute`
        for input-resolution methods)."""
        return self._run(adapter, obs, target, raw=True, **options)

    # -- driver ------------------------------------------------------------------------------

    def _run(
        self, adapter, obs, target, *, layer=None, batch_size=None, per_frame=False, states=None,
        raw: bool = False,
    ) -> torch.Tensor:  # fmt: skip
        """:meth:`attribute`'s work, the maps upsampled unless ``raw``."""
        adapter = as_adapter(adapter)
        _model_warnings(adapter.model)
        obs = check_observations(obs)
        if batch_size is not None and (
            not isinstance(batch_size, (int, np.integer)) or batch_size < 1
        ):
            raise ValueError(
                f"batch_size must be a positive int (images per pass), got {batch_size!r}"
            )
        layout = self._per_frame_layout(adapter, obs) if per_frame else None
        states = self._check_states(adapter, states)
        resolved = self._resolve_target(target)
        count, pass_size, chunks = self._chunks(adapter, obs, batch_size, self.images_per_frame())
        self._check_target_length(resolved, count)
        split = layout if self.per_frame_mode != "newest" else None
        outs = []
        for start, x in chunks:
            rows = slice(start, start + x.shape[0])
            whole = start == 0 and x.shape[0] == count
            tgt = resolved if whole else subset_target(resolved, rows)
            held = None if states is None else tuple(s[rows] for s in states)
            try:
                maps = self._maps(adapter, x, tgt, MapRequest(pass_size, layer, split, held))
            except torch.cuda.OutOfMemoryError:
                raise
            except RuntimeError as exc:
                raise _network_rejected(exc, obs, self.name) from exc
            if self.low_res and not raw:
                maps = self._upsample(maps, tuple(x.shape[-2:]))
            outs.append(maps.detach().to("cpu", torch.float32))
        maps = outs[0] if len(outs) == 1 else torch.cat(outs)
        if layout is not None and self.per_frame_mode == "newest":
            maps = _on_newest_frame(maps, layout.frames)
        return maps

    def _per_frame_layout(self, adapter: PolicyAdapter, obs: Obs) -> ObservationLayout:
        layout = adapter.layout_for(obs)
        if layout.source == "shape" and layout.frames == 1 and layout.channels not in (1, 3):
            raise ValueError(
                f"per_frame: are the {layout.channels} channels of an observation one frame or a "
                "stack of frames? Declare the layout, e.g. PolicyAdapter(model, "
                "layout=rlviz.ObservationLayout(frames=4, channels=1, order='CHW'))"
            )
        if self.per_frame_mode == "newest" and layout.stacked:
            warnings.warn(
                f"{self.name}: a conv layer mixes the {layout.frames} stack frames, so its map "
                "is drawn on the newest frame only (past frames get 0); use an input-space "
                "method (gradient, occlusion, ...) to see which frames the policy used",
                stacklevel=4,
            )
        return layout

    @staticmethod
    def _check_states(adapter: PolicyAdapter, states) -> tuple[torch.Tensor, ...] | None:
        if states is None:
            return None
        if not adapter.recurrent:
            raise ValueError("states= is for recurrent policies; this policy has no state")
        if isinstance(states, torch.Tensor):
            states = (states,)
        return tuple(torch.as_tensor(s).to(adapter.device) for s in states)

    @staticmethod
    def _frame_count(obs: Obs) -> int | None:
        if isinstance(obs, (np.ndarray, torch.Tensor)):
            return 1 if obs.ndim == 3 else (obs.shape[0] if obs.ndim == 4 else None)
        if isinstance(obs, (list, tuple)):
            return len(obs)
        return None

    def _chunks(self, adapter, obs, batch_size, per_frame) -> tuple[int, int, Iterator]:
        """Frame count, images per pass, and an iterator of (first frame index, preprocessed
        chunk [b, C, H, W]) pairs."""
        count = self._frame_count(obs)
        if count == 0:
            raise ValueError("got no observations to explain (an empty batch)")
        x = adapter.preprocess(obs).detach() if count is None or count == 1 else None
        if x is not None:
            count = x.shape[0]
        if batch_size is None:
            numel = x[0].numel() if x is not None else int(np.prod(np.shape(obs[0])))
            batch_size = max(1, self.pass_elements // max(1, numel))
        step = max(1, batch_size // max(1, int(per_frame)))

        def chunks() -> Iterator[tuple[int, torch.Tensor]]:
            for start in range(0, count, step):
                if x is not None:
                    yield start, x[start : start + step]
                else:
                    yield start, adapter.preprocess(obs[start : start + step]).detach()

        return count, int(batch_size), chunks()

    @staticmethod
    def _check_target_length(target: Target, count: int) -> None:
        actions = getattr(target, "actions", None)
        if isinstance(actions, torch.Tensor) and actions.ndim == 1 and actions.shape[0] != count:
            raise ValueError(
                f"the target has {actions.shape[0]} actions for {count} observations; pass one "
                "action per frame (e.g. TakenAction(rollout.actions))"
            )


class ReplacementMethod(AttributionMethod):
    """Base of the methods that replace parts of each frame (an occluder's fill, a blur) and score
    how the target changes.

    Subclasses write ``_replacement(x)``: what replaces parts of the frames [b, C, H, W], [1 or b,
    C, H, W]; and ``_changes(adapter, x, replacement, target, clean, request)``: maps [b, h, w] of
    how the target moves from its ``clean`` values. One clean pass fixes the greedy action and
    those values; per frame, one stack frame is replaced at a time
    (:meth:`MapRequest.replaced_maps`).
    """

    perturbs_input = True
    per_frame_mode = "when"

    @staticmethod
    def _values(values: torch.Tensor, batch: int) -> torch.Tensor:
        """The target's values on a batch, checked: one scalar per sample."""
        return scalar_per_sample(values, batch)

    def _maps(self, adapter, x, target, request):
        with torch.no_grad():
            clean_out = adapter.outputs(x, request.states)
            target = freeze_greedy(target, clean_out)
            clean = self._values(target(clean_out), x.shape[0])
            return request.replaced_maps(
                x,
                self._replacement(x),
                lambda replaced: self._changes(adapter, x, replaced, target, clean, request),
            )
