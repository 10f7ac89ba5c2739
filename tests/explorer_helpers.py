"""A tiny frame-stacked policy for the explorer's memory views: SquareEnv seen as two frames
stacked on the channel axis ([H, W, 6], oldest first) and a TinyActorCritic that reads them."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from helpers import SquareEnv, TinyActorCritic

from rlviz import ObservationLayout, PolicyAdapter

STACK_LAYOUT = ObservationLayout(frames=2, channels=3, order="HWC")


class TwoFrames(gym.Wrapper):
    """Observations [H, W, 6]: the previous frame then the current one (the first repeated)."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        h, w, c = env.observation_space.shape
        self.observation_space = spaces.Box(0, 255, (h, w, 2 * c), np.uint8)
        self._prev = None

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        self._prev = obs
        return np.concatenate([obs, obs], -1), info

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        stacked = np.concatenate([self._prev, obs], -1)
        self._prev = obs
        return stacked, reward, terminated, truncated, info


def stacked_env(max_steps: int = 12) -> TwoFrames:
    return TwoFrames(SquareEnv(max_steps=max_steps))


def stacked_policy(seed: int = 0) -> PolicyAdapter:
    """A seeded TinyActorCritic on 6 input channels, declared as a 2-frame HWC stack."""
    torch.manual_seed(seed)
    model = TinyActorCritic()
    model.conv1[0] = torch.nn.Conv2d(6, 4, 3, stride=2, padding=1)
    return PolicyAdapter(model, layout=STACK_LAYOUT, action_names=("left", "forward", "right"))
