"""Inside the network: receptive fields, filters, feature maps, top-k, neighbours, dissection,
ablation, inversion, DeepDream and adversarial examples on tiny models with known answers."""

import gymnasium as gym
import numpy as np
import pytest
import torch
from torch import nn

from rlviz import PolicyAdapter
from rlviz.features import (
    HAND_KERNELS,
    ablate,
    ablation_study,
    action_change,
    apply_kernels,
    deepdream,
    dissect,
    feature_maps,
    filter_grid,
    invert,
    minimal_perturbation,
    nearest_neighbours,
    pixel_neighbours,
    play_episodes,
    plot_ablation,
    plot_adversarial_example,
    plot_dissection,
    plot_dreams,
    plot_epsilon_histogram,
    plot_feature_maps,
    plot_filter_grid,
    plot_inversions,
    plot_kernel_comparison,
    plot_neighbours,
    plot_rgb_filters,
    plot_top_k,
    receptive_field,
    receptive_fields,
    rgb_filters,
    success_rate,
    top_k_examples,
)
from rlviz.features._common import forward_to_layers
from rlviz.hooks import hook_count

H, W = 24, 32


class Planted(nn.Module):
    """conv1 unit 2 is a red-pixel detector; conv2 unit 0 pools it at stride 2 and drives the
    'left' logit; conv2 unit 1 reads nothing and drives nothing."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(4, 2, 2, stride=2)
        self.relu2 = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.policy = nn.Linear(2, 3)
        self.value = nn.Linear(2, 1)
        with torch.no_grad():
            # units 0, 1, 3 look for green, blue and dark pixels (with a little noise); unit 2 for red
            self.conv1.weight.copy_(torch.randn(self.conv1.weight.shape, generator=g) * 0.02)
            self.conv1.bias.zero_()
            self.conv1.weight[:, :, 1, 1] = torch.tensor(
                [[-1.0, 1.0, -1.0], [-1.0, -1.0, 1.0], [1.0, -1.0, -1.0], [-0.3, -0.3, -0.3]]
            )
            self.conv1.weight[2].zero_()
            self.conv1.weight[2, :, 1, 1] = torch.tensor([1.0, -1.0, -1.0])  # exactly R - G - B
            self.conv2.weight.zero_()
            self.conv2.bias.zero_()
            self.conv2.weight[0, 2] = 0.25
            self.policy.weight.copy_(torch.tensor([[4.0, 0.0], [0.0, 0.0], [-4.0, 0.0]]))
            self.policy.bias.copy_(torch.tensor([0.0, 0.1, 0.0]))
            self.value.weight.fill_(1.0)
            self.value.bias.zero_()

    def forward(self, x):
        h = self.relu2(self.conv2(self.relu1(self.conv1(x))))
        p = self.pool(h).flatten(1)
        return self.policy(p), self.value(p).squeeze(-1)


def red_squares(n=48, seed=0, intensity=None):
    """Dim noise frames with one red 6x8 square at a random place; returns (frames, masks)."""
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 90, (n, H, W, 3), dtype=np.uint8)
    masks = np.zeros((n, H, W), bool)
    for i in range(n):
        y, x = rng.integers(0, H - 6), rng.integers(0, W - 8)
        # varied reds, so the quantile threshold does not fall on a tie
        red = rng.integers(200, 256, (6, 8)) if intensity is None else intensity[i]
        frames[i, y : y + 6, x : x + 8, 0] = red
        frames[i, y : y + 6, x : x + 8, 1:] = 20
        masks[i, y : y + 6, x : x + 8] = True
    return frames, masks


@pytest.fixture
def planted():
    model = Planted()
    return model, PolicyAdapter(model, action_names=("left", "forward", "right"))


# `tiny` (TinyCNN on 24x32 frames + its adapter) comes from conftest.py.


def frames(n=12, seed=1):
    return np.random.default_rng(seed).integers(0, 256, (n, H, W, 3), dtype=np.uint8)


def is_png(path):
    data = open(path, "rb").read()
    return len(data) > 2000 and data[:8] == b"\x89PNG\r\n\x1a\n"


# ---------------------------------------------------------------------------------------------
# Receptive fields


def test_receptive_fields_nature_dqn_stack():
    # Mnih et al. 2015: 8x8/4, 4x4/2, 3x3/1 -> fields 8, 20, 36 px; strides 4, 8, 8.
    stack = nn.Sequential(
        nn.Conv2d(4, 32, 8, 4),
        nn.ReLU(),
        nn.Conv2d(32, 64, 4, 2),
        nn.ReLU(),
        nn.Conv2d(64, 64, 3, 1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(64 * 7 * 7, 512),
    )
    fields = receptive_fields(stack)
    assert [f.size[0] for f in fields[:6]] == [8, 8, 20, 20, 36, 36]
    assert [f.stride[0] for f in fields[:6]] == [4, 4, 8, 8, 8, 8]
    assert all(f.start == (0, 0) for f in fields[:6])
    assert not fields[5].is_global and fields[6].is_global and fields[7].is_global
    assert fields[7].box(0, 0, 84, 84) == (0, 0, 84, 84)


def test_receptive_fields_padding_dilation_pooling_by_hand():
    stack = [
        ("c1", nn.Conv2d(3, 4, 3, padding=1)),  # size 3, stride 1, start -1
        ("p1", nn.MaxPool2d(2)),  # size 3 + 1*1 = 4, stride 2, start -1
        ("c2", nn.Conv2d(4, 4, 3, padding=2, dilation=2)),  # size 4 + 4*2 = 12, start -1 - 2*2 = -5
        ("p2", nn.AvgPool2d(3, stride=2, padding=1)),  # size 12 + 2*2 = 16, stride 4, start -7
        (
            "c3",
            nn.Conv2d(4, 4, (1, 3), stride=(1, 2)),
        ),  # rows unchanged; cols 16 + 2*4 = 24, stride 8
    ]
    fields = receptive_fields(stack)
    assert [(f.layer, f.size, f.stride, f.start) for f in fields] == [
        ("c1", (3, 3), (1, 1), (-1, -1)),
        ("p1", (4, 4), (2, 2), (-1, -1)),
        ("c2", (12, 12), (2, 2), (-5, -5)),
        ("p2", (16, 16), (4, 4), (-7, -7)),
        ("c3", (16, 24), (4, 8), (-7, -7)),
    ]
    assert fields[3].padding == (7, 7)
    assert fields[3].box(2, 1, 40, 40) == (1, 0, 17, 13)  # cols -7 + 4 = -3 (clipped) .. 13


def test_receptive_field_matches_gradient_support():
    # With positive weights and average pooling, a unit's input gradient is non-zero exactly on
    # its receptive field (clipped to the image): the formula must agree, unit by unit.
    torch.manual_seed(0)
    stack = nn.Sequential(
        nn.Conv2d(1, 1, 3, padding=1),
        nn.AvgPool2d(2),
        nn.Conv2d(1, 1, 3, stride=2, padding=2, dilation=2),
    )
    for m in stack:
        if isinstance(m, nn.Conv2d):
            nn.init.uniform_(m.weight, 0.5, 1.0)
    field = receptive_fields(stack)[-1]
    x = torch.rand(1, 1, 30, 26, requires_grad=True)
    out = stack(x)
    for i in range(out.shape[2]):
        for j in range(out.shape[3]):
            (g,) = torch.autograd.grad(out[0, 0, i, j], x, retain_graph=True)
            rows, cols = torch.nonzero(g[0, 0], as_tuple=True)
            assert field.box(i, j, 30, 26) == (
                rows.min(),
                cols.min(),
                rows.max() + 1,
                cols.max() + 1,
            )


def test_receptive_field_of_named_layer_in_nested_model(planted):
    model, _ = planted
    assert receptive_field(model, "conv1").size == (3, 3)
    rf = receptive_field(model, "relu2")
    assert (rf.size, rf.stride, rf.start) == ((4, 4), (2, 2), (-1, -1))

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 8, 4, padding=3)
            self.relu = nn.ReLU()

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1, self.conv2 = Block(), Block()

    rf = receptive_field(Net(), "conv2")
    assert (rf.size, rf.stride, rf.start) == ((8 + 7 * 4, 8 + 7 * 4), (16, 16), (-3 - 3 * 4, -15))
    with pytest.raises(ValueError, match="not found; available"):
        receptive_field(Net(), "conv9")
    with pytest.raises(ValueError, match="cannot compute a receptive field through Upsample"):
        receptive_fields([nn.Conv2d(1, 1, 3), nn.Upsample(scale_factor=2)])


# ---------------------------------------------------------------------------------------------
# Filters and feature maps


def test_rgb_filters_layout_and_per_kernel_normalisation(tiny):
    model, _ = tiny
    tiles = rgb_filters(model)
    w = model.conv1.weight.detach().numpy()
    assert tiles.shape == (6, 5, 5, 3)
    assert np.allclose(tiles.reshape(6, -1).min(1), 0) and np.allclose(
        tiles.reshape(6, -1).max(1), 1
    )
    # tile[o, y, x, c] is weight[o, c, y, x] after the kernel's own min-max scaling
    o = 3
    expect = (w[o] - w[o].min()) / (w[o].max() - w[o].min())
    assert np.allclose(tiles[o], expect.transpose(1, 2, 0), atol=1e-6)
    grid = filter_grid(model, "conv2")
    assert grid.shape == (8, 6, 3, 3) and grid.min() >= 0 and grid.max() <= 1
    with pytest.raises(ValueError, match="not nn.Conv2d"):
        filter_grid(model, "fc")
    with pytest.raises(ValueError, match="reads 6 input channels"):
        rgb_filters(model, "conv2")


def test_hand_kernels_do_what_they_say():
    ramp = np.tile((8 * np.arange(W)).astype(np.uint8)[None, :, None], (H, 1, 3))  # +8 per column
    out = apply_kernels(ramp)
    assert set(out) == set(HAND_KERNELS)
    inner = (slice(2, -2), slice(2, -2))
    step = 8 / 255
    assert np.allclose(out["edge (Sobel x)"][inner], 8 * step, atol=1e-5)  # (1 + 2 + 1) * 2 steps
    assert np.allclose(out["edge (Sobel y)"][inner], 0, atol=1e-5)
    assert np.allclose(
        out["edge (Laplacian)"][inner], 0, atol=1e-5
    )  # a linear ramp has no curvature
    assert np.allclose(out["sharpen"][inner], ramp[inner][..., 0] / 255, atol=1e-5)
    flat = np.full((H, W, 3), 120, np.uint8)
    for name in ("blur (box)", "blur (Gaussian)", "sharpen"):
        assert np.allclose(apply_kernels(flat)[name], 120 / 255, atol=1e-5), name


def test_feature_maps_equal_direct_computation(tiny):
    model, adapter = tiny
    frame = frames(1)[0]
    maps = feature_maps(adapter, frame, "conv2")
    x = torch.as_tensor(frame).permute(2, 0, 1)[None].float() / 255
    with torch.no_grad():
        expect = model.conv2(torch.relu(model.conv1(x)))[0].numpy()
    assert maps.shape == (8, 6, 8) and np.allclose(maps, expect, atol=1e-5)
    with pytest.raises(ValueError, match="conv-like layer"):
        feature_maps(adapter, frame, "fc")


# ---------------------------------------------------------------------------------------------
# Top-k dataset examples and neighbours


def test_top_k_finds_the_reddest_states_and_boxes_the_square(planted):
    _, adapter = planted
    intensity = np.linspace(120, 255, 30).astype(np.uint8)  # state i is redder than state i - 1
    obs, masks = red_squares(30, seed=3, intensity=intensity)
    top = top_k_examples(adapter, obs, "conv1", 2, k=5)
    assert list(top.indices) == [29, 28, 27, 26, 25]
    assert np.all(np.diff(top.scores) <= 0)
    for index, (y0, x0, y1, x1) in zip(top.indices, top.boxes, strict=True):
        assert (y1 - y0, x1 - x0) == (3, 3) or y0 == 0 or x0 == 0 or y1 == H or x1 == W
        assert masks[index, y0:y1, x0:x1].any()  # the peak's field covers the red square
    spread = top_k_examples(adapter, obs, "conv1", 2, k=3, min_separation=4)
    assert list(spread.indices) == [29, 25, 21]
    crops = spread.crops(obs)
    assert all(c.shape[-1] == 3 and c.size for c in crops)
    with pytest.raises(ValueError, match="has 4 channels"):
        top_k_examples(adapter, obs, "conv1", 7)


def test_neighbours_find_duplicates_first(tiny):
    _, adapter = tiny
    obs = frames(10)
    obs[7] = obs[2]
    found = nearest_neighbours(adapter, obs, obs[2], "conv2", k=4, exclude=[2])
    assert found.indices[0] == 7 and found.distances[0] == pytest.approx(0, abs=1e-5)
    assert np.all(np.diff(found.distances) >= 0) and 2 not in found.indices
    px = pixel_neighbours(obs, obs[2], k=3)
    assert set(px.indices[:2]) == {2, 7}
    flat = obs.reshape(10, -1).astype(np.float64) / 255
    assert px.distances[2] == pytest.approx(
        np.sort(np.linalg.norm(flat - flat[2], axis=1))[2], rel=1e-4
    )


# ---------------------------------------------------------------------------------------------
# Dissection and ablation


def test_dissection_finds_the_planted_red_detector(planted):
    _, adapter = planted
    obs, masks = red_squares(48)
    result = dissect(adapter, obs, masks, ["conv1", "conv2"], quantile=0.94)
    best = result.top(2)
    assert [(s.layer, s.unit) for s in best] == [("conv1", 2), ("conv2", 0)]
    assert best[0].iou > 0.7 and best[0].precision > 0.95
    assert best[1].iou > 0.5  # the stride-2 unit, placed by its receptive field
    others = [
        s.iou for s in result.scores() if (s.layer, s.unit) not in {("conv1", 2), ("conv2", 0)}
    ]
    assert max(others) < 0.3
    assert result.count(0.4) == {"conv1": 1, "conv2": 1}
    assert [s.unit for s in result.detectors(0.4)] == [2, 0]
    assert result.units_per_layer() == {"conv1": 4, "conv2": 2}
    report = result.report(0.4)
    assert report["states"] == 48 and report["quantile"] == 0.94
    assert report["detectors_per_layer"] == {"conv1": 1, "conv2": 1}
    assert report["units"][0] == vars(best[0]) and len(report["units"]) == 6
    # two concepts: the detector fires on the square, not on its complement
    both = dissect(adapter, obs, {"square": masks, "background": ~masks}, ["conv1"], quantile=0.95)
    assert both.top(1, "square")[0].unit == 2 and both.iou["conv1"][2, 1] < 0.1
    with pytest.raises(ValueError, match="N = 48 frames"):
        dissect(adapter, obs, masks[:5], ["conv1"])


def test_receptive_field_upsampling_places_strided_units_where_they_look():
    # An 8x8 / stride 4 / pad 3 unit that averages redness over its middle 4x4: its centres sit at
    # 0.5 + 4i, one pixel off an even spread over the frame. Placing units at their fields must
    # segment exactly drawn squares better than plain bilinear upsampling does.
    conv = nn.Conv2d(3, 1, 8, stride=4, padding=3)
    with torch.no_grad():
        conv.weight.zero_()
        conv.bias.zero_()
        conv.weight[0, :, 2:6, 2:6] = torch.tensor([1.0, -1.0, -1.0])[:, None, None] / 16
    adapter = PolicyAdapter(nn.Sequential(conv))
    rng = np.random.default_rng(0)
    obs = np.full((120, 48, 64, 3), 110, np.uint8)
    masks = np.zeros((120, 48, 64), bool)
    for i in range(120):
        h, w = rng.integers(6, 16, 2)
        y, x = rng.integers(0, 48 - h), rng.integers(0, 64 - w)
        obs[i, y : y + h, x : x + w] = (220, 10, 10)
        masks[i, y : y + h, x : x + w] = True
    q = 1 - masks.mean()
    field = dissect(adapter, obs, masks, ["0"], quantile=q, upsample="field").iou["0"][0, 0]
    plain = dissect(adapter, obs, masks, ["0"], quantile=q, upsample="bilinear").iou["0"][0, 0]
    assert field > 0.75 and field > plain + 0.05


def test_dissection_threshold_is_the_activation_quantile(planted):
    _, adapter = planted
    obs, masks = red_squares(16)
    result = dissect(adapter, obs, masks, ["conv1"], quantile=0.9)
    with torch.no_grad():
        acts = forward_to_layers(adapter, adapter.preprocess(obs), "conv1")["conv1"]
    for unit in range(4):
        values = acts[:, unit].flatten()
        t = result.thresholds["conv1"][unit]
        assert (values <= t).float().mean() >= 0.9 and (values < t).float().mean() < 0.9 + 1e-3


def test_ablation_changes_the_output_as_predicted(planted):
    model, adapter = planted
    obs, _ = red_squares(8)
    x = adapter.preprocess(obs)
    with torch.no_grad():
        logits, _ = model(x)
        pooled = model.pool(model.relu2(model.conv2(model.relu1(model.conv1(x))))).flatten(1)
    before = hook_count(model)
    with ablate(model, [("conv2", 0)]):
        with torch.no_grad():
            ablated, _ = model(x)
        assert hook_count(model) == before + 1
    assert hook_count(model) == before
    # switching the unit off removes exactly its contribution W[:, 0] * pooled_0 from the logits
    assert torch.allclose(logits - ablated, pooled[:, :1] * model.policy.weight[:, 0], atol=1e-5)
    with ablate(model, {"conv2": [1]}), torch.no_grad():
        assert torch.allclose(model(x)[0], logits)  # the unit nothing reads changes nothing
    change = action_change(adapter, obs, [("conv2", 0)])
    assert change.kl.min() > 0 and change.flip_rate == 1.0  # 'left' (4 * red) -> 'forward' (bias)
    assert action_change(adapter, obs, {"conv2": [1]}).kl.max() < 1e-9
    with pytest.raises(ValueError, match="has 2 units"):
        with ablate(model, {"conv2": [5]}), torch.no_grad():
            model(x)
    assert hook_count(model) == before


class RedSideEnv(gym.Env):
    """One-step episodes: a red square on the left or right; success iff the action points at it
    (0 = left, 2 = right)."""

    observation_space = gym.spaces.Box(0, 255, (H, W, 3), np.uint8)
    action_space = gym.spaces.Discrete(3)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.side = int(self.np_random.integers(2))
        frame = np.full((H, W, 3), 40, np.uint8)
        cols = slice(2, 10) if self.side == 0 else slice(W - 10, W - 2)
        frame[8:16, cols] = (255, 20, 20)
        return frame, {"success": False}

    def step(self, action):
        ok = int(action) == 2 * self.side
        return np.zeros((H, W, 3), np.uint8), float(ok), True, False, {"success": ok}


class SidePolicy(nn.Module):
    """conv unit 0 sees red in the left half, unit 1 in the right half; logits point at it."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 1)
        self.pool = nn.AdaptiveMaxPool2d((1, 2))
        with torch.no_grad():
            self.conv.weight.zero_()
            self.conv.weight[:, :, 0, 0] = torch.tensor([[1.0, -1.0, -1.0], [1.0, -1.0, -1.0]])
            self.conv.bias.zero_()

    def forward(self, x):
        h = torch.relu(self.conv(x))
        p = self.pool(h)  # [B, 2, 1, 2]: unit u, half s
        left, right = p[:, 0, 0, 0], p[:, 1, 0, 1]
        return torch.stack([10 * left, torch.full_like(left, 0.1), 10 * right], 1)


def test_success_rate_and_ablation_study_in_a_real_env_loop(tmp_path):
    adapter = PolicyAdapter(SidePolicy())
    env = RedSideEnv()
    intact = success_rate(env, adapter, 20, seed=0, deterministic=True)
    played = play_episodes(env, adapter, 3, seed=0, info_keys=("success",), progress=True)
    assert [len(r) for r in played] == [1, 1, 1] and all("success" in r.infos for r in played)
    assert intact.rate == 1.0 and list(intact.lengths) == [1] * 20
    lesioned = success_rate(env, adapter, 20, seed=0, deterministic=True, units={"conv": [0]})
    sides = np.array([RedSideEnv().reset(seed=i)[0][8, 5, 0] == 255 for i in range(20)])
    # with the left detector off, exactly the episodes with the square on the left fail
    assert np.array_equal(lesioned.successes, ~sides)
    obs = np.stack([RedSideEnv().reset(seed=i)[0] for i in range(10)])
    study = ablation_study(
        env,
        adapter,
        {"conv": [0, 1]},
        {"conv": 2},
        episodes=10,
        random_draws=0,
        seed=0,
        deterministic=True,
        obs=obs,
    )
    assert study.summary()["targeted"] == 0.0 and study.summary()["targeted_drop"] == 1.0
    report = study.report()  # the summary (its random_* are NaN: no draws) and the units
    assert report.keys() == {*study.summary(), "units", "random_units"}
    assert report["units"] == {"conv": [0, 1]} and report["random_units"] == []
    assert report["targeted"] == 0.0
    assert study.action_targeted.flip_rate == 1.0
    assert is_png(plot_ablation(study, tmp_path / "ablation.png"))


def test_random_control_draws_other_units_of_the_same_layers(planted):
    from rlviz.features import random_units_like

    model, adapter = planted
    rng = np.random.default_rng(0)
    for _ in range(10):
        drawn = random_units_like({"conv1": [2, 3]}, model, {"conv1": 4}, rng)
        assert list(drawn) == ["conv1"] and len(drawn["conv1"]) == 2
        assert not set(drawn["conv1"]) & {2, 3}
    with pytest.raises(ValueError, match="only 1 other units"):
        random_units_like({"conv2": [0, 1]}, model, {"conv2": 3}, rng)


# ---------------------------------------------------------------------------------------------
# Inversion, DeepDream, adversarial


def test_inversion_reduces_feature_distance(tiny):
    model, adapter = tiny
    before = hook_count(model)
    result = invert(adapter, frames(1)[0], "conv2", steps=120, progress=False)
    assert hook_count(model) == before
    assert result.image.shape == (H, W, 3) and result.image.dtype == np.uint8
    assert result.final_distance < 0.3 * result.initial_distance


def test_deepdream_amplifies_the_layer_and_keeps_the_frame_size(tiny):
    model, adapter = tiny
    frame = frames(1)[0]

    def dream_of():
        return deepdream(
            adapter,
            frame,
            "conv2",
            octaves=3,
            octave_scale=1.5,
            steps=10,
            step_size=0.03,
            progress=False,
            seed=0,
        )

    dream = dream_of()
    assert dream.image.shape == frame.shape and dream.sizes[-1] == (H, W)
    assert dream.sizes[0] == (11, 14)  # 24/1.5^2, 32/1.5^2 rounded
    assert dream.final > 1.8 * dream.initial and len(dream.trace) == 30
    assert np.array_equal(dream.image, dream_of().image)  # same seed, same dream
    # the head needs 24x32 input: an objective on the logits skips the smaller octaves
    from rlviz.features.optvis import action_logit

    on_logit = deepdream(
        adapter, frame, objective=action_logit(0), octaves=3, steps=2, progress=False
    )
    assert on_logit.sizes == [(H, W)]


class Linear2(nn.Module):
    """logits = W x + b with two actions: the minimal L-inf flip is |margin| / ||w0 - w1||_1."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3 * 5 * 5, 2)
        torch.manual_seed(0)
        nn.init.normal_(self.lin.weight, std=0.01)
        nn.init.zeros_(self.lin.bias)

    def forward(self, x):
        return self.lin(x.flatten(1))


@pytest.mark.parametrize("method", ["fgsm", "pgd"])
def test_adversarial_epsilon_is_minimal_for_a_linear_policy(method):
    model = Linear2()
    adapter = PolicyAdapter(model)
    obs = np.random.default_rng(0).integers(
        100, 156, (6, 5, 5, 3), dtype=np.uint8
    )  # far from clipping
    x = adapter.preprocess(obs)
    with torch.no_grad():
        logits = model(x)
    w = model.lin.weight.detach()
    exact = (logits[:, 0] - logits[:, 1]).abs() / (w[0] - w[1]).abs().sum()
    result = minimal_perturbation(
        adapter, obs, method=method, eps_max=0.2, grid=32, refine=12, search_steps=12
    )
    assert result.found.all()
    tol = 0.2 / 2**11 + 1e-5
    assert np.allclose(result.epsilon, exact.numpy(), atol=tol), (result.epsilon, exact)


def test_adversarial_example_flips_the_action_within_its_epsilon(tiny, tmp_path):
    model, adapter = tiny
    obs = frames(8)
    before = hook_count(model)
    for method in ("fgsm", "pgd"):
        result = minimal_perturbation(adapter, obs, method=method, eps_max=0.3, search_steps=6)
        assert hook_count(model) == before and model.conv1.weight.grad is None
        assert result.found.any()
        x = adapter.preprocess(obs)
        with torch.no_grad():
            clean = model(x)[0].argmax(1).numpy()
            adv = model(result.adversarial)[0].argmax(1).numpy()
        assert np.array_equal(result.clean_action, clean)
        found = result.found
        assert np.all(adv[found] != clean[found]) and np.array_equal(result.adv_action, adv)
        linf = (result.adversarial - x).abs().flatten(1).max(1).values.numpy()
        assert np.all(linf[found] <= result.epsilon[found] + 1e-6)
        assert np.all(result.epsilon[found] <= 0.3) and np.all(np.isinf(result.epsilon[~found]))
        assert result.adversarial.min() >= 0 and result.adversarial.max() <= 1
    assert is_png(plot_epsilon_histogram(result, tmp_path / "eps.png"))
    assert is_png(
        plot_adversarial_example(result, obs, int(np.argmax(found)), tmp_path / "adv.png")
    )


# ---------------------------------------------------------------------------------------------
# Figures and hooks


def test_every_figure_is_written_atomically_and_hooks_are_released(planted, tmp_path):
    model, adapter = planted
    obs, masks = red_squares(24)
    before = hook_count(model)
    paths = [
        plot_rgb_filters(model, tmp_path / "filters.png"),
        plot_filter_grid(model, "conv2", tmp_path / "grid.png"),
        plot_kernel_comparison(adapter, obs[0], tmp_path / "kernels.png"),
        plot_feature_maps(adapter, obs[0], "conv1", tmp_path / "maps.png", order="mean"),
        plot_top_k(
            [
                top_k_examples(adapter, obs, "conv1", 2, k=4),
                top_k_examples(adapter, obs, "conv2", 0, k=4),
            ],
            obs,
            tmp_path / "topk.png",
        ),
        plot_neighbours(
            obs,
            obs[0],
            [
                nearest_neighbours(adapter, obs, obs[0], "conv2", exclude=[0]),
                pixel_neighbours(obs, obs[0], exclude=[0]),
            ],
            tmp_path / "nb.png",
        ),
        plot_dissection(
            dissect(adapter, obs, masks, ["conv1", "conv2"], quantile=0.95),
            tmp_path / "dissect.png",
            adapter=adapter,
            obs=obs,
            masks=masks,
            n_units=2,
            n_frames=3,
        ),
        plot_inversions(
            obs[0],
            [invert(adapter, obs[0], "conv1", steps=3, progress=False)],
            tmp_path / "inv.png",
        ),
        plot_dreams(
            obs[0],
            [deepdream(adapter, obs[0], "conv1", steps=2, progress=False)],
            tmp_path / "dream.png",
        ),
    ]
    assert hook_count(model) == before
    assert all(is_png(p) for p in paths)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        p.name for p in paths
    )  # no temp files left
    assert all(p.stat().st_mode & 0o044 == 0o044 for p in paths)  # readable, like a plain open()
    with pytest.raises(ValueError, match="ending in .png"):
        plot_rgb_filters(model, tmp_path / "filters.jpg")


def test_forward_to_layers_stops_early_and_releases_hooks(tiny):
    model, adapter = tiny
    calls = []
    handle = model.fc.register_forward_hook(lambda *a: calls.append(1))
    before = hook_count(model)
    x = torch.rand(2, 3, 50, 50)  # wrong size for fc: must never get there
    acts = forward_to_layers(adapter, x, ["conv1", "conv2"])
    assert acts["conv2"].shape == (2, 8, 13, 13) and not calls
    assert hook_count(model) == before
    handle.remove()
    with pytest.raises(ValueError, match="not found; available"):
        forward_to_layers(adapter, x, "conv7")
    assert hook_count(model) == before - 1


def test_features_work_on_a_stable_baselines3_policy_by_dotted_names(tmp_path):
    # Nothing in rlviz.features knows about our agents: an SB3 CnnPolicy (Nature CNN) through its
    # adapter, layers addressed as SB3 names them.
    from stable_baselines3 import PPO

    from rlviz.features import optvis

    class Frames(gym.Env):
        observation_space = gym.spaces.Box(0, 255, (48, 64, 3), np.uint8)
        action_space = gym.spaces.Discrete(3)

        def reset(self, *, seed=None, options=None):
            return np.zeros((48, 64, 3), np.uint8), {}

        def step(self, action):
            return np.zeros((48, 64, 3), np.uint8), 0.0, True, False, {}

    model = PPO(
        "CnnPolicy",
        Frames(),
        n_steps=8,
        batch_size=8,
        seed=0,
        device="cpu",
        policy_kwargs={"features_extractor_kwargs": {"features_dim": 16}},
    )
    adapter = PolicyAdapter.from_sb3(model)
    policy = adapter.model
    layer = "features_extractor.cnn.4"  # the third conv of the Nature CNN
    rf = receptive_field(policy, layer)
    assert (rf.size, rf.stride) == ((36, 36), (8, 8))
    obs = np.random.default_rng(0).integers(0, 256, (10, 48, 64, 3), dtype=np.uint8)
    before = hook_count(policy)
    top = top_k_examples(adapter, obs, layer, 5, k=3)
    assert top.boxes.shape == (3, 4) and np.all(top.boxes[:, 2] - top.boxes[:, 0] <= 36)
    masks = np.zeros((10, 48, 64), bool)
    masks[:, 10:30, 20:40] = True
    assert set(dissect(adapter, obs, masks, [layer], quantile=0.9).iou) == {layer}
    assert action_change(adapter, obs, {layer: [0, 1, 2]}).kl.shape == (10,)
    vis = optvis.optimize(adapter, optvis.channel(layer, 5), size=(48, 64), steps=3, progress=False)
    assert vis.image.shape == (48, 64, 3)
    assert rgb_filters(policy).shape == (32, 8, 8, 3)  # first conv: features_extractor.cnn.0
    assert hook_count(policy) == before


def test_unknown_geometry_falls_back_with_a_warning():
    class Odd(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 2, 3, padding=1)
            self.up = nn.Upsample(scale_factor=2)

        def forward(self, x):
            return self.up(self.conv(x)).mean((2, 3))

    adapter = PolicyAdapter(Odd())
    obs, masks = red_squares(6)
    with pytest.warns(UserWarning, match="no receptive field for 'up'"):
        top = top_k_examples(adapter, obs, "up", 0, k=2)
    assert top.field.is_global and np.all(top.boxes == [0, 0, H, W])
    with pytest.warns(UserWarning, match="no receptive field"):
        result = dissect(adapter, obs, masks, ["up"], quantile=0.9)
    assert result.iou["up"].shape == (2, 1)
    assert receptive_field(Odd(), "conv").size == (3, 3)  # before the unknown layer: fine
