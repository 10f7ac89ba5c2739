"""Success rate of a uniformly random policy and of the scripted oracle on BoxReach tasks.

Usage: OMP_NUM_THREADS=1 .venv/bin/python benchmarks/random_policy.py [--episodes 200] [--ids ...]

Episode i of every policy uses seed i (same layouts for both); the random policy's actions come
from numpy's default_rng(0). The oracle (envs.oracle.OracleAgent) is the yardstick for learned
policies: report a policy's mean steps to success next to the oracle's.
"""

from __future__ import annotations

import argparse
import time

import gymnasium as gym
import numpy as np

from rlviz import envs
from rlviz.envs.oracle import OracleAgent


def evaluate(env: gym.Env, policy, episodes: int) -> dict:
    """Run ``episodes`` seeded episodes; returns success rate, mean return, steps statistics."""
    wins, returns, steps_ok = 0, [], []
    for ep in range(episodes):
        env.reset(seed=ep)
        total, n = 0.0, 0
        while True:
            _, reward, terminated, truncated, _ = env.step(policy(env))
            total += reward
            n += 1
            if terminated or truncated:
                break
        wins += terminated
        returns.append(total)
        if terminated:
            steps_ok.append(n)
    return {
        "success": wins / episodes,
        "return": float(np.mean(returns)),
        "steps": float(np.mean(steps_ok)) if steps_ok else float("nan"),
        "median_steps": float(np.median(steps_ok)) if steps_ok else float("nan"),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--episodes", type=int, default=200)
    ap.add_argument("--ids", nargs="*", default=list(envs.ENV_IDS))
    args = ap.parse_args()

    print(
        f"{'env id':28s} {'policy':7s} {'success':>8s} {'return':>7s} "
        f"{'mean steps (successes)':>23s} {'median':>7s} {'T':>4s} {'time s':>7s}"
    )
    for env_id in args.ids:
        env = gym.make(env_id)
        rng = np.random.default_rng(0)

        def random_policy(_env, rng=rng) -> int:
            return int(rng.integers(3))

        policies = {"random": random_policy, "oracle": OracleAgent().act}
        for name, policy in policies.items():
            t0 = time.perf_counter()
            r = evaluate(env, policy, args.episodes)
            print(
                f"{env_id:28s} {name:7s} {r['success']:8.1%} {r['return']:7.3f} "
                f"{r['steps']:23.1f} {r['median_steps']:7.0f} "
                f"{env.unwrapped.max_episode_steps:4d} {time.perf_counter() - t0:7.1f}",
                flush=True,
            )
        env.close()
    print(f"{args.episodes} episodes each, seeds 0..{args.episodes - 1}")


if __name__ == "__main__":
    main()
