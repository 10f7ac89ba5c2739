"""Attribution methods: the contract every registered method keeps, and hand-computed values.

Tiny models on 12x16 (contract) and 4x4 (analytic) inputs keep this file fast.
"""

import math
import warnings

import numpy as np
import pytest
import torch
from helpers import FAST_OPTIONS, TinyGapNet
from scipy.ndimage import gaussian_filter
from torch import nn

import rlviz
from rlviz import ActionLogit, PolicyAdapter, TakenAction, explain
from rlviz.hooks import hook_count
from rlviz.methods import available_methods, get_method, register
from rlviz.methods.base import AttributionMethod
from rlviz.methods.integrated_gradients import quadrature
from rlviz.ops import gaussian_blur

EXPECTED = {
    "gradient",
    "gradient_signed",
    "grad_x_input",
    "smoothgrad",
    "integrated_gradients",
    "guided_backprop",
    "occlusion",
    "perturbation",
    "cam",
    "gradcam",
    "gradcam_pp",
}

class TinyFlatNet(nn.Module):
    """A Nature-CNN-like head (flatten + linear): CAM is undefined for it."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, stride=2, padding=1)
        self.relu = nn.ReLU()
        self.fc = nn.Linear(4 * 6 * 8, 3)

    def forward(self, x):
        return self.fc(self.relu(self.conv1(x)).flatten(1))


def make_net(seed: int = 0, **kwargs) -> TinyGapNet:
    torch.manual_seed(seed)
    return TinyGapNet(**kwargs).eval()


def frames(n: int = 5, seed: int = 0, h: int = 12, w: int = 16) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, 3), dtype=np.uint8)


def method(name: str) -> AttributionMethod:
    return get_method(name, **FAST_OPTIONS.get(name, {}))


def test_registry_lists_every_method_and_rejects_unknown_names():
    assert set(available_methods()) == EXPECTED
    assert rlviz.available_methods() == available_methods()
    with pytest.raises(ValueError, match="unknown attribution method 'nope'; available: gradient"):
        get_method("nope")
    with pytest.raises(TypeError, match="it accepts: window, stride, fill"):
        get_method("occlusion", windw=3)
    assert get_method("saliency").name == "gradient"  # DESIGN.md's name
    assert all(
        get_method(n).needs_layer == (n in {"cam", "gradcam", "gradcam_pp"}) for n in EXPECTED
    )


def test_register_a_new_method():
    @register("test_constant")
    class Constant(AttributionMethod):
        def _maps(self, adapter, x, target, request):
            return torch.ones(x.shape[0], *x.shape[2:])

    try:
        maps = get_method("test_constant").attribute(make_net(), frames(2))
        assert maps.shape == (2, 12, 16) and bool((maps == 1).all())
    finally:
        from rlviz.methods import registry

        registry._REGISTRY.pop("test_constant")


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_contract(name):
    model = make_net()
    model.conv1.bias.requires_grad_(False)  # flags must survive untouched
    model.train()  # no dropout/BN here: the mode must simply be left as it is
    state = {k: v.clone() for k, v in model.state_dict().items()}
    flags = [p.requires_grad for p in model.parameters()]
    hooks = hook_count(model)
    obs = frames(5)
    obs_copy = obs.copy()
    actions = np.array([0, 2, 1, 1, 0])
    m = method(name)

    maps = m.attribute(model, obs, TakenAction(actions))
    assert (
        isinstance(maps, torch.Tensor) and maps.dtype == torch.float32 and maps.device.type == "cpu"
    )
    assert maps.shape == (5, 12, 16)
    assert torch.isfinite(maps).all() and maps.abs().max() > 0
    if not m.signed:
        assert (maps >= 0).all()
    raw = m.attribute_raw(model, obs, TakenAction(actions))
    assert raw.ndim == 3 and raw.shape[0] == 5
    if not m.low_res:
        assert torch.equal(raw, maps)

    # Deterministic, and the same whatever the chunking.
    again = m.attribute(model, obs, TakenAction(actions))
    assert torch.equal(maps, again)
    # Perturbation scores are differences of float32 outputs (~1): their rounding is ~1e-7 absolute.
    atol = 2e-7 if name in ("occlusion", "perturbation") else 1e-6 * float(maps.abs().max())
    for batch_size in (1, 3):
        chunked = m.attribute(model, obs, TakenAction(actions), batch_size=batch_size)
        torch.testing.assert_close(chunked, maps, rtol=1e-4, atol=atol)

    # Nothing about the model or the input changed; no hooks left; no .grad written.
    assert model.training
    assert hook_count(model) == hooks
    assert [p.requires_grad for p in model.parameters()] == flags
    assert all(p.grad is None for p in model.parameters())
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())
    assert np.array_equal(obs, obs_copy)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_contract_under_no_grad_single_frame_and_float_input(name):
    model = make_net()
    m = method(name)
    obs = frames(3)
    reference = m.attribute(model, obs, 1)
    x = torch.from_numpy(obs).permute(0, 3, 1, 2).float() / 255  # preprocessed input passes through
    x_copy = x.clone()
    with torch.no_grad():  # e.g. called from inside a rollout loop
        inside = m.attribute(model, x, 1)
        assert not torch.is_grad_enabled()  # the caller's grad mode is left as it was
    assert torch.is_grad_enabled()
    assert torch.equal(x, x_copy)
    torch.testing.assert_close(inside, reference, rtol=1e-5, atol=1e-7)
    one = m.attribute(model, obs[1], 1)  # one frame, no batch axis
    assert one.shape == (1, 12, 16)
    # Perturbation maps are differences of logits: their float32 rounding scales with the logits
    # (batch-size-dependent kernels), not with the map, which is tiny for a random-init net.
    with torch.no_grad():
        logit_scale = float(PolicyAdapter(model).outputs(x).logits.abs().max())
    tolerance = max(1e-6 * float(reference.abs().max()), 1e-7 * logit_scale)
    torch.testing.assert_close(one[0], reference[1], rtol=1e-4, atol=tolerance)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_targets_change_the_map(name):
    model = make_net(seed=1)  # seed 0 happens to give an all-zero Grad-CAM for two targets
    m = method(name)
    obs = frames(2)
    by_action = [m.attribute(model, obs, ActionLogit(k)) for k in range(3)]
    value = m.attribute(model, obs, "value")
    maps = [*by_action, value]
    assert not any(torch.allclose(a, b) for i, a in enumerate(maps) for b in maps[i + 1 :])


def test_method_errors_are_clear():
    model = make_net()
    with pytest.raises(ValueError, match="the target has 3 actions for 5 observations"):
        get_method("gradient").attribute(model, frames(5), TakenAction([0, 1, 2]))
    with pytest.raises(ValueError, match="layer 'conv9' not found; available: conv1, relu1"):
        get_method("gradcam").attribute(model, frames(2), layer="conv9")
    with pytest.raises(ValueError, match="spatial output"):
        get_method("gradcam").attribute(model, frames(2), layer="policy")
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        get_method("gradient").attribute(model, frames(2), batch_size=0)
    with pytest.raises(ValueError, match="empty batch"):
        get_method("gradient").attribute(model, frames(0))
    with pytest.raises(ValueError, match="unknown channel reduction"):
        get_method("gradient", reduce="median")
    with pytest.raises(ValueError, match="value head"):
        get_method("gradient").attribute(TinyFlatNet(), frames(2), "value")
    with pytest.raises(TypeError, match="PolicyAdapter or an nn.Module"):
        get_method("gradient").attribute(lambda x: x, frames(2))


def test_training_mode_with_dropout_warns():
    model = nn.Sequential(
        nn.Conv2d(3, 2, 3), nn.Dropout(0.5), nn.Flatten(), nn.Linear(2 * 10 * 14, 3)
    )
    model.train()
    with pytest.warns(UserWarning, match="training mode"):
        get_method("gradient").attribute(model, frames(2))
    assert model.training


def test_cam_is_exact_for_gap_heads_and_refuses_other_heads():
    model = make_net()
    obs = frames(3)
    x = PolicyAdapter(model).preprocess(obs)
    cam = get_method("cam").attribute_raw(model, obs, ActionLogit(2))
    logits = model(x)[0]
    # Spatial mean of the CAM + the bias is the logit (Zhou et al. 2016).
    torch.testing.assert_close(cam.mean(dim=(1, 2)) + model.policy.bias[2], logits[:, 2].detach())
    assert cam.shape == (3, 6, 8)
    with pytest.raises(ValueError, match="CAM needs global average pooling"):
        get_method("cam").attribute(TinyFlatNet(), obs)
    # Naming the conv before the ReLU breaks the GAP + linear condition too.
    with pytest.raises(ValueError, match="gradient varies over the map"):
        get_method("cam").attribute(model, obs, layer="conv2")


def test_gradcam_uses_the_models_cam_layer_and_last_conv():
    model = make_net()
    obs = frames(2)
    default = get_method("gradcam").attribute_raw(model, obs)
    assert torch.equal(default, get_method("gradcam").attribute_raw(model, obs, layer="conv2"))
    model.cam_layer = "relu2"
    with torch.no_grad():
        relu_out = get_method("gradcam").attribute_raw(model, obs, layer="relu2")
    assert torch.equal(get_method("gradcam").attribute_raw(model, obs), relu_out)


def test_guided_backprop_same_with_inplace_relu():
    obs = frames(3)
    a = get_method("guided_backprop").attribute(make_net(inplace=True), obs)
    b = get_method("guided_backprop").attribute(make_net(inplace=False), obs)
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, get_method("gradient").attribute(make_net(), obs))


def test_integrated_gradients_completeness_and_delta():
    model = make_net()
    obs = frames(3)
    ig = get_method("integrated_gradients", steps=64)
    maps, delta = ig.attribute_with_delta(model, obs, ActionLogit(1))
    x = PolicyAdapter(model).preprocess(obs)
    gap = model(x)[0][:, 1] - model(torch.zeros_like(x))[0][:, 1]
    torch.testing.assert_close(maps.sum(dim=(1, 2)) - gap.detach(), delta)
    assert delta.abs().max() < 1e-2 * gap.abs().max()  # ReLU kinks limit quadrature accuracy
    coarse = get_method("integrated_gradients", steps=2, rule="riemann_right")
    assert (
        coarse.attribute_with_delta(model, obs, ActionLogit(1))[1].abs().max() > delta.abs().max()
    )


def test_quadrature_rules_integrate_polynomials():
    for rule in ("gausslegendre", "riemann_trapezoid", "riemann_middle"):
        alphas, weights = quadrature(rule, 40)
        assert math.isclose(float(weights.sum()), 1.0, rel_tol=1e-9)
        assert math.isclose(float((weights * alphas**2).sum()), 1 / 3, rel_tol=1e-3)
    with pytest.raises(ValueError, match="unknown quadrature rule"):
        quadrature("simpson", 8)


def test_smoothgrad_noise_is_seeded_and_shared_across_frames():
    sg = get_method("smoothgrad", samples=3, seed=7)
    assert torch.equal(sg.noise((3, 4, 4)), sg.noise((3, 4, 4)))
    assert not torch.equal(
        sg.noise((3, 4, 4)), get_method("smoothgrad", samples=3, seed=8).noise((3, 4, 4))
    )
    model = make_net()
    obs = frames(4)
    # A frame's map does not depend on which other frames are in the batch.
    torch.testing.assert_close(sg.attribute(model, obs)[2], sg.attribute(model, obs[2:3])[0])


class MeanNet(nn.Module):
    """logits = [10 * mean(x), 3]: action 0 is greedy for bright frames, 1 once they darken."""

    def forward(self, x):
        s = 10 * x.mean(dim=(1, 2, 3))
        return torch.stack([s, torch.full_like(s, 3.0)], dim=1)


@pytest.mark.parametrize("name", ["integrated_gradients", "smoothgrad", "occlusion"])
def test_most_likely_action_is_fixed_on_the_clean_frame(name):
    # Methods that evaluate altered inputs must keep explaining the clean frame's greedy action
    # (here 0), although darkening the frame (black baseline, occluder, noise) flips the argmax.
    obs = torch.full((2, 1, 4, 4), 0.31)
    obs[1, 0, 0, 0] = 0.5
    options = {
        "smoothgrad": {"samples": 8, "stdev": 0.3, "absolute": False, "reduce": "sum"},
        "occlusion": {"window": 2, "fill": 0.0},
    }
    m = get_method(name, **options.get(name, {}))
    greedy = m.attribute(MeanNet(), obs)
    torch.testing.assert_close(greedy, m.attribute(MeanNet(), obs, TakenAction([0, 0])))
    assert not torch.allclose(greedy, m.attribute(MeanNet(), obs, TakenAction([1, 1])))


# ------------------------------------------------------------------ analytic values on 4x4 inputs


class PixelNet(nn.Module):
    """One channel, 4x4: h = relu(a x + b) per pixel, logit_0 = sum(v * h), logit_1 = -logit_0."""

    def __init__(self, a: float, b: float, v: torch.Tensor) -> None:
        super().__init__()
        self.affine = nn.Conv2d(1, 1, 1)
        self.relu = nn.ReLU()
        with torch.no_grad():
            self.affine.weight.fill_(a)
            self.affine.bias.fill_(b)
        self.register_buffer("v", v)

    def forward(self, x):
        s = (self.v * self.relu(self.affine(x))).sum(dim=(1, 2, 3))
        return torch.stack([s, -s], dim=1)


class LinearNet(nn.Module):
    """logit_0 = sum(w * x) over a [1, 4, 4] input; logit_1 = 0."""

    def __init__(self, w: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("w", w)

    def forward(self, x):
        s = (self.w * x).sum(dim=(1, 2, 3))
        return torch.stack([s, torch.zeros_like(s)], dim=1)


ARANGE = (torch.arange(16, dtype=torch.float32) / 16).view(1, 1, 4, 4)
SIGNS = torch.tensor([[1.0, -1.0, 2.0, -2.0]] * 4).view(1, 4, 4)


def test_gradient_family_analytic():
    w = torch.tensor([[1.0, -2.0, 3.0, -4.0]] * 4).view(1, 4, 4)
    model = LinearNet(w)
    grad = get_method("gradient").attribute(model, ARANGE, 0)
    torch.testing.assert_close(grad[0], w.abs()[0])
    torch.testing.assert_close(get_method("gradient_signed").attribute(model, ARANGE, 0)[0], w[0])
    gxi = get_method("grad_x_input").attribute(model, ARANGE, 0)[0]
    torch.testing.assert_close(gxi, (w * ARANGE[0])[0])
    # A linear model's IG from a black baseline is exactly w * x, for every rule.
    for rule in ("gausslegendre", "riemann_trapezoid", "riemann_middle"):
        ig = get_method("integrated_gradients", steps=5, rule=rule).attribute(model, ARANGE, 0)[0]
        torch.testing.assert_close(ig, (w * ARANGE[0])[0])
    # Noise does not change a constant gradient.
    sg = get_method("smoothgrad", samples=3, stdev=0.5).attribute(model, ARANGE, 0)[0]
    torch.testing.assert_close(sg, w.abs()[0])


def test_guided_backprop_analytic():
    model = PixelNet(a=1.0, b=-0.5, v=SIGNS)
    active = (ARANGE[0, 0] - 0.5 > 0).float()
    # Plain gradient: v where the ReLU is open. Guided: only positive v survives.
    torch.testing.assert_close(
        get_method("gradient_signed").attribute(model, ARANGE, 0)[0], SIGNS[0] * active
    )
    guided = get_method("guided_backprop", reduce="sum").attribute(model, ARANGE, 0)[0]
    torch.testing.assert_close(guided, SIGNS[0].clamp(min=0) * active)


def test_occlusion_analytic():
    w = SIGNS.clone()
    model = LinearNet(w)
    contrib = (w * ARANGE[0])[0]  # each pixel's share of logit_0
    # 2x2 windows, stride 2, black fill: a pixel's score is the sum over its window.
    occ = get_method("occlusion", window=2, stride=2, fill=0.0).attribute(model, ARANGE, 0)[0]
    expected = (
        contrib.view(2, 2, 2, 2).sum(dim=(1, 3)).repeat_interleave(2, 0).repeat_interleave(2, 1)
    )
    torch.testing.assert_close(occ, expected)
    # Stride 1: mean over the windows that cover the pixel, computed by hand.
    occ1 = get_method("occlusion", window=2, stride=1, fill=0.25).attribute(model, ARANGE, 0)[0]
    drop = w[0] * (ARANGE[0, 0] - 0.25)
    manual = torch.zeros(4, 4)
    count = torch.zeros(4, 4)
    for i in range(3):
        for j in range(3):
            manual[i : i + 2, j : j + 2] += drop[i : i + 2, j : j + 2].sum()
            count[i : i + 2, j : j + 2] += 1
    torch.testing.assert_close(occ1, manual / count)


def test_perturbation_analytic():
    w = SIGNS.clone()
    model = LinearNet(w)
    x = ARANGE[0, 0].numpy().astype(np.float64)
    blurred = gaussian_filter(x, sigma=1.0, mode="reflect", truncate=4.0)
    pert = get_method("perturbation", stride=2, mask_sigma=1.0, blur_sigma=1.0)
    raw = pert.attribute_raw(model, ARANGE, 0)[0]
    assert raw.shape == (2, 2)
    ys, xs = np.mgrid[0:4, 0:4]
    for i, cy in enumerate((0.5, 2.5)):
        for j, cx in enumerate((0.5, 2.5)):
            mask = np.exp(-((ys - cy) ** 2 + (xs - cx) ** 2) / 2.0)
            mask /= mask.max()
            change = float((w[0].numpy() * mask * (blurred - x)).sum())
            assert math.isclose(float(raw[i, j]), 0.5 * change**2, rel_tol=1e-4)
    full = pert.attribute(model, ARANGE, 0)[0]
    # Linear interpolation between the cell centres (0.5 and 2.5), constant beyond them.
    torch.testing.assert_close(full[0, 0], raw[0, 0])
    torch.testing.assert_close(full[3, 3], raw[1, 1])
    torch.testing.assert_close(full[1, 0], 0.75 * raw[0, 0] + 0.25 * raw[1, 0])
    torch.testing.assert_close(
        full[2, 1],
        0.25 * (0.75 * raw[0, 0] + 0.25 * raw[0, 1]) + 0.75 * (0.75 * raw[1, 0] + 0.25 * raw[1, 1]),
    )
    # Default target: all logits (Greydanus); logit_1 is constant so it equals the logit_0 map.
    torch.testing.assert_close(pert.attribute_raw(model, ARANGE)[0], raw)


def test_gaussian_blur_matches_scipy():
    x = torch.rand(2, 3, 9, 13, dtype=torch.float64)
    for sigma in (0.7, 2.0, 5.0):  # 5.0: radius exceeds the image, the reflection repeats
        ours = gaussian_blur(x, sigma).numpy()
        ref = np.stack([[gaussian_filter(c, sigma, mode="reflect") for c in f] for f in x.numpy()])
        np.testing.assert_allclose(ours, ref, rtol=1e-10, atol=1e-12)


class GapArangeNet(nn.Module):
    """A = relu(conv1x1(x)) with 2 channels: A_0 = x, A_1 = 1 - x; global average pool; linear."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Conv2d(1, 2, 1)
        self.relu = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(2, 2)
        with torch.no_grad():
            self.features.weight.copy_(torch.tensor([1.0, -1.0]).view(2, 1, 1, 1))
            self.features.bias.copy_(torch.tensor([0.0, 1.0]))
            self.head.weight.copy_(torch.tensor([[2.0, -1.0], [0.5, 3.0]]))
            self.head.bias.zero_()

    def forward(self, x):
        return self.head(self.pool(self.relu(self.features(x))).flatten(1))


def test_cam_family_analytic():
    """4x4 arange input (as captum's Grad-CAM test): every quantity follows by hand."""
    model = GapArangeNet()
    x = ARANGE
    a0, a1 = x[0, 0], 1 - x[0, 0]
    w = torch.tensor([2.0, -1.0])  # head weights of action 0
    cam = get_method("cam").attribute_raw(model, x, 0)[0]
    torch.testing.assert_close(cam, w[0] * a0 + w[1] * a1)
    # Grad-CAM: gradient w / 16 everywhere, channel weight = its mean = w / 16.
    gradcam = get_method("gradcam").attribute_raw(model, x, 0, layer="relu")[0]
    torch.testing.assert_close(gradcam, ((w[0] * a0 + w[1] * a1) / 16).clamp(min=0))
    # Grad-CAM++: g = w/16; alpha = g^2 / (2 g^2 + sum(A) g^3); weight = sum_ij relu(g) alpha.
    g = w / 16
    sums = torch.stack([a0.sum(), a1.sum()])
    alpha = g**2 / (2 * g**2 + sums * g**3 + 1e-6)
    weights = 16 * g.clamp(min=0) * alpha
    pp = get_method("gradcam_pp").attribute_raw(model, x, 0, layer="relu")[0]
    torch.testing.assert_close(pp, (weights[0] * a0 + weights[1] * a1).clamp(min=0))
    # attribute() = raw map upsampled to the input size (here the same size).
    torch.testing.assert_close(
        get_method("gradcam").attribute(model, x, 0, layer="relu")[0], gradcam
    )


# ------------------------------------------------------------------------------------ explain()


def test_explain_runs_methods_and_routes_options():
    model = make_net()
    obs = frames(3)
    out = explain(
        model,
        obs,
        methods=["gradient", "gradcam", "occlusion"],
        occlusion={"window": 4, "stride": 4},
    )
    assert list(out) == ["gradient", "gradcam", "occlusion"]
    assert all(
        isinstance(v, np.ndarray) and v.dtype == np.float32 and v.shape == (3, 12, 16)
        for v in out.values()
    )
    expected = get_method("occlusion", window=4, stride=4).attribute(model, obs).numpy()
    np.testing.assert_allclose(out["occlusion"], expected)
    # A shared option reaches the methods that take it.
    ig = explain(PolicyAdapter(model), obs, methods="integrated_gradients", steps=4, target="value")
    np.testing.assert_allclose(
        ig["integrated_gradients"],
        get_method("integrated_gradients", steps=4).attribute(model, obs, "value").numpy(),
    )
    with pytest.raises(TypeError, match=r"option\(s\) \['steps'\] are not accepted"):
        explain(model, obs, methods=["gradient"], steps=4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        explain(model, obs, methods=["cam"], layer=None)
