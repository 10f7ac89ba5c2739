"""Envs as the frameworks hand them: a one-env SB3 VecEnv (VecFrameStack, channels last) and a
Dict observation (obs_key=) play in render_video and explore; anything else gets one line."""

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces
from helpers import SquareEnv, tiny_policy

import rlviz

pytest.importorskip("stable_baselines3")


class DictObs(gym.ObservationWrapper):
    """ViZDoom-style observations: {"screen": image, "health": [1]}."""

    def __init__(self, env):
        super().__init__(env)
        self.observation_space = spaces.Dict(
            {"screen": env.observation_space, "health": spaces.Box(0, 100, (1,), np.float32)}
        )

    def observation(self, obs):
        return {"screen": obs, "health": np.array([100.0], np.float32)}


def test_dict_observation_needs_its_image_key(tmp_path):
    with pytest.raises(ValueError, match="name the image with obs_key= .*'screen'"):
        rlviz.render_video(DictObs(SquareEnv(max_steps=3)), tiny_policy(), out=tmp_path / "a.mp4")
    summary = rlviz.render_video(
        DictObs(SquareEnv(max_steps=3)),
        tiny_policy(),
        out=tmp_path / "a.mp4",
        methods=["gradient"],
        obs_key="screen",
    )
    assert summary.frames == 3
    with pytest.raises(ValueError, match="not a key"):
        rlviz.explore(DictObs(SquareEnv(max_steps=3)), tiny_policy(), out=tmp_path, obs_key="x")
    with pytest.raises(ValueError, match="not a dict"):
        rlviz.render_video(SquareEnv(max_steps=3), tiny_policy(), out=tmp_path / "b.mp4", obs_key="x")


def test_other_env_kinds_get_one_line():
    with pytest.raises(TypeError, match="gymnasium.make") as err:
        rlviz.render_video(object(), tiny_policy())
    assert "\n" not in str(err.value)


@pytest.mark.slow
def test_one_env_vec_frame_stack_plays_in_video_and_explorer(tmp_path):
    from framework_helpers import stacked_gray_env_hwc
    from stable_baselines3 import PPO
    from stable_baselines3.common.vec_env import DummyVecEnv, VecFrameStack

    gray = lambda: gym.wrappers.GrayscaleObservation(  # noqa: E731
        __import__("framework_helpers").Upscale(SquareEnv(max_steps=5)), keep_dim=True
    )
    venv = VecFrameStack(DummyVecEnv([gray]), n_stack=4)  # [1, 60, 80, 4], as the user has it
    model = PPO("CnnPolicy", venv, n_steps=8, batch_size=8, seed=0, device="cpu",
                policy_kwargs={"features_extractor_kwargs": {"features_dim": 16}})  # fmt: skip
    adapter = rlviz.PolicyAdapter.from_sb3(model)
    summary = rlviz.render_video(venv, adapter, out=tmp_path / "v.mp4", methods=["gradient"])
    assert summary.frames == 5
    report = rlviz.explore(
        venv, adapter, out=tmp_path / "x", episodes=1, methods=["gradient"], map_method="pca",
        nmf_features=2, units_per_layer=1, optvis_steps=2,
    )  # fmt: skip
    assert report.episodes == 1
    with pytest.raises(ValueError, match="VecEnv of 2"):
        rlviz.render_video(DummyVecEnv([gray, gray]), adapter, out=tmp_path / "w.mp4")
    assert stacked_gray_env_hwc  # the same frames as the other frameworks' tests
