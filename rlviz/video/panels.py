"""The standard panels: the observation and its maps, the policy's output, the value trace.

The panels about the agent's surroundings (state map, top-down view, captions) are in
:mod:`rlviz.video.context`; :func:`default_panels` puts them all together.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageDraw

from rlviz.maps import overlay
from rlviz.video.context import CaptionPanel, EmbeddingPanel, TopDownPanel
from rlviz.video.draw import (
    ACCENT,
    ATTRIBUTION_LUT,
    BAD,
    BAR,
    GOOD,
    GRID,
    MUTED,
    OUTLINE,
    SIGNED_LUT,
    TEXT,
    colorbar,
    darken,
    display_frame,
    format_number,
    outline,
    paste,
    put_text,
    text_width,
    upscale,
)
from rlviz.video.events import episode_events
from rlviz.video.panel import (
    HEADER,
    METHOD_TITLES,
    TILE,
    Panel,
    dimmed,
    method_title,
    reveal,
)
from rlviz.video.time_panels import MemoryPanel, StackPanel, stack_note

if TYPE_CHECKING:
    from rlviz.video.episode import EpisodeExplanation

__all__ = [
    "HEADER",
    "METHOD_TITLES",
    "TILE",
    "ActionPanel",
    "CaptionPanel",
    "EmbeddingPanel",
    "MapPanel",
    "MemoryPanel",
    "ObservationPanel",
    "Panel",
    "PerActionPanel",
    "StackPanel",
    "TopDownPanel",
    "ValuePanel",
    "colorbar",
    "default_panels",
    "display_frame",
    "episode_events",
    "method_title",
]


class MapPanel(Panel):
    """The observation upscaled (nearest) with one attribution map over it, and a colour bar.

    Args:
        method: key of ``episode.maps`` (``"gradient"``, ``"gradcam"``, ...).
        cmap: colour map (matplotlib name or uint8 [256, 3] table) for the overlay and the bar;
            the default's hues (cyan to white) occur nowhere in the BoxReach room.
        signed_cmap: the diverging colour map used when the method's maps are signed.
        alpha: opacity of the colour layer where the map is at its maximum (opacity follows the
            map, so unimportant pixels show the frame as it is).
        dim: brightness of the frame under the map (1: as it is), so the map reads on any colour.
        outline: draw a white border round the map's top mass (>= half the scale); None: none.
    """

    def __init__(
        self,
        method: str = "gradient",
        *,
        cmap: str | np.ndarray = ATTRIBUTION_LUT,
        signed_cmap: str | np.ndarray = SIGNED_LUT,
        alpha: float = 0.85,
        dim: float = 0.6,
        outline: tuple[int, int, int] | None = OUTLINE,
        size: tuple[int, int] = TILE,
        title: str | None = None,
    ) -> None:
        super().__init__(size, method_title(method) if title is None else title)
        self.base_title = self.title
        self.method = method
        self.cmap = cmap
        self.signed_cmap = signed_cmap
        self.alpha = float(alpha)
        self.dim = float(dim)
        self.outline = outline
        self._scale = 1
        self._origin = (0, 0)

    def available(self, episode: EpisodeExplanation) -> bool:
        return self.method in episode.maps

    def _cmap(self, signed: bool) -> str | np.ndarray:
        return self.signed_cmap if signed else self.cmap

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
        signed = episode.map_signed.get(self.method, False)
        paste(tile, colorbar(bar_h, 10, self._cmap(signed), signed), y0, bar_x)
        if episode.normalize == "frame":  # no one number: each frame has its own top
            top, bottom = "max", "-max" if signed else "0"
        else:
            low, high = episode.map_ranges.get(self.method, (0.0, 1.0))
            top, bottom = format_number(high), format_number(low)
        put_text(tile, top, (bar_x + 13, y0), size=10, color=MUTED, anchor="lt")
        put_text(tile, bottom, (bar_x + 13, y0 + bar_h), size=10, color=MUTED, anchor="lb")
        scale_note = (
            "scale: whole episode" if episode.normalize == "episode" else "scale: each frame"
        )
        if episode.normalize == "running":
            scale_note = "scale: episode so far"
        target = episode.target_name or ""
        note = f"{scale_note}   target: {target}" if target else scale_note
        put_text(tile, note, (6, self.size[0] - 4), size=10, color=MUTED, anchor="lb")
        self._base = tile

    def render(self, t: int, episode: EpisodeExplanation) -> np.ndarray:
        tile = self._require_prepared().copy()
        frame = episode.frame(t)
        heat = episode.maps[self.method][t]
        signed = episode.map_signed.get(self.method, False)
        shown = map_over_frame(
            frame, heat, self._cmap(signed), self.alpha, signed, self.dim, self.outline, self._scale
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
    from rlviz.maps import upsample

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


class ActionPanel(Panel):
    """Bars of pi(a | s_t) per action; the action taken is highlighted, the entropy printed."""

    def __init__(self, size: tuple[int, int] = TILE, title: str = "Policy  \u03c0(a | s)") -> None:
        super().__init__(size, title)
        self._rows: list[int] = []
        self._bar = (0, 0, 0)

    def prepare(self, episode: EpisodeExplanation) -> None:
        tile = self._header_tile()
        names = episode.action_names
        n = len(names)
        label_w = max(text_width(name, 12) for name in names) + 12
        top, bottom = HEADER + 10, self.size[0] - 26
        row_h = max(12, (bottom - top) // max(n, 1))
        bar_h = int(min(26, row_h * 0.7))
        x0, x1 = 8 + label_w, self.size[1] - 48
        self._rows = [top + i * row_h + (row_h - bar_h) // 2 for i in range(n)]
        self._bar = (x0, x1, bar_h)
        for name, y in zip(names, self._rows, strict=True):
            put_text(tile, name, (x0 - 8, y + bar_h // 2), size=12, anchor="rm")
            tile[y : y + bar_h, x0:x1] = GRID
        self._base = tile

    def render(self, t: int, episode: EpisodeExplanation) -> np.ndarray:
        if episode.rollout.continuous:
            return self._render_box(t, episode)
        tile = self._require_prepared().copy()
        probs = episode.rollout.probs[t]
        taken = int(episode.rollout.actions[t]) if t < len(episode.rollout.actions) else -1
        x0, x1, bar_h = self._bar
        for k, y in enumerate(self._rows):
            p = float(probs[k])
            w = int(round(p * (x1 - x0)))
            color = ACCENT if k == taken else BAR
            tile[y : y + bar_h, x0 : x0 + w] = color
            put_text(
                tile,
                f"{p:.2f}",
                (x1 + 6, y + bar_h // 2),
                size=12,
                color=ACCENT if k == taken else TEXT,
                bold=k == taken,
                anchor="lm",
            )
        p = np.clip(probs.astype(np.float64), 1e-12, 1.0)
        entropy = float(-(p * np.log(p)).sum())
        label = episode.action_names[taken] if taken >= 0 else "?"
        put_text(
            tile,
            f"{episode.meta.get('action_label', 'taken')}: {label}",
            (8, self.size[0] - 6),
            size=12,
            color=ACCENT,
            anchor="lb",
        )
        put_text(
            tile,
            f"entropy {entropy:.2f} nats",
            (self.size[1] - 8, self.size[0] - 6),
            size=11,
            color=MUTED,
            anchor="rb",
        )
        return tile

    def _render_box(self, t: int, episode: EpisodeExplanation) -> np.ndarray:
        """A Box policy: per dimension, a bar from 0 to the mean, a whisker of mean +/- std and a
        tick at the action taken, on one symmetric scale for the whole episode."""
        tile = self._require_prepared().copy()
        rollout = episode.rollout
        mean = rollout.action_mean[t]
        std = rollout.action_std[t] if rollout.action_std is not None else np.zeros_like(mean)
        taken = rollout.actions[t] if t < len(rollout.actions) else mean
        spread = rollout.action_std if rollout.action_std is not None else 0.0
        top = float(np.max(np.abs(rollout.action_mean) + spread, initial=1.0))
        x0, x1, bar_h = self._bar
        mid, half = (x0 + x1) // 2, (x1 - x0) / 2

        def at(v: float) -> int:
            return int(np.clip(round(mid + v / top * half), x0, x1 - 1))

        for d, y in enumerate(self._rows):
            m, s = float(mean[d]), float(std[d])
            lo, hi = sorted((mid, at(m)))
            tile[y : y + bar_h, lo : hi + 1] = BAR
            tile[y + bar_h // 2, at(m - s) : at(m + s) + 1] = TEXT  # the +/- std whisker
            tile[y : y + bar_h, mid] = MUTED
            a = at(float(np.asarray(taken).reshape(-1)[d]))
            tile[y : y + bar_h, max(a - 1, x0) : a + 2] = ACCENT
            put_text(tile, f"{m:+.2f}", (x1 + 6, y + bar_h // 2), size=12, anchor="lm")
        put_text(
            tile, "mean ± std, | taken", (8, self.size[0] - 6), size=12, color=ACCENT, anchor="lb"
        )
        put_text(
            tile,
            f"scale ±{top:.2f}",
            (self.size[1] - 8, self.size[0] - 6),
            size=11,
            color=MUTED,
            anchor="rb",
        )
        return tile


class ValuePanel(Panel):
    """V(s_t) and rewards over the episode with a moving cursor; the future is dimmed."""

    def __init__(self, size: tuple[int, int] = TILE, title: str = "Value and reward") -> None:
        super().__init__(size, title)
        self._dim: np.ndarray | None = None
        self._plot = (0, 0, 0, 0)
        self._horizon = 1

    def prepare(self, episode: EpisodeExplanation) -> None:
        rollout = episode.rollout
        h, w = self.size
        # Room below for the step axis's labels and the value line; a small tile keeps the
        # plot (ticks only, no labels) rather than a negative height.
        labelled = h - 40 - (HEADER + 8) >= 24
        x0, x1, y0 = 40, w - 10, HEADER + 8
        y1 = h - 40 if labelled else max(y0 + 1, h - 30)
        self._plot = (x0, x1, y0, y1)
        horizon = max(int(episode.horizon or len(episode)), 2)
        self._horizon = horizon
        values = rollout.values
        rewards = rollout.rewards
        series = [rewards] if values is None else [values, rewards]
        lo = min(float(np.min(s)) for s in series if len(s)) if len(rewards) else 0.0
        hi = max(float(np.max(s)) for s in series if len(s)) if len(rewards) else 1.0
        lo, hi = min(lo, 0.0), max(hi, 1e-6)
        pad = 0.08 * (hi - lo)
        lo, hi = lo - pad, hi + pad

        def px(t: np.ndarray, v: np.ndarray) -> list[tuple[float, float]]:
            xs = x0 + (x1 - x0) * t / (horizon - 1)
            ys = y1 - (y1 - y0) * (v - lo) / (hi - lo)
            return list(zip(xs.tolist(), ys.tolist(), strict=True))

        img = Image.fromarray(self._header_tile())
        draw = ImageDraw.Draw(img)
        draw.rectangle([x0, y0, x1, y1], outline=GRID)
        zero_y = px(np.array([0.0]), np.array([0.0]))[0][1]
        draw.line([(x0, zero_y), (x1, zero_y)], fill=GRID)
        steps = np.arange(len(rollout), dtype=np.float64)
        if values is not None and len(values) > 1:
            draw.line(px(steps, values.astype(np.float64)), fill=(110, 180, 255), width=2)
        for t in np.flatnonzero(rewards != 0):
            (x, y), (_, yz) = px(np.array([t, t]), np.array([rewards[t], 0.0]))
            color = GOOD if rewards[t] > 0 else BAD
            draw.line([(x, yz), (x, y)], fill=color, width=2)
            draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=color)
        for step in (0, (horizon - 1) // 2, horizon - 1):  # the time axis: steps
            x = px(np.array([float(step)]), np.array([0.0]))[0][0]
            draw.line([(x, y1), (x, y1 + 3)], fill=MUTED)
        bright = np.asarray(img).copy()
        put_text(bright, format_number(hi - pad), (x0 - 4, y0), size=10, color=MUTED, anchor="rt")
        put_text(bright, format_number(lo + pad), (x0 - 4, y1), size=10, color=MUTED, anchor="rb")
        if labelled:
            put_text(bright, "0", (x0, y1 + 4), size=10, color=MUTED, anchor="lt")
            mid_x = px(np.array([float((horizon - 1) // 2)]), np.array([0.0]))[0][0]
            put_text(
                bright,
                f"step {(horizon - 1) // 2}",
                (mid_x, y1 + 4),
                size=10,
                color=MUTED,
                anchor="mt",
            )
            put_text(bright, str(horizon - 1), (x1, y1 + 4), size=10, color=MUTED, anchor="rt")
        legend = put_text(bright, "reward", (w - 8, HEADER // 2), size=11, color=GOOD, anchor="rm")
        if values is not None:
            put_text(
                bright,
                "V(s)",
                (legend[0] - 10, HEADER // 2),
                size=11,
                color=(110, 180, 255),
                anchor="rm",
            )
        self._base = bright
        self._dim = dimmed(bright, self._plot)

    def render(self, t: int, episode: EpisodeExplanation) -> np.ndarray:
        tile = reveal(self._require_prepared(), self._dim, self._plot, t, self._horizon)
        x0 = self._plot[0]
        rollout = episode.rollout
        ret = float(rollout.rewards[: t + 1].sum())
        value = "" if rollout.values is None else f"V={rollout.values[t]:+.2f}   "
        put_text(
            tile,
            f"{value}r={rollout.rewards[t]:+.2f}   return={ret:.2f}",
            (x0, self.size[0] - 6),
            size=12,
            anchor="lb",
        )
        return tile


class PerActionPanel(Panel):
    """Side by side, one map per action: what in the frame raises log pi(k | s) for each action k.

    Reads ``episode.action_maps[method]`` [T, A, H, W] (the pipeline computes it when this panel
    is asked for), all actions on one colour scale. A full-width row.

    Args:
        method: the attribution method of the maps.
        height: target height of each map in px (integer nearest upscale of the observation).
    """

    wide = True

    def __init__(
        self,
        method: str = "gradient",
        *,
        cmap: str | np.ndarray = ATTRIBUTION_LUT,
        signed_cmap: str | np.ndarray = SIGNED_LUT,
        alpha: float = 0.85,
        dim: float = 0.6,
        height: int = 120,
    ) -> None:
        super().__init__(
            (HEADER + 18 + height + 6, 640),
            f"Per action: {method_title(method)} of each action's logit",
        )
        self.method = method
        self.cmap = cmap
        self.signed_cmap = signed_cmap
        self.alpha = float(alpha)
        self.dim = float(dim)
        self.height = int(height)
        self._scale = 1
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
        signed = episode.map_signed.get(self.method, False)
        bar_x, y0 = 8 + len(names) * cell_w, HEADER + 18
        paste(tile, colorbar(img_h, 10, self._cmap(signed), signed), y0, bar_x)
        if episode.normalize == "frame":
            top, bottom = "max", "-max" if signed else "0"
        else:
            low, high = episode.map_ranges.get("action:", (0.0, 1.0))
            top, bottom = format_number(high), format_number(low)
        put_text(tile, top, (bar_x + 13, y0), size=10, color=MUTED, anchor="lt")
        put_text(tile, bottom, (bar_x + 13, y0 + img_h), size=10, color=MUTED, anchor="lb")
        self._base = tile

    def _cmap(self, signed: bool) -> str | np.ndarray:
        return self.signed_cmap if signed else self.cmap

    def render(self, t: int, episode: EpisodeExplanation) -> np.ndarray:
        tile = self._require_prepared().copy()
        maps = episode.action_maps[self.method][t]  # [A, H, W]
        frame = episode.frame(t)
        signed = episode.map_signed.get(self.method, False)
        shown = [
            map_over_frame(frame, m, self._cmap(signed), self.alpha, signed, self.dim) for m in maps
        ]
        taken = int(episode.rollout.actions[t])
        probs = episode.rollout.probs[t]
        for k, x in enumerate(self._xs):
            color = ACCENT if k == taken else TEXT
            put_text(
                tile,
                f"{episode.action_names[k]}  \u03c0={probs[k]:.2f}",
                (x, HEADER + 2),
                size=11,
                color=color,
                bold=k == taken,
            )
            paste(tile, upscale(shown[k], self._scale), HEADER + 18, x)
        return tile


def default_panels(methods: Sequence[str], *, per_action: str | None = None) -> list[Panel]:
    """The standard panel set: one map panel per method, policy bars, value trace, memory
    reliance, state map, top-down view, the frame stack, captions (and per-action maps when
    ``per_action`` names a method).

    Panels whose data an episode lacks are dropped by the pipeline (see ``Panel.available``):
    the memory and stack panels appear only for policies with memory.
    """
    panels: list[Panel] = [MapPanel(m) for m in methods] or [ObservationPanel()]
    panels += [ActionPanel(), ValuePanel(), MemoryPanel(), EmbeddingPanel(), TopDownPanel()]
    panels.append(StackPanel())
    if per_action:
        panels.append(PerActionPanel(per_action))
    panels.append(CaptionPanel())
    return panels
