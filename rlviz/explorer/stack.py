"""The explorer's memory views: a frame stack's frames with one map per frame, and memory
reliance per step, for a policy with memory (a stacked layout or a recurrent state).

Per-frame maps come from one input-space method (``explain(..., per_frame=True)``: each stack
frame's channels reduced alone), for the scalar targets the page offers (taken action, value);
memory reliance from :func:`rlviz.memory.memory_reliance` (KL of pi without the memory, and
the memory's gradient x input share).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from rlviz.explorer.episode import rollout_states
from rlviz.layout import ObservationLayout
from rlviz.memory import has_memory
from rlviz.policy import PolicyAdapter
from rlviz.rollout import Rollout
from rlviz.spool import Spool
from rlviz.targets import TakenAction, Value


def stack_maps(
    adapter: PolicyAdapter,
    rollout: Rollout,
    method: str,
    targets: Sequence[str],
    *,
    size: tuple[int, int],
    batch_size: int,
    keep: Spool | None = None,
) -> tuple[dict[str, np.ndarray], dict[str, list], bool]:
    """Per-frame maps of a stacked episode for each scalar target in ``targets`` (with ``keep``:
    arrays on disk there, see :func:`rlviz.explorer.episode.streamed_maps`).

    Returns:
        (target -> uint8 [T, K, h, w] at ``size`` on one episode scale, target -> JSON-able
        frame shares [T][K] (attribution mass per frame, summing to 1), whether signed).
    """
    from rlviz.explorer.episode import MapRow, streamed_maps
    from rlviz.methods import is_signed

    rows = {}
    if "taken" in targets:
        rows["taken"] = MapRow(method, (TakenAction(rollout.actions),), per_frame=True)
    if "value" in targets and rollout.values is not None:
        rows["value"] = MapRow(method, (Value(),), per_frame=True)
    maps, frame_shares = streamed_maps(
        adapter, rollout, rows, size, layer=None, batch_size=batch_size, keep=keep
    )  # [T, K, h, w] each
    shares = {key: np.round(frame_shares[key].astype(np.float64), 4).tolist() for key in maps}
    sign = is_signed(method) if rows else False
    return maps, shares, sign


def memory_record(
    adapter: PolicyAdapter, rollout: Rollout, layout: ObservationLayout | None
) -> dict | None:
    """Per-step memory reliance of one episode, ``{"kl": [T], "share": [T]}`` (of the taken
    action), or None when the policy has no memory or a recurrent rollout lacks its states."""
    from rlviz.memory import memory_reliance

    if not has_memory(adapter, layout):
        return None
    states = rollout_states(rollout)
    if getattr(adapter, "recurrent", False) and states is None:
        return None  # the rollout did not record the state entering each step
    result = memory_reliance(
        adapter, rollout.obs, TakenAction(rollout.actions), states=states, layout=layout
    )
    return {"kl": result.kl, "share": result.share}
