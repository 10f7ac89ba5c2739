"""RLlib's new-stack DefaultPPOTorchRLModule with its Catalog CNN encoder (channels-last frames)
read right by PolicyAdapter.from_rllib: forward_train's action-distribution inputs, and
compute_values on its embeddings, so the encoder runs once."""

import gymnasium as gym
import numpy as np
import pytest
import torch
from framework_helpers import every_method, stacked_gray_env_hwc, stacked_obs, video_and_explorer

import rlviz
from rlviz import PolicyAdapter

pytest.importorskip("ray.rllib")


def _module(action_space=None):
    from ray.rllib.algorithms.ppo.torch.default_ppo_torch_rl_module import (
        DefaultPPOTorchRLModule,
    )
    from ray.rllib.core.rl_module.rl_module import RLModuleSpec

    torch.manual_seed(0)
    spec = RLModuleSpec(
        module_class=DefaultPPOTorchRLModule,
        observation_space=gym.spaces.Box(0.0, 255.0, (60, 80, 4), np.float32),
        action_space=action_space or gym.spaces.Discrete(3),
        model_config={
            "conv_filters": [[8, [8, 8], 4], [8, [4, 4], 2]],
            "head_fcnet_hiddens": [32],
            "vf_share_layers": True,
        },
    )
    return spec.build().eval()


def _hwc(obs):
    return np.ascontiguousarray(np.moveaxis(obs, 1, -1))  # [B, 4, H, W] -> [B, H, W, 4]


def test_rllib_logits_and_values_match_rllib():
    module = _module()
    obs = _hwc(stacked_obs(3))
    adapter = PolicyAdapter.from_rllib(module, layout="4x1:HWC")
    batch = {"obs": torch.as_tensor(obs, dtype=torch.float32)}
    with torch.no_grad():
        logits = module.forward_inference(batch)["action_dist_inputs"]
        values = module.compute_values(batch)
        out = adapter(obs)
    dist = module.get_inference_action_dist_cls().from_logits(logits)
    taken = torch.tensor([0, 2, 1])
    assert (out.logits - logits).abs().max() < 1e-5
    assert (rlviz.TakenAction(taken)(out) - dist.logp(taken)).abs().max() < 1e-5
    assert (out.value - values).abs().max() < 1e-5


def test_rllib_four_channels_need_a_layout():
    with pytest.raises(ValueError, match="needs layout="):
        PolicyAdapter.from_rllib(_module())


def test_rllib_encoder_run_twice_by_hand_gradcam_takes_the_policy_call():
    module = _module()
    obs = _hwc(stacked_obs(2))

    def twice(x):  # forward_train, then compute_values without embeddings: encoder runs again
        batch = {"obs": x.permute(0, 2, 3, 1)}
        return module.forward_train(batch)["action_dist_inputs"], module.compute_values(batch)

    by_hand = PolicyAdapter(module, forward=twice, layout="4x1:HWC", scale=1.0, output="logits")
    layer = "encoder.encoder.net.0.cnn.4"
    target, signed = rlviz.TakenAction([1, 2]), {"relu": False}
    maps = [
        rlviz.explain(a, obs, methods=["gradcam"], layer=layer, target=target, gradcam=signed)
        for a in (by_hand, PolicyAdapter.from_rllib(module, layout="4x1:HWC"))
    ]
    np.testing.assert_allclose(maps[0]["gradcam"], maps[1]["gradcam"], atol=1e-6)
    assert np.abs(maps[0]["gradcam"]).max() > 0


@pytest.mark.slow
def test_rllib_every_method_video_and_explorer(tmp_path):
    adapter = PolicyAdapter.from_rllib(_module(), layout="4x1:HWC")
    ran = every_method(adapter, _hwc(stacked_obs(2)), rlviz.TakenAction([0, 1]))
    assert len(ran) == len(rlviz.available_methods()) - 1
    video_and_explorer(lambda: stacked_gray_env_hwc(max_steps=5), adapter, tmp_path)


def test_rllib_box_policy_diag_gaussian_matches_rllib():
    module = _module(gym.spaces.Box(-1.0, 1.0, (2,), np.float32))
    obs = _hwc(stacked_obs(2))
    adapter = PolicyAdapter.from_rllib(module, layout="4x1:HWC")
    batch = {"obs": torch.as_tensor(obs, dtype=torch.float32)}
    actions = torch.tensor([[0.2, -0.4], [0.9, 0.1]])
    with torch.no_grad():
        inputs = module.forward_inference(batch)["action_dist_inputs"]
        dist = module.get_inference_action_dist_cls().from_logits(inputs)
        out = adapter(obs)
    assert out.kind == "gaussian"
    assert (out.mean - inputs[:, :2]).abs().max() < 1e-5
    assert (rlviz.TakenAction(actions)(out) - dist.logp(actions)).abs().max() < 1e-5
    assert (out.value - module.compute_values(batch)).abs().max() < 1e-5
