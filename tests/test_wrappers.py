"""Gymnasium wrappers: RecordExplanationVideo writes exactly the triggered episodes;
ExplanationRender makes render() return annotated frames for any rgb_array consumer."""

from __future__ import annotations

import gymnasium as gym
import imageio
import numpy as np
import pytest
from helpers import SquareEnv, tiny_policy

from rlviz.video.panels import ActionPanel, MapPanel, ValuePanel
from rlviz.wrappers import ExplanationRender, RecordExplanationVideo


def frame_count(path) -> int:
    with imageio.get_reader(str(path)) as reader:
        return sum(1 for _ in reader)


def play(env, episodes: int, seed: int = 0) -> list[int]:
    """Run random actions for ``episodes`` episodes; returns their lengths."""
    lengths = []
    rng = np.random.default_rng(seed)
    for i in range(episodes):
        env.reset(seed=seed + i)
        n, done = 0, False
        while not done:
            _, _, terminated, truncated, _ = env.step(int(rng.integers(3)))
            n += 1
            done = terminated or truncated
        lengths.append(n)
    return lengths


def small_panels():
    return [MapPanel("gradient"), ActionPanel(), ValuePanel()]


def test_records_exactly_the_triggered_episodes(tmp_path):
    env = RecordExplanationVideo(
        SquareEnv(max_steps=9),
        tiny_policy(),
        tmp_path / "vids",
        episode_trigger=lambda i: i in (0, 2),
        methods=["gradient"],
        panels=small_panels,
    )
    lengths = play(env, 4)
    env.close()
    files = sorted(p.name for p in (tmp_path / "vids").iterdir())
    assert files == ["rl-explain-episode-0.mp4", "rl-explain-episode-2.mp4"]
    assert frame_count(tmp_path / "vids" / files[0]) == lengths[0]
    assert frame_count(tmp_path / "vids" / files[1]) == lengths[2]
    assert env.video_paths == [tmp_path / "vids" / f for f in files]


def test_default_trigger_is_capped_cubic(tmp_path):
    env = RecordExplanationVideo(
        SquareEnv(max_steps=3, goal=False),
        tiny_policy(),
        tmp_path,
        name_prefix="x",
        methods=["gradient"],
        panels=small_panels,
    )
    play(env, 10)
    env.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"x-episode-{i}.mp4" for i in (0, 1, 8)]


def test_close_writes_the_unfinished_episode_and_explains_the_actions_given(tmp_path):
    env = RecordExplanationVideo(
        SquareEnv(max_steps=50, goal=False),
        tiny_policy(),
        tmp_path,
        methods=["gradient"],
        episode_trigger=lambda i: True,
        panels=small_panels,
    )
    env.reset(seed=1)
    for _ in range(7):
        env.step(0)
    env.close()
    assert frame_count(tmp_path / "rl-explain-episode-0.mp4") == 7


def test_record_wrapper_is_transparent(tmp_path):
    plain, wrapped = SquareEnv(max_steps=12), SquareEnv(max_steps=12)
    env = RecordExplanationVideo(
        wrapped, tiny_policy(), tmp_path, methods=["gradient"], panels=small_panels
    )
    o1, _ = plain.reset(seed=3)
    o2, _ = env.reset(seed=3)
    assert np.array_equal(o1, o2)
    for a in (1, 0, 2, 1):
        s1, s2 = plain.step(a), env.step(a)
        assert np.array_equal(s1[0], s2[0]) and s1[1:4] == s2[1:4]
    env.close()


def test_explanation_render_returns_fixed_size_annotated_frames():
    env = ExplanationRender(
        SquareEnv(max_steps=6, goal=False), tiny_policy(), methods=["gradient", "gradcam"]
    )
    assert env.render_mode == "rgb_array"
    with pytest.raises(RuntimeError, match="reset"):
        env.render()
    env.reset(seed=0)
    frames = [env.render()]
    done = False
    while not done:
        _, _, term, trunc, _ = env.step(1)
        done = term or trunc
        frames.append(env.render())
    shapes = {f.shape for f in frames}
    assert len(shapes) == 1 and frames[0].dtype == np.uint8
    h, w, c = frames[0].shape
    assert c == 3 and h > 300 and w > 600 and frames[0].std() > 20
    assert not np.array_equal(frames[0], frames[3])


def test_explanation_render_feeds_gymnasium_render_consumers():
    """Gymnasium's rgb_array consumers (RenderCollection here; RecordVideo alike) get our frames."""
    from gymnasium.wrappers import RenderCollection

    env = RenderCollection(
        ExplanationRender(
            SquareEnv(max_steps=4, goal=False),
            tiny_policy(),
            methods=["gradient"],
            panels=small_panels(),
        )
    )
    env.reset(seed=0)
    for _ in range(3):
        env.step(2)
    frames = env.render()
    assert len(frames) == 4 and all(
        f.ndim == 3 and f.shape[2] == 3 and f.dtype == np.uint8 for f in frames
    )


def test_record_video_conventions_match_gymnasium(tmp_path):
    # Same file naming and default trigger rule as gymnasium.wrappers.RecordVideo.
    from rlviz.wrappers import capped_cubic_video_schedule

    assert [i for i in range(3000) if capped_cubic_video_schedule(i)] == [
        k**3 for k in range(10)
    ] + [1000, 2000]
    env = RecordExplanationVideo(SquareEnv(), tiny_policy(), tmp_path, methods=["gradient"])
    assert env.episode_trigger is capped_cubic_video_schedule and env.episode_id == -1
    assert isinstance(env, gym.Wrapper)
    with pytest.raises(ValueError, match="unknown attribution method 'nope'"):
        RecordExplanationVideo(SquareEnv(), tiny_policy(), tmp_path, methods=["nope"])


def test_explanation_render_places_states_on_a_map():
    from rlviz.rollout import run_episode
    from rlviz.statemap import StateEmbedding, layer_features

    policy = tiny_policy()
    rollout = run_episode(SquareEnv(max_steps=20, goal=False), policy, seed=0)
    emb = StateEmbedding(method="pca").fit(
        layer_features(policy, rollout.obs, "conv2", "avg"), meta={"layer": "conv2", "pool": "avg"}
    )
    plain = ExplanationRender(SquareEnv(max_steps=5, goal=False), policy, methods=["gradient"])
    mapped = ExplanationRender(
        SquareEnv(max_steps=5, goal=False), policy, methods=["gradient"], embedding=emb
    )
    plain.reset(seed=0)
    mapped.reset(seed=0)
    sizes = {mapped.render().shape}
    for _ in range(3):
        mapped.step(1)
        sizes.add(mapped.render().shape)
    assert len(sizes) == 1
    assert len(mapped._xy) == 4  # one map position per state, computed as states arrive
    assert np.prod(sizes.pop()[:2]) > np.prod(plain.render().shape[:2])  # the map panel is there
