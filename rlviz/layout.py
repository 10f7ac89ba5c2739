"""ObservationLayout: how one observation holds its frames, channels and values.

Pixel agents see one frame (``[H, W, C]``, ``[C, H, W]``) or a stack of the last K frames, laid out
in one of a few ways: SB3's ``VecFrameStack`` concatenates frames on the channel axis (``[H, W, K*C]``,
or ``[K*C, H, W]`` after ``VecTransposeImage``), Gymnasium's ``FrameStackObservation`` adds a leading
axis (``[K, H, W, C]``, ``[K, H, W]`` for grayscale). Every part of rlviz reads observations through a
layout instead of guessing from the shape; a shape that fits two layouts raises and asks for one.

The canonical network input is ``float32 [B, K*C, H, W]``: channels first, frames oldest first on the
channel axis (frame k owns channels ``k*C .. k*C+C-1``), values scaled to [0, 1] for uint8 input.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch

#: Axis orders of one observation. H, W: image; C: channels of a frame (K*C when frames are
#: stacked on the channel axis); K: a leading frame axis.
ORDERS = ("HWC", "CHW", "KHWC", "KCHW", "KHW", "HW")

#: Channel counts that read as one image when the shape alone is known (gray, RGB, RGBA).
IMAGE_CHANNELS = (1, 3, 4)
#: The channel count that is as often K=4 stacked gray frames as one RGBA frame: never guessed.
STACK_OR_RGBA = 4


class LayoutError(ValueError):
    """An observation does not fit its layout, or its shape fits more than one layout."""


def _declare_hint(shape: tuple[int, ...]) -> str:
    return (
        f"declare it, e.g. rlviz.ObservationLayout(frames=K, channels=C, order='HWC') for "
        f"[H, W, K*C], and pass layout= (shape given: {list(shape)})"
    )


@dataclass(frozen=True)
class ObservationLayout:
    """How one observation is laid out.

    Args:
        frames: K, the frames stacked in one observation (oldest first); 1 for a single frame.
        channels: C, channels per frame (1 gray, 3 RGB).
        order: axis order of one observation, one of :data:`ORDERS`. ``HWC`` / ``CHW`` with K > 1
            hold the frames on the channel axis (K*C channels, frame-major, as SB3's VecFrameStack).
        scale: the value that maps to 1.0 in the network input; ``None`` scales uint8 by 1/255 and
            leaves floats as they are.
        source: where the layout came from (``user``, ``shape``, ``env``, ``sb3``); a layout guessed
            from the shape alone cannot tell 4 gray frames from one RGBA frame.
    """

    frames: int = 1
    channels: int = 3
    order: str = "HWC"
    scale: float | None = None
    source: str = "user"

    def __post_init__(self) -> None:
        if self.order not in ORDERS:
            raise LayoutError(
                f"unknown layout order {self.order!r}; use one of {', '.join(ORDERS)}"
            )
        if int(self.frames) < 1 or int(self.channels) < 1:
            raise LayoutError(
                f"a layout needs frames >= 1 and channels >= 1; got frames={self.frames}, "
                f"channels={self.channels}"
            )
        if self.order in ("KHW", "HW") and self.channels != 1:
            raise LayoutError(
                f"order {self.order!r} has no channel axis, so channels must be 1; got "
                f"{self.channels}"
            )
        if self.order == "HW" and self.frames != 1:
            raise LayoutError(f"order 'HW' is one gray frame; got frames={self.frames}")

    # -- describing ------------------------------------------------------------------------
    @property
    def stacked(self) -> bool:
        """Whether an observation holds more than one frame."""
        return self.frames > 1

    @property
    def ndim(self) -> int:
        """Axes of one observation (without the batch axis)."""
        return len(self.order)

    def obs_shape(self, height: int, width: int) -> tuple[int, ...]:
        """The shape of one observation of this layout with an image of ``height`` x ``width``."""
        k, c = self.frames, self.channels
        return {
            "HWC": (height, width, k * c),
            "CHW": (k * c, height, width),
            "KHWC": (k, height, width, c),
            "KCHW": (k, c, height, width),
            "KHW": (k, height, width),
            "HW": (height, width),
        }[self.order]

    def image_size(self, obs_shape: tuple[int, ...]) -> tuple[int, int]:
        """(H, W) of one observation's frames; raises if ``obs_shape`` does not fit the layout."""
        obs_shape = tuple(int(s) for s in obs_shape)
        if len(obs_shape) != self.ndim:
            raise LayoutError(
                f"an observation of layout {self} has {self.ndim} axes ({self.order}); got shape "
                f"{list(obs_shape)}"
            )
        h_axis, w_axis = self.order.index("H"), self.order.index("W")
        size = obs_shape[h_axis], obs_shape[w_axis]
        if self.obs_shape(*size) != obs_shape:
            raise LayoutError(
                f"shape {list(obs_shape)} does not fit layout {self} "
                f"(expected {list(self.obs_shape(*size))}); declare the right layout"
            )
        return size

    def __str__(self) -> str:
        colour = {1: "gray", 3: "RGB", 4: "RGBA"}.get(self.channels, f"{self.channels}-channel")
        what = f"{self.frames} x {colour} frame{'s' if self.frames > 1 else ''}"
        return f"{what}, [{', '.join(self._axis_names())}]"

    def to_text(self) -> str:
        """The short text :func:`parse_layout` reads back (``KxC:ORDER``); ``scale`` and
        ``source`` are not part of it."""
        return f"{self.frames}x{self.channels}:{self.order}"

    def _axis_names(self) -> list[str]:
        on_channels = self.frames > 1 and "K" not in self.order  # frames stacked on C
        return ["K*C" if axis == "C" and on_channels else axis for axis in self.order]

    # -- converting ------------------------------------------------------------------------
    def batch(self, obs: Any, device: torch.device | str | None = None) -> torch.Tensor:
        """Observations (one or a batch; array, tensor or sequence) as a tensor [B, *obs_shape]."""
        if isinstance(obs, (list, tuple)):
            obs = np.stack([np.asarray(o) for o in obs])
        tensor = obs if isinstance(obs, torch.Tensor) else torch.as_tensor(np.asarray(obs))
        if tensor.ndim == self.ndim:
            tensor = tensor.unsqueeze(0)
        if tensor.ndim != self.ndim + 1:
            raise LayoutError(
                f"layout {self} expects observations shaped [B, {', '.join(self._axis_names())}] "
                f"(or one without B); got shape {list(tensor.shape)}"
            )
        self.image_size(tuple(tensor.shape[1:]))
        return tensor if device is None else tensor.to(device)

    def frame_stack(self, obs: torch.Tensor) -> torch.Tensor:
        """A batch [B, *obs_shape] as frames [B, K, C, H, W] (same dtype, oldest frame first)."""
        b, k, c = obs.shape[0], self.frames, self.channels
        return {
            "HWC": lambda: obs.reshape(b, *obs.shape[1:3], k, c).permute(0, 3, 4, 1, 2),
            "CHW": lambda: obs.reshape(b, k, c, *obs.shape[2:]),
            "KHWC": lambda: obs.permute(0, 1, 4, 2, 3),
            "KCHW": lambda: obs,
            "KHW": lambda: obs.unsqueeze(2),
            "HW": lambda: obs.reshape(b, 1, 1, *obs.shape[1:]),
        }[self.order]()

    def to_network(self, obs: Any, device: torch.device | str | None = None) -> torch.Tensor:
        """Raw observations -> the canonical network input float32 [B, K*C, H, W]."""
        stack = self.frame_stack(self.batch(obs, device))
        x = stack.flatten(1, 2)
        if self.scale is not None:
            return x.float().div_(float(self.scale))
        if x.dtype == torch.uint8:
            return x.float().div_(255.0)
        return x.float()

    def from_network(self, x: torch.Tensor) -> torch.Tensor:
        """A network input [B, K*C, H, W] laid out as observations again, [B, *obs_shape]
        (values as in ``x``): what a framework that reads its env's own layout is fed."""
        b, h, w = x.shape[0], x.shape[-2], x.shape[-1]
        stack = x.reshape(b, self.frames, self.channels, h, w)
        return {
            "HWC": lambda: stack.permute(0, 3, 4, 1, 2).reshape(b, h, w, -1),
            "CHW": lambda: x,
            "KHWC": lambda: stack.permute(0, 1, 3, 4, 2),
            "KCHW": lambda: stack,
            "KHW": lambda: stack[:, :, 0],
            "HW": lambda: x[:, 0],
        }[self.order]()

    def split_input(self, x: torch.Tensor) -> torch.Tensor:
        """A network input (or its attribution) [B, K*C, H, W] as [B, K, C, H, W]."""
        if x.ndim == 5:
            return x
        if x.ndim != 4 or x.shape[1] != self.frames * self.channels:
            raise LayoutError(
                f"layout {self} splits inputs shaped [B, {self.frames * self.channels}, H, W]; "
                f"got {list(x.shape)}. A custom preprocess must keep frames on the channel axis, "
                "oldest first"
            )
        return x.reshape(x.shape[0], self.frames, self.channels, *x.shape[2:])

    def display_frames(self, obs: Any) -> np.ndarray:
        """Observations as uint8 RGB images [B, K, H, W, 3] for drawing (gray repeated to RGB)."""
        stack = self.frame_stack(self.batch(obs)).permute(0, 1, 3, 4, 2)  # [B, K, H, W, C]
        images = stack.detach().cpu().numpy()
        if images.dtype != np.uint8:
            top = float(self.scale) if self.scale is not None else 1.0
            top = 255.0 if top == 1.0 and images.max(initial=0.0) > 1.5 else top
            images = np.clip(images * (255.0 / top), 0, 255).astype(np.uint8)
        if images.shape[-1] == 1:
            images = np.repeat(images, 3, axis=-1)
        elif images.shape[-1] == 4:
            images = images[..., :3]
        elif images.shape[-1] != 3:
            images = np.repeat(images[..., :1], 3, axis=-1)  # unknown channels: show the first
        return images

    def newest_frame(self, obs: Any) -> np.ndarray:
        """The newest frame of each observation as uint8 RGB [B, H, W, 3]."""
        return self.display_frames(obs)[:, -1]

    # -- inferring -------------------------------------------------------------------------
    @classmethod
    def from_shape(
        cls, obs_shape: tuple[int, ...], *, batched: bool | None = None, floating: bool = False
    ) -> ObservationLayout:
        """The layout of an observation shape, when only one layout fits.

        ``batched`` says whether the first axis is a batch axis; ``None`` treats a 5-D shape (and
        a 4-D shape whose last axis is a channel count) as batched. One frame is assumed for 3-D
        shapes with 1, 3 or 4 channels; other channel counts (``[60, 80, 6]``: two RGB frames or
        six gray ones?) raise, asking for the layout. ``floating`` observations are network
        inputs already: a 3-D float shape that is not clearly channels-last is read channels-first
        (PyTorch's convention), as one frame of all its channels.
        """
        shape = tuple(int(s) for s in obs_shape)
        if batched is None:
            batched = len(shape) == 5
        if batched:
            shape = shape[1:]
        if len(shape) == 2:
            return cls(frames=1, channels=1, order="HW", source="shape")
        if len(shape) == 3:
            first, last = shape[0], shape[-1]
            if not floating and STACK_OR_RGBA in (first, last) and min(first, last) != 1:
                # Atari's 4 stacked gray frames and one RGBA frame have the same shape; reading
                # the stack as colour mixes frames into one picture, so ask instead of guessing.
                order = "CHW" if first == STACK_OR_RGBA else "HWC"
                raise LayoutError(
                    f"observation shape {list(shape)} is 4 stacked gray frames or one RGBA frame; "
                    f"declare it: layout='4x1:{order}' (a frame stack, e.g. Atari) or "
                    f"layout='1x4:{order}' (RGBA)"
                )
            if last in IMAGE_CHANNELS and first not in IMAGE_CHANNELS:
                return cls(frames=1, channels=last, order="HWC", source="shape")
            if (first in IMAGE_CHANNELS and last not in IMAGE_CHANNELS) or floating:
                return cls(frames=1, channels=first, order="CHW", source="shape")
            raise LayoutError(
                f"observation shape {list(shape)} fits several layouts (channels first or last, "
                f"how many frames?); {_declare_hint(shape)}"
            )
        if len(shape) == 4:
            if shape[-1] in IMAGE_CHANNELS and shape[1] not in IMAGE_CHANNELS:
                return cls(frames=shape[0], channels=shape[-1], order="KHWC", source="shape")
            if shape[1] in IMAGE_CHANNELS and shape[-1] not in IMAGE_CHANNELS:
                return cls(frames=shape[0], channels=shape[1], order="KCHW", source="shape")
            raise LayoutError(
                f"observation shape {list(shape)} fits several 4-axis layouts; "
                f"{_declare_hint(shape)}"
            )
        raise LayoutError(
            f"expected observations shaped [H, W, C], [C, H, W], [H, W], [K, H, W, C] or "
            f"[K, C, H, W] (one or a batch); got shape {list(shape)}. Pass image observations "
            "or declare the layout"
        )

    @classmethod
    def from_space(cls, space) -> ObservationLayout:
        """The layout of a Gymnasium ``Box`` observation space (by shape; see :meth:`from_shape`)."""
        shape = getattr(space, "shape", None)
        if not shape:
            raise LayoutError(
                f"rlviz explains image observations; got the space {space!r}. Wrap the env so it "
                "returns images, or pass layout="
            )
        return cls.from_shape(shape, batched=False)

    @classmethod
    def from_env(cls, env) -> ObservationLayout:
        """The layout an env (with its wrappers) returns.

        An env (or wrapper) that declares ``observation_layout`` wins; Gymnasium's
        ``FrameStackObservation`` is read through the wrapper chain; otherwise the space's shape.
        """
        declared = _declared_layout(env)
        if declared is not None:
            return declared
        space = env.observation_space
        stack = _find_wrapper(env, "FrameStackObservation")
        if stack is not None:
            k = int(getattr(stack, "stack_size", space.shape[0]))
            inner = cls.from_shape(space.shape[1:], batched=False)
            order = {"HWC": "KHWC", "CHW": "KCHW", "HW": "KHW"}[inner.order]
            return cls(frames=k, channels=inner.channels, order=order, source="env")
        return replace(cls.from_space(space), source="env")

    @classmethod
    def from_vec_env(cls, venv) -> ObservationLayout:
        """The layout an SB3 ``VecEnv`` chain returns (``VecFrameStack``, ``VecTransposeImage``)."""
        transposed, stack, inner = False, None, venv
        while inner is not None:
            kind = type(inner).__name__
            if kind == "VecTransposeImage":
                transposed = True
            elif kind == "VecFrameStack" and stack is None:
                stack = inner
            inner = getattr(inner, "venv", None)
        if stack is None:
            return replace(cls.from_space(venv.observation_space), source="sb3")
        k = int(stack.stacked_obs.n_stack)
        channels_first = bool(stack.stacked_obs.channels_first)
        frame_shape = stack.venv.observation_space.shape
        c = frame_shape[0] if channels_first else frame_shape[-1]
        order = "CHW" if (channels_first or transposed) else "HWC"
        return cls(frames=k, channels=int(c), order=order, source="sb3")


def _wrappers(env):
    """A Gymnasium env and the envs it wraps, outermost first."""
    while env is not None:
        yield env
        env = getattr(env, "env", None)


def _find_wrapper(env, class_name: str):
    """The first wrapper named ``class_name`` in a Gymnasium wrapper chain, or None."""
    return next((e for e in _wrappers(env) if type(e).__name__ == class_name), None)


def _declared_layout(env) -> ObservationLayout | None:
    for inner in _wrappers(env):
        layout = vars(inner).get("observation_layout") if hasattr(inner, "__dict__") else None
        layout = layout or getattr(type(inner), "observation_layout", None)
        if isinstance(layout, ObservationLayout):
            return layout
    return None


def resolve_layout(layout: ObservationLayout | str | None, obs_shape: tuple[int, ...] | None):
    """``layout`` as given, or the one ``obs_shape`` (one observation) implies."""
    if isinstance(layout, ObservationLayout):
        return layout
    if isinstance(layout, str):
        return parse_layout(layout)
    if obs_shape is None:
        raise LayoutError("no layout given and no observation to infer it from; pass layout=")
    return ObservationLayout.from_shape(obs_shape, batched=False)


def parse_layout(text: str) -> ObservationLayout:
    """A layout from a short string: ``ORDER``, ``K:ORDER`` or ``KxC:ORDER``.

    E.g. ``HWC`` (one RGB frame), ``4:KHW`` (4 gray frames), ``2x3:HWC`` (2 RGB frames on the
    channel axis); C defaults to 1 for orders without a channel axis and 3 otherwise.
    """
    forms = (
        f"write ORDER, K:ORDER or KxC:ORDER, e.g. 'HWC', '4:KHW', '2x3:HWC' "
        f"(orders: {', '.join(ORDERS)})"
    )
    match = _LAYOUT_TEXT.match(text.strip())
    if match is None:
        raise LayoutError(f"cannot read layout {text!r}; {forms}")
    frames, channels, order = match.groups()
    order = order.upper()
    default_channels = 1 if order in ("KHW", "HW") else 3
    try:
        return ObservationLayout(
            frames=int(frames or 1),
            channels=int(channels or default_channels),
            order=order,
            source="user",
        )
    except LayoutError as err:
        raise LayoutError(f"cannot read layout {text!r}: {err}; {forms}") from None


_LAYOUT_TEXT = re.compile(r"^(?:(\d+)(?:x(\d+))?:)?([A-Za-z]+)$")
