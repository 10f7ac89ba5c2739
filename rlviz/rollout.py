"""Run a policy in any Gymnasium env with image observations and keep what explanations need."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from rlviz.adapters import PolicyAdapter


@dataclass
class Rollout:
    """One episode. Arrays are indexed by step t = 0 .. T-1 (the state s_t the agent acted in).

    Attributes:
        obs: uint8 [T, H, W, C], what the policy saw.
        actions: int64 [T], the action taken (sampled, or greedy when deterministic).
        probs: float32 [T, A], pi(.|s_t).
        values: float32 [T], V(s_t), or None for a policy without critic.
        rewards: float32 [T], reward received after a_t.
        infos: per-step arrays stacked over t, for every requested info key present at each step
            (for BoxReach with ground truth: ``goal_mask`` bool [T, H, W], ``agent_pos`` [T, 2], ...).
        terminated / truncated: how the episode ended.
        seed: the reset seed, when one was given.
    """

    obs: np.ndarray
    actions: np.ndarray
    probs: np.ndarray
    values: np.ndarray | None
    rewards: np.ndarray
    infos: dict[str, np.ndarray] = field(default_factory=dict)
    terminated: bool = False
    truncated: bool = False
    seed: int | None = None

    def __len__(self) -> int:
        return len(self.actions)

    @property
    def success(self) -> bool:
        """Whether the episode ended by reaching its goal (an ``info["success"]`` flag, else termination with reward > 0)."""
        if "success" in self.infos:
            return bool(np.any(self.infos["success"]))
        return bool(self.terminated and self.rewards.sum() > 0)

    @property
    def episode_return(self) -> float:
        return float(self.rewards.sum())


def _stack_infos(per_step: list[dict], keys: Sequence[str] | None) -> dict[str, np.ndarray]:
    if not per_step:
        return {}
    wanted = keys if keys is not None else list(per_step[0])
    stacked = {}
    for key in wanted:
        if all(key in info for info in per_step):
            try:
                stacked[key] = np.stack([np.asarray(info[key]) for info in per_step])
            except ValueError:  # ragged (e.g. a varying number of objects): keep as object array
                stacked[key] = np.array([info[key] for info in per_step], dtype=object)
    return stacked


def run_episode(
    env,
    policy: PolicyAdapter,
    *,
    seed: int | None = None,
    deterministic: bool = False,
    info_keys: Sequence[str] | None = None,
    max_steps: int | None = None,
    generator: torch.Generator | None = None,
) -> Rollout:
    """Play one episode of ``policy`` in ``env`` (a Gymnasium env) and return it as a :class:`Rollout`.

    A stochastic policy samples a_t ~ pi(.|s_t) with ``generator``; ``deterministic`` takes argmax.
    ``info_keys`` limits which ``info`` entries are kept (all array-like ones by default). The info kept
    for step t describes s_t (the reset info for t = 0), so masks line up with ``obs[t]``.
    """
    obs, info = env.reset(seed=seed)
    frames, actions, probs, values, rewards, infos = [], [], [], [], [], []
    terminated = truncated = False
    while not (terminated or truncated):
        out = policy(obs)
        pi = out.probs[0].float().cpu()
        if deterministic:
            action = int(pi.argmax())
        else:
            action = int(torch.multinomial(pi, 1, generator=generator))
        frames.append(np.asarray(obs))
        infos.append(info)
        actions.append(action)
        probs.append(pi.numpy())
        values.append(None if out.value is None else float(out.value[0]))
        obs, reward, terminated, truncated, info = env.step(action)
        rewards.append(float(reward))
        if "success" in info and "success" in infos[-1]:
            # success is an event of the step a_t led to: credit it to t.
            infos[-1] = {**infos[-1], "success": info["success"]}
        if max_steps is not None and len(actions) >= max_steps:
            truncated = True
    return Rollout(
        obs=np.stack(frames),
        actions=np.asarray(actions, dtype=np.int64),
        probs=np.stack(probs).astype(np.float32),
        values=None if values[0] is None else np.asarray(values, dtype=np.float32),
        rewards=np.asarray(rewards, dtype=np.float32),
        infos=_stack_infos(infos, info_keys),
        terminated=bool(terminated),
        truncated=bool(truncated),
        seed=seed,
    )


def collect(
    env,
    policy: PolicyAdapter,
    episodes: int = 1,
    *,
    seed: int | None = None,
    deterministic: bool = False,
    info_keys: Sequence[str] | None = None,
    max_steps: int | None = None,
) -> Iterator[Rollout]:
    """Yield ``episodes`` rollouts; episode i is reset with ``seed + i`` (when ``seed`` is given),
    and action sampling is seeded from ``seed`` too, so the same call gives the same episodes."""
    generator = torch.Generator()
    generator.manual_seed(0 if seed is None else seed)
    for i in range(episodes):
        yield run_episode(
            env,
            policy,
            seed=None if seed is None else seed + i,
            deterministic=deterministic,
            info_keys=info_keys,
            max_steps=max_steps,
            generator=generator,
        )
