"""One explored episode as the page reads it: scalars as JSON-able lists, frames and maps as
uint8 sprite sheets.

Every map comes from :func:`rlviz.explain.attribute_episode`, the loop over an episode that the
video engine uses too (:func:`rlviz.explain.explain_rollout`: any target, per frame or not, a
recurrent policy's states). Maps are normalised with the video engine's :func:`normalize_maps`
and quantised to uint8 at once, so an episode holds its maps as compressed PNG bytes, not float
arrays.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from rlviz.explorer import scalars
from rlviz.explorer.sprites import quantize
from rlviz.policy import PolicyAdapter
from rlviz.rollout import Rollout
from rlviz.spool import Spool
from rlviz.targets import ActionMean, TakenAction, Value

#: Targets the explorer can explain: the action taken, V(s), and every action (``actions``).
TARGETS = ("taken", "value", "actions")


@dataclass
class EpisodeData:
    """What the page needs of one episode.

    Attributes:
        index: the episode's number in the report.
        record: JSON-able scalars and events (``t``-indexed lists).
        frames: uint8 [T, H, W, 3], the newest frame of each observation (for the sheet).
        stack: uint8 [T, K, H, W, 3] for a frame-stacked policy, else None.
        maps: key ``"method|target"`` -> uint8 [T, H, W] (signed maps: 128 is 0).
        signed: key -> whether that map is signed.
        stack_maps: target (``"taken"``, ``"value"``) -> uint8 [T, K, h, w], one map per stack
            frame (see :func:`rlviz.explorer.stack.stack_maps`), empty without a stack.
    """

    index: int
    record: dict
    frames: np.ndarray
    stack: np.ndarray | None = None
    maps: dict[str, np.ndarray] = field(default_factory=dict)
    signed: dict[str, bool] = field(default_factory=dict)
    stack_maps: dict[str, np.ndarray] = field(default_factory=dict)


class ShownFrames:
    """An episode's observations as the page shows them, uint8 [T, K, H, W, 3] (``newest()``:
    [T, H, W, 3]), drawn from ``obs`` when read: an episode's display frames (~4x its
    observations for an RGB stack) are never all held; a sheet reads the steps it shows."""

    def __init__(self, obs, layout, newest_only: bool = False) -> None:
        self.obs, self.layout, self.newest_only = obs, layout, newest_only
        one = layout.display_frames(np.asarray(obs[:1]))[0]  # [K, H, W, 3]
        self.shape = (len(obs), *(one.shape[1:] if newest_only else one.shape))
        self.dtype = np.dtype(np.uint8)
        self.ndim = len(self.shape)

    def newest(self) -> ShownFrames:
        """The newest frame of each step, [T, H, W, 3]."""
        return ShownFrames(self.obs, self.layout, newest_only=True)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, rows):
        if not isinstance(rows, slice):
            return np.asarray(self)[rows]
        shown = self.layout.display_frames(np.asarray(self.obs[rows]))
        return shown[:, -1] if self.newest_only else shown

    def __array__(self, dtype=None, copy=None):
        whole = self[0 : len(self)]
        return whole if dtype is None else whole.astype(dtype, copy=False)


def fit_maps(maps: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Maps [T, h, w] at the stored map size ``size``: block means when ``size`` divides the
    maps evenly (keeps a pixel map's total, no aliasing), else bilinear."""
    maps = np.asarray(maps, np.float32)
    h, w = maps.shape[-2:]
    if (h, w) == tuple(size):
        return maps
    if h % size[0] == 0 and w % size[1] == 0:
        fy, fx = h // size[0], w // size[1]
        return maps.reshape(len(maps), size[0], fy, size[1], fx).mean((2, 4))
    from rlviz.maps import upsample

    return np.asarray(upsample(maps, size))


def map_size(frame: tuple[int, int], factor: int) -> tuple[int, int]:
    """The stored map size for frames of ``frame`` (H, W): each side divided by ``factor``."""
    return max(1, frame[0] // factor), max(1, frame[1] // factor)


def scaled_maps(raw: np.ndarray, method: str, size: tuple[int, int]) -> tuple[np.ndarray, bool]:
    """Raw maps [T, ..., H, W] on one episode scale, at ``size``, quantised to uint8."""
    from rlviz.maps import normalize_maps
    from rlviz.methods import is_signed

    sign = is_signed(method)
    # one scale over the whole episode, so extra axes (actions, frames) can fold into H
    scaled, _ = normalize_maps(raw.reshape(len(raw), -1, raw.shape[-1]), "episode", sign)
    fitted = fit_maps(scaled.reshape(-1, *raw.shape[-2:]), size)
    return quantize(fitted.reshape(*raw.shape[:-2], *size), sign), sign


@dataclass(frozen=True)
class MapRow:
    """Maps sharing one colour scale: ``method`` for each of ``targets`` (one job each, stacked on
    axis 1 when several, e.g. every action), or one per-frame job ([T, K, H, W])."""

    method: str
    targets: tuple
    per_frame: bool = False


def streamed_maps(
    adapter: PolicyAdapter,
    rollout: Rollout,
    rows: dict[str, MapRow],
    size: tuple[int, int],
    *,
    layer: str | None,
    batch_size: int,
    keep: Spool | None = None,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Each row's maps on one episode scale, at ``size``, quantised to uint8 ([T, h, w]; [T, N,
    h, w] for several targets or per frame), chunk by chunk: the episode is explained once
    (:func:`rlviz.explain.explain_rollout`), raw maps kept on disk while each scale is gathered
    exactly, then scaled, fitted and quantised a chunk at a time (the numbers of
    :func:`scaled_maps` on the whole episode, without its raw maps in memory). With ``keep``
    the quantised maps go to arrays on disk there too (:class:`rlviz.spool.StepArray`), so a
    long episode's maps are never all in memory.

    Returns:
        (row -> uint8 maps, per-frame row -> frame shares float32 [T, K]).
    """
    from rlviz.explain import MapJob, episode_chunk, explain_rollout, frame_share
    from rlviz.maps import EpisodeScale, scale_block
    from rlviz.methods import is_signed

    n = len(rollout)
    jobs = {
        row: [MapJob(f"{row}#{j}", r.method, tg, r.per_frame) for j, tg in enumerate(r.targets)]
        for row, r in rows.items()
    }
    signed = {row: is_signed(r.method) for row, r in rows.items()}
    scales = {row: EpisodeScale(n * len(jobs[row]), signed[row]) for row in rows}
    shares: dict[str, list] = {row: [] for row, r in rows.items() if r.per_frame}
    out: dict[str, np.ndarray] = {}
    with Spool() as store:
        raw = {
            job.key: store.array(job.key, episode_chunk(batch_size))
            for row_jobs in jobs.values()
            for job in row_jobs
        }
        every = [job for row_jobs in jobs.values() for job in row_jobs]
        for _, part in explain_rollout(
            adapter,
            rollout.obs,
            every,
            layer=layer,
            batch_size=batch_size,
            states=rollout_states(rollout),
        ):
            for row, row_jobs in jobs.items():
                for job in row_jobs:
                    scales[row].update(part[job.key])
                if row in shares:
                    shares[row].append(frame_share(part[row_jobs[0].key]))
            for key, block in part.items():
                raw[key].extend(block)
        for row, row_jobs in jobs.items():
            high = scales[row].high
            for parts in zip(*(raw[job.key].chunks() for job in row_jobs), strict=True):
                blocks = [block for _, block in parts]
                block = np.stack(blocks, axis=1) if len(blocks) > 1 else blocks[0]
                m = len(block)
                scaled = scale_block(
                    block.reshape(m, -1, block.shape[-1]), "episode", signed[row], high
                )
                fitted = fit_maps(scaled.reshape(-1, *block.shape[-2:]), size)
                quantised = quantize(fitted.reshape(*block.shape[:-2], *size), signed[row])
                if keep is not None:  # blocks come in step order
                    out.setdefault(row, keep.array(keep.unique("maps"))).extend(quantised)
                    continue
                if row not in out:
                    out[row] = np.empty((n, *quantised.shape[1:]), np.uint8)
                first = parts[0][0]
                out[row][first : first + m] = quantised
            for job in row_jobs:
                raw[job.key].discard()
    return out, {row: np.concatenate(parts) for row, parts in shares.items()}


def episode_maps(
    adapter: PolicyAdapter,
    rollout: Rollout,
    methods: Sequence[str],
    targets: Sequence[str],
    *,
    per_action: str | None,
    layer: str | None,
    batch_size: int,
    size: tuple[int, int],
    keep: Spool | None = None,
) -> tuple[dict[str, np.ndarray], dict[str, bool]]:
    """Quantised maps of one episode: ``"method|taken"``, ``"method|value"`` for each method and
    ``"per_action|a{k}"`` for each action k (log pi(k|s_t), all actions on one scale).

    ``size`` is the stored map size (H, W) (see :func:`map_size`); each map is normalised over
    the episode (one colour scale), the page can rescale per frame. A recurrent policy is
    explained with the state it had at each step (``rollout.states``). With ``keep`` the maps
    are arrays on disk there (see :func:`streamed_maps`).

    Returns:
        (maps ``"method|target"`` -> uint8 [T, H, W], signed flags).
    """
    from rlviz.methods import is_signed

    rows: dict[str, MapRow] = {}
    if "taken" in targets:
        rows.update(
            {f"{name}|taken": MapRow(name, (TakenAction(rollout.actions),)) for name in methods}
        )
    if "value" in targets and rollout.values is not None:
        rows.update({f"{name}|value": MapRow(name, (Value(),)) for name in methods})
    n_actions = rollout.action_count
    if "actions" in targets and per_action:
        n = len(rollout)
        # a Box policy's "actions" are its dimensions: each one's mean action
        per_target = ActionMean if rollout.continuous else (lambda k: TakenAction(np.full(n, k)))
        # [T, A, H, W]: one scale over every action
        rows[_ACTIONS] = MapRow(per_action, tuple(per_target(k) for k in range(n_actions)))
    quantised, _ = streamed_maps(
        adapter, rollout, rows, size, layer=layer, batch_size=batch_size, keep=keep
    )
    maps = {key: m for key, m in quantised.items() if key != _ACTIONS}
    signed = {key: is_signed(rows[key].method) for key in maps}
    if _ACTIONS in quantised:
        every = quantised[_ACTIONS]  # [T, A, h, w]
        if keep is None:
            one = [every[:, k] for k in range(n_actions)]
        else:  # one array on disk per action, split a chunk at a time
            one = [keep.array(keep.unique("maps")) for _ in range(n_actions)]
            for _, block in every.chunks():
                for k, array in enumerate(one):
                    array.extend(block[:, k])
            every.discard()
        for k in range(n_actions):
            maps[f"{per_action}|a{k}"] = one[k]
            signed[f"{per_action}|a{k}"] = is_signed(per_action)
    return maps, signed


#: The row of per-action maps in :func:`episode_maps` (one scale over every action).
_ACTIONS = "actions:"


def _entropy(rollout: Rollout) -> np.ndarray:
    """Per-step policy entropy in nats: of pi's probabilities, or a Box policy's Gaussian
    (sum over dimensions of log std + log(2 pi e) / 2; 0 for a deterministic one)."""
    if not rollout.continuous:
        return scalars.entropy(rollout.probs)
    if rollout.action_std is None:
        return np.zeros(len(rollout), np.float32)
    log_std = np.log(np.asarray(rollout.action_std, np.float64))
    return (log_std + 0.5 * np.log(2 * np.pi * np.e)).sum(-1).astype(np.float32)


def rollout_states(rollout: Rollout) -> tuple | None:
    """A recurrent policy's state entering each step of ``rollout``, or None."""
    return getattr(rollout, "states", None)


def episode_record(
    rollout: Rollout,
    action_names: Sequence[str],
    *,
    gamma: float,
    lam: float,
    memory: dict | None = None,
    meta: dict | None = None,
) -> dict:
    """The JSON-able per-step data of one episode: actions, pi, V, rewards, entropy, GAE
    advantages and returns, events (from the env's info), and ``memory`` (name -> [T] per-step
    memory reliance, see :func:`rlviz.explorer.stack.memory_record`) when given."""
    n = len(rollout)
    values = rollout.values if rollout.values is not None else None
    record = {
        "T": n,
        "actions": (
            np.round(rollout.actions, 4).tolist()
            if rollout.continuous
            else rollout.actions.astype(int).tolist()
        ),
        "probs": np.round(rollout.probs, 4).tolist(),
        "rewards": np.round(rollout.rewards, 4).tolist(),
        "entropy": np.round(_entropy(rollout), 4).tolist(),
        **(
            {
                "action_mean": np.round(rollout.action_mean, 4).tolist(),
                "action_std": None
                if rollout.action_std is None
                else np.round(rollout.action_std, 4).tolist(),
            }
            if rollout.continuous
            else {}
        ),
        "success": bool(rollout.success),
        "return": round(float(rollout.episode_return), 4),
        "terminated": bool(rollout.terminated),
        "truncated": bool(rollout.truncated),
        "seed": rollout.seed,
    }
    if values is not None:
        adv, ret = scalars.gae(
            rollout.rewards, values, gamma=gamma, lam=lam, terminated=rollout.terminated
        )
        record["values"] = np.round(values, 4).tolist()
        record["advantages"] = np.round(adv, 4).tolist()
        record["returns"] = np.round(ret, 4).tolist()
    blocked = scalars.blocked_steps(rollout.actions, rollout.infos.get("agent_pos"), action_names)
    from rlviz.video.events import episode_events

    record["events"] = scalars.structured_events(episode_events(rollout, action_names), blocked)
    if "box_visible" in rollout.infos:
        record["visible"] = np.asarray(rollout.infos["box_visible"]).reshape(n).astype(int).tolist()
    if memory:
        record["memory"] = {
            k: np.round(np.asarray(v, np.float64), 5).tolist() for k, v in memory.items()
        }
    record.update(meta or {})
    return record
