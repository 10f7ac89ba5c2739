"""Image parameterisations: what the optimiser actually changes.

Optimising raw pixels lets high frequencies run away; a Fourier parameterisation scaled by 1/f
makes every frequency equally easy to change, and decorrelating colour makes colours as easy to
change as brightness (Olah et al., "Feature Visualization", Distill 2017, section "The enemy of
feature visualization"). Each parameterisation is called with no argument and returns the image,
float [B, C, H, W] in [0, 1] (through a sigmoid), at the policy's own resolution.
"""

from __future__ import annotations

import numpy as np
import torch

#: Square root of ImageNet's colour covariance (as used by Lucid): a default when no frames are
#: at hand; :func:`color_correlation` estimates the one of your own observations.
IMAGENET_COLOR_SQRT = np.array(
    [[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]], dtype=np.float32
)


def color_correlation(frames: np.ndarray) -> np.ndarray:
    """Square root of the colour covariance of ``frames`` uint8 [N, H, W, 3], via its
    eigen-decomposition, scaled so its largest column norm is 1: float32 [3, 3] that turns
    decorrelated channels into correlated RGB."""
    frames = np.asarray(frames)
    if frames.ndim < 2 or frames.shape[-1] != 3:
        raise ValueError(f"color_correlation needs RGB frames [..., 3], got shape {frames.shape}")
    pixels = frames.reshape(-1, 3).astype(np.float64) / 255.0
    cov = np.cov(pixels, rowvar=False)
    eigval, eigvec = np.linalg.eigh(cov)
    sqrt = eigvec * np.sqrt(np.clip(eigval, 1e-12, None))[None, :]
    return (sqrt / np.linalg.norm(sqrt, axis=0).max()).astype(np.float32)


def _color_matrix(decorrelate: bool | np.ndarray, channels: int) -> torch.Tensor | None:
    if decorrelate is False or decorrelate is None:
        return None
    if channels != 3:
        raise ValueError(
            f"colour decorrelation needs 3 channels, the image has {channels}; pass decorrelate=False"
        )
    matrix = (
        IMAGENET_COLOR_SQRT if decorrelate is True else np.asarray(decorrelate, dtype=np.float32)
    )
    if matrix.shape != (3, 3):
        raise ValueError(
            f"decorrelate must be True/False or a [3, 3] matrix, got shape {matrix.shape}"
        )
    # normalise like color_correlation so the step size does not depend on the matrix's scale
    matrix = matrix / np.linalg.norm(matrix, axis=0).max()
    return torch.as_tensor(matrix, dtype=torch.float32)


def _generator(seed: int | torch.Generator | None) -> torch.Generator:
    if isinstance(seed, torch.Generator):
        return seed
    return torch.Generator().manual_seed(0 if seed is None else int(seed))


class ImageParam:
    """Base: ``params`` (tensors the optimiser changes) and ``__call__() -> [B, C, H, W]`` in [0, 1].

    Holds ``batch`` images of ``size`` (H, W) with ``channels`` channels, and the colour matrix
    that ``decorrelate`` asks for (None without decorrelation).
    """

    params: list[torch.Tensor]
    name: str = "image"

    def __init__(
        self,
        size: tuple[int, int],
        batch: int,
        channels: int,
        decorrelate: bool | np.ndarray | None = False,
    ) -> None:
        self.color = _color_matrix(decorrelate, channels)
        if len(size) != 2 or min(size) < 2:
            raise ValueError(f"size must be (height, width) of at least 2x2, got {size}")
        if batch < 1 or channels < 1:
            raise ValueError(
                f"batch and channels must be positive, got batch={batch}, channels={channels}"
            )
        self.size, self.batch, self.channels = (int(size[0]), int(size[1])), batch, channels

    def _to_rgb(self, raw: torch.Tensor) -> torch.Tensor:
        if self.color is not None:
            raw = torch.einsum("ij,bjhw->bihw", self.color.to(raw), raw)
        return torch.sigmoid(raw)


class PixelImage(ImageParam):
    """Pixel parameterisation of ``batch`` images of ``size`` (H, W): one free value per pixel
    and channel (through colour decorrelation and a sigmoid). ``init`` starts from a frame
    (uint8 [H, W, C] or float [C, H, W] in [0, 1]) instead of grey noise of std ``sd``."""

    name = "pixels"

    def __init__(
        self,
        size: tuple[int, int],
        batch: int = 1,
        *,
        channels: int = 3,
        sd: float = 0.01,
        decorrelate: bool | np.ndarray = False,
        init: np.ndarray | torch.Tensor | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(size, batch, channels, decorrelate)
        h, w = self.size
        if init is not None:
            raw = self._inverse(init)
        else:
            raw = torch.randn(batch, channels, h, w, generator=_generator(seed)) * sd
        self.raw = raw.requires_grad_(True)
        self.params = [self.raw]

    def _inverse(self, init) -> torch.Tensor:
        img = torch.as_tensor(
            np.asarray(init) if not isinstance(init, torch.Tensor) else init
        ).float()
        if img.ndim == 3 and img.shape[-1] == self.channels and img.shape[0] != self.channels:
            img = img.permute(2, 0, 1)
        if img.ndim == 3:
            img = img[None]
        if img.max() > 1.0:  # uint8 frame
            img = img / 255.0
        if tuple(img.shape[1:]) != (self.channels, *self.size):
            raise ValueError(
                f"init image has shape {tuple(img.shape)}, expected [{self.channels}, {self.size[0]}, {self.size[1]}] "
                f"or [{self.size[0]}, {self.size[1]}, {self.channels}]"
            )
        # away from 0 and 1, where the sigmoid's inverse is infinite
        logit = torch.logit(img.clamp(0.01, 0.99))
        if self.color is not None:
            logit = torch.einsum("ij,bjhw->bihw", torch.linalg.inv(self.color), logit)
        return logit.expand(self.batch, -1, -1, -1).clone()

    def __call__(self) -> torch.Tensor:
        return self._to_rgb(self.raw)


class FourierImage(ImageParam):
    """Fourier parameterisation: the image's 2-D spectrum, each frequency scaled by
    1/f^decay_power, then inverse FFT (through colour decorrelation and a sigmoid).
    ``decorrelate``: True for the ImageNet matrix, or a [3, 3] matrix from
    :func:`color_correlation` of your frames."""

    name = "fourier"

    def __init__(
        self,
        size: tuple[int, int],
        batch: int = 1,
        *,
        channels: int = 3,
        sd: float = 0.01,
        decay_power: float = 1.0,
        decorrelate: bool | np.ndarray = True,
        seed: int = 0,
    ) -> None:
        super().__init__(size, batch, channels, decorrelate)
        h, w = self.size
        fy = torch.fft.fftfreq(h)[:, None]
        fx = torch.fft.rfftfreq(w)[None, :]
        freq = torch.sqrt(fx**2 + fy**2)
        # the lowest non-zero frequency bounds the DC term's scale
        self.scale = 1.0 / torch.clamp(freq, min=1.0 / max(h, w)) ** decay_power
        self.spectrum = (
            torch.randn(batch, channels, h, w // 2 + 1, 2, generator=_generator(seed)) * sd
        ).requires_grad_(True)
        self.params = [self.spectrum]

    def __call__(self) -> torch.Tensor:
        spec = torch.view_as_complex(self.spectrum) * self.scale.to(self.spectrum.device)
        raw = torch.fft.irfft2(spec, s=self.size, norm="ortho")
        # Lucid divides by 4 so the sigmoid starts in its linear range; same here.
        return self._to_rgb(raw / 4.0)


#: The parameterisations by the lowercase names the other optvis pieces have
#: (``optvis.pixels((60, 80), init=frame)``, ``optvis.fourier((60, 80))``).
pixels = PixelImage
fourier = FourierImage


def noise_image(param: str | ImageParam, like: torch.Tensor, seed: int = 0) -> ImageParam:
    """A start from noise the shape of the network input ``like`` [B, C, H, W]: ``"pixels"``
    (std 0.5 before the sigmoid) or ``"fourier"`` (colour decorrelated for RGB); an
    :class:`ImageParam` is used as it is."""
    if isinstance(param, ImageParam):
        return param
    size, batch, channels = tuple(like.shape[-2:]), len(like), like.shape[1]
    if param == "pixels":
        return pixels(size, batch, channels=channels, sd=0.5, seed=seed)
    if param == "fourier":
        return fourier(size, batch, channels=channels, decorrelate=channels == 3, seed=seed)
    raise ValueError(f"param must be 'pixels', 'fourier' or an ImageParam, got {param!r}")
