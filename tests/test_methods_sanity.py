"""Model-randomisation sanity check (Adebayo et al. 2018, "Sanity Checks for Saliency Maps",
https://arxiv.org/abs/1810.03292).

A tiny policy is trained (one second) to name the colour of a square; then its layers are
re-initialised top-down. A method that explains the model, rather than the image, must give maps
whose rank correlation with the trained model's maps drops, while a 1% weight jitter (control)
leaves them almost unchanged, so the measure can tell similar from different.
"""

import copy

import numpy as np
import pytest
import torch
from helpers import FAST_OPTIONS, TinyGapNet
from torch import nn

from rlviz import ActionLogit
from rlviz.methods import available_methods, get_method


def square_frames(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Dark noise with one 4x4 square whose colour (R, G or B) is the label."""
    x = rng.integers(0, 60, (n, 12, 16, 3)).astype(np.uint8)
    labels = rng.integers(0, 3, n)
    for i in range(n):
        r, c = rng.integers(0, 9), rng.integers(0, 13)
        x[i, r : r + 4, c : c + 4] = 0
        x[i, r : r + 4, c : c + 4, labels[i]] = 230
    return x, labels


def spearman(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Rank correlation per frame of maps [B, H, W]: [B]."""
    ra = a.flatten(1).argsort(1).argsort(1).double()
    rb = b.flatten(1).argsort(1).argsort(1).double()
    ra, rb = ra - ra.mean(1, keepdim=True), rb - rb.mean(1, keepdim=True)
    return (ra * rb).sum(1) / (ra.norm(dim=1) * rb.norm(dim=1))


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    model = TinyGapNet(inplace=True)
    params = list(model.parameters())
    rng = np.random.default_rng(0)
    for _ in range(150):  # plain gradient descent: no optimizer import needed
        obs, labels = square_frames(64, rng)
        logits, _ = model(torch.from_numpy(obs).permute(0, 3, 1, 2).float() / 255)
        loss = nn.functional.cross_entropy(logits, torch.from_numpy(labels))
        grads = torch.autograd.grad(loss, params, allow_unused=True)
        with torch.no_grad():
            for p, g in zip(params, grads, strict=True):
                if g is not None:
                    p -= 0.5 * g
    model.eval()
    obs, labels = square_frames(8, np.random.default_rng(99))
    with torch.no_grad():
        logits, _ = model(torch.from_numpy(obs).permute(0, 3, 1, 2).float() / 255)
    assert (logits.argmax(1).numpy() == labels).mean() >= 0.9, "the tiny policy failed to train"

    torch.manual_seed(123)
    cascade = {}
    randomized = copy.deepcopy(model)
    for step, layers in (("top", ["policy", "value", "conv2"]), ("all", ["conv1"])):
        for name in layers:
            getattr(randomized, name).reset_parameters()
        cascade[step] = copy.deepcopy(randomized)
    control = copy.deepcopy(model)
    generator = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for p in control.parameters():
            p.add_(torch.randn(p.shape, generator=generator) * 0.01 * p.abs().mean())
    return model, cascade, control, obs, labels


@pytest.mark.parametrize("name", available_methods())
def test_randomising_layers_changes_the_maps(models, name):
    model, cascade, control, obs, labels = models
    method = get_method(name, **FAST_OPTIONS.get(name, {}))
    target = ActionLogit(labels)
    trained = method.attribute(model, obs, target)
    ctrl = spearman(trained, method.attribute(control, obs, target)).mean()
    top = spearman(trained, method.attribute(cascade["top"], obs, target)).mean()
    full = spearman(trained, method.attribute(cascade["all"], obs, target)).mean()
    assert ctrl > 0.95, f"control correlation {ctrl:.3f}: the map is unstable under a 1% jitter"
    assert top < 0.9 and top < ctrl - 0.05, f"top layers randomised: correlation still {top:.3f}"
    assert full < 0.5, f"all layers randomised: correlation still {full:.3f}"
