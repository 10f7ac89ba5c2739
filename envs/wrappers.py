"""Memory for pixel agents: the last K frames of an env, stacked on the channel axis.

:class:`StackFrames` turns ``[H, W, C]`` frames into ``[H, W, K*C]`` observations, oldest frame
first (frame k owns channels ``k*C .. k*C+C-1``), the layout of SB3's ``VecFrameStack`` and the
one :class:`rlviz.ObservationLayout` calls ``HWC`` with ``frames=K``. The wrapper declares that
layout (``observation_layout``), so rlviz reads the stack per frame instead of guessing from the
shape (``[60, 80, 6]`` could as well be six gray frames).

This module imports rlviz (and so torch): import it before the first env is made in a process,
since importing ``torch._dynamo`` after a MiniWorld GL context exists crashes (:mod:`envs.headless`).
"""

from __future__ import annotations

from collections import deque

import gymnasium as gym
import numpy as np

from rlviz.layout import ObservationLayout


class StackFrames(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """Observation = the last ``k`` frames concatenated on the channel axis, oldest first.

    ``reset`` fills the stack with copies of the first frame (no frame from the previous episode
    leaks in); ``step`` drops the oldest frame and appends the new one. Rewards, ends and ``info``
    pass through unchanged.

    Args:
        env: an env observing uint8 images ``[H, W, C]``.
        k: frames per observation (K >= 1; 1 returns the frames unchanged, still with a layout).
    """

    def __init__(self, env: gym.Env, k: int) -> None:
        gym.utils.RecordConstructorArgs.__init__(self, k=k)  # so gym.make(env.spec) remakes it
        super().__init__(env)
        space = env.observation_space
        if not isinstance(space, gym.spaces.Box) or len(space.shape) != 3:
            raise ValueError(
                f"StackFrames stacks image frames [H, W, C]; the env observes {space}. Wrap an "
                "env whose observations are channel-last images"
            )
        if int(k) < 1:
            raise ValueError(f"StackFrames needs k >= 1 frames; got k={k}")
        self.k = int(k)
        h, w, c = space.shape
        self.observation_space = gym.spaces.Box(
            low=np.concatenate([space.low] * self.k, axis=-1),
            high=np.concatenate([space.high] * self.k, axis=-1),
            shape=(h, w, c * self.k),
            dtype=space.dtype,
        )
        # Declared, so rlviz.ObservationLayout.from_env finds it through any wrapper chain.
        self.observation_layout = ObservationLayout(
            frames=self.k, channels=int(c), order="HWC", source="env"
        )
        self._frames: deque[np.ndarray] = deque(maxlen=self.k)

    def _observation(self) -> np.ndarray:
        return np.concatenate(self._frames, axis=-1)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        """Reset the env; the stack is K copies of its first frame."""
        obs, info = self.env.reset(seed=seed, options=options)
        self._frames.clear()
        self._frames.extend([obs] * self.k)
        return self._observation(), info

    def step(self, action):
        """Step the env; the new frame becomes the newest (last) of the stack."""
        obs, reward, terminated, truncated, info = self.env.step(action)
        self._frames.append(obs)
        return self._observation(), reward, terminated, truncated, info
