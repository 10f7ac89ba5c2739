"""Explanation videos: episode data, drawing, panels, events (from the env's info), panel layout,
the streaming writer and the pipeline that ties them together (:func:`render_video`).

Modules, in the order they build on each other: :mod:`~rlviz.video.resources` (memory, threads),
:mod:`~rlviz.video.draw` (text, colours, images), :mod:`~rlviz.video.episode` (what panels read),
:mod:`~rlviz.video.events` (captions from ground truth), :mod:`~rlviz.video.panel` /
:mod:`~rlviz.video.panels` / :mod:`~rlviz.video.context` (tiles), :mod:`~rlviz.video.grid`
(layout), :mod:`~rlviz.video.writer` (ffmpeg, atomic), :mod:`~rlviz.video.explain` (maps of an
episode), :mod:`~rlviz.video.state_map` (fitting the state-map panel's map) and
:mod:`~rlviz.video.pipeline` (:func:`render_video`).
"""

from rlviz.rollout import CompressedFrames
from rlviz.video.episode import EpisodeExplanation
from rlviz.video.events import INFO_KEYS, episode_events
from rlviz.video.explain import DEFAULT_METHODS, explain_episode
from rlviz.video.grid import Composer
from rlviz.video.panels import default_panels
from rlviz.video.pipeline import (
    VideoSummary,
    make_env,
    output_paths,
    render_episode,
    render_video,
    select_panels,
)
from rlviz.video.state_map import fit_state_embedding
from rlviz.video.writer import VideoWriter, check_writable

__all__ = [
    "DEFAULT_METHODS",
    "INFO_KEYS",
    "Composer",
    "CompressedFrames",
    "EpisodeExplanation",
    "VideoSummary",
    "VideoWriter",
    "check_writable",
    "default_panels",
    "episode_events",
    "explain_episode",
    "fit_state_embedding",
    "make_env",
    "output_paths",
    "render_episode",
    "render_video",
    "select_panels",
]
