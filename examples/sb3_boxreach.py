"""Train Stable-Baselines3 PPO on BoxReach for a while, then render an explanation video of it.

    python examples/sb3_boxreach.py --steps 20000 --out videos/examples/sb3.mp4

rlviz needs nothing from SB3 but the trained policy: ``PolicyAdapter.from_sb3`` reads its logits
(action distribution) and value (critic) with SB3's own preprocessing.
"""

from __future__ import annotations

import argparse

import gymnasium as gym

import rlviz
from rlviz import envs  # registers rlviz/BoxReach-* and prepares headless rendering


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="rlviz/BoxReachSmall-v0", help="Gymnasium id to train and explain on")
    parser.add_argument("--steps", type=int, default=20_000, help="PPO training steps")
    parser.add_argument("--max-steps", type=int, default=None, help="cap on the explained episode's length")
    parser.add_argument("--out", default="videos/examples/sb3.mp4", help="output video path")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    from stable_baselines3 import PPO

    model = PPO("CnnPolicy", gym.make(args.env), n_steps=128, batch_size=64, n_epochs=4, seed=args.seed, device="cpu", verbose=0)
    model.learn(total_timesteps=args.steps)

    policy = rlviz.PolicyAdapter.from_sb3(model, action_names=envs.ACTION_NAMES)
    summary = rlviz.render_video(
        gym.make(args.env, ground_truth=True),
        policy,
        out=args.out,
        methods=["gradient", "gradcam"],
        layer="features_extractor.cnn.4",  # the last ReLU'd conv map of SB3's NatureCNN
        seed=args.seed,
        max_steps=args.max_steps,
        agent_name=f"SB3 PPO ({args.steps} steps)",
    )
    print(summary)


if __name__ == "__main__":
    main()
