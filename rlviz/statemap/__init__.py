"""State maps: every visited state with a layer's features (:class:`StateDataset`), a fitted 2-D
map of them (:class:`StateEmbedding`, openTSNE or PCA) and its quality; static figures live in
:mod:`rlviz.statemap.plots` (imported on its own: it loads matplotlib)."""

from rlviz.statemap.dataset import StateDataset, layer_features, read_npz
from rlviz.statemap.embedding import StateEmbedding
from rlviz.statemap.quality import embedding_quality, format_quality

__all__ = [
    "StateDataset",
    "StateEmbedding",
    "embedding_quality",
    "format_quality",
    "layer_features",
    "read_npz",
]
