"""Evaluate an agent on held-out seeds: success rate, steps to the box, return, vs the oracle.

Training draws episode seeds from ``[0, 1e6)`` (see :mod:`agents.vecenv`), so held-out seeds start
at 1e6 (:data:`HELD_OUT_START`). ``rlviz evaluate --train-gap`` also replays seeds the run actually
trained on and reports the gap; the command itself is :mod:`rlviz.cli.evaluate`.

The agent plays through :func:`rlviz.rollout.collect` (each episode samples from a generator
seeded by its reset seed), so an evaluation spread over an executor's workers in blocks of
episodes gives the serial run's numbers.
"""

from __future__ import annotations

import copy
import math
import sys
from collections.abc import Callable, Iterable, Sequence

import numpy as np
import torch

from rlviz.agents.policy import ActorCritic, make_adapter
from rlviz.agents.vecenv import TRAIN_SEED_RANGE, episode_seed, make_env
from rlviz.parallel import Executor, blocks_of, env_factory, play_parallel
from rlviz.rollout import Rollout, collect

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


def _play_scripted(env, act: Callable, seed: int) -> tuple[bool, int, float]:
    """One episode of a scripted policy from ``env.reset(seed=seed)`` with
    ``act(info) -> action`` (``info``: what the reset or the previous step returned); it reads
    the env, not the observations, so :mod:`rlviz.rollout` (which plays a policy network) cannot
    play it.

    Returns:
        ``(success, steps, return)``.
    """
    _, info = env.reset(seed=seed)
    total, n = 0.0, 0
    while True:
        _, reward, term, trunc, info = env.step(act(info))
        total += float(reward)
        n += 1
        if term or trunc:
            return bool(info.get("success", term)), n, total


def episode_numbers(rollout: Rollout) -> tuple[bool, int, float]:
    """What evaluation reports of an episode: success, steps and return (the env's rewards
    summed in double precision)."""
    return rollout.success, len(rollout), rollout.reward_sum


def summarise_episodes(seeds: list[int], episodes: Sequence[tuple], **extra) -> dict:
    """The keys :func:`evaluate` documents, from per-episode ``(success, steps, return)``."""
    successes, steps, returns = ([e[i] for e in episodes] for i in range(3))
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


@torch.no_grad()
def evaluate(
    model: ActorCritic,
    env_id: str,
    seeds: Sequence[int],
    deterministic: bool = False,
    env_kwargs: dict | None = None,
    max_steps: int | None = None,
    progress: bool = False,
    executor: Executor | None = None,
) -> dict:
    """Play one episode per seed and summarise (``progress``: a tqdm bar on stderr).

    A stochastic policy samples actions from a generator seeded by the episode seed, so results are
    reproducible. Runs in this process, one env, batch-1 inference; or with ``executor``, in
    blocks of episodes as its tasks (:func:`rlviz.parallel.play_parallel`), with the same numbers.

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
    options = dict(
        seeds=seeds, deterministic=deterministic, info_keys=("success",), max_steps=max_steps
    )
    try:
        check_env_fits(model, env)
        if executor is None:
            played = collect(env, make_adapter(model), len(seeds), **options)
            episodes = [episode_numbers(r) for r in _bar(played, progress, "held-out", len(seeds))]
        else:
            # A task gets no GPU: the workers play a CPU copy.
            on_cpu = copy.deepcopy(model).cpu() if _on_gpu(model) else model
            episodes = play_parallel(
                env_factory(env),
                make_adapter(on_cpu),
                executor,
                len(seeds),
                keep=episode_numbers,
                **options,
            )
    finally:
        env.close()
        model.train(was_training)
    return summarise_episodes(seeds, episodes, deterministic=bool(deterministic))


def _on_gpu(model: torch.nn.Module) -> bool:
    return next(model.parameters()).device.type != "cpu"


def _bar(items: Iterable, progress: bool, desc: str, total: int) -> Iterable:
    """``items`` (``total`` episodes), through a tqdm bar (stderr, closed at the end) when
    ``progress``."""
    if not progress:
        return items
    from tqdm.auto import tqdm

    return tqdm(items, total=total, desc=f"{desc} episodes", unit="ep", leave=False)


#: Scripted policies :func:`evaluate_oracle` plays: the oracle (knows the room) and the camera
#: limit (knows nothing of the box until it shows in the image; turns right or left until then).
SCRIPTED = ("oracle", "camera-right", "camera-left")


def evaluate_oracle(
    env_id: str,
    seeds: Sequence[int],
    env_kwargs: dict | None = None,
    progress: bool = False,
    policy: str = "oracle",
    executor: Executor | None = None,
) -> dict:
    """A scripted policy of :data:`SCRIPTED` (``envs.oracle``) on the same seeds; same keys as
    :func:`evaluate`. With ``executor``: in blocks of seeds as its tasks, the same numbers."""
    if policy not in SCRIPTED:
        raise ValueError(f"policy={policy!r}; expected one of {', '.join(SCRIPTED)}")
    seeds = [int(s) for s in seeds]
    if executor is None:
        return summarise_episodes(
            seeds, _scripted_episodes(env_id, seeds, env_kwargs, policy, progress)
        )
    size = max(1, math.ceil(len(seeds) / (2 * max(1, executor.workers))))
    calls = {block[0]: (env_id, block, env_kwargs, policy) for block in blocks_of(seeds, size)}
    blocks = executor.map(_scripted_episodes, calls, desc=f"{policy} blocks")
    return summarise_episodes(seeds, [episode for key in calls for episode in blocks[key]])


def _scripted_episodes(
    env_id: str, seeds: Sequence[int], env_kwargs: dict | None, policy: str, progress: bool = False
) -> list[tuple[bool, int, float]]:
    """``(success, steps, return)`` of the scripted ``policy`` on each seed."""
    from rlviz.envs.oracle import CameraLimitedOracle, oracle_action

    if policy != "oracle":  # the camera limit reads the box's visibility from the ground truth
        env_kwargs = {**(env_kwargs or {}), "ground_truth": True}
    env = make_env(env_id, env_kwargs)
    episodes = []
    try:
        for seed in _bar(seeds, progress, policy, len(seeds)):
            if policy == "oracle":
                act = lambda _info: oracle_action(env)  # noqa: E731
            else:
                camera = CameraLimitedOracle(turn=policy.removeprefix("camera-"))
                act = lambda info, camera=camera: camera.act(env, info)  # noqa: E731
            episodes.append(_play_scripted(env, act, seed))
    finally:
        env.close()
    return episodes
