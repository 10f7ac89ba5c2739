"""Image operations shared by methods, maps and optvis: resize, blur, fill values, layout guess;
and torch's thread count for a block (:func:`torch_threads`).

A leaf: torch and numpy only, so that display code (``maps``) and feature tools (optvis) can use
them without depending on the attribution-method contract.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import lru_cache

import numpy as np
import torch

# Channel counts an image axis can have (grey, RGB, RGBA or a 4-frame stack).
CHANNEL_COUNTS = (1, 3, 4)


def channel_axis(frame_shape: Sequence[int]) -> int | None:
    """Guess where the channels of one frame ``[a, b, c]`` are: ``-1`` (HWC), ``0`` (CHW) or None.

    The axis is a channel axis when its size is a channel count (1, 3, 4) and the other end's is
    not; None when both or neither could be (ambiguous: the caller keeps its own default).
    """
    first, last = frame_shape[0] in CHANNEL_COUNTS, frame_shape[-1] in CHANNEL_COUNTS
    if last and not first:
        return -1
    if first and not last:
        return 0
    return None


def channels_first(obs: torch.Tensor) -> torch.Tensor:
    """A batch [B, H, W, C] that looks channel-last as [B, C, H, W] (a view); else unchanged."""
    if obs.ndim == 4 and channel_axis(obs.shape[1:]) == -1:
        return obs.permute(0, 3, 1, 2)
    return obs


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


def evenly_spaced(n: int, most: int) -> np.ndarray:
    """At most ``most`` step indices spread evenly over ``range(n)`` (first and last included;
    all of them when ``n <= most``): the sample a fit on a long episode is made from."""
    if n <= most:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, most).round().astype(np.int64))


def resolve_device(name: str | torch.device) -> torch.device:
    """The torch device ``name`` asks for (``"auto"``: cuda when there is one), with a one-line
    error when it is not a device or CUDA is asked for and absent."""
    if isinstance(name, torch.device):
        device = name
    elif name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        try:
            device = torch.device(name)
        except RuntimeError:
            raise ValueError(
                f"--device {name!r} is not a device; use cpu, cuda, cuda:N or auto"
            ) from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for but torch sees no CUDA GPU; use --device cpu")
    return device


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run the block with ``n`` torch intra-op threads, then restore the caller's setting.

    A rollout makes one batch-1 forward pass per step: too little work to share, and on a busy
    machine OpenMP threads spin-waiting between such passes cost ~10x the pass itself.
    """
    before = torch.get_num_threads()
    if before != n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if before != n:
            torch.set_num_threads(before)
