"""Gymnasium wrappers that make explanation videos from any training or evaluation loop.

* :class:`RecordExplanationVideo` follows ``gymnasium.wrappers.RecordVideo``'s conventions (video
  folder, ``name_prefix``, ``episode_trigger`` defaulting to the capped cubic schedule, files named
  ``{name_prefix}-episode-{i}.mp4``). It keeps only the triggered episode's observations and
  actions (a few KB a step) and renders the whole annotated video when the episode ends, with maps
  computed in batches and frames streamed to disk.
* :class:`ExplanationRender` makes ``env.render()`` return the annotated frame of the current state
  (``render_mode="rgb_array"``), so Gymnasium's own ``RecordVideo`` (or any viewer) works unchanged.
  Rendering is online, so maps explain the most likely next action and are scaled over the episode
  so far.

Importing this module imports gymnasium (``import rlviz`` alone does not).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from rlviz.adapters import PolicyAdapter
from rlviz.render import (
    DEFAULT_METHODS,
    INFO_KEYS,
    CompressedFrames,
    EpisodeExplanation,
    _as_adapter,
    _check_methods,
    _env_action_names,
    _normalize_maps,
    explain_episode,
    render_episode,
    torch_threads,
)
from rlviz.rollout import Rollout, _stack_infos

__all__ = ["ExplanationRender", "RecordExplanationVideo", "capped_cubic_video_schedule"]


def capped_cubic_video_schedule(episode_id: int) -> bool:
    """Gymnasium RecordVideo's default trigger: episodes 0, 1, 8, 27, ..., 729, 1000, 2000, ...

    The same rule as ``gymnasium.utils.save_video.capped_cubic_video_schedule``, written here
    because that module needs moviepy (which pins an old Pillow) just to be imported.
    """
    if episode_id < 1000:
        return int(round(episode_id ** (1.0 / 3))) ** 3 == episode_id
    return episode_id % 1000 == 0


def _policy_outputs(
    adapter: PolicyAdapter, obs: np.ndarray, batch_size: int = 256
) -> tuple[np.ndarray, np.ndarray | None]:
    """pi(.|s) float32 [T, A] and V(s) float32 [T] (or None) for observations [T, ...], batched."""
    probs, values = [], []
    for start in range(0, len(obs), batch_size):
        out = adapter(obs[start : start + batch_size])
        probs.append(out.probs.float().cpu().numpy())
        values.append(None if out.value is None else out.value.float().cpu().numpy())
    value = None if values[0] is None else np.concatenate(values).astype(np.float32)
    return np.concatenate(probs).astype(np.float32), value


def _kept(info: dict) -> dict:
    """The infos the panels read (drops e.g. per-distractor masks before they pile up)."""
    return {k: v for k, v in info.items() if k in INFO_KEYS}


def _top_down_size(panels) -> tuple[int, int] | None:
    from rlviz.panels import TopDownPanel

    return next((p.map_size for p in panels if isinstance(p, TopDownPanel)), None)


class _EpisodeBuffer:
    """The small per-step record of one episode: s_t, a_t, r_t, info_t (and a top-down view)."""

    def __init__(self, seed: int | None) -> None:
        self.seed = seed
        self.obs: list[np.ndarray] = []
        self.infos: list[dict] = []
        self.actions: list[int] = []
        self.rewards: list[float] = []
        self.top_down = CompressedFrames()
        self.terminated = self.truncated = False

    def rollout(self, adapter: PolicyAdapter) -> Rollout:
        n = len(self.actions)  # states without an action yet (the final one) are not shown
        obs = np.stack(self.obs[:n])
        probs, values = _policy_outputs(adapter, obs)
        return Rollout(
            obs=obs,
            actions=np.asarray(self.actions, dtype=np.int64),
            probs=probs,
            values=values,
            rewards=np.asarray(self.rewards, dtype=np.float32),
            infos=_stack_infos(self.infos[:n], INFO_KEYS),
            terminated=self.terminated,
            truncated=self.truncated,
            seed=self.seed,
        )


class RecordExplanationVideo(gym.Wrapper):
    """Record annotated explanation videos of the triggered episodes (RecordVideo's conventions).

    Args:
        env: the env whose observations ``policy`` reads (image observations).
        policy: a :class:`PolicyAdapter` or ``nn.Module``; it explains the actions passed to
            ``step`` (whoever chose them).
        video_folder: where videos go (created).
        name_prefix: files are ``{name_prefix}-episode-{episode_id}.mp4``.
        episode_trigger: ``episode_id -> bool``; default Gymnasium's ``capped_cubic_video_schedule``
            (episodes 0, 1, 8, 27, ..., 1000, 2000, ...).
        methods, layer, panels, fps, embedding, normalize, per_action: as in
            :func:`rlviz.render_video`; ``panels`` may be a factory returning fresh panels.
        gif: write ``.gif`` instead of ``.mp4``.

    Attributes:
        episode_id: index of the current episode (-1 before the first reset).
        video_paths: the videos written so far.
    """

    def __init__(
        self,
        env: gym.Env,
        policy: PolicyAdapter | torch.nn.Module,
        video_folder: str | os.PathLike,
        name_prefix: str = "rl-explain",
        episode_trigger: Callable[[int], bool] | None = None,
        methods: Sequence[str] = DEFAULT_METHODS,
        *,
        layer: str | None = None,
        panels: Sequence | Callable[[], Sequence] | None = None,
        fps: float | None = None,
        embedding=None,
        normalize: str = "episode",
        per_action: str | None = None,
        gif: bool = False,
        agent_name: str | None = None,
    ) -> None:
        super().__init__(env)
        from rlviz.video import check_writable

        self.policy = _as_adapter(policy)
        self.methods = list(methods)
        _check_methods(self.methods + ([per_action] if per_action else []))
        self.video_folder = Path(video_folder)
        self.name_prefix = name_prefix
        self.episode_trigger = episode_trigger or capped_cubic_video_schedule
        self.layer = layer
        self._panels = panels
        self.fps = 15 if fps is None else fps  # not render_fps: annotated frames need time to read
        self.embedding = embedding
        self.normalize = normalize
        self.per_action = per_action
        self.suffix = ".gif" if gif else ".mp4"
        self.agent_name = agent_name
        self.episode_id = -1
        self.video_paths: list[Path] = []
        self._buffer: _EpisodeBuffer | None = None
        self._top_size: tuple[int, int] | None = None
        check_writable(self.video_folder / f"{name_prefix}-episode-0{self.suffix}")
        if callable(getattr(env.unwrapped, "top_down_map", None)):
            self._top_size = _top_down_size(self._fresh_panels())

    def _fresh_panels(self) -> list:
        from rlviz.panels import default_panels

        if self._panels is None:
            return default_panels(self.methods, per_action=self.per_action)
        return list(self._panels() if callable(self._panels) else self._panels)

    def _record_top_down(self) -> None:
        if self._top_size is not None:
            self._buffer.top_down.append(self.env.unwrapped.top_down_map(size=self._top_size))

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        """Reset; finishes an unfinished recording, starts one if the trigger says so."""
        if self._buffer is not None:
            self._finish()
        obs, info = super().reset(seed=seed, options=options)
        self.episode_id += 1
        if self.episode_trigger(self.episode_id):
            self._buffer = _EpisodeBuffer(seed)
            self._buffer.obs.append(np.array(obs, copy=True))
            self._buffer.infos.append(_kept(info))
            self._record_top_down()
        return obs, info

    def step(self, action):
        """Step; records (s_t, a_t, r_t) while recording and renders when the episode ends."""
        obs, reward, terminated, truncated, info = super().step(action)
        buf = self._buffer
        if buf is not None:
            buf.actions.append(int(np.asarray(action).reshape(-1)[0]))
            buf.rewards.append(float(reward))
            if "success" in info and "success" in buf.infos[-1]:
                # success belongs to the step whose action reached the goal (as in run_episode)
                buf.infos[-1] = {**buf.infos[-1], "success": info["success"]}
            if terminated or truncated:
                buf.terminated, buf.truncated = bool(terminated), bool(truncated)
                self._finish()
            else:
                buf.obs.append(np.array(obs, copy=True))
                buf.infos.append(_kept(info))
                self._record_top_down()
        return obs, reward, terminated, truncated, info

    def _finish(self) -> None:
        buf, self._buffer = self._buffer, None
        if buf is None or not buf.actions:
            return
        with torch_threads(1):  # see render_video(threads=...)
            self._render(buf)

    def _render(self, buf: _EpisodeBuffer) -> None:
        rollout = buf.rollout(self.policy)
        names = _env_action_names(self.env, self.policy, rollout.probs.shape[1])
        env_id = getattr(getattr(self.env, "spec", None), "id", None)
        episode = explain_episode(
            self.policy,
            rollout,
            self.methods,
            layer=self.layer,
            normalize=self.normalize,
            per_action=self.per_action,
            embedding=self.embedding,
            top_down=buf.top_down if len(buf.top_down) else None,
            action_names=names,
            meta={
                "agent": self.agent_name,
                "env": env_id,
                "seed": buf.seed,
                "episode": self.episode_id,
            },
        )
        path = self.video_folder / f"{self.name_prefix}-episode-{self.episode_id}{self.suffix}"
        render_episode(episode, path, self._fresh_panels(), fps=self.fps)
        self.video_paths.append(path)

    def close(self) -> None:
        """Write the unfinished episode being recorded (as RecordVideo does), then close the env."""
        try:
            if self._buffer is not None:
                self._finish()
        finally:
            super().close()


class ExplanationRender(gym.Wrapper):
    """``render()`` returns the annotated frame (uint8 [H, W, 3]) of the current state.

    Use it under Gymnasium's ``RecordVideo`` or any rgb_array consumer. Each call explains the
    current observation alone (the next action is not chosen yet, so maps explain the most likely
    action, log pi(a*|s_t)); colour scales cover the episode so far, and the value trace grows.
    For whole-episode scaling and batched speed use :class:`RecordExplanationVideo`.

    Args:
        env: an env with image observations.
        policy: :class:`PolicyAdapter` or ``nn.Module``.
        methods, layer, panels, embedding: as in :func:`rlviz.render_video`.
    """

    def __init__(
        self,
        env: gym.Env,
        policy: PolicyAdapter | torch.nn.Module,
        methods: Sequence[str] = DEFAULT_METHODS,
        *,
        layer: str | None = None,
        panels: Sequence | Callable[[], Sequence] | None = None,
        embedding=None,
        agent_name: str | None = None,
    ) -> None:
        super().__init__(env)
        from rlviz.compose import Composer
        from rlviz.methods import get_method
        from rlviz.panels import default_panels

        self.policy = _as_adapter(policy)
        self.methods = list(methods)
        _check_methods(self.methods)
        self._signed = {m: bool(getattr(get_method(m), "signed", False)) for m in self.methods}
        self.layer = layer
        self.embedding = embedding
        self.agent_name = agent_name
        chosen = panels() if callable(panels) else panels
        self._panels = list(chosen) if chosen is not None else default_panels(self.methods)
        self._Composer = Composer
        self._top_size = None
        if callable(getattr(env.unwrapped, "top_down_map", None)):
            self._top_size = _top_down_size(self._panels)
        self.metadata = {**getattr(env, "metadata", {}), "render_modes": ["rgb_array"]}
        self.metadata.setdefault("render_fps", 15)
        self._seed: int | None = None
        self._reset_history()

    @property
    def render_mode(self) -> str:
        """Always ``"rgb_array"``."""
        return "rgb_array"

    def _reset_history(self) -> None:
        self._obs: list[np.ndarray] = []
        self._infos: list[dict] = []
        self._rewards: list[float] = []
        self._raw: dict[str, list[np.ndarray]] = {m: [] for m in self.methods}
        self._probs: list[np.ndarray] = []
        self._values: list[float] = []
        self._xy: list[np.ndarray] = []
        self._top = CompressedFrames()
        self._explained = 0  # states whose maps are computed

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        obs, info = super().reset(seed=seed, options=options)
        self._seed = seed
        self._reset_history()
        self._append(obs, info)
        return obs, info

    def step(self, action):
        obs, reward, terminated, truncated, info = super().step(action)
        self._rewards.append(float(reward))
        if not (terminated or truncated):
            self._append(obs, info)
        return obs, reward, terminated, truncated, info

    def _append(self, obs, info) -> None:
        self._obs.append(np.array(obs, copy=True))
        self._infos.append(_kept(info))
        if self._top_size is not None:
            self._top.append(self.env.unwrapped.top_down_map(size=self._top_size))

    def _explain_new(self) -> None:
        """Explain states not explained yet (usually just the newest) as one batch."""
        import rlviz
        from rlviz.render import embedding_layer_of, layer_features
        from rlviz.targets import MostLikelyAction

        if self._explained == len(self._obs):
            return
        new = np.stack(self._obs[self._explained :])
        probs, values = _policy_outputs(self.policy, new)
        self._probs += list(probs)
        self._values += [] if values is None else list(values)
        if self.methods:
            maps = rlviz.explain(
                self.policy, new, methods=self.methods, layer=self.layer, target=MostLikelyAction()
            )
            for name in self.methods:
                self._raw[name] += list(np.asarray(maps[name], dtype=np.float32))
        if self.embedding is not None:
            layer, pool = embedding_layer_of(self.embedding)
            self._xy += list(
                self.embedding.transform(layer_features(self.policy, new, layer, pool), fast=True)
            )
        self._explained = len(self._obs)

    def render(self) -> np.ndarray:
        """The annotated frame of the current state: uint8 [H, W, 3]."""
        if not self._obs:
            raise RuntimeError("call reset() before render()")
        with torch_threads(1):  # batch-1 passes: see render_video(threads=...)
            self._explain_new()
        n = len(self._obs)
        probs = np.stack(self._probs)
        greedy = probs.argmax(1).astype(np.int64)
        rewards = np.zeros(n, np.float32)
        rewards[: min(n, len(self._rewards))] = self._rewards[:n]
        rollout = Rollout(
            obs=np.stack(self._obs),
            actions=greedy,
            probs=probs,
            values=np.asarray(self._values, np.float32) if self._values else None,
            rewards=rewards,
            infos=_stack_infos(self._infos, INFO_KEYS),
            seed=self._seed,
        )
        maps, ranges, signs = {}, {}, {}
        for name in self.methods:
            # The episode so far on one scale (recomputed per frame: the scale can only grow).
            signs[name] = self._signed[name]
            maps[name], ranges[name] = _normalize_maps(
                np.stack(self._raw[name]), "episode", signs[name]
            )
        names = _env_action_names(self.env, self.policy, probs.shape[1])
        episode = EpisodeExplanation(
            rollout=rollout,
            maps=maps,
            map_ranges=ranges,
            map_signed=signs,
            action_names=names,
            normalize="running",
            target_name="log \u03c0(a* | s_t), a* most likely",
            embedding=self.embedding if self._xy else None,
            embedding_xy=np.stack(self._xy) if self._xy else None,
            top_down=self._top if len(self._top) else None,
            meta={
                "agent": self.agent_name,
                "env": getattr(getattr(self.env, "spec", None), "id", None),
                "seed": self._seed,
                "action_label": "most likely",
            },
            horizon=_horizon(self.env, n),
        )
        panels = [p for p in self._panels if p.available(episode)]
        composer = self._Composer(panels)
        composer.prepare(episode, title=episode.title())
        return composer.frame(n - 1, episode)


def _horizon(env: gym.Env, n: int) -> int:
    spec = getattr(env, "spec", None)
    limit = getattr(spec, "max_episode_steps", None) or getattr(
        env.unwrapped, "max_episode_steps", None
    )
    return max(n, int(limit)) if limit else max(n, 2)
