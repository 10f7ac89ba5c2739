"""The camera limit (envs.oracle.CameraLimitedOracle): turns one way until the red box shows in
the image, then acts as the oracle; `rlviz evaluate --oracle` reports it beside the oracle."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "agents" / "checkpoints" / "boxreach.safetensors"


@pytest.mark.slow
def test_camera_limit_turns_until_the_box_shows_then_follows_the_oracle():
    from rlviz.agents.vecenv import make_env
    from rlviz.envs.oracle import CameraLimitedOracle, oracle_action

    env = make_env("rlviz/BoxReachSmall-v0", {"ground_truth": True})
    try:
        checked_hidden = checked_seen = 0
        for seed in range(6):
            policy = CameraLimitedOracle(turn="left")
            _, info = env.reset(seed=seed)
            seen = bool(info["box_visible"])
            for _ in range(100):
                expected = oracle_action(env) if seen else 0  # 0: turn left
                action = policy.act(env, info)
                assert action == expected
                checked_seen += seen
                checked_hidden += not seen
                _, _, term, trunc, info = env.step(action)
                seen = seen or bool(info["box_visible"])
                if term or trunc:
                    break
        assert checked_hidden > 0 and checked_seen > 0  # both phases were exercised
    finally:
        env.close()


def test_camera_limit_refuses_an_env_without_ground_truth():
    from rlviz.envs.oracle import CameraLimitedOracle

    with pytest.raises(ValueError, match="ground_truth=True"):
        CameraLimitedOracle().act(None, {"success": False})
    with pytest.raises(ValueError, match="'left' or 'right'"):
        CameraLimitedOracle(turn="up")


@pytest.mark.slow
def test_evaluate_oracle_reports_the_camera_limit_between_oracle_and_agent(tmp_path):
    out = tmp_path / "eval.json"
    result = subprocess.run(
        [sys.executable, "-m", "rlviz", "evaluate", "--checkpoint", str(SHIPPED),
         "--env", "rlviz/BoxReachSmall-v0", "--episodes", "4", "--oracle", "--json", str(out)],
        capture_output=True, text=True, timeout=600, cwd=ROOT,
    )
    if result.returncode != 0 and "observations" in result.stderr:
        pytest.fail(result.stderr)
    assert result.returncode == 0, result.stderr
    assert "camera limit (right)" in result.stdout and "steps / camera limit" in result.stdout
    data = json.loads(out.read_text())
    oracle = data["oracle"]
    for turn in ("left", "right"):
        camera = oracle["camera"][turn]
        assert camera["seeds"] == oracle["seeds"]
        # Knowing less than the oracle never makes an episode shorter on average.
        assert camera["mean_steps"] >= oracle["mean_steps"] - 1e-9


@pytest.mark.slow
def test_progress_turns_rewards_turning_the_short_way_and_telescopes():
    from rlviz.agents.vecenv import RewardShaping, make_env
    from rlviz.envs.oracle import _heading_error, steps_to_go

    env = make_env("rlviz/BoxReachSmall-v0")
    try:
        obs, _ = env.reset(seed=4)
        shaping = RewardShaping(env, 0.0, 0.3, 1, progress_turns=True)
        shaping.reset(obs)
        start = steps_to_go(env)
        # Turning toward the oracle's heading is progress; turning away costs the same.
        toward = 0 if _heading_error(env) > 0 else 2
        away = 2 - toward
        obs, reward, term, _, _ = env.step(toward)
        gained, _ = shaping.step(obs, reward, term)
        obs, reward, term, _, _ = env.step(away)
        lost, _ = shaping.step(obs, reward, term)
        assert gained > 0 > lost
        assert gained == pytest.approx(-lost, rel=1e-6)
        # Potential-based: the shaping of any path is the potential's drop (gamma = 1).
        step = float(env.unwrapped.params.sample(None, "forward_step"))
        total = gained + lost
        for action in (1, 1, 0, 1, 2, 1):
            obs, reward, term, _, _ = env.step(action)
            total += shaping.step(obs, reward, term)[0] - float(reward)
            if term:
                break
        assert total == pytest.approx(0.3 * step * (start - steps_to_go(env)), abs=1e-6)
    finally:
        env.close()
