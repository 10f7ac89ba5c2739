"""Explanation videos: :func:`render_video` plays episodes, explains each in batches
(:mod:`~rlviz.video.explain`), lays out the panels (:mod:`~rlviz.video.panels`, one module per thing
drawn) and streams the frames to ffmpeg (:mod:`~rlviz.video.writer`). The state-map panel's map is
fitted by :func:`rlviz.statemap.policy_states.fit_state_embedding`, re-exported here.
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
