"""The agent with memory: the frame-stack wrapper, the K-frame policy, a tiny --frame-stack run
that saves and reloads with K recorded, and the stuck test on the newest frame only."""

import json

import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env

from rlviz import capture
from rlviz.agents.checkpoint import load_checkpoint, load_policy, read_config
from rlviz.agents.policy import ActorCritic, Architecture, make_adapter, preprocess
from rlviz.envs.wrappers import StackFrames
from rlviz.layout import ObservationLayout
from tests.helpers import H, SquareEnv, W

# As tests/test_ppo.py: a 5x5 room, no distractors, big steps, 30x40 frames.
TINY_ENV = {
    "size": 5,
    "num_distractors": 0,
    "fast": True,
    "max_episode_steps": 30,
    "obs_height": 30,
    "obs_width": 40,
}


def _play(env, actions, seed=3):
    obs, info = env.reset(seed=seed)
    out, infos = [obs], [info]
    for a in actions:
        obs, _, term, trunc, info = env.step(a)
        out.append(obs)
        infos.append(info)
        if term or trunc:
            break
    return out, infos


# check_env says it prefers raw envs; the wrapper is what is checked here.
@pytest.mark.filterwarnings("ignore:.*different from the unwrapped version")
def test_stack_declares_its_layout_and_passes_check_env():
    env = StackFrames(SquareEnv(), 3)
    assert env.observation_space.shape == (H, W, 9) and env.observation_space.dtype == np.uint8
    assert env.observation_layout == ObservationLayout(
        frames=3, channels=3, order="HWC", source="env"
    )
    # Found through an outer wrapper too, and not guessed from the ambiguous [30, 40, 9] shape.
    from gymnasium.wrappers import RecordEpisodeStatistics

    assert ObservationLayout.from_env(RecordEpisodeStatistics(env)) == env.observation_layout
    check_env(StackFrames(SquareEnv(), 2), skip_render_check=True)
    with pytest.raises(ValueError, match="k >= 1"):
        StackFrames(SquareEnv(), 0)


def test_stack_is_oldest_first_and_reset_fills_with_the_first_frame():
    actions = [0, 0, 2, 1, 0]
    frames, plain_infos = _play(SquareEnv(), actions)
    stacks, infos = _play(StackFrames(SquareEnv(), 3), actions)
    for info, plain in zip(infos, plain_infos, strict=True):  # info passes through unchanged
        assert info.keys() == plain.keys()
        assert all(np.array_equal(info[key], plain[key]) for key in info)
    assert not np.array_equal(frames[0], frames[1]), "the test needs frames that differ"
    # reset: K copies of the first frame
    assert all(np.array_equal(stacks[0][..., 3 * k : 3 * k + 3], frames[0]) for k in range(3))
    for t in range(1, len(stacks)):
        for k in range(3):  # frame k of the stack at t is the env's frame t - 2 + k (clamped at 0)
            assert np.array_equal(stacks[t][..., 3 * k : 3 * k + 3], frames[max(t - 2 + k, 0)])
    # a second episode starts afresh: no frame of the first leaks into its stack
    env = StackFrames(SquareEnv(), 2)
    _play(env, actions)
    first, _ = env.reset(seed=4)
    assert np.array_equal(first[..., :3], first[..., 3:])


def test_k_frame_policy_keeps_named_layers_exact_cam_and_the_canonical_input():
    torch.manual_seed(0)
    model = ActorCritic(obs_shape=(H, W, 6), frames=2).eval()
    assert model.conv1.conv.in_channels == 6 and model.conv2.conv.in_channels == 16
    stacks, _ = _play(StackFrames(SquareEnv(), 2), [0, 2, 2, 1])
    obs = np.stack(stacks)
    x = preprocess(obs)
    # our preprocess is rlviz's canonical input for the declared layout: frames oldest first
    layout = model.observation_layout
    assert layout == ObservationLayout(frames=2, channels=3, order="HWC")
    assert torch.equal(x, layout.to_network(obs))
    assert torch.equal(layout.split_input(x)[:, 1], preprocess(obs[..., 3:]))
    with capture(model, model.cam_layer) as acts:
        logits, _ = model(x)
    cam = torch.einsum("kc,bchw->bkhw", model.policy.weight, acts[model.cam_layer])
    assert torch.allclose(cam.mean(dim=(2, 3)) + model.policy.bias, logits, atol=1e-5)
    adapter = make_adapter(model)
    assert adapter.layout == layout  # rlviz reads the stack per frame, never guesses
    assert torch.allclose(adapter(obs).logits, logits, atol=1e-6)
    with pytest.raises(ValueError, match="frames=4"):
        ActorCritic(obs_shape=(H, W, 6), frames=4)
    assert Architecture.from_dict(Architecture(frames=2).to_dict()).frames == 2
    assert Architecture.from_dict({"head": "gap"}).frames == 1  # configs from before memory


@pytest.mark.slow
def test_tiny_frame_stack_run_saves_and_reloads_with_k(tmp_path):
    from rlviz.agents.evaluate import evaluate
    from rlviz.cli.train import main

    args = ["--env-id", "rlviz/BoxReachSmall-v0", "--env-kwargs", json.dumps(TINY_ENV)]
    args += ["--frame-stack", "2", "--runs-dir", str(tmp_path), "--run-name", "mem"]
    args += ["--total-steps", "256", "--num-envs", "4", "--num-steps", "32", "--no-progress"]
    args += ["--channels", "4", "8", "8"]
    assert main(args) == 0
    ckpt = tmp_path / "mem" / "checkpoint.safetensors"
    config = read_config(ckpt)
    assert config["architecture"]["frames"] == 2 and config["obs_shape"] == [30, 40, 6]
    assert config["train_config"]["frame_stack"] == 2
    model, _ = load_checkpoint(ckpt)
    assert model.arch.frames == 2 and model.conv1.conv.in_channels == 6
    loaded = load_policy(ckpt)
    assert loaded.frame_stack == 2 and loaded.adapter.layout == model.observation_layout
    env = loaded.make_env()
    try:
        assert env.observation_space.shape == (30, 40, 6)
        assert ObservationLayout.from_env(env) == ObservationLayout(frames=2, source="env")
    finally:
        env.close()
    result = evaluate(model, "rlviz/BoxReachSmall-v0", [10**6, 10**6 + 1], env_kwargs=TINY_ENV)
    assert result["episodes"] == 2  # evaluation wraps the env in the checkpoint's stack


def test_newest_frame_is_the_last_channels():
    from rlviz.agents.vecenv import newest_frame

    obs = np.arange(2 * 3 * 6).reshape(2, 3, 6)
    assert np.array_equal(newest_frame(obs, 2), obs[..., 3:])
    assert np.array_equal(newest_frame(obs, 1), obs)


@pytest.mark.slow
def test_stuck_steps_compare_the_newest_frame_only():
    from rlviz.agents.vecenv import EnvPool

    kwargs = {**TINY_ENV, "max_episode_steps": 12}

    def stuck_counts(frame_stack):
        with EnvPool(
            "rlviz/BoxReachSmall-v0", kwargs, 2, groups=2, seed=4, frame_stack=frame_stack
        ) as pool:
            assert pool.obs_shape == (30, 40, 3 * frame_stack)
            pool.reset()
            episodes = []
            for _ in range(24):  # always forward: the agent soon walks into a wall and stays
                for s in range(2):
                    pool.step_async(s, np.array([1]))
                for s in range(2):
                    episodes += pool.step_wait(s)[4]
        return sorted((e.env, e.seed, e.stuck) for e in episodes)

    single, stacked = stuck_counts(1), stuck_counts(2)
    assert any(stuck for *_, stuck in single), "12 steps forward in a 5 m room must hit a wall"
    # Same seeds and actions, same frames: a stack is stuck exactly when its newest frame is
    # (comparing whole stacks would miss the first blocked step of each run against a wall).
    assert stacked == single


@pytest.mark.slow
def test_memory_checkpoint_solves_held_out_episodes_in_its_stack():
    """agents/checkpoints/boxreach_memory: the two-frame agent, played in its own stack."""
    from rlviz.agents.checkpoint import SHIPPED_CHECKPOINT
    from rlviz.agents.evaluate import evaluate, held_out_seeds

    path = SHIPPED_CHECKPOINT.with_name("boxreach_memory.safetensors")
    model, config = load_checkpoint(path)
    assert model.arch.frames == 2 and config["train_config"]["frame_stack"] == 2
    torch.set_num_threads(1)
    result = evaluate(model, config["env_id"], held_out_seeds(20, start=2 * 10**6))
    # Issue 31's bar for this test: >= 90% over 20 fixed seeds (96.5% over the 200 held-out).
    assert result["success_rate"] >= 0.9, result
