"""Small envs and checks shared by the tests/test_frameworks_*.py files (real frameworks' own
model classes; tiny images so every method, a video and an explorer run in seconds)."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from helpers import SquareEnv

import rlviz


class Upscale(gym.ObservationWrapper):
    """SquareEnv's 30x40 frames at 60x80 (nearest): big enough for Atari-sized CNNs such as
    Tianshou's DQNet (8x8 stride 4, 4x4 stride 2, 3x3)."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        h, w, c = env.observation_space.shape
        self.observation_space = spaces.Box(0, 255, (2 * h, 2 * w, c), np.uint8)

    def observation(self, obs):
        return obs.repeat(2, axis=0).repeat(2, axis=1)


def stacked_gray_env(max_steps: int = 6) -> gym.Env:
    """Atari-style observations: 4 stacked gray 60x80 frames, uint8 [4, 60, 80]."""
    env = gym.wrappers.GrayscaleObservation(Upscale(SquareEnv(max_steps=max_steps)))
    return gym.wrappers.FrameStackObservation(env, 4)


def stacked_obs(n: int = 3, seed: int = 0) -> np.ndarray:
    """n observations of :func:`stacked_gray_env` along one episode, [n, 4, 60, 80] uint8."""
    env = stacked_gray_env(max_steps=n + 2)
    obs = [env.reset(seed=seed)[0]]
    for a in range(n - 1):
        obs.append(env.step(a % 3)[0])
    return np.stack(obs)


def every_method(adapter, obs, target) -> list[str]:
    """Every registered method's maps for ``obs`` (finite, right shape); returns the names run.

    Exact CAM needs a global-average-pooling head, which none of these networks has: it must
    refuse with its own one-line reason."""
    ran = []
    for name in rlviz.available_methods():
        if name == "cam":
            try:
                rlviz.explain(adapter, obs, methods=[name], target=target)
            except ValueError as err:
                assert "global" in str(err)
            continue
        options = {"occlusion": {"window": 20, "stride": 20}} if name == "occlusion" else {}
        maps = rlviz.explain(adapter, obs, methods=[name], target=target, **options)[name]
        assert maps.shape[0] == obs.shape[0] and np.isfinite(maps).all(), name
        ran.append(name)
    return ran


def video_and_explorer(env_fn, adapter, tmp_path, methods=("gradient", "gradcam")) -> None:
    """A short video and a small explorer (network tab on) of ``adapter`` in ``env_fn()``."""
    import imageio.v3 as iio

    summary = rlviz.render_video(
        env_fn(), adapter, out=tmp_path / "run.mp4", methods=list(methods), episodes=1, seed=0
    )
    assert iio.imread(tmp_path / "run.mp4").shape[0] == summary.frames > 0
    report = rlviz.explore(
        env_fn(),
        adapter,
        out=tmp_path / "explorer",
        episodes=1,
        methods=list(methods),
        map_method="pca",
        nmf_features=2,
        units_per_layer=1,
        optvis_steps=2,
    )
    assert (tmp_path / "explorer" / "index.html").exists() and report.episodes == 1


class ChannelsLast(gym.ObservationWrapper):
    """[K, H, W] stacks as [H, W, K] (SB3's VecFrameStack and RLlib lay frames out this way)."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        k, h, w = env.observation_space.shape
        self.observation_space = spaces.Box(0, 255, (h, w, k), np.uint8)

    def observation(self, obs):
        return np.ascontiguousarray(np.moveaxis(obs, 0, -1))


def stacked_gray_env_hwc(max_steps: int = 6) -> gym.Env:
    """:func:`stacked_gray_env` channels last: uint8 [60, 80, 4]."""
    return ChannelsLast(stacked_gray_env(max_steps))
