"""Events of an episode, read from the ground truth the env reports in ``info`` (no env code).

The engine knows generic keys only; an env opts in by reporting them:

* ``goal_mask`` bool [H, W]: the pixels of the observation the goal covers;
* ``<name>_visible`` bool: whether the goal is in view (else ``goal_mask.any()``); its prefix is
  what captions call the goal (BoxReach reports ``box_visible``: "box came into view");
* ``goal_name`` str: the goal's name, when it is not in a ``<name>_visible`` key;
* ``success`` bool: the goal was reached this step.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from rlviz.rollout import Rollout

#: Infos the panels read (names or glob patterns); other infos are not kept per step.
INFO_KEYS = ("success", "goal_mask", "goal_name", "*_visible")
VISIBLE_SUFFIX = "_visible"
#: How far off centre (fraction of the width) the goal must be for a turn to count as "away".
AWAY_MARGIN = 0.1


@dataclass(frozen=True)
class GoalTruth:
    """What the env said about its goal over an episode (each field None when not reported):
    its ``name`` in captions, ``visible`` bool [T] (in view), ``mask`` bool [T, H, W] (its
    pixels), ``success`` bool [T] (reached by the step's action)."""

    name: str = "goal"
    visible: np.ndarray | None = None
    mask: np.ndarray | None = None
    success: np.ndarray | None = None


def _flags(infos: Mapping[str, np.ndarray], key: str, n: int) -> np.ndarray | None:
    return np.asarray(infos[key]).reshape(n, -1).any(1) if key in infos else None


def goal_truth(infos: Mapping[str, np.ndarray], n: int) -> GoalTruth:
    """The goal's ground truth from a rollout's stacked ``infos`` of ``n`` steps."""
    visible_keys = sorted(k for k in infos if k.endswith(VISIBLE_SUFFIX))
    if "goal_visible" in visible_keys:  # the generic key wins over env-named ones
        visible_keys.insert(0, visible_keys.pop(visible_keys.index("goal_visible")))
    name = "goal"
    if "goal_name" in infos and n:
        name = str(np.asarray(infos["goal_name"]).reshape(-1)[0])
    elif visible_keys:
        name = visible_keys[0][: -len(VISIBLE_SUFFIX)]
    mask = np.asarray(infos["goal_mask"]) if "goal_mask" in infos else None
    visible = _flags(infos, visible_keys[0], n) if visible_keys else None
    if visible is None and mask is not None:
        visible = mask.reshape(n, -1).any(1)
    return GoalTruth(name, visible, mask, _flags(infos, "success", n))


def _action_index(names: Sequence[str], wanted: str) -> int | None:
    lowered = [n.lower() for n in names]
    return lowered.index(wanted) if wanted in lowered else None


def _goal_side(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per step: pixels of the goal in view [T] and where it is, -0.5 (left) .. 0.5 (right)."""
    n, width = len(mask), mask.shape[-1]
    cols = np.arange(width, dtype=np.float32)
    area = mask.reshape(n, -1, width).sum(1).astype(np.float32)  # [T, W] column coverage
    total = area.sum(1)
    centre = np.where(total > 0, (area * cols).sum(1) / np.maximum(total, 1), width / 2)
    return total, (centre - (width - 1) / 2) / width


def _view_events(events: list[list[str]], truth: GoalTruth) -> None:
    visible, name = truth.visible, truth.name
    for t in range(len(events)):
        if visible[t] and (t == 0 or not visible[t - 1]):
            events[t].append(f"{name} came into view")
        elif not visible[t] and t > 0 and visible[t - 1]:
            events[t].append(f"lost sight of the {name}")


def _turn_events(events, truth: GoalTruth, actions, left: int, right: int) -> None:
    total, side = _goal_side(truth.mask)
    for t in range(len(events)):
        a = int(actions[t])
        away = (a == right and side[t] < -AWAY_MARGIN) or (a == left and side[t] > AWAY_MARGIN)
        if total[t] > 0 and away:
            events[t].append(f"turning away from a visible {truth.name}")


def episode_events(rollout: Rollout, action_names: Sequence[str]) -> list[list[str]]:
    """Event captions per step from the rollout and ground truth: ``[T]`` lists of strings.

    Events: "<goal> came into view" (first step it appears), "lost sight of the <goal>", "turning
    away from a visible <goal>" (a turn away from the side of the image the goal is on), "reached
    the <goal>", and rewards. Ground-truth events need the infos of this module's docstring.
    """
    n = len(rollout)
    events: list[list[str]] = [[] for _ in range(n)]
    truth = goal_truth(rollout.infos, n)
    if truth.visible is not None:
        _view_events(events, truth)
    left = _action_index(action_names, "left")
    right = _action_index(action_names, "right")
    if truth.mask is not None and left is not None and right is not None:
        _turn_events(events, truth, rollout.actions, left, right)
    success = truth.success
    for t in range(n):
        if success is not None and success[t]:
            events[t].append(f"reached the {truth.name}")
        elif rollout.rewards[t] != 0:
            events[t].append(f"reward {rollout.rewards[t]:+.2f}")
    if success is None and (rollout.terminated or rollout.truncated) and n:
        events[-1].append("episode ends" + (" (time limit)" if rollout.truncated else ""))
    elif n and rollout.truncated and (success is None or not success.any()):
        events[-1].append("time limit: episode ends")
    return events
