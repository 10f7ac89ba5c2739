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

import dataclasses
import functools
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from rlviz.io import atomic_write_bytes
from rlviz.options import VideoOptions, merge_options, video_episode_meta
from rlviz.parallel.episodes import env_factory, play_parallel
from rlviz.parallel.executor import Executor
from rlviz.policy import PolicyAdapter
from rlviz.rollout import Rollout
from rlviz.spool import release_freed_memory
from rlviz.video.pipeline import VideoJob, VideoSummary, prepare_job, top_down_capture

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
    *,
    options: VideoOptions | None = None,
    **fields,
) -> VideoSummary:
    """:func:`rlviz.video.render_video` (same options, an env object, not an id) with the
    episodes played in blocks and every episode explained and encoded as one task on
    ``executor``; the same files. ``env`` must be remakable in a worker
    (:func:`rlviz.parallel.episodes.env_factory`).

    Returns:
        The :class:`~rlviz.video.VideoSummary`; its timings add up the workers' stage times.
    """
    options = merge_options(VideoOptions, options, fields, "render_video_parallel")
    if options.obs_key is not None:
        raise ValueError("render_video_parallel takes no obs_key: give an env of images")
    # a worker's bar would interleave; the executor shows one
    job, adapter, paths = prepare_job(policy, out, dataclasses.replace(options, progress=False))
    start = time.perf_counter()
    rollouts = play_parallel(
        env_factory(env),
        adapter,
        executor,
        options.episodes,
        seed=options.seed,
        deterministic=options.deterministic,
        max_steps=options.max_steps,
        info_keys=options.info_keys,
        capture=functools.partial(_capture, job),
    )
    played = time.perf_counter() - start
    env_name = getattr(getattr(env, "spec", None), "id", None)
    names = _ActionNames(adapter.action_names_for(rollouts[0].probs.shape[1], env))
    calls = {}
    for i, rollout in enumerate(rollouts):
        shown = job.window(rollout)  # --from-step/--to-step
        meta = video_episode_meta(options, env_name, i, len(rollout), len(shown))
        calls[i] = (shown, meta, paths[i].suffix)
    results = executor.map(render_task, calls, (job, adapter, names), desc="videos")
    summary = VideoSummary(timings={"rollout": played, "explain": 0.0, "compose_encode": 0.0})
    for i, path in enumerate(paths):
        data, used, stages = results[i]
        atomic_write_bytes(path, data)
        summary.add(path, rollouts[i], [], stages)
        summary.panels = used
    summary.seconds = time.perf_counter() - start
    return summary
