"""The checks that turn silent wrong maps into one-line errors (or a warning saying why), on
small plain-torch policies; each of these passed silently before the policy output was typed."""

import warnings

import numpy as np
import pytest
import torch
from torch import nn

import rlviz
from rlviz import PolicyAdapter


def trunk(channels=3):
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(channels, 4, 3, stride=2), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 9 * 9, 3)
    )


def frames(n=2, channels=3, seed=0):
    return np.random.default_rng(seed).integers(1, 256, (n, 20, 20, channels), dtype=np.uint8)


def test_rows_that_are_probabilities_are_not_softmaxed_again():
    model = nn.Sequential(trunk(), nn.Softmax(dim=-1))
    with pytest.raises(ValueError, match="already probabilities.*output='probs'"):
        PolicyAdapter(model)(frames())
    declared = PolicyAdapter(model, output="probs")
    with torch.no_grad():
        want = model(declared.preprocess(frames()))
    assert (declared(frames()).probs - want).abs().max() < 1e-6


def test_pixels_scaled_twice_raise():
    class ScalesInside(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = trunk()

        def forward(self, x):
            return self.net(x / 255.0)

    model = ScalesInside()
    with pytest.raises(ValueError, match="scaled twice.*scale=1.0") as err:
        PolicyAdapter(model)(frames())
    assert "\n" not in str(err.value)
    with torch.no_grad():
        right = PolicyAdapter(model, scale=1.0)(frames()).logits
        want = model(torch.as_tensor(frames()).permute(0, 3, 1, 2).float())
    assert (right - want).abs().max() < 1e-6


@pytest.mark.parametrize("shape, order", [((84, 84, 4), "HWC"), ((4, 84, 84), "CHW")])
def test_a_uint8_four_channel_stack_is_not_read_as_rgba(shape, order):
    obs = np.zeros((1, *shape), np.uint8)
    obs[0, :2] = 7
    model = nn.Sequential(nn.Conv2d(4, 2, 8, stride=8), nn.Flatten(), nn.LazyLinear(3))
    with pytest.raises(rlviz.LayoutError, match=f"4x1:{order}"):
        PolicyAdapter(model)(obs)
    assert PolicyAdapter(model, layout=f"4x1:{order}")(obs).logits.shape == (1, 3)


def test_a_gaussian_pair_is_not_logits_and_value():
    net = trunk()
    log_std = torch.full((3,), -0.5)
    model = nn.ModuleDict({"net": net})

    def forward(x):
        return net(x), log_std.expand(x.shape[0], 3)

    with pytest.raises(ValueError, match="could be \\(logits, value\\), a Gaussian"):
        PolicyAdapter(model, forward=forward)(frames())
    adapter = PolicyAdapter(model, forward=forward, output="gaussian")
    actions = torch.tensor([[0.1, -0.2, 0.3], [0.0, 0.5, -1.0]])
    with torch.no_grad():
        out = adapter(frames())
        want = torch.distributions.Normal(net(adapter.preprocess(frames())), log_std.exp())
    assert (rlviz.TakenAction(actions)(out) - want.log_prob(actions).sum(-1)).abs().max() < 1e-5
    assert (rlviz.ActionMean(2)(out) - want.mean[:, 2]).abs().max() < 1e-6
    with pytest.raises(ValueError, match="continuous"):
        rlviz.explain(adapter, frames(), methods=["gradient"])  # no greedy action to explain


def test_a_value_with_several_columns_is_refused():
    net = trunk()
    adapter = PolicyAdapter(net, forward=lambda x: (net(x), net(x)[:, :2]), output="logits")
    with pytest.raises(ValueError, match="value must be a Tensor \\[B\\] or \\[B, 1\\]"):
        adapter(frames())


class TwoHeads(nn.Module):
    """An actor conv and a critic conv on the same input."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.actor = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.LazyLinear(3))
        self.critic = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.LazyLinear(1))

    def forward(self, x):
        return self.actor(x), self.critic(x)


def test_a_target_that_does_not_reach_the_layer_raises_instead_of_a_blank_map():
    model = TwoHeads()
    adapter = PolicyAdapter(model)
    adapter(frames())
    with pytest.raises(ValueError, match="does not depend on layer 'actor.0'"):
        rlviz.explain(adapter, frames(), methods=["gradcam"], layer="actor.0", target="value")


def test_an_all_zero_cam_says_why():
    from rlviz.methods.cam import AllZeroMapWarning

    model = TwoHeads()
    adapter = PolicyAdapter(model)
    black = np.zeros((1, 20, 20, 3), np.uint8)
    with torch.no_grad():  # the actor conv's output is its bias alone: make every unit off
        model.actor[0].bias.fill_(-1.0)
    adapter(frames())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        maps = rlviz.explain(adapter, black, methods=["gradcam"], layer="actor.1", target=0)
    assert np.abs(maps["gradcam"]).max() == 0
    reasons = [str(w.message) for w in caught if issubclass(w.category, AllZeroMapWarning)]
    assert reasons and "all zero for 1 of 1" in reasons[0]
    assert "zero" in reasons[0].split(": ", 1)[1]


def test_a_layer_run_on_two_inputs_has_no_single_map():
    class PerFrame(nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.enc = nn.Conv2d(3, 4, 3)
            self.head = nn.Sequential(nn.Flatten(), nn.LazyLinear(3))

        def forward(self, x):  # one encoder call per RGB frame of a 2-frame stack
            return self.head(self.enc(x[:, :3]) + self.enc(x[:, 3:]))

    adapter = PolicyAdapter(PerFrame(), layout="2x3:HWC")
    obs = frames(2, channels=6)
    adapter(obs)
    with pytest.raises(ValueError, match="called 2 times in one forward and the target depends"):
        rlviz.explain(adapter, obs, methods=["gradcam"], layer="enc", target=0)
    with pytest.raises(ValueError, match="called 2 times in one forward on different inputs"):
        rlviz.hooks.activations(adapter.model, adapter.preprocess(obs), "enc", forward=adapter.outputs)
