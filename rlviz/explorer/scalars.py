"""Per-step numbers of an explored episode: entropy, GAE advantages, events from the env's info."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

#: Event kinds the page knows (colour and bookmark label); anything else shows as "other".
EVENT_KINDS = ("seen", "lost", "reached", "blocked", "away", "reward", "end")

_CAPTION_KINDS = (
    ("came into view", "seen"),
    ("lost sight", "lost"),
    ("reached", "reached"),
    ("turning away", "away"),
    ("reward", "reward"),
    ("episode ends", "end"),
)


def entropy(probs: np.ndarray) -> np.ndarray:
    """Entropy of each row of ``probs`` [T, A] in nats: float32 [T]."""
    p = np.asarray(probs, dtype=np.float64)
    return (-(p * np.log(np.clip(p, 1e-12, 1.0))).sum(-1)).astype(np.float32)


def gae(
    rewards: np.ndarray,
    values: np.ndarray,
    *,
    gamma: float = 0.99,
    lam: float = 0.95,
    terminated: bool = True,
    bootstrap: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Generalised advantage estimates of one episode (Schulman et al. 2016,
    https://arxiv.org/abs/1506.02438).

    ``delta_t = r_t + gamma * V(s_{t+1}) - V(s_t)``, ``A_t = delta_t + gamma * lam * A_{t+1}``.
    After the last step V is 0 if the episode ``terminated``, else ``bootstrap`` (default: the
    last value, as the state after a time limit is not recorded).

    Returns:
        (advantages float32 [T], returns float32 [T] = advantages + values).
    """
    r = np.asarray(rewards, dtype=np.float64)
    v = np.asarray(values, dtype=np.float64)
    if r.shape != v.shape or r.ndim != 1:
        raise ValueError(f"rewards and values must both be [T]; got {r.shape} and {v.shape}")
    last = 0.0 if terminated else float(v[-1] if bootstrap is None else bootstrap)
    next_v = np.append(v[1:], last)
    delta = r + gamma * next_v - v
    adv = np.zeros_like(r)
    running = 0.0
    for t in range(len(r) - 1, -1, -1):
        running = delta[t] + gamma * lam * running
        adv[t] = running
    return adv.astype(np.float32), (adv + v).astype(np.float32)


def blocked_steps(
    actions: np.ndarray,
    positions: np.ndarray,
    action_names: Sequence[str],
    tol: float = 1e-4,
) -> np.ndarray:
    """Steps t where the agent moved ``forward`` but its position at t+1 equals that at t.

    ``positions`` [T, 2] come from ``info["agent_pos"]``; the last step cannot be judged.

    Returns:
        bool [T].
    """
    names = [n.lower() for n in action_names]
    out = np.zeros(len(actions), bool)
    if "forward" not in names or positions is None or len(positions) < 2:
        return out
    forward = names.index("forward")
    pos = np.asarray(positions, dtype=np.float64).reshape(len(positions), -1)
    still = np.linalg.norm(pos[1:] - pos[:-1], axis=1) < tol
    out[:-1] = (np.asarray(actions[:-1]) == forward) & still
    return out


def caption_kind(caption: str) -> str:
    """The event kind of a video caption (``"box came into view"`` -> ``"seen"``)."""
    for needle, kind in _CAPTION_KINDS:
        if needle in caption:
            return kind
    return "other"


def structured_events(
    captions: Sequence[Sequence[str]], blocked: np.ndarray | None = None
) -> list[dict]:
    """Events as ``{"t", "kind", "label"}`` dicts, in time order, from per-step captions (the
    video's :func:`episode_events`) plus blocked steps."""
    events = []
    for t, labels in enumerate(captions):
        for label in labels:
            events.append({"t": t, "kind": caption_kind(label), "label": label})
        if blocked is not None and blocked[t]:
            events.append({"t": t, "kind": "blocked", "label": "blocked: forward did not move"})
    return events
