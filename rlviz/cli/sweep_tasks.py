"""The env- and agent-side pieces the sweep engine is handed: picklable functions that load a
checkpoint, play held-out seeds and make the probe frames.

Module-level functions (bound with :func:`functools.partial`) so Ray ships them by reference;
each imports ``envs`` / ``agents`` inside, after the worker set-up (:data:`WORKER_SETUP`) has made
MiniWorld safe to import in that process.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np

from rlviz.cli.workers import WORKER_SETUP
from rlviz.sweep import ProbeSet, Snapshot, SweepSpec


def load_snapshot(path: str, device: str = "cpu") -> Snapshot:
    """Checkpoint ``path`` as a :class:`~rlviz.sweep.Snapshot` (on ``device``, eval mode)."""
    from torch import nn

    from rlviz.agents.checkpoint import load_checkpoint
    from rlviz.agents.policy import make_adapter
    from rlviz.hooks import list_layers

    model, config = load_checkpoint(path, device=device)
    layers = getattr(model, "conv_layers", None) or list_layers(model, nn.Conv2d)
    return Snapshot(make_adapter(model), int(config.get("steps", 0)), tuple(layers), config)


def frame_stack(config: dict) -> int:
    """K, the frames a checkpoint's policy reads per observation (``architecture.frames`` of its
    config; 1: one frame)."""
    return int((config.get("architecture") or {}).get("frames", 1))


def play(
    snapshot: Snapshot,
    seeds: Sequence[int],
    *,
    env_id: str | None = None,
    env_kwargs: dict | None = None,
    deterministic: bool = False,
    max_steps: int | None = None,
) -> dict:
    """``agents.evaluate.evaluate`` of the snapshot's model on ``seeds`` in its env (or the one
    given, see ``agents.checkpoint.checkpoint_env``), in the model's frame stack."""
    from rlviz.agents.checkpoint import checkpoint_env
    from rlviz.agents.evaluate import evaluate

    env_id, env_kwargs = checkpoint_env(snapshot.config, env_id, env_kwargs)
    return evaluate(
        snapshot.adapter.model,
        env_id,
        seeds,
        deterministic=deterministic,
        env_kwargs=env_kwargs,
        max_steps=max_steps,
    )


def oracle_probe(
    env_id: str,
    env_kwargs: dict | None,
    seeds: Sequence[int],
    frames: int,
    explore: float = 0.25,
    max_steps: int | None = None,
    keep_history: bool = False,
) -> ProbeSet:
    """``frames`` probe frames with goal masks, evenly spaced over the scripted oracle's episodes
    on ``seeds`` (a share ``explore`` of its actions random, seeded, so the box is also seen from
    afar, at the edge and not at all). Independent of every checkpoint: the same for all.
    ``keep_history``: also keep every frame of the episodes (a recurrent policy's memory, the
    past frames of a frame stack: :func:`rlviz.sweep.tasks.probe_obs`)."""
    from rlviz.agents.vecenv import make_env
    from rlviz.envs.oracle import oracle_action

    env = make_env(env_id, {**(env_kwargs or {}), "ground_truth": True})
    obs, masks, origin = [], [], []
    try:
        for episode, seed in enumerate(seeds):
            rng = np.random.default_rng(int(seed))
            frame, info = env.reset(seed=int(seed))
            for step in range(max_steps or 10**9):
                obs.append(frame)
                origin.append((episode, step))
                masks.append(np.asarray(info["goal_mask"], dtype=bool))
                explore_now = rng.random() < explore
                action = int(rng.integers(3)) if explore_now else oracle_action(env)
                frame, _, term, trunc, info = env.step(action)
                if term or trunc:
                    break
    finally:
        env.close()
    pick = np.unique(np.linspace(0, len(obs) - 1, min(frames, len(obs))).round().astype(int))
    history: tuple[np.ndarray, ...] = ()
    if keep_history:
        ends = np.cumsum(np.bincount([e for e, _ in origin], minlength=len(seeds)))
        history = tuple(np.split(np.stack(obs), ends[:-1]))
    return ProbeSet(
        np.stack(obs)[pick],
        np.stack(masks)[pick],
        tuple(int(s) for s in seeds),
        history=history,
        origin=np.asarray(origin, dtype=np.int64)[pick] if keep_history else None,
    )


def build_spec(
    *,
    env_id: str,
    env_kwargs: dict | None,
    probe_seeds: Sequence[int],
    probe_frames: int,
    methods: Sequence[str],
    top_k: int,
    iou_threshold: float,
    deterministic: bool,
    max_steps: int | None,
    env_override: bool = False,
    keep_history: bool = False,
    device: str = "cpu",
) -> SweepSpec:
    """The :class:`~rlviz.sweep.SweepSpec` of ``rlviz sweep``: our loader, evaluate, oracle probe.

    ``env_override``: play every snapshot in ``env_id`` instead of the env it trained in.
    ``keep_history``: the probe set keeps its episodes' frames, which a snapshot with memory
    needs (see :func:`frame_stack`). ``device``: where each snapshot's network runs.
    """
    return SweepSpec(
        load=functools.partial(load_snapshot, device=device),
        play=functools.partial(
            play,
            env_id=env_id if env_override else None,
            env_kwargs=env_kwargs if env_override else None,
            deterministic=deterministic,
            max_steps=max_steps,
        ),
        make_probe=functools.partial(
            oracle_probe,
            env_id,
            env_kwargs,
            tuple(probe_seeds),
            probe_frames,
            max_steps=max_steps,
            keep_history=keep_history,
        ),
        methods=tuple(methods),
        top_k=top_k,
        iou_threshold=iou_threshold,
        setup=WORKER_SETUP,
    )
