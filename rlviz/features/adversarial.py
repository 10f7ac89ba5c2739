"""Adversarial robustness of the chosen action: the smallest L-inf perturbation that changes it.

Two searches, both on the margin m(x) = logit_a(x) - max_{b != a} logit_b(x) of the greedy action a:

* ``"fgsm"``: one gradient sign direction d = -sign(grad m) at the clean frame (Goodfellow et al.,
  "Explaining and Harnessing Adversarial Examples", 2015), a line search over epsilon along it,
  then bisection between the last grid point that kept the action and the first that changed it.
* ``"pgd"``: projected gradient descent on m inside the epsilon ball (Madry et al., "Towards Deep
  Learning Models Resistant to Adversarial Attacks", 2018), with a binary search on epsilon.

Every reported epsilon comes with an example that was checked to change the action within it.
Epsilon is in network-input units (1/255 of a pixel level for the default preprocess).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from rlviz.features._common import check_frames, display_rgb, image_grid, new_figure, to_uint8
from rlviz.io import save_figure
from rlviz.policy import PolicyAdapter


@dataclass
class Adversarial:
    """Result of :func:`minimal_perturbation` over N frames.

    Attributes:
        epsilon: float32 [N], smallest L-inf epsilon found that changes the action; ``inf`` where
            none up to ``eps_max`` did.
        adversarial: float32 [N, C, H, W], the perturbed inputs (network input space; the clean
            input where none was found).
        clean_action / adv_action: int64 [N], greedy action before and after.
        method: ``"fgsm"`` or ``"pgd"``; eps_max: the largest epsilon searched.
    """

    epsilon: np.ndarray
    adversarial: torch.Tensor
    clean_action: np.ndarray
    adv_action: np.ndarray
    method: str
    eps_max: float

    @property
    def found(self) -> np.ndarray:
        """bool [N]: frames where an action-changing perturbation was found."""
        return np.isfinite(self.epsilon)


def _margin(
    adapter: PolicyAdapter, x: torch.Tensor, action: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    logits = adapter.outputs(x).logits
    chosen = logits.gather(1, action[:, None])[:, 0]
    others = logits.scatter(1, action[:, None], float("-inf")).max(1).values
    return chosen - others, logits.argmax(1)


def _changes(
    adapter: PolicyAdapter, x: torch.Tensor, action: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.no_grad():
        pred = adapter.outputs(x).logits.argmax(1)
    return pred != action, pred


def _fgsm(adapter, x, action, eps_max, grid, refine, lo_clip, hi_clip):
    x_req = x.clone().requires_grad_(True)
    margin, _ = _margin(adapter, x_req, action)
    (grad,) = torch.autograd.grad(margin.sum(), x_req)
    direction = -grad.sign()
    n = len(x)
    shape = (n,) + (1,) * (x.dim() - 1)
    eps = torch.full((n,), float("inf"), device=x.device)
    lo = torch.zeros(n, device=x.device)
    found = torch.zeros(n, dtype=torch.bool, device=x.device)
    for e in torch.linspace(eps_max / grid, eps_max, grid).tolist():
        todo = ~found
        if not todo.any():
            break
        flipped, _ = _changes(adapter, (x + e * direction).clamp(lo_clip, hi_clip), action)
        newly = todo & flipped
        eps[newly] = e
        found |= newly
        lo[todo & ~flipped] = e
    hi = eps.clone()
    for _ in range(refine):  # bisection keeps hi as a verified flip
        if not found.any():
            break
        mid = torch.where(found, (lo + hi) / 2, torch.zeros_like(hi))
        flipped, _ = _changes(
            adapter, (x + mid.view(shape) * direction).clamp(lo_clip, hi_clip), action
        )
        hi = torch.where(found & flipped, mid, hi)
        lo = torch.where(found & ~flipped, mid, lo)
    safe = torch.where(found, hi, torch.zeros_like(hi)).view(shape)
    return hi, (x + safe * direction).clamp(lo_clip, hi_clip)


def _pgd(adapter, x, action, eps, steps, lo_clip, hi_clip, generator):
    """PGD on the margin within per-sample balls ``eps`` [N]; returns (flipped [N], example)."""
    shape = (len(x),) + (1,) * (x.dim() - 1)
    e = eps.view(shape)
    alpha = 2.5 * e / steps
    noise = torch.rand(x.shape, generator=generator).to(x) * 2 - 1
    adv = (x + 0.5 * e * noise).clamp(lo_clip, hi_clip)
    best = x.clone()
    flipped = torch.zeros(len(x), dtype=torch.bool, device=x.device)
    for _ in range(steps + 1):
        adv = adv.detach().requires_grad_(True)
        margin, pred = _margin(adapter, adv, action)
        newly = (pred != action) & ~flipped
        best[newly] = adv.detach()[newly]
        flipped |= newly
        if flipped.all():
            break
        (grad,) = torch.autograd.grad(margin.sum(), adv)
        with torch.no_grad():
            adv = adv - alpha * grad.sign()
            adv = torch.max(torch.min(adv, x + e), x - e).clamp(lo_clip, hi_clip)
    return flipped, best


def minimal_perturbation(
    adapter: PolicyAdapter,
    obs: np.ndarray,
    *,
    method: str = "pgd",
    eps_max: float = 0.1,
    grid: int = 64,
    refine: int = 10,
    pgd_steps: int = 20,
    search_steps: int = 10,
    clip: tuple[float, float] = (0.0, 1.0),
    batch_size: int = 64,
    seed: int = 0,
) -> Adversarial:
    """The smallest L-inf perturbation of each frame that changes the policy's greedy action.

    Args:
        obs: raw frames [N, H, W, C] (or one frame).
        method: ``"fgsm"`` (line search along the sign gradient) or ``"pgd"`` (binary search on
            epsilon, PGD at each). PGD finds smaller epsilons at ~``pgd_steps`` times the cost.
        eps_max: largest epsilon tried (network-input units).
        grid / refine: FGSM line-search points and bisection steps.
        pgd_steps / search_steps: PGD iterations per epsilon and binary-search steps
            (precision eps_max / 2**search_steps).
        clip: valid range of the network input (perturbed inputs are clamped to it).
    """
    obs = check_frames(obs)
    if method not in ("fgsm", "pgd"):
        raise ValueError(f"method must be 'fgsm' or 'pgd', got {method!r}")
    if eps_max <= 0:
        raise ValueError(f"eps_max must be positive, got {eps_max}")
    generator = torch.Generator().manual_seed(seed)
    lo_clip, hi_clip = clip
    eps_all, adv_all, clean_all, pred_all = [], [], [], []
    for start in range(0, len(obs), batch_size):
        x = adapter.preprocess(obs[start : start + batch_size]).detach()
        with torch.no_grad():
            action = adapter.outputs(x).logits.argmax(1)
        if method == "fgsm":
            eps, adv = _fgsm(adapter, x, action, eps_max, grid, refine, lo_clip, hi_clip)
        else:
            hi = torch.full((len(x),), float(eps_max), device=x.device)
            found, adv = _pgd(adapter, x, action, hi, pgd_steps, lo_clip, hi_clip, generator)
            lo = torch.zeros_like(hi)
            for _ in range(search_steps):
                if not found.any():
                    break
                mid = (lo + hi) / 2
                flipped, example = _pgd(
                    adapter, x, action, mid, pgd_steps, lo_clip, hi_clip, generator
                )
                take = found & flipped
                hi = torch.where(take, mid, hi)
                lo = torch.where(found & ~flipped, mid, lo)
                adv[take] = example[take]
            eps = torch.where(found, hi, torch.full_like(hi, float("inf")))
            adv = torch.where(found.view(-1, *([1] * (x.dim() - 1))), adv, x)
        flipped, pred = _changes(adapter, adv, action)
        # report only verified flips; a float-rounding miss becomes "not found"
        eps = torch.where(flipped, eps, torch.full_like(eps, float("inf")))
        eps_all.append(eps.cpu())
        adv_all.append(adv.detach().float().cpu())
        clean_all.append(action.cpu())
        pred_all.append(pred.cpu())
    return Adversarial(
        epsilon=torch.cat(eps_all).numpy().astype(np.float32),
        adversarial=torch.cat(adv_all),
        clean_action=torch.cat(clean_all).numpy().astype(np.int64),
        adv_action=torch.cat(pred_all).numpy().astype(np.int64),
        method=method,
        eps_max=float(eps_max),
    )


def plot_epsilon_histogram(
    results: Adversarial | list[Adversarial], path: str | os.PathLike, title: str | None = None
) -> Path:
    """Histogram of the minimal epsilon over frames (in 1/255 pixel levels), one colour per
    method; frames with no flip up to eps_max are counted in the legend. Returns the PNG path."""
    results = [results] if isinstance(results, Adversarial) else list(results)
    if not results:
        raise ValueError("plot_epsilon_histogram needs at least one Adversarial result")
    fig = new_figure(6.0, 3.6)
    ax = fig.subplots()
    eps_max = max(r.eps_max for r in results) * 255
    bins = np.linspace(0, eps_max, 41)
    for r in results:
        levels = r.epsilon[r.found] * 255
        median = f", median {np.median(levels):.2f}" if len(levels) else ""
        ax.hist(
            levels,
            bins=bins,
            alpha=0.6,
            label=f"{r.method}: {r.found.sum()}/{len(r.epsilon)} flipped{median}",
        )
    ax.set_xlabel("smallest L-inf epsilon that changes the greedy action (pixel levels, 1/255)")
    ax.set_ylabel("frames")
    ax.legend(fontsize=8)
    ax.set_title(title or f"Adversarial epsilon over {len(results[0].epsilon)} frames", fontsize=10)
    return save_figure(fig, path)


def plot_adversarial_example(
    result: Adversarial, obs: np.ndarray, index: int, path: str | os.PathLike, action_names=None
) -> Path:
    """One frame, its adversarial version and the (amplified) perturbation; returns the PNG path."""
    obs = check_frames(obs)
    names = action_names or [
        str(i) for i in range(int(max(result.clean_action.max(), result.adv_action.max())) + 1)
    ]
    clean = obs[index]
    adv = to_uint8(result.adversarial[index])
    delta = adv.astype(np.float32) - clean.astype(np.float32)
    lim = max(1.0, float(np.abs(delta).max()))
    fig, (axes,) = image_grid(8.0, 2.8, 1, 3)
    axes[0].imshow(display_rgb(clean))
    axes[0].set_title(f"frame #{index}: {names[result.clean_action[index]]}", fontsize=8)
    axes[1].imshow(display_rgb(adv))
    eps = result.epsilon[index]
    axes[1].set_title(f"eps {eps * 255:.2f}/255: {names[result.adv_action[index]]}", fontsize=8)
    axes[2].imshow(0.5 + 0.5 * delta.mean(-1) / lim, cmap="RdBu_r", vmin=0, vmax=1)
    axes[2].set_title(f"perturbation (x{127 / lim:.0f})", fontsize=8)
    fig.suptitle(f"Smallest action-changing perturbation ({result.method})", fontsize=10)
    return save_figure(fig, path)
