""":func:`rlviz.video.render_video` with the episodes played in blocks as tasks
(:func:`rlviz.parallel.episodes.play_parallel`; each samples from a generator of its own), then
each episode explained and encoded as one task (that depends only on its rollout). Videos come
back as bytes and are written here atomically, so workers need no shared output folder; the
files equal the serial run's.
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from pathlib import Path

from rlviz.io import atomic_write_bytes
from rlviz.options import VideoOptions, merge_options, video_episode_meta
from rlviz.parallel.episodes import env_factory, play_parallel
from rlviz.parallel.executor import Executor
from rlviz.policy import PolicyAdapter
from rlviz.rollout import Rollout
from rlviz.spool import release_freed_memory
from rlviz.video.pipeline import VideoJob, VideoSummary, prepare_job

__all__ = ["render_video_parallel"]


def render_task(
    job: VideoJob, adapter: PolicyAdapter, rollout: Rollout, names, meta: dict, suffix
) -> tuple[bytes, list[str], dict[str, float]]:
    """One episode's video: ``(file bytes, panel class names, stage seconds)``; ``names``: the
    action names, resolved on the driver (the worker has no env)."""
    t0 = time.perf_counter()
    episode = job.explain(names, adapter, rollout, meta)
    release_freed_memory()  # raw maps and attribution buffers are gone
    t1 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="rlviz-video-") as folder:
        path = Path(folder) / f"episode{suffix}"
        used = job.write(episode, path)
        data = path.read_bytes()
    stages = {"explain": t1 - t0, "compose_encode": time.perf_counter() - t1}
    return data, used, stages


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
        capture=job.capture,
        **job.play_options(),
    )
    summary = VideoSummary()
    summary.timings["rollout"] = time.perf_counter() - start
    env_name = getattr(getattr(env, "spec", None), "id", None)
    calls = {}
    for i, rollout in enumerate(rollouts):
        shown = job.window(rollout)  # --from-step/--to-step
        meta = video_episode_meta(options, env_name, i, len(rollout), len(shown))
        names = adapter.action_names_for(shown.action_count, env)
        calls[i] = (shown, names, meta, paths[i].suffix)
    results = executor.map(render_task, calls, (job, adapter), desc="videos")
    for i, path in enumerate(paths):
        data, used, stages = results[i]
        atomic_write_bytes(path, data)
        summary.add(path, rollouts[i], used, stages)
    summary.seconds = time.perf_counter() - start
    return summary
