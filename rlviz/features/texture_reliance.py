"""Does the policy act on texture or on shape? Action-distribution change per perturbation family.

Each family pairs original observations with perturbed ones that differ in one respect only:
texture (floor / walls re-textured, frames style-transferred; geometry untouched) or geometry
(the goal box moved; textures untouched). The policy's reliance on a family is how far its action
distribution moves, KL(pi(.|original) || pi(.|perturbed)) per frame, and how often its greedy
action flips. A shape-reading agent shows ~0 for texture families and a large value for geometry;
Geirhos et al. ("ImageNet-trained CNNs are biased towards texture", ICLR 2019,
https://arxiv.org/abs/1811.12231) found ImageNet CNNs the other way round.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch

from rlviz.features._common import network_input
from rlviz.policy import PolicyAdapter

#: The two kinds of family; the reliance ratio compares their mean KL.
KINDS = ("texture", "geometry")


@torch.no_grad()
def action_log_probs(adapter: PolicyAdapter, obs, *, batch_size: int = 256) -> torch.Tensor:
    """log pi(.|obs) for raw observations (or network input) [N, ...], float32 CPU [N, A]."""
    if len(obs) == 0:
        raise ValueError("got 0 observations; pass a non-empty batch [N, H, W, C]")
    parts = []
    for start in range(0, len(obs), batch_size):
        x = network_input(adapter, obs[start : start + batch_size])
        parts.append(adapter.outputs(x).log_probs.float().cpu())
    return torch.cat(parts)


def action_kl(
    adapter: PolicyAdapter, original, perturbed, *, batch_size: int = 256
) -> tuple[np.ndarray, np.ndarray]:
    """Per frame KL(pi(.|original) || pi(.|perturbed)) in nats (float32 [N]), and whether the
    greedy action flips (bool [N]). Frame i of ``perturbed`` [N, ...] is frame i of ``original``,
    perturbed."""
    if len(original) != len(perturbed):
        raise ValueError(
            f"original has {len(original)} frames, perturbed has {len(perturbed)}; pair them 1:1"
        )
    p = action_log_probs(adapter, original, batch_size=batch_size)
    q = action_log_probs(adapter, perturbed, batch_size=batch_size)
    kl = (p.exp() * (p - q)).sum(-1).clamp_min(0.0)  # rounding can give -1e-9
    flipped = p.argmax(-1) != q.argmax(-1)
    return kl.numpy().astype(np.float32), flipped.numpy()


@dataclass
class FamilyResult:
    """How much one perturbation family moves the policy.

    Attributes:
        family: its name ("floor re-textured", "box moved", ...); kind: "texture" or "geometry".
        frames: paired frames measured.
        kl_mean / kl_median / kl_p90: KL(pi(.|original) || pi(.|perturbed)) in nats.
        flip_rate: share of frames whose greedy action changes.
        kl_in_view: mean KL over the frames where the goal is in view (None if not given).
        success: success rate of episodes played under this family's perturbation (None if not
            played); episodes: how many.
    """

    family: str
    kind: str
    frames: int
    kl_mean: float
    kl_median: float
    kl_p90: float
    flip_rate: float
    kl_in_view: float | None = None
    success: float | None = None
    episodes: int = 0

    def as_dict(self) -> dict:
        """Plain JSON-able fields."""
        return asdict(self)


def family_result(
    family: str,
    kind: str,
    kl: np.ndarray,
    flipped: np.ndarray,
    in_view: np.ndarray | None = None,
    **success,
) -> FamilyResult:
    """Summarise per-frame ``kl`` / ``flipped`` of one family.

    Args:
        in_view: bool [N], frames where the goal is in view (for :attr:`FamilyResult.kl_in_view`).
        success: ``success=`` and ``episodes=`` of episodes played under the family, if any.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    kl = np.asarray(kl, dtype=np.float64)
    if kl.size == 0:
        raise ValueError(f"family {family!r} has no frames to summarise")
    seen = None
    if in_view is not None:
        in_view = np.asarray(in_view, dtype=bool)
        if in_view.shape != kl.shape:
            raise ValueError(f"in_view has shape {in_view.shape}, kl has {kl.shape}; one per frame")
        seen = float(kl[in_view].mean()) if in_view.any() else float("nan")
    return FamilyResult(
        family,
        kind,
        int(kl.size),
        float(kl.mean()),
        float(np.median(kl)),
        float(np.quantile(kl, 0.9)),
        float(np.mean(flipped)),
        seen,
        **success,
    )


def measure_family(
    adapter: PolicyAdapter,
    family: str,
    kind: str,
    original,
    perturbed,
    in_view: np.ndarray | None = None,
    **success,
) -> FamilyResult:
    """:func:`action_kl` of paired frames, summarised as a :class:`FamilyResult`."""
    kl, flipped = action_kl(adapter, original, perturbed)
    return family_result(family, kind, kl, flipped, in_view, **success)


def reliance_ratio(results: Sequence[FamilyResult]) -> float:
    """Mean KL over texture families / mean KL over geometry families (< 1: shape-driven)."""
    by_kind = {k: [r.kl_mean for r in results if r.kind == k] for k in KINDS}
    if not by_kind["texture"] or not by_kind["geometry"]:
        raise ValueError("reliance_ratio needs at least one texture and one geometry family")
    return float(np.mean(by_kind["texture"]) / max(np.mean(by_kind["geometry"]), 1e-12))


def format_table(results: Sequence[FamilyResult]) -> str:
    """A Markdown table: one row per family (KL, greedy flips, success when played)."""
    lines = [
        "| family | kind | frames | KL mean (nats) | KL median | KL p90 | KL, goal in view "
        "| greedy flips | success |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        seen = "-" if r.kl_in_view is None else f"{r.kl_in_view:.4f}"
        success = "-" if r.success is None else f"{r.success:.0%} ({r.episodes} ep.)"
        lines.append(
            f"| {r.family} | {r.kind} | {r.frames} | {r.kl_mean:.4f} | {r.kl_median:.4f} | "
            f"{r.kl_p90:.4f} | {seen} | {r.flip_rate:.1%} | {success} |"
        )
    return "\n".join(lines)
