"""TorchRL's own modules (ProbabilisticActor, ValueOperator, ActorValueOperator, as its Atari PPO
example builds them) read right by PolicyAdapter.from_torchrl, layout read off the env's
CatFrames transform."""

import numpy as np
import pytest
import torch
from framework_helpers import every_method, stacked_gray_env, stacked_obs, video_and_explorer
from torch import nn

import rlviz
from rlviz import PolicyAdapter

pytest.importorskip("torchrl")

from tensordict import TensorDict  # noqa: E402
from tensordict.nn import TensorDictModule  # noqa: E402
from torchrl.modules import (  # noqa: E402
    ActorValueOperator,
    OneHotCategorical,
    ProbabilisticActor,
    ValueOperator,
)


def _trunk():
    return nn.Sequential(
        nn.Conv2d(4, 8, 8, stride=4), nn.ReLU(), nn.Conv2d(8, 8, 4, stride=2), nn.ReLU(),
        nn.Flatten(), nn.Linear(8 * 6 * 8, 32), nn.ReLU(),
    )  # fmt: skip


def _actor_value_operator():
    torch.manual_seed(0)
    common = TensorDictModule(_trunk(), in_keys=["pixels"], out_keys=["hidden"])
    head = TensorDictModule(nn.Linear(32, 3), in_keys=["hidden"], out_keys=["logits"])
    actor = ProbabilisticActor(
        head, in_keys=["logits"], distribution_class=OneHotCategorical, return_log_prob=True
    )
    value = ValueOperator(nn.Linear(32, 1), in_keys=["hidden"])
    return ActorValueOperator(common, actor, value)


def _torchrl_pixels(obs):
    # a TorchRL env's pixels after ToTensorImage: float in [0, 1], channels first
    return torch.as_tensor(obs, dtype=torch.float32) / 255.0


def test_torchrl_actor_value_operator_matches_torchrl():
    avo = _actor_value_operator()
    obs = stacked_obs(3)
    adapter = PolicyAdapter.from_torchrl(avo, layout="4x1:CHW")
    td = TensorDict({"pixels": _torchrl_pixels(obs)}, batch_size=[3])
    with torch.no_grad():
        policy_td = avo.get_policy_operator()(td.clone())
        value = avo.get_value_operator()(td.clone())["state_value"][:, 0]
        dist = avo.get_policy_operator().get_dist(td.clone())
        out = adapter(obs)
        # uint8 obs and the env's own float pixels are the same input
        same = adapter(_torchrl_pixels(obs))
    assert (out.logits - policy_td["logits"]).abs().max() < 1e-5
    taken = policy_td["action"].argmax(-1)
    want = dist.log_prob(policy_td["action"])
    assert (rlviz.TakenAction(taken)(out) - want).abs().max() < 1e-5
    assert (out.value - value).abs().max() < 1e-5
    assert (same.logits - out.logits).abs().max() < 1e-6


def test_torchrl_separate_actor_and_value_and_env_layout():
    from torchrl.envs import CatFrames, GymWrapper, TransformedEnv

    torch.manual_seed(0)
    actor = ProbabilisticActor(
        TensorDictModule(nn.Sequential(_trunk(), nn.Linear(32, 3)), ["pixels"], ["logits"]),
        in_keys=["logits"],
        distribution_class=OneHotCategorical,
    )
    value = ValueOperator(nn.Sequential(_trunk(), nn.Linear(32, 1)), in_keys=["pixels"])
    gray = stacked_gray_env().env  # one gray frame [60, 80]; TorchRL stacks it
    env = TransformedEnv(
        GymWrapper(_ChannelFirst(gray)), CatFrames(N=4, dim=-3, in_keys=["pixels"])
    )
    adapter = PolicyAdapter.from_torchrl(actor, value, env=env)
    assert (adapter.layout.frames, adapter.layout.channels, adapter.layout.order) == (4, 1, "CHW")
    obs = stacked_obs(2)
    td = TensorDict({"pixels": _torchrl_pixels(obs)}, batch_size=[2])
    with torch.no_grad():
        out = adapter(obs)
        assert (out.logits - actor.get_dist_params(td.clone())["logits"]).abs().max() < 1e-5
        assert (out.value - value(td.clone())["state_value"][:, 0]).abs().max() < 1e-5


class _ChannelFirst:
    """A Gymnasium env yielding one gray frame as [1, H, W] under the key 'pixels'."""

    def __new__(cls, env):
        import gymnasium as gym
        from gymnasium import spaces

        class Pixels(gym.ObservationWrapper):
            def __init__(self, inner):
                super().__init__(inner)
                h, w = inner.observation_space.shape
                self.observation_space = spaces.Dict(
                    {"pixels": spaces.Box(0.0, 1.0, (1, h, w), np.float32)}
                )

            def observation(self, obs):
                return {"pixels": obs[None].astype(np.float32) / 255.0}

        return Pixels(env)


@pytest.mark.slow
def test_torchrl_every_method_video_and_explorer(tmp_path):
    adapter = PolicyAdapter.from_torchrl(_actor_value_operator(), layout="4x1:CHW")
    ran = every_method(adapter, stacked_obs(2), rlviz.TakenAction([0, 1]))
    assert len(ran) == len(rlviz.available_methods()) - 1
    video_and_explorer(lambda: stacked_gray_env(max_steps=5), adapter, tmp_path)
