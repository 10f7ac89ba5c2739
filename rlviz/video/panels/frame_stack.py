"""The frame stack a policy with memory saw at step t, oldest to newest, each frame with its own
map and its share of the attribution mass (``episode.frame_maps``, ``episode.frame_shares``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from rlviz.maps import overlay
from rlviz.methods import method_title
from rlviz.video.draw import text_width
from rlviz.video.panels.base import HEADER, Panel, draw_row

if TYPE_CHECKING:
    from rlviz.video.episode import EpisodeExplanation


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
        self._xs = [8 + k * cell_w for k in range(frames)]
        self.title = f"Frame stack, oldest \u2192 newest: {method_title(method)} per frame"
        width = max(frames * cell_w, text_width(self.title, 13, True)) + 16
        self.size = (HEADER + 18 + obs_h * self._scale + 8, width + width % 2)
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
        labels = []
        for k in range(len(self._xs)):
            age = "t" if k == k_last else f"t-{k_last - k}"
            labels.append(age if shares is None else f"{age}  {100 * float(shares[k]):.0f}%")
        return draw_row(tile, labels, shown[..., :3], self._xs, self._scale, k_last)
