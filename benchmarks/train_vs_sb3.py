"""Our PPO trainer vs Stable-Baselines3 PPO (CnnPolicy) on the same env, machine and run.

Prints, for each: training env steps/s, and wall time and env steps until a snapshot of the policy
reaches 50%, 70% and 90% success on held-out seeds (>= 1e6, never used in training), with an
honest "> budget" where it never did. Also prints the raw env
steps/s (one env, one process, random actions) measured in the same run, so throughput can be read
as a fraction of what the simulator allows.

Snapshots are taken during training (ours: ``--snapshot-every``; SB3: a callback copying the policy
weights) and evaluated after training, so evaluation never slows either trainer down; "wall time
to 90%" is the training wall time at the first snapshot that reaches 90%. Each trainer stops at
``--budget`` env steps or ``--max-seconds`` of training, whichever comes first.

With memory, like for like: ``--frame-stack K`` gives ours K stacked frames and SB3 a
``VecFrameStack`` of the same K (the same [H, W, 3K] layout, oldest first); ``--stuck-penalty`` and
``--progress-reward`` give both trainers the same shaped reward (SB3 through :class:`ShapedReward`,
the shaping our env workers apply).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/train_vs_sb3.py     # default env
    .venv/bin/python benchmarks/train_vs_sb3.py --budget 100000 --skip-sb3
    .venv/bin/python benchmarks/train_vs_sb3.py --frame-stack 2 --progress-reward 0.3 \
        --stuck-penalty 0.1 --heads gap
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import gymnasium as gym  # noqa: E402

from rlviz.agents.evaluate import evaluate, held_out_seeds  # noqa: E402
from rlviz.agents.vecenv import RewardShaping, make_env  # noqa: E402


class ShapedReward(gym.Wrapper):
    """The reward our trainer learns from (:class:`agents.vecenv.RewardShaping`), for SB3.

    Wraps the single-frame env, before SB3 stacks frames, so the stuck test sees one frame.
    """

    def __init__(self, env: gym.Env, stuck_penalty: float, progress_reward: float) -> None:
        super().__init__(env)
        self.shaping = RewardShaping(env, stuck_penalty, progress_reward)

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        self.shaping.reset(obs)
        return obs, info

    def step(self, action):
        obs, reward, term, trunc, info = self.env.step(action)
        shaped, _ = self.shaping.step(obs, reward, term or trunc)
        return obs, shaped, term, trunc, info


def raw_env_sps(env_id: str, env_kwargs: dict, seconds: float) -> float:
    """Env steps/s of one env in this process with random actions."""
    env = make_env(env_id, env_kwargs)
    rng = np.random.default_rng(0)
    env.reset(seed=0)
    for _ in range(50):  # warm up (textures, display lists)
        _, _, term, trunc, _ = env.step(int(rng.integers(3)))
        if term or trunc:
            env.reset()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        _, _, term, trunc, _ = env.step(int(rng.integers(3)))
        n += 1
        if term or trunc:
            env.reset()
    sps = n / (time.perf_counter() - t0)
    env.close()
    return sps


def held_out_curve(snapshots, make_model, env_id, env_kwargs, seeds, log) -> list[dict]:
    """Held-out success of every snapshot, in step order: [{steps, time_s, success_rate, mean_steps}]."""
    curve = []
    for snap in snapshots:
        result = evaluate(make_model(snap), env_id, seeds, env_kwargs=env_kwargs)
        curve.append(
            {
                "steps": snap["steps"],
                "time_s": snap["time_s"],
                "success_rate": result["success_rate"],
                "mean_steps": result["mean_steps"],
            }
        )
        log(
            f"    step {snap['steps']:>7}  t {snap['time_s']:7.1f} s  held-out success {result['success_rate']:.2f}  "
            f"mean steps {result['mean_steps']:.0f}"
        )
    return curve


def first_reaching(curve: list[dict], target: float) -> dict | None:
    """The first point of ``curve`` with success >= ``target``, or None."""
    return next((p for p in curve if p["success_rate"] >= target), None)


def run_ours(args, head: str, env_kwargs, workdir: Path, log) -> dict:
    from rlviz.agents.checkpoint import load_checkpoint, read_config
    from rlviz.agents.train import Config, train

    settings = dict(
        env_id=args.env_id,
        env_kwargs=env_kwargs,
        total_steps=args.budget,
        seed=args.seed,
        runs_dir=str(workdir),
        run_name=f"ours_{head}",
        snapshot_every=args.snapshot_every,
        checkpoint_every=10**12,
        progress=False,
        head=head,
        frame_stack=args.frame_stack,
        stuck_penalty=args.stuck_penalty,
        progress_reward=args.progress_reward,
    )
    settings.update(json.loads(args.ours_config))
    cfg = Config(**settings)
    summary = train(
        cfg,
        command="benchmarks/train_vs_sb3.py",
        callback=lambda row: row["time_s"] < args.max_seconds,  # False stops training
    )
    snaps = []
    for path in sorted((workdir / f"ours_{head}" / "snapshots").glob("step_*.safetensors")):
        c = read_config(path)
        snaps.append({"steps": int(c["steps"]), "time_s": float(c["time_s"]), "path": str(path)})
    log(
        f"  ours: {summary['steps']} steps in {summary['time_s']:.1f} s = {summary['sps']:.0f} env steps/s"
    )
    curve = held_out_curve(
        snaps, lambda s: load_checkpoint(s["path"])[0], args.env_id, env_kwargs, args.seeds, log
    )
    return {
        "sps": summary["sps"],
        "time_s": summary["time_s"],
        "steps": summary["steps"],
        "curve": curve,
    }


class SB3Model(nn.Module):
    """An SB3 ActorCriticPolicy behind our model interface (float [B,3,H,W] in [0,1] -> logits, value)."""

    def __init__(self, policy, obs_shape, n_actions, frames: int = 1) -> None:
        super().__init__()
        self.sb3 = policy
        # What agents.evaluate reads: the observation shape and the frames to stack.
        self.arch = SimpleNamespace(obs_shape=tuple(obs_shape), frames=int(frames))
        from rlviz.agents.policy import ACTION_NAMES

        self.action_names = ACTION_NAMES if n_actions == 3 else tuple(range(n_actions))

    def forward(self, x):
        obs = x * 255.0  # SB3 divides image observations by 255 itself
        dist = self.sb3.get_distribution(obs)
        return dist.distribution.logits, self.sb3.predict_values(obs).squeeze(-1)


def run_sb3(args, env_kwargs, log) -> dict:
    from stable_baselines3 import PPO
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import VecFrameStack

    def make():
        return ShapedReward(
            make_env(args.env_id, env_kwargs), args.stuck_penalty, args.progress_reward
        )

    vec = make_vec_env(make, n_envs=4, seed=args.seed)
    if args.frame_stack > 1:
        vec = VecFrameStack(vec, args.frame_stack, channels_order="last")
    model = PPO("CnnPolicy", vec, n_steps=128, seed=args.seed, verbose=0, device="cpu")
    snaps: list[dict] = []

    class Snapshot(BaseCallback):
        def _on_training_start(self) -> None:
            self.t0 = time.perf_counter()
            self.next = args.snapshot_every

        def _on_step(self) -> bool:
            if self.num_timesteps >= self.next:
                self.next += args.snapshot_every
                state = {k: v.detach().clone() for k, v in self.model.policy.state_dict().items()}
                snaps.append(
                    {
                        "steps": self.num_timesteps,
                        "time_s": time.perf_counter() - self.t0,
                        "state": state,
                    }
                )
            # the same wall-clock cap as ours
            return time.perf_counter() - self.t0 < args.max_seconds

    cb = Snapshot()
    t0 = time.perf_counter()
    model.learn(total_timesteps=args.budget, callback=cb)
    total = time.perf_counter() - t0
    sps = model.num_timesteps / total
    log(f"  sb3:  {model.num_timesteps} steps in {total:.1f} s = {sps:.0f} env steps/s")
    obs_shape = vec.observation_space.shape  # [H, W, C] before SB3's transpose
    vec.close()

    def make_model(snap):
        model.policy.load_state_dict(snap["state"])
        return SB3Model(model.policy, obs_shape, 3, frames=args.frame_stack).eval()

    curve = held_out_curve(snaps, make_model, args.env_id, env_kwargs, args.seeds, log)
    return {"sps": sps, "time_s": total, "steps": int(model.num_timesteps), "curve": curve}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--env-id", default="rlviz/BoxReach-v0")
    p.add_argument("--env-kwargs", default="{}", help="JSON")
    p.add_argument("--budget", type=int, default=300_000, help="env steps per trainer (cap)")
    p.add_argument(
        "--max-seconds", type=float, default=3600, help="training wall time per trainer (cap)"
    )
    p.add_argument("--snapshot-every", type=int, default=20_480)
    p.add_argument("--eval-episodes", type=int, default=50)
    p.add_argument("--target", type=float, default=0.9)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--heads", default="gap,mlp", help="train ours once per head (comma-separated)")
    p.add_argument(
        "--ours-config",
        default="{}",
        help="JSON overrides of agents.train.Config, e.g. '{\"update_epochs\": 4}'",
    )
    p.add_argument(
        "--frame-stack", type=int, default=1, help="K frames for both (SB3: VecFrameStack)"
    )
    p.add_argument("--stuck-penalty", type=float, default=0.01, help="both trainers' reward")
    p.add_argument("--progress-reward", type=float, default=0.0, help="both trainers' reward")
    p.add_argument("--raw-seconds", type=float, default=20.0)
    p.add_argument("--skip-sb3", action="store_true")
    p.add_argument("--skip-ours", action="store_true")
    p.add_argument("--json", default=None, help="also write the results here")
    args = p.parse_args(argv)
    env_kwargs = json.loads(args.env_kwargs)
    args.seeds = held_out_seeds(args.eval_episodes)

    def log(msg: str) -> None:
        print(msg, flush=True)

    log(
        f"{time.strftime('%Y-%m-%d %H:%M:%S')}  {args.env_id} {env_kwargs}  budget {args.budget} steps or {args.max_seconds:.0f} s, "
        f"snapshots every {args.snapshot_every}, {args.eval_episodes} held-out episodes per snapshot, "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}"
    )
    raw = raw_env_sps(args.env_id, env_kwargs, args.raw_seconds)
    log(f"raw env: {raw:.0f} steps/s (1 env, 1 process, random actions)")
    results: dict = {
        "raw_env_sps": raw,
        "args": {k: v for k, v in vars(args).items() if k != "seeds"},
    }
    with tempfile.TemporaryDirectory(prefix="rlviz-bench-") as tmp:
        if not args.skip_ours:
            for head in args.heads.split(","):
                log(f"ours, {head} head (agents.train defaults, overrides {args.ours_config}):")
                results[f"ours_{head}"] = run_ours(args, head, env_kwargs, Path(tmp), log)
        if not args.skip_sb3:
            log(
                "stable-baselines3 PPO CnnPolicy (4 envs, n_steps 128, DummyVecEnv, otherwise defaults):"
            )
            torch.set_num_threads(os.cpu_count() or 1)
            results["sb3"] = run_sb3(args, env_kwargs, log)
    log("")
    targets = sorted({0.5, 0.7, args.target})
    names = [k for k in results if k.startswith("ours_") or k == "sb3"]
    header = "".join(f"{f'to {100 * t:.0f}%: steps / wall s':>26}" for t in targets)
    log(f"{'':9} {'env steps/s':>11} {'% of raw':>9} {'best held-out':>14}{header}")
    for name in names:
        r = results[name]
        best = max((p["success_rate"] for p in r["curve"]), default=float("nan"))
        cells = ""
        for t in targets:
            hit = first_reaching(r["curve"], t)
            cell = (
                f"{hit['steps']} / {hit['time_s']:.0f}"
                if hit
                else f"> {r['steps']} / > {r['time_s']:.0f}"
            )
            cells += f"{cell:>26}"
        log(f"{name:9} {r['sps']:11.0f} {100 * r['sps'] / raw:8.0f}% {best:14.2f}{cells}")
    for name in names:
        if first_reaching(results[name]["curve"], args.target) is None:
            log(
                f"{name} did not reach {100 * args.target:.0f}% held-out success within {results[name]['steps']} steps"
            )
    s3 = results.get("sb3")
    for name in names:
        if name == "sb3" or s3 is None:
            continue
        o = results[name]
        log(f"{name} vs sb3: throughput {o['sps'] / s3['sps']:.2f}x")
        for t in targets:
            ho, hs = first_reaching(o["curve"], t), first_reaching(s3["curve"], t)
            if ho and hs:
                log(
                    f"  wall time to {100 * t:.0f}%: sb3 / {name} = {hs['time_s'] / ho['time_s']:.2f}x"
                )
            elif ho:
                log(
                    f"  wall time to {100 * t:.0f}%: sb3 / {name} > {s3['time_s'] / ho['time_s']:.2f}x (sb3 did not get there)"
                )
            elif hs:
                log(
                    f"  wall time to {100 * t:.0f}%: sb3 / {name} < {hs['time_s'] / o['time_s']:.2f}x ({name} did not get there)"
                )
    log(f"load average at the end: {os.getloadavg()[0]:.1f}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
