"""Other codebases' policies through PolicyAdapter: SB3 (PPO, DQN), CleanRL-style agents, callables."""

import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from helpers import CleanRLAtariAgent, ColourPatchEnv, sb3_model
from torch import nn
from torch.distributions import Categorical

from rlviz import PolicyAdapter
from rlviz.policy import from_callable


@pytest.mark.slow
def test_sb3_ppo_logits_and_values_match_sb3(sb3_ppo):
    adapter = PolicyAdapter.from_sb3(sb3_ppo)
    env = ColourPatchEnv()
    obs = np.stack([env.reset(seed=s)[0] for s in range(6)])
    out = adapter(obs)
    obs_tensor, _ = sb3_ppo.policy.obs_to_tensor(obs)
    with torch.no_grad():
        dist = sb3_ppo.policy.get_distribution(obs_tensor)
        values = sb3_ppo.policy.predict_values(obs_tensor)[:, 0]
    assert torch.allclose(torch.log_softmax(out.logits, -1), dist.distribution.logits, atol=1e-6)
    assert torch.allclose(out.value, values, atol=1e-6)
    assert "features_extractor.cnn.0" in [n for n, _ in adapter.model.named_modules()]


@pytest.mark.slow
def test_sb3_dqn_q_values_match():
    model = sb3_model("DQN", learn_steps=100)
    adapter = PolicyAdapter.from_sb3(model)
    obs = np.stack([ColourPatchEnv().reset(seed=s)[0] for s in range(4)])
    with torch.no_grad():
        q_values = model.q_net(model.q_net.obs_to_tensor(obs)[0])
    out = adapter(obs)
    assert torch.allclose(out.logits, q_values, atol=1e-6)
    assert torch.allclose(out.value, q_values.max(-1).values)


def test_from_sb3_rejects_other_objects():
    with pytest.raises(TypeError, match="Stable-Baselines3"):
        PolicyAdapter.from_sb3(nn.Linear(2, 2))


class OpaqueAgent(CleanRLAtariAgent):
    """Same maths, but the parts have other names: only get_action_and_value is usable."""

    def __init__(self):
        super().__init__()
        self.trunk, self.pi, self.v = self.network, self.actor, self.critic
        del self.network, self.actor, self.critic

    def get_value(self, x):
        return self.v(self.trunk(x / 255.0))

    def get_action_and_value(self, x, action=None):
        hidden = self.trunk(x / 255.0)
        probs = Categorical(logits=self.pi(hidden))
        if action is None:
            action = probs.sample()
        return action, probs.log_prob(action), probs.entropy(), self.v(hidden)


@pytest.mark.parametrize("agent_cls", [CleanRLAtariAgent, OpaqueAgent])
def test_cleanrl_agent_log_probs_match(agent_cls):
    torch.manual_seed(0)
    agent = agent_cls()
    frames = np.random.default_rng(0).integers(0, 256, (5, 40, 40, 3), dtype=np.uint8)
    agent.get_value(torch.zeros(1, 3, 40, 40))  # materialise LazyLinear
    kwargs = {"n_actions": 3} if agent_cls is OpaqueAgent else {}
    adapter = PolicyAdapter.from_cleanrl(agent, **kwargs)
    out = adapter(frames)
    x = torch.as_tensor(frames).permute(0, 3, 1, 2).float()
    with torch.no_grad():
        for k in range(3):
            _, log_prob, _, value = agent.get_action_and_value(x, torch.full((5,), k))
            assert torch.allclose(out.log_probs[:, k], log_prob, atol=1e-5)
        assert torch.allclose(out.value, value[:, 0], atol=1e-5)


def test_cleanrl_gradients_flow_to_input():
    torch.manual_seed(0)
    agent = CleanRLAtariAgent()
    agent.get_value(torch.zeros(1, 3, 40, 40))
    adapter = PolicyAdapter.from_cleanrl(agent)
    x = adapter.preprocess(np.full((2, 40, 40, 3), 100, np.uint8)).requires_grad_(True)
    grad = torch.autograd.grad(adapter.outputs(x).logits[:, 0].sum(), x)[0]
    assert grad.abs().sum() > 0


def test_from_callable_plain_function():
    # 8x8: a 4x4x3 frame would be ambiguous (4 channels first or 3 last?) and rightly refused.
    weights = torch.randn(3, 3 * 8 * 8)
    adapter = from_callable(lambda x: x.flatten(1) @ weights.T)
    out = adapter(np.zeros((2, 8, 8, 3), np.uint8))
    assert out.logits.shape == (2, 3) and out.value is None
    with pytest.raises(ValueError, match="no value head"):
        adapter.value(np.zeros((1, 8, 8, 3), np.uint8))


def test_import_rlviz_pulls_in_no_env_or_agent_code():
    # Make every env/agent/SB3 import fail: `import rlviz` (and its API) must still work.
    script = textwrap.dedent(
        """
        import sys
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split('.')[0] in {'envs', 'agents', 'miniworld', 'pyglet', 'stable_baselines3', 'gymnasium'}:
                    raise ImportError('blocked: ' + name)
        sys.meta_path.insert(0, Block())
        import rlviz, rlviz.policy, rlviz.cli
        names = [n for n in getattr(rlviz, '__all__', [])]
        for n in names:
            getattr(rlviz, n)
        print('ok', len(names))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ok")


def _every_method_explains(adapter, obs, layer, target):
    import rlviz

    names = rlviz.available_methods()
    assert len(names) >= 10
    for name in names:
        options = {"layer": layer} if name in ("cam", "gradcam", "gradcam_pp") else {}
        if name == "cam":
            continue  # exact CAM needs a global-average-pooling head; SB3's NatureCNN has none
        maps = rlviz.explain(adapter, obs, methods=[name], target=target, **options)[name]
        assert maps.shape == (obs.shape[0], obs.shape[1], obs.shape[2]), name
        assert np.isfinite(maps).all() and np.abs(maps).max() > 0, name


@pytest.mark.slow
def test_sb3_ppo_explained_by_every_method_and_rendered(sb3_ppo, tmp_path):
    import imageio.v3 as iio

    import rlviz

    adapter = PolicyAdapter.from_sb3(sb3_ppo)
    obs = np.stack([ColourPatchEnv().reset(seed=s)[0] for s in range(3)])
    _every_method_explains(adapter, obs, "features_extractor.cnn.4", rlviz.TakenAction([0, 1, 2]))
    with pytest.raises(ValueError, match="global"):
        rlviz.explain(adapter, obs, methods=["cam"], layer="features_extractor.cnn.4")
    summary = rlviz.render_video(
        ColourPatchEnv(),
        adapter,
        out=tmp_path / "sb3.mp4",
        methods=["gradient", "gradcam"],
        layer="features_extractor.cnn.4",
        episodes=1,
        seed=0,
    )
    frames = iio.imread(tmp_path / "sb3.mp4")
    assert frames.shape[0] == ColourPatchEnv().horizon == summary.frames


@pytest.mark.slow
def test_sb3_dqn_q_value_targets():
    import rlviz

    model = sb3_model("DQN")
    adapter = PolicyAdapter.from_sb3(model)
    obs = np.stack([ColourPatchEnv().reset(seed=s)[0] for s in range(2)])
    q_maps = [
        rlviz.explain(adapter, obs, methods=["gradient_signed"], target=rlviz.ActionLogit(k))[
            "gradient_signed"
        ]
        for k in range(3)
    ]
    # Each action's Q-value has its own input gradient (through its own output unit).
    assert not np.allclose(q_maps[0], q_maps[1])
    x = adapter.preprocess(obs).requires_grad_(True)
    q1 = adapter.outputs(x).logits[:, 1].sum()
    expected = torch.autograd.grad(q1, x)[0].sum(1).numpy()
    np.testing.assert_allclose(q_maps[1], expected, rtol=1e-4, atol=1e-7)


def test_cleanrl_agent_explained_by_every_method():
    import rlviz

    torch.manual_seed(0)
    agent = CleanRLAtariAgent()
    agent.get_value(torch.zeros(1, 3, 40, 40))
    adapter = PolicyAdapter.from_cleanrl(agent)
    obs = np.random.default_rng(1).integers(0, 256, (3, 40, 40, 3), dtype=np.uint8)
    _every_method_explains(adapter, obs, "network.2", rlviz.TakenAction([2, 0, 1]))
