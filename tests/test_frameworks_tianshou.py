"""Tianshou 2.0's own model classes (DQNet, DiscreteActor, DiscreteCritic, the in-model
ScaledObsInputActionReprNet) read right by PolicyAdapter.from_tianshou, and refused when
wrapped by hand without saying what they return."""

import numpy as np
import pytest
import torch
from framework_helpers import every_method, stacked_gray_env, stacked_obs, video_and_explorer

import rlviz
from rlviz import PolicyAdapter

pytest.importorskip("tianshou")

from tianshou.env.atari.atari_network import DQNet, ScaledObsInputActionReprNet  # noqa: E402
from tianshou.utils.net.discrete import DiscreteActor, DiscreteCritic  # noqa: E402


def _actor_critic(softmax_output=True):
    torch.manual_seed(0)
    trunk = ScaledObsInputActionReprNet(DQNet(4, 60, 80, 3, features_only=True))
    actor = DiscreteActor(preprocess_net=trunk, action_shape=3, softmax_output=softmax_output)
    critic = DiscreteCritic(preprocess_net=trunk)
    return actor.eval(), critic.eval()


def test_tianshou_probs_and_values_match_tianshou():
    actor, critic = _actor_critic()
    obs = stacked_obs(3)
    adapter = PolicyAdapter.from_tianshou(actor, critic, layout="4x1:CHW")
    with torch.no_grad():
        want_probs = actor(torch.as_tensor(obs, dtype=torch.float32))[0]
        want_value = critic(torch.as_tensor(obs, dtype=torch.float32))[:, 0]
        out = adapter(obs)
    assert out.kind == "logits"  # the pre-softmax layer, whose softmax is Tianshou's output
    assert (out.probs - want_probs).abs().max() < 1e-5
    assert (out.log_probs - want_probs.log()).abs().max() < 1e-5
    assert (out.value - want_value).abs().max() < 1e-5
    # the [84, 84, 4]-style twin of the user's obs is not accepted silently either
    assert adapter.layout.frames == 4


def test_tianshou_q_network_is_read_as_q_values():
    torch.manual_seed(0)
    net = DQNet(4, 60, 80, 3).eval()
    obs = stacked_obs(2)
    adapter = PolicyAdapter.from_tianshou(net, layout="4x1:CHW")
    with torch.no_grad():
        want = net(torch.as_tensor(obs, dtype=torch.float32))[0]
        out = adapter(obs)
    assert out.kind == "q_values" and (out.logits - want).abs().max() < 1e-5


def test_tianshou_wrapped_by_hand_raises_instead_of_misreading():
    actor, critic = _actor_critic()
    obs = stacked_obs(2)
    # [4, 60, 80] uint8: four gray frames or one RGBA frame?
    with pytest.raises(ValueError, match="4 stacked gray frames or one RGBA"):
        PolicyAdapter(actor)(obs)
    # declared layout, but rlviz's /255 on top of the model's own /255
    with pytest.raises(ValueError, match="scaled twice"):
        PolicyAdapter(actor, layout="4x1:CHW")(obs)
    # scale fixed, but softmax_output=True rows are probabilities already
    with pytest.raises(ValueError, match="already probabilities"):
        PolicyAdapter(actor, layout="4x1:CHW", scale=1.0)(obs)
    # declared, the hand-wrapped actor agrees with Tianshou
    declared = PolicyAdapter(actor, layout="4x1:CHW", scale=1.0, output="probs")
    with torch.no_grad():
        want = actor(torch.as_tensor(obs, dtype=torch.float32))[0]
        assert (declared(obs).probs - want).abs().max() < 1e-5
    # (logits, state) is not (logits, value): a dict state raises instead of being misread
    lstm_like = PolicyAdapter(
        actor, forward=lambda x: (actor(x)[0], {"hidden": x}), layout="4x1:CHW", scale=1.0
    )
    with pytest.raises(ValueError, match="not a \\(logits, value\\) pair"):
        lstm_like(obs)


def test_tianshou_shared_trunk_gradcam_uses_the_actors_call():
    actor, critic = _actor_critic()
    obs = stacked_obs(2)
    # by hand: the trunk runs twice per forward (actor, then critic)
    by_hand = PolicyAdapter(
        actor,
        forward=lambda x: (actor(x)[0], critic(x)),
        layout="4x1:CHW",
        scale=1.0,
        output="probs",
    )
    layer = "preprocess.module.net.4"
    target = rlviz.TakenAction([0, 2])
    signed = {"relu": False}  # the signed map: all-zero only when no gradient reaches the call
    maps = rlviz.explain(
        by_hand, obs, methods=["gradcam"], layer=layer, target=target, gradcam=signed
    )
    # the trunk run once (from_tianshou) gives the same map: the call on the target's path
    once = PolicyAdapter.from_tianshou(actor, critic, layout="4x1:CHW")
    ref = rlviz.explain(
        once, obs, methods=["gradcam"], layer="actor." + layer, target=target, gradcam=signed
    )
    np.testing.assert_allclose(maps["gradcam"], ref["gradcam"], atol=1e-6)
    assert np.abs(ref["gradcam"]).max() > 0


@pytest.mark.slow
def test_tianshou_every_method_video_and_explorer(tmp_path):
    actor, critic = _actor_critic()
    adapter = PolicyAdapter.from_tianshou(actor, critic, layout="4x1:CHW")
    ran = every_method(adapter, stacked_obs(2), rlviz.TakenAction([0, 1]))
    assert len(ran) == len(rlviz.available_methods()) - 1
    video_and_explorer(lambda: stacked_gray_env(max_steps=5), adapter, tmp_path)
