"""ObservationLayout: inference for every supported layout, errors for ambiguous shapes."""

from dataclasses import replace

import gymnasium as gym
import numpy as np
import pytest
import torch

from rlviz.layout import LayoutError, ObservationLayout, parse_layout

H, W = 12, 16


class ImageEnv(gym.Env):
    """A tiny env returning uint8 images of a given shape; frame t is filled with t."""

    def __init__(self, shape=(H, W, 3)):
        self.observation_space = gym.spaces.Box(0, 255, shape, np.uint8)
        self.action_space = gym.spaces.Discrete(3)
        self.t = 0

    def _obs(self):
        return np.full(self.observation_space.shape, self.t, np.uint8)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self._obs(), {}

    def step(self, action):
        self.t += 1
        return self._obs(), 0.0, False, False, {}


@pytest.mark.parametrize(
    "shape, expected",
    [
        ((H, W, 3), ObservationLayout(1, 3, "HWC", source="shape")),
        ((3, H, W), ObservationLayout(1, 3, "CHW", source="shape")),
        ((H, W, 1), ObservationLayout(1, 1, "HWC", source="shape")),
        ((H, W), ObservationLayout(1, 1, "HW", source="shape")),
        ((4, H, W, 3), ObservationLayout(4, 3, "KHWC", source="shape")),
        ((4, H, W, 1), ObservationLayout(4, 1, "KHWC", source="shape")),
        ((2, 3, H, W), ObservationLayout(2, 3, "KCHW", source="shape")),
    ],
)
def test_from_shape_unambiguous(shape, expected):
    assert ObservationLayout.from_shape(shape, batched=False) == expected


def test_five_d_batch_is_unambiguous():
    layout = ObservationLayout.from_shape((7, 4, H, W, 3))
    assert (layout.frames, layout.channels, layout.order) == (4, 3, "KHWC")


@pytest.mark.parametrize("shape", [(H, W, 6), (6, H, W), (H, W, 12), (3, 3, 3)])
def test_ambiguous_shapes_raise_with_the_shape(shape):
    with pytest.raises(LayoutError, match=r"fits several layouts.*declare"):
        ObservationLayout.from_shape(shape, batched=False)


def test_two_rgb_frames_channels_last_to_network():
    layout = ObservationLayout(frames=2, channels=3, order="HWC")
    old = np.zeros((H, W, 3), np.uint8)
    new = np.full((H, W, 3), 255, np.uint8)
    obs = np.concatenate([old, new], axis=-1)  # VecFrameStack: oldest first on the last axis
    x = layout.to_network(obs)
    assert x.shape == (1, 6, H, W) and x.dtype == torch.float32
    assert torch.all(x[:, :3] == 0) and torch.all(x[:, 3:] == 1)
    frames = layout.split_input(x)
    assert frames.shape == (1, 2, 3, H, W)
    assert torch.all(frames[:, 1] == 1)


@pytest.mark.parametrize(
    "layout, obs_shape",
    [
        (ObservationLayout(1, 3, "HWC"), (H, W, 3)),
        (ObservationLayout(1, 3, "CHW"), (3, H, W)),
        (ObservationLayout(2, 3, "HWC"), (H, W, 6)),
        (ObservationLayout(2, 3, "CHW"), (6, H, W)),
        (ObservationLayout(4, 1, "KHW"), (4, H, W)),
        (ObservationLayout(4, 3, "KHWC"), (4, H, W, 3)),
        (ObservationLayout(4, 1, "KHWC"), (4, H, W, 1)),
        (ObservationLayout(2, 3, "KCHW"), (2, 3, H, W)),
        (ObservationLayout(1, 1, "HW"), (H, W)),
    ],
)
def test_every_layout_puts_frame_k_in_channels_k(layout, obs_shape):
    """Frame k filled with value k lands in network channels k*C .. k*C+C-1, for every layout."""
    stack = np.stack([np.full((H, W, layout.channels), k, np.uint8) for k in range(layout.frames)])
    obs = {
        "HWC": lambda: np.concatenate(list(stack), axis=-1),
        "CHW": lambda: np.concatenate([f.transpose(2, 0, 1) for f in stack], axis=0),
        "KHWC": lambda: stack,
        "KCHW": lambda: stack.transpose(0, 3, 1, 2),
        "KHW": lambda: stack[..., 0],
        "HW": lambda: stack[0, ..., 0],
    }[layout.order]()
    assert obs.shape == obs_shape == layout.obs_shape(H, W)
    assert layout.image_size(obs.shape) == (H, W)
    x = layout.to_network(np.stack([obs, obs]))
    assert x.shape == (2, layout.frames * layout.channels, H, W)
    per_frame = layout.split_input(x).amax(dim=(0, 2, 3, 4)) * 255
    assert torch.allclose(per_frame, torch.arange(layout.frames, dtype=torch.float32))
    assert layout.display_frames(obs).shape == (1, layout.frames, H, W, 3)


def test_float_observations_pass_unscaled_and_declared_scale_applies():
    obs = np.full((2, H, W, 3), 0.5, np.float32)
    assert torch.all(ObservationLayout().to_network(obs) == 0.5)
    assert torch.all(ObservationLayout(scale=0.5).to_network(obs) == 1.0)


def test_wrong_shape_for_a_declared_layout_says_what_was_expected():
    layout = ObservationLayout(frames=2, channels=3, order="HWC")
    with pytest.raises(LayoutError, match=r"does not fit layout.*expected \[12, 16, 6\]"):
        layout.to_network(np.zeros((H, W, 3), np.uint8))
    with pytest.raises(LayoutError, match=r"expects observations shaped \[B, H, W, K\*C\]"):
        layout.to_network(np.zeros((1, 1, H, W, 6), np.uint8))


def test_from_env_reads_gymnasium_frame_stack_and_grayscale():
    env = gym.wrappers.FrameStackObservation(ImageEnv((H, W, 3)), stack_size=4)
    assert ObservationLayout.from_env(env) == ObservationLayout(4, 3, "KHWC", source="env")
    gray = gym.wrappers.GrayscaleObservation(ImageEnv((H, W, 3)), keep_dim=False)
    stacked_gray = gym.wrappers.FrameStackObservation(gray, stack_size=3)
    assert ObservationLayout.from_env(stacked_gray) == ObservationLayout(3, 1, "KHW", source="env")
    obs, _ = stacked_gray.reset(seed=0)
    assert ObservationLayout.from_env(stacked_gray).to_network(obs).shape == (1, 3, H, W)


def test_from_env_prefers_a_declared_layout():
    env = ImageEnv((H, W, 6))
    env.observation_layout = ObservationLayout(2, 3, "HWC", source="env")
    assert ObservationLayout.from_env(gym.wrappers.TimeLimit(env, 10)).frames == 2


def test_from_vec_env_reads_sb3_frame_stack_and_transpose():
    vec_env = pytest.importorskip("stable_baselines3.common.vec_env")
    h, w = 36, 48  # SB3 guesses channels-first when the first axis is the smallest
    base = vec_env.DummyVecEnv([lambda: ImageEnv((h, w, 3))])
    stacked = vec_env.VecFrameStack(base, n_stack=4)
    assert ObservationLayout.from_vec_env(stacked) == ObservationLayout(4, 3, "HWC", source="sb3")
    transposed = vec_env.VecTransposeImage(stacked)
    layout = ObservationLayout.from_vec_env(transposed)
    assert layout == ObservationLayout(4, 3, "CHW", source="sb3")
    obs = transposed.reset()
    assert obs.shape == (1, 12, h, w)
    assert layout.to_network(obs).shape == (1, 12, h, w)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("HWC", ObservationLayout(1, 3, "HWC")),
        ("4:KHW", ObservationLayout(4, 1, "KHW")),
        ("2x3:hwc", ObservationLayout(2, 3, "HWC")),
        ("4x1:CHW", ObservationLayout(4, 1, "CHW")),
    ],
)
def test_parse_layout(text, expected):
    assert parse_layout(text) == expected


@pytest.mark.parametrize(
    "layout",
    [
        ObservationLayout(1, 3, "HWC"),
        ObservationLayout(4, 1, "KHW"),
        ObservationLayout(2, 3, "CHW", source="sb3"),
        ObservationLayout(3, 4, "KHWC", source="env"),
        ObservationLayout(1, 1, "HW", source="shape"),
    ],
)
def test_to_text_reads_back(layout):
    assert parse_layout(layout.to_text()) == replace(layout, source="user")


@pytest.mark.parametrize("text", ["", "HWX", "2x:HWC", "x3:HWC"])
def test_parse_layout_errors_say_the_forms(text):
    with pytest.raises(LayoutError, match="K:ORDER"):
        parse_layout(text)
