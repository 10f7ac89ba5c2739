"""State datasets: every state an agent visited, with what one layer of a network made of it.

A :class:`StateDataset` is the table behind a t-SNE map (Zahavy et al. 2016,
https://arxiv.org/abs/1602.02658): one row per state with the observation, a layer's features, what
the network said (action probabilities, value), what happened (action, reward, step, episode,
time to goal, success) and the environment's ground truth (box visible, poses). It is saved as a
plain ``.npz`` (no pickle) with a JSON metadata entry, and loading checks every array before use.
"""

from __future__ import annotations

import json
import os
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rlviz.hooks import POOLS, capture, layer_activations, pool_activation
from rlviz.io import atomic_savez
from rlviz.layout import ObservationLayout, parse_layout
from rlviz.policy import PolicyAdapter
from rlviz.rollout import Rollout

# Infos with more values than this per state (masks, images) are only kept when named explicitly.
SMALL_INFO = 64
_INFO_PREFIX = "info."
FORMAT = "rlviz.StateDataset/1"


def rlviz_version() -> str:
    """The installed rlviz version, stored with saved files (read from the package metadata, so
    that this module need not import the ``rlviz`` package it is part of)."""
    try:
        return metadata.version("rlviz")
    except metadata.PackageNotFoundError:  # running from a source tree that is not installed
        return "unknown"


def read_npz(path: Path, what: str) -> dict[str, np.ndarray]:
    """name -> array of the ``.npz`` at ``path``, refusing anything that would need unpickling
    (``ValueError`` saying which kind of file, ``what``, was expected)."""
    if not zipfile.is_zipfile(path):
        raise ValueError(f"{path}: not a readable .npz {what} (not a zip archive)")
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except ValueError as exc:  # object arrays need pickle: not a file rlviz wrote
        raise ValueError(
            f"{path}: holds data that cannot be read without unpickling ({exc}); refusing"
        ) from None
    except Exception as exc:  # corrupt archive members
        raise ValueError(
            f"{path}: not a readable .npz {what} ({type(exc).__name__}: {exc})"
        ) from None


def _forward_batches(
    adapter: PolicyAdapter, obs: np.ndarray, layer: str, pool: str, batch_size: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Features [N, D], probs [N, A] and values [N] (NaN without critic), all float32."""
    if pool not in POOLS:
        raise ValueError(f"pool={pool!r} is not one of {POOLS}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    feats, probs, values = [], [], []
    with torch.no_grad(), capture(adapter.model, layer) as acts:
        for start in range(0, len(obs), batch_size):
            out = adapter.outputs(adapter.preprocess(obs[start : start + batch_size]))
            feats.append(pool_activation(acts[layer], pool).float().cpu().numpy())
            probs.append(out.probs.float().cpu().numpy())
            no_value = np.full(out.logits.shape[0], np.nan)
            values.append(no_value if out.value is None else out.value.float().cpu().numpy())
    return tuple(np.concatenate(parts).astype(np.float32) for parts in (feats, probs, values))


def layer_features(
    adapter: PolicyAdapter,
    obs: np.ndarray,
    layer: str,
    pool: str = "flatten",
    batch_size: int = 256,
) -> np.ndarray:
    """A layer's output for raw observations, as a state map reads it (no grad, in batches).

    Use the map's own settings to place an episode on a saved map::

        emb = StateEmbedding.load("runs/tsne/embedding.npz")
        feats = layer_features(adapter, rollout.obs, emb.meta["layer"], pool=emb.meta["pool"])
        xy = emb.transform(feats)  # [T, 2]

    Returns float32 [N, D]: flattened (or, ``pool="avg"``, channel-averaged) layer outputs.
    """
    if pool not in POOLS:
        raise ValueError(f"pool={pool!r} is not one of {POOLS}")
    obs = np.asarray(obs)
    if obs.ndim == 3:
        obs = obs[None]
    acts = layer_activations(adapter, obs, layer, batch_size=batch_size, pool=pool)
    return acts[layer].numpy()


def _success_step(rollout: Rollout) -> int | None:
    """Index t of the step whose action reached the goal, or None for a failed episode."""
    if "success" in rollout.infos:
        hits = np.flatnonzero(np.asarray(rollout.infos["success"]).reshape(len(rollout), -1).any(1))
        return int(hits[0]) if hits.size else None
    return len(rollout) - 1 if rollout.success else None


def _shared_info_keys(rollouts: Sequence[Rollout], info_keys: Sequence[str] | None) -> list[str]:
    """Info keys present in every rollout as numeric arrays of one per-state shape."""
    if info_keys is not None:
        for key in info_keys:
            missing = [i for i, r in enumerate(rollouts) if key not in r.infos]
            if missing:
                have = sorted(rollouts[missing[0]].infos)
                raise ValueError(
                    f"info key {key!r} is missing from rollout(s) {missing[:5]}; they have {have}. "
                    "Collect with an env that reports it (BoxReach: ground_truth=True) or drop it"
                )
        candidates = list(info_keys)
    else:
        candidates = sorted(rollouts[0].infos)
    kept = []
    for key in candidates:
        arrays = [np.asarray(r.infos.get(key)) for r in rollouts if key in r.infos]
        uniform = len(arrays) == len(rollouts) and all(
            a.dtype != object and a.dtype.kind in "biuf" and a.shape[1:] == arrays[0].shape[1:]
            for a in arrays
        )
        if not uniform:
            if info_keys is not None:
                raise ValueError(
                    f"info key {key!r} is not a numeric array of one shape per state in every "
                    "rollout (ragged or object data); it cannot be stored in a StateDataset"
                )
            continue
        if info_keys is None and int(np.prod(arrays[0].shape[1:])) > SMALL_INFO:
            continue  # masks and images only on request: they dominate the file size
        kept.append(key)
    return kept


@dataclass
class StateDataset:
    """One row per visited state. ``N`` states, features of ``D`` dims, ``A`` actions.

    Attributes:
        obs: uint8 [N, H, W, C], what the policy saw; a stack in its layout ([N, K, H, W, C],
            [N, H, W, K*C], ...) for a policy that sees K frames (``meta["layout"]`` says which).
        features: float32 [N, D], the chosen layer's output (flattened or average-pooled).
        probs: float32 [N, A], pi(.|s) of the mapped network (same forward pass as ``features``).
        actions: int64 [N], the action taken in the rollout.
        values: float32 [N], V(s) of the mapped network (NaN for a policy without critic).
        rewards: float32 [N], reward received after the action.
        steps: int64 [N], t within the episode.
        episodes: int64 [N], index of the episode (rollout) the state came from.
        time_to_goal: float32 [N], actions left until the goal was reached, counting a_t (1 on the
            step that reached it); NaN when the episode failed.
        success: bool [N], whether the state's episode reached the goal.
        info: ground truth per state, name -> [N, ...] (``box_visible``, ``agent_pos`` ...).
        meta: JSON-able metadata: layer, env id, checkpoint, rlviz version, pool, action names.
    """

    obs: np.ndarray
    features: np.ndarray
    probs: np.ndarray
    actions: np.ndarray
    values: np.ndarray
    rewards: np.ndarray
    steps: np.ndarray
    episodes: np.ndarray
    time_to_goal: np.ndarray
    success: np.ndarray
    info: dict[str, np.ndarray] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _validate(self._arrays(), source="StateDataset")

    def __len__(self) -> int:
        return int(self.obs.shape[0])

    @property
    def action_names(self) -> tuple[str, ...]:
        """Labels of the action axis (from metadata, else ``a0, a1, ...``)."""
        names = self.meta.get("action_names")
        if names and len(names) == self.probs.shape[1]:
            return tuple(names)
        return tuple(f"a{k}" for k in range(self.probs.shape[1]))

    @property
    def layout(self) -> ObservationLayout:
        """How ``obs`` holds its frames: ``meta["layout"]``, else read off the shape."""
        text = self.meta.get("layout")
        if text:
            return parse_layout(text)
        return ObservationLayout.from_shape(self.obs.shape[1:], batched=False)

    def newest_frames(self) -> np.ndarray:
        """The newest frame of every state as RGB for drawing, uint8 [N, H, W, 3]."""
        return self.layout.newest_frame(self.obs)

    # -- construction ---------------------------------------------------------------------------

    @classmethod
    def from_rollouts(
        cls,
        rollouts: Sequence[Rollout],
        adapter: PolicyAdapter,
        layer: str,
        *,
        batch_size: int = 256,
        pool: str = "flatten",
        info_keys: Sequence[str] | None = None,
        meta: Mapping[str, Any] | None = None,
    ) -> StateDataset:
        """A dataset of ``rollouts`` (any policy may have played them) with the features of
        ``adapter``'s layer ``layer`` (a dotted name), computed in batches of ``batch_size`` under
        ``torch.no_grad`` in whatever train/eval mode the caller left the model.

        ``pool``: ``"flatten"`` keeps every unit of a conv map (where things are matters to a
        policy); ``"avg"`` global-average-pools [B, C, h, w] to [B, C]. ``info_keys``: infos to
        keep; default every numeric info of at most ``SMALL_INFO`` values per state (flags,
        poses), so masks only when named. ``meta``: extra metadata (``env_id``, ...), as JSON.
        """
        rollouts = list(rollouts)
        if not rollouts:
            raise ValueError("from_rollouts needs at least one rollout; got an empty list")
        shapes = {tuple(r.obs.shape[1:]) for r in rollouts}
        if len(shapes) != 1:
            raise ValueError(
                f"rollouts have observations of different shapes {sorted(shapes)}; "
                "a dataset needs one shape (collect all episodes from the same env)"
            )
        keys = _shared_info_keys(rollouts, info_keys)
        obs = np.concatenate([np.asarray(r.obs) for r in rollouts])
        if obs.dtype != np.uint8:
            raise ValueError(f"rollout observations must be uint8 frames, got dtype {obs.dtype}")

        layout = adapter.layout_for(obs)
        layout.batch(obs[:1])  # a stack that does not fit the layout fails here, not in the model
        features, probs, values = _forward_batches(adapter, obs, layer, pool, batch_size)

        steps, episodes, ttg, success = [], [], [], []
        for e, r in enumerate(rollouts):
            t = np.arange(len(r))
            steps.append(t)
            episodes.append(np.full(len(r), e))
            hit = _success_step(r)
            ttg.append(np.full(len(r), np.nan) if hit is None else (hit + 1 - t).astype(float))
            success.append(np.full(len(r), hit is not None))
        ttg_all = np.concatenate(ttg).astype(np.float32)
        # States recorded after the goal step (rare; an env that keeps going) have no goal ahead.
        ttg_all[ttg_all <= 0] = np.nan

        layer_module = dict(adapter.model.named_modules())[layer]
        info_meta = {
            "layer": layer,
            "layer_type": type(layer_module).__name__,
            "pool": pool,
            "rlviz_version": rlviz_version(),
            "action_names": list(adapter.action_names) if adapter.action_names else None,
            "episode_seeds": [r.seed for r in rollouts],
            "layout": layout.to_text(),
            "env_id": None,
            "checkpoint": None,
        }
        info_meta.update(dict(meta or {}))
        return cls(
            obs=obs,
            features=features,
            probs=probs,
            actions=np.concatenate([np.asarray(r.actions) for r in rollouts]).astype(np.int64),
            values=values,
            rewards=np.concatenate([np.asarray(r.rewards) for r in rollouts]).astype(np.float32),
            steps=np.concatenate(steps).astype(np.int64),
            episodes=np.concatenate(episodes).astype(np.int64),
            time_to_goal=ttg_all,
            success=np.concatenate(success).astype(bool),
            info={k: np.concatenate([np.asarray(r.infos[k]) for r in rollouts]) for k in keys},
            meta=info_meta,
        )

    # -- selection ------------------------------------------------------------------------------

    def subset(self, index: slice | np.ndarray | Sequence[int]) -> StateDataset:
        """The rows ``index`` (slice, integer indices or boolean mask) as a new dataset."""
        if not isinstance(index, slice):
            index = np.asarray(index)
        arrays = {k: v[index] for k, v in self._arrays().items()}
        info = _pop_info(arrays)
        return StateDataset(**arrays, info=info, meta=dict(self.meta))

    # -- persistence ----------------------------------------------------------------------------

    def _arrays(self) -> dict[str, np.ndarray]:
        arrays = {name: getattr(self, name) for name in _FIELDS}
        arrays.update({_INFO_PREFIX + k: np.asarray(v) for k, v in self.info.items()})
        return arrays

    def save(self, path: str | os.PathLike) -> Path:
        """Write the dataset to ``path`` (compressed ``.npz``, atomic); returns the path."""
        meta = {**self.meta, "format": FORMAT}
        try:
            meta_json = json.dumps(meta)
        except TypeError as exc:
            raise TypeError(f"dataset metadata must be JSON-serialisable: {exc}") from None
        return atomic_savez(path, {**self._arrays(), "meta": np.array(meta_json)})

    @classmethod
    def load(cls, path: str | os.PathLike) -> StateDataset:
        """Read a dataset written by :meth:`save`, validating keys, shapes and dtypes (a
        ``ValueError`` names the offending entry of a file that is not one)."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(
                f"no state dataset at {path}; create one with `rlviz tsne` or StateDataset.save"
            )
        arrays = read_npz(path, "state dataset")
        if "meta" not in arrays:
            raise ValueError(
                f"{path}: missing the 'meta' entry; not a StateDataset file "
                "(re-save it with StateDataset.save)"
            )
        try:
            meta = json.loads(str(arrays.pop("meta")))
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: 'meta' is not valid JSON ({exc})") from None
        found = meta.get("format") if isinstance(meta, dict) else meta
        if not isinstance(meta, dict) or found != FORMAT:
            raise ValueError(f"{path}: metadata format is {found!r}, expected {FORMAT!r}")
        _validate(arrays, source=str(path))
        info = _pop_info(arrays)
        unknown = sorted(set(arrays) - set(_FIELDS))
        if unknown:
            raise ValueError(
                f"{path}: unexpected entries {unknown}; expected {list(_FIELDS)} and info.*"
            )
        meta.pop("format")
        return cls(**{k: arrays[k] for k in _FIELDS}, info=info, meta=meta)


def _pop_info(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Take the ``info.*`` entries out of ``arrays``, by their names without the prefix."""
    keys = [k for k in arrays if k.startswith(_INFO_PREFIX)]
    return {k[len(_INFO_PREFIX) :]: arrays.pop(k) for k in keys}


# name -> (allowed dtype kinds, ndim, description of the expected shape)
_FIELDS: dict[str, tuple[str, int, str]] = {
    "obs": ("u", 4, "uint8 [N, H, W, C] (or a stack: [N, K, H, W, C], [N, K, H, W], ...)"),
    "features": ("f", 2, "float [N, D]"),
    "probs": ("f", 2, "float [N, A]"),
    "actions": ("iu", 1, "int [N]"),
    "values": ("f", 1, "float [N]"),
    "rewards": ("f", 1, "float [N]"),
    "steps": ("iu", 1, "int [N]"),
    "episodes": ("iu", 1, "int [N]"),
    "time_to_goal": ("f", 1, "float [N]"),
    "success": ("b", 1, "bool [N]"),
}


def _validate(arrays: Mapping[str, np.ndarray], source: str) -> None:
    """Raise ValueError naming the first entry whose presence, dtype or shape is wrong."""
    missing = [k for k in _FIELDS if k not in arrays]
    if missing:
        raise ValueError(
            f"{source}: missing entries {missing}; a state dataset needs {list(_FIELDS)}"
        )
    n = np.asarray(arrays["obs"]).shape[0] if np.asarray(arrays["obs"]).ndim else None
    for name, (kinds, ndim, expected) in _FIELDS.items():
        arr = np.asarray(arrays[name])
        # observations are frames [N, H, W, C] or stacks of any layout: [N, H, W] .. [N, K, H, W, C]
        ndim_ok = arr.ndim in (3, 4, 5) if name == "obs" else arr.ndim == ndim
        if arr.dtype.kind not in kinds or not ndim_ok or (name == "obs" and arr.dtype != np.uint8):
            raise ValueError(
                f"{source}: {name!r} is {arr.dtype} {tuple(arr.shape)}, expected {expected}"
            )
        if arr.shape[0] != n:
            raise ValueError(
                f"{source}: {name!r} has {arr.shape[0]} rows but 'obs' has {n} states; "
                f"all entries need N = {n}"
            )
    for name, arr in arrays.items():
        if name.startswith(_INFO_PREFIX):
            arr = np.asarray(arr)
            if arr.dtype == object or arr.ndim == 0 or arr.shape[0] != n:
                raise ValueError(
                    f"{source}: {name!r} is {arr.dtype} {tuple(arr.shape)}, "
                    f"expected a numeric array [N = {n}, ...]"
                )
    probs = np.asarray(arrays["probs"])
    if n and not np.allclose(probs.sum(1), 1.0, atol=1e-3):
        raise ValueError(
            f"{source}: 'probs' rows do not sum to 1 (first sums {probs.sum(1)[:3]}); "
            "expected pi(.|s)"
        )
    actions = np.asarray(arrays["actions"])
    if n and (actions.min() < 0 or actions.max() >= probs.shape[1]):
        raise ValueError(
            f"{source}: 'actions' range {actions.min()}..{actions.max()} "
            f"outside 0..{probs.shape[1] - 1}"
        )
    if not np.isfinite(np.asarray(arrays["features"])).all():
        raise ValueError(
            f"{source}: 'features' contains NaN or inf; the layer's output must be finite"
        )
