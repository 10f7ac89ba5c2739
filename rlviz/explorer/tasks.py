"""One episode explained for the explorer: the unit of :func:`rlviz.explore`'s costly stage.

:func:`explain_episode` depends only on its rollout and an :class:`EpisodeJob` (the adapter and
the settings), so it runs the same in this process or as an executor task (``--workers``): the
same maps, records and frames either way.
"""

from __future__ import annotations

from dataclasses import dataclass

from rlviz.explorer.episode import (
    EpisodeData,
    ShownFrames,
    episode_maps,
    episode_record,
    map_size,
)
from rlviz.layout import LayoutError, ObservationLayout
from rlviz.policy import PolicyAdapter
from rlviz.rollout import Rollout
from rlviz.spool import Spool


@dataclass(frozen=True)
class EpisodeJob:
    """What explaining an episode needs besides its rollout (sent once to every task).

    Attributes:
        adapter, layout: the policy and how its observations are laid out.
        names: the action names. methods, targets: as :func:`rlviz.explore` takes them.
        per_action: the method of the per-action maps, or None for none.
        stack_method: the method of a stack's per-frame maps. map_scale: maps at 1/scale per side.
        layer, gamma, lam, batch_size: CAM layer, GAE settings, frames per attribution pass.
    """

    adapter: PolicyAdapter
    layout: ObservationLayout
    names: tuple[str, ...]
    methods: tuple[str, ...]
    targets: tuple[str, ...]
    per_action: str | None
    stack_method: str
    map_scale: int
    layer: str | None
    gamma: float
    lam: float
    batch_size: int


def explain_episode(
    job: EpisodeJob, index: int, rollout: Rollout, keep: Spool | None = None
) -> EpisodeData:
    """Episode ``index``'s :class:`EpisodeData`: its frames, maps per method and target, scalars
    and events, and for a frame stack the frames and per-frame maps. With ``keep`` (in this
    process) the maps are arrays on disk there, not in memory."""
    from rlviz.explorer.stack import memory_record

    shown = ShownFrames(rollout.obs, job.layout)  # [T, K, H, W, 3], drawn when read
    size = map_size(tuple(shown.shape[2:4]), job.map_scale)
    maps, signed = episode_maps(
        job.adapter,
        rollout,
        list(job.methods),
        list(job.targets),
        per_action=job.per_action,
        layer=job.layer,
        batch_size=job.batch_size,
        size=size,
        keep=keep,
    )
    memory = memory_record(job.adapter, rollout, job.layout)
    record = episode_record(rollout, job.names, gamma=job.gamma, lam=job.lam, memory=memory)
    data = EpisodeData(index, record, shown.newest(), None, maps, signed)
    if shown.shape[1] > 1:
        _stack(job, data, shown, rollout, size, keep)
    return data


def _stack(job: EpisodeJob, data: EpisodeData, shown, rollout: Rollout, size, keep) -> None:
    """A stacked episode's frames, per-frame maps and frame shares (when the methods read the
    stack the way the frames were cut)."""
    from rlviz.explorer.stack import stack_maps

    data.stack = shown
    data.record["stack"] = {"k": int(shown.shape[1])}
    if not _per_frame_ok(job.adapter, rollout.obs[:1], shown.shape[1]):
        return
    maps, shares, sign = stack_maps(
        job.adapter,
        rollout,
        job.stack_method,
        list(job.targets),
        size=size,
        batch_size=job.batch_size,
        keep=keep,
    )
    data.stack_maps = maps
    data.record["stack"].update(
        method=job.stack_method, signed=sign, shares=shares, targets=sorted(maps)
    )


def _per_frame_ok(adapter: PolicyAdapter, obs, frames: int) -> bool:
    # the methods cut frames by the adapter's layout; an undeclared one read off the shape
    # may not match the env's (then the page shows the frames without maps)
    try:
        return adapter.layout_for(obs).frames == frames
    except (LayoutError, ValueError):
        return False
