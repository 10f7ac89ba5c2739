"""Stacked frames everywhere: per-frame maps, their identities, and the feature tools on stacks.

A tiny model that reads one stack frame only must get all its per-frame attribution mass on that
frame; the per-frame maps of a channel reduction recombine into the collapsed map; top-k, filters,
feature visualisation, dissection, ablation and state datasets accept every layout.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import FAST_OPTIONS
from torch import nn

import rlviz
from rlviz import ObservationLayout, PolicyAdapter, explain, frame_share
from rlviz.features import (
    action_change,
    dissect,
    frame_filters,
    plot_rgb_filters,
    plot_top_k,
    top_k_examples,
)
from rlviz.features.optvis import StackImage, action_logit, optimize, plot_visualisations
from rlviz.methods import method_options

H, W, K, C = 12, 16, 3, 3
ONLY = 1  # the frame the one-frame model reads: not the newest, so "newest" fallbacks fail

INPUT_METHODS = [
    n for n in rlviz.available_methods() if rlviz.get_method(n).per_frame_mode in ("input", "when")
]


class OneFrameNet(nn.Module):
    """Reads channels of stack frame ``frame`` only; everything else is ignored exactly."""

    def __init__(self, frame: int = ONLY, frames: int = K, channels: int = C) -> None:
        super().__init__()
        self.lo, self.hi = frame * channels, (frame + 1) * channels
        self.conv1 = nn.Conv2d(channels, 4, 3, padding=1)
        self.relu = nn.ReLU()
        self.head = nn.Linear(4 * H * W, 3)
        torch.manual_seed(0)
        for p in self.parameters():
            nn.init.normal_(p, std=0.3)

    def forward(self, x):
        h = self.relu(self.conv1(x[:, self.lo : self.hi]))
        return self.head(h.flatten(1)), h.mean((1, 2, 3))


class StackNet(nn.Module):
    """conv1 over all K*C channels (frames mixed), then a head: every frame matters."""

    def __init__(self, in_channels: int = K * C, size: tuple[int, int] = (H, W)) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.conv1 = nn.Sequential(nn.Conv2d(in_channels, 4, 3, stride=2, padding=1), nn.ReLU())
        self.conv2 = nn.Sequential(nn.Conv2d(4, 6, 3, stride=2, padding=1), nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.policy = nn.Linear(6, 3)
        self.value = nn.Linear(6, 1)

    def forward(self, x):
        h = self.pool(self.conv2(self.conv1(x))).flatten(1)
        return self.policy(h), self.value(h)[:, 0]


def stacks(n: int = 4, seed: int = 0) -> np.ndarray:
    """Random uint8 Gymnasium-style stacks [n, K, H, W, C]."""
    return np.random.default_rng(seed).integers(0, 256, (n, K, H, W, C), dtype=np.uint8)


def options_for(name: str) -> dict:
    return dict(FAST_OPTIONS.get(name, {}))


# -- per-frame attribution -----------------------------------------------------------------


@pytest.mark.parametrize("name", INPUT_METHODS)
def test_one_frame_model_puts_all_mass_on_that_frame(name):
    adapter = PolicyAdapter(OneFrameNet(), layout=ObservationLayout(K, C, "KHWC"))
    method = rlviz.get_method(name, **options_for(name))
    maps = method.attribute(adapter, stacks(), per_frame=True).numpy()
    assert maps.shape == (4, K, H, W)
    share = frame_share(maps)
    assert np.abs(maps[:, ONLY]).sum() > 0, f"{name}: no attribution at all"
    np.testing.assert_allclose(share[:, ONLY], 1.0, atol=1e-6, err_msg=name)


def test_cam_family_says_it_explains_the_newest_frame_only():
    adapter = PolicyAdapter(StackNet(), layout=ObservationLayout(K, C, "KHWC"))
    with pytest.warns(UserWarning, match="newest frame only"):
        maps = explain(adapter, stacks(2), "gradcam", layer="conv1", per_frame=True)["gradcam"]
    assert maps.shape == (2, K, H, W) and not maps[:, :-1].any()


def _collapse(per_frame: np.ndarray, how: str) -> np.ndarray:
    if how == "abs_max":
        return np.abs(per_frame).max(axis=1)
    if how in ("sum", "abs_sum"):
        return per_frame.sum(axis=1)
    return np.sqrt(np.square(per_frame).sum(axis=1))  # l2


IDENTITY_CASES = [
    (name, reduce)
    for name in rlviz.available_methods()
    if "reduce" in method_options(name)
    for reduce in ("sum", "abs_max")
]


@pytest.mark.parametrize("name, reduce", IDENTITY_CASES)
def test_per_frame_maps_recombine_into_the_collapsed_map(name, reduce):
    """sum over frames (signed sum) / max over frames (abs_max) of the per-frame maps is the
    one-map answer: each frame's channels are a block of the channels reduced at once."""
    adapter = PolicyAdapter(StackNet(), layout=ObservationLayout(K, C, "HWC"))
    obs = np.concatenate(list(stacks(3).transpose(1, 0, 2, 3, 4)), axis=-1)  # [B, H, W, K*C]
    opts = {**options_for(name), "reduce": reduce}
    method = rlviz.get_method(name, **opts)
    collapsed = method.attribute(adapter, obs).numpy()
    per_frame = rlviz.get_method(name, **opts).attribute(adapter, obs, per_frame=True).numpy()
    assert per_frame.shape == (3, K, H, W)
    np.testing.assert_allclose(_collapse(per_frame, reduce), collapsed, rtol=1e-4, atol=1e-6)


# -- feature tools on stacks ---------------------------------------------------------------


def test_frame_filters_show_one_tile_per_frame_and_a_flat_one_for_an_unread_frame(tmp_path):
    model = StackNet()
    with torch.no_grad():
        model.conv1[0].weight[:, :C] = 0.0  # no unit reads the oldest frame
    layout = ObservationLayout(K, C, "KHWC")
    tiles = frame_filters(model, layout, mode="symmetric")
    assert tiles.shape == (4, K, 3, 3, 3)
    np.testing.assert_allclose(tiles[:, 0], 0.5)  # grey: weight 0
    assert np.ptp(tiles[:, 1:]) > 0.1
    assert plot_rgb_filters(model, tmp_path / "f.png", layout=layout).stat().st_size > 0
    with pytest.raises(ValueError, match="reads 9 input channels"):
        frame_filters(model, ObservationLayout(4, 1, "KHW"))


@pytest.mark.parametrize(
    "layout",
    [
        ObservationLayout(K, C, "KHWC"),
        ObservationLayout(K, C, "HWC"),
        ObservationLayout(K, C, "CHW"),
        ObservationLayout(K, 1, "KHW"),
    ],
)
def test_top_k_boxes_and_crops_on_every_layout(layout, tmp_path):
    raw = stacks(6)[..., : layout.channels]  # [N, K, H, W, C]
    obs = {
        "KHWC": lambda: raw,
        "HWC": lambda: np.concatenate(list(raw.transpose(1, 0, 2, 3, 4)), axis=-1),
        "CHW": lambda: np.concatenate(list(raw.transpose(1, 0, 4, 2, 3)), axis=1),
        "KHW": lambda: raw[..., 0],
    }[layout.order]()
    adapter = PolicyAdapter(StackNet(K * layout.channels), layout=layout)
    top = top_k_examples(adapter, obs, "conv1", 0, k=3)
    assert top.layout == layout and len(top.indices) == 3
    assert (top.boxes[:, 2:] <= (H, W)).all()
    y0, x0, y1, x1 = top.boxes[0]
    newest, every = top.crops(obs)[0], top.crops(obs, frames="all")[0]
    assert newest.shape == (y1 - y0, x1 - x0, 3)
    assert every.shape == (K, y1 - y0, x1 - x0, 3)
    np.testing.assert_array_equal(every[-1], newest)
    expected = layout.display_frames(obs[top.indices[0] : top.indices[0] + 1])[0, :, y0:y1, x0:x1]
    np.testing.assert_array_equal(every, expected)  # frame k's crop is frame k's pixels
    for frames in ("newest", "all"):
        assert plot_top_k(top, obs, tmp_path / f"{frames}.png", frames=frames).exists()


def test_dissection_and_ablation_read_stacks():
    layout = ObservationLayout(K, C, "KHWC")
    adapter = PolicyAdapter(StackNet(), layout=layout)
    obs = stacks(5)
    masks = np.zeros((5, H, W), bool)
    masks[:, 3:8, 4:10] = True
    result = dissect(adapter, obs, masks, layers=["conv1"])
    assert result.iou["conv1"].shape == (4, 1)
    change = action_change(adapter, obs, {"conv2": [0, 1]})
    assert change.kl.shape == (5,)
    with pytest.raises(ValueError, match="does not fit layout"):
        action_change(adapter, obs[:, :2], {"conv2": [0]})  # two frames for a 3-frame layout


def test_stack_image_groups_channels_frame_major_and_keeps_past_frames_fixed(tmp_path):
    layout = ObservationLayout(K, C, "KHWC")
    whole = StackImage(layout, (H, W), batch=2, seed=0)
    x = whole()
    assert x.shape == (2, K * C, H, W)
    inner = whole.inner().reshape(2, K, C, H, W)  # the per-frame images, in order
    torch.testing.assert_close(layout.split_input(x), inner)

    context = stacks(1)[0]
    past = layout.to_network(context)[:, : (K - 1) * C]
    only_new = StackImage(layout, (H, W), frames="newest", context=context, seed=0)
    assert len(only_new.params[0]) == 1  # one frame's parameters, not K
    adapter = PolicyAdapter(StackNet(), layout=layout)
    vis = optimize(adapter, action_logit(0), only_new, transforms=[], steps=3, progress=False)
    assert vis.layout == layout and vis.frames.shape == (1, K, H, W, 3)
    torch.testing.assert_close(vis.tensor[:, : (K - 1) * C], past)
    assert plot_visualisations([vis], tmp_path / "v.png").exists()


def test_optimize_defaults_to_a_stack_for_a_stacked_adapter():
    adapter = PolicyAdapter(StackNet(), layout=ObservationLayout(K, 1 * C, "HWC"))
    vis = optimize(adapter, action_logit(1), size=(H, W), transforms=[], steps=2, progress=False)
    assert vis.tensor.shape == (1, K * C, H, W) and vis.layout.frames == K
    with pytest.raises(ValueError, match="'all'.*'newest'"):
        StackImage(adapter.layout, (H, W), frames="oldest")


# -- Gymnasium FrameStackObservation on BoxReach, end to end -------------------------------


@pytest.fixture(scope="module")
def boxreach_stack():
    """Two short episodes of BoxReach through FrameStackObservation(2), with goal masks."""
    gym = pytest.importorskip("gymnasium")
    from rlviz import envs  # noqa: F401  (registers rlviz/BoxReach-v0; headless EGL set up there)
    from rlviz.rollout import collect

    env = gym.wrappers.FrameStackObservation(
        gym.make("rlviz/BoxReach-v0", ground_truth=True), stack_size=2
    )
    try:
        layout = ObservationLayout.from_env(env)
        h, w = layout.image_size(env.observation_space.shape)
        adapter = PolicyAdapter(StackNet(2 * 3, (h, w)), layout=layout)
        rollouts = list(collect(env, adapter, 2, seed=0, max_steps=6, info_keys=("goal_mask",)))
    finally:
        env.close()
    return layout, adapter, rollouts


def test_boxreach_frame_stack_end_to_end(boxreach_stack, tmp_path):
    from rlviz.statemap import StateDataset

    layout, adapter, rollouts = boxreach_stack
    assert (layout.frames, layout.channels, layout.order, layout.source) == (2, 3, "KHWC", "env")
    obs = rollouts[0].obs
    assert obs.ndim == 5 and obs.shape[1] == 2 and obs.shape[-1] == 3

    occlusion = FAST_OPTIONS["occlusion"]
    maps = explain(adapter, obs, ["gradient", "occlusion"], per_frame=True, occlusion=occlusion)
    for name in ("gradient", "occlusion"):
        assert maps[name].shape == (len(obs), 2, *obs.shape[2:4])
    assert frame_share(maps["gradient"]).shape == (len(obs), 2)

    data = StateDataset.from_rollouts(rollouts, adapter, "conv2")
    assert data.meta["layout"] == "2x3:KHWC" and data.layout.obs_shape(1, 1) == (2, 1, 1, 3)
    loaded = StateDataset.load(data.save(tmp_path / "d.npz"))
    assert loaded.obs.shape == data.obs.shape and loaded.layout == data.layout
    np.testing.assert_array_equal(loaded.newest_frames(), data.obs[:, -1])

    top = top_k_examples(adapter, data.obs, "conv1", 1, k=2)
    assert plot_top_k(top, data.obs, tmp_path / "top.png", frames="all").exists()
    assert plot_rgb_filters(adapter.model, tmp_path / "filters.png", layout=layout).exists()
    masks = np.concatenate([r.infos["goal_mask"] for r in rollouts])
    assert dissect(adapter, data.obs, masks, layers=["conv1"]).n_frames == len(data)
