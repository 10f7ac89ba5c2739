"""Speed of state maps: fitting 10,000 states x 512 features, and placing new frames on the map.

Prints, in one run on the same data:

1. fit wall time: openTSNE vs scikit-learn TSNE on the raw 512-d features (both library defaults,
   same thread count), and rlviz's pipeline (standardise + PCA to 50 dims, then openTSNE);
2. time per frame to place new frames on the fitted 10k map: openTSNE ``transform()`` vs the fast
   k-NN interpolation path (batches of 1, 32 and 256 frames); openTSNE on a 2k map for reference;
3. the fast path's placement error against ``transform()``: median distance relative to the map's
   spread (RMS distance of fitted points from their centroid), and neighbour agreement (overlap of
   the 10 fitted states nearest each placement).

The states are synthetic, made to look like a ReLU conv layer's features: 24 clusters of varied
size and spread in a 16-d latent space, lifted to 512 dims by a random linear map + ReLU, plus noise.

Usage::

    .venv/bin/python benchmarks/tsne_speed.py            # full run (~5 min on an idle core)
    .venv/bin/python benchmarks/tsne_speed.py --quick    # 2,000 states, no sklearn (smoke test)
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rlviz.statemap import StateEmbedding  # noqa: E402


def synthetic_states(n: int, dims: int = 512, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Clustered ReLU-like features [n, dims] float32 and their cluster labels [n].

    The same ``dims`` always give the same clusters (seed 1234), ``seed`` draws the states, so a
    second call with another seed gives new states from the same distribution.
    """
    world = np.random.default_rng(1234)
    n_clusters, latent = 24, 16
    centres = world.normal(0, 3, (n_clusters, latent))
    spreads = world.uniform(0.4, 1.5, n_clusters)
    weights = world.dirichlet(np.full(n_clusters, 2.0))
    lift = world.normal(0, 1 / np.sqrt(latent), (latent, dims))
    rng = np.random.default_rng(seed)
    labels = rng.choice(n_clusters, n, p=weights)
    z = centres[labels] + rng.normal(0, 1, (n, latent)) * spreads[labels, None]
    x = np.maximum(z @ lift, 0) + rng.normal(0, 0.05, (n, dims))
    return x.astype(np.float32), labels


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def row(label: str, value: float, unit: str = "", fmt: str = "8.3f") -> None:
    print(f"  {label:<54s}{value:{fmt}} {unit}")


def spread(xy: np.ndarray) -> float:
    """RMS distance of map points from their centroid."""
    return float(np.sqrt(((xy - xy.mean(0)) ** 2).sum(1).mean()))


def neighbour_overlap(map_xy: np.ndarray, a: np.ndarray, b: np.ndarray, k: int = 10) -> float:
    """Mean share of the k fitted states nearest ``a`` that are also among the k nearest ``b``."""
    from sklearn.neighbors import NearestNeighbors

    nn = NearestNeighbors(n_neighbors=k).fit(map_xy)
    ia, ib = nn.kneighbors(a)[1], nn.kneighbors(b)[1]
    return float(np.mean([len(set(x) & set(y)) / k for x, y in zip(ia, ib, strict=True)]))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--states", type=int, default=10_000)
    p.add_argument("--dims", type=int, default=512)
    p.add_argument("--new", type=int, default=200, help="new frames placed with transform()")
    p.add_argument(
        "--n-jobs", type=int, default=1, help="threads for both t-SNEs (1: fair on a shared CPU)"
    )
    p.add_argument("--skip-sklearn", action="store_true")
    p.add_argument("--quick", action="store_true", help="2,000 states, no sklearn, 50 new frames")
    args = p.parse_args(argv)
    if args.quick:
        args.states, args.new, args.skip_sklearn = 2000, 50, True

    import openTSNE
    import sklearn

    print(
        f"python {platform.python_version()}, openTSNE {openTSNE.__version__}, "
        f"scikit-learn {sklearn.__version__}, {os.cpu_count()} CPUs, n_jobs={args.n_jobs}"
    )
    x, _ = synthetic_states(args.states, args.dims, seed=0)
    new, _ = synthetic_states(args.new, args.dims, seed=1)
    print(f"states: synthetic clustered ReLU features, {x.shape[0]} x {x.shape[1]}")

    print("\n1. fit wall time")
    _, t_open = timed(
        lambda: openTSNE.TSNE(n_jobs=args.n_jobs, random_state=0).fit(x.astype(np.float64))
    )
    row(f"openTSNE on raw {args.dims}-d (250 + 500 iterations)", t_open, "s", "8.1f")
    if not args.skip_sklearn:
        from sklearn.manifold import TSNE

        _, t_sk = timed(lambda: TSNE(n_jobs=args.n_jobs, random_state=0).fit_transform(x))
        row(f"scikit-learn TSNE on raw {args.dims}-d (1000 iterations)", t_sk, "s", "8.1f")
        row("-> scikit-learn / openTSNE", t_sk / t_open, "x", "8.1f")
    emb, t_pipe = timed(lambda: StateEmbedding(seed=0, n_jobs=args.n_jobs).fit(x))
    row("rlviz StateEmbedding (standardise, PCA-50, openTSNE)", t_pipe, "s", "8.1f")

    print(f"\n2. placing new frames on the fitted {len(x)}-state map (per frame)")
    accurate, t_acc = timed(lambda: emb.transform(new, fast=False))
    row(f"openTSNE transform(), one batch of {len(new)}", 1e3 * t_acc / len(new), "ms")
    small_n = min(2000, len(x))
    small = StateEmbedding(seed=0, n_jobs=args.n_jobs).fit(x[:small_n])
    small.transform(new[:5], fast=False)  # build openTSNE's index outside the timing
    _, t_small = timed(lambda: small.transform(new, fast=False))
    row(f"  same on a {small_n}-state map (reference)", 1e3 * t_small / len(new), "ms")
    many, _ = synthetic_states(4096, args.dims, seed=2)
    emb.transform(many[:8])  # warm-up (squared norms cached on first use)
    for batch in (1, 32, 256):
        frames = many[: max(256, 64 * batch)]
        start = time.perf_counter()
        for i in range(0, len(frames), batch):
            emb.transform(frames[i : i + batch], fast=True)
        per_frame = (time.perf_counter() - start) / len(frames)
        row(f"fast k-NN path, batches of {batch}", 1e3 * per_frame, "ms")

    print("\n3. fast path vs transform() on the same new frames")
    s = spread(emb.embedding_)
    row("map spread (RMS distance from centroid)", s, "", "8.2f")
    fast = emb.transform(new, fast=True)
    emb.fast_perplexity = None
    idw = emb.transform(new, fast=True)
    emb.fast_perplexity = 2.0
    for name, placed in (
        ("default (Gaussian, perplexity 2)", fast),
        ("inverse squared distance", idw),
    ):
        gap = np.linalg.norm(placed - accurate, axis=1)
        print(f"  fast path, {name}, k={emb.n_neighbors}:")
        row("  median placement gap / spread", np.median(gap) / s)
        row("  90th percentile gap / spread", np.percentile(gap, 90) / s)
        row(
            "  10-NN neighbour agreement on the map",
            neighbour_overlap(emb.embedding_, placed, accurate),
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
