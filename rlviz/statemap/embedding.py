"""Maps of the agent's mind: fit a 2-D map of states once, then place new frames on it.

:class:`StateEmbedding` standardises a layer's features, reduces them with PCA (to ``pca_dims``:
new frames are then compared in 50 dims, not thousands, and a saved map stays small), and fits
t-SNE with openTSNE (Policar et al. 2019, https://doi.org/10.1101/731877) or keeps the first two
principal components. New frames are placed on the fitted map in one of two ways:

* ``fast=True``: k-nearest-neighbour interpolation in the reduced feature space, each new point
  landing at a distance-weighted mean of its neighbours' map positions. The weights fall off with
  distance as a Gaussian whose width is set per frame to a small perplexity (t-SNE's affinity
  rule), or as plain inverse squared distance (``fast_perplexity=None``). Well under a millisecond
  per frame in batches; what the video panel uses;
* ``fast=False``: openTSNE's ``transform()``, which optimises each new point against the fixed map
  (milliseconds per frame; the reference the fast path is measured against).

Saved maps hold arrays only (fitted positions, reduced points, PCA matrices), never the openTSNE
object. After :meth:`StateEmbedding.load` the accurate path still works: the first ``fast=False``
call rebuilds openTSNE's neighbour index over the stored reduced points (seconds for 10k states) and
reuses the stored layout; nothing is refitted. How good a map is: :mod:`rlviz.statemap.quality`.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import warnings
from collections.abc import Mapping
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import numpy as np

from rlviz.io import atomic_savez
from rlviz.statemap.dataset import read_npz, rlviz_version

METHODS = ("tsne", "pca")
#: The constructor's settings, saved with a map and given back to it on load.
_PARAMS = "method perplexity seed n_jobs pca_dims standardize n_neighbors fast_perplexity n_iter"
FORMAT = "rlviz.StateEmbedding/1"
_POINT_PREFIX = "point."


def as_features(features: np.ndarray, name: str = "features") -> np.ndarray:
    arr = np.asarray(features)
    if arr.ndim != 2 or arr.dtype.kind not in "biuf":
        raise ValueError(f"{name} must be a numeric array [N, D], got {arr.dtype} {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or inf; drop those rows or fix the layer's output")
    return arr.astype(np.float32, copy=False)


EARLY_ITERATIONS = 250  # openTSNE's default early-exaggeration phase, named for the bar's total
CALLBACK_EVERY = 10


@contextmanager
def _fit_bar(progress: bool, n: int, n_iter: int):
    """Yield an openTSNE callback that advances a tqdm bar (None without ``progress``)."""
    if not progress:
        yield None
        return
    from tqdm.auto import tqdm

    with tqdm(
        total=EARLY_ITERATIONS + n_iter, desc=f"t-SNE of {n} states", unit="it", leave=False
    ) as bar:

        def advance(iteration, error, embedding) -> bool:
            bar.update(CALLBACK_EVERY)
            return False  # never stop early

        yield advance


@contextmanager
def _quiet_opentsne():
    """Silence openTSNE's advisory log warnings (e.g. about reusing a wide, fitted layout)."""
    logger = logging.getLogger("openTSNE")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


@functools.cache
def _blas_controller():
    """threadpoolctl's controller (it scans the libraries once: ~ms), None without it."""
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:  # threadpoolctl comes with scikit-learn; tolerate its absence
        return None
    return ThreadpoolController()


def _single_blas_thread():
    """Context limiting numpy's BLAS to one thread (a no-op without threadpoolctl)."""
    controller = _blas_controller()
    return nullcontext() if controller is None else controller.limit(limits=1, user_api="blas")


class StateEmbedding:
    """A 2-D map of states: fit once on features [N, D], then place new features on it.

    Args:
        method: ``"tsne"`` (openTSNE) or ``"pca"`` (first two principal components).
        perplexity: t-SNE perplexity; lowered to (N - 1) / 3 with a warning on small data.
        seed: seeds PCA, the neighbour index and t-SNE's optimisation: same data and seed, same
            map (also for 1,000+ states, where openTSNE switches to an approximate Annoy
            neighbour index; checked with 1 and 2 threads).
        n_jobs: threads for openTSNE (-1: all cores). On a busy shared CPU extra threads can be
            much slower than one (they wait for each other every iteration).
        pca_dims: features are reduced to this many principal components before t-SNE.
        standardize: scale each feature to unit variance first (units with std below 1e-3 of the
            largest are left unscaled, so dead units do not turn noise into signal).
        n_neighbors: neighbours used by the fast transform.
        fast_perplexity: the fast transform weights those neighbours with a Gaussian of this
            perplexity (t-SNE's own affinity rule; 2 tracks ``transform()`` best, see
            BENCHMARKS.md); ``None`` for plain inverse squared distance weights.
        n_iter: t-SNE iterations after early exaggeration (openTSNE's default 500).

    Example (a video panel: fitted map as background, an episode as a trail)::

        emb = StateEmbedding.load("runs/tsne/embedding.npz")
        bg = emb.background()          # xy [N, 2], values [N] (V(s) at fit), bounds
        feats = rlviz.statemap.layer_features(adapter, rollout.obs, emb.meta["layer"],
                                              pool=emb.meta["pool"])
        uv = emb.to_unit(emb.transform(feats))  # [T, 2] in [0, 1], y up

    Attributes (after :meth:`fit` or :meth:`load`):
        embedding_: float32 [N, 2], the fitted map (t-SNE maps centred on the origin).
        reduced_: float32 [N, P], the fitted states in reduced feature space.
        mean_, scale_: float32 [D], standardisation; components_: float32 [P, D], PCA rows.
        point_data: name -> [N] arrays stored with the map (e.g. ``value``, ``action``).
        meta: JSON-able metadata saved with the map (layer, checkpoint, ...).
    """

    def __init__(
        self,
        method: str = "tsne",
        perplexity: float = 30.0,
        seed: int = 0,
        n_jobs: int = 1,
        *,
        pca_dims: int = 50,
        standardize: bool = True,
        n_neighbors: int = 10,
        fast_perplexity: float | None = 2.0,
        n_iter: int = 500,
        verbose: bool = False,
    ) -> None:
        if method not in METHODS:
            raise ValueError(f"method={method!r} is not one of {METHODS}")
        if perplexity <= 0:
            raise ValueError(f"perplexity must be > 0, got {perplexity}")
        if pca_dims < 2:
            raise ValueError(f"pca_dims must be >= 2 (the map is 2-D), got {pca_dims}")
        if n_neighbors < 1:
            raise ValueError(f"n_neighbors must be >= 1, got {n_neighbors}")
        if fast_perplexity is not None and fast_perplexity < 1:
            raise ValueError(f"fast_perplexity must be >= 1 or None, got {fast_perplexity}")
        self.method = method
        self.perplexity = float(perplexity)
        self.seed = int(seed)
        self.n_jobs = int(n_jobs)
        self.pca_dims = int(pca_dims)
        self.standardize = bool(standardize)
        self.n_neighbors = int(n_neighbors)
        self.fast_perplexity = None if fast_perplexity is None else float(fast_perplexity)
        self.n_iter = int(n_iter)
        self.verbose = bool(verbose)
        self.embedding_: np.ndarray | None = None
        self.reduced_: np.ndarray | None = None
        self.mean_: np.ndarray | None = None
        self.scale_: np.ndarray | None = None
        self.components_: np.ndarray | None = None
        self.effective_perplexity_: float | None = None
        self.point_data: dict[str, np.ndarray] = {}
        self.meta: dict[str, Any] = {}
        self._tsne = None  # openTSNE TSNEEmbedding, for accurate transforms
        self._sq_norms: np.ndarray | None = None

    def __repr__(self) -> str:
        fitted = "unfitted" if self.embedding_ is None else f"{len(self.embedding_)} points"
        return (
            f"StateEmbedding(method={self.method!r}, perplexity={self.perplexity}, "
            f"seed={self.seed}, {fitted})"
        )

    # -- fitting ----------------------------------------------------------------------------------

    def fit(
        self,
        features: np.ndarray,
        point_data: Mapping[str, np.ndarray] | None = None,
        meta: Mapping[str, Any] | None = None,
        progress: bool = False,
    ) -> StateEmbedding:
        """Fit the map on ``features`` [N, D]; returns self, with ``embedding_`` float32 [N, 2].

        ``point_data``: per-state arrays [N] kept and saved with the map (e.g. ``value`` for a
        background coloured by value); ``meta``: JSON-able metadata saved with it; ``progress``:
        a tqdm bar (stderr) over the t-SNE iterations (seconds for thousands of states).
        """
        x = as_features(features)
        n, d = x.shape
        if n < 5:
            raise ValueError(f"a map needs at least 5 states, got {n}")
        self.point_data = self._check_point_data(point_data, n)
        self.meta = dict(meta or {})

        self.mean_ = x.mean(0)
        std = x.std(0)
        floor = 1e-3 * float(std.max()) if std.max() > 0 else 1.0
        scale = np.where(std > floor, std, 1.0) if self.standardize else np.ones(d)
        self.scale_ = scale.astype(np.float32)
        z = (x - self.mean_) / self.scale_
        self.components_ = self._pca(z, min(self.pca_dims, d, n))
        self.reduced_ = (z @ self.components_.T).astype(np.float32)
        self._sq_norms = None
        self._tsne = None

        if self.method == "pca":
            self.embedding_ = self.reduced_[:, :2].copy()
            self.effective_perplexity_ = None
            return self

        self.effective_perplexity_ = self.perplexity
        if self.perplexity > (n - 1) / 3:
            self.effective_perplexity_ = (n - 1) / 3
            warnings.warn(
                f"perplexity {self.perplexity} is too high for {n} states; using "
                f"{self.effective_perplexity_:.1f} ((N - 1) / 3)",
                stacklevel=2,
            )
        with _fit_bar(progress, n, self.n_iter) as callback:
            affinities = self._affinities()
            tsne = self._opentsne(callback)
            with _quiet_opentsne():
                fitted = tsne.fit(self.reduced_.astype(np.float64), affinities=affinities)
        # openTSNE.transform() re-centres the reference map in place on its bounding box; centring
        # here first makes that a no-op, so embedding_ and the accurate path agree.
        fitted -= (fitted.max(0) + fitted.min(0)) / 2
        self._tsne = fitted
        self.embedding_ = np.asarray(fitted, dtype=np.float32).copy()
        return self

    def _pca(self, z: np.ndarray, p: int) -> np.ndarray:
        """Top-``p`` principal axes of centred ``z`` as float32 rows [P, D], signs fixed."""
        n, d = z.shape
        if min(n, d) <= 2000:
            _, _, vt = np.linalg.svd(z.astype(np.float64), full_matrices=False)
            vt = vt[:p]
        else:
            from sklearn.utils.extmath import randomized_svd

            _, _, vt = randomized_svd(z, p, n_iter=5, random_state=self.seed)
        # Singular vectors are defined up to sign; make each row's largest loading positive.
        signs = np.sign(vt[np.arange(len(vt)), np.abs(vt).argmax(1)])
        return (vt * signs[:, None]).astype(np.float32)

    def _affinities(self):
        from openTSNE.affinity import PerplexityBasedNN

        with _quiet_opentsne():
            return PerplexityBasedNN(
                self.reduced_.astype(np.float64),
                perplexity=self.effective_perplexity_,
                n_jobs=self.n_jobs,
                random_state=self.seed,
                verbose=self.verbose,
            )

    def _opentsne(self, callback=None):
        from openTSNE import TSNE

        return TSNE(
            perplexity=self.effective_perplexity_,
            early_exaggeration_iter=EARLY_ITERATIONS,
            n_iter=self.n_iter,
            n_jobs=self.n_jobs,
            random_state=self.seed,
            verbose=self.verbose,
            callbacks=callback,
            callbacks_every_iters=CALLBACK_EVERY,
        )

    @staticmethod
    def _check_point_data(point_data: Mapping | None, n: int) -> dict[str, np.ndarray]:
        out = {}
        for name, arr in (point_data or {}).items():
            arr = np.asarray(arr)
            if arr.dtype == object or arr.ndim != 1 or arr.shape[0] != n:
                raise ValueError(
                    f"point_data[{name!r}] is {arr.dtype} {arr.shape}, "
                    f"expected a numeric array [{n}]"
                )
            out[name] = arr
        return out

    # -- placing new states ------------------------------------------------------------------------

    def _require_fit(self) -> None:
        if self.embedding_ is None:
            raise RuntimeError(
                "this StateEmbedding is not fitted; call fit(features) or StateEmbedding.load(path)"
            )

    def reduce(self, features: np.ndarray) -> np.ndarray:
        """Standardised, PCA-reduced features: float32 [M, P], the space the map was fitted in."""
        self._require_fit()
        x = as_features(features)
        if x.shape[1] != self.mean_.shape[0]:
            raise ValueError(
                f"features have {x.shape[1]} dims but the map was fitted on {self.mean_.shape[0]}; "
                f"use the same layer and pooling ({self.meta.get('layer', 'see meta')})"
            )
        return ((x - self.mean_) / self.scale_) @ self.components_.T

    def transform(
        self, features: np.ndarray, fast: bool = True, batch_size: int = 1024
    ) -> np.ndarray:
        """Map positions float32 [M, 2] of new states' ``features`` [M, D] (the fitted states'
        layer and pooling): by k-NN interpolation (``fast``) or openTSNE's ``transform()``; for
        ``method="pca"`` both are the exact linear projection. ``batch_size``: queries per batch
        on the fast path (bounds memory at batch x N floats)."""
        if not fast and self.method == "tsne":
            return self._transform_accurate(self.reduce(features))
        # One BLAS thread: these products are too small to gain from threads, and on a shared
        # CPU thread contention made single frames several times slower (BENCHMARKS.md).
        with _single_blas_thread():
            z = self.reduce(features)
            if self.method == "pca":
                return z[:, :2].astype(np.float32)
            return self._transform_fast(z, batch_size)

    def _transform_fast(self, z: np.ndarray, batch_size: int) -> np.ndarray:
        ref = self.reduced_
        if self._sq_norms is None:
            self._sq_norms = (ref.astype(np.float64) ** 2).sum(1).astype(np.float32)
        k = min(self.n_neighbors, len(ref))
        out = np.empty((len(z), 2), np.float32)
        for start in range(0, len(z), max(1, batch_size)):
            q = z[start : start + batch_size]
            # Candidates by the expansion |q|^2 - 2 q.r + |r|^2: one matrix product, no [B, N, P]
            # temporary. It loses precision for near-identical points, so the k chosen
            # neighbours' distances are then recomputed directly, in float64.
            d2 = (q * q).sum(1)[:, None] - 2.0 * (q @ ref.T) + self._sq_norms[None, :]
            if k < len(ref):
                idx = np.argpartition(d2, k - 1, axis=1)[:, :k]
            else:
                idx = np.broadcast_to(np.arange(k), d2.shape).copy()
            diff = q[:, None, :].astype(np.float64) - ref[idx].astype(np.float64)
            near_d2 = (diff * diff).sum(-1)
            order = np.argsort(near_d2, axis=1, kind="stable")
            idx = np.take_along_axis(idx, order, axis=1)
            near_d2 = np.take_along_axis(near_d2, order, axis=1)
            weights = _neighbour_weights(near_d2, self.fast_perplexity)
            placed = np.einsum("bk,bkc->bc", weights, self.embedding_[idx].astype(np.float64))
            # A state (near-)identical to one fitted state lands on that state's spot; one
            # identical to several (a frame seen again and again) on the mean of their spots.
            # The kernel alone would also give weight to the nearest other states.
            # "Identical" is relative to the k-th neighbour: equal features can differ by an ulp
            # after the PCA projection.
            if k > 1:
                copy = near_d2 <= 1e-6 * near_d2[:, -1:]
                rows = copy[:, 0] & (near_d2[:, -1] > 0)
                if rows.any():
                    w = copy[rows].astype(np.float64)
                    spots = self.embedding_[idx[rows]].astype(np.float64)
                    placed[rows] = np.einsum("bk,bkc->bc", w / w.sum(1, keepdims=True), spots)
            out[start : start + len(q)] = placed
        return out

    def _transform_accurate(self, z: np.ndarray) -> np.ndarray:
        if self._tsne is None:
            self._tsne = self._rebuild_opentsne()
        with _quiet_opentsne():
            placed = self._tsne.transform(z.astype(np.float64))
        return np.asarray(placed, dtype=np.float32)

    def _rebuild_opentsne(self):
        """openTSNE's reference embedding from stored arrays: new neighbour index, same layout."""
        affinities = self._affinities()
        with _quiet_opentsne():
            return self._opentsne().prepare_initial(
                X=self.reduced_.astype(np.float64),
                affinities=affinities,
                initialization=self.embedding_.astype(np.float64),
            )

    # -- drawing helpers ---------------------------------------------------------------------------

    def bounds(self, pad: float = 0.05) -> tuple[float, float, float, float]:
        """Map extent ``(xmin, xmax, ymin, ymax)``, padded by ``pad`` of the span on each side."""
        self._require_fit()
        lo, hi = self.embedding_.min(0), self.embedding_.max(0)
        span = np.maximum(hi - lo, 1e-9)
        lo, hi = lo - pad * span, hi + pad * span
        return float(lo[0]), float(hi[0]), float(lo[1]), float(hi[1])

    def to_unit(self, xy: np.ndarray, pad: float = 0.05) -> np.ndarray:
        """Map positions [M, 2] -> float32 [M, 2] in [0, 1] over :meth:`bounds` (y up)."""
        x0, x1, y0, y1 = self.bounds(pad)
        xy = np.asarray(xy, dtype=np.float32)
        return np.stack([(xy[:, 0] - x0) / (x1 - x0), (xy[:, 1] - y0) / (y1 - y0)], axis=1)

    def background(self, values: np.ndarray | None = None) -> dict[str, Any]:
        """What a panel draws behind a trail: ``xy`` float32 [N, 2] (the fitted map), ``values``
        [N] or None (as given, else the stored ``point_data["value"]``) and ``bounds``."""
        self._require_fit()
        if values is None:
            values = self.point_data.get("value")
        elif np.asarray(values).shape != (len(self.embedding_),):
            raise ValueError(
                f"values must be [{len(self.embedding_)}] (one per fitted state), "
                f"got {np.shape(values)}"
            )
        return {"xy": self.embedding_, "values": values, "bounds": self.bounds()}

    # -- persistence -------------------------------------------------------------------------------

    def save(self, path: str | os.PathLike) -> Path:
        """Write the fitted map to ``path`` (an ``.npz`` of arrays and JSON; atomic, no pickle)."""
        self._require_fit()
        header = {
            "format": FORMAT,
            "params": {name: getattr(self, name) for name in _PARAMS.split()},
            "effective_perplexity": self.effective_perplexity_,
            "rlviz_version": rlviz_version(),
            "meta": self.meta,
        }
        arrays = {
            "embedding": self.embedding_,
            "reduced": self.reduced_,
            "mean": self.mean_,
            "scale": self.scale_,
            "components": self.components_,
            "header": np.array(json.dumps(header)),
        }
        arrays.update({_POINT_PREFIX + k: v for k, v in self.point_data.items()})
        return atomic_savez(path, arrays)

    @classmethod
    def load(cls, path: str | os.PathLike) -> StateEmbedding:
        """Read a map written by :meth:`save`, checking its entries (``transform(fast=False)``
        rebuilds openTSNE's neighbour index on first use)."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no state embedding at {path}; fit one and call .save(path)")
        arrays = read_npz(path, "state embedding")
        needed = ["embedding", "reduced", "mean", "scale", "components", "header"]
        missing = [k for k in needed if k not in arrays]
        if missing:
            raise ValueError(
                f"{path}: missing entries {missing}; not a StateEmbedding file (expected {needed})"
            )
        try:
            header = json.loads(str(arrays["header"]))
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: 'header' is not valid JSON ({exc})") from None
        if header.get("format") != FORMAT:
            raise ValueError(f"{path}: format {header.get('format')!r}, expected {FORMAT!r}")
        emb, red = arrays["embedding"], arrays["reduced"]
        mean, scale, comp = arrays["mean"], arrays["scale"], arrays["components"]
        n, d = emb.shape[0], mean.shape[0] if mean.ndim == 1 else -1
        p = red.shape[1] if red.ndim == 2 else -1
        checks = [
            ("embedding", emb, emb.ndim == 2 and emb.shape[1] == 2, "[N, 2]"),
            ("reduced", red, red.ndim == 2 and red.shape[0] == n, f"[N={n}, P]"),
            ("mean", mean, mean.ndim == 1, "[D]"),
            ("scale", scale, scale.shape == (d,), f"[D={d}]"),
            ("components", comp, comp.shape == (p, d), f"[P={p}, D={d}]"),
        ]
        for name, arr, ok, expected in checks:
            if not ok or arr.dtype.kind != "f":
                raise ValueError(
                    f"{path}: {name!r} is {arr.dtype} {arr.shape}, expected float {expected}"
                )
        obj = cls(**header["params"])
        obj.embedding_ = emb.astype(np.float32)
        obj.reduced_ = red.astype(np.float32)
        obj.mean_, obj.scale_, obj.components_ = mean, scale, comp
        obj.effective_perplexity_ = header.get("effective_perplexity")
        obj.meta = header.get("meta", {})
        points = {
            k[len(_POINT_PREFIX) :]: v for k, v in arrays.items() if k.startswith(_POINT_PREFIX)
        }
        obj.point_data = cls._check_point_data(points, n)
        return obj


def _neighbour_weights(d2: np.ndarray, perplexity: float | None, iters: int = 64) -> np.ndarray:
    """Interpolation weights [B, k] (rows sum to 1) from squared distances [B, k], sorted ascending.

    With ``perplexity``: a Gaussian kernel whose width is set per row (bisection) so the weights
    have that perplexity, as t-SNE sets a point's affinities. A fixed power of the distance does
    not adapt: in high dimensions the k nearest distances differ by a few percent, so inverse
    distance weights come out nearly uniform. ``None``: plain inverse squared distance weights.
    """
    if perplexity is None:
        weights = 1.0 / np.maximum(d2, 1e-12)
        return weights / weights.sum(1, keepdims=True)
    rel = d2 - d2[:, :1]  # shift so the nearest has weight 1: exp() cannot underflow to all-zero
    target = np.log(min(perplexity, d2.shape[1]))
    beta = 1.0 / np.maximum(rel.mean(1), 1e-12)
    lo, hi = np.zeros(len(d2)), np.full(len(d2), np.inf)
    for _ in range(iters):
        weights = np.exp(-rel * beta[:, None])
        total = weights.sum(1)
        # Entropy of p = w / sum(w): log(sum w) + beta * E_p[rel].
        entropy = np.log(total) + beta * (weights * rel).sum(1) / total
        if np.all(np.abs(entropy - target) < 1e-5):
            break
        too_flat = entropy > target
        lo = np.where(too_flat, beta, lo)
        hi = np.where(too_flat, hi, beta)
        beta = np.where(np.isinf(hi), beta * 2.0, (lo + hi) / 2.0)
    weights = np.exp(-rel * beta[:, None])
    return weights / weights.sum(1, keepdims=True)
