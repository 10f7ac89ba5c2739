"""Options objects: one field per setting of render_video / explore, documented once, shared by
the functions, the wrappers, the SB3 callback and the CLI."""

from __future__ import annotations

import argparse

import pytest
from helpers import SquareEnv, tiny_policy

from rlviz.options import (
    ExploreOptions,
    VideoOptions,
    add_option_flags,
    field_docs,
    merge_options,
    video_episode_meta,
)


def test_every_field_is_documented():
    for cls in (VideoOptions, ExploreOptions):
        docs = field_docs(cls)
        missing = [f for f in cls.__dataclass_fields__ if not docs.get(f)]
        assert not missing, f"{cls.__name__} fields without a docstring: {missing}"
    # an overridden field has its own default and its own words
    assert ExploreOptions().episodes == 2 and VideoOptions().episodes == 1
    assert field_docs(ExploreOptions)["episodes"].startswith("Episodes to explore")


def test_merge_options_sets_fields_and_names_unknown_ones():
    base = VideoOptions(methods=("gradient",), fps=10)
    merged = merge_options(VideoOptions, base, {"seed": 4}, "render_video")
    assert (merged.methods, merged.fps, merged.seed) == (["gradient"], 10, 4)
    assert base.seed == 0  # the caller's object is left as it was
    with pytest.raises(TypeError, match=r"render_video\(\) got unknown option\(s\) fsp; valid: "):
        merge_options(VideoOptions, None, {"fsp": 3}, "render_video")
    with pytest.raises(TypeError, match="must be a VideoOptions"):
        merge_options(VideoOptions, ExploreOptions(), {}, "render_video")
    with pytest.raises(TypeError, match="valid: methods, layer"):
        merge_options(VideoOptions, None, {"episodes": 3}, "W", allowed=("methods", "layer"))


def test_render_video_and_explore_take_an_options_object(tmp_path):
    from rlviz.explorer import explore
    from rlviz.video import render_video

    options = VideoOptions(methods=["gradient"], max_steps=4)
    summary = render_video(SquareEnv(), tiny_policy(), tmp_path / "a.mp4", options=options, seed=2)
    assert summary.frames == 4 and summary.paths == [tmp_path / "a.mp4"]
    with pytest.raises(TypeError, match="unknown option"):
        render_video(SquareEnv(), tiny_policy(), tmp_path / "b.mp4", nope=1)
    with pytest.raises(TypeError, match=r"explore\(\) got unknown option\(s\) fps"):
        explore(SquareEnv(), tiny_policy(), tmp_path / "e", fps=3)


def test_video_episode_meta_names_the_episode_and_its_window():
    options = VideoOptions(seed=5, episodes=3, agent_name="a", from_step=2)
    meta = video_episode_meta(options, "Env-v0", 1, played=10, shown=4)
    assert meta == {
        "agent": "a",
        "env": "Env-v0",
        "seed": 6,
        "episode": "2/3",
        "steps": "2-5 of 10",
    }
    assert "steps" not in video_episode_meta(options, None, 0, played=10, shown=10)


def test_flags_take_default_and_help_from_the_field():
    parser = argparse.ArgumentParser()
    add_option_flags(parser, VideoOptions, "fps", "layer", "gif", gif=dict(action="store_true"))
    assert vars(parser.parse_args([])) == {"fps": 15, "layer": None, "gif": False}
    assert parser.parse_args(["--fps", "7.5", "--gif"]).fps == 7.5
    text = parser.format_help()
    assert "Video frame rate. (default: 15)" in " ".join(text.split())
