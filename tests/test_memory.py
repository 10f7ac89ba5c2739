"""Memory reliance: ~0 for a policy that reads only the current frame, large for one that reads the past."""

import numpy as np
import pytest
import torch
from torch import nn

import rlviz
from rlviz.layout import ObservationLayout
from rlviz.memory import memory_reliance, without_past_frames

K, C, H, W = 3, 3, 8, 10
LAYOUT = ObservationLayout(frames=K, channels=C, order="HWC")


class FrameReader(nn.Module):
    """Logits from the mean of one stack frame only (frame ``which``; -1 = newest)."""

    def __init__(self, which: int) -> None:
        super().__init__()
        self.which = which
        self.head = nn.Linear(C, 3)
        torch.manual_seed(0)
        nn.init.normal_(self.head.weight, std=3.0)

    def forward(self, x):
        frames = x.reshape(x.shape[0], K, C, *x.shape[2:])
        return self.head(frames[:, self.which].mean(dim=(2, 3)))


def _episode(steps: int = 6) -> np.ndarray:
    """Each stack frame one random colour, so frames differ in what the toy reads."""
    rng = np.random.default_rng(0)
    colours = rng.integers(0, 256, (steps, 1, 1, K * C), dtype=np.uint8)
    return np.ascontiguousarray(np.broadcast_to(colours, (steps, H, W, K * C)))


def test_without_past_frames_copies_the_newest_frame():
    x = torch.arange(2 * K * C * H * W, dtype=torch.float32).reshape(2, K * C, H, W)
    y = LAYOUT.split_input(without_past_frames(x, LAYOUT))
    for k in range(K):
        assert torch.equal(y[:, k], LAYOUT.split_input(x)[:, -1])


def test_current_frame_policy_relies_on_no_memory():
    adapter = rlviz.PolicyAdapter(FrameReader(which=-1), layout=LAYOUT)
    result = memory_reliance(adapter, _episode())
    assert result.kl.shape == (6,) and result.share.shape == (6,)
    assert np.allclose(result.kl, 0.0, atol=1e-6)
    assert np.allclose(result.share, 0.0, atol=1e-6)


def test_oldest_frame_policy_relies_on_memory():
    adapter = rlviz.PolicyAdapter(FrameReader(which=0), layout=LAYOUT)
    result = memory_reliance(adapter, _episode())
    assert np.all(result.kl > 1e-3)
    assert np.allclose(result.share, 1.0, atol=1e-6)


def test_batching_does_not_change_reliance():
    adapter = rlviz.PolicyAdapter(FrameReader(which=1), layout=LAYOUT)
    whole = memory_reliance(adapter, _episode(9), batch_size=256)
    parts = memory_reliance(adapter, _episode(9), batch_size=2)
    assert np.allclose(whole.kl, parts.kl, atol=1e-6)
    assert np.allclose(whole.share, parts.share, atol=1e-6)


def test_single_frame_policy_is_refused_with_a_hint():
    adapter = rlviz.PolicyAdapter(nn.Sequential(nn.Flatten(), nn.LazyLinear(3)))
    with pytest.raises(ValueError, match="needs a policy with memory"):
        memory_reliance(adapter, np.zeros((2, H, W, 3), np.uint8))
