"""Faithfulness of attribution maps, measured against ground truth and against the model itself.

- Pointing game (Zhang et al. 2016, https://arxiv.org/abs/1608.00507): is the map's maximum inside
  the object (mask dilated by a few pixels of tolerance)?
- Mass in mask: share of the positive attribution inside the object, next to the object's share of
  the pixels (a map that ignores the object scores the pixel share on average).
- Deletion / insertion (Petsiuk et al. 2018, RISE, https://arxiv.org/abs/1806.07421): remove the
  most attributed pixels first (or insert them into a blurred frame) and track the target's
  probability; a faithful map makes deletion drop fast (low AUC) and insertion rise fast (high AUC).

All functions are batched over frames: maps [B, H, W], masks bool [B, H, W].
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from rlviz.methods.base import MapRequest
from rlviz.ops import fill_values
from rlviz.policy import PolicyAdapter, as_adapter
from rlviz.targets import ActionProb, MostLikelyAction, as_target


def _tensor(values, dtype=torch.float32) -> torch.Tensor:
    return torch.as_tensor(
        np.asarray(values) if not isinstance(values, torch.Tensor) else values
    ).to(dtype)


def _check(maps: torch.Tensor, masks: torch.Tensor) -> None:
    if maps.ndim != 3 or maps.shape != masks.shape:
        raise ValueError(
            f"maps and masks must both be [B, H, W] of the same shape; got {tuple(maps.shape)} and "
            f"{tuple(masks.shape)} (upsample maps to the mask size first)"
        )


def dilate(masks: np.ndarray | torch.Tensor, pixels: int) -> torch.Tensor:
    """Grow boolean masks [B, H, W] by ``pixels`` (square neighbourhood); returns bool [B, H, W]."""
    masks = _tensor(masks, torch.bool)
    if pixels <= 0:
        return masks
    grown = F.max_pool2d(masks[:, None].float(), 2 * pixels + 1, stride=1, padding=pixels)
    return grown[:, 0] > 0


def pointing_game(
    maps: np.ndarray | torch.Tensor, masks: np.ndarray | torch.Tensor, tolerance: int = 1
) -> np.ndarray:
    """Whether each map's maximum falls inside its mask dilated by ``tolerance`` pixels.

    Returns:
        bool [B]. A frame whose map is constant (no maximum) counts as a miss.
    """
    maps, masks = _tensor(maps), _tensor(masks, torch.bool)
    _check(maps, masks)
    flat = maps.flatten(1)
    hit = dilate(masks, tolerance).flatten(1).gather(1, flat.argmax(1, keepdim=True))[:, 0]
    constant = flat.max(1).values == flat.min(1).values
    return (hit & ~constant).numpy()


def mass_in_mask(maps: np.ndarray | torch.Tensor, masks: np.ndarray | torch.Tensor) -> np.ndarray:
    """Share of each map's positive attribution that lies inside its mask.

    Returns:
        float32 [B] in [0, 1] (0 for a map with no positive attribution).
    """
    maps, masks = _tensor(maps), _tensor(masks, torch.bool)
    _check(maps, masks)
    positive = maps.clamp(min=0).flatten(1).double()
    total = positive.sum(1)
    inside = (positive * masks.flatten(1)).sum(1)
    return torch.where(total > 0, inside / total.clamp(min=1e-300), 0.0).float().numpy()


def mask_share(masks: np.ndarray | torch.Tensor) -> np.ndarray:
    """Fraction of each frame's pixels inside the mask: float32 [B] (mass_in_mask's chance
    level)."""
    return _tensor(masks, torch.bool).flatten(1).float().mean(1).numpy()


def _curves(
    adapter: PolicyAdapter,
    obs,
    maps,
    target,
    steps: int,
    insertion: bool,
    fill: object,
    blur_sigma: float,
    batch_size: int,
) -> np.ndarray:
    adapter = as_adapter(adapter)
    x = adapter.preprocess(obs).detach()
    maps = _tensor(maps).to(x.device)
    b, _, h, w = x.shape
    if maps.shape != (b, h, w):
        raise ValueError(
            f"maps must be [B, H, W] = {(b, h, w)} to match the observations; got "
            f"{tuple(maps.shape)}"
        )
    score = _probability_target(target)
    if score is None:  # pi(a*|s) of the clean frame's greedy action
        with torch.no_grad():
            score = ActionProb(adapter.outputs(x).logits.argmax(dim=-1).cpu())
    canvas = fill_values(x, fill, blur_sigma).expand_as(x)
    # Rank pixels by attribution, most attributed first (stable: ties keep raster order).
    order = torch.argsort(maps.flatten(1), dim=1, descending=True, stable=True)
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(h * w, device=x.device).expand(b, -1))
    counts = torch.round(torch.linspace(0, h * w, steps + 1, device=x.device)).long()
    curves = torch.zeros(b, steps + 1, dtype=torch.float64)
    # Deletion: chosen pixels become the canvas. Insertion: chosen pixels come from x.
    keep, other = (x, canvas) if insertion else (canvas, x)
    with torch.no_grad(), MapRequest(batch_size).passes(x, steps + 1) as blocks:
        for block in blocks:
            frames, n_k = block.frames, block.jobs_per_frame
            chosen = (rank[frames, None] < counts[None, block.jobs, None]).view(-1, n_k, 1, h, w)
            images = torch.where(
                chosen, keep[frames, None], other[frames, None], out=block.images
            ).flatten(0, 1)
            # rows: a recurrent policy reads each image's frame's held state
            out = adapter.outputs(images, rows=block.rows)
            values = block.target(score)(out)
            curves[frames, block.jobs] = values.detach().double().cpu().view(-1, n_k)
    return curves.numpy()


def _probability_target(target):
    """Deletion/insertion track a probability: an action target becomes pi(a|s); None for the
    greedy action, which the clean frames decide."""
    if target is None:
        return None
    if isinstance(target, (list, tuple, np.ndarray, torch.Tensor)):
        return ActionProb(target)  # one action per frame
    target = as_target(target)
    if isinstance(target, MostLikelyAction):
        return None
    actions = getattr(target, "actions", None)
    if actions is not None:
        return ActionProb(actions)
    return target


def deletion_curve(
    adapter: PolicyAdapter,
    obs,
    maps,
    target=None,
    steps: int = 20,
    fill: object = 0.0,
    blur_sigma: float = 5.0,
    batch_size: int = 256,
) -> np.ndarray:
    """Target probability as the most-attributed pixels are replaced by ``fill`` (black, as RISE).

    Args:
        adapter: the policy.
        obs: raw observations [B, ...]; ``maps`` [B, H, W] at the network input's resolution.
        target: actions (one per frame, or a target such as ``TakenAction(actions)``), scored by
            their probability pi(a|s); None: the clean frame's greedy action. Other targets
            (``"value"``) are tracked as they are.
        steps: number of deletion steps (the curve has steps + 1 points, from 0% to 100% deleted).

    Returns:
        float64 [B, steps + 1].
    """
    return _curves(adapter, obs, maps, target, steps, False, fill, blur_sigma, batch_size)


def insertion_curve(
    adapter: PolicyAdapter,
    obs,
    maps,
    target=None,
    steps: int = 20,
    fill: object = "blur",
    blur_sigma: float = 5.0,
    batch_size: int = 256,
) -> np.ndarray:
    """Target probability as the most-attributed pixels are put back into a blurred frame.

    Returns:
        float64 [B, steps + 1] (0% to 100% inserted); see :func:`deletion_curve`.
    """
    return _curves(adapter, obs, maps, target, steps, True, fill, blur_sigma, batch_size)


def auc(curves: np.ndarray) -> np.ndarray:
    """Area under curves [B, K] sampled evenly on [0, 1] (trapezoid rule): float [B]."""
    curves = np.asarray(curves, dtype=np.float64)
    return ((curves[:, 1:] + curves[:, :-1]) * 0.5).mean(axis=1)
