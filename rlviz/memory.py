"""Memory reliance: per step, how much the policy's choice depends on what it remembers.

Two measures, for frame stacks and recurrent state alike:

* ``kl``: KL(pi(.|s_t) || pi(.|s_t without memory)), where "without memory" replaces the past frames
  of a stack by the current one, or resets a recurrent state to the policy's initial state. One
  extra forward pass per step; 0 means the memory changed nothing.
* ``share``: the gradient x input share of the memory: |memory . d log pi(a_t) / d memory| over that
  plus the current frame's, in [0, 1] (Simonyan-style attribution split between past and present).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from rlviz.layout import ObservationLayout
from rlviz.policy.output import kl_divergence
from rlviz.rollout import Rollout, with_layout
from rlviz.targets import MostLikelyAction, TakenAction, as_target, subset_target

# Steps per pass: memory reliance runs over whole episodes.
DEFAULT_BATCH = 256

#: The method of a stack's per-frame maps (stack panels) when none of the chosen methods works in
#: input space: one backward pass per step, the cheapest per-frame map.
STACK_FALLBACK = "gradient"


def has_memory(policy, layout: ObservationLayout | None) -> bool:
    """Whether the policy remembers: a recurrent state, or a layout of K > 1 stacked frames."""
    return bool(getattr(policy, "recurrent", False)) or bool(layout is not None and layout.stacked)


def per_frame_mode(method: str) -> str:
    """How ``method`` explains each stacked frame alone: "input" (its input channels reduced per
    frame) or the method's own mode (occlusion's patch covers every frame; CAM's layer mixed them)."""
    from rlviz.methods import get_method

    return getattr(get_method(method), "per_frame_mode", "input")


def stack_method(methods) -> str:
    """The method of per-frame maps: the first of ``methods`` in input space, else
    :data:`STACK_FALLBACK`."""
    return next((m for m in methods if per_frame_mode(m) == "input"), STACK_FALLBACK)


@dataclass
class MemoryReliance:
    """Per-step memory reliance of an episode: ``kl`` and ``share``, float32 [T] each."""

    kl: np.ndarray
    share: np.ndarray

    def __len__(self) -> int:
        return len(self.kl)


def without_past_frames(x: torch.Tensor, layout: ObservationLayout) -> torch.Tensor:
    """A network input [B, K*C, H, W] with every past frame replaced by the newest one."""
    frames = layout.split_input(x)
    return frames[:, -1:].expand_as(frames).reshape(x.shape)


def _reliance(adapter, x, target, layout, state=None) -> tuple[torch.Tensor, torch.Tensor]:
    """(kl, share) per row of a stack's past frames, or (``state`` given) of a recurrent state."""
    x = x.detach().requires_grad_(True)
    memory = () if state is None else tuple(s.detach().requires_grad_(True) for s in state)
    out = adapter.outputs(x, state=memory or None)
    target = target if not isinstance(target, MostLikelyAction) else _greedy(out)
    grads = torch.autograd.grad(target(out).sum(), (x, *memory), allow_unused=True)
    with torch.no_grad():
        if not memory:
            kl = kl_divergence(out, adapter.outputs(without_past_frames(x, layout)))
            per_frame = layout.split_input(grads[0] * x).abs().sum(dim=(2, 3, 4))  # [B, K]
            return kl, per_frame[:, :-1].sum(1) / per_frame.sum(1).clamp_min(1e-12)
        reset = adapter.initial_state(x.shape[0])
        kl = kl_divergence(out, adapter.outputs(x, state=reset))
        frame_part = _abs_sum(grads[0], x)
        memory_part = sum(_abs_sum(g, s) for g, s in zip(grads[1:], memory, strict=True))
        return kl, memory_part / (memory_part + frame_part).clamp_min(1e-12)


def _abs_sum(grad: torch.Tensor | None, value: torch.Tensor) -> torch.Tensor:
    if grad is None:
        return value.new_zeros(value.shape[0])
    return (grad * value).abs().flatten(1).sum(1)


def _greedy(out):
    """The greedy action of the clean steps, fixed before the memory is removed; for a Box
    policy (no single most likely action), the size of its mean action, sum_d |mean_d|."""
    if not out.discrete:
        signs = torch.sign(out.action_mean.detach())
        return lambda o: (o.action_mean * signs).sum(-1)
    return TakenAction(out.logits.detach().argmax(dim=-1).cpu())


def memory_reliance(
    adapter,
    obs,
    target: object = None,
    *,
    states=None,
    layout: ObservationLayout | None = None,
    batch_size: int = DEFAULT_BATCH,
) -> MemoryReliance:
    """Memory reliance (``kl`` and ``share``, float32 [T]) of each step of ``obs``, raw
    observations [T, ...] of an ``adapter`` with memory (a stacked layout or a recurrent state).

    ``obs`` may be a :class:`rlviz.rollout.Rollout`, whose ``states``, ``layout`` and taken actions
    are then the defaults. ``target``: what the share explains (default: the greedy action's
    log-prob; see :meth:`rlviz.AttributionMethod.attribute`); ``states``: a recurrent adapter's
    state entering each step, tensors [T, ...]; ``layout``: default the adapter's.
    """
    if isinstance(obs, Rollout):
        states = obs.states if states is None else states
        layout = layout or obs.layout
        target = TakenAction(obs.actions) if target is None else target
        obs = obs.obs
    recurrent = bool(getattr(adapter, "recurrent", False))
    layout = layout or getattr(adapter, "layout", None)
    adapter = with_layout(adapter, layout)  # a layout given here also preprocesses the stack
    if not recurrent and (layout is None or not layout.stacked):
        raise ValueError(
            f"memory reliance needs a policy with memory: a frame stack (layout with frames > 1; "
            f"got {layout}) or a recurrent state; declare the layout on the PolicyAdapter"
        )
    if recurrent and states is None:
        raise ValueError(
            "a recurrent policy's memory reliance needs the state entering each step: pass "
            "states= (recorded by rlviz's rollouts)"
        )
    target = as_target(target)
    kls, shares = [], []
    for start in range(0, len(obs), batch_size):
        rows = slice(start, start + batch_size)
        part = subset_target(target, rows)
        x = adapter.preprocess(obs[rows])  # a pass at a time: never all of a long episode
        held = tuple(s[rows] for s in states) if recurrent else None
        with torch.enable_grad():
            kl, share = _reliance(adapter, x, part, layout, held)
        kls.append(kl.float().cpu())
        shares.append(share.float().cpu())
    return MemoryReliance(kl=torch.cat(kls).numpy(), share=torch.cat(shares).numpy())
