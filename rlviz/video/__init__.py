"""Explanation videos: episode data, drawing, panels, events (from the env's info), panel layout,
the streaming writer and the pipeline that ties them together (:func:`render_video`).

Modules, in the order they build on each other: :mod:`~rlviz.video.draw` (text, colours,
images), :mod:`~rlviz.video.episode` (what panels read), :mod:`~rlviz.video.events` (captions from
ground truth), :mod:`~rlviz.video.panels` (tiles, one module per thing drawn),
:mod:`~rlviz.video.grid` (layout), :mod:`~rlviz.video.writer` (ffmpeg, atomic),
:mod:`~rlviz.video.explain` (maps of an episode) and :mod:`~rlviz.video.pipeline`
(:func:`render_video`). The state-map panel's map is fitted by
:func:`rlviz.statemap.policy_states.fit_state_embedding`, re-exported here.
"""

from rlviz.rollout import CompressedFrames
from rlviz.statemap.policy_states import fit_state_embedding
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
