"""Environment throughput: BoxReach vs raw MiniWorld, one env and an AsyncVectorEnv of two.

Usage: OMP_NUM_THREADS=1 .venv/bin/python benchmarks/env_throughput.py [--steps 3000] [--rounds 3]

Random actions, reset on done. Configurations are interleaved round by round and the median
round is reported, so a neighbour's load on a shared CPU hits all of them alike.
Targets (issue 2): BoxReach >= 95% of raw MiniWorld-OneRoomS6-v0, with ground truth >= 70%.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import gymnasium as gym
import numpy as np

from rlviz import envs  # noqa: F401  (registers rlviz/* ids; no OpenGL yet)

CONFIGS = {
    "MiniWorld-OneRoomS6-v0 (raw)": ("MiniWorld-OneRoomS6-v0", {}),
    "rlviz/BoxReach-v0": ("rlviz/BoxReach-v0", {}),
    "rlviz/BoxReach-v0 ground_truth": ("rlviz/BoxReach-v0", {"ground_truth": True}),
}


def make_env(env_id: str, kwargs: dict, worker: bool = False) -> gym.Env:
    """Create an env through envs.headless (raw MiniWorld ids too), without MiniWorld's prints."""
    if worker:  # vector workers never import torch: skip the ~2 s torch._dynamo pre-import
        os.environ.setdefault("RLVIZ_SKIP_DYNAMO_PREIMPORT", "1")
    from rlviz.envs.headless import prepare, quiet

    prepare()
    with quiet():
        return gym.make(env_id, **kwargs)


class _Factory:
    """Picklable env factory for AsyncVectorEnv (spawned workers)."""

    def __init__(self, env_id: str, kwargs: dict):
        self.env_id, self.kwargs = env_id, kwargs

    def __call__(self) -> gym.Env:
        return make_env(self.env_id, self.kwargs, worker=True)


def run_single(env: gym.Env, steps: int, seed: int) -> float:
    """Steps per second of ``steps`` random actions (reset on done)."""
    actions = np.random.default_rng(seed).integers(0, 3, steps)
    env.reset(seed=seed)
    t0 = time.perf_counter()
    for a in actions:
        _, _, terminated, truncated, _ = env.step(int(a))
        if terminated or truncated:
            env.reset()
    return steps / (time.perf_counter() - t0)


def run_vector(venv: gym.vector.VectorEnv, steps: int, seed: int) -> float:
    """Total env steps per second for ``steps`` vector steps (workers auto-reset)."""
    n = venv.num_envs
    actions = np.random.default_rng(seed).integers(0, 3, (steps, n))
    venv.reset(seed=seed)
    t0 = time.perf_counter()
    for a in actions:
        venv.step(a)
    return steps * n / (time.perf_counter() - t0)


def interleaved(made: dict, run, warmup: int, steps: int, rounds: int) -> dict[str, list[float]]:
    """Steps per second of each env in ``made`` (name -> env): ``rounds`` rounds of
    ``run(env, steps, seed=round)`` taking turns, so machine noise hits every configuration
    alike, after one ``warmup`` run each (textures, display lists); the envs are closed after."""
    for env in made.values():
        run(env, warmup, seed=0)
    rates = {name: [] for name in made}
    for r in range(rounds):
        for name, env in made.items():
            rates[name].append(run(env, steps, seed=r))
    for env in made.values():
        env.close()
    return rates


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=3000, help="env steps per round, single env")
    ap.add_argument("--vec-steps", type=int, default=1500, help="vector steps per round")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds; median reported")
    ap.add_argument("--num-envs", type=int, default=2, help="AsyncVectorEnv size")
    args = ap.parse_args()

    print(
        f"python {platform.python_version()}, {os.cpu_count()} CPUs, "
        f"LP_NUM_THREADS={os.environ.get('LP_NUM_THREADS', '(set to 0 by envs)')}"
    )
    singles = {name: make_env(env_id, kw) for name, (env_id, kw) in CONFIGS.items()}
    single = interleaved(singles, run_single, 200, args.steps, args.rounds)
    vectors = {
        name: gym.vector.AsyncVectorEnv(
            [_Factory(env_id, kw) for _ in range(args.num_envs)], context="spawn"
        )
        for name, (env_id, kw) in CONFIGS.items()
    }
    vector = interleaved(vectors, run_vector, 100, args.vec_steps, args.rounds)

    raw = next(iter(CONFIGS))
    s_raw = statistics.median(single[raw])
    v_raw = statistics.median(vector[raw])
    header = f"{'configuration':34s} {'1 env steps/s':>14s} {'vs raw':>7s} {'ms/step':>8s}"
    header += f" {f'Async x{args.num_envs} steps/s':>19s} {'vs raw':>7s}"
    print(header)
    for name in CONFIGS:
        s = statistics.median(single[name])
        v = statistics.median(vector[name])
        print(f"{name:34s} {s:14.0f} {s / s_raw:7.0%} {1e3 / s:8.3f} {v:19.0f} {v / v_raw:7.0%}")
    gt, plain = "rlviz/BoxReach-v0 ground_truth", "rlviz/BoxReach-v0"
    cost = 1e3 / statistics.median(single[gt]) - 1e3 / statistics.median(single[plain])
    print(f"ground_truth cost per step (1 env): {cost:.3f} ms")
    print(
        f"rounds: single {args.rounds} x {args.steps} steps, vector {args.rounds} x "
        f"{args.vec_steps} x {args.num_envs} steps; all single rounds: "
        + ", ".join(
            f"{n.split()[0]}{'+gt' if 'ground' in n else ''}="
            f"{'/'.join(f'{x:.0f}' for x in single[n])}"
            for n in CONFIGS
        )
    )


if __name__ == "__main__":
    main()
