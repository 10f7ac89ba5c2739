"""Recurrent policies in time: rollouts record the state, methods hold it, memory reliance reads it.

Toys whose action depends only on their memory (or only on the frame) pin memory reliance to 1
(or 0); a real sb3-contrib RecurrentPPO and a CleanRL ``ppo_atari_lstm``-shaped agent are played,
explained by every method with the recorded states, and rendered.
"""

from __future__ import annotations

import imageio
import numpy as np
import pytest
import torch
from helpers import FAST_OPTIONS, ColourPatchEnv, SquareEnv, tiny_policy
from torch import nn
from torch.distributions import Categorical

import rlviz
from rlviz.memory import memory_reliance
from rlviz.rollout import episode_outputs, run_episode
from rlviz.targets import TakenAction
from rlviz.video import render_video

C, D = 3, 6  # toy: channels, state size


class RecurrentToy(nn.Module):
    """h' = tanh(A mean(x) + U h); logits from the incoming h (``memory``) or from x (``frame``)."""

    def __init__(self, reads: str) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.reads = reads
        self.inp = nn.Linear(C, D)
        self.rec = nn.Linear(D, D, bias=False)
        self.head = nn.Linear(D if reads == "memory" else C, 3)
        nn.init.normal_(self.inp.weight, std=4.0)
        nn.init.normal_(self.head.weight, std=4.0)

    def step(self, x, state):
        (h,) = state
        feat = x.mean(dim=(2, 3))
        logits = self.head(h if self.reads == "memory" else feat)
        return logits, (torch.tanh(self.inp(feat) + self.rec(h)),)


def toy_adapter(reads: str) -> rlviz.PolicyAdapter:
    model = RecurrentToy(reads)
    return rlviz.PolicyAdapter(
        model, state_forward=model.step, initial_state=lambda b: (torch.zeros(b, D),)
    )


def toy_episode(steps: int = 7) -> np.ndarray:
    """Frames of one random colour each, so the state moves from step to step."""
    colours = np.random.default_rng(0).integers(0, 256, (steps, 1, 1, C), dtype=np.uint8)
    return np.ascontiguousarray(np.broadcast_to(colours, (steps, 8, 10, C)))


def test_memory_only_toy_relies_on_memory():
    adapter = toy_adapter("memory")
    obs = toy_episode()
    _, _, states = episode_outputs(adapter, obs)
    result = memory_reliance(adapter, obs, states=states)
    # Step 0 enters with the initial state: resetting it changes nothing.
    assert result.kl[0] == pytest.approx(0.0, abs=1e-6)
    assert np.allclose(result.share[1:], 1.0, atol=1e-5)
    assert np.all(result.kl[1:] > 0.05)


def test_frame_only_toy_relies_on_no_memory():
    adapter = toy_adapter("frame")
    obs = toy_episode()
    _, _, states = episode_outputs(adapter, obs)
    assert not torch.allclose(states[0][-1], torch.zeros(D))  # the state did move
    result = memory_reliance(adapter, obs, states=states)
    assert np.allclose(result.kl, 0.0, atol=1e-6)
    assert np.allclose(result.share, 0.0, atol=1e-6)


def test_rollout_records_the_state_entering_each_step():
    adapter = toy_adapter("memory")
    env = SquareEnv(max_steps=6, goal=False)
    rollout = run_episode(env, adapter, seed=0)
    (h,) = rollout.states
    assert h.shape == (6, D) and torch.equal(h[0], torch.zeros(D))
    _, _, replayed = episode_outputs(adapter, rollout.obs)
    torch.testing.assert_close(replayed[0], h)
    # Held-state correctness: step t explained with states[t] gives the logits it acted on.
    with adapter.holding_state(rollout.states):
        probs = adapter.outputs(adapter.preprocess(rollout.obs)).probs
    np.testing.assert_allclose(probs.detach().numpy(), rollout.probs, atol=1e-6)


def test_non_recurrent_rollout_is_unchanged():
    policy = tiny_policy()
    rollout = run_episode(SquareEnv(max_steps=5, goal=False), policy, seed=2)
    assert rollout.states is None
    want = np.concatenate([policy(o).probs.numpy() for o in rollout.obs])
    np.testing.assert_array_equal(rollout.probs, want)  # bit-identical: one frame at a time


def test_explaining_a_recurrent_policy_needs_states():
    adapter = toy_adapter("memory")
    with pytest.raises(ValueError, match="states="):
        rlviz.explain(adapter, toy_episode(2), methods=["gradient"])


# ------------------------------------------------------------------------- sb3-contrib RecurrentPPO


@pytest.fixture(scope="module")
def recurrent_ppo():
    sb3_contrib = pytest.importorskip("sb3_contrib")
    model = sb3_contrib.RecurrentPPO(
        "CnnLstmPolicy",
        ColourPatchEnv(size=40, horizon=6),
        n_steps=16,
        batch_size=16,
        n_epochs=1,
        seed=0,
        device="cpu",
        policy_kwargs={
            "features_extractor_kwargs": {"features_dim": 16},
            "lstm_hidden_size": 8,
            "net_arch": [],
        },
    )
    model.learn(16)  # one short update: weights off their initial values
    return model


def test_recurrent_ppo_states_match_sb3(recurrent_ppo):
    adapter = rlviz.PolicyAdapter.from_sb3(recurrent_ppo)
    env = ColourPatchEnv(size=40, horizon=6)
    rollout = run_episode(env, adapter, seed=3, deterministic=True)
    lstm_states, start = None, np.ones(1, bool)
    for t, obs in enumerate(rollout.obs):
        h_pi = rollout.states[0][t : t + 1].transpose(0, 1).numpy()  # [layers, 1, hidden]
        if lstm_states is not None:
            np.testing.assert_allclose(h_pi, lstm_states[0], atol=1e-5)
        action, lstm_states = recurrent_ppo.predict(
            obs[None], state=lstm_states, episode_start=start, deterministic=True
        )
        start = np.zeros(1, bool)
        assert int(action[0]) == int(rollout.actions[t])


def test_recurrent_ppo_explained_by_every_method_and_rendered(recurrent_ppo, tmp_path):
    adapter = rlviz.PolicyAdapter.from_sb3(recurrent_ppo)
    env = ColourPatchEnv(size=40, horizon=6)
    rollout = run_episode(env, adapter, seed=0)
    methods = rlviz.available_methods()
    maps = rlviz.explain(
        adapter,
        rollout.obs,
        methods=methods,
        target=TakenAction(rollout.actions),
        states=rollout.states,
        **FAST_OPTIONS,
    )
    for name in methods:
        assert maps[name].shape == (6, 40, 40), name
        assert np.isfinite(maps[name]).all(), name
    assert np.abs(maps["gradient"]).sum() > 0
    summary = render_video(
        env, adapter, out=tmp_path / "rppo.mp4", methods=["gradient", "gradcam"], seed=0
    )
    assert "MemoryPanel" in summary.panels and "StackPanel" not in summary.panels
    with imageio.get_reader(str(tmp_path / "rppo.mp4")) as reader:
        assert sum(1 for _ in reader) == 6


# ------------------------------------------------------------------- CleanRL ppo_atari_lstm shape


class CleanRLLstmAgent(nn.Module):
    """The shape of cleanrl/ppo_atari_lstm.py's Agent (0..255 input, scaled inside)."""

    def __init__(self, n_actions: int = 3) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.network = nn.Sequential(
            nn.Conv2d(3, 8, 5, stride=2),
            nn.ReLU(),
            nn.Conv2d(8, 8, 3, stride=2),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(8 * 6 * 8, 32),
            nn.ReLU(),
        )
        self.lstm = nn.LSTM(32, 16)
        self.actor = nn.Linear(16, n_actions)
        self.critic = nn.Linear(16, 1)

    def get_states(self, x, lstm_state, done):
        hidden = self.network(x / 255.0)
        batch_size = lstm_state[0].shape[1]
        hidden = hidden.reshape((-1, batch_size, self.lstm.input_size))
        done = done.reshape((-1, batch_size))
        new_hidden = []
        for h, d in zip(hidden, done, strict=True):
            keep = (1.0 - d).view(1, -1, 1)
            h, lstm_state = self.lstm(h.unsqueeze(0), (keep * lstm_state[0], keep * lstm_state[1]))
            new_hidden += [h]
        return torch.flatten(torch.cat(new_hidden), 0, 1), lstm_state

    def get_value(self, x, lstm_state, done):
        hidden, _ = self.get_states(x, lstm_state, done)
        return self.critic(hidden)

    def get_action_and_value(self, x, lstm_state, done, action=None):
        hidden, lstm_state = self.get_states(x, lstm_state, done)
        probs = Categorical(logits=self.actor(hidden))
        if action is None:
            action = probs.sample()
        return action, probs.log_prob(action), probs.entropy(), self.critic(hidden), lstm_state


def test_cleanrl_lstm_agent_explained_with_its_states():
    agent = CleanRLLstmAgent()
    adapter = rlviz.PolicyAdapter.from_cleanrl(agent)
    assert adapter.recurrent
    env = SquareEnv(max_steps=5, goal=False)
    rollout = run_episode(env, adapter, seed=1)
    # The agent's own loop (CleanRL's [layers, B, hidden] state) gives the recorded pi.
    state = (torch.zeros(1, 1, 16), torch.zeros(1, 1, 16))
    for t, obs in enumerate(rollout.obs):
        x = torch.as_tensor(obs).permute(2, 0, 1)[None].float()
        taken = torch.as_tensor(rollout.actions[t : t + 1])
        with torch.no_grad():
            _, log_prob, _, _, state = agent.get_action_and_value(x, state, torch.zeros(1), taken)
        assert float(log_prob) == pytest.approx(np.log(rollout.probs[t, taken[0]]), abs=1e-5)
        assert torch.allclose(rollout.states[0][t + 1 : t + 2].transpose(0, 1), state[0]) or (
            t == len(rollout) - 1
        )
    methods = ["gradient", "integrated_gradients", "gradcam", "occlusion"]
    maps = rlviz.explain(
        adapter,
        rollout.obs,
        methods=methods,
        target=TakenAction(rollout.actions),
        states=rollout.states,
        **{k: v for k, v in FAST_OPTIONS.items() if k in methods},
    )
    assert all(m.shape == (5, 30, 40) for m in maps.values())
    assert np.abs(maps["gradient"]).sum() > 0
    reliance = memory_reliance(adapter, rollout.obs, states=rollout.states)
    assert reliance.kl[0] == pytest.approx(0.0, abs=1e-6) and np.all(reliance.kl[1:] >= 0)


def test_memory_reliance_of_a_rollout_reads_its_states_and_actions():
    adapter = toy_adapter("memory")
    rollout = run_episode(SquareEnv(max_steps=5, goal=False), adapter, seed=0)
    whole = memory_reliance(adapter, rollout)
    given = memory_reliance(
        adapter, rollout.obs, TakenAction(rollout.actions), states=rollout.states
    )
    np.testing.assert_array_equal(whole.kl, given.kl)
    np.testing.assert_array_equal(whole.share, given.share)
