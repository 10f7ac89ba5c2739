"""Episodes played as executor tasks: blocks of :func:`rlviz.rollout.collect`, each in its
worker's own env, gathered in order; the same rollouts as one serial ``collect``.

Every episode samples its actions from a generator of its own (seeded by its reset seed, see
:func:`rlviz.rollout.sampler_of`), so a block of episodes [a, b) played alone equals
those episodes of the serial run. A live env (MiniWorld holds a GL context) cannot travel to a
worker; a picklable factory does (:func:`env_factory`: ``gymnasium.make`` of the env's spec).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from rlviz.parallel.executor import Executor, blocks_of
from rlviz.policy import PolicyAdapter, as_adapter
from rlviz.rollout import Rollout, collect

__all__ = ["env_factory", "play_block", "play_parallel"]

#: Makes a fresh env (in a worker); picklable.
EnvFactory = Callable[[], Any]
#: An env -> a capture for :class:`rlviz.rollout.EpisodeRecorder` (one image per state), or None.
CaptureFactory = Callable[[Any], Callable[[], np.ndarray] | None]


def _make_from_spec(spec) -> Any:
    import gymnasium as gym

    return gym.make(spec)


def env_factory(env) -> EnvFactory:
    """A picklable function making a fresh copy of ``env``: ``gymnasium.make(env.spec)``, the
    same id, kwargs and wrappers.

    Raises:
        ValueError: ``env`` has no spec (not made by ``gymnasium.make``), or a wrapper of it does
            not record its arguments (``gymnasium.utils.RecordConstructorArgs``).
    """
    spec = getattr(env, "spec", None)
    if spec is None:
        raise ValueError(
            f"cannot remake {type(env).__name__} in a worker: it has no spec (make it with "
            "gymnasium.make), or play its episodes serially"
        )
    unrecorded = [w.name for w in spec.additional_wrappers if w.kwargs is None]
    if unrecorded:
        raise ValueError(
            f"cannot remake env {spec.id!r} in a worker: wrapper(s) {', '.join(unrecorded)} do "
            "not record their arguments; have them inherit gymnasium.utils.RecordConstructorArgs"
        )
    return functools.partial(_make_from_spec, spec)


def play_block(
    make_env: EnvFactory,
    adapter: PolicyAdapter,
    first: int,
    count: int,
    capture: CaptureFactory | None = None,
    keep: Callable[[Rollout], Any] | None = None,
    **options,
) -> list:
    """One task: episodes ``first .. first + count - 1`` of ``collect(**options)`` in a fresh env
    from ``make_env`` (closed after); each as ``keep(rollout)`` when given."""
    env = make_env()
    try:
        recorder = None if capture is None else capture(env)
        played = collect(env, adapter, count, first_episode=first, capture=recorder, **options)
        return [rollout if keep is None else keep(rollout) for rollout in played]
    finally:
        env.close()


def play_parallel(
    make_env: EnvFactory,
    policy: PolicyAdapter,
    executor: Executor,
    episodes: int,
    *,
    seed: int | None = None,
    seeds: Sequence[int] | None = None,
    deterministic: bool = False,
    info_keys: Sequence[str] | None = None,
    max_steps: int | None = None,
    capture: CaptureFactory | None = None,
    keep: Callable[[Rollout], Any] | None = None,
    block_size: int | None = None,
    desc: str = "episode blocks",
) -> list:
    """The ``episodes`` rollouts of ``collect(env, policy, episodes, seed=seed, ...)`` (or with
    ``seeds=seeds``), played in blocks of ``block_size`` episodes (default: two blocks per
    worker), one task each.

    Args:
        make_env: picklable, makes the env in each task (:func:`env_factory`).
        capture: called with a task's env for its per-state capture (``Rollout.views``).
        keep: picklable, what a task sends back of each rollout (``keep(rollout)``), e.g. only
            the numbers evaluation reports, not the observations.

    Returns:
        The rollouts (or what ``keep`` made of them), episode 0 first.
    """
    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    size = block_size or max(1, math.ceil(episodes / (2 * max(1, executor.workers))))
    calls = {block[0]: (block[0], len(block)) for block in blocks_of(range(episodes), size)}
    task = functools.partial(
        play_block,
        capture=capture,
        keep=keep,
        seed=seed,
        seeds=None if seeds is None else tuple(int(s) for s in seeds),
        deterministic=deterministic,
        info_keys=info_keys,
        max_steps=max_steps,
    )
    blocks = executor.map(task, calls, (make_env, as_adapter(policy)), desc=desc)
    return [rollout for first in calls for rollout in blocks[first]]
