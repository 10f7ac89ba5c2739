"""Explanation videos: play episodes, explain each in batches, compose and stream annotated frames.

Per episode: (1) the policy plays it (:func:`rlviz.rollout.collect`), recording the env's top-down
map when it has one; (2) every method explains the whole episode in chunks
(:func:`rlviz.video.explain.explain_episode`), maps normalised over the episode, states placed on
a fitted state map; (3) for each step the panels render tiles, :class:`rlviz.video.grid.Composer`
lays them out and :class:`rlviz.video.writer.VideoWriter` streams the frame to ffmpeg. Only the
episode's small per-step data is held (observation, goal mask, float16 maps at observation size, a
compressed top-down view: ~45 KB a step at 60x80); composed frames (~1.6 MB each) never pile up.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rlviz.explain import check_window, device_batch, on_device
from rlviz.gym_env import as_gym_env
from rlviz.methods import check_methods
from rlviz.ops import torch_threads
from rlviz.options import VideoOptions, merge_options, video_episode_meta
from rlviz.policy import PolicyAdapter, as_adapter
from rlviz.rollout import Rollout, collect
from rlviz.spool import Spool, map_large_blocks, release_freed_memory
from rlviz.video.episode import EpisodeExplanation
from rlviz.video.explain import explain_episode
from rlviz.video.grid import Composer
from rlviz.video.panels import TopDownPanel, default_panels
from rlviz.video.writer import FORMATS, VideoWriter, check_writable


@dataclass
class VideoSummary:
    """What :func:`render_video` did.

    Attributes:
        paths: the videos written, one per episode.
        episodes, successes, frames: counts; seconds: wall time in total.
        returns, lengths: per episode.
        timings: seconds per stage (rollout, explain, compose_encode).
        panels: class names of the panels shown (of the last episode).
    """

    paths: list[Path] = field(default_factory=list)
    episodes: int = 0
    successes: int = 0
    frames: int = 0
    seconds: float = 0.0
    returns: list[float] = field(default_factory=list)
    lengths: list[int] = field(default_factory=list)
    timings: dict[str, float] = field(
        default_factory=lambda: {"rollout": 0.0, "explain": 0.0, "compose_encode": 0.0}
    )
    panels: list[str] = field(default_factory=list)

    @property
    def fps(self) -> float:
        """Frames written per second of wall time, end to end."""
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    def add(self, path: Path, rollout: Rollout, panels: list[str], timings: dict[str, float]):
        """Count one written episode: its file, rollout, the panels shown (class names) and stage
        times."""
        self.panels = panels
        for stage, seconds in timings.items():
            self.timings[stage] = self.timings.get(stage, 0.0) + seconds
        self.paths.append(path)
        self.episodes += 1
        self.successes += int(rollout.success)
        self.frames += len(rollout)
        self.returns.append(rollout.episode_return)
        self.lengths.append(len(rollout))

    def __str__(self) -> str:
        head = (
            f"episodes: {self.episodes}   success: {self.successes}/{self.episodes}   "
            f"frames: {self.frames}   seconds: {self.seconds:.1f} ({self.fps:.0f} frames/s)"
        )
        rows = zip(self.paths, self.lengths, self.returns, strict=True)
        return "\n".join([head, *(f"  {p}  ({n} steps, return {r:.2f})" for p, n, r in rows)])


def output_paths(
    out: str | os.PathLike, episodes: int, *, gif: bool = False, name_prefix: str = "rl-explain"
) -> list[Path]:
    """Where :func:`render_video` writes each episode.

    A file path (``.mp4``/``.gif``) is used as is for one episode and numbered
    (``run-episode-0.mp4``, ...) for several; any other path is a folder that receives
    ``{name_prefix}-episode-{i}.mp4`` (``.gif`` with ``gif=True``), Gymnasium RecordVideo's naming.
    """
    out = Path(out)
    if out.suffix.lower() in FORMATS:
        if episodes == 1:
            return [out]
        return [out.with_name(f"{out.stem}-episode-{i}{out.suffix}") for i in range(episodes)]
    if out.suffix and not out.is_dir():  # an existing folder is a folder, dots or not
        raise ValueError(
            f"output {str(out)!r} has suffix {out.suffix!r}; "
            "give a folder or a file ending in .mp4 or .gif"
        )
    suffix = ".gif" if gif else ".mp4"
    return [out / f"{name_prefix}-episode-{i}{suffix}" for i in range(episodes)]


def top_down_capture(env, panels: Sequence) -> Callable[[], np.ndarray] | None:
    """What records the env's top-down map at the size the :class:`TopDownPanel` shows, or None
    when no panel shows one or the env draws none (``env.unwrapped.top_down_map(size=...)``)."""
    size = next((p.map_size for p in panels if isinstance(p, TopDownPanel)), None)
    draw = getattr(env.unwrapped, "top_down_map", None)
    if size is None or not callable(draw):
        return None
    return lambda: draw(size=size)


def select_panels(panels, episode: EpisodeExplanation) -> list:
    """The panels that ``episode`` can feed (e.g. no top-down view for an env without one)."""
    kept = [p for p in panels if p.available(episode)]
    if not kept:
        names = ", ".join(type(p).__name__ for p in panels)
        raise ValueError(f"none of the panels ({names}) can show this episode")
    return kept


def render_episode(
    episode: EpisodeExplanation,
    out: str | os.PathLike,
    panels: Sequence | None = None,
    *,
    fps: float = 15,
    on_frame: Callable[[int], None] | None = None,
    crf: int = 23,
    preset: str = "veryfast",
) -> list:
    """Write the video of one explained episode to ``out`` (``.mp4`` or ``.gif``) frame by frame,
    atomically (nothing is at ``out`` if rendering fails), leaving out the panels the episode
    cannot feed; returns the panels used, in layout order."""
    chosen = select_panels(
        panels if panels is not None else default_panels(list(episode.maps)), episode
    )
    composer = Composer(chosen)
    composer.prepare(episode, title=episode.title())
    with VideoWriter(out, fps=fps, crf=crf, preset=preset) as writer:
        for t in range(len(episode)):
            writer.write(composer.frame(t, episode))
            if on_frame is not None:
                on_frame(t)
    return chosen


def make_env(env_id: str, **kwargs: Any):
    """``gymnasium.make(env_id, **kwargs)``, with an error that says what to do for unknown ids
    (an application's ids, rlviz's BoxReach: ``import rlviz.envs``, must be registered first)."""
    import gymnasium as gym  # only when an id is given: `import rlviz` loads no gymnasium

    try:
        return gym.make(env_id, **kwargs)
    except gym.error.Error as exc:
        known = sorted(gym.registry)
        shown = ", ".join(known[:40]) + (", ..." if len(known) > 40 else "")
        raise ValueError(
            f"cannot make env {env_id!r} ({exc}); registered ids: {shown}. Pass an env, or "
            "import the package that registers the id first (rlviz/... ids: `import rlviz.envs`)"
        ) from None


@contextmanager
def _opened(env) -> Iterator[tuple[Any, str | None]]:
    """(env, its id): an id is made here and closed afterwards; an env is the caller's."""
    if not isinstance(env, str):
        yield env, getattr(getattr(env, "spec", None), "id", None)
        return
    made = make_env(env)
    try:
        yield made, env
    finally:
        made.close()  # we made it, we close it


def _check_image_env(env) -> None:
    shape = getattr(getattr(env, "observation_space", None), "shape", None)
    if shape is not None and len(shape) not in (2, 3, 4):  # 4: a frame stack [K, H, W, C]
        raise ValueError(
            f"render_video needs image observations [H, W, C] (or a stack of them, [K, H, W, C]); "
            f"this env's observation space is {env.observation_space}. Wrap it (e.g. "
            "gymnasium.wrappers.AddRenderObservation) to get pixels"
        )


@dataclass
class VideoJob:
    """One :func:`render_video` call's settings (a :class:`VideoOptions`) and the loop that runs
    it."""

    options: VideoOptions

    def panels(self) -> list:
        """Fresh panels: ``options.panels()`` when it is a factory, a list of the given ones, or
        :func:`rlviz.video.panels.default_panels`."""
        o = self.options
        if o.panels is None:
            return default_panels(list(o.methods), per_action=o.per_action)
        return list(o.panels() if callable(o.panels) else o.panels)

    def run(self, env, adapter: PolicyAdapter, paths: list[Path], env_name: str | None):
        """Play, explain and write one episode per path; returns the :class:`VideoSummary`."""
        summary = VideoSummary()
        start = time.perf_counter()
        threads = self.options.threads
        bar = None
        if self.options.progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=0, unit="frame", desc="rendering", dynamic_ncols=True)
        with (
            nullcontext() if bar is None else bar,
            torch_threads(threads) if threads else nullcontext(),
        ):
            map_large_blocks()  # chunk-sized arrays unmapped when freed: a flat heap
            capture = self.capture(env)
            for i, path in enumerate(paths):
                # per-step data (observations, masks, views, maps) lives in chunk files on disk
                # for the episode's life: memory stays flat however long it runs
                with Spool() as spool:
                    t0 = time.perf_counter()
                    how = dict(capture=capture, first_episode=i, spool=spool, **self.play_options())
                    played = next(collect(env, adapter, 1, **how))  # episode i: seed + i
                    rollout = self.window(played)
                    t1 = time.perf_counter()
                    meta = video_episode_meta(self.options, env_name, i, len(played), len(rollout))
                    names = adapter.action_names_for(rollout.action_count, env)
                    episode = self.explain(names, adapter, rollout, meta, spool)
                    release_freed_memory()  # raw maps and attribution buffers are gone
                    t2 = time.perf_counter()
                    used = self.write(episode, path, bar)
                    t3 = time.perf_counter()
                    stages = {"rollout": t1 - t0, "explain": t2 - t1, "compose_encode": t3 - t2}
                    summary.add(path, rollout, used, stages)
                    del episode, rollout, played  # before the next episode is played
        summary.seconds = time.perf_counter() - start
        return summary

    def capture(self, env) -> Callable[[], np.ndarray] | None:
        """What records ``env``'s top-down map for these panels (:func:`top_down_capture`)."""
        return top_down_capture(env, self.panels())

    def play_options(self) -> dict[str, Any]:
        """How :func:`rlviz.rollout.collect` plays the episodes (seeds, greedy, length, infos)."""
        o = self.options
        return dict(
            seed=o.seed, deterministic=o.deterministic, max_steps=o.max_steps, info_keys=o.info_keys
        )

    def window(self, rollout: Rollout) -> Rollout:
        """The steps to explain and draw: ``from_step`` .. ``to_step`` (all by default)."""
        first, stop = self.options.from_step, self.options.to_step
        if first == 0 and (stop is None or stop >= len(rollout)):
            return rollout
        if first >= len(rollout):
            raise ValueError(
                f"from_step={first} is past the episode's end ({len(rollout)} steps); "
                f"give a from_step below {len(rollout)}"
            )
        return rollout.window(first, stop)

    def explain(
        self, action_names, adapter: PolicyAdapter, rollout: Rollout, meta: dict, spool=None
    ):
        """The :class:`EpisodeExplanation` of one played episode."""
        o = self.options
        return explain_episode(
            adapter,
            rollout,
            o.methods,
            layer=o.layer,
            normalize=o.normalize,
            per_action=o.per_action,
            embedding=o.embedding,
            top_down=rollout.views,
            action_names=action_names,
            batch_size=o.batch_size or device_batch(adapter.device),
            meta=meta,
            spool=spool,
        )

    def write(self, episode: EpisodeExplanation, path: Path, bar=None) -> list[str]:
        """Stream the episode's video to ``path``; returns the class names of the panels used."""
        if bar is not None:
            bar.total += len(episode)
            bar.set_postfix_str(f"episode {episode.meta['episode']}")
            bar.refresh()
        used = render_episode(
            episode,
            path,
            self.panels(),
            fps=self.options.fps,
            crf=self.options.crf,
            preset=self.options.preset,
            on_frame=(lambda _t: bar.update(1)) if bar is not None else None,
        )
        return [type(p).__name__ for p in used]


def prepare_job(
    policy: PolicyAdapter | torch.nn.Module, out: str | os.PathLike, options: VideoOptions
) -> tuple[VideoJob, PolicyAdapter, list[Path]]:
    """What a :func:`render_video` call needs before it plays: the job, the policy's adapter (on
    ``options.device``) and the output paths, each checked (writable, known methods)."""
    if options.episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {options.episodes}")
    check_window(options.from_step, options.to_step, options.max_steps)
    adapter = as_adapter(policy)
    if options.device is not None:
        adapter = on_device(adapter, options.device)
    paths = output_paths(out, options.episodes, gif=options.gif, name_prefix=options.name_prefix)
    for path in paths:
        check_writable(path)
    check_methods(options.methods + ([options.per_action] if options.per_action else []))
    return VideoJob(options), adapter, paths


def render_video(
    env,
    policy: PolicyAdapter | torch.nn.Module,
    out: str | os.PathLike = "videos/run.mp4",
    *,
    options: VideoOptions | None = None,
    **fields: Any,
) -> VideoSummary:
    """Play ``episodes`` episodes of ``policy`` in ``env`` and write one explanation video each.

    Works for any Gymnasium env with image observations. Panels that need what the env does not
    give (ground truth, a top-down map, a state embedding) are left out.

    Args:
        env: a Gymnasium env, or a registered id (made with ``gymnasium.make`` and closed after).
            ``obs_key`` picks a ``Dict`` observation's image; a one-env SB3 ``VecEnv`` works too.
        policy: a :class:`PolicyAdapter` or an ``nn.Module`` mapping [B, C, H, W] floats to
            ``(logits, value)``.
        out: a ``.mp4``/``.gif`` file, or a folder for ``rl-explain-episode-{i}.mp4`` files.
        options: a :class:`rlviz.options.VideoOptions` (default: its defaults).
        **fields: fields of :class:`~rlviz.options.VideoOptions` (``methods``, ``episodes``,
            ``seed``, ...; each documented there), set on ``options``.

    Returns:
        A :class:`VideoSummary` (paths, episodes, successes, frames, seconds).
    """
    options = merge_options(VideoOptions, options, fields, "render_video")
    job, adapter, paths = prepare_job(policy, out, options)
    with _opened(env) as (env, env_name):
        env = as_gym_env(env, options.obs_key, "render_video")  # a one-env VecEnv, a Dict's image
        _check_image_env(env)
        return job.run(env, adapter, paths, env_name)
