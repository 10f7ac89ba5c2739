"""The engine's single places: the layout guess, the activations API, default layers, titles, names."""

import numpy as np
import pytest
import torch
from torch import nn

from rlviz import PolicyAdapter, hooks
from rlviz.methods import available_methods, method_title
from rlviz.ops import channel_axis, channels_first


def test_channel_axis_guesses_one_way_and_admits_ambiguity():
    assert channel_axis((60, 80, 3)) == -1
    assert channel_axis((3, 60, 80)) == 0
    assert channel_axis((4, 84, 84)) == 0
    assert channel_axis((3, 60, 3)) is None and channel_axis((60, 80, 7)) is None
    batch = torch.zeros(2, 60, 80, 3)
    assert channels_first(batch).shape == (2, 3, 60, 80)
    assert channels_first(torch.zeros(2, 3, 60, 80)).shape == (2, 3, 60, 80)


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv1 = nn.Conv2d(3, 4, 3, stride=2)
        self.conv2 = nn.Conv2d(4, 5, 3, stride=2)
        self.head = nn.Linear(5 * 3 * 4, 3)

    def forward(self, x):
        return self.head(torch.relu(self.conv2(torch.relu(self.conv1(x)))).flatten(1))


def test_default_layer_rules():
    model = Net()
    assert hooks.default_layer(model) == "conv2"
    assert hooks.default_layers(model) == ["conv1", "conv2"]
    model.cam_layer, model.conv_layers = "conv1", ["conv1"]
    assert hooks.default_layer(model) == "conv1" and hooks.default_layers(model) == ["conv1"]


def test_layer_activations_pool_batch_and_stop_early():
    model = Net()
    adapter = PolicyAdapter(model)
    obs = np.random.default_rng(0).integers(0, 255, (5, 16, 20, 3), dtype=np.uint8)
    raw = hooks.layer_activations(adapter, obs, ["conv1", "conv2"], batch_size=2)
    assert raw["conv2"].shape == (5, 5, 3, 4) and raw["conv2"].dtype == torch.float32
    flat = hooks.layer_activations(adapter, obs, "conv2", pool="flatten", stop_early=True)
    torch.testing.assert_close(flat["conv2"], raw["conv2"].flatten(1))
    avg = hooks.layer_activations(adapter, obs, "conv2", pool="avg")["conv2"]
    torch.testing.assert_close(avg, raw["conv2"].mean(dim=(2, 3)))
    with pytest.raises(ValueError, match="pool="):
        hooks.layer_activations(adapter, obs, "conv2", pool="max")
    x = adapter.preprocess(obs[:2]).requires_grad_(True)
    acts = hooks.activations(model, x, "conv1", forward=adapter.outputs)
    acts["conv1"].sum().backward()  # the graph is kept
    assert x.grad is not None and hooks.hook_count(model) == 0


def test_every_registered_method_has_a_title():
    for name in available_methods():
        assert method_title(name) and method_title(name) != name, name
    assert method_title("gradient_signed") == "Signed gradient"
    assert method_title("saliency") == method_title("gradient")  # aliases share the title
    assert method_title("not_a_method") == "not_a_method"


def test_action_names_for_reads_adapter_then_env():
    class Env:
        def get_action_meanings(self):
            return ["NOOP", "FIRE"]

    env = Env()
    env.unwrapped = env
    adapter = PolicyAdapter(Net())
    assert adapter.action_names_for(2, env) == ("noop", "fire")
    assert adapter.action_names_for(3, env) == ("a0", "a1", "a2")
    env.action_names = ("x", "y")
    assert adapter.action_names_for(2, env) == ("x", "y")
    named = PolicyAdapter(Net(), action_names=("l", "f", "r"))
    assert named.action_names_for(3, env) == ("l", "f", "r")
