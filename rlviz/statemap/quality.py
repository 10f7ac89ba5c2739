"""How good a state map is: trustworthiness (Venna & Kaski 2001) and how well the action can be
predicted from a state's neighbours on the map vs in the raw features."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from rlviz.statemap.embedding import as_features


def embedding_quality(
    features: np.ndarray,
    embedding: np.ndarray,
    labels: np.ndarray | None = None,
    *,
    k: int = 10,
    max_points: int = 3000,
    seed: int = 0,
) -> dict[str, float]:
    """How faithful a 2-D map is to the features, and how well it separates ``labels``.

    Trustworthiness (sklearn) penalises map neighbours that were far apart in feature space; the
    k-NN accuracies are leave-one-out majority votes of the ``k`` nearest neighbours, on the map and
    in the raw features. Both cost O(n^2), so at most ``max_points`` states (a seeded random subset)
    are scored. Returns ``trustworthiness``, ``n`` (states scored) and ``k``, and with ``labels``
    ``knn_accuracy_map``, ``knn_accuracy_features`` and ``majority_baseline`` (share of the most
    common label).
    """
    from sklearn.manifold import trustworthiness

    x = as_features(features)
    y2 = np.asarray(embedding, dtype=np.float32)
    if y2.ndim != 2 or y2.shape[0] != x.shape[0]:
        raise ValueError(f"embedding must be [N={x.shape[0]}, 2], got {y2.shape}")
    n = x.shape[0]
    index = np.arange(n)
    if n > max_points:
        index = np.sort(np.random.default_rng(seed).choice(n, max_points, replace=False))
    x, y2 = x[index], y2[index]
    k = int(min(k, (len(index) - 1) // 2))
    if k < 1:
        raise ValueError(f"need at least 3 states to score a map, got {len(index)}")
    result: dict[str, float] = {
        "trustworthiness": float(trustworthiness(x, y2, n_neighbors=k)),
        "n": float(len(index)),
        "k": float(k),
    }
    if labels is not None:
        lab = np.asarray(labels)
        if lab.shape != (n,):
            raise ValueError(f"labels must be [N={n}], got {lab.shape}")
        lab = lab[index]
        _, codes = np.unique(lab, return_inverse=True)
        result["knn_accuracy_map"] = _loo_knn_accuracy(y2, codes, k)
        result["knn_accuracy_features"] = _loo_knn_accuracy(x, codes, k)
        result["majority_baseline"] = float(np.bincount(codes).max() / len(codes))
    return result


def _loo_knn_accuracy(x: np.ndarray, codes: np.ndarray, k: int) -> float:
    """Share of points whose label is the majority of their k nearest other points."""
    from sklearn.neighbors import NearestNeighbors

    _, idx = NearestNeighbors(n_neighbors=k + 1).fit(x).kneighbors(x)
    # Drop each point itself; with exact duplicates it need not come first, so find it (or, when
    # a duplicate pushed it out, drop the farthest neighbour instead).
    is_self = idx == np.arange(len(codes))[:, None]
    is_self[~is_self.any(1), -1] = True
    neighbours = codes[idx[~is_self].reshape(len(codes), k)]
    n_classes = int(codes.max()) + 1
    votes = np.zeros((len(codes), n_classes), np.int64)
    np.add.at(votes, (np.arange(len(codes))[:, None], neighbours), 1)
    return float((votes.argmax(1) == codes).mean())


def format_quality(quality: Mapping[str, float]) -> str:
    """One line of quality numbers for a plot subtitle or the terminal."""
    parts = [f"trustworthiness {quality['trustworthiness']:.3f}"]
    if "knn_accuracy_map" in quality:
        parts.append(
            f"action k-NN acc: map {quality['knn_accuracy_map']:.3f} / "
            f"features {quality['knn_accuracy_features']:.3f} "
            f"(majority {quality['majority_baseline']:.3f})"
        )
    parts.append(f"k={int(quality['k'])}, n={int(quality['n'])}")
    return "; ".join(parts)
