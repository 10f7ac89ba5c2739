"""Gymnasium wrappers that make explanation videos from any training or evaluation loop:
:class:`RecordExplanationVideo` writes whole annotated videos of the triggered episodes (Gymnasium
RecordVideo's conventions), :class:`ExplanationRender` makes ``env.render()`` return the annotated
frame of the current state, so RecordVideo (or any viewer) works unchanged.

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

from rlviz.explain import explain
from rlviz.maps import normalize_maps
from rlviz.memory import MemoryReliance, has_memory, memory_reliance
from rlviz.methods import check_methods, is_signed
from rlviz.ops import torch_threads
from rlviz.options import VideoOptions, episode_meta, merge_options
from rlviz.policy import PolicyAdapter, as_adapter
from rlviz.policy.output import policy_action
from rlviz.rollout import (
    EpisodeRecorder,
    action_stats,
    carry_state,
    episode_outputs,
    policy_outputs,
    rollout_layout,
    with_layout,
)
from rlviz.statemap.policy_states import place_states
from rlviz.targets import MostLikelyAction
from rlviz.video.episode import EpisodeExplanation
from rlviz.video.events import INFO_KEYS
from rlviz.video.explain import TimeMaps
from rlviz.video.grid import Composer
from rlviz.video.pipeline import VideoJob
from rlviz.video.writer import check_writable

__all__ = ["ExplanationRender", "RecordExplanationVideo", "capped_cubic_video_schedule"]

#: The :class:`~rlviz.options.VideoOptions` fields a recording uses (the caller plays episodes).
RECORD_FIELDS = (
    "methods", "layer", "panels", "fps", "embedding", "normalize", "per_action", "gif",
    "agent_name", "name_prefix",
)  # fmt: skip
#: Those online rendering uses (maps explain the most likely action, scaled over the episode).
RENDER_FIELDS = ("methods", "layer", "panels", "embedding", "agent_name")


def capped_cubic_video_schedule(episode_id: int) -> bool:
    """Gymnasium RecordVideo's default trigger: episodes 0, 1, 8, 27, ..., 729, 1000, 2000, ...

    The same rule as ``gymnasium.utils.save_video.capped_cubic_video_schedule``, written here
    because that module needs moviepy (which pins an old Pillow) just to be imported.
    """
    if episode_id < 1000:
        return int(round(episode_id ** (1.0 / 3))) ** 3 == episode_id
    return episode_id % 1000 == 0


class _ExplainingWrapper(gym.Wrapper):
    """What both wrappers hold: the policy, its options (the ``allowed`` fields of
    :class:`VideoOptions`), the job that explains like render_video and the episode's recorder."""

    def __init__(self, env, policy, options, fields: dict[str, Any], allowed: Sequence[str]):
        super().__init__(env)
        self.policy = as_adapter(policy)
        o = merge_options(VideoOptions, options, fields, type(self).__name__, allowed)
        self.options = o
        check_methods(o.methods + ([o.per_action] if o.per_action else []))
        self._job = VideoJob(o)
        self._record = EpisodeRecorder(INFO_KEYS, self._job.capture(env))

    def _meta(self, seed: int | None, episode: Any = None, **more: Any) -> dict[str, Any]:
        env_id = getattr(getattr(self.env, "spec", None), "id", None)
        return episode_meta(self.options.agent_name, env_id, seed, episode, **more)


class RecordExplanationVideo(_ExplainingWrapper):
    """Record annotated explanation videos of the triggered episodes (RecordVideo's conventions).

    Only a triggered episode's observations and actions are kept (a few KB a step); its video is
    rendered when it ends, maps computed in batches and frames streamed to disk.

    Args:
        env: the env whose observations ``policy`` reads (image observations).
        policy: a :class:`PolicyAdapter` or ``nn.Module``; it explains the actions passed to
            ``step`` (whoever chose them).
        video_folder: where videos go (created).
        name_prefix: files are ``{name_prefix}-episode-{episode_id}.mp4``.
        episode_trigger: ``episode_id -> bool``; default Gymnasium's ``capped_cubic_video_schedule``
            (episodes 0, 1, 8, 27, ..., 1000, 2000, ...).
        options: a :class:`rlviz.options.VideoOptions`; of its fields, a recording uses
            :data:`RECORD_FIELDS`, which may also be given as keywords (``methods=...``).

    Attributes:
        episode_id: index of the current episode (-1 before the first reset).
        video_paths: the videos written so far.
    """

    def __init__(
        self,
        env: gym.Env,
        policy: PolicyAdapter | torch.nn.Module,
        video_folder: str | os.PathLike,
        name_prefix: str | None = None,
        episode_trigger: Callable[[int], bool] | None = None,
        *,
        options: VideoOptions | None = None,
        **fields: Any,
    ) -> None:
        if name_prefix is not None:
            fields["name_prefix"] = name_prefix
        # fps: the options' 15, not the env's render_fps: annotated frames need time to read
        super().__init__(env, policy, options, fields, RECORD_FIELDS)
        o = self.options
        self.video_folder = Path(video_folder)
        self.episode_trigger = episode_trigger or capped_cubic_video_schedule
        self.suffix = ".gif" if o.gif else ".mp4"
        self.episode_id = -1
        self.video_paths: list[Path] = []
        check_writable(self.video_folder / f"{o.name_prefix}-episode-0{self.suffix}")
        self._recording = False

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        """Reset; finishes an unfinished recording, starts one if the trigger says so."""
        if self._recording:
            self._finish()
        obs, info = super().reset(seed=seed, options=options)
        self.episode_id += 1
        if self.episode_trigger(self.episode_id):
            self._record.start(obs, info, seed)
            self._recording = True
        return obs, info

    def step(self, action):
        """Step; records (s_t, a_t, r_t) while recording and renders when the episode ends."""
        obs, reward, terminated, truncated, info = super().step(action)
        if self._recording:
            self._record.step(action, reward, terminated, truncated, obs, info)
            if self._record.done:
                self._finish()
        return obs, reward, terminated, truncated, info

    def _finish(self) -> None:
        self._recording = False
        if len(self._record):
            with torch_threads(1):  # see render_video(threads=...)
                self._render()
        self._record.reset_record(None)  # let go of the episode's frames

    def _render(self) -> None:
        record = self._record
        n = len(record)  # the final state has no action yet: it is not shown
        obs = np.stack(record.obs[:n])
        # A recurrent policy replays the episode from its initial state (its state follows the
        # observations, whoever chose the actions), so each step is explained with its state.
        layout = rollout_layout(self.policy, self.env, obs[0])
        reader = with_layout(self.policy, layout)
        probs, values, states = episode_outputs(reader, obs)
        mean, std = action_stats(reader, obs, states)  # a Box policy's mean +/- std
        rollout = record.to_rollout(
            probs, values, states=states, layout=layout, action_mean=mean, action_std=std
        )
        if rollout.continuous:  # the env's actions, in the policy's own space (SAC: [-1, 1])
            # a Box policy's kind is always declared (undeclared outputs read as discrete)
            rollout.actions = policy_action(
                rollout.actions, self.policy.output, self.env.action_space
            )
        names = self.policy.action_names_for(rollout.action_count, self.env)
        meta = self._meta(record.seed, self.episode_id)
        episode = self._job.explain(names, self.policy, rollout, meta)
        name = f"{self.options.name_prefix}-episode-{self.episode_id}{self.suffix}"
        path = self.video_folder / name
        self._job.write(episode, path)
        self.video_paths.append(path)

    def close(self) -> None:
        """Write the unfinished episode being recorded (as RecordVideo does), then close the env."""
        try:
            if self._recording:
                self._finish()
        finally:
            super().close()


class ExplanationRender(_ExplainingWrapper):
    """``render()`` returns the annotated frame (uint8 [H, W, 3]) of the current state.

    Use it under Gymnasium's ``RecordVideo`` or any rgb_array consumer. Each call explains the
    current observation alone (the next action is not chosen yet, so maps explain the most likely
    action, log pi(a*|s_t)); colour scales cover the episode so far, and the value trace grows.
    For whole-episode scaling and batched speed use :class:`RecordExplanationVideo`.

    Args:
        env: an env with image observations.
        policy: :class:`PolicyAdapter` or ``nn.Module``.
        options: a :class:`rlviz.options.VideoOptions`; of its fields, rendering uses
            :data:`RENDER_FIELDS`, which may also be given as keywords (``methods=...``).
    """

    def __init__(
        self,
        env: gym.Env,
        policy: PolicyAdapter | torch.nn.Module,
        *,
        options: VideoOptions | None = None,
        **fields: Any,
    ) -> None:
        super().__init__(env, policy, options, fields, RENDER_FIELDS)
        self.methods = self.options.methods  # shown (time panels may compute another)
        self._panels = self._job.panels()
        self.metadata = {**getattr(env, "metadata", {}), "render_modes": ["rgb_array"]}
        self.metadata.setdefault("render_fps", 15)
        self._reset_history()

    @property
    def render_mode(self) -> str:
        """Always ``"rgb_array"``."""
        return "rgb_array"

    def _reset_history(self, seed: int | None = None, first_obs=None) -> None:
        self._record.reset_record(seed)
        self._layout = (
            None if first_obs is None else rollout_layout(self.policy, self.env, first_obs)
        )
        self._time = TimeMaps(self._layout, self.methods)
        self._reader = with_layout(self.policy, self._layout)
        self._memory = has_memory(self._reader, self._layout)
        self._state = self.policy.initial_state(1) if self.policy.recurrent else None
        shown = self.methods + ([self._time.method] if self._time.missing else [])
        self._raw: dict[str, list[np.ndarray]] = {m: [] for m in shown}
        self._probs: list[np.ndarray] = []
        self._values: list[float] = []
        self._xy: list[np.ndarray] = []
        self._kl: list[np.ndarray] = []
        self._share: list[np.ndarray] = []
        self._explained = 0  # states whose maps are computed

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        obs, info = super().reset(seed=seed, options=options)
        self._reset_history(seed, obs)
        self._record.start(obs, info, seed)
        return obs, info

    def step(self, action):
        obs, reward, terminated, truncated, info = super().step(action)
        if self._record.obs:
            self._record.step(action, reward, terminated, truncated, obs, info)
        return obs, reward, terminated, truncated, info

    def _explain_new(self) -> None:
        """Explain states not explained yet (usually just the newest) as one batch."""
        states = self._record.obs
        if self._explained == len(states):
            return
        new = np.stack(states[self._explained :])
        held = None  # a recurrent policy's state entering each new step, carried along
        if self._state is None:
            probs, values = policy_outputs(self._reader, new)
        else:
            probs, values, held, self._state = carry_state(self._reader, new, self._state)
        self._probs += list(probs)
        self._values += [] if values is None else list(values)
        for name in self._raw:
            maps = explain(
                self._reader,
                new,
                methods=[name],
                layer=self.options.layer,
                target=MostLikelyAction(),
                per_frame=self._time.per_frame(name) or name not in self.methods,
                states=held,
            )
            self._raw[name] += list(np.asarray(maps[name], dtype=np.float32))
        embedding = self.options.embedding
        if embedding is not None:
            self._xy += list(place_states(self._reader, new, embedding, states=held))
        if self._memory:
            memory = memory_reliance(
                self._reader, new, MostLikelyAction(), states=held, layout=self._layout
            )
            self._kl += list(memory.kl)
            self._share += list(memory.share)
        self._explained = len(states)

    def render(self) -> np.ndarray:
        """The annotated frame of the current state: uint8 [H, W, 3]."""
        if not self._record.obs:
            raise RuntimeError("call reset() before render()")
        with torch_threads(1):  # batch-1 passes: see render_video(threads=...)
            self._explain_new()
        episode = self._episode_so_far()
        panels = [p for p in self._panels if p.available(episode)]
        composer = Composer(panels)
        composer.prepare(episode, title=episode.title())
        return composer.frame(len(episode) - 1, episode)

    def _episode_so_far(self) -> EpisodeExplanation:
        """Every state so far, explained: the greedy action at each (the next is not chosen)."""
        record = self._record
        n = len(record.obs)
        probs = np.stack(self._probs)
        rewards = np.zeros(n, np.float32)
        rewards[: min(n, len(record.rewards))] = record.rewards[:n]
        values = np.asarray(self._values, np.float32) if self._values else None
        rollout = record.to_rollout(probs, values, actions=probs.argmax(1), rewards=rewards)
        maps, ranges, signs = {}, {}, {}
        time_maps = TimeMaps(self._layout, self.methods)
        for name in self._raw:
            # The episode so far on one scale (recomputed per frame: the scale can only grow).
            signs[name] = is_signed(name)
            raw = np.stack(self._raw[name])
            if raw.ndim == 4:  # per stack frame: the panels show the newest frame's map
                shown = time_maps.add(name, raw, "episode", signs[name])
            else:
                shown = normalize_maps(raw, "episode", signs[name])
            if name in self.methods:
                maps[name], ranges[name] = shown
        memory = (
            MemoryReliance(np.asarray(self._kl), np.asarray(self._share)) if self._memory else None
        )
        return EpisodeExplanation(
            rollout=rollout,
            maps=maps,
            map_ranges=ranges,
            map_signed=signs,
            action_names=self.policy.action_names_for(probs.shape[1], self.env),
            normalize="running",
            target_name="log \u03c0(a* | s_t), a* most likely",
            embedding=self.options.embedding if self._xy else None,
            embedding_xy=np.stack(self._xy) if self._xy else None,
            top_down=rollout.views if rollout.views is not None and len(rollout.views) else None,
            meta=self._meta(record.seed, action_label="most likely"),
            horizon=_horizon(self.env, n),
            layout=self._layout,
            frame_maps=time_maps.frame_maps,
            frame_shares=time_maps.shares,
            memory=memory,
            newest_maps=tuple(m for m in time_maps.newest if m in maps),
        )


def _horizon(env: gym.Env, n: int) -> int:
    spec = getattr(env, "spec", None)
    limit = getattr(spec, "max_episode_steps", None) or getattr(
        env.unwrapped, "max_episode_steps", None
    )
    return max(n, int(limit)) if limit else max(n, 2)
