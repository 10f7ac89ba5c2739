"""Evaluate an agent on held-out seeds: success rate, steps to the box, return, vs the oracle.

Training draws episode seeds from ``[0, 1e6)`` (see :mod:`agents.vecenv`), so held-out seeds start
at 1e6 (:data:`HELD_OUT_START`). ``rlviz evaluate --train-gap`` also replays seeds the run actually
trained on and reports the gap; the command itself is :mod:`rlviz.cli.evaluate`.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence

import numpy as np
import torch

from rlviz.agents.policy import ActorCritic, preprocess
from rlviz.agents.vecenv import TRAIN_SEED_RANGE, episode_seed, make_env

HELD_OUT_START = TRAIN_SEED_RANGE


def held_out_seeds(n: int, start: int = HELD_OUT_START) -> list[int]:
    """``n`` consecutive seeds from ``start`` (>= 1e6 by default: never used in training)."""
    return list(range(start, start + n))


def training_seeds(n: int, seed: int, num_envs: int) -> list[int]:
    """The first ``n`` episode seeds a run seeded ``seed`` with ``num_envs`` envs trained on."""
    return [episode_seed(seed, i % num_envs, i // num_envs) for i in range(n)]


def check_env_fits(model: ActorCritic, env) -> None:
    """Raise ValueError (one line: what the model reads, what the env gives) unless ``model``
    can play ``env``: observation shape, action count and names."""
    shape = tuple(env.observation_space.shape)
    if tuple(model.arch.obs_shape) != shape:
        raise ValueError(
            f"the model reads observations {tuple(model.arch.obs_shape)} but the env gives {shape}; "
            "play it in the env (and obs size) it was trained on: leave --env out"
        )
    n = getattr(env.action_space, "n", None)
    if n is None:
        raise ValueError(
            f"the model picks one of {len(model.action_names)} discrete actions but the env's "
            f"action space is {env.action_space}; play it in an env with discrete actions"
        )
    if int(n) != len(model.action_names):
        raise ValueError(f"the model has {len(model.action_names)} actions but the env has {n}")
    names = getattr(env.unwrapped, "ACTION_NAMES", None) or _env_action_names(env)
    if names is not None and tuple(names) != tuple(model.action_names):
        raise ValueError(
            f"action names differ: model {tuple(model.action_names)} vs env {tuple(names)}; the "
            "checkpoint was trained with another action order"
        )


def _env_action_names(env) -> tuple[str, ...] | None:
    module = sys.modules.get(type(env.unwrapped).__module__)
    names = getattr(module, "ACTION_NAMES", None)
    return tuple(names) if names is not None else None


def _play(env, act: Callable, seed: int, max_steps: int | None = None):
    """One episode from ``env.reset(seed=seed)`` with ``act(obs, info) -> action`` (``info``:
    what the reset or the previous step returned).

    Returns:
        ``(last info, terminated, last reward, return, steps)``.
    """
    obs, info = env.reset(seed=seed)
    total, n = 0.0, 0
    while True:
        obs, reward, term, trunc, info = env.step(act(obs, info))
        total += float(reward)
        n += 1
        if term or trunc or (max_steps is not None and n >= max_steps):
            return info, term, reward, total, n


def summarise_episodes(
    seeds: list[int], successes: list, steps: list, returns: list, **extra
) -> dict:
    """The keys :func:`evaluate` documents, from per-episode lists."""
    ok = [s for s, good in zip(steps, successes, strict=True) if good]
    return {
        "episodes": len(seeds),
        "success_rate": float(np.mean(successes)),
        "mean_steps": float(np.mean(steps)),
        "mean_steps_success": float(np.mean(ok)) if ok else float("nan"),
        "mean_return": float(np.mean(returns)),
        **extra,
        "seeds": seeds,
        "successes": successes,
        "steps": steps,
        "returns": returns,
    }


def _actor(model: ActorCritic, deterministic: bool, generator: torch.Generator) -> Callable:
    """``obs -> action`` of ``model``: greedy, or sampled from ``generator``."""
    device = next(model.parameters()).device

    def act(obs, _info=None) -> int:
        logits, _ = model(preprocess(obs, device))
        if deterministic:
            return int(logits[0].argmax())
        probs = torch.softmax(logits[0].float().cpu(), -1)
        return int(torch.multinomial(probs, 1, generator=generator))

    return act


@torch.no_grad()
def evaluate(
    model: ActorCritic,
    env_id: str,
    seeds: Sequence[int],
    deterministic: bool = False,
    env_kwargs: dict | None = None,
    max_steps: int | None = None,
    progress: bool = False,
) -> dict:
    """Play one episode per seed and summarise (``progress``: a tqdm bar on stderr).

    A stochastic policy samples actions from a generator seeded by the episode seed, so results are
    reproducible. Runs in this process, one env, batch-1 inference.

    Returns:
        dict with ``success_rate``, ``mean_steps`` (all episodes; a failure counts its full length),
        ``mean_steps_success``, ``mean_return``, ``episodes`` and per-episode lists ``seeds``,
        ``successes``, ``steps``, ``returns``.
    """
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise ValueError("evaluate needs at least one seed")
    was_training = model.training
    model.eval()
    # A policy with memory reads K stacked frames: play it in the same stack it trained in.
    frames = int(getattr(getattr(model, "arch", None), "frames", 1))
    env = make_env(env_id, env_kwargs, frame_stack=frames)
    successes, steps, returns = [], [], []
    try:
        check_env_fits(model, env)
        for seed in _bar(seeds, progress, "held-out episodes"):
            act = _actor(model, deterministic, torch.Generator().manual_seed(seed))
            info, term, reward, total, n = _play(env, act, seed, max_steps)
            successes.append(bool(info.get("success", term and reward > 0)))
            steps.append(n)
            returns.append(total)
    finally:
        env.close()
        model.train(was_training)
    return summarise_episodes(seeds, successes, steps, returns, deterministic=bool(deterministic))


def _bar(seeds: list[int], progress: bool, desc: str):
    """``seeds``, through a tqdm bar (stderr, closed at the end) when ``progress``."""
    if not progress:
        return seeds
    from tqdm.auto import tqdm

    return tqdm(seeds, desc=desc, unit="ep", leave=False)


#: Scripted policies :func:`evaluate_oracle` plays: the oracle (knows the room) and the camera
#: limit (knows nothing of the box until it shows in the image; turns right or left until then).
SCRIPTED = ("oracle", "camera-right", "camera-left")


def evaluate_oracle(
    env_id: str,
    seeds: Sequence[int],
    env_kwargs: dict | None = None,
    progress: bool = False,
    policy: str = "oracle",
) -> dict:
    """A scripted policy of :data:`SCRIPTED` (``envs.oracle``) on the same seeds; same keys as
    :func:`evaluate`."""
    from rlviz.envs.oracle import CameraLimitedOracle, oracle_action

    if policy not in SCRIPTED:
        raise ValueError(f"policy={policy!r}; expected one of {', '.join(SCRIPTED)}")
    seeds = [int(s) for s in seeds]
    if policy != "oracle":  # the camera limit reads the box's visibility from the ground truth
        env_kwargs = {**(env_kwargs or {}), "ground_truth": True}
    env = make_env(env_id, env_kwargs)
    successes, steps, returns = [], [], []
    try:
        for seed in _bar(seeds, progress, f"{policy} episodes"):
            if policy == "oracle":
                act = lambda _obs, _info: oracle_action(env)  # noqa: E731
            else:
                camera = CameraLimitedOracle(turn=policy.removeprefix("camera-"))
                act = lambda _obs, info, camera=camera: camera.act(env, info)  # noqa: E731
            info, term, _, total, n = _play(env, act, seed)
            successes.append(bool(info.get("success", term)))
            steps.append(n)
            returns.append(total)
    finally:
        env.close()
    return summarise_episodes(seeds, successes, steps, returns)
