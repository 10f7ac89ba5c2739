"""Tests for envs/: BoxReach registration, Gymnasium API, ground truth, oracle, headless set-up."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import textwrap

import gymnasium as gym
import numpy as np
import pytest

from rlviz import envs

IDS = list(envs.ENV_IDS)


def _run_python(code: str, env: dict | None = None, timeout: int = 120):
    """Run ``code`` in a fresh interpreter; return the CompletedProcess."""
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
    )


# ----------------------------------------------------------------- registration (fast)
def test_ids_registered_by_string_entry_point():
    for env_id in IDS:
        spec = gym.spec(env_id)
        assert spec.entry_point == "rlviz.envs.boxreach:BoxReachEnv"
        assert spec.max_episode_steps is None  # the env truncates itself
    assert gym.spec("rlviz/BoxReachSingle-v0").kwargs["num_distractors"] == 0
    assert gym.spec("rlviz/BoxReachFast-v0").kwargs["fast"] is True
    assert gym.spec("rlviz/BoxReachRandom-v0").kwargs["domain_rand"] is True
    assert envs.ACTION_NAMES == ("left", "forward", "right")


def test_import_envs_does_not_start_opengl():
    proc = _run_python(
        """
        import sys
        import gymnasium as gym
        from rlviz import envs
        assert "rlviz/BoxReach-v0" in gym.registry
        bad = sorted(m for m in sys.modules if m.split(".")[0] in ("miniworld", "pyglet", "OpenGL"))
        # The env package is rlviz.envs, so rlviz's own import (torch, numpy) comes with it;
        # the simulator, the env module and the trainer must not.
        bad += [m for m in ("rlviz.envs.boxreach", "rlviz.agents") if m in sys.modules]
        print("LOADED", bad)
        assert not bad, bad
        """
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_missing_opengl_raises_install_hint():
    # Simulate a machine without EGL/GL: importing pyglet.gl fails.
    proc = _run_python(
        """
        import sys
        sys.modules["pyglet.gl"] = None
        from rlviz.envs.headless import prepare, HeadlessGLError
        try:
            prepare()
        except HeadlessGLError as e:
            print("MSG", e)
        else:
            raise SystemExit("no error")
        """,
        env={"RLVIZ_SKIP_DYNAMO_PREIMPORT": "1"},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "libegl1" in proc.stdout and "libgl1-mesa-dri" in proc.stdout, proc.stdout


# --------------------------------------------------------------------- MiniWorld (slow)
@pytest.fixture(scope="module")
def gt_env():
    env = gym.make("rlviz/BoxReach-v0", ground_truth=True)
    yield env
    env.close()


@pytest.mark.slow
@pytest.mark.parametrize("ground_truth", [False, True])
def test_check_env(ground_truth):
    from gymnasium.utils.env_checker import check_env

    env = gym.make("rlviz/BoxReach-v0", ground_truth=ground_truth, render_mode="rgb_array")
    try:
        check_env(env.unwrapped, skip_render_check=False)
    finally:
        env.close()


@pytest.mark.slow
@pytest.mark.parametrize("env_id", IDS)
def test_every_id_steps(env_id):
    env = gym.make(env_id)
    try:
        obs, info = env.reset(seed=0)
        assert env.observation_space == gym.spaces.Box(0, 255, (60, 80, 3), np.uint8)
        assert env.action_space == gym.spaces.Discrete(3)
        assert obs.shape == (60, 80, 3) and obs.dtype == np.uint8
        assert info == {"success": False}
        for a in (0, 1, 2, 1):
            obs, reward, terminated, truncated, info = env.step(a)
            assert env.observation_space.contains(obs)
            assert isinstance(reward, float) and isinstance(info["success"], bool)
    finally:
        env.close()


@pytest.mark.slow
def test_observation_size_is_configurable():
    from rlviz.envs.boxreach import BoxReachEnv

    env = BoxReachEnv(obs_height=32, obs_width=48, ground_truth=True)
    try:
        obs, info = env.reset(seed=1)
        assert obs.shape == (32, 48, 3)
        assert info["goal_mask"].shape == (32, 48)
        assert info["distractor_masks"].shape == (3, 32, 48)
    finally:
        env.close()


@pytest.mark.slow
def test_actions_turn_left_move_forward_turn_right():
    env = gym.make("rlviz/BoxReachSingle-v0")
    u = env.unwrapped
    try:
        env.reset(seed=3)
        d0, p0 = u.agent.dir, u.agent.pos.copy()
        env.step(0)
        assert u.agent.dir == pytest.approx(d0 + math.radians(15))
        env.step(2)
        env.step(2)
        assert u.agent.dir == pytest.approx(d0 - math.radians(15))
        # Face the room centre so a forward step is not blocked by a wall.
        c = np.array([u.size / 2, 0, u.size / 2])
        u.agent.dir = math.atan2(-(c[2] - u.agent.pos[2]), c[0] - u.agent.pos[0])
        p0 = u.agent.pos.copy()
        env.step(1)
        assert np.allclose(u.agent.pos - p0, 0.15 * u.agent.dir_vec)
    finally:
        env.close()


@pytest.mark.slow
def test_ground_truth_info_keys_and_types(gt_env):
    obs, info = gt_env.reset(seed=0)
    k = 3
    assert info["goal_mask"].shape == (60, 80) and info["goal_mask"].dtype == bool
    assert info["distractor_masks"].shape == (k, 60, 80) and info["distractor_masks"].dtype == bool
    assert info["box_visible"] == bool(info["goal_mask"].any())
    assert info["agent_pos"].dtype == np.float32 and info["agent_pos"].shape == (2,)
    assert isinstance(info["agent_dir"], float) and -math.pi <= info["agent_dir"] < math.pi
    assert info["box_pos"].dtype == np.float32 and info["box_pos"].shape == (2,)
    assert info["distractor_pos"].shape == (k, 2)
    u = gt_env.unwrapped
    assert np.allclose(info["box_pos"], u.box.pos[[0, 2]])
    _, _, _, _, info2 = gt_env.step(1)
    assert set(info2) == set(info)


@pytest.mark.slow
def test_random_policy_rarely_succeeds():
    env = gym.make("rlviz/BoxReach-v0")
    rng = np.random.default_rng(0)
    wins = 0
    try:
        for ep in range(30):
            env.reset(seed=10_000 + ep)
            while True:
                _, reward, terminated, truncated, info = env.step(int(rng.integers(3)))
                assert (reward > 0) == terminated == info["success"]
                if terminated or truncated:
                    break
            wins += terminated
    finally:
        env.close()
    assert wins / 30 <= 0.30, f"random policy succeeded {wins}/30 times: the task is too easy"


@pytest.mark.slow
def test_same_seed_same_observations():
    # Two envs alive in one process also checks they do not draw each other's rooms.
    a = gym.make("rlviz/BoxReach-v0")
    b = gym.make("rlviz/BoxReach-v0")
    try:
        actions = np.random.default_rng(1).integers(0, 3, 60)
        oa, _ = a.reset(seed=123)
        b.reset(seed=999)
        ob, _ = b.reset(seed=123)
        assert np.array_equal(oa, ob)
        for act in actions:
            oa, ra, ta, tra, _ = a.step(int(act))
            ob, rb, tb, trb, _ = b.step(int(act))
            assert np.array_equal(oa, ob) and (ra, ta, tra) == (rb, tb, trb)
            if ta or tra:
                break
        oc, _ = b.reset(seed=124)
        assert not np.array_equal(a.reset(seed=123)[0], oc)
    finally:
        a.close()
        b.close()


def _render_without(u, ent) -> np.ndarray:
    """Reference: the observation re-rendered with ``ent`` removed (the diff method)."""
    u.entities.remove(ent)
    try:
        u._render_static()
        return u.render_obs()
    finally:
        u.entities.append(ent)
        u._render_static()


@pytest.mark.slow
def test_goal_mask_is_exactly_the_red_box(gt_env):
    u = gt_env.unwrapped
    rng = np.random.default_rng(0)
    visible_frames = 0
    hidden_frames = 0
    extra = total = 0
    for seed in range(6):
        obs, info = gt_env.reset(seed=seed)
        for _ in range(40):
            mask = info["goal_mask"]
            assert info["box_visible"] == bool(mask.any())
            ref = (_render_without(u, u.box) != obs).any(-1)
            # Every pixel the box changes is in the mask; the mask adds at most a few edge pixels
            # where a partly covered pixel rounds to the same colour.
            assert not (ref & ~mask).any()
            extra += int((mask & ~ref).sum())
            total += int(mask.sum())
            if mask.any():
                visible_frames += 1
                px = obs[mask].astype(float).mean(0)
                assert px[0] > px[1] + 40 and px[0] > px[2] + 40, px
            else:
                hidden_frames += 1
            obs, _, term, trunc, info = gt_env.step(int(rng.choice(3, p=[0.6, 0.2, 0.2])))
            if term or trunc:
                break
    assert visible_frames >= 10 and hidden_frames >= 10
    assert extra <= 0.02 * total


@pytest.mark.slow
def test_distractor_masks_match_their_boxes(gt_env):
    u = gt_env.unwrapped
    seen = 0
    for seed in range(20):
        obs, info = gt_env.reset(seed=seed)
        for _ in range(24):  # one full turn
            for k, d in enumerate(u.distractors):
                mask = info["distractor_masks"][k]
                if mask.any():
                    ref = (_render_without(u, d) != obs).any(-1)
                    assert not (ref & ~mask).any()
                    assert (mask & ~ref).sum() <= max(3, 0.05 * mask.sum())
                    seen += 1
            assert not (info["goal_mask"] & info["distractor_masks"].any(0)).any()
            obs, _, _, _, info = gt_env.step(0)
        if seen >= 5:
            break
    assert seen >= 5


@pytest.mark.slow
def test_touching_a_distractor_never_rewards():
    env = gym.make("rlviz/BoxReach-v0")
    u = env.unwrapped
    try:
        for seed in range(50):
            env.reset(seed=seed)
            d = u.distractors[0]
            if np.linalg.norm(d.pos - u.box.pos) < 4:
                continue
            for ang in np.linspace(0, 2 * math.pi, 8, endpoint=False):
                # Stand 0.6 m from the distractor's surface, facing it.
                off = np.array([math.cos(ang), 0, math.sin(ang)])
                pos = d.pos + off * (d.radius + u.agent.radius + 0.6)
                if u.intersect(u.agent, pos, u.agent.radius):
                    continue
                u.agent.pos = pos
                u.agent.dir = math.atan2(off[2], -off[0])  # facing -off
                break
            else:
                continue
            positions = []
            for _ in range(10):
                _, reward, terminated, truncated, info = env.step(1)
                assert reward == 0 and not terminated and not info["success"]
                positions.append(u.agent.pos.copy())
            # The agent walked into the box and is now stuck against it.
            assert np.allclose(positions[-1], positions[-2])
            gap = np.linalg.norm((u.agent.pos - d.pos)[[0, 2]]) - (d.radius + u.agent.radius)
            assert 0 <= gap < 0.15 + 1e-6
            return
        pytest.fail("no seed with a distractor far from the goal")
    finally:
        env.close()


@pytest.mark.slow
@pytest.mark.parametrize(
    "env_id,episodes", [("rlviz/BoxReach-v0", 6), ("rlviz/BoxReachFast-v0", 4)]
)
def test_oracle_reaches_the_red_box(env_id, episodes):
    from rlviz.envs.oracle import OracleAgent

    env = gym.make(env_id)
    agent = OracleAgent()
    try:
        for seed in range(episodes):
            env.reset(seed=seed)
            steps = 0
            while True:
                _, reward, terminated, truncated, info = env.step(agent.act(env))
                steps += 1
                if terminated or truncated:
                    break
            assert terminated and info["success"], f"seed {seed}: oracle failed"
            u = env.unwrapped
            assert reward == pytest.approx(1 - 0.2 * steps / u.max_episode_steps)
    finally:
        env.close()


@pytest.mark.slow
def test_top_down_map(gt_env):
    u = gt_env.unwrapped
    gt_env.reset(seed=5)
    m0 = u.top_down_map(size=(96, 128))
    assert m0.shape == (96, 128, 3) and m0.dtype == np.uint8
    # The red box is drawn where world_to_map puts it.
    c, r = np.round(u.world_to_map(u.box.pos, (96, 128))).astype(int)
    assert m0[r, c, 0] > 200 and m0[r, c, 1] < 60
    for _ in range(3):
        gt_env.step(0)
    for _ in range(8):
        gt_env.step(1)
    m1 = u.top_down_map(size=(96, 128))
    c, r = np.round(u.world_to_map(u.agent.pos, (96, 128))).astype(int)
    assert m1[r, c].max() < 60  # the agent marker (dark) sits on the agent
    assert (m1 != m0).any(axis=-1).sum() > 10  # path and agent moved
    # Same episode, same size -> the static part is cached, not redrawn.
    assert u._static_map((96, 128)) is u._static_map((96, 128))


@pytest.mark.slow
def test_dynamo_after_env_does_not_crash():
    # torch._dynamo imported after a MiniWorld context segfaults (LLVM clash triton/Mesa) unless
    # envs imported it first. This must exit 0.
    proc = _run_python(
        """
        import gymnasium as gym
        from rlviz import envs
        env = gym.make("rlviz/BoxReach-v0")
        env.reset(seed=0)
        env.step(1)
        import torch, torch.optim
        p = torch.nn.Parameter(torch.zeros(3))
        opt = torch.optim.Adam([p], lr=0.1)
        (p * 2).sum().backward()
        opt.step()
        env.step(1)
        print("OK")
        """,
        timeout=240,
    )
    assert proc.returncode == 0 and "OK" in proc.stdout, (proc.returncode, proc.stderr[-2000:])


@pytest.mark.slow
def test_runs_headless_and_quietly():
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    env["RLVIZ_SKIP_DYNAMO_PREIMPORT"] = "1"
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            "import gymnasium as gym, envs\n"
            "e = gym.make('rlviz/BoxReach-v0', ground_truth=True)\n"
            "o, i = e.reset(seed=0)\n"
            "e.step(1)\n"
            "e.close()\n",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "", proc.stdout  # no "Falling back to num_samples=4"


@pytest.mark.slow
def test_goal_distance_shrinks_along_the_oracle_path():
    from rlviz.envs.oracle import OracleAgent, goal_distance

    env = gym.make("rlviz/BoxReach-v0")
    agent = OracleAgent()
    try:
        env.reset(seed=3)
        u = env.unwrapped
        start = goal_distance(env)
        straight = float(np.linalg.norm((u.agent.pos - u.box.pos)[[0, 2]]))
        # walking cost is never less than the straight line to the reach region
        reach = u.box.radius + u.agent.radius + 1.1 * u.params.get_max("forward_step")
        assert 0 < start < np.inf and start >= straight - reach - 0.1
        distances = [start]
        while True:
            _, _, terminated, truncated, _ = env.step(agent.act(env))
            if terminated or truncated:
                break
            distances.append(goal_distance(env))
        assert terminated
        # never rises by more than interpolation noise (cells are 10 cm)
        assert all(b <= a + 0.01 for a, b in zip(distances, distances[1:], strict=False))
        assert distances[-1] < 0.3 * start
    finally:
        env.close()
