"""Panels about time, shown only for policies with memory: the frame stack and memory reliance.

* :class:`StackPanel`: every frame of the stack the policy saw at step t, oldest to newest, each
  with its own map and its share of the attribution mass (``episode.frame_maps``).
* :class:`MemoryPanel`: memory reliance over the episode with a cursor: the gradient x input share
  of the memory and KL(pi || pi without memory) (``episode.memory``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageDraw

from rlviz.maps import overlay
from rlviz.video.draw import (
    ACCENT,
    GRID,
    MUTED,
    TEXT,
    format_number,
    paste,
    put_text,
    text_width,
)
from rlviz.video.draw import upscale as upscale_nearest
from rlviz.video.panel import HEADER, TILE, Panel, dimmed, method_title, reveal

if TYPE_CHECKING:
    from rlviz.video.episode import EpisodeExplanation

SHARE_COLOUR = (255, 170, 60)
KL_COLOUR = (120, 200, 255)
#: Nats at the top of the KL axis at least (KL below ~0.1 nats hardly changes the action).
KL_FLOOR = 0.1


def stack_note(episode: EpisodeExplanation, method: str) -> str:
    """What a map panel of a stacked episode shows: the newest frame's own map, or (occlusion,
    perturbation) the map of a patch covering every frame; '' for single frames."""
    if not episode.stacked:
        return ""
    return " (newest frame)" if method in episode.newest_maps else " (all frames)"


class StackPanel(Panel):
    """The stack of step t as small tiles, oldest -> newest, each frame with its own map.

    A full-width row. Reads ``episode.frame_maps[method]`` [T, K, H, W] (the pipeline computes
    it for stacked policies: per-frame maps of the first input-space method) and
    ``episode.frame_shares`` [T, K] for the labels.

    Args:
        method: the key of ``episode.frame_maps`` (default: the one there).
        height: target height of each tile in px (integer nearest upscale).
    """

    wide = True

    def __init__(
        self,
        method: str | None = None,
        *,
        cmap: str = "inferno",
        signed_cmap: str = "RdBu_r",
        alpha: float = 0.85,
        height: int = 96,
    ) -> None:
        super().__init__((HEADER + 18 + height + 6, 640), "Frame stack")
        self.method = method
        self.cmap = cmap
        self.signed_cmap = signed_cmap
        self.alpha = float(alpha)
        self.height = int(height)
        self._scale = 1
        self._xs: list[int] = []
        self._shown: str | None = None

    def available(self, episode: EpisodeExplanation) -> bool:
        return episode.stacked and self._method(episode) is not None

    def _method(self, episode: EpisodeExplanation) -> str | None:
        if self.method is not None:
            return self.method if self.method in episode.frame_maps else None
        return next(iter(episode.frame_maps), None)

    def prepare(self, episode: EpisodeExplanation) -> None:
        method = self._method(episode)
        if method is None:
            raise KeyError(
                f"episode has no per-frame maps of {self.method!r}; it has "
                f"{sorted(episode.frame_maps)} (stacked policies only)"
            )
        self._shown = method
        frames = episode.frame_maps[method].shape[1]
        obs_h, obs_w = episode.obs_shape[:2]
        self._scale = max(1, self.height // obs_h)
        cell_w = max(obs_w * self._scale, 64) + 12
        width = frames * cell_w + 16
        self.size = (HEADER + 18 + obs_h * self._scale + 8, width + width % 2)
        self._xs = [8 + k * cell_w for k in range(frames)]
        self.title = f"Frame stack, oldest \u2192 newest: {method_title(method)} per frame"
        width = max(width, text_width(self.title, 13, True) + 16)
        self.size = (self.size[0], width + width % 2)
        self._base = self._header_tile()

    def render(self, t: int, episode: EpisodeExplanation) -> np.ndarray:
        tile = self._require_prepared().copy()
        maps = episode.frame_maps[self._shown][t]  # [K, H, W]
        signed = episode.map_signed.get(self._shown, False)
        shown = overlay(
            episode.stack_frames(t),
            maps,
            cmap=self.signed_cmap if signed else self.cmap,
            alpha=self.alpha,
            signed=signed,
            scale_alpha=True,
        )
        shares = episode.frame_shares[t] if episode.frame_shares is not None else None
        k_last = len(maps) - 1
        for k, x in enumerate(self._xs):
            age = "t" if k == k_last else f"t-{k_last - k}"
            label = age if shares is None else f"{age}  {100 * float(shares[k]):.0f}%"
            newest = k == k_last
            put_text(
                tile,
                label,
                (x, HEADER + 2),
                size=11,
                color=ACCENT if newest else TEXT,
                bold=newest,
            )
            paste(tile, upscale_nearest(shown[k][..., :3], self._scale), HEADER + 18, x)
        return tile


class MemoryPanel(Panel):
    """Memory reliance over the episode with a moving cursor; the future is dimmed.

    Two traces from ``episode.memory`` (:func:`rlviz.memory.memory_reliance`): the share of the
    attribution mass on the memory (past frames or recurrent state), in [0, 1], and
    KL(pi(.|s_t) || pi without memory), scaled to the episode's largest KL.
    """

    def __init__(self, size: tuple[int, int] = TILE, title: str = "Memory reliance") -> None:
        super().__init__(size, title)
        self._dim: np.ndarray | None = None
        self._plot = (0, 0, 0, 0)
        self._horizon = 2

    def available(self, episode: EpisodeExplanation) -> bool:
        return episode.memory is not None

    def prepare(self, episode: EpisodeExplanation) -> None:
        memory = episode.memory
        if memory is None:
            raise ValueError("MemoryPanel needs episode.memory (policies with memory only)")
        h, w = self.size
        x0, x1, y0, y1 = 34, w - 10, HEADER + 8, h - 30
        self._plot = (x0, x1, y0, y1)
        self._horizon = horizon = max(int(episode.horizon or len(episode)), 2)
        # A floor keeps a policy that barely uses its memory flat at the bottom, not noise
        # stretched to the full height.
        self._kl_top = max(float(np.max(memory.kl, initial=0.0)), KL_FLOOR)
        steps = np.arange(len(memory), dtype=np.float64)

        def px(v: np.ndarray) -> list[tuple[float, float]]:
            xs = x0 + (x1 - x0) * steps / (horizon - 1)
            ys = y1 - (y1 - y0) * np.clip(v, 0.0, 1.0)
            return list(zip(xs.tolist(), ys.tolist(), strict=True))

        img = Image.fromarray(self._header_tile())
        draw = ImageDraw.Draw(img)
        draw.rectangle([x0, y0, x1, y1], outline=GRID)
        draw.line([(x0, (y0 + y1) / 2), (x1, (y0 + y1) / 2)], fill=GRID)
        if len(memory) > 1:
            draw.line(px(memory.kl.astype(np.float64) / self._kl_top), fill=KL_COLOUR, width=2)
            draw.line(px(memory.share.astype(np.float64)), fill=SHARE_COLOUR, width=2)
        bright = np.asarray(img).copy()
        put_text(bright, "1", (x0 - 4, y0), size=10, color=MUTED, anchor="rt")
        put_text(bright, "0", (x0 - 4, y1), size=10, color=MUTED, anchor="rb")
        kl_label = f"KL (top {format_number(self._kl_top)} nats)"
        legend = put_text(
            bright, kl_label, (w - 8, HEADER // 2), size=11, color=KL_COLOUR, anchor="rm"
        )
        put_text(
            bright, "share", (legend[0] - 10, HEADER // 2), size=11, color=SHARE_COLOUR, anchor="rm"
        )
        self._base = bright
        self._dim = dimmed(bright, self._plot)

    def render(self, t: int, episode: EpisodeExplanation) -> np.ndarray:
        tile = reveal(self._require_prepared(), self._dim, self._plot, t, self._horizon)
        x0 = self._plot[0]
        memory = episode.memory
        put_text(
            tile,
            f"memory share {float(memory.share[t]):.2f}   KL {float(memory.kl[t]):.3f} nats",
            (x0, self.size[0] - 6),
            size=12,
            anchor="lb",
        )
        return tile
