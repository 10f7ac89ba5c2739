"""The contract every attribution method keeps, and the batching driver they share.

A method turns raw observations [B, ...] and a target (what to explain) into one map per frame,
float32 [B, H, W] on the CPU, where H, W is the spatial size of the network's input. Subclasses
write only ``_maps``: a batch of preprocessed frames in, maps out. The driver here does the rest the
same way for all of them: preprocessing, resolving the target, splitting a long episode into chunks
that fit in memory, and collecting the results on the CPU.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import lru_cache
from typing import ClassVar

import numpy as np
import torch
from torch import nn

from rlviz.adapters import PolicyAdapter, PolicyOutput
from rlviz.targets import MostLikelyAction, TakenAction, Target, as_target, subset_target

# Input elements per forward/backward pass when the caller gives no batch_size: enough images to
# keep the CPU/GPU busy (~290 frames of 60x80x3) while bounding activation memory for big inputs
# (~27 frames at 224x224x3). Larger passes were slower for backward passes on a CPU (cache misses,
# BENCHMARKS.md); forward-only methods keep no graph and use twice as many.
DEFAULT_PASS_ELEMENTS = 1 << 22

Obs = np.ndarray | torch.Tensor | Sequence


def as_adapter(policy: PolicyAdapter | nn.Module) -> PolicyAdapter:
    """``policy`` as a :class:`PolicyAdapter` (an ``nn.Module`` is wrapped with the defaults)."""
    if isinstance(policy, PolicyAdapter):
        return policy
    if isinstance(policy, nn.Module):
        return PolicyAdapter(policy)
    raise TypeError(
        f"expected a rlviz.PolicyAdapter or an nn.Module, got {type(policy).__name__}; "
        "wrap other policies with rlviz.PolicyAdapter(module, forward=fn)"
    )


def reduce_channels(attr: torch.Tensor, how: str) -> torch.Tensor:
    """Collapse the channel axis of a per-input attribution [B, C, H, W] -> [B, H, W].

    ``abs_max``: max over channels of |a| (Simonyan et al. 2013); ``sum``: signed sum (keeps
    completeness for Integrated Gradients); ``abs_sum``: sum of |a|; ``l2``: Euclidean norm.
    """
    if how == "abs_max":
        return attr.abs().amax(dim=1)
    if how == "sum":
        return attr.sum(dim=1)
    if how == "abs_sum":
        return attr.abs().sum(dim=1)
    if how == "l2":
        return attr.square().sum(dim=1).sqrt()
    raise ValueError(f"unknown channel reduction {how!r}; use one of {REDUCTIONS}")


REDUCTIONS = ("abs_max", "sum", "abs_sum", "l2")
SIGNED_REDUCTIONS = ("sum",)


@lru_cache(maxsize=64)
def _resize_matrix(n_in: int, n_out: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """[n_out, n_in] linear interpolation weights with half-pixel centres (align_corners=False)."""
    src = (torch.arange(n_out, dtype=torch.float64) + 0.5) * (n_in / n_out) - 0.5
    src = src.clamp(0, n_in - 1)
    lo = src.floor().long()
    hi = (lo + 1).clamp(max=n_in - 1)
    frac = src - lo
    rows = torch.arange(n_out)
    matrix = torch.zeros(n_out, n_in, dtype=torch.float64)
    matrix[rows, lo] += 1 - frac
    matrix[rows, hi] += frac
    return matrix.to(device=device, dtype=dtype)


def upsample_tensor(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize (half-pixel centres, as OpenCV and PIL) of maps [B, h, w] -> [B, *size].

    Same values as ``F.interpolate(mode="bilinear", align_corners=False)``, computed as two small
    matrix products (rows, then columns), which is several times faster for the small maps here.
    """
    h, w = maps.shape[-2:]
    if (h, w) == tuple(size):
        return maps
    ry = _resize_matrix(h, int(size[0]), maps.device, maps.dtype)
    rx = _resize_matrix(w, int(size[1]), maps.device, maps.dtype)
    return torch.matmul(torch.matmul(ry, maps), rx.T)


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


def freeze_target(adapter: PolicyAdapter, x: torch.Tensor, target: Target) -> Target:
    """:func:`freeze_greedy` with the clean forward pass run only when the target needs it."""
    if not isinstance(target, MostLikelyAction):
        return target
    with torch.no_grad():
        return freeze_greedy(target, adapter.outputs(x))


def job_blocks(frames: int, per_frame: int, pass_size: int) -> Iterator[tuple[slice, slice]]:
    """Split ``frames`` x ``per_frame`` jobs (path steps, noise draws, windows) into passes.

    Each pass is a rectangular block: whole frames with all their jobs when a frame fits in a pass,
    else one frame with a run of its jobs. Blocks let methods build a pass's inputs with one
    broadcast op ([frames, jobs, C, H, W]) instead of gathering rows.

    Yields:
        (frame slice, job slice), covering every (frame, job) pair once, with at most
        ``pass_size`` pairs per block.
    """
    if per_frame <= pass_size:
        step = pass_size // per_frame
        for start in range(0, frames, step):
            yield slice(start, min(start + step, frames)), slice(0, per_frame)
    else:
        for frame in range(frames):
            for start in range(0, per_frame, pass_size):
                yield slice(frame, frame + 1), slice(start, min(start + pass_size, per_frame))


class PassBuffer:
    """One input buffer reused by every pass of a call (and by later calls on the same thread).

    A fresh tensor per pass costs page faults on first touch (tens of MB of new memory each time)
    that can rival a small network's forward pass; writing each pass into the same memory avoids
    them. ``block(k, j)`` is a contiguous [k, j, C, H, W] view to fill with one broadcast op
    (``out=``) and hand to the network as ``.flatten(0, 1)``. Use it through :func:`pass_buffer`.
    """

    def __init__(self, data: torch.Tensor) -> None:
        self.data = data

    def block(self, k: int, j: int) -> torch.Tensor:
        """The first k x j images as [k, j, C, H, W] (contiguous)."""
        return self.data[: k * j].view(k, j, *self.data.shape[1:])


_WORKSPACE = threading.local()


@contextmanager
def pass_buffer(
    x: torch.Tensor, frames: int, per_frame: int, pass_size: int
) -> Iterator[PassBuffer]:
    """A :class:`PassBuffer` big enough for the largest block :func:`job_blocks` yields.

    The memory is kept per thread (at most ``pass_size`` images of the last frame shape, i.e.
    up to a few x DEFAULT_PASS_ELEMENTS floats by default) and lent to one user at a time; a
    nested user gets fresh memory.
    """
    images = min(pass_size, frames * per_frame)
    cached = getattr(_WORKSPACE, "data", None)
    busy = getattr(_WORKSPACE, "busy", False)
    fits = (
        cached is not None
        and cached.shape[1:] == x.shape[1:]
        and cached.dtype == x.dtype
        and cached.device == x.device
        and cached.shape[0] >= images
    )
    if busy:
        yield PassBuffer(x.new_empty(images, *x.shape[1:]))
        return
    if not fits:
        _WORKSPACE.data = None  # let the old buffer go before making the new one
        _WORKSPACE.data = cached = x.new_empty(images, *x.shape[1:])
    _WORKSPACE.busy = True
    try:
        yield PassBuffer(cached)
    finally:
        _WORKSPACE.busy = False


def block_target(target: Target, frames: slice, jobs: int) -> Target:
    """``target`` for a block's images: frame f's entry repeated for each of its ``jobs``."""
    index = torch.arange(frames.start, frames.stop).repeat_interleave(jobs)
    return subset_target(target, index)


def _reflect_index(n: int, radius: int, device: torch.device) -> torch.Tensor:
    """Indices that pad a length-n axis by ``radius`` with symmetric reflection (d c b a | a b c d),
    SciPy's ``mode="reflect"``; repeats the pattern when radius > n."""
    idx = torch.arange(-radius, n + radius, device=device)
    period = 2 * n
    idx = idx % period
    return torch.where(idx >= n, period - 1 - idx, idx)


@lru_cache(maxsize=32)
def _blur_matrix(
    n: int, sigma: float, truncate: float, device: torch.device, dtype: torch.dtype
) -> torch.Tensor:
    """[n, n] matrix that blurs a length-n axis: reflect padding and the cut kernel folded in."""
    radius = int(truncate * sigma + 0.5)
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float64)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = kernel / kernel.sum()
    source = _reflect_index(n, radius, torch.device("cpu")).unfold(0, 2 * radius + 1, 1)  # [n, k]
    rows = torch.arange(n).repeat_interleave(2 * radius + 1)
    matrix = torch.zeros(n, n, dtype=torch.float64)
    matrix.index_put_((rows, source.flatten()), kernel.repeat(n), accumulate=True)
    return matrix.to(device=device, dtype=dtype)


def gaussian_blur(x: torch.Tensor, sigma: float, truncate: float = 4.0) -> torch.Tensor:
    """Gaussian blur of each channel of ``x`` [B, C, H, W], as ``scipy.ndimage.gaussian_filter``
    (reflect borders, kernel cut at ``truncate`` sigmas). Returns [B, C, H, W]; differentiable."""
    if sigma <= 0:
        return x.clone()
    h, w = x.shape[-2:]
    key = (float(sigma), float(truncate), x.device, x.dtype)
    # Separable blur as two small matrix products: ~25x faster on a CPU than one-channel
    # convolutions over padded copies, and exactly the same sums.
    return _blur_matrix(h, *key) @ x @ _blur_matrix(w, *key).T


def fill_values(x: torch.Tensor, fill: object, blur_sigma: float = 5.0) -> torch.Tensor:
    """What replaces removed pixels, broadcastable to ``x`` [B, C, H, W].

    ``fill``: a number, ``"mean"`` (each frame's mean colour), ``"blur"`` (the frame blurred with
    ``blur_sigma``), or a tensor broadcastable to one frame [C, H, W].
    """
    if isinstance(fill, str):
        if fill == "mean":
            return x.mean(dim=(2, 3), keepdim=True)
        if fill == "blur":
            return gaussian_blur(x, blur_sigma)
        if fill in ("zeros", "black"):
            return x.new_zeros(1, 1, 1, 1)
        raise ValueError(
            f"unknown fill {fill!r}; use a number, 'mean', 'blur', 'zeros' or a tensor"
        )
    if isinstance(fill, (int, float)):
        return x.new_full((1, 1, 1, 1), float(fill))
    if isinstance(fill, (torch.Tensor, np.ndarray)):
        value = torch.as_tensor(fill).to(device=x.device, dtype=x.dtype)
        try:
            return torch.broadcast_to(value, x.shape[1:]).unsqueeze(0)
        except RuntimeError:
            raise ValueError(
                f"a fill/baseline tensor must broadcast to one frame {tuple(x.shape[1:])}, got "
                f"shape {tuple(value.shape)}"
            ) from None
    raise TypeError(f"fill must be a number, a name or a tensor, got {type(fill).__name__}")


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
    needs_layer: ClassVar[bool] = False
    low_res: ClassVar[bool] = False
    #: Whether the method evaluates the network on altered inputs (then the greedy target is fixed
    #: on the clean frames first).
    perturbs_input: ClassVar[bool] = False
    #: Input elements per network pass when no batch_size is given (memory vs. speed).
    pass_elements: ClassVar[int] = DEFAULT_PASS_ELEMENTS
    signed: bool = False

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({opts})"

    # -- what subclasses provide -------------------------------------------------------------

    def images_per_frame(self) -> int:
        """Network inputs one frame costs (steps, noise draws, windows + 1); used for chunking."""
        return 1

    def _maps(
        self,
        adapter: PolicyAdapter,
        x: torch.Tensor,
        target: Target,
        layer: str | None,
        pass_size: int,
    ) -> torch.Tensor:
        """Maps for preprocessed frames ``x`` [b, C, H, W]: [b, H, W] (or [b, h, w] if low_res)."""
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

        Returns:
            float32 [B, H, W] on the CPU, H, W the network input's spatial size.
        """
        return self._run(adapter, obs, target, layer, batch_size, raw=False)

    def attribute_raw(
        self,
        adapter: PolicyAdapter | nn.Module,
        obs: Obs,
        target: object = None,
        *,
        layer: str | None = None,
        batch_size: int | None = None,
    ) -> torch.Tensor:
        """Like :meth:`attribute` but before upsampling: float32 [B, h, w] (the layer's or the
        perturbation grid's resolution; equal to :meth:`attribute` for input-resolution methods)."""
        return self._run(adapter, obs, target, layer, batch_size, raw=True)

    # -- driver ------------------------------------------------------------------------------

    def _run(self, adapter, obs, target, layer, batch_size, raw: bool) -> torch.Tensor:
        adapter = as_adapter(adapter)
        _model_warnings(adapter.model)
        if batch_size is not None and (
            not isinstance(batch_size, (int, np.integer)) or batch_size < 1
        ):
            raise ValueError(
                f"batch_size must be a positive int (images per pass), got {batch_size!r}"
            )
        resolved = self._resolve_target(target)
        count, pass_size, chunks = self._chunks(adapter, obs, batch_size, self.images_per_frame())
        self._check_target_length(resolved, count)
        outs = []
        for start, x in chunks:
            whole = start == 0 and x.shape[0] == count
            tgt = resolved if whole else subset_target(resolved, slice(start, start + x.shape[0]))
            maps = self._maps(adapter, x, tgt, layer, pass_size)
            if self.low_res and not raw:
                maps = self._upsample(maps, tuple(x.shape[-2:]))
            outs.append(maps.detach().to("cpu", torch.float32))
        return outs[0] if len(outs) == 1 else torch.cat(outs)

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
