"""Work split into small keyed tasks, run here or on Ray: the one parallel layer under videos,
the explorer, evaluation, t-SNE and checkpoint sweeps.

An :class:`Executor` maps a function over keyed calls (serially, or as Ray tasks with retries,
each worker set up once, e.g. headless GL); :func:`play_parallel` plays blocks of episodes as
tasks with exactly the serial run's rollouts (each episode samples from its own generator)::

    from rlviz.parallel import env_factory, make_executor, play_parallel

    with make_executor(workers=2, setup="rlviz.envs.headless:prepare") as executor:
        rollouts = play_parallel(env_factory(env), policy, executor, episodes=8, seed=0)
"""

from rlviz.parallel.episodes import env_factory, play_parallel
from rlviz.parallel.executor import (
    Executor,
    RayExecutor,
    SerialExecutor,
    blocks_of,
    make_executor,
    parallelism_hint,
    ray_available,
)

__all__ = [
    "Executor",
    "RayExecutor",
    "SerialExecutor",
    "blocks_of",
    "env_factory",
    "make_executor",
    "parallelism_hint",
    "play_parallel",
    "ray_available",
]
