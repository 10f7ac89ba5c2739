"""A CleanRL-style agent, defined and trained right here, explained by rlviz.

    python examples/cleanrl_agent.py --steps 20000 --out videos/examples/cleanrl.mp4

The agent has the shape of cleanrl/ppo_atari.py's ``Agent`` (``get_action_and_value``, ``get_value``,
scaling pixels by 1/255 inside); ``PolicyAdapter.from_cleanrl`` needs nothing else.
"""

from __future__ import annotations

import argparse

import gymnasium as gym
import numpy as np
import torch
from torch import nn
from torch.distributions import Categorical

import rlviz
from rlviz import envs  # registers rlviz/BoxReach-* and prepares headless rendering


class Agent(nn.Module):
    def __init__(self, n_actions: int):
        super().__init__()
        self.network = nn.Sequential(
            nn.Conv2d(3, 16, 5, stride=2), nn.ReLU(),
            nn.Conv2d(16, 32, 3, stride=2), nn.ReLU(),
            nn.Conv2d(32, 32, 3, stride=1), nn.ReLU(),
            nn.AdaptiveAvgPool2d((4, 5)), nn.Flatten(),
            nn.Linear(32 * 4 * 5, 128), nn.ReLU(),
        )
        self.actor = nn.Linear(128, n_actions)
        self.critic = nn.Linear(128, 1)

    def get_value(self, x):
        return self.critic(self.network(x / 255.0))

    def get_action_and_value(self, x, action=None):
        hidden = self.network(x / 255.0)
        probs = Categorical(logits=self.actor(hidden))
        if action is None:
            action = probs.sample()
        return action, probs.log_prob(action), probs.entropy(), self.critic(hidden)


def to_input(obs: np.ndarray) -> torch.Tensor:
    return torch.as_tensor(obs).permute(0, 3, 1, 2).float()


def train(agent: Agent, env_id: str, steps: int, seed: int, n_steps: int = 128) -> None:
    """A compact CleanRL-style PPO loop (one env, GAE, clipped objective)."""
    env = gym.vector.SyncVectorEnv([lambda: gym.make(env_id)])
    optimizer = torch.optim.Adam(agent.parameters(), lr=2.5e-4, eps=1e-5)
    obs, _ = env.reset(seed=seed)
    for _ in range(max(1, steps // n_steps)):
        batch_obs, actions, log_probs, rewards, dones, values = [], [], [], [], [], []
        for _ in range(n_steps):
            with torch.no_grad():
                action, log_prob, _, value = agent.get_action_and_value(to_input(obs))
            batch_obs.append(obs)
            next_obs, reward, terminated, truncated, _ = env.step(action.numpy())
            actions.append(action)
            log_probs.append(log_prob)
            values.append(value.flatten())
            rewards.append(torch.as_tensor(reward, dtype=torch.float32))
            dones.append(torch.as_tensor(terminated | truncated, dtype=torch.float32))
            obs = next_obs
        with torch.no_grad():
            next_value = agent.get_value(to_input(obs)).flatten()
        advantages, last = torch.zeros(n_steps), torch.zeros(1)
        for t in reversed(range(n_steps)):
            following = next_value if t == n_steps - 1 else values[t + 1]
            delta = rewards[t] + 0.99 * following * (1 - dones[t]) - values[t]
            last = delta + 0.99 * 0.95 * (1 - dones[t]) * last
            advantages[t] = last
        returns = advantages + torch.cat(values)
        x = to_input(np.concatenate(batch_obs))
        old_log_probs, acts = torch.cat(log_probs), torch.cat(actions)
        for _ in range(4):
            _, new_log_prob, entropy, new_value = agent.get_action_and_value(x, acts)
            ratio = (new_log_prob - old_log_probs).exp()
            norm_adv = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
            pg_loss = torch.max(-norm_adv * ratio, -norm_adv * ratio.clamp(0.8, 1.2)).mean()
            loss = pg_loss + 0.5 * ((new_value.flatten() - returns) ** 2).mean() - 0.01 * entropy.mean()
            optimizer.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(agent.parameters(), 0.5)
            optimizer.step()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="rlviz/BoxReachSmall-v0")
    parser.add_argument("--steps", type=int, default=20_000, help="PPO training steps")
    parser.add_argument("--max-steps", type=int, default=None, help="cap on the explained episode's length")
    parser.add_argument("--out", default="videos/examples/cleanrl.mp4")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    torch.manual_seed(args.seed)
    env = gym.make(args.env, ground_truth=True)  # creating an env first also sets up headless GL
    agent = Agent(env.action_space.n)
    train(agent, args.env, args.steps, args.seed)

    policy = rlviz.PolicyAdapter.from_cleanrl(agent, action_names=envs.ACTION_NAMES)
    summary = rlviz.render_video(
        env, policy, out=args.out, methods=["gradient", "gradcam"], layer="network.4",
        seed=args.seed, max_steps=args.max_steps, agent_name=f"CleanRL-style PPO ({args.steps} steps)",
    )
    print(summary)


if __name__ == "__main__":
    main()
