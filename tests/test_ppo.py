"""The PPO trainer: GAE by hand, the config CLI, diagnostics, a short run that learns, resume."""

import argparse
import json
import math

import numpy as np
import pytest
import torch

from rlviz.agents.checkpoint import load_checkpoint, load_training_state, read_config
from rlviz.agents.config import Config, add_dataclass_arguments
from rlviz.agents.diagnostics import (
    COLUMNS,
    CsvLog,
    HealthCheck,
    check_inputs,
    dead_relu_fraction,
    explained_variance,
    plot_learning_curve,
    read_csv,
)
from rlviz.agents.policy import ActorCritic, preprocess
from rlviz.agents.ppo import Learner, RolloutBuffer, compute_gae
from rlviz.cli.train import build_parser, main

# A tiny, easy variant: 5x5 room, no distractors, big steps, 30-step episodes, 30x40 frames.
TINY_ENV = {
    "size": 5,
    "num_distractors": 0,
    "fast": True,
    "max_episode_steps": 30,
    "obs_height": 30,
    "obs_width": 40,
}


def test_gae_by_hand():
    gamma, lam = 0.9, 0.5
    rewards = np.array([[0.0], [1.0], [0.0]], np.float32)
    values = np.array([[0.5], [0.4], [0.3]], np.float32)
    ends = np.array([[False], [True], [False]])  # the episode ends after step 1
    last = np.array([0.2], np.float32)
    adv, ret = compute_gae(rewards, values, ends, last, gamma, lam)
    d2 = 0.0 + gamma * 0.2 - 0.3
    d1 = 1.0 - 0.4  # no bootstrap across the episode end
    d0 = 0.0 + gamma * 0.4 - 0.5
    a2, a1 = d2, d1  # a1 does not see a2 (episode ended)
    a0 = d0 + gamma * lam * a1
    assert np.allclose(adv[:, 0], [a0, a1, a2], atol=1e-6)
    assert np.allclose(ret, adv + values)


def test_explained_variance():
    r = np.array([1.0, 2.0, 3.0])
    assert explained_variance(r, r) == 1.0
    assert explained_variance(np.full(3, 2.0), r) == pytest.approx(0.0)
    assert math.isnan(explained_variance(r, np.ones(3)))


def test_config_becomes_cli_flags():
    parser = argparse.ArgumentParser()
    add_dataclass_arguments(parser, Config)
    args = parser.parse_args(
        [
            "--no-async-learner",
            "--channels",
            "8",
            "16",
            "16",
            "--env-kwargs",
            '{"size": 8}',
            "--target-kl",
            "none",
            "--total-steps",
            "5",
        ]
    )
    cfg = Config(**vars(args))
    assert cfg.async_learner is False and cfg.channels == (8, 16, 16)
    assert cfg.env_kwargs == {"size": 8} and cfg.target_kl is None and cfg.total_steps == 5
    assert Config(**vars(parser.parse_args([]))) == Config()
    with pytest.raises(SystemExit):
        parser.parse_args(["--env-kwargs", "[1, 2]"])
    assert (
        build_parser().parse_args(["--env", "rlviz/BoxReachFast-v0"]).env_id
        == "rlviz/BoxReachFast-v0"
    )
    help_text = build_parser().format_help()
    assert (
        "--resume" in help_text
        and "Anneal the learning rate" in help_text
        and "--device" in help_text
    )


def test_health_check_warns():
    check = HealthCheck(3)
    assert (
        check.check(
            {
                "update": 1,
                "entropy": 1.0,
                "approx_kl": 0.01,
                "grad_norm": 1.0,
                "value_loss": 0.1,
                "policy_loss": 0.0,
                "success_rate_100": 0.2,
                "dead_relu": 0.0,
            }
        )
        == []
    )
    warnings = check.check(
        {"update": 2, "entropy": float("nan"), "grad_norm": float("inf"), "skipped": 3}
    )
    assert len(warnings) == 1 and "non-finite" in warnings[0] and "entropy" in warnings[0]
    w = check.check({"update": 3, "entropy": 0.01, "success_rate_100": 0.1})
    assert any("entropy collapsed" in x for x in w)
    assert (
        check.check({"update": 4, "entropy": 0.01, "success_rate_100": 0.99}) == []
    )  # solved: fine
    assert any("gradient norm" in x for x in check.check({"update": 5, "grad_norm": 1e3}))
    assert any("approx KL" in x for x in check.check({"update": 6, "approx_kl": 0.5}))
    assert check.check({"update": 7, "approx_kl": 0.5}) == []  # not repeated at once
    assert any("dead" in x for x in check.check({"update": 8, "dead_relu": 0.9}))


def test_input_checks():
    frames = np.random.default_rng(0).integers(0, 256, (2, 30, 40, 3), dtype=np.uint8)
    assert check_inputs(preprocess(frames)) == []
    assert any("expected [0, 1]" in w for w in check_inputs(preprocess(frames) * 255))
    assert any("blank" in w for w in check_inputs(torch.zeros(2, 3, 30, 40)))
    assert any("NaN" in w for w in check_inputs(torch.full((2, 3, 30, 40), float("nan"))))


def test_dead_relu_fraction():
    # exact on a hand-made layer: units 0 and 2 never fire on non-negative inputs
    layer = torch.nn.Sequential(torch.nn.Linear(2, 4), torch.nn.ReLU())
    with torch.no_grad():
        layer[0].weight.copy_(torch.tensor([[-1.0, -1.0], [1.0, 0.0], [0.0, -2.0], [1.0, 1.0]]))
        layer[0].bias.zero_()
    assert dead_relu_fraction(layer, torch.rand(16, 2), ["1"]) == 0.5
    # on the CNN a conv unit is a channel: switch all of conv2 off
    torch.manual_seed(0)
    model = ActorCritic(channels=(4, 8, 8), obs_shape=(30, 40, 3))
    x = preprocess(np.random.default_rng(0).integers(0, 256, (8, 30, 40, 3), dtype=np.uint8))
    healthy = dead_relu_fraction(model, x, model.conv_layers)
    with torch.no_grad():
        model.conv2.conv.bias.fill_(-1e3)
    assert dead_relu_fraction(model, x, model.conv_layers) >= healthy + 8 / 20


def _buffer(T=8, N=2, seed=0):
    rng = np.random.default_rng(seed)
    buf = RolloutBuffer(T, N, (30, 40, 3))
    buf.obs[:] = rng.integers(0, 256, buf.obs.shape, dtype=np.uint8)
    buf.actions[:] = rng.integers(0, 3, buf.actions.shape)
    buf.logprobs[:] = math.log(1 / 3)
    buf.rewards[:] = rng.random(buf.rewards.shape).astype(np.float32)
    return buf


def test_learner_skips_and_reports_non_finite_updates():
    torch.manual_seed(0)
    cfg = Config(total_steps=100, num_minibatches=2, update_epochs=2)
    model = ActorCritic(channels=(4, 8, 8), obs_shape=(30, 40, 3))
    learner = Learner(model, cfg, torch.device("cpu"))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    buf = _buffer()
    buf.rewards[-1, :] = float("nan")  # GAE carries it back to every sample
    stats = learner.update(buf, step=16)
    assert stats["skipped"] == 4  # every optimizer step refused
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), f"{k} was changed by a NaN update"
    warnings = HealthCheck(3).check(stats)
    assert warnings and "non-finite" in warnings[0]
    # and a clean buffer trains: weights move, statistics are finite
    stats = learner.update(_buffer(seed=1), step=32)
    assert stats["skipped"] == 0 and set(stats) <= set(COLUMNS)
    assert all(
        math.isfinite(stats[k])
        for k in ("entropy", "approx_kl", "value_loss", "grad_norm", "clip_frac")
    )
    assert any(not torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_csv_log_and_learning_curve(tmp_path):
    log = CsvLog(tmp_path / "progress.csv")
    for i in range(1, 4):
        log.write({"update": i, "step": 100 * i, "success_rate_100": 0.1 * i, "entropy": 1.0})
    rows = read_csv(tmp_path / "progress.csv")
    assert [r["step"] for r in rows] == ["100", "200", "300"]
    png = plot_learning_curve(tmp_path / "progress.csv", tmp_path / "curve.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    CsvLog(tmp_path / "progress.csv", keep_until_step=200)  # resuming from step 200
    assert [r["step"] for r in read_csv(tmp_path / "progress.csv")] == ["100", "200"]


def _tiny_args(tmp_path, *extra):
    return [
        "--env-id",
        "rlviz/BoxReachSmall-v0",
        "--env-kwargs",
        json.dumps(TINY_ENV),
        "--runs-dir",
        str(tmp_path),
        "--run-name",
        "tiny",
        "--num-envs",
        "8",
        "--num-steps",
        "32",
        "--channels",
        "8",
        "16",
        "16",
        "--update-epochs",
        "8",
        "--num-minibatches",
        "4",
        "--learning-rate",
        "1e-3",
        "--seed",
        "0",
        "--no-progress",
        *extra,
    ]


@pytest.mark.slow
def test_short_training_run_improves_success(tmp_path):
    from rlviz.agents.evaluate import evaluate, held_out_seeds

    assert main(_tiny_args(tmp_path, "--total-steps", "6144", "--no-async-learner")) == 0
    run = tmp_path / "tiny"
    model, config = load_checkpoint(run / "checkpoint.safetensors")
    assert config["steps"] == 6144 and config["command"].startswith("rlviz train")
    assert (run / "learning_curve.png").exists() and len(read_csv(run / "progress.csv")) == 24
    torch.manual_seed(0)  # the trainer seeds the initial weights with --seed 0
    initial = ActorCritic(model.arch)
    seeds = held_out_seeds(40)
    before = evaluate(initial, "rlviz/BoxReachSmall-v0", seeds, env_kwargs=TINY_ENV)
    after = evaluate(model, "rlviz/BoxReachSmall-v0", seeds, env_kwargs=TINY_ENV)
    # measured here: 0.525 -> 0.975 success, 21 -> 9 mean steps
    assert after["success_rate"] >= before["success_rate"] + 0.25, (
        before["success_rate"],
        after["success_rate"],
    )
    assert after["mean_steps"] < before["mean_steps"]


@pytest.mark.slow
def test_resume_continues_counters_optimizer_and_rng(tmp_path):
    args = _tiny_args(tmp_path, "--total-steps", "512", "--num-envs", "4", "--num-steps", "32")
    assert main(args) == 0
    ckpt = tmp_path / "tiny" / "checkpoint.safetensors"
    first = load_training_state(ckpt)
    assert first["steps"] == 512 and first["learner"]["updates"] == 4
    assert sum(first["episode_counts"]) == first["episodes"] > 0
    # continue to 1024 steps from the checkpoint; flags given now override the saved config
    assert main(["--resume", str(tmp_path / "tiny"), "--total-steps", "1024", "--no-progress"]) == 0
    second = load_training_state(ckpt)
    config = read_config(ckpt)
    assert second["steps"] == 1024 and config["steps"] == 1024 and second["learner"]["updates"] == 8
    assert config["train_config"]["total_steps"] == 1024
    assert all(
        b >= a for a, b in zip(first["episode_counts"], second["episode_counts"], strict=True)
    )
    assert second["episodes"] > first["episodes"]
    # Adam's step counter carried over (4 updates x 8 epochs x 4 minibatches, then as many again)
    steps_first = {int(v["step"]) for v in first["learner"]["optimizer"]["state"].values()}
    steps_second = {int(v["step"]) for v in second["learner"]["optimizer"]["state"].values()}
    assert steps_first == {128} and steps_second == {256}
    # the log continues where the checkpoint was, without duplicates
    rows = read_csv(tmp_path / "tiny" / "progress.csv")
    assert [int(r["update"]) for r in rows] == list(range(1, 9))
    assert [int(r["step"]) for r in rows] == [128 * i for i in range(1, 9)]
    # the learning-rate schedule continued too: linear in the steps of the whole run
    assert float(rows[4]["lr"]) == pytest.approx(1e-3 * (1 - 512 / 1024), rel=1e-4)


def test_resume_rejects_a_checkpoint_without_training_state(tmp_path, capsys):
    from rlviz.agents.checkpoint import save_checkpoint

    path = save_checkpoint(
        tmp_path / "x" / "checkpoint.safetensors",
        ActorCritic(channels=(4, 8, 8)),
        {"train_config": {}},
    )
    assert main(["--resume", str(path), "--no-progress"]) == 2
    assert "no training state" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--resume", str(tmp_path / "missing"), "--no-progress"])
    assert "does not exist" in capsys.readouterr().err


def test_bad_device_is_explained():
    from rlviz.agents.config import resolve_device

    with pytest.raises(ValueError, match="not a device"):
        resolve_device("gpu0")
    assert resolve_device("cpu") == torch.device("cpu")


@pytest.mark.slow
def test_env_pool_seeds_and_stuck_penalty():
    from rlviz.agents.vecenv import EnvPool, episode_seed

    kwargs = {**TINY_ENV, "max_episode_steps": 12}
    with EnvPool(
        "rlviz/BoxReachSmall-v0", kwargs, num_envs=2, groups=2, seed=4, stuck_penalty=0.5
    ) as pool:
        assert pool.slots == [(0, 1), (1, 2)] and pool.obs_shape == (30, 40, 3)
        first = pool.reset().copy()
        episodes, rewards = [], []
        for _ in range(30):  # always forward: the agent soon walks into a wall and stays put
            for s in range(2):
                pool.step_async(s, np.array([1]))
            for s in range(2):
                _, r, _, _, finished = pool.step_wait(s)
                rewards.append(float(r[0]))
                episodes += finished
    assert episodes and all(0 <= e.seed < 10**6 for e in episodes)
    assert {(e.env, e.seed) for e in episodes if e.env == 0} >= {(0, episode_seed(4, 0, 0))}
    stuck = [e for e in episodes if e.stuck]
    assert stuck, "walking forward for 12 steps in a 5 m room must hit a wall"
    assert -0.5 in rewards  # the penalty reaches the learner...
    assert all(e.ret >= 0 for e in episodes)  # ...but episode returns are the env's own
    with EnvPool("rlviz/BoxReachSmall-v0", kwargs, num_envs=2, groups=2, seed=4) as again:
        assert np.array_equal(again.reset(), first)  # same run seed, same first episodes


@pytest.mark.slow
def test_env_pool_progress_reward_pays_for_distance_gained():
    import gymnasium as gym

    from rlviz.agents.vecenv import EnvPool, episode_seed
    from rlviz.envs.oracle import goal_distance

    kwargs = {**TINY_ENV, "max_episode_steps": 40}
    actions = [1, 1, 0, 1, 2, 2, 1, 1, 1, 0, 1, 1]
    # the same episode, stepped by hand, gives the expected bonus: progress x distance gained
    env = gym.make("rlviz/BoxReachSmall-v0", **kwargs)
    env.reset(seed=episode_seed(4, 0, 0))
    expected, before = [], goal_distance(env)
    for a in actions:
        *_, terminated, truncated, _ = env.step(a)
        assert not (terminated or truncated)
        expected.append(2.0 * (before - goal_distance(env)))
        before = goal_distance(env)
    env.close()
    with (
        EnvPool("rlviz/BoxReachSmall-v0", kwargs, num_envs=1, groups=1, seed=4) as plain,
        EnvPool(
            "rlviz/BoxReachSmall-v0", kwargs, num_envs=1, groups=1, seed=4, progress_reward=2.0
        ) as shaped,
    ):
        assert np.array_equal(plain.reset(), shaped.reset())
        bonus = []
        for a in actions:
            plain.step_async(0, np.array([a]))
            shaped.step_async(0, np.array([a]))
            _, r0, *_ = plain.step_wait(0)
            _, r1, *_ = shaped.step_wait(0)
            bonus.append(float(r1[0] - r0[0]))
    assert any(abs(b) > 0.05 for b in bonus)
    np.testing.assert_allclose(bonus, expected, atol=1e-5)
    with pytest.raises(RuntimeError, match="progress_reward needs a BoxReach env"):
        with EnvPool("MiniWorld-Hallway-v0", {}, num_envs=1, groups=1, progress_reward=1.0):
            pass


def test_init_from_rejects_another_architecture(tmp_path):
    from rlviz.agents.checkpoint import CheckpointError, save_checkpoint
    from rlviz.agents.trainer import init_weights

    source = ActorCritic(channels=(4, 8, 8))
    path = save_checkpoint(tmp_path / "a.safetensors", source, {})
    weights = init_weights(str(path), source.arch)
    assert all(torch.equal(weights[k], v) for k, v in source.state_dict().items())
    with pytest.raises(CheckpointError, match="same --head/--channels"):
        init_weights(str(path), ActorCritic(channels=(4, 8, 16)).arch)


def test_entropy_schedule_runs_linearly_to_its_end_value():
    model = ActorCritic()
    constant = Learner(model, Config(ent_coef=0.01, total_steps=1000), torch.device("cpu"))
    assert constant.entropy_coef(0) == constant.entropy_coef(900) == 0.01
    cfg = Config(ent_coef=0.01, ent_coef_end=0.0, total_steps=1000)
    learner = Learner(model, cfg, torch.device("cpu"))
    assert learner.entropy_coef(0) == pytest.approx(0.01)
    assert learner.entropy_coef(500) == pytest.approx(0.005)
    assert learner.entropy_coef(1000) == learner.entropy_coef(5000) == pytest.approx(0.0)


def test_mirror_augment_adds_each_sample_flipped_with_left_and_right_swapped():
    from rlviz.agents.ppo import Batch, mirror_actions

    swap = mirror_actions(("left", "forward", "right"))
    assert swap.tolist() == [2, 1, 0]
    with pytest.raises(ValueError, match="'left' and 'right'"):
        mirror_actions(("noop", "fire"))
    obs = np.arange(2 * 3 * 4 * 2, dtype=np.uint8).reshape(2, 3, 4, 2)
    batch = Batch(
        obs=obs,
        actions=torch.tensor([0, 1]),
        logprobs=torch.tensor([-0.1, -0.2]),
        values=torch.tensor([0.5, 0.6]),
        advantages=torch.tensor([1.0, -1.0]),
        returns=torch.tensor([1.5, -0.4]),
    )
    both = batch.with_mirror(swap)
    assert len(both) == 4
    assert np.array_equal(both.obs[:2], obs)
    assert np.array_equal(both.obs[2:], obs[:, :, ::-1])  # W flipped, channels (frames) kept
    assert both.actions.tolist() == [0, 1, 2, 1]
    assert both.logprobs.tolist() == pytest.approx([-0.1, -0.2, -0.1, -0.2])
    assert both.advantages.tolist() == [1.0, -1.0, 1.0, -1.0]


def test_learner_with_mirror_augment_updates_on_twice_the_samples():
    cfg = Config(num_envs=2, num_steps=4, num_minibatches=2, update_epochs=1, mirror_augment="all")
    learner = Learner(ActorCritic(), cfg, torch.device("cpu"))
    buf = RolloutBuffer(cfg.num_steps, cfg.num_envs, (60, 80, 3))
    buf.obs[:] = np.random.default_rng(0).integers(0, 255, buf.obs.shape, dtype=np.uint8)
    buf.rewards[-1] = 1.0
    seen = []
    original = learner._step
    learner._step = lambda x, batch, idx, ent: seen.append(len(batch)) or original(x, batch, idx, ent)
    learner.update(buf, step=8)
    assert seen and set(seen) == {2 * cfg.num_steps * cfg.num_envs}


def test_goal_mirroring_flips_only_samples_that_show_the_red_box():
    from rlviz.agents.ppo import Batch, mirror_actions, red_box_in_view

    obs = np.full((3, 6, 8, 6), 90, dtype=np.uint8)  # grey frames, two per observation
    obs[1, 2:4, 5:7, 3:6] = (200, 30, 20)  # red box in the newest frame of sample 1
    obs[2, 1:3, 0:2, 0:3] = (240, 200, 30)  # a yellow distractor is not the box
    assert red_box_in_view(obs).tolist() == [False, True, False]
    batch = Batch(
        obs=obs,
        actions=torch.tensor([0, 0, 2]),
        logprobs=torch.zeros(3),
        values=torch.zeros(3),
        advantages=torch.tensor([1.0, 2.0, 3.0]),
        returns=torch.zeros(3),
    )
    both = batch.with_mirror(mirror_actions(("left", "forward", "right")), red_box_in_view(obs))
    assert len(both) == 4
    assert both.actions.tolist() == [0, 0, 2, 2] and both.advantages.tolist()[-1] == 2.0
    assert np.array_equal(both.obs[3], obs[1, :, ::-1])
    with pytest.raises(ValueError, match="mirror_augment"):
        Config(mirror_augment="yes")


@pytest.mark.slow
def test_red_box_colour_test_matches_the_goal_mask_on_boxreach_frames():
    from rlviz.agents.ppo import red_box_in_view
    from rlviz.agents.vecenv import make_env

    env = make_env("rlviz/BoxReach-v0", {"ground_truth": True})
    rng = np.random.default_rng(1)
    frames, visible = [], []
    try:
        for seed in (11, 12):
            obs, info = env.reset(seed=seed)
            for _ in range(40):
                obs, _, term, trunc, info = env.step(int(rng.choice(3, p=[0.3, 0.4, 0.3])))
                frames.append(obs)
                visible.append(bool(info["box_visible"]))
                if term or trunc:
                    break
    finally:
        env.close()
    assert any(visible) and not all(visible)  # both kinds of frame were seen
    assert red_box_in_view(np.stack(frames)).tolist() == visible


@pytest.mark.parametrize("threaded", [False, True])
def test_learner_thread_returns_results_in_order_and_raises_the_threads_error(threaded):
    from rlviz.agents.trainer import LearnerThread

    def learn(buf):
        if buf == "bad":
            raise ValueError("non-finite weights")
        return buf * 2

    learner = LearnerThread(learn, threaded=threaded)
    assert learner.threaded is threaded
    learner.submit(1)
    learner.submit(2)
    if threaded:
        learner.submit("bad")
        with pytest.raises(RuntimeError, match="learner thread failed") as failed:
            learner.finish()
        assert isinstance(failed.value.__cause__, ValueError)
    else:
        assert list(learner.finished()) == [2, 4]  # learned at submit, in the caller's thread
        learner.finish()
    assert list(learner.finished()) == ([2, 4] if threaded else [])


def test_run_state_starts_where_the_resumed_run_stopped():
    from rlviz.agents.trainer import RunState

    new = RunState.start(seed=3, resumed=None)
    rng = torch.Generator().manual_seed(3 * 104729 + 3)
    assert new.steps == new.episodes == 0 and not new.recent
    assert torch.equal(new.action_rng.get_state(), rng.get_state())
    torch.randint(10, (5,), generator=rng)  # the state a checkpoint kept, some draws later
    resumed = {"action_rng": rng.get_state(), "steps": 512, "episodes": 7, "time_s": 3.5}
    resumed["recent"] = [[1.0, 20, True]] * 120
    state = RunState.start(seed=3, resumed=resumed)
    assert (state.steps, state.start_steps, state.episodes, state.time_before) == (512, 512, 7, 3.5)
    assert len(state.recent) == 100 and state.recent[0] == (1.0, 20, True)
    assert torch.equal(state.action_rng.get_state(), rng.get_state())
    assert state.elapsed() >= 3.5
