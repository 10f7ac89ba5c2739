"""Every SB3 / sb3-contrib algorithm's own policy read by PolicyAdapter.from_sb3 and compared with
SB3's own numbers to 1e-5, on CarRacing-v3 (a real pixel env with a Box action space, tiny
episodes) and a VecFrameStack of it (observations [96, 96, 4], as model.predict takes them)."""

import gymnasium as gym
import numpy as np
import pytest
import torch

import rlviz
from rlviz import PolicyAdapter

sb3 = pytest.importorskip("stable_baselines3")
pytest.importorskip("Box2D")

SMALL = {"features_extractor_kwargs": {"features_dim": 16}}


def car(steps: int = 6, continuous: bool = True) -> gym.Env:
    return gym.make("CarRacing-v3", max_episode_steps=steps, continuous=continuous)


def car_obs(n: int = 2) -> np.ndarray:
    env = car(steps=n + 60)
    obs = [env.reset(seed=0)[0]]
    for _ in range(50):  # past the zoom-in at the start, so frames differ
        obs[0] = env.step(np.array([0.0, 0.5, 0.0], np.float32))[0]
    for _ in range(n - 1):
        obs.append(env.step(np.array([0.3, 0.2, 0.0], np.float32))[0])
    return np.stack(obs)


def sb3_tensor(model, obs):
    """The observation as SB3's own pipeline hands it to the networks (transposed, / 255)."""
    from stable_baselines3.common.preprocessing import preprocess_obs

    tensor = model.policy.obs_to_tensor(obs)[0]
    return preprocess_obs(tensor, model.policy.observation_space)


def model_of(name: str, env=None, **kwargs):
    cls = getattr(sb3, name, None)
    if cls is None:
        import sb3_contrib

        cls = getattr(sb3_contrib, name)
    policy = kwargs.pop("policy", "CnnPolicy")
    if name in ("SAC", "TD3", "DQN", "QRDQN"):
        kwargs.setdefault("buffer_size", 64)  # the default 1e6 frames would not fit in memory
    return cls(
        policy, env or car(), seed=0, device="cpu", policy_kwargs=dict(SMALL), **kwargs
    )


@pytest.mark.parametrize("name", ["PPO", "A2C"])
def test_sb3_gaussian_actor_critic_matches_sb3(name):
    model = model_of(name)
    obs = car_obs(2)
    adapter = PolicyAdapter.from_sb3(model)
    actions = torch.tensor([[0.3, 0.1, -0.2], [-0.5, 0.9, 0.0]])
    with torch.no_grad():
        values, log_prob, _ = model.policy.evaluate_actions(model.policy.obs_to_tensor(obs)[0], actions)
        dist = model.policy.get_distribution(model.policy.obs_to_tensor(obs)[0]).distribution
        out = adapter(obs)
    assert out.kind == "gaussian"
    assert (out.mean - dist.mean).abs().max() < 1e-5
    assert (out.std - dist.stddev).abs().max() < 1e-5
    assert (rlviz.TakenAction(actions)(out) - log_prob).abs().max() < 1e-5
    assert (out.value - values[:, 0]).abs().max() < 1e-5
    assert (rlviz.ActionMean(1)(out) - dist.mean[:, 1]).abs().max() < 1e-5
    # the old reading: Gaussian means are not logits
    with pytest.raises(ValueError, match="continuous"):
        _ = out.probs


def test_sb3_sac_squashed_gaussian_and_q_match_sb3():
    model = model_of("SAC")
    obs = car_obs(2)
    adapter = PolicyAdapter.from_sb3(model)
    actions = torch.tensor([[0.3, 0.1, -0.2], [-0.5, 0.9, 0.0]])
    with torch.no_grad():
        x = sb3_tensor(model, obs)
        mean, log_std, _ = model.actor.get_action_dist_params(model.policy.obs_to_tensor(obs)[0])
        dist = model.actor.action_dist.proba_distribution(mean, log_std)
        q1 = model.critic.q1_forward(model.policy.obs_to_tensor(obs)[0], torch.tanh(mean))[:, 0]
        out = adapter(obs)
    assert out.kind == "squashed_gaussian" and x.shape[1] == 3
    assert (out.mean - mean).abs().max() < 1e-5 and (out.log_std - log_std).abs().max() < 1e-5
    assert (rlviz.TakenAction(actions)(out) - dist.log_prob(actions)).abs().max() < 1e-4
    assert (out.value - q1).abs().max() < 1e-5
    assert (out.action_mean - model.actor(model.policy.obs_to_tensor(obs)[0], True)).abs().max() < 1e-5


def test_sb3_td3_deterministic_matches_sb3():
    model = model_of("TD3")
    obs = car_obs(2)
    adapter = PolicyAdapter.from_sb3(model)
    with torch.no_grad():
        tensor = model.policy.obs_to_tensor(obs)[0]
        action = model.actor(tensor)
        q1 = model.critic.q1_forward(tensor, action)[:, 0]
        out = adapter(obs)
    assert out.kind == "deterministic"
    assert (out.action_mean - action).abs().max() < 1e-5 and (out.value - q1).abs().max() < 1e-5
    with pytest.raises(ValueError, match="no log pi"):
        rlviz.TakenAction(action)(out)


def _stacked_car(continuous=False):
    from stable_baselines3.common.vec_env import DummyVecEnv, VecFrameStack

    gray = lambda: gym.wrappers.GrayscaleObservation(car(continuous=continuous), keep_dim=True)  # noqa: E731
    return VecFrameStack(DummyVecEnv([gray]), n_stack=4)


@pytest.mark.parametrize("name", ["DQN", "QRDQN"])
def test_sb3_q_learners_on_a_frame_stack_match_sb3(name):
    if name == "QRDQN":
        pytest.importorskip("sb3_contrib")
    venv = _stacked_car()
    model = model_of(name, env=venv)
    obs = venv.reset()  # [1, 96, 96, 4]: the user's own layout, channels last
    adapter = PolicyAdapter.from_sb3(model)
    assert (adapter.layout.frames, adapter.layout.channels) == (4, 1)
    with torch.no_grad():
        tensor = model.policy.obs_to_tensor(obs)[0]
        if name == "DQN":
            want = model.q_net(tensor)
        else:
            want = model.policy.quantile_net(tensor).mean(dim=1)
        out = adapter(obs)
        transposed = adapter(np.moveaxis(obs, -1, 1))  # channels first works too
    assert out.kind == "q_values" and (out.logits - want).abs().max() < 1e-5
    assert (transposed.logits - out.logits).abs().max() == 0
    # the default CAM layer is one the policy calls (not q_net_target / quantile_net_target)
    maps = rlviz.explain(adapter, obs, methods=["gradcam"], target=rlviz.ActionLogit(1))
    assert maps["gradcam"].shape == (1, 96, 96)
    assert "target" not in adapter.cam_layer
    with pytest.raises(ValueError, match="fit none of this policy's layouts"):
        adapter(obs[..., :3])


def test_sb3_recurrent_ppo_box_matches_sb3():
    sb3_contrib = pytest.importorskip("sb3_contrib")
    model = sb3_contrib.RecurrentPPO(
        "CnnLstmPolicy",
        car(),
        seed=0,
        device="cpu",
        n_steps=8,
        batch_size=8,
        policy_kwargs={**SMALL, "lstm_hidden_size": 8},
    )
    obs = car_obs(1)
    adapter = PolicyAdapter.from_sb3(model)
    policy = model.policy
    shape = (policy.lstm_actor.num_layers, 1, policy.lstm_actor.hidden_size)
    zeros = (torch.zeros(shape), torch.zeros(shape))
    with torch.no_grad():
        tensor = policy.obs_to_tensor(obs)[0]
        dist, _ = policy.get_distribution(tensor, zeros, torch.zeros(1))
        value = policy.predict_values(tensor, zeros, torch.zeros(1))[:, 0]
        with adapter.holding_state(adapter.initial_state(1)):
            out = adapter(obs)
    assert out.kind == "gaussian"
    assert (out.mean - dist.distribution.mean).abs().max() < 1e-5
    assert (out.value - value).abs().max() < 1e-5


@pytest.mark.slow
def test_sb3_box_policy_every_method_video_and_explorer(tmp_path):
    from framework_helpers import every_method

    model = model_of("PPO", n_steps=8, batch_size=8)
    adapter = PolicyAdapter.from_sb3(model, action_names=("steer", "gas", "brake"))
    obs = car_obs(2)
    ran = every_method(adapter, obs, rlviz.TakenAction(torch.tensor([[0.1, 0.2, 0.0]] * 2)))
    assert len(ran) == len(rlviz.available_methods()) - 1
    for d in range(3):
        maps = rlviz.explain(adapter, obs, methods=["gradient"], target=rlviz.ActionMean(d))
        assert np.abs(maps["gradient"]).max() > 0
    summary = rlviz.render_video(
        car(steps=5), adapter, out=tmp_path / "car.mp4", methods=["gradient", "gradcam"]
    )
    assert summary.frames == 5
    report = rlviz.explore(
        car(steps=5),
        adapter,
        out=tmp_path / "explorer",
        episodes=1,
        methods=["gradient", "gradcam"],
        map_method="pca",
        nmf_features=2,
        units_per_layer=1,
        optvis_steps=2,
    )
    assert report.episodes == 1 and (tmp_path / "explorer" / "index.html").exists()
    _policy_rows_in_the_browser(tmp_path / "explorer" / "index.html")


def _policy_rows_in_the_browser(page_path) -> None:
    """The explorer draws a Box policy as one row per dimension, mean +/- std (no JS errors)."""
    playwright = pytest.importorskip("playwright.sync_api")
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path="/usr/bin/chromium",
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        page = browser.new_page()
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(page_path.resolve().as_uri())
        page.wait_for_function("document.querySelectorAll('#probs .bar').length > 0")
        rows = page.locator("#probs .bar").all_inner_texts()
        label = page.locator("#action-label").inner_text()
        browser.close()
    assert errors == []
    assert [r.split()[0] for r in rows] == ["steer", "gas", "brake"]
    assert all("\u00b1" in r for r in rows) and label.startswith("a = [")


def test_box_rollout_records_the_policys_actions_and_plays_the_envs():
    from rlviz.rollout import run_episode

    model = model_of("SAC")
    adapter = PolicyAdapter.from_sb3(model)
    rollout = run_episode(car(steps=4), adapter, seed=0, generator=torch.Generator().manual_seed(0))
    assert rollout.continuous and rollout.actions.shape == (4, 3) and rollout.probs.shape == (4, 0)
    assert (np.abs(rollout.actions) <= 1).all()  # tanh-squashed, before the env's rescaling
    assert rollout.action_mean.shape == rollout.action_std.shape == (4, 3)
    greedy = run_episode(car(steps=3), adapter, seed=0, deterministic=True)
    np.testing.assert_allclose(greedy.actions, greedy.action_mean, atol=1e-6)


def test_sb3_sac_recorded_by_the_wrapper_in_the_policys_action_space(tmp_path):
    from rlviz.policy.output import env_action, policy_action
    from rlviz.wrappers import RecordExplanationVideo

    adapter = PolicyAdapter.from_sb3(model_of("SAC"))
    env = RecordExplanationVideo(car(steps=3), adapter, video_folder=tmp_path, methods=["gradient"])
    env.reset(seed=0)
    gas = np.array([0.0, 1.0, 0.0], np.float32)  # full gas: the top of the env's [0, 1]
    done = False
    while not done:
        _, _, term, trunc, _ = env.step(gas)
        done = term or trunc
    env.close()
    assert [p.suffix for p in tmp_path.iterdir()] == [".mp4"]
    # what the wrapper records for TakenAction: the env's action in SAC's own [-1, 1]
    back = policy_action(gas[None], "squashed_gaussian", env.action_space)
    np.testing.assert_allclose(back, [[0.0, 1.0, -1.0]])  # gas 1 -> +1, brake 0 -> -1
    np.testing.assert_allclose(env_action(back[0], "squashed_gaussian", env.action_space), gas)


@pytest.mark.slow
def test_recurrent_ppo_explorer_with_its_network_tab(tmp_path):
    sb3_contrib = pytest.importorskip("sb3_contrib")
    model = sb3_contrib.RecurrentPPO(
        "CnnLstmPolicy", car(), seed=0, device="cpu", n_steps=8, batch_size=8,
        policy_kwargs={**SMALL, "lstm_hidden_size": 8},
    )  # fmt: skip
    adapter = PolicyAdapter.from_sb3(model)
    report = rlviz.explore(
        car(steps=4), adapter, out=tmp_path, episodes=1, methods=["gradient"], map_method="pca",
        nmf_features=2, units_per_layer=1, optvis_steps=2,
    )  # fmt: skip
    assert report.episodes == 1 and (tmp_path / "index.html").exists()
    # the network tab's feature visualisation reads the image with the initial state
    vis = rlviz.features.optvis.optimize(
        adapter, rlviz.features.optvis.channel("features_extractor.cnn.4", 0), steps=2,
        size=(96, 96), progress=False,
    )  # fmt: skip
    assert vis.images.shape[1:3] == (96, 96)


@pytest.mark.slow
def test_sb3_callback_records_a_box_policy(tmp_path):
    from rlviz.callbacks import ExplanationVideoCallback

    model = model_of("SAC", learning_starts=4, train_freq=4)
    callback = ExplanationVideoCallback(
        car(steps=3), every_n_steps=4, out_dir=tmp_path, methods=["gradient"], max_steps=3
    )
    model.learn(4, callback=callback)
    assert callback.paths and all(p.suffix == ".mp4" and p.exists() for p in callback.paths)
