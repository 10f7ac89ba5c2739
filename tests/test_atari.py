"""An SB3 PPO agent on a real Atari game (Pong, ROMs shipped by ale-py) with VecFrameStack(4):
layout read off the VecEnv chain, explained per frame and rendered to a short video."""

from __future__ import annotations

import numpy as np
import pytest

ale_py = pytest.importorskip("ale_py")
sb3 = pytest.importorskip("stable_baselines3")


def pong_env():
    """SB3's Atari set-up: AtariWrapper (84x84 gray), 4 frames stacked, channels first."""
    import gymnasium as gym
    from stable_baselines3.common.env_util import make_atari_env
    from stable_baselines3.common.vec_env import VecFrameStack, VecTransposeImage

    gym.register_envs(ale_py)
    venv = make_atari_env("ALE/Pong-v5", n_envs=1, seed=0)
    return VecTransposeImage(VecFrameStack(venv, n_stack=4))


@pytest.fixture(scope="module")
def pong():
    """An untrained (0 learn steps) PPO CnnPolicy on Pong and its VecEnv."""
    env = pong_env()
    model = sb3.PPO(
        "CnnPolicy",
        env,
        n_steps=16,
        batch_size=16,
        seed=0,
        device="cpu",
        policy_kwargs={"features_extractor_kwargs": {"features_dim": 32}},
    )
    yield model, env
    env.close()


def test_pong_frame_stack_explained_per_frame(pong):
    from rlviz import PolicyAdapter, explain, frame_share

    model, env = pong
    adapter = PolicyAdapter.from_sb3(model)
    layout = adapter.layout
    assert (layout.frames, layout.channels, layout.order, layout.source) == (4, 1, "CHW", "sb3")
    obs = [env.reset()[0]]
    for _ in range(5):
        obs.append(env.step(np.array([env.action_space.sample()]))[0][0])
    obs = np.stack(obs)  # [6, 4, 84, 84] uint8
    maps = explain(
        adapter,
        obs,
        ["gradient", "grad_x_input", "occlusion"],
        per_frame=True,
        occlusion={"window": 21, "stride": 21},
    )
    for name, m in maps.items():
        assert m.shape == (6, 4, 84, 84), name
        assert np.isfinite(m).all() and np.abs(m).sum() > 0, name
    share = frame_share(maps["gradient"])
    np.testing.assert_allclose(share.sum(1), 1.0, rtol=1e-5)
    collapsed = explain(adapter, obs, "grad_x_input")["grad_x_input"]
    np.testing.assert_allclose(maps["grad_x_input"].sum(1), collapsed, rtol=1e-4, atol=1e-7)


def test_pong_rendered_to_a_short_video(pong, tmp_path):
    from rlviz import PolicyAdapter, render_video
    from rlviz.gym_env import OneEnv

    model, _ = pong
    eval_env = OneEnv(pong_env(), owns=True)
    try:
        adapter = PolicyAdapter.from_sb3(model)
        summary = render_video(
            eval_env, adapter, tmp_path / "pong.mp4", methods=["gradient"], max_steps=6, seed=0
        )
    finally:
        eval_env.close()
    assert summary.frames == 6
    assert summary.paths[0].stat().st_size > 1000
    assert eval_env.observation_layout == adapter.layout
