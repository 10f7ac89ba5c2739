"""The observation under attribution maps: one method's map (:class:`MapPanel`), one map per
action side by side (:class:`PerActionPanel`), or bare (:class:`ObservationPanel`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from rlviz.maps import overlay, upsample
from rlviz.methods import method_title
from rlviz.video.draw import (
    ATTRIBUTION_LUT,
    MUTED,
    OUTLINE,
    SIGNED_LUT,
    colorbar,
    darken,
    format_number,
    outline,
    paste,
    put_text,
    text_width,
    upscale,
)
from rlviz.video.panels.base import HEADER, TILE, Panel, draw_row

if TYPE_CHECKING:
    from rlviz.video.episode import EpisodeExplanation


#: What a map panel's footer says of the colour scale, per ``episode.normalize``.
_SCALE_NOTES = {"episode": "scale: whole episode", "running": "scale: episode so far"}


def stack_note(episode: EpisodeExplanation, method: str) -> str:
    """What a map panel of a stacked episode shows: the newest frame's own map, or (occlusion,
    perturbation) the map of a patch covering every frame; '' for single frames."""
    if not episode.stacked:
        return ""
    return " (newest frame)" if method in episode.newest_maps else " (all frames)"


def scale_bar(
    tile: np.ndarray,
    episode: EpisodeExplanation,
    range_key: str,
    cmap: str | np.ndarray,
    signed: bool,
    corner: tuple[int, int],
    height: int,
) -> None:
    """Draw a colour bar ``height`` px tall with its top-left at ``corner`` (y, x), its ends
    labelled with the episode's scale for ``range_key`` (or "max" when each frame has its own)."""
    y0, bar_x = corner
    paste(tile, colorbar(height, 10, cmap, signed), y0, bar_x)
    if episode.normalize == "frame":  # no one number: each frame has its own top
        top, bottom = "max", "-max" if signed else "0"
    else:
        low, high = episode.map_ranges.get(range_key, (0.0, 1.0))
        top, bottom = format_number(high), format_number(low)
    put_text(tile, top, (bar_x + 13, y0), size=10, color=MUTED, anchor="lt")
    put_text(tile, bottom, (bar_x + 13, y0 + height), size=10, color=MUTED, anchor="lb")


class OverlayPanel(Panel):
    """A panel of one method's maps over the frame.

    Args:
        method: the attribution method of the maps.
        cmap: colour map (matplotlib name or uint8 [256, 3] table) for the overlay and the bar;
            the default's hues (cyan to white) occur nowhere in the BoxReach room.
        signed_cmap: the diverging colour map used when the method's maps are signed.
        alpha: opacity of the colour layer where the map is at its maximum (opacity follows the
            map, so unimportant pixels show the frame as it is).
        dim: brightness of the frame under the map (1: as it is), so the map reads on any colour.
    """

    def __init__(
        self,
        size: tuple[int, int],
        title: str,
        method: str,
        *,
        cmap: str | np.ndarray = ATTRIBUTION_LUT,
        signed_cmap: str | np.ndarray = SIGNED_LUT,
        alpha: float = 0.85,
        dim: float = 0.6,
    ) -> None:
        super().__init__(size, title)
        self.method = method
        self.cmap = cmap
        self.signed_cmap = signed_cmap
        self.alpha = float(alpha)
        self.dim = float(dim)
        self._scale = 1

    def _colours(self, episode: EpisodeExplanation) -> tuple[bool, str | np.ndarray]:
        """Whether the method's maps are signed, and the colour map they are drawn in."""
        signed = episode.map_signed.get(self.method, False)
        return signed, self.signed_cmap if signed else self.cmap


class MapPanel(OverlayPanel):
    """The observation upscaled (nearest) with one attribution map over it, and a colour bar.

    Args:
        method: key of ``episode.maps`` (``"gradient"``, ``"gradcam"``, ...).
        outline: draw a white border round the map's top mass (>= half the scale); None: none.
        **style: ``cmap``, ``signed_cmap``, ``alpha``, ``dim`` (see :class:`OverlayPanel`).
    """

    def __init__(
        self,
        method: str = "gradient",
        *,
        outline: tuple[int, int, int] | None = OUTLINE,
        size: tuple[int, int] = TILE,
        title: str | None = None,
        **style,
    ) -> None:
        super().__init__(size, method_title(method) if title is None else title, method, **style)
        self.base_title = self.title
        self.outline = outline
        self._origin = (0, 0)

    def available(self, episode: EpisodeExplanation) -> bool:
        return self.method in episode.maps

    def prepare(self, episode: EpisodeExplanation) -> None:
        if self.method not in episode.maps:
            raise KeyError(f"episode has no {self.method!r} map; it has {sorted(episode.maps)}")
        self.title = self.base_title + stack_note(episode, self.method)
        tile = self._header_tile()
        obs_h, obs_w = episode.obs_shape[:2]
        bar_w = 44
        room_h, room_w = self.size[0] - HEADER - 18, self.size[1] - bar_w - 8
        self._scale = max(1, min(room_h // obs_h, room_w // obs_w))
        img_h, img_w = obs_h * self._scale, obs_w * self._scale
        y0 = HEADER + max(0, (room_h - img_h) // 2)
        x0 = max(4, (self.size[1] - bar_w - img_w) // 2)
        self._origin = (y0, x0)
        bar_h = min(img_h, self.size[0] - HEADER - 8)
        bar_x = min(x0 + img_w + 8, self.size[1] - bar_w + 4)
        signed, cmap = self._colours(episode)
        scale_bar(tile, episode, self.method, cmap, signed, (y0, bar_x), bar_h)
        scale_note = _SCALE_NOTES.get(episode.normalize, "scale: each frame")
        target = episode.target_name or ""
        note = f"{scale_note}   target: {target}" if target else scale_note
        put_text(tile, note, (6, self.size[0] - 4), size=10, color=MUTED, anchor="lb")
        self._base = tile

    def render(self, t: int, episode: EpisodeExplanation) -> np.ndarray:
        tile = self._require_prepared().copy()
        frame = episode.frame(t)
        heat = episode.maps[self.method][t]
        signed, cmap = self._colours(episode)
        shown = map_over_frame(
            frame, heat, cmap, self.alpha, signed, self.dim, self.outline, self._scale
        )
        paste(tile, shown, *self._origin)
        return tile


def map_over_frame(
    frame: np.ndarray,
    heat: np.ndarray,
    cmap: str | np.ndarray,
    alpha: float,
    signed: bool,
    dim: float = 1.0,
    border: tuple[int, int, int] | None = None,
    scale: int = 1,
) -> np.ndarray:
    """One map [h, w] in [0, 1] ([-1, 1] signed) over a frame [H, W, 3] dimmed to ``dim``,
    upscaled ``scale`` times (nearest), with a ``border`` round the region at or above half
    the scale (its positive side when signed): uint8 [H * scale, W * scale, 3]."""
    frame = frame[..., :3].astype(np.uint8, copy=False)
    base = darken(frame, dim) if dim < 1 else frame
    shown = overlay(base[None], heat[None], cmap=cmap, alpha=alpha, signed=signed, scale_alpha=True)
    image = upscale(shown[0], scale)
    if border is not None:
        full = np.asarray(upsample(np.asarray(heat, np.float32)[None], frame.shape[:2]))[0]
        outline(image, upscale((full >= 0.5)[..., None], scale)[..., 0], border)
    return image


class ObservationPanel(Panel):
    """The raw observation upscaled (nearest), no overlay."""

    def __init__(self, size: tuple[int, int] = TILE, title: str = "Observation") -> None:
        super().__init__(size, title)
        self._scale = 1
        self._origin = (0, 0)

    def prepare(self, episode: EpisodeExplanation) -> None:
        super().prepare(episode)
        obs_h, obs_w = episode.obs_shape[:2]
        room_h, room_w = self.size[0] - HEADER - 4, self.size[1] - 8
        self._scale = max(1, min(room_h // obs_h, room_w // obs_w))
        self._origin = (
            HEADER + max(0, (room_h - obs_h * self._scale) // 2),
            max(0, (self.size[1] - obs_w * self._scale) // 2),
        )

    def render(self, t: int, episode: EpisodeExplanation) -> np.ndarray:
        tile = self._require_prepared().copy()
        paste(tile, upscale(episode.frame(t), self._scale), *self._origin)
        return tile


class PerActionPanel(OverlayPanel):
    """Side by side, one map per action: what in the frame raises log pi(k | s) for each action k.

    Reads ``episode.action_maps[method]`` [T, A, H, W] (the pipeline computes it when this panel
    is asked for), all actions on one colour scale. A full-width row.

    Args:
        method: the attribution method of the maps.
        height: target height of each map in px (integer nearest upscale of the observation).
        **style: ``cmap``, ``signed_cmap``, ``alpha``, ``dim`` (see :class:`OverlayPanel`).
    """

    wide = True

    def __init__(self, method: str = "gradient", *, height: int = 120, **style) -> None:
        title = f"Per action: {method_title(method)} of each action's logit"
        super().__init__((HEADER + 18 + height + 6, 640), title, method, **style)
        self.height = int(height)
        self._xs: list[int] = []

    def available(self, episode: EpisodeExplanation) -> bool:
        return self.method in episode.action_maps

    def prepare(self, episode: EpisodeExplanation) -> None:
        obs_h, obs_w = episode.obs_shape[:2]
        names = episode.action_names
        self._scale = max(1, self.height // obs_h)
        label_w = max(text_width(f"{n}  \u03c0=0.00", 11, True) for n in names)
        cell_w = max(obs_w * self._scale, label_w) + 16
        bar_w = 56  # the row's one colour scale: bar and its two ends
        width = len(names) * cell_w + 16 + bar_w
        img_h = obs_h * self._scale
        self.size = (HEADER + 18 + img_h + 8, width + width % 2)
        self._xs = [8 + k * cell_w for k in range(len(names))]
        tile = self._header_tile()
        signed, cmap = self._colours(episode)
        corner = (HEADER + 18, 8 + len(names) * cell_w)
        scale_bar(tile, episode, "action:", cmap, signed, corner, img_h)
        self._base = tile

    def render(self, t: int, episode: EpisodeExplanation) -> np.ndarray:
        tile = self._require_prepared().copy()
        maps = episode.action_maps[self.method][t]  # [A, H, W]
        frame = episode.frame(t)
        signed, cmap = self._colours(episode)
        shown = [map_over_frame(frame, m, cmap, self.alpha, signed, self.dim) for m in maps]
        probs = episode.rollout.probs[t]
        labels = [
            f"{name}  \u03c0={p:.2f}" for name, p in zip(episode.action_names, probs, strict=True)
        ]
        taken = int(episode.rollout.actions[t])
        return draw_row(tile, labels, shown, self._xs, self._scale, taken)
