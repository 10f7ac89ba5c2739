"""Agreement with the reference implementations (captum, pytorch-grad-cam) on the same model,
inputs and targets: max |ours - theirs| <= 1e-5 x max |theirs|.

The references return per-channel attributions [B, C, H, W] or min-max-scaled CAMs; the helpers
below apply the same reductions to theirs (or ours) before comparing.
"""

import numpy as np
import pytest
import torch
from torch import nn

from rlviz import ActionLogit, PolicyAdapter
from rlviz.methods import get_method

captum_attr = pytest.importorskip("captum.attr")
pytorch_grad_cam = pytest.importorskip("pytorch_grad_cam")
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget  # noqa: E402

ACTIONS = [0, 2, 1]
RTOL = 1e-5


class Net(nn.Module):
    """Small actor-critic CNN; no in-place ops, so the references' hooks see clean tensors."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(8, 12, 3, stride=2, padding=1)
        self.relu2 = nn.ReLU()
        self.conv3 = nn.Conv2d(12, 12, 3, padding=1)
        self.relu3 = nn.ReLU()
        self.fc = nn.Linear(12 * 6 * 8, 3)
        self.value = nn.Linear(12 * 6 * 8, 1)

    def forward(self, x):
        h = self.relu3(self.conv3(self.relu2(self.conv2(self.relu1(self.conv1(x)))))).flatten(1)
        return self.fc(h), self.value(h)


class LogitsOnly(nn.Module):
    """What the references expect: a module returning one [B, A] tensor."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net(x)[0]


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    net = Net().eval()
    obs = np.random.default_rng(1).integers(0, 256, (3, 12, 16, 3), dtype=np.uint8)
    x = PolicyAdapter(net).preprocess(obs)
    return net, obs, x


def assert_agrees(ours: torch.Tensor, theirs: torch.Tensor) -> None:
    theirs = torch.as_tensor(theirs, dtype=torch.float32)
    assert ours.shape == theirs.shape, (ours.shape, theirs.shape)
    scale = float(theirs.abs().max())
    assert scale > 0, "reference map is all zero: the comparison would prove nothing"
    err = float((ours - theirs).abs().max())
    assert err <= RTOL * scale, f"max abs diff {err:.3g} > {RTOL} x {scale:.3g}"


def ours(name, net, obs, **options):
    return get_method(name, **options).attribute(net, obs, ActionLogit(ACTIONS))


def test_saliency(setup):
    net, obs, x = setup
    sal = captum_attr.Saliency(LogitsOnly(net))
    assert_agrees(ours("gradient", net, obs), sal.attribute(x, target=ACTIONS, abs=True).amax(1))
    assert_agrees(
        ours("gradient_signed", net, obs), sal.attribute(x, target=ACTIONS, abs=False).sum(1)
    )


def test_input_x_gradient(setup):
    net, obs, x = setup
    ref = captum_attr.InputXGradient(LogitsOnly(net)).attribute(x, target=ACTIONS).sum(1)
    assert_agrees(ours("grad_x_input", net, obs), ref)


@pytest.mark.parametrize("rule", ["gausslegendre", "riemann_middle", "riemann_left"])
def test_integrated_gradients(setup, rule):
    net, obs, x = setup
    ig = captum_attr.IntegratedGradients(LogitsOnly(net))
    ref = ig.attribute(x, baselines=0.25, target=ACTIONS, n_steps=12, method=rule).sum(1)
    assert_agrees(ours("integrated_gradients", net, obs, steps=12, rule=rule, baseline=0.25), ref)


def test_guided_backprop(setup):
    net, obs, x = setup
    ref = captum_attr.GuidedBackprop(LogitsOnly(net)).attribute(x, target=ACTIONS)
    assert_agrees(ours("guided_backprop", net, obs), ref.abs().amax(1))
    assert_agrees(ours("guided_backprop", net, obs, reduce="sum"), ref.sum(1))


@pytest.mark.parametrize(("window", "stride"), [(4, 2), (5, 3)])
def test_occlusion(setup, window, stride):
    net, obs, x = setup
    ref = captum_attr.Occlusion(LogitsOnly(net)).attribute(
        x,
        sliding_window_shapes=(3, window, window),
        strides=(3, stride, stride),
        baselines=0.3,
        target=ACTIONS,
        perturbations_per_eval=16,
    )
    # The window spans all channels, so every channel holds the same value.
    assert torch.allclose(ref[:, 0], ref[:, 2])
    assert_agrees(ours("occlusion", net, obs, window=window, stride=stride, fill=0.3), ref[:, 0])


def test_smoothgrad_matches_noise_tunnel_with_the_same_noise(setup, monkeypatch):
    net, obs, x = setup
    sg = get_method("smoothgrad", samples=5, stdev=0.2, seed=3)
    noise = sg.noise(tuple(x.shape[1:]))

    def fixed_noise(inp, stdev, n):
        # captum lays the noisy copies out frame-major: frame 0's n copies, then frame 1's, ...
        assert n == 5 and stdev == 0.2
        return inp.repeat_interleave(n, dim=0) + noise.repeat(inp.shape[0], 1, 1, 1)

    monkeypatch.setattr(captum_attr.NoiseTunnel, "_add_noise_to_input", staticmethod(fixed_noise))
    tunnel = captum_attr.NoiseTunnel(captum_attr.Saliency(LogitsOnly(net)))
    ref = tunnel.attribute(x, nt_type="smoothgrad", nt_samples=5, stdevs=0.2, target=ACTIONS)
    assert_agrees(sg.attribute(net, obs, ActionLogit(ACTIONS)), ref.amax(1))


@pytest.mark.parametrize("layer", ["conv3", "relu2"])
def test_layer_gradcam(setup, layer):
    net, obs, x = setup
    lgc = captum_attr.LayerGradCam(LogitsOnly(net), getattr(net, layer))
    ref = lgc.attribute(x, target=ACTIONS, relu_attributions=True)[:, 0]
    raw = get_method("gradcam").attribute_raw(net, obs, ActionLogit(ACTIONS), layer=layer)
    assert_agrees(raw, ref)


def minmax(maps: torch.Tensor) -> torch.Tensor:
    """pytorch-grad-cam's scale_cam_image: per frame (x - min) / (max + 1e-7)."""
    flat = maps.flatten(1)
    shifted = maps - flat.min(1).values[:, None, None]
    return shifted / (1e-7 + shifted.flatten(1).max(1).values[:, None, None])


@pytest.mark.parametrize(
    ("name", "reference"), [("gradcam", "GradCAM"), ("gradcam_pp", "GradCAMPlusPlus")]
)
@pytest.mark.parametrize("layer", ["conv3", "relu2"])
def test_pytorch_grad_cam(setup, name, reference, layer):
    net, obs, x = setup
    wrapper = LogitsOnly(net)
    cam_cls = getattr(pytorch_grad_cam, reference)
    with cam_cls(model=wrapper, target_layers=[getattr(net, layer)]) as cam:
        ref = cam(input_tensor=x, targets=[ClassifierOutputTarget(a) for a in ACTIONS])
    # Their pipeline: relu, min-max per frame, resize (OpenCV bilinear), then min-max again.
    from rlviz.maps import upsample

    raw = get_method(name).attribute_raw(net, obs, ActionLogit(ACTIONS), layer=layer)
    ours_scaled = minmax(upsample(minmax(raw.clamp(min=0)), x.shape[-2:]))
    assert_agrees(ours_scaled, ref)
    # And attribute() is exactly the raw map upsampled the same way.
    full = get_method(name).attribute(net, obs, ActionLogit(ACTIONS), layer=layer)
    torch.testing.assert_close(full, upsample(raw, x.shape[-2:]))
