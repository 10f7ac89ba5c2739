"""Adapter, targets and hooks: the contracts every method builds on."""

import numpy as np
import pytest
import torch
from torch import nn

from rlviz import ActionLogit, Entropy, PolicyAdapter, TakenAction, Value, capture, list_layers
from rlviz.hooks import get_layer, hook_count, last_conv_layer
from rlviz.targets import as_target, subset_target


class TinyActorCritic(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.relu = nn.ReLU(inplace=True)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.policy = nn.Linear(4, 3)
        self.value = nn.Linear(4, 1)

    def forward(self, x):
        h = self.pool(self.relu(self.conv1(x))).flatten(1)
        return self.policy(h), self.value(h)


def test_adapter_preprocess_and_outputs():
    torch.manual_seed(0)
    adapter = PolicyAdapter(TinyActorCritic())
    frames = np.random.default_rng(0).integers(0, 256, (5, 6, 8, 3), dtype=np.uint8)
    x = adapter.preprocess(frames)
    assert x.shape == (5, 3, 6, 8) and x.dtype == torch.float32
    assert torch.allclose(
        x[1, 2, 3, 4], torch.tensor(frames[1, 3, 4, 2] / 255.0, dtype=torch.float32)
    )
    assert adapter.preprocess(frames[0]).shape == (1, 3, 6, 8)
    out = adapter(frames)
    assert out.logits.shape == (5, 3) and out.value.shape == (5,)
    assert torch.allclose(out.probs.sum(-1), torch.ones(5))


def test_adapter_rejects_bad_shapes():
    adapter = PolicyAdapter(TinyActorCritic())
    # [H, W] is a gray frame now (Gymnasium's GrayscaleObservation); 1-D and 6-D are not images.
    for shape in [(5,), (1, 2, 3, 4, 5, 6)]:
        with pytest.raises(ValueError, match="expected observations shaped"):
            adapter.preprocess(np.zeros(shape, np.uint8))


def test_targets_values():
    logits = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
    from rlviz.policy import PolicyOutput

    out = PolicyOutput(logits, torch.tensor([0.5, -1.0]))
    assert torch.allclose(TakenAction([2, 0])(out), torch.log_softmax(logits, -1)[[0, 1], [2, 0]])
    assert torch.allclose(ActionLogit(1)(out), torch.tensor([2.0, 0.0]))
    assert torch.allclose(Value()(out), torch.tensor([0.5, -1.0]))
    assert torch.allclose(Entropy()(out)[1], torch.log(torch.tensor(3.0)))
    assert torch.equal(
        subset_target(TakenAction([2, 0, 1]), slice(1, 3)).actions, torch.tensor([0, 1])
    )
    with pytest.raises(ValueError, match="out of range"):
        ActionLogit(7)(out)
    with pytest.raises(ValueError, match="unknown target"):
        as_target("nope")


def test_capture_survives_inplace_relu_and_releases_hooks():
    model = TinyActorCritic()
    x = torch.randn(2, 3, 6, 8)
    before = hook_count(model)
    with capture(model, "conv1") as acts:
        logits, _ = model(x)
    assert hook_count(model) == before
    expected = model.conv1(x)
    # The inplace ReLU after conv1 must not overwrite the recorded pre-activation.
    assert (acts["conv1"] < 0).any()
    assert torch.allclose(acts["conv1"], expected)
    grad = torch.autograd.grad(logits[:, 0].sum(), acts["conv1"])[0]
    assert grad.shape == expected.shape


def test_layer_errors_list_valid_names():
    model = TinyActorCritic()
    assert list_layers(model) == ["conv1", "relu", "pool", "policy", "value"]
    assert last_conv_layer(model) == "conv1"
    with pytest.raises(ValueError, match="available: conv1, relu"):
        get_layer(model, "conv9")
    with pytest.raises(ValueError):
        with capture(model, "nope"):
            pass
    assert hook_count(model) == 0
