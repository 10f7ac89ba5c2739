"""The explorer: a self-contained interactive HTML report of a policy's episodes.

One cursor links every view (after "Understanding RL Vision", Hilton et al., Distill 2020): the
timeline, the observation with attribution overlays per method and target, pi, V, reward, GAE
advantage and entropy charts, bookmarks, a t-SNE state map, a network tab, and URV's layer
attribution reduced by NMF. ``rlviz.explore(env, policy, out=DIR)`` writes it; open
``DIR/index.html`` from disk, no server needed.
"""

from rlviz.explorer.export import ExploreSummary, explore
from rlviz.explorer.nmf import (
    NMFAttribution,
    direction_objective,
    factorize,
    layer_attribution,
    nmf_attribution,
    visualize_directions,
)
from rlviz.explorer.scalars import gae

__all__ = [
    "ExploreSummary",
    "NMFAttribution",
    "direction_objective",
    "explore",
    "factorize",
    "gae",
    "layer_attribution",
    "nmf_attribution",
    "visualize_directions",
]
