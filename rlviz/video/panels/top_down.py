"""The env's top-down view at step t: the agent, its path and the goal."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from rlviz.video.draw import fit_nearest, paste
from rlviz.video.panels.base import HEADER, TILE, Panel

if TYPE_CHECKING:
    from rlviz.video.episode import EpisodeExplanation


class TopDownPanel(Panel):
    """The env's top-down map at step t (agent, its path, the goal), from ``episode.top_down``.

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
