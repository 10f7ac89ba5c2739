"""``rlviz.trust`` on a Stable-Baselines3 Atari agent: PPO CnnPolicy on ALE Pong (SB3's Atari
wrappers, 4 stacked 84x84 gray frames), trained for as long as ``--minutes`` allows, and the same
architecture untrained, on the trained agent's settings. Prints how well it plays and the table.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/trust_atari.py [--minutes 5] [--frames 48]

The agent is trained, played and scored in this one process (nothing saved: an SB3 zip holds
pickled objects, which rlviz never loads). Pong has no object masks here (see
``rlviz.faithfulness.masks`` for OCAtari boxes), so the ground-truth column is n/a.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))


def pong_venv(seed: int, n_envs: int = 1):
    import ale_py
    import gymnasium as gym
    from stable_baselines3.common.env_util import make_atari_env
    from stable_baselines3.common.vec_env import VecFrameStack, VecTransposeImage

    gym.register_envs(ale_py)
    # frameskip=1: SB3's AtariWrapper does the skipping (4), as on NoFrameskip-v4 ids.
    venv = make_atari_env(
        "ALE/Pong-v5", n_envs=n_envs, seed=seed,
        env_kwargs={"frameskip": 1, "repeat_action_probability": 0.0},
    )  # fmt: skip
    return VecTransposeImage(VecFrameStack(venv, n_stack=4))


def train(minutes: float, seed: int = 0):
    """PPO with CleanRL's Atari settings, stopped after ``minutes``: (model, env steps)."""
    from stable_baselines3 import PPO
    from stable_baselines3.common.callbacks import BaseCallback

    class Deadline(BaseCallback):
        def __init__(self, seconds: float):
            super().__init__()
            self.stop_at = time.perf_counter() + seconds

        def _on_step(self) -> bool:
            return time.perf_counter() < self.stop_at

    model = PPO(
        "CnnPolicy", pong_venv(seed, n_envs=4), n_steps=128, batch_size=256, n_epochs=4,
        learning_rate=2.5e-4, clip_range=0.1, ent_coef=0.01, vf_coef=0.5, seed=seed, device="cpu",
    )  # fmt: skip
    if minutes > 0:
        model.learn(10_000_000, callback=Deadline(60 * minutes))
    return model, int(model.num_timesteps)


def play_returns(adapter, episodes: int, seed: int) -> list[float]:
    """Full games of Pong (to 21) with actions sampled from pi: the score of each."""
    from rlviz.gym_env import OneEnv
    from rlviz.rollout import collect

    env = OneEnv(pong_venv(seed + 100), owns=True)
    try:
        return [float(r.rewards.sum()) for r in collect(env, adapter, episodes, seed=seed + 100)]
    finally:
        env.close()


def main(argv: list[str] | None = None) -> int:
    from trust import table

    import rlviz
    from rlviz import PolicyAdapter
    from rlviz.gym_env import OneEnv

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--frames", type=int, default=48)
    parser.add_argument("--max-steps", type=int, default=400)
    parser.add_argument("--games", type=int, default=2, help="full games played to score it")
    parser.add_argument("--methods", default=None)
    args = parser.parse_args(argv)
    methods = args.methods.split(",") if args.methods else None
    print(time.strftime("%Y-%m-%d %H:%M"), vars(args))
    start = time.perf_counter()
    trained, steps = train(args.minutes)
    print(f"trained {steps} env steps in {time.perf_counter() - start:.0f} s")
    untrained, _ = train(0)
    for label, model in (("SB3 PPO Pong", trained), ("untrained", untrained)):
        adapter = PolicyAdapter.from_sb3(model)
        if args.games:
            scores = play_returns(adapter, args.games, 0)
            print(f"\n{label}: scores over {args.games} full games: {scores} (mean "
                  f"{np.mean(scores):+.1f}; -21 is losing every point)")  # fmt: skip
        env = OneEnv(pong_venv(0), owns=True)
        t = time.perf_counter()
        try:
            report = rlviz.trust(adapter, env, methods, episodes=1, frames=args.frames,
                                 max_steps=args.max_steps, mask_key=None, progress=print)  # fmt: skip
        finally:
            env.close()
        print(f"### {label}: rlviz.trust took {time.perf_counter() - t:.0f} s\n")
        print("\n".join(table(report.to_dict())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
