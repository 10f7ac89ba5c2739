"""The sweep's tasks: small pure functions of (spec, probe set, checkpoint, block).

The engine never builds an env or loads an agent itself (it may not import ``envs`` or
``agents``): the caller's :class:`SweepSpec` carries picklable functions that do (the CLI's are in
:mod:`rlviz.cli.sweep_tasks`). Two kinds of task per checkpoint:

* the **analysis** task (block :data:`ANALYSIS`) on the fixed probe frames: faithfulness of each
  method (pointing game, mass in box), box-detector units per layer (dissection), the action
  change when the top detectors are off, memory reliance when the agent has memory
  (:func:`probe_memory`), and the maps themselves (for the drift between snapshots);
* one **episode** task per block of held-out seeds: success and steps, intact and with the top
  detectors ablated (on the same seeds: a paired comparison).

An episode task re-derives the top detectors from the probe frames itself (a few ms for a small
CNN) instead of waiting for the analysis task: the tasks of a checkpoint never depend on each
other, so they spread over workers freely.

A policy that reads K stacked frames sees each probe frame as a K-frame stack
(:func:`probe_obs`); every measure is of the newest frame, the one the goal mask is of.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from rlviz.features.ablation import ablate, action_change
from rlviz.features.dissection import DEFAULT_IOU_THRESHOLD, Dissection, dissect
from rlviz.metrics import mask_share, mass_in_mask, pointing_game
from rlviz.policy import PolicyAdapter

#: The block number of a checkpoint's analysis task (episode blocks are numbered from 0).
ANALYSIS = -1

Units = dict[str, list[int]]


@dataclass(frozen=True)
class Snapshot:
    """A loaded checkpoint, as :attr:`SweepSpec.load` returns it."""

    adapter: PolicyAdapter  # the policy (its ``model`` is what ablation hooks)
    steps: int  # training steps of the checkpoint (the sweep's x axis)
    layers: tuple[str, ...]  # conv layers to dissect, in network order
    config: dict = field(default_factory=dict)  # the checkpoint's JSON config


@dataclass(frozen=True)
class ProbeSet:
    """The fixed frames every snapshot is explained on: uint8 obs [N, H, W, C], bool masks
    [N, H, W] (the goal box), and the seeds of the episodes they come from.

    For a policy with memory, also ``history``: every observation of each probe episode (uint8
    [T_e, H, W, C] per episode), and ``origin``: int [N, 2], the (episode, step) of each probe
    frame in it. A recurrent policy's state entering a probe frame is its state after reading
    the episode up to there (without them a recurrent snapshot reports no memory); a frame
    stack is the probe frame and its predecessors (:func:`probe_obs`; without them a stacked
    policy needs ``obs`` that are stacks already).
    """

    obs: np.ndarray
    masks: np.ndarray
    seeds: tuple[int, ...] = ()
    history: tuple[np.ndarray, ...] = ()
    origin: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.obs.ndim != 4 or self.masks.shape != self.obs.shape[:3]:
            raise ValueError(
                f"probe obs must be [N, H, W, C] and masks [N, H, W] of the same frames; got "
                f"{self.obs.shape} and {self.masks.shape}"
            )

    def writeable(self) -> ProbeSet:
        """This set with arrays that may be written (Ray hands out read-only views)."""
        if self.obs.flags.writeable:
            return self
        return replace(
            self,
            obs=self.obs.copy(),
            masks=self.masks.copy(),
            history=tuple(h.copy() for h in self.history),
        )

    @property
    def visible(self) -> np.ndarray:
        """bool [N]: frames where the goal box is in view (faithfulness is scored on those)."""
        return self.masks.reshape(len(self.masks), -1).any(1)


def probe_obs(adapter: PolicyAdapter, probe: ProbeSet) -> np.ndarray:
    """The probe frames as ``adapter`` reads them: uint8 [N, H, W, K*C].

    ``probe.obs`` itself for a one-frame policy, or when the frames are stacks already; for a
    policy reading K frames on the channel axis (``HWC`` layout, as ``envs.wrappers.StackFrames``
    and SB3's ``VecFrameStack``), each probe frame with its K-1 predecessors in its episode
    (``probe.history``), oldest first, the episode's first frame repeated for steps before it
    began, as ``StackFrames`` pads at reset. The newest frame of each stack is the probe frame.
    """
    layout = adapter.layout
    if layout is None or not layout.stacked or probe.obs.shape[-1] != layout.channels:
        return probe.obs
    if not probe.history or probe.origin is None:
        raise ValueError(
            f"a policy reading {layout.frames} stacked frames needs the probe episodes' frames to "
            "stack each probe frame with its predecessors; make the probe set with its history "
            "(ProbeSet.history and origin, e.g. oracle_probe(..., keep_history=True))"
        )
    if layout.order != "HWC":
        raise ValueError(
            f"probe frames are stacked on the channel axis (layout HWC); the policy reads {layout}"
        )
    k = layout.frames
    stacks = np.stack(
        [probe.history[e][np.clip(np.arange(t - k + 1, t + 1), 0, None)] for e, t in probe.origin]
    )  # [N, K, H, W, C]
    n, _, h, w, c = stacks.shape
    return stacks.transpose(0, 2, 3, 1, 4).reshape(n, h, w, k * c)


def _probe_states(adapter, probe: ProbeSet):
    """The recurrent state entering each probe frame (a tuple of [N, ...]), or None without the
    probe episodes' ``history``."""
    if not probe.history or probe.origin is None:
        return None
    from rlviz.rollout import episode_outputs

    per_episode = [episode_outputs(adapter, frames)[2] for frames in probe.history]
    picked = [tuple(s[step : step + 1] for s in per_episode[e]) for e, step in probe.origin]
    return tuple(torch.cat(parts) for parts in zip(*picked, strict=True))


def probe_memory(snapshot: Snapshot, probe: ProbeSet) -> dict | None:
    """Mean memory reliance (:func:`rlviz.memory.memory_reliance`: ``kl`` and ``share``) of the
    snapshot on the probe frames; None when its policy has no memory (neither a frame stack nor
    a recurrent state) or, recurrent, the probe set has no episode history."""
    from rlviz.memory import memory_reliance

    adapter = snapshot.adapter
    layout = adapter.layout
    if getattr(adapter, "recurrent", False):
        states = _probe_states(adapter, probe)
        if states is None:
            return None
        result = memory_reliance(adapter, probe.obs, states=states)
    elif layout is not None and layout.stacked:
        result = memory_reliance(adapter, probe_obs(adapter, probe))
    else:
        return None
    return {"kl": float(result.kl.mean()), "share": float(result.share.mean())}


@dataclass(frozen=True)
class SweepSpec:
    """What a sweep measures and the caller's functions that touch envs and agents.

    Every function must be picklable by reference (a module-level function, or a
    ``functools.partial`` of one) so Ray can ship it to workers.

    Attributes:
        load: checkpoint path -> :class:`Snapshot`.
        play: ``(snapshot, seeds)`` -> dict with per-episode lists ``seeds``, ``successes``,
            ``steps`` (``agents.evaluate.evaluate``'s keys); it must run ``snapshot.adapter.model``
            so the ablation hooks on it take effect.
        make_probe: ``() -> ProbeSet``, run once per sweep as a task.
        methods: attribution methods scored on the probe frames.
        top_k: detectors ablated (0: no ablation).
        iou_threshold: IoU above which a unit counts as a box detector.
        quantile: dissection's per-unit activation threshold.
        memory: ``(snapshot, probe) -> {"kl", "share"} | None``: mean memory reliance on the
            probe frames, None when the agent has no memory (default :func:`probe_memory`;
            None: never measured).
        setup: ``"module:function"`` every worker runs before its first task.
    """

    load: Callable[[str], Snapshot]
    play: Callable[[Snapshot, Sequence[int]], dict]
    make_probe: Callable[[], ProbeSet]
    methods: tuple[str, ...] = ("gradient", "gradcam")
    top_k: int = 3
    iou_threshold: float = DEFAULT_IOU_THRESHOLD
    quantile: float = 0.995
    memory: Callable[[Snapshot, ProbeSet], dict | None] | None = probe_memory
    setup: str | None = None


def _dissect(spec: SweepSpec, snap: Snapshot, obs: np.ndarray, probe: ProbeSet) -> Dissection:
    """Box-detector units on the probe frames as the policy reads them (``obs``, from
    :func:`probe_obs`). A stacked policy's units are scored on the activations of its K-frame
    stacks (what it computes when acting on the probe frame) against the goal box of the newest
    frame, the one it acts on."""
    return dissect(snap.adapter, obs, probe.masks, list(snap.layers), quantile=spec.quantile)


def top_detectors(spec: SweepSpec, result: Dissection) -> Units:
    """The ``spec.top_k`` best box detectors (IoU above the threshold) as ``{layer: [unit]}``."""
    units: Units = {}
    for score in result.detectors(spec.iou_threshold)[: spec.top_k]:
        units.setdefault(score.layer, []).append(score.unit)
    return {layer: sorted(index) for layer, index in units.items()}


def newest_frame_maps(adapter: PolicyAdapter, obs, methods: Sequence[str]) -> dict[str, np.ndarray]:
    """Maps of each method on the newest frame of each observation: float32 [N, H, W].

    One-frame observations: the plain maps. Stacks: input methods per frame
    (``explain(..., per_frame=True)``), keeping the newest; the CAM family's map (per-frame
    mode ``newest``: a layer mixes the frames) is drawn on the newest frame already.
    """
    from rlviz.explain import explain
    from rlviz.methods import get_method

    stacked = adapter.layout_for(obs).stacked
    maps = {}
    for name in methods:
        per_frame = stacked and get_method(name).per_frame_mode != "newest"
        m = explain(adapter, obs, methods=[name], per_frame=per_frame)[name]
        maps[name] = m[:, -1] if per_frame else m
    return maps


def _faithfulness(
    snap: Snapshot, obs: np.ndarray, probe: ProbeSet, methods: Sequence[str]
) -> tuple[dict, dict]:
    """Maps of each method on the probe frames as the policy reads them (``obs``; their newest
    frame, for a stacked policy), and pointing / mass in box on visible frames."""
    maps = newest_frame_maps(snap.adapter, obs, methods)
    seen = probe.visible
    scores = {}
    for name, m in maps.items():
        if seen.any():
            pointing = float(pointing_game(m[seen], probe.masks[seen]).mean())
            mass = float(mass_in_mask(m[seen], probe.masks[seen]).mean())
        else:  # no frame shows the box: nothing to point at
            pointing = mass = float("nan")
        scores[name] = {"pointing": pointing, "mass": mass}
    return {name: np.asarray(m, dtype=np.float32) for name, m in maps.items()}, scores


def analyse(spec: SweepSpec, probe: ProbeSet, checkpoint: str) -> dict:
    """The analysis task of one checkpoint on the probe frames (see the module docstring).

    A policy reading K stacked frames is measured on the probe frames' K-frame stacks
    (:func:`probe_obs`) against the goal box of the newest frame: maps of the newest frame
    (:func:`newest_frame_maps`), units scored on the stacks' activations, the ablation's action
    change on the stacks.

    Returns:
        dict with ``steps``, ``faithfulness`` {method: {pointing, mass}}, ``mask_share``,
        ``detectors`` {layer: count}, ``detector_units`` [[layer, unit, iou]] (all, best first),
        ``top_units`` {layer: [unit]}, ``ablation_kl``, ``ablation_flips``, ``memory_reliance``
        ({kl, share} means, None without memory) and ``maps`` {method: float32 [N, H, W]}.
    """
    snap = spec.load(checkpoint)
    obs = probe_obs(snap.adapter, probe)  # stacked once, read by every measure below
    maps, scores = _faithfulness(snap, obs, probe, spec.methods)
    result = _dissect(spec, snap, obs, probe)
    units = top_detectors(spec, result)
    kl = flips = float("nan")
    if units:
        change = action_change(snap.adapter, obs, units)
        kl, flips = float(change.kl.mean()), change.flip_rate
    seen = probe.visible
    return {
        "steps": int(snap.steps),
        "faithfulness": scores,
        "mask_share": float(mask_share(probe.masks[seen]).mean()) if seen.any() else float("nan"),
        "detectors": result.count(spec.iou_threshold),
        "units": {layer: len(result.thresholds[layer]) for layer in result.layers},
        "detector_units": [[s.layer, s.unit, s.iou] for s in result.detectors(spec.iou_threshold)],
        "top_units": units,
        "ablation_kl": kl,
        "ablation_flips": flips,
        "memory_reliance": None if spec.memory is None else spec.memory(snap, probe),
        "maps": maps,
    }


@torch.no_grad()
def play_block(spec: SweepSpec, probe: ProbeSet, checkpoint: str, seeds: Sequence[int]) -> dict:
    """One episode task: the block's seeds played intact and with the top detectors off.

    Returns:
        dict with ``seeds``, ``successes``, ``steps`` (intact) and ``ablated`` (the same lists
        with the top detectors off, or None when there are none to ablate).
    """
    snap = spec.load(checkpoint)
    seeds = [int(s) for s in seeds]
    intact = spec.play(snap, seeds)
    units = {}
    if spec.top_k > 0:
        units = top_detectors(spec, _dissect(spec, snap, probe_obs(snap.adapter, probe), probe))
    ablated = None
    if units:
        with ablate(snap.adapter.model, units):
            ablated = spec.play(snap, seeds)
    keep = ("seeds", "successes", "steps")
    return {
        **{k: list(intact[k]) for k in keep},
        "ablated": None if ablated is None else {k: list(ablated[k]) for k in keep},
    }


def sweep_task(
    spec: SweepSpec, probe: ProbeSet, checkpoint: str, block: int, seeds: Sequence[int]
) -> dict:
    """The one task function of a sweep: the analysis (``block == ANALYSIS``) or an episode
    block of ``checkpoint``."""
    probe = probe.writeable()
    if block == ANALYSIS:
        return analyse(spec, probe, checkpoint)
    return play_block(spec, probe, checkpoint, seeds)
