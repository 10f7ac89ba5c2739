"""Panels: small tiles that each show one thing about step t of an explained episode.

A panel has a fixed ``size`` = (h, w); ``prepare(episode)`` does the once-per-episode work (static
backgrounds, axes, colour bars, whole-episode curves) and ``render(t, episode)`` returns the tile
for step t as uint8 [h, w, 3], copying the prepared background and drawing only what changes.
``available(episode)`` says whether the episode has what the panel needs (ground truth, a map, a
top-down view), so a pipeline can leave a panel out for envs that cannot feed it.

The ``episode`` is a :class:`rlviz.render.EpisodeExplanation` (a rollout plus maps, map positions
and top-down frames); panels only read it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageDraw

from rlviz.compose import (
    ACCENT,
    MUTED,
    PANEL_BG,
    TEXT,
    blank,
    fit_nearest,
    paste,
    put_text,
    text_width,
    upscale,
)

if TYPE_CHECKING:
    from rlviz.render import EpisodeExplanation

HEADER = 22
TILE = (240, 320)
GOOD = (80, 200, 120)
BAD = (235, 90, 80)
BAR = (90, 110, 150)
GRID = (60, 60, 70)

METHOD_TITLES = {
    "gradient": "Saliency (gradient)",
    "saliency": "Saliency (gradient)",
    "grad_x_input": "Gradient x input",
    "smoothgrad": "SmoothGrad",
    "integrated_gradients": "Integrated gradients",
    "guided_backprop": "Guided backprop",
    "occlusion": "Occlusion",
    "perturbation": "Perturbation saliency",
    "cam": "CAM",
    "gradcam": "Grad-CAM",
    "gradcam_pp": "Grad-CAM++",
}


def display_frame(obs: np.ndarray) -> np.ndarray:
    """An observation as an RGB image: uint8 [H, W, 3] (grey/stacked frames: the last channel)."""
    obs = np.asarray(obs)
    if obs.ndim == 2:
        obs = obs[:, :, None]
    if obs.ndim != 3:
        raise ValueError(f"expected an image observation [H, W, C], got shape {obs.shape}")
    if obs.shape[0] in (1, 3, 4) and obs.shape[2] not in (1, 3, 4):  # channel-first
        obs = np.moveaxis(obs, 0, -1)
    if obs.dtype != np.uint8:
        scale = 255.0 if obs.max(initial=0) <= 1.0 else 1.0
        obs = np.clip(obs * scale, 0, 255).astype(np.uint8)
    if obs.shape[2] == 3:
        return obs
    if obs.shape[2] == 4:  # RGBA: drop alpha
        return obs[:, :, :3]
    return np.repeat(obs[:, :, -1:], 3, axis=2)  # grey or a frame stack: the newest channel


def method_title(name: str) -> str:
    """Human title of an attribution method name (unknown names pass through)."""
    return METHOD_TITLES.get(name, name)


class Panel:
    """Base class: a fixed-size tile with a title in a header strip.

    Args:
        size: (h, w) of the tile in pixels.
        title: text of the header strip ('' for no header).
    """

    wide = False  #: True: the panel gets a full-width row below the grid (see Composer)

    def __init__(self, size: tuple[int, int] = TILE, title: str = "") -> None:
        if len(size) != 2 or min(size) < 8:
            raise ValueError(f"panel size must be (h, w) with both >= 8 px, got {size!r}")
        self.size = (int(size[0]), int(size[1]))
        self.title = title
        self._base: np.ndarray | None = None

    def available(self, episode: EpisodeExplanation) -> bool:
        """Whether ``episode`` has the data this panel shows."""
        return True

    def prepare(self, episode: EpisodeExplanation) -> None:
        """Once per episode, before any :meth:`render`: draw the static tile."""
        self._base = self._header_tile()

    def render(self, t: int, episode: EpisodeExplanation) -> np.ndarray:
        """The tile for step ``t``: uint8 [h, w, 3]."""
        raise NotImplementedError

    def _header_tile(self) -> np.ndarray:
        tile = blank(*self.size, PANEL_BG)
        if self.title:
            put_text(tile, self.title, (6, HEADER // 2), size=13, bold=True, anchor="lm")
        return tile

    def _require_prepared(self) -> np.ndarray:
        if self._base is None:
            raise RuntimeError(
                f"{type(self).__name__}.prepare(episode) must be called before render"
            )
        return self._base


def colorbar(height: int, width: int, cmap: str, signed: bool = False) -> np.ndarray:
    """A vertical colour bar, high values on top: uint8 [height, width, 3]."""
    from rlviz.maps import colorize

    low = -1.0 if signed else 0.0
    ramp = np.linspace(1.0, low, height, dtype=np.float32)[:, None].repeat(width, axis=1)
    return colorize(ramp, cmap, signed=signed)


def _fmt(value: float) -> str:
    if value == 0 or not np.isfinite(value):
        return f"{value:.0f}"
    if 1e-2 <= abs(value) < 1e3:
        return f"{value:.3g}"
    return f"{value:.1e}"


class MapPanel(Panel):
    """The observation upscaled (nearest) with one attribution map over it, and a colour bar.

    Args:
        method: key of ``episode.maps`` (``"gradient"``, ``"gradcam"``, ...).
        cmap: matplotlib colour map name for the overlay and the bar.
        signed_cmap: the diverging colour map used when the method's maps are signed.
        alpha: opacity of the colour layer where the map is at its maximum (opacity follows the
            map, so unimportant pixels show the frame as it is).
    """

    def __init__(
        self,
        method: str = "gradient",
        *,
        cmap: str = "inferno",
        signed_cmap: str = "RdBu_r",
        alpha: float = 0.85,
        size: tuple[int, int] = TILE,
        title: str | None = None,
    ) -> None:
        super().__init__(size, method_title(method) if title is None else title)
        self.method = method
        self.cmap = cmap
        self.signed_cmap = signed_cmap
        self.alpha = float(alpha)
        self._scale = 1
        self._origin = (0, 0)

    def available(self, episode: EpisodeExplanation) -> bool:
        return self.method in episode.maps

    def _cmap(self, signed: bool) -> str:
        return self.signed_cmap if signed else self.cmap

    def prepare(self, episode: EpisodeExplanation) -> None:
        if self.method not in episode.maps:
            raise KeyError(f"episode has no {self.method!r} map; it has {sorted(episode.maps)}")
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
            top, bottom = _fmt(high), _fmt(low)
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
        from rlviz.maps import overlay

        tile = self._require_prepared().copy()
        frame = display_frame(episode.rollout.obs[t])
        heat = episode.maps[self.method][t]
        signed = episode.map_signed.get(self.method, False)
        shown = overlay(
            frame[None],
            heat[None],
            cmap=self._cmap(signed),
            alpha=self.alpha,
            signed=signed,
            scale_alpha=True,
        )[0]
        paste(
            tile, upscale(shown[..., :3].astype(np.uint8, copy=False), self._scale), *self._origin
        )
        return tile


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
        paste(tile, upscale(display_frame(episode.rollout.obs[t]), self._scale), *self._origin)
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
        x0, x1, y0, y1 = 40, w - 10, HEADER + 8, h - 30
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
        bright = np.asarray(img).copy()
        put_text(bright, _fmt(hi - pad), (x0 - 4, y0), size=10, color=MUTED, anchor="rt")
        put_text(bright, _fmt(lo + pad), (x0 - 4, y1), size=10, color=MUTED, anchor="rb")
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
        dim = bright.copy()
        inner = dim[y0 + 1 : y1, x0 + 1 : x1].astype(np.float32)
        dim[y0 + 1 : y1, x0 + 1 : x1] = (0.35 * inner + 0.65 * np.asarray(PANEL_BG)).astype(
            np.uint8
        )
        self._dim = dim

    def render(self, t: int, episode: EpisodeExplanation) -> np.ndarray:
        bright = self._require_prepared()
        x0, x1, y0, y1 = self._plot
        cursor = int(round(x0 + (x1 - x0) * t / (self._horizon - 1)))
        tile = self._dim.copy()
        tile[:, : cursor + 1] = bright[:, : cursor + 1]  # the past in full colour
        tile[y0:y1, max(cursor - 1, 0) : cursor + 1] = ACCENT
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


class EmbeddingPanel(Panel):
    """The fitted t-SNE (or PCA) map of states, with the current state and its recent trail.

    The background (every fitted state, coloured by its stored value when there is one) is drawn
    once; each frame draws only the trail of the last ``trail`` states and the current one.
    """

    def __init__(
        self, trail: int = 20, size: tuple[int, int] = TILE, title: str = "State map (t-SNE)"
    ) -> None:
        super().__init__(size, title)
        self.trail = int(trail)
        self._pixels: np.ndarray | None = None

    def available(self, episode: EpisodeExplanation) -> bool:
        return episode.embedding is not None and episode.embedding_xy is not None

    def _to_px(self, unit: np.ndarray) -> np.ndarray:
        h, w = self.size
        x0, x1, y0, y1 = 8, w - 8, HEADER + 4, h - 8
        return np.stack([x0 + unit[:, 0] * (x1 - x0), y1 - unit[:, 1] * (y1 - y0)], 1)

    def prepare(self, episode: EpisodeExplanation) -> None:
        embedding = episode.embedding
        if embedding is None or episode.embedding_xy is None:
            raise ValueError("EmbeddingPanel needs episode.embedding and episode.embedding_xy")
        self.title = f"State map ({'t-SNE' if embedding.method == 'tsne' else 'PCA'})"
        tile = self._header_tile()
        bg = embedding.background()
        pts = self._to_px(embedding.to_unit(bg["xy"]))
        values = bg.get("values")
        if values is not None and np.ptp(values) > 0:
            from rlviz.maps import colorize

            v = (np.asarray(values, np.float32) - np.min(values)) / np.ptp(values)
            colors = np.asarray(colorize(v[None, None, :], "viridis")[0, 0], np.float32)[:, :3]
            colors = (0.55 * colors + 0.45 * np.asarray(PANEL_BG)).astype(np.uint8)
            put_text(
                tile,
                "colour: V(s) of mapped states",
                (self.size[1] - 6, HEADER // 2),
                size=10,
                color=MUTED,
                anchor="rm",
            )
        else:
            colors = np.broadcast_to(np.asarray((95, 95, 110), np.uint8), (len(pts), 3))
        ij = np.round(pts).astype(np.int64)
        for dy in (0, 1):  # 2x2 px dots, vectorised
            for dx in (0, 1):
                yy = (ij[:, 1] + dy).clip(0, self.size[0] - 1)
                xx = (ij[:, 0] + dx).clip(0, self.size[1] - 1)
                tile[yy, xx] = colors
        self._base = tile
        self._pixels = self._to_px(embedding.to_unit(episode.embedding_xy))

    def render(self, t: int, episode: EpisodeExplanation) -> np.ndarray:
        tile = self._require_prepared()
        img = Image.fromarray(tile)
        draw = ImageDraw.Draw(img)
        start = max(0, t - self.trail)
        trail = [tuple(p) for p in self._pixels[start : t + 1].tolist()]
        n = len(trail)
        for i in range(1, n):  # older segments fade into the background
            a = i / n
            color = tuple(
                int(a * c + (1 - a) * b) for c, b in zip((255, 255, 255), PANEL_BG, strict=True)
            )
            draw.line([trail[i - 1], trail[i]], fill=color, width=2)
        x, y = trail[-1]
        draw.ellipse([x - 5, y - 5, x + 5, y + 5], fill=ACCENT, outline=(0, 0, 0))
        return np.asarray(img).copy()


class TopDownPanel(Panel):
    """The env's top-down map at step t (agent, its path, the boxes), from ``episode.top_down``.

    The pipeline asks the env for maps of :attr:`map_size` so that no resizing happens per frame.
    """

    def __init__(self, size: tuple[int, int] = TILE, title: str = "Top-down view") -> None:
        super().__init__(size, title)

    @property
    def map_size(self) -> tuple[int, int]:
        """(H, W) of the map images this panel shows without resizing."""
        return (self.size[0] - HEADER - 4, self.size[1] - 8)

    def available(self, episode: EpisodeExplanation) -> bool:
        return episode.top_down is not None

    def render(self, t: int, episode: EpisodeExplanation) -> np.ndarray:
        tile = self._require_prepared().copy()
        view = np.asarray(episode.top_down[t])[..., :3]
        h, w = self.map_size
        if view.shape[:2] != (h, w):
            scale = min(h / view.shape[0], w / view.shape[1])
            view = fit_nearest(
                view, max(1, int(view.shape[0] * scale)), max(1, int(view.shape[1] * scale))
            )
        paste(
            tile, view, HEADER + (h - view.shape[0]) // 2 + 2, (self.size[1] - view.shape[1]) // 2
        )
        return tile


# ------------------------------------------------------------------------------------ captions


def _action_index(names: Sequence[str], wanted: str) -> int | None:
    lowered = [n.lower() for n in names]
    return lowered.index(wanted) if wanted in lowered else None


def episode_events(episode: EpisodeExplanation) -> list[list[str]]:
    """Event captions per step from the rollout and ground truth: ``[T]`` lists of strings.

    Events: "box came into view" (first step it appears), "lost sight of the box", "turning away
    from a visible box" (a turn away from the side of the image the goal box is on), "reached the
    box", and rewards. Ground-truth events need ``goal_mask``/``box_visible`` in the infos.
    """
    rollout = episode.rollout
    n = len(rollout)
    events: list[list[str]] = [[] for _ in range(n)]
    infos = rollout.infos
    visible = None
    if "box_visible" in infos:
        visible = np.asarray(infos["box_visible"]).reshape(n, -1).any(1)
    elif "goal_mask" in infos:
        visible = np.asarray(infos["goal_mask"]).reshape(n, -1).any(1)
    if visible is not None:
        for t in range(n):
            if visible[t] and (t == 0 or not visible[t - 1]):
                events[t].append("box came into view")
            elif not visible[t] and t > 0 and visible[t - 1]:
                events[t].append("lost sight of the box")
    left = _action_index(episode.action_names, "left")
    right = _action_index(episode.action_names, "right")
    if "goal_mask" in infos and left is not None and right is not None:
        masks = np.asarray(infos["goal_mask"]).reshape(n, *np.asarray(infos["goal_mask"]).shape[1:])
        width = masks.shape[-1]
        cols = np.arange(width, dtype=np.float32)
        area = masks.reshape(n, -1, width).sum(1).astype(np.float32)  # [T, W] column coverage
        total = area.sum(1)
        centre = np.where(total > 0, (area * cols).sum(1) / np.maximum(total, 1), width / 2)
        side = (centre - (width - 1) / 2) / width  # -0.5 (far left) .. 0.5 (far right)
        for t in range(n):
            a = int(rollout.actions[t])
            if total[t] > 0 and ((a == right and side[t] < -0.1) or (a == left and side[t] > 0.1)):
                events[t].append("turning away from a visible box")
    success = np.asarray(infos["success"]).reshape(n, -1).any(1) if "success" in infos else None
    for t in range(n):
        if success is not None and success[t]:
            events[t].append("reached the box")
        elif rollout.rewards[t] != 0:
            events[t].append(f"reward {rollout.rewards[t]:+.2f}")
    if success is None and (rollout.terminated or rollout.truncated) and n:
        events[-1].append("episode ends" + (" (time limit)" if rollout.truncated else ""))
    elif n and rollout.truncated and (success is None or not success.any()):
        events[-1].append("time limit: episode ends")
    return events


class CaptionPanel(Panel):
    """A full-width strip: a state chip (box in view or not) and the latest events, held a while."""

    wide = True

    def __init__(self, height: int = 30, hold: int = 8, width: int = 640) -> None:
        super().__init__((height, width), "")
        self.hold = int(hold)
        self._events: list[list[str]] = []
        self._visible: np.ndarray | None = None

    def fit_width(self, width: int) -> None:
        """Stretch to the frame's width (called by the Composer)."""
        self.size = (self.size[0], int(width))
        self._base = blank(*self.size, PANEL_BG)

    def prepare(self, episode: EpisodeExplanation) -> None:
        self._base = blank(*self.size, PANEL_BG)
        self._events = episode_events(episode)
        infos = episode.rollout.infos
        n = len(episode)
        self._visible = None
        if "box_visible" in infos:
            self._visible = np.asarray(infos["box_visible"]).reshape(n, -1).any(1)
        elif "goal_mask" in infos:
            self._visible = np.asarray(infos["goal_mask"]).reshape(n, -1).any(1)

    def render(self, t: int, episode: EpisodeExplanation) -> np.ndarray:
        tile = self._require_prepared().copy()
        h = self.size[0]
        x = 8
        if self._visible is not None:
            seen = bool(self._visible[t])
            label = "box in view" if seen else "box not in view"
            color = GOOD if seen else MUTED
            tile[4 : h - 4, x : x + text_width(label, 13, True) + 12] = color
            box = put_text(
                tile, label, (x + 6, h // 2), size=13, bold=True, color=(20, 20, 20), anchor="lm"
            )
            x = box[2] + 18
        latest: dict[str, int] = {}  # event -> last step it happened (repeats shown once)
        for s in range(max(0, t - self.hold + 1), t + 1):
            latest.update({e: s for e in self._events[s]})
        recent = sorted(((s, e) for e, s in latest.items()), reverse=True)[:3]
        for s, event in recent:  # newest first, older ones fade
            fade = 1.0 - 0.6 * (t - s) / max(self.hold, 1)
            color = ACCENT if "reached" in event else (BAD if "away" in event else TEXT)
            color = tuple(
                int(fade * c + (1 - fade) * b) for c, b in zip(color, PANEL_BG, strict=True)
            )
            box = put_text(tile, event, (x, h // 2), size=13, bold=s == t, color=color, anchor="lm")
            x = box[2] + 16
            if x > self.size[1]:
                break
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
        cmap: str = "inferno",
        signed_cmap: str = "RdBu_r",
        alpha: float = 0.85,
        height: int = 120,
    ) -> None:
        super().__init__((HEADER + 18 + height + 6, 640), f"Per action: {method_title(method)}")
        self.method = method
        self.cmap = cmap
        self.signed_cmap = signed_cmap
        self.alpha = float(alpha)
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
        width = len(names) * cell_w + 16
        self.size = (HEADER + 18 + obs_h * self._scale + 8, width + width % 2)
        self._xs = [8 + k * cell_w for k in range(len(names))]
        self._base = self._header_tile()

    def render(self, t: int, episode: EpisodeExplanation) -> np.ndarray:
        from rlviz.maps import overlay

        tile = self._require_prepared().copy()
        maps = episode.action_maps[self.method][t]  # [A, H, W]
        frame = display_frame(episode.rollout.obs[t])
        signed = episode.map_signed.get(self.method, False)
        frames = np.broadcast_to(frame, (len(maps), *frame.shape))
        shown = overlay(
            frames,
            maps,
            cmap=self.signed_cmap if signed else self.cmap,
            alpha=self.alpha,
            signed=signed,
            scale_alpha=True,
        )
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
    """The standard panel set: one map panel per method, policy bars, value trace, state map,
    top-down view, captions (and per-action maps when ``per_action`` names a method).

    Panels whose data an episode lacks are dropped by the pipeline (see ``Panel.available``).
    """
    panels: list[Panel] = [MapPanel(m) for m in methods] or [ObservationPanel()]
    panels += [ActionPanel(), ValuePanel(), EmbeddingPanel(), TopDownPanel()]
    if per_action:
        panels.append(PerActionPanel(per_action))
    panels.append(CaptionPanel())
    return panels
