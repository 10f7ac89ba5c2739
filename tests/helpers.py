"""Tiny models and envs shared by the tests: one copy each, cheap enough to build per test.

Envs:
* ``SquareEnv``: a red square drifts across a 30x40 frame as the agent turns (0 left, 1 forward,
  2 right); walking forward with the square centred makes it grow until reached. It reports
  ``goal_mask`` / ``box_visible`` / ``success`` like BoxReach with ground truth, and can draw a
  ``top_down_map``. Steps cost microseconds, so video tests measure our code, not a simulator.
* ``ColourPatchEnv``: a bright patch left or right of a 64x64 frame; the right action is its side.
  Learnable in a few hundred steps, so a real Stable-Baselines3 model can be trained on it.

Models (all return ``(logits, value)`` unless said otherwise):
* ``TinyActorCritic``: conv1 -> conv2 -> pool -> policy / value, any frame size.
* ``TinyCNN``: two strided convs and a linear layer on 24x32 frames.
* ``TinyGapNet``: conv -> ReLU -> conv -> ReLU -> global average pool: exact CAM.
* ``CleanRLAtariAgent``: the shape of cleanrl/ppo_atari.py's Agent (``get_action_and_value``).
"""

from __future__ import annotations

import os
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from torch import nn
from torch.distributions import Categorical

H, W = 30, 40  # SquareEnv's frame size

# Cheap method settings so contract tests stay fast; defaults are tested for shape elsewhere.
FAST_OPTIONS = {
    "smoothgrad": {"samples": 4},
    "integrated_gradients": {"steps": 6},
    "occlusion": {"window": 4, "stride": 3},
    "perturbation": {"stride": 4, "mask_sigma": 2.0, "blur_sigma": 1.5},
}


class SquareEnv(gym.Env):
    """Face and reach a red square. ``goal=False``: never succeeds (episodes run ``max_steps``)."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 15}

    def __init__(self, max_steps: int = 40, goal: bool = True, render_mode=None):
        self.observation_space = spaces.Box(0, 255, (H, W, 3), np.uint8)
        self.action_space = spaces.Discrete(3)
        self.max_steps = max_steps
        self.goal = goal
        self.render_mode = render_mode
        self._path: list[tuple[float, float]] = []

    def _obs(self) -> tuple[np.ndarray, np.ndarray]:
        img = np.zeros((H, W, 3), np.uint8)
        img[: H // 2] = (70, 80, 110)  # wall
        img[H // 2 :] = (110, 100, 80)  # floor
        half = int(self.size)
        mask = np.zeros((H, W), bool)
        x0, x1 = int(self.x) - half, int(self.x) + half + 1
        y0, y1 = H // 2 - half, H // 2 + half + 1
        mask[max(y0, 0) : max(y1, 0), max(x0, 0) : max(x1, 0)] = True
        img[mask] = (220, 30, 30)
        return img, mask

    def _info(self, success: bool) -> dict:
        _, mask = self._obs()
        return {"success": success, "goal_mask": mask, "box_visible": bool(mask.any())}

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.x = float(self.np_random.uniform(-10, W + 10))
        self.size = 2.0
        self.t = 0
        self._path = [(0.5, 0.9)]
        obs, _ = self._obs()
        return obs, self._info(False)

    def step(self, action):
        action = int(action)
        if action == 0:
            self.x += 4
        elif action == 2:
            self.x -= 4
        elif abs(self.x - W / 2) < 8:
            self.size = min(self.size + 1.0, 12.0)
        self.t += 1
        px, py = self._path[-1]
        self._path.append(
            (float(np.clip(px + (action - 1) * 0.03, 0, 1)), max(py - 0.02 * (action == 1), 0.0))
        )
        success = bool(self.goal and self.size >= 7 and abs(self.x - W / 2) < 8)
        obs, _ = self._obs()
        return (
            obs,
            float(success),
            success,
            self.t >= self.max_steps and not success,
            self._info(success),
        )

    def top_down_map(self, size=(64, 64)) -> np.ndarray:
        h, w = size
        img = np.full((h, w, 3), 220, np.uint8)
        img[2 : h // 8, w // 2 - 3 : w // 2 + 3] = (220, 30, 30)  # the box at the top
        for px, py in self._path:
            img[min(int(py * (h - 1)), h - 1), min(int(px * (w - 1)), w - 1)] = (40, 110, 230)
        return img

    def render(self):
        return self._obs()[0]


class ColourPatchEnv(gym.Env):
    """Tiny RGB env: a bright patch left or right; the right action is its side. Cheap and learnable."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(self, size: int = 64, horizon: int = 8):
        self.observation_space = gym.spaces.Box(0, 255, (size, size, 3), np.uint8)
        self.action_space = gym.spaces.Discrete(3)
        self.size, self.horizon, self.render_mode = size, horizon, "rgb_array"

    def _obs(self):
        frame = np.full((self.size, self.size, 3), 30, np.uint8)
        half = self.size // 2
        cols = slice(0, half) if self.side == 0 else slice(half, self.size)
        frame[self.size // 4 : 3 * self.size // 4, cols, 0] = 220
        return frame

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t, self.side = 0, int(self.np_random.integers(2))
        self.frame = self._obs()
        return self.frame, {}

    def step(self, action):
        self.t += 1
        reward = 1.0 if action == 2 * self.side else 0.0
        self.side = int(self.np_random.integers(2))
        self.frame = self._obs()
        return self.frame, reward, False, self.t >= self.horizon, {}

    def render(self):
        return self.frame


class TinyActorCritic(nn.Module):
    """conv1 -> conv2 -> pool -> policy / value, like agents.ActorCritic but tiny."""

    def __init__(self, n_actions: int = 3):
        super().__init__()
        self.conv1 = nn.Sequential(nn.Conv2d(3, 4, 3, stride=2, padding=1), nn.ReLU())
        self.conv2 = nn.Sequential(nn.Conv2d(4, 8, 3, stride=2, padding=1), nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.policy = nn.Linear(8, n_actions)
        self.value = nn.Linear(8, 1)

    def forward(self, x):
        h = self.pool(self.conv2(self.conv1(x))).flatten(1)
        return self.policy(h), self.value(h).squeeze(-1)


def tiny_policy(seed: int = 0):
    """A seeded TinyActorCritic wrapped as a PolicyAdapter with left/forward/right names."""
    from rlviz import PolicyAdapter

    torch.manual_seed(seed)
    return PolicyAdapter(TinyActorCritic(), action_names=("left", "forward", "right"))


class TinyCNN(nn.Module):
    """conv1 (stride 2) -> conv2 (stride 2) -> fc -> policy / value, on 24x32 frames."""

    def __init__(self, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.conv1 = nn.Conv2d(3, 6, 5, stride=2, padding=2)
        self.conv2 = nn.Conv2d(6, 8, 3, stride=2, padding=1)
        self.fc = nn.Linear(8 * 6 * 8, 16)
        self.policy = nn.Linear(16, 3)
        self.value = nn.Linear(16, 1)

    def forward(self, x):
        h = torch.relu(self.conv2(torch.relu(self.conv1(x))))
        h = torch.relu(self.fc(h.flatten(1)))
        return self.policy(h), self.value(h).squeeze(-1)


class TinyGapNet(nn.Module):
    """conv -> inplace ReLU -> conv -> ReLU -> global average pool -> policy / value heads."""

    def __init__(self, inplace: bool = True) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 3, padding=1)
        self.relu1 = nn.ReLU(inplace=inplace)
        self.conv2 = nn.Conv2d(6, 8, 3, stride=2, padding=1)
        self.relu2 = nn.ReLU(inplace=inplace)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.policy = nn.Linear(8, 3)
        self.value = nn.Linear(8, 1)

    def forward(self, x):
        h = self.pool(self.relu2(self.conv2(self.relu1(self.conv1(x))))).flatten(1)
        return self.policy(h), self.value(h)


class CleanRLAtariAgent(nn.Module):
    """The shape of cleanrl/ppo_atari.py's Agent (scales by 1/255 inside).

    Its ``LazyLinear`` is materialised by the first call: run ``get_value`` on a zero batch first.
    """

    def __init__(self, n_actions=3):
        super().__init__()
        self.network = nn.Sequential(
            nn.Conv2d(3, 8, 5, stride=2),
            nn.ReLU(),
            nn.Conv2d(8, 8, 3, stride=2),
            nn.ReLU(),
            nn.Flatten(),
            nn.LazyLinear(32),
            nn.ReLU(),
        )
        self.actor = nn.Linear(32, n_actions)
        self.critic = nn.Linear(32, 1)

    def get_value(self, x):
        return self.critic(self.network(x / 255.0))

    def get_action_and_value(self, x, action=None):
        hidden = self.network(x / 255.0)
        probs = Categorical(logits=self.actor(hidden))
        if action is None:
            action = probs.sample()
        return action, probs.log_prob(action), probs.entropy(), self.critic(hidden)


# Per-algorithm settings small enough for a test: a few hundred steps, one short update.
SB3_SETTINGS = {
    "PPO": {"n_steps": 64, "batch_size": 32, "n_epochs": 1},
    "DQN": {"buffer_size": 200, "learning_starts": 50},
}


def sb3_model(algorithm: str = "PPO", learn_steps: int = 0):
    """A real, seeded Stable-Baselines3 CnnPolicy model (PPO or DQN) on ColourPatchEnv (CPU).

    Args:
        algorithm: "PPO" or "DQN".
        learn_steps: env steps to train before returning; 0 leaves it untrained.
    """
    import stable_baselines3

    model = getattr(stable_baselines3, algorithm)(
        "CnnPolicy",
        ColourPatchEnv(),
        seed=0,
        device="cpu",
        policy_kwargs={"features_extractor_kwargs": {"features_dim": 32}},
        **SB3_SETTINGS[algorithm],
    )
    if learn_steps:
        model.learn(learn_steps)
    return model


def ray_worker_env() -> dict:
    """A Ray ``runtime_env`` that puts this tests folder on the workers' path (``helpers``)."""
    tests = str(Path(__file__).resolve().parent)
    path = os.pathsep.join([tests, os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return {"env_vars": {"PYTHONPATH": path}}
