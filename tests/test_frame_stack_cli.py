"""Checkpoints trained with ``rlviz train --frame-stack K`` through every command that plays one:
each plays in the K-frame stack (StackFrames) and explains on the stack, never on bare frames.

A tiny untrained K=2 agent (saved, not trained) in the small BoxReach env; episodes cut short.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

ENV_ID = "rlviz/BoxReachSmall-v0"
K = 2


def save_stacked(path: Path, steps: int, seed: int = 0) -> Path:
    """A tiny untrained agent reading ``K`` stacked RGB frames, saved as a checkpoint."""
    import torch

    from rlviz.agents.checkpoint import save_checkpoint
    from rlviz.agents.policy import ActorCritic, Architecture

    torch.manual_seed(seed)
    model = ActorCritic(Architecture(channels=(4, 8, 8), obs_shape=(60, 80, 3 * K), frames=K))
    return save_checkpoint(path, model, {"env_id": ENV_ID, "env_kwargs": {}, "steps": steps})


@pytest.fixture(scope="module")
def stacked(tmp_path_factory) -> Path:
    return save_stacked(tmp_path_factory.mktemp("stacked") / "agent.safetensors", 1000)


def cli(*argv) -> int:
    from rlviz.cli import main

    return main([str(a) for a in argv])


def test_policy_env_plays_in_the_checkpoint_frame_stack(stacked):
    from rlviz.cli.common import load_policy, policy_env

    policy = load_policy(stacked)
    env = policy_env(policy)
    try:
        obs, info = env.reset(seed=0)
        assert obs.shape == (60, 80, 3 * K)
        assert info["goal_mask"].shape == (60, 80)  # ground truth on, as make_env gives it
        np.testing.assert_array_equal(obs[..., :3], obs[..., 3:])  # reset pads with frame 0
    finally:
        env.close()
    env = policy_env(policy, ground_truth=False)  # overrides win
    try:
        assert "goal_mask" not in env.reset(seed=0)[1]
    finally:
        env.close()


def test_video_of_a_stacked_policy(stacked, tmp_path):
    out = tmp_path / "video"
    argv = ["video", "--checkpoint", stacked, "--out", out, "--episodes", 1, "--max-steps", 8]
    assert cli(*argv, "--methods", "gradient", "--embedding", "none", "--no-progress") == 0
    assert list(out.glob("*.mp4"))


def test_explore_of_a_stacked_policy(stacked, tmp_path):
    out = tmp_path / "explore"
    argv = ["explore", "--checkpoint", stacked, "--out", out, "--episodes", 1, "--max-steps", 8]
    argv += ["--methods", "gradient", "--map", "none", "--nmf-features", 0, "--units", 0]
    assert cli(*argv, "--optvis-steps", 0, "--no-progress") == 0
    assert (out / "data" / "episode_0.js").exists()


def test_tsne_of_a_stacked_policy(stacked, tmp_path):
    out = tmp_path / "tsne"
    argv = ["tsne", "--checkpoint", stacked, "--out", out, "--episodes", 2, "--max-steps", 8]
    assert cli(*argv, "--method", "pca", "--color", "value", "--mosaic-cols", 0) == 0
    with np.load(out / "dataset.npz", allow_pickle=False) as data:
        assert data["obs"].shape == (16, 60, 80, 3 * K)  # the states the policy read
        assert data["info.box_visible"].shape == (16,)  # ground truth on in the stacked env


def test_topk_of_a_stacked_policy(stacked, tmp_path):
    from rlviz.cli.features import topk_main

    argv = ["--checkpoint", stacked, "--out", tmp_path, "--max-steps", 8, "--no-progress"]
    assert topk_main([str(a) for a in [*argv, "--episodes", 1, "--k", 2, "--units", 0]]) == 0


def test_probe_stacks_are_what_stack_frames_shows_the_policy():
    # The probe's K-frame stacks, built from its episode's bare frames, equal the observations
    # StackFrames returns at those steps (the first frame repeated before the episode began).
    from helpers import SquareEnv, TinyCNN

    from rlviz import ObservationLayout, PolicyAdapter
    from rlviz.envs.wrappers import StackFrames
    from rlviz.sweep import ProbeSet
    from rlviz.sweep.tasks import probe_obs

    k = 3
    env = StackFrames(SquareEnv(), k)
    stack, _ = env.reset(seed=1)
    stacks, frames, masks = [stack], [env.unwrapped.render()], [env.unwrapped._info(False)]
    for action in (0, 1, 2, 1, 0):
        stack, *_, info = env.step(action)
        stacks.append(stack)
        frames.append(env.unwrapped.render())
        masks.append(info)
    pick = [0, 1, 5]
    probe = ProbeSet(
        np.stack(frames)[pick],
        np.stack([m["goal_mask"] for m in masks])[pick],
        history=(np.stack(frames),),
        origin=np.array([[0, t] for t in pick]),
    )
    adapter = PolicyAdapter(TinyCNN(), layout=ObservationLayout(frames=k, channels=3))
    np.testing.assert_array_equal(probe_obs(adapter, probe), np.stack(stacks)[pick])
    assert probe_obs(PolicyAdapter(TinyCNN()), probe) is probe.obs  # one frame: as it is
    with pytest.raises(ValueError, match="keep_history=True"):
        probe_obs(adapter, ProbeSet(probe.obs, probe.masks))


def test_sweep_over_stacked_snapshots(tmp_path):
    from rlviz.cli.sweep import PROBE_SEED_START, main
    from rlviz.cli.sweep_tasks import load_snapshot, oracle_probe
    from rlviz.memory import memory_reliance
    from rlviz.metrics import mass_in_mask
    from rlviz.sweep.tasks import newest_frame_maps, probe_obs

    a = save_stacked(tmp_path / "a.safetensors", 1000, seed=0)
    b = save_stacked(tmp_path / "b.safetensors", 2000, seed=1)
    out = tmp_path / "sweep"
    argv = ["--checkpoints", a, b, "--episodes", 2, "--block-size", 1, "--max-steps", 8]
    argv += ["--probe-frames", 4, "--probe-episodes", 1, "--top-k", 1, "--iou-threshold", 0]
    argv += ["--methods", "gradient", "gradcam", "--out", out, "--no-progress"]
    assert main([str(x) for x in argv]) == 0
    report = json.loads((out / "sweep.json").read_text())
    rows = report["rows"]
    assert [r["steps"] for r in rows] == [1000, 2000]
    assert all(r["episodes"] == 2 and r["success_rate"] is not None for r in rows)
    assert rows[0]["drift_gradient"] is None and rows[1]["drift_gradient"] is not None
    assert all(r["detectors_total"] >= 1 for r in rows)  # IoU > 0 counts: units were scored
    # Memory reliance was measured on the 3K-channel stacks of the oracle's probe episode.
    probe = oracle_probe(ENV_ID, {}, (PROBE_SEED_START,), 4, max_steps=8, keep_history=True)
    adapter = load_snapshot(str(a)).adapter
    stacks = probe_obs(adapter, probe)
    assert stacks.shape == (4, 60, 80, 3 * K)
    assert rows[0]["memory_kl"] == pytest.approx(float(memory_reliance(adapter, stacks).kl.mean()))
    # Faithfulness is of the newest frame's map, against that frame's goal box.
    seen = probe.visible
    newest = newest_frame_maps(adapter, stacks, ["gradient"])["gradient"]
    assert newest.shape == (4, 60, 80) and seen.any()
    mass = mass_in_mask(newest[seen], probe.masks[seen]).mean()
    assert rows[0]["mass_gradient"] == pytest.approx(float(mass))
