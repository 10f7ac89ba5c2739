"""Faithfulness metrics (rlviz.metrics) on hand-made maps, masks and a policy that only looks at one
region."""

import numpy as np
import pytest
import torch
from torch import nn

from rlviz.metrics import (
    auc,
    deletion_curve,
    dilate,
    insertion_curve,
    mask_share,
    mass_in_mask,
    pointing_game,
)


def box_mask(h=8, w=10, top=2, left=3, size=3):
    mask = np.zeros((1, h, w), bool)
    mask[0, top : top + size, left : left + size] = True
    return mask


def test_pointing_game_with_tolerance():
    mask = box_mask()
    inside = np.zeros((1, 8, 10), np.float32)
    inside[0, 3, 4] = 1.0
    beside = np.zeros((1, 8, 10), np.float32)
    beside[0, 3, 6] = 1.0  # one pixel right of the box
    far = np.zeros((1, 8, 10), np.float32)
    far[0, 7, 0] = 1.0
    maps = np.concatenate([inside, beside, beside, far, np.zeros((1, 8, 10), np.float32)])
    masks = np.repeat(mask, 5, axis=0)
    assert pointing_game(maps, masks, tolerance=1).tolist() == [True, True, True, False, False]
    assert pointing_game(maps, masks, tolerance=0).tolist() == [True, False, False, False, False]
    assert dilate(mask, 1).sum() == 25
    with pytest.raises(ValueError, match="same shape"):
        pointing_game(maps[:, :4], masks)


def test_mass_in_mask_and_chance_level():
    mask = box_mask()
    assert mass_in_mask(mask.astype(np.float32), mask)[0] == pytest.approx(1.0)
    uniform = np.ones((1, 8, 10), np.float32)
    assert (
        mass_in_mask(uniform, mask)[0]
        == pytest.approx(mask_share(mask)[0])
        == pytest.approx(9 / 80)
    )
    signed = np.where(mask, 1.0, -5.0).astype(np.float32)  # negative evidence is not mass
    assert mass_in_mask(signed, mask)[0] == pytest.approx(1.0)
    assert mass_in_mask(np.zeros((1, 8, 10), np.float32), mask)[0] == 0.0


class RegionPolicy(nn.Module):
    """Action 0's logit grows with the red brightness of one 3x3 region; the others are 0."""

    def forward(self, x):
        s = 30 * (x[:, 0, 2:5, 3:6].mean(dim=(1, 2)) - 0.5)
        return torch.stack([s, torch.zeros_like(s), torch.zeros_like(s)], dim=1)


def test_deletion_and_insertion_reward_the_right_map():
    obs = np.zeros((1, 8, 10, 3), np.uint8)
    obs[0, 2:5, 3:6, 0] = 255  # bright red where the policy looks
    good = box_mask().astype(np.float32)  # attributes exactly that region
    bad = 1.0 - good
    maps = np.concatenate([good, bad])
    frames = np.repeat(obs, 2, axis=0)
    deletion = deletion_curve(RegionPolicy(), frames, maps, target=[0, 0], steps=10)
    insertion = insertion_curve(RegionPolicy(), frames, maps, target=[0, 0], steps=10)
    assert deletion.shape == insertion.shape == (2, 11)
    # Both curves start/end at the clean frame's probability of action 0 (and share the other end).
    clean = torch.softmax(
        RegionPolicy()(torch.from_numpy(obs).permute(0, 3, 1, 2).float() / 255), -1
    )[0, 0]
    np.testing.assert_allclose(deletion[:, 0], float(clean), rtol=1e-6)
    np.testing.assert_allclose(insertion[:, -1], float(clean), rtol=1e-6)
    d_auc, i_auc = auc(deletion), auc(insertion)
    assert d_auc[0] < d_auc[1] and i_auc[0] > i_auc[1]
    # Default target: the greedy action of the clean frame (action 0 here).
    np.testing.assert_allclose(deletion_curve(RegionPolicy(), frames, maps, steps=10), deletion)


def test_auc_trapezoid():
    assert auc(np.linspace(1, 0, 11)[None])[0] == pytest.approx(0.5)
    assert auc(np.ones((2, 5))).tolist() == [1.0, 1.0]


@pytest.mark.slow
def test_faithfulness_script_runs_on_real_frames(capsys):
    """The benchmark script end to end: real MiniWorld frames and masks, an untrained agent."""
    import importlib.util
    from pathlib import Path

    from rlviz import envs  # noqa: F401  (first: it sets up headless GL before miniworld is imported)

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "faithfulness.py"
    spec = importlib.util.spec_from_file_location("faithfulness", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["--random-init", "--frames", "4", "--methods", "gradient", "gradcam"]) == 0
    out = capsys.readouterr().out
    assert "| gradient " in out and "| box mask " in out
    box_row = next(line for line in out.splitlines() if line.startswith("| box mask"))
    assert box_row.split("|")[2].strip() == "1.00"  # the mask itself always points inside the box
