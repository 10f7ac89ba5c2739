"""Stable-Baselines3 callback: explanation videos every N steps of ``learn()``, in TensorBoard.

SB3 users look at TensorBoard while an agent trains, so that is where the explanations go::

    from rlviz.callbacks import ExplanationVideoCallback

    callback = ExplanationVideoCallback(eval_env, every_n_steps=50_000, methods=("gradient",))
    model = PPO("CnnPolicy", env, tensorboard_log="runs/tb")
    model.learn(1_000_000, callback=callback)

Each time, ``episodes`` episodes of the current policy are played in ``env`` (a separate env:
playing the training env would disturb the rollout buffer), explained and written as MP4s by
:func:`rlviz.render_video`; the frames also go to SB3's logger as a
:class:`stable_baselines3.common.logger.Video` (``rlviz/explanation`` in TensorBoard's Images tab,
which needs ``tensorboard`` and ``moviepy``). Without TensorBoard the MP4s are still written.

This module imports Stable-Baselines3 and Gymnasium; ``import rlviz`` never loads it.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

try:
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.logger import (
        CSVOutputFormat,
        HumanOutputFormat,
        JSONOutputFormat,
        Video,
    )
except ImportError as exc:  # pragma: no cover - only without the optional dependency
    raise ImportError(
        "rlviz.callbacks needs Stable-Baselines3: `pip install stable-baselines3`"
    ) from exc

from rlviz.gym_env import as_gym_env
from rlviz.layout import LayoutError, ObservationLayout
from rlviz.options import VideoOptions, merge_options
from rlviz.policy import PolicyAdapter

#: Logger formats that cannot show a video (SB3 skips a Video in them anyway).
_TEXT_FORMATS = (HumanOutputFormat, JSONOutputFormat, CSVOutputFormat)
_TB_HINT = (
    "explanation videos are written as MP4s only; to see them in TensorBoard, "
    "`pip install tensorboard moviepy` and pass tensorboard_log= to the algorithm"
)


EnvSpec = gym.Env | str | Callable[[], Any] | Any


class ExplanationVideoCallback(BaseCallback):
    """Record explanation videos every ``every_n_steps`` environment steps during ``learn()``.

    Args:
        env: where the episodes are played: a Gymnasium env, a registered id, a function
            returning one, or an SB3 VecEnv with one env (e.g. ``make_atari_env`` +
            ``VecFrameStack``). Its observations must be what the policy reads; their layout is
            read from the env (``FrameStackObservation``, the VecEnv chain).
        every_n_steps: environment steps (``model.num_timesteps``) between recordings.
        episodes: episodes per recording.
        methods: attribution methods shown, one map panel each.
        out_dir: folder for ``step-<N>-episode-<i>.mp4``.
        max_steps: cut episodes at this many steps (Atari episodes run for thousands).
        seed: episode i of every recording resets with ``seed + i``, so recordings compare.
        deterministic: act greedily.
        fps: video frame rate (also of the TensorBoard video).
        log_key: the logger key of the video.
        max_log_frames: at most this many frames go to TensorBoard (evenly subsampled).
        at_start: also record before the first step.
        render_options: further :class:`rlviz.options.VideoOptions` fields (``layer``,
            ``panels``, ``normalize``, ``per_action``, ...), as a dict or a ``VideoOptions``
            (whose fields above are then replaced by this callback's arguments).
        verbose: 1 prints each video written.

    Attributes:
        options: the :class:`~rlviz.options.VideoOptions` every recording uses.
        paths: every video written so far.
    """

    def __init__(
        self,
        env: EnvSpec,
        every_n_steps: int = 10_000,
        episodes: int = 1,
        methods: Sequence[str] = ("gradient",),
        *,
        out_dir: str | os.PathLike = "videos/sb3",
        max_steps: int | None = 500,
        seed: int = 0,
        deterministic: bool = True,
        fps: float = 15,
        log_key: str = "rlviz/explanation",
        max_log_frames: int = 300,
        at_start: bool = False,
        render_options: dict[str, Any] | VideoOptions | None = None,
        verbose: int = 0,
    ) -> None:
        super().__init__(verbose)
        if every_n_steps < 1 or episodes < 1:
            raise ValueError(
                f"every_n_steps and episodes must be >= 1; got every_n_steps={every_n_steps}, "
                f"episodes={episodes}"
            )
        self.env_spec = env
        self.every_n_steps = int(every_n_steps)
        self.out_dir = Path(out_dir)
        self.log_key = log_key
        self.max_log_frames = int(max_log_frames)
        self.at_start = bool(at_start)
        base = render_options if isinstance(render_options, VideoOptions) else None
        given = {} if base is not None else dict(render_options or {})
        own = dict(methods=tuple(methods), episodes=int(episodes), seed=int(seed))
        own.update(max_steps=max_steps, deterministic=bool(deterministic), fps=float(fps))
        twice = sorted(set(given) & set(own))
        if twice:
            raise TypeError(f"give {', '.join(twice)} as arguments, not in render_options")
        self.options = merge_options(VideoOptions, base, {**given, **own}, type(self).__name__)
        self.paths: list[Path] = []
        self._env = None
        self._owned = False
        self._next_due = self.every_n_steps
        self._hinted = False

    # -- SB3 hooks ------------------------------------------------------------------------
    def _init_callback(self) -> None:
        self._env, self._owned = _as_gym_env(self.env_spec)
        self._next_due = self.model.num_timesteps + self.every_n_steps

    def _on_training_start(self) -> None:
        if self.at_start:
            self.record()

    def _on_step(self) -> bool:
        if self.num_timesteps >= self._next_due:
            self._next_due = self.num_timesteps + self.every_n_steps
            self.record()
        return True

    def _on_training_end(self) -> None:
        if self._env is not None and self._owned:
            self._env.close()
            self._env = None

    # -- recording ------------------------------------------------------------------------
    def adapter(self) -> PolicyAdapter:
        """The current policy, reading observations in the explanation env's layout."""
        adapter = PolicyAdapter.from_sb3(self.model)
        # The env's own layout: the network input is the same [B, K*C, H, W] either way. A
        # shape the env cannot name (a bare [84, 84, 4]) keeps the VecFrameStack's reading.
        with contextlib.suppress(LayoutError):
            adapter.layout = ObservationLayout.from_env(self._env)
        return adapter

    def record(self) -> list[Path]:
        """Play, explain and write ``episodes`` videos now; log the first one. Returns the paths."""
        from rlviz.video.pipeline import render_video

        step = int(self.model.num_timesteps)
        policy = self.model.policy
        was_training = policy.training
        policy.set_training_mode(False)
        try:
            summary = render_video(
                self._env,
                self.adapter(),
                out=self.out_dir,
                options=self.options,
                name_prefix=f"step-{step:09d}",
            )
        finally:
            policy.set_training_mode(was_training)
        self.paths.extend(summary.paths)
        if self.verbose:
            for path in summary.paths:
                print(f"rlviz: wrote {path}")
        self._log(summary.paths[0], step)
        return list(summary.paths)

    def _log(self, path: Path, step: int) -> None:
        """Hand the video to SB3's logger (TensorBoard shows it; text formats skip it)."""
        formats = getattr(self.logger, "output_formats", [])
        if not any(not isinstance(f, _TEXT_FORMATS) for f in formats):
            if not self._hinted:
                warnings.warn(_TB_HINT, stacklevel=2)
                self._hinted = True
            return
        frames = read_video(path, self.max_log_frames)
        # SB3's Video: uint8 [N, T, C, H, W] (one video), as SummaryWriter.add_video reads it
        video = torch.from_numpy(np.ascontiguousarray(frames.transpose(0, 3, 1, 2)))[None]
        self.logger.record(
            self.log_key,
            Video(video, fps=self.options.fps),
            exclude=("stdout", "log", "json", "csv"),
        )
        self.logger.record("rlviz/video_step", step, exclude=("stdout",))


def _as_gym_env(spec: EnvSpec) -> tuple[Any, bool]:
    """The explanation env as a Gymnasium env (a VecEnv wrapped), and whether the callback made
    it (from an id or a factory: closed at the end; a given env or VecEnv is the caller's)."""
    if isinstance(spec, str):
        return gym.make(spec), True
    made = callable(spec) and not hasattr(spec, "step")
    env = spec() if made else spec
    if hasattr(env, "num_envs") and hasattr(env, "step_async"):
        return as_gym_env(env, what="the explanation env", owns=made), made
    if not isinstance(env, gym.Env):
        raise TypeError(
            f"env must be a Gymnasium env, an env id, a function returning one, or an SB3 VecEnv "
            f"with one env; got {type(env).__name__}"
        )
    return env, made


def read_video(path: str | os.PathLike, max_frames: int | None = None) -> np.ndarray:
    """The frames of a video file as uint8 [T, H, W, 3] (evenly subsampled to ``max_frames``)."""
    import imageio_ffmpeg

    reader = imageio_ffmpeg.read_frames(str(path))
    meta = next(reader)
    width, height = meta["size"]
    frames = [np.frombuffer(f, dtype=np.uint8).reshape(height, width, 3) for f in reader]
    if not frames:
        raise ValueError(f"{path}: the video has no frames")
    video = np.stack(frames)
    if max_frames is not None and len(video) > max_frames:
        video = video[np.linspace(0, len(video) - 1, max_frames).round().astype(int)]
    return video
