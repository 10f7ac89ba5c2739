"""The panel contract: a fixed-size tile that shows one thing about step t of an episode.

A panel has a fixed ``size`` = (h, w); ``prepare(episode)`` does the once-per-episode work (static
backgrounds, axes, colour bars, whole-episode curves) and ``render(t, episode)`` returns the tile
for step t as uint8 [h, w, 3], copying the prepared background and drawing only what changes.
``available(episode)`` says whether the episode has what the panel needs (ground truth, a map, a
top-down view), so a pipeline can leave a panel out for envs that cannot feed it. Panels only read
the :class:`rlviz.video.episode.EpisodeExplanation`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from rlviz.video.draw import ACCENT, PANEL_BG, TEXT, blank, paste, put_text, upscale

if TYPE_CHECKING:
    from rlviz.video.episode import EpisodeExplanation

HEADER = 22
TILE = (240, 320)


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


def draw_row(tile: np.ndarray, labels, images, xs, scale: int, highlight: int) -> np.ndarray:
    """A full-width row of cells in ``tile``: each image upscaled ``scale`` times at x in ``xs``
    under its label (the ``highlight``-th label in the accent colour, bold)."""
    for k, (label, image, x) in enumerate(zip(labels, images, xs, strict=True)):
        color = ACCENT if k == highlight else TEXT
        put_text(tile, label, (x, HEADER + 2), size=11, color=color, bold=k == highlight)
        paste(tile, upscale(image, scale), HEADER + 18, x)
    return tile
