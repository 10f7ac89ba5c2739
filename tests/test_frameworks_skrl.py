"""skrl 2.x's own Model with CategoricalMixin + DeterministicMixin (a shared actor-critic, as skrl's
PPO examples build it; flattened observations) read right by PolicyAdapter.from_skrl."""

import numpy as np
import pytest
import torch
from framework_helpers import every_method, stacked_gray_env, stacked_obs, video_and_explorer
from torch import nn

import rlviz
from rlviz import PolicyAdapter

pytest.importorskip("skrl")

from skrl.models.torch import CategoricalMixin, DeterministicMixin, Model  # noqa: E402


class Shared(CategoricalMixin, DeterministicMixin, Model):
    """skrl's shared-model pattern: the policy role caches the trunk, the value role reuses it."""

    def __init__(self, observation_space, action_space, cache: bool = True):
        Model.__init__(
            self, observation_space=observation_space, action_space=action_space, device="cpu"
        )
        CategoricalMixin.__init__(self, unnormalized_log_prob=True, role="policy")
        DeterministicMixin.__init__(self, clip_actions=False, role="value")
        self.net = nn.Sequential(
            nn.Conv2d(4, 8, 8, stride=4), nn.ReLU(), nn.Conv2d(8, 8, 4, stride=2), nn.ReLU(),
            nn.Flatten(), nn.LazyLinear(32), nn.ReLU(),
        )  # fmt: skip
        self.policy_head = nn.Linear(32, action_space.n)
        self.value_head = nn.Linear(32, 1)
        self.cache = cache
        self._shared = None

    def act(self, inputs, *, role=""):
        if role == "policy":
            return CategoricalMixin.act(self, inputs, role=role)
        return DeterministicMixin.act(self, inputs, role=role)

    def compute(self, inputs, role=""):
        x = inputs["observations"].view(-1, 4, 60, 80) / 255.0
        if role == "policy":
            hidden = self.net(x)
            self._shared = hidden if self.cache else None
            return self.policy_head(hidden), {}
        hidden = self.net(x) if self._shared is None else self._shared
        self._shared = None
        return self.value_head(hidden), {}


def _model(cache=True):
    torch.manual_seed(0)
    env = stacked_gray_env()
    model = Shared(env.observation_space, env.action_space, cache=cache).eval()
    model.compute({"observations": torch.zeros(1, 4 * 60 * 80)}, role="policy")  # lazy layer
    return model


def _skrl_inputs(obs):
    # as skrl's env wrappers hand them to models: float32, flattened
    return {"observations": torch.as_tensor(obs, dtype=torch.float32).reshape(len(obs), -1)}


def test_skrl_log_probs_and_values_match_skrl():
    model = _model()
    obs = stacked_obs(3)
    adapter = PolicyAdapter.from_skrl(model, model, layout="4x1:CHW")
    taken = torch.tensor([[0], [2], [1]])
    with torch.no_grad():
        _, extra = model.act({**_skrl_inputs(obs), "taken_actions": taken}, role="policy")
        want_value = model.act(_skrl_inputs(obs), role="value")[0][:, 0]
        out = adapter(obs)
        log_pi = rlviz.TakenAction(taken[:, 0])(out)
    assert (out.logits - extra["net_output"]).abs().max() < 1e-5
    assert (log_pi - extra["log_prob"][:, 0]).abs().max() < 1e-5
    assert (out.value - want_value).abs().max() < 1e-5


def test_skrl_needs_its_layout_and_reads_no_dict_as_value():
    model = _model()
    with pytest.raises(ValueError, match="4 stacked gray frames or one RGBA"):
        PolicyAdapter.from_skrl(model, model)
    # by hand, skrl's (output, {}) is not (logits, value)
    by_hand = PolicyAdapter(
        model,
        forward=lambda x: model.compute({"observations": x.reshape(len(x), -1)}, "policy"),
        layout="4x1:CHW",
        scale=1.0,
    )
    with pytest.raises(ValueError, match="not a \\(logits, value\\) pair"):
        by_hand(stacked_obs(2))


def test_skrl_uncached_trunk_runs_twice_and_gradcam_takes_the_policy_call():
    cached, uncached = _model(cache=True), _model(cache=False)
    obs = stacked_obs(2)
    target, signed = rlviz.TakenAction([1, 2]), {"relu": False}
    maps = [
        rlviz.explain(
            PolicyAdapter.from_skrl(m, m, layout="4x1:CHW"),
            obs,
            methods=["gradcam"],
            layer="net.2",
            target=target,
            gradcam=signed,
        )["gradcam"]
        for m in (cached, uncached)
    ]
    np.testing.assert_allclose(maps[0], maps[1], atol=1e-6)
    assert np.abs(maps[1]).max() > 0


@pytest.mark.slow
def test_skrl_every_method_video_and_explorer(tmp_path):
    model = _model()
    adapter = PolicyAdapter.from_skrl(model, model, layout="4x1:CHW")
    ran = every_method(adapter, stacked_obs(2), rlviz.TakenAction([0, 1]))
    assert len(ran) == len(rlviz.available_methods()) - 1
    video_and_explorer(lambda: stacked_gray_env(max_steps=5), adapter, tmp_path)


def test_skrl_gaussian_policy_on_carracing_matches_skrl():
    pytest.importorskip("Box2D")
    import gymnasium as gym
    from skrl.models.torch import GaussianMixin

    class Gaussian(GaussianMixin, Model):
        def __init__(self, observation_space, action_space):
            Model.__init__(
                self, observation_space=observation_space, action_space=action_space, device="cpu"
            )
            GaussianMixin.__init__(self, clip_log_std=True, min_log_std=-5, max_log_std=1)
            self.net = nn.Sequential(
                nn.Conv2d(3, 8, 8, stride=8), nn.ReLU(), nn.Flatten(), nn.LazyLinear(3)
            )
            self.log_std_parameter = nn.Parameter(torch.full((3,), 3.0))  # clipped to 1

        def compute(self, inputs, role=""):
            x = inputs["observations"].view(-1, 96, 96, 3).permute(0, 3, 1, 2) / 255.0
            return self.net(x), {"log_std": self.log_std_parameter}

    torch.manual_seed(0)
    env = gym.make("CarRacing-v3", max_episode_steps=3)
    policy = Gaussian(env.observation_space, env.action_space).eval()
    obs = np.stack([env.reset(seed=s)[0] for s in (0, 1)])
    adapter = PolicyAdapter.from_skrl(policy)  # layout from its observation space: [96, 96, 3]
    taken = torch.tensor([[0.1, 0.5, 0.0], [-0.3, 0.2, 0.1]])
    with torch.no_grad():
        _, extra = policy.act({**_skrl_inputs(obs), "taken_actions": taken}, role="policy")
        out = adapter(obs)
    assert out.kind == "gaussian"
    assert (out.mean - extra["mean_actions"]).abs().max() < 1e-5
    assert (out.log_std - 1.0).abs().max() == 0  # skrl's clip, as GaussianMixin.act applies it
    assert (rlviz.TakenAction(taken)(out) - extra["log_prob"][:, 0]).abs().max() < 1e-5
