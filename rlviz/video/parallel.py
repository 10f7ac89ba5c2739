""":func:`rlviz.video.render_video` with the episodes played in blocks and each episode's
explaining and encoding one task.

Every episode samples its actions from a generator of its own (:func:`rlviz.rollout.collect`),
so blocks of episodes play as tasks, each in its worker's copy of the env
(:func:`rlviz.parallel.episodes.play_parallel`). What costs the time (attribution over the episode,
composing and encoding every frame) depends only on the rollout, so each episode is then one
task; its video comes back as bytes and is written here atomically, so a cluster's workers need
no shared output folder. Same rollouts, same maps, same frames: the files equal the serial run's.
"""

from __future__ import annotations

import functools
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from rlviz.io import atomic_write_bytes
from rlviz.parallel.episodes import env_factory, play_parallel
from rlviz.parallel.executor import Executor
from rlviz.policy import PolicyAdapter, as_adapter
from rlviz.rollout import Rollout
from rlviz.spool import release_freed_memory
from rlviz.video.explain import DEFAULT_METHODS, check_methods
from rlviz.video.pipeline import (
    PanelsArg,
    VideoJob,
    VideoSummary,
    output_paths,
    panel_factory,
    top_down_capture,
)
from rlviz.video.writer import check_writable

__all__ = ["render_video_parallel"]


class _ActionNames:
    """What a worker knows of the env: the action names resolved here (``env.unwrapped``'s)."""

    def __init__(self, names: Sequence[str]):
        self.action_names = tuple(names)

    @property
    def unwrapped(self) -> _ActionNames:
        return self


def _capture(job: VideoJob, env):
    """A task's capture of its env's top-down map, as the job's panels show it (or None)."""
    return top_down_capture(env, job.panels())


def render_task(
    job: VideoJob, adapter: PolicyAdapter, env: _ActionNames, rollout: Rollout, meta: dict, suffix
) -> tuple[bytes, list[str], dict[str, float]]:
    """One episode's video: ``(file bytes, panel class names, stage seconds)``."""
    t0 = time.perf_counter()
    episode = job.explain(env, adapter, rollout, meta)
    release_freed_memory()  # raw maps and attribution buffers are gone
    t1 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="rlviz-video-") as folder:
        path = Path(folder) / f"episode{suffix}"
        used = job.write(episode, path)
        data = path.read_bytes()
    stages = {"explain": t1 - t0, "compose_encode": time.perf_counter() - t1}
    return data, [type(p).__name__ for p in used], stages


def render_video_parallel(
    env,
    policy: PolicyAdapter,
    executor: Executor,
    out="videos/run.mp4",
    methods: Sequence[str] = DEFAULT_METHODS,
    episodes: int = 1,
    *,
    panels: PanelsArg = None,
    per_action: str | None = None,
    gif: bool = False,
    name_prefix: str = "rl-explain",
    **options,
) -> VideoSummary:
    """:func:`rlviz.video.render_video` (same arguments, an env object, not an id) with the
    episodes played in blocks and every episode explained and encoded as one task on
    ``executor``; the same files. ``env`` must be remakable in a worker
    (:func:`rlviz.parallel.episodes.env_factory`).

    Returns:
        The :class:`~rlviz.video.VideoSummary`; its timings add up the workers' stage times.
    """
    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    adapter = as_adapter(policy)
    methods = list(methods)
    paths = output_paths(out, episodes, gif=gif, name_prefix=name_prefix)
    for path in paths:
        check_writable(path)
    check_methods(methods + ([per_action] if per_action else []))
    options["progress"] = False  # a worker's bar would interleave; the executor shows one
    job = VideoJob(
        methods=methods,
        panels=panel_factory(panels, methods, per_action),
        per_action=per_action,
        **options,
    )
    start = time.perf_counter()
    rollouts = play_parallel(
        env_factory(env),
        adapter,
        executor,
        episodes,
        seed=job.seed,
        deterministic=job.deterministic,
        max_steps=job.max_steps,
        info_keys=job.info_keys,
        capture=functools.partial(_capture, job),
    )
    played = time.perf_counter() - start
    env_name = getattr(getattr(env, "spec", None), "id", None)
    names = _ActionNames(adapter.action_names_for(rollouts[0].probs.shape[1], env))
    calls = {}
    for i, rollout in enumerate(rollouts):
        meta = {
            "agent": job.agent_name,
            "env": env_name,
            "seed": None if job.seed is None else job.seed + i,
            "episode": f"{i + 1}/{episodes}",
        }
        calls[i] = (job.window(rollout), meta, paths[i].suffix)  # --from-step/--to-step
    results = executor.map(render_task, calls, (job, adapter, names), desc="videos")
    summary = VideoSummary(timings={"rollout": played, "explain": 0.0, "compose_encode": 0.0})
    for i, path in enumerate(paths):
        data, used, stages = results[i]
        atomic_write_bytes(path, data)
        summary.add(path, rollouts[i], [], stages)
        summary.panels = used
    summary.seconds = time.perf_counter() - start
    return summary
