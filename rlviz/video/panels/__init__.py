"""The video's panels, one module per thing drawn (:mod:`~rlviz.video.panels.base`: the panel
contract); :func:`default_panels` puts them together."""

from __future__ import annotations

from collections.abc import Sequence

from rlviz.video.panels.attribution import (
    MapPanel,
    ObservationPanel,
    PerActionPanel,
    map_over_frame,
)
from rlviz.video.panels.base import HEADER, TILE, Panel
from rlviz.video.panels.captions import CaptionPanel
from rlviz.video.panels.curves import MemoryPanel, TimePlot, ValuePanel
from rlviz.video.panels.frame_stack import StackPanel
from rlviz.video.panels.policy import ActionPanel
from rlviz.video.panels.state_map import EmbeddingPanel
from rlviz.video.panels.top_down import TopDownPanel

__all__ = [
    "HEADER",
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
    "TimePlot",
    "TopDownPanel",
    "ValuePanel",
    "default_panels",
    "map_over_frame",
]


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
