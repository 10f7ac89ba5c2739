"""A tiny synthetic Gymnasium env with RGB observations and a tiny actor-critic for video tests.

``SquareEnv``: a red square drifts across a 30x40 frame as the agent turns (0 left, 1 forward,
2 right); walking forward with the square centred makes it grow until reached. It reports
``goal_mask`` / ``box_visible`` / ``success`` like BoxReach with ground truth, and can draw a
``top_down_map``. Steps cost microseconds, so video tests measure our code, not a simulator.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from torch import nn

H, W = 30, 40


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


def test_square_env_passes_gymnasium_check():
    from gymnasium.utils.env_checker import check_env

    check_env(SquareEnv(), skip_render_check=True)


def test_square_env_reports_ground_truth_and_can_succeed():
    env = SquareEnv(max_steps=60)
    obs, info = env.reset(seed=1)
    assert obs.shape == (H, W, 3) and info["goal_mask"].shape == (H, W)
    env.x = W / 2  # put the square in front and walk to it
    for _ in range(10):
        obs, reward, terminated, truncated, info = env.step(1)
        if terminated:
            break
    assert terminated and reward == 1.0 and info["success"] and info["box_visible"]
    assert env.top_down_map((20, 30)).shape == (20, 30, 3)
