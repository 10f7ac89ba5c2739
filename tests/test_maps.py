"""Display helpers: upsample, normalize, colorize, overlay (vectorised, LUT colormaps)."""

import matplotlib
import numpy as np
import pytest
import torch

from rlviz.maps import colorize, colormap_lut, normalize, overlay, upsample


def test_upsample_bilinear_half_pixel_and_types():
    maps = np.array([[[0.0, 1.0], [2.0, 3.0]]], np.float32)
    up = upsample(maps, (4, 4))
    assert isinstance(up, np.ndarray) and up.dtype == np.float32 and up.shape == (1, 4, 4)
    # Half-pixel centres: output pixel 1 samples input coordinate 0.25.
    np.testing.assert_allclose(up[0, 0], [0.0, 0.25, 0.75, 1.0])
    np.testing.assert_allclose(up[0, :, 0], [0.0, 0.5, 1.5, 2.0])
    assert isinstance(upsample(torch.from_numpy(maps), (4, 4)), torch.Tensor)
    assert upsample(maps[0], (3, 5)).shape == (3, 5)  # one map without batch axis
    with pytest.raises(ValueError, match=r"\[B, H, W\]"):
        upsample(np.zeros(5), (2, 2))


def test_normalize_episode_frame_and_signed():
    maps = np.stack([np.full((3, 3), 1.0), np.full((3, 3), 4.0)]).astype(np.float32)
    maps[1, 0, 0] = 8.0
    episode = normalize(maps, "episode", percentile=100)
    np.testing.assert_allclose(episode[0], 1 / 8)
    assert episode.max() == 1.0
    frame = normalize(maps, "frame", percentile=100)
    np.testing.assert_allclose(frame[0], 1.0)
    np.testing.assert_allclose(frame[1, 1, 1], 0.5)
    # A robust percentile saturates the single outlier instead of dimming the rest.
    robust = normalize(maps, "frame", percentile=50)
    np.testing.assert_allclose(robust[1, 1, 1], 1.0)
    signed = normalize(
        np.array([[[-2.0, 1.0], [0.0, 4.0]]], np.float32), signed=True, percentile=100
    )
    np.testing.assert_allclose(signed[0], [[-0.5, 0.25], [0.0, 1.0]])
    unsigned = normalize(np.array([[[-2.0, 1.0], [0.0, 4.0]]], np.float32), percentile=100)
    np.testing.assert_allclose(unsigned[0], [[0.0, 0.25], [0.0, 1.0]])
    zeros = normalize(np.zeros((2, 3, 3), np.float32), "frame")
    assert np.all(zeros == 0) and np.isfinite(zeros).all()
    assert isinstance(normalize(torch.ones(1, 2, 2)), torch.Tensor)
    with pytest.raises(ValueError, match="mode must be"):
        normalize(maps, "video")


def test_colorize_matches_matplotlib():
    values = np.linspace(0, 1, 256, dtype=np.float32).reshape(1, 16, 16)
    ours = colorize(values, "viridis")
    theirs = (matplotlib.colormaps["viridis"](values)[..., :3] * 255).round().astype(np.uint8)
    assert ours.shape == (1, 16, 16, 3) and ours.dtype == np.uint8
    assert np.abs(ours.astype(int) - theirs.astype(int)).max() <= 1
    signed = colorize(np.array([[-1.0, 0.0, 1.0]], np.float32), "RdBu_r", signed=True)
    lut = colormap_lut("RdBu_r")
    np.testing.assert_array_equal(signed[0], lut[[0, 128, 255]])
    with pytest.raises(ValueError, match="unknown colormap"):
        colorize(values, "not-a-cmap")
    custom = np.zeros((256, 3), np.uint8)
    custom[:, 1] = np.arange(256)
    assert colorize(np.array([[0.5]]), custom)[0, 0].tolist() == [0, 128, 0]


def test_overlay_blends_and_resizes():
    frames = np.full((2, 8, 10, 3), 200, np.uint8)
    maps = np.zeros((2, 4, 5), np.float32)
    maps[1] = 1.0
    out = overlay(frames, maps, cmap="gray", alpha=0.5)
    assert out.shape == (2, 8, 10, 3) and out.dtype == np.uint8
    np.testing.assert_allclose(out[0], 100, atol=1)  # half black
    np.testing.assert_allclose(out[1], 228, atol=1)  # half white: (200 + 255) / 2
    assert np.array_equal(overlay(frames, maps, alpha=0.0), frames)
    faded = overlay(frames, maps, cmap="gray", alpha=1.0, scale_alpha=True)
    assert np.array_equal(faded[0], frames[0]) and np.all(faded[1] == 255)
    single = overlay(frames[0], maps[1], cmap="gray")
    assert single.shape == (8, 10, 3)
    with pytest.raises(ValueError, match="uint8"):
        overlay(frames.astype(np.float32), maps)
    with pytest.raises(ValueError, match="got 1 maps for 2 frames"):
        overlay(frames, maps[:1])


@pytest.mark.parametrize(
    ("src", "dst"), [((8, 10), (60, 80)), ((7, 7), (224, 224)), ((9, 13), (4, 5))]
)
def test_upsample_equals_torch_bilinear(src, dst):
    maps = torch.rand(3, *src)
    expected = torch.nn.functional.interpolate(
        maps[:, None], size=dst, mode="bilinear", align_corners=False
    )[:, 0]
    torch.testing.assert_close(upsample(maps, dst), expected, rtol=1e-5, atol=1e-6)
