"""One explored episode as the page reads it: scalars as JSON-able lists, frames and maps as
uint8 sprite sheets.

Attribution comes from the video engine's :func:`explain_episode` (maps of the taken action,
per-action maps), plus the value target; everything is quantised to uint8 at once, so an
episode holds its maps as compressed PNG bytes, not float arrays.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from rlviz.explain import explain
from rlviz.explorer import scalars
from rlviz.explorer.sprites import data_url, png_bytes, quantize, sheet
from rlviz.policy import PolicyAdapter
from rlviz.rollout import Rollout
from rlviz.targets import TakenAction, Value

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
    """

    index: int
    record: dict
    frames: np.ndarray
    stack: np.ndarray | None = None
    maps: dict[str, np.ndarray] = field(default_factory=dict)
    signed: dict[str, bool] = field(default_factory=dict)

    def map_urls(self, cols: int) -> dict[str, str]:
        """Each map's sprite sheet as a PNG data URL."""
        return {key: data_url(png_bytes(sheet(m, cols))) for key, m in self.maps.items()}


def _attribute(adapter, obs, method: str, target, layer, batch: int) -> np.ndarray:
    """Raw maps [T, H, W] of ``method`` for a sample-independent ``target``, in batches."""
    parts = [
        explain(adapter, obs[s : s + batch], methods=[method], layer=layer, target=target)[method]
        for s in range(0, len(obs), batch)
    ]
    return np.concatenate(parts).astype(np.float32, copy=False)


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


def episode_maps(
    adapter: PolicyAdapter,
    rollout: Rollout,
    methods: Sequence[str],
    targets: Sequence[str],
    action_names: Sequence[str],
    *,
    per_action: str | None,
    layer: str | None,
    batch_size: int,
    size: tuple[int, int],
):
    """Quantised maps of one episode and the explanation the video engine made of it.

    ``size`` is the stored map size (H, W) (see :func:`map_size`); maps are normalised over the
    episode (one colour scale), the page can rescale per frame.

    Returns:
        (maps ``"method|target"`` -> uint8 [T, H, W], signed flags, the EpisodeExplanation).
    """
    from rlviz.video.explain import explain_episode, is_signed, normalize_maps

    explained = explain_episode(
        adapter,
        rollout,
        methods if "taken" in targets else [],
        layer=layer,
        per_action=per_action if "actions" in targets else None,
        action_names=action_names,
        batch_size=batch_size,
    )
    maps, signed = {}, {}
    for name, m in explained.maps.items():
        signed[f"{name}|taken"] = explained.map_signed[name]
        maps[f"{name}|taken"] = quantize(fit_maps(m, size), explained.map_signed[name])
    for name, per in explained.action_maps.items():
        for k in range(per.shape[1]):
            key = f"{name}|a{k}"
            signed[key] = explained.map_signed[name]
            maps[key] = quantize(fit_maps(per[:, k], size), signed[key])
    if "value" in targets and rollout.values is not None:
        for name in methods:
            raw = _attribute(adapter, rollout.obs, name, Value(), layer, batch_size)
            key, sign = f"{name}|value", is_signed(name)
            scaled, _ = normalize_maps(raw, "episode", sign)
            maps[key], signed[key] = quantize(fit_maps(scaled, size), sign), sign
            del raw, scaled
    return maps, signed, explained


def episode_record(
    rollout: Rollout,
    explained,
    action_names: Sequence[str],
    *,
    gamma: float,
    lam: float,
    memory: Callable | None = None,
    meta: dict | None = None,
) -> dict:
    """The JSON-able per-step data of one episode: actions, pi, V, rewards, entropy, GAE
    advantages and returns, events (from the env's info), optional memory reliance."""
    from rlviz.video.events import episode_events

    n = len(rollout)
    values = rollout.values if rollout.values is not None else None
    record = {
        "T": n,
        "actions": rollout.actions.astype(int).tolist(),
        "probs": np.round(rollout.probs, 4).tolist(),
        "rewards": np.round(rollout.rewards, 4).tolist(),
        "entropy": np.round(scalars.entropy(rollout.probs), 4).tolist(),
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
    record["events"] = scalars.structured_events(episode_events(explained), blocked)
    if "box_visible" in rollout.infos:
        record["visible"] = np.asarray(rollout.infos["box_visible"]).reshape(n).astype(int).tolist()
    if memory is not None:
        reliance = memory(rollout)
        if reliance is not None:
            record["memory"] = {
                k: np.round(np.asarray(v, np.float32), 5).tolist() for k, v in reliance.items()
            }
    record.update(meta or {})
    return record


def memory_fn(adapter: PolicyAdapter, layout) -> Callable | None:
    """Per-episode memory reliance (``{"kl": [T], "share": [T]}``) for a policy with memory
    (a frame stack or recurrent state), else None."""
    recurrent = bool(getattr(adapter, "recurrent", False))
    if not recurrent and (layout is None or not layout.stacked):
        return None

    def run(rollout: Rollout) -> dict | None:
        from rlviz.memory import memory_reliance

        states = getattr(rollout, "states", None)
        if recurrent and states is None:
            return None  # the rollout did not record the state entering each step
        result = memory_reliance(
            adapter, rollout.obs, TakenAction(rollout.actions), states=states, layout=layout
        )
        return {"kl": result.kl, "share": result.share}

    return run
