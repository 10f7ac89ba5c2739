"""Evaluate an agent on held-out seeds: success rate, steps to the box, return, vs the oracle.

Training draws episode seeds from ``[0, 1e6)`` (see :mod:`agents.vecenv`), so held-out seeds start
at 1e6 (:data:`HELD_OUT_START`). ``rlviz evaluate --train-gap`` also replays seeds the run actually
trained on and reports the gap.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence

import numpy as np
import torch

from agents.policy import ActorCritic, preprocess
from agents.vecenv import TRAIN_SEED_RANGE, episode_seed, make_env

HELD_OUT_START = TRAIN_SEED_RANGE


def held_out_seeds(n: int, start: int = HELD_OUT_START) -> list[int]:
    """``n`` consecutive seeds from ``start`` (>= 1e6 by default: never used in training)."""
    return list(range(start, start + n))


def training_seeds(n: int, seed: int, num_envs: int) -> list[int]:
    """The first ``n`` episode seeds a run seeded ``seed`` with ``num_envs`` envs trained on."""
    return [episode_seed(seed, i % num_envs, i // num_envs) for i in range(n)]


def _check_env(model: ActorCritic, env) -> None:
    shape = tuple(env.observation_space.shape)
    if tuple(model.arch.obs_shape) != shape:
        raise ValueError(
            f"the model reads observations {tuple(model.arch.obs_shape)} but the env gives {shape}; "
            "evaluate on the env (and obs size) the checkpoint was trained on"
        )
    n = int(env.action_space.n)
    if n != len(model.action_names):
        raise ValueError(f"the model has {len(model.action_names)} actions but the env has {n}")
    names = getattr(env.unwrapped, "ACTION_NAMES", None) or _env_action_names(env)
    if names is not None and tuple(names) != tuple(model.action_names):
        raise ValueError(
            f"action names differ: model {tuple(model.action_names)} vs env {tuple(names)}; the "
            "checkpoint was trained with another action order"
        )


def _env_action_names(env) -> tuple[str, ...] | None:
    module = sys.modules.get(type(env.unwrapped).__module__)
    names = getattr(module, "ACTION_NAMES", None)
    return tuple(names) if names is not None else None


@torch.no_grad()
def evaluate(
    model: ActorCritic,
    env_id: str,
    seeds: Sequence[int],
    deterministic: bool = False,
    env_kwargs: dict | None = None,
    max_steps: int | None = None,
) -> dict:
    """Play one episode per seed and summarise.

    A stochastic policy samples actions from a generator seeded by the episode seed, so results are
    reproducible. Runs in this process, one env, batch-1 inference.

    Returns:
        dict with ``success_rate``, ``mean_steps`` (all episodes; a failure counts its full length),
        ``mean_steps_success``, ``mean_return``, ``episodes`` and per-episode lists ``seeds``,
        ``successes``, ``steps``, ``returns``.
    """
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise ValueError("evaluate needs at least one seed")
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    env = make_env(env_id, env_kwargs)
    try:
        _check_env(model, env)
        successes, steps, returns = [], [], []
        for seed in seeds:
            gen = torch.Generator().manual_seed(seed)
            obs, _ = env.reset(seed=seed)
            total, n, success = 0.0, 0, False
            while True:
                logits, _ = model(preprocess(obs, device))
                if deterministic:
                    action = int(logits[0].argmax())
                else:
                    action = int(
                        torch.multinomial(
                            torch.softmax(logits[0].float().cpu(), -1), 1, generator=gen
                        )
                    )
                obs, reward, term, trunc, info = env.step(action)
                total += float(reward)
                n += 1
                if term or trunc or (max_steps is not None and n >= max_steps):
                    success = bool(info.get("success", term and reward > 0))
                    break
            successes.append(success)
            steps.append(n)
            returns.append(total)
    finally:
        env.close()
        model.train(was_training)
    ok = [s for s, good in zip(steps, successes, strict=True) if good]
    return {
        "episodes": len(seeds),
        "success_rate": float(np.mean(successes)),
        "mean_steps": float(np.mean(steps)),
        "mean_steps_success": float(np.mean(ok)) if ok else float("nan"),
        "mean_return": float(np.mean(returns)),
        "deterministic": bool(deterministic),
        "seeds": seeds,
        "successes": successes,
        "steps": steps,
        "returns": returns,
    }


def evaluate_oracle(env_id: str, seeds: Sequence[int], env_kwargs: dict | None = None) -> dict:
    """The scripted oracle (``envs.oracle``) on the same seeds; same keys as :func:`evaluate`."""
    from envs.oracle import oracle_action

    env = make_env(env_id, env_kwargs)
    successes, steps, returns = [], [], []
    try:
        for seed in seeds:
            env.reset(seed=int(seed))
            total, n = 0.0, 0
            while True:
                _, reward, term, trunc, info = env.step(oracle_action(env))
                total += float(reward)
                n += 1
                if term or trunc:
                    break
            successes.append(bool(info.get("success", term)))
            steps.append(n)
            returns.append(total)
    finally:
        env.close()
    ok = [s for s, good in zip(steps, successes, strict=True) if good]
    return {
        "episodes": len(seeds),
        "success_rate": float(np.mean(successes)),
        "mean_steps": float(np.mean(steps)),
        "mean_steps_success": float(np.mean(ok)) if ok else float("nan"),
        "mean_return": float(np.mean(returns)),
        "seeds": [int(s) for s in seeds],
        "successes": successes,
        "steps": steps,
        "returns": returns,
    }


def _summary(name: str, r: dict) -> str:
    return (
        f"{name:<22} success {100 * r['success_rate']:5.1f}%  mean steps {r['mean_steps']:6.1f}  "
        f"(successful {r['mean_steps_success']:6.1f})  mean return {r['mean_return']:.3f}  "
        f"[{r['episodes']} episodes]"
    )


def build_parser() -> argparse.ArgumentParser:
    """The ``rlviz evaluate`` argument parser."""
    from agents.checkpoint import SHIPPED_CHECKPOINT

    p = argparse.ArgumentParser(
        prog="rlviz evaluate",
        description="Success rate, steps and return of a checkpoint on held-out seeds (>= 1e6, "
        "never used in training).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--checkpoint", default=str(SHIPPED_CHECKPOINT), help="checkpoint .safetensors")
    p.add_argument("--episodes", type=int, default=200, help="held-out episodes (one seed each)")
    p.add_argument("--seed-start", type=int, default=HELD_OUT_START, help="first held-out seed")
    p.add_argument(
        "--deterministic",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="greedy actions instead of sampling",
    )
    p.add_argument("--env-id", default=None, help="env id; None: the checkpoint's")
    p.add_argument("--env-kwargs", default=None, help="env kwargs as JSON; None: the checkpoint's")
    p.add_argument(
        "--train-gap",
        action="store_true",
        help="also play as many seeds the run trained on and report the gap",
    )
    p.add_argument(
        "--oracle", action="store_true", help="also run the scripted oracle on the same seeds"
    )
    p.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    p.add_argument(
        "--json", default=None, metavar="PATH", help="write all results to this JSON file"
    )
    return p


def main(argv: list[str] | None = None) -> int:
    """``rlviz evaluate``: print success rate, mean steps and return on held-out seeds."""
    from agents.checkpoint import CheckpointError, atomic_write_bytes, load_checkpoint
    from agents.train import resolve_device

    args = build_parser().parse_args(argv)
    if args.episodes < 1:
        print(f"rlviz evaluate: --episodes {args.episodes}; expected >= 1", file=sys.stderr)
        return 2
    try:
        model, config = load_checkpoint(args.checkpoint, device=resolve_device(args.device))
    except (FileNotFoundError, CheckpointError, ValueError) as exc:
        print(f"rlviz evaluate: {exc}", file=sys.stderr)
        return 2
    env_id = args.env_id or config.get("env_id")
    if env_id is None:
        print("rlviz evaluate: the checkpoint names no env; pass --env-id", file=sys.stderr)
        return 2
    env_kwargs = json.loads(args.env_kwargs) if args.env_kwargs else config.get("env_kwargs", {})
    seeds = held_out_seeds(args.episodes, args.seed_start)
    torch.set_num_threads(1)
    out: dict = {"checkpoint": args.checkpoint, "env_id": env_id, "env_kwargs": env_kwargs}
    print(
        f"{args.checkpoint}: {env_id} {env_kwargs or ''}, trained {config.get('steps', '?')} steps "
        f"(seed {config.get('seed', '?')})"
    )
    try:
        t0 = time.perf_counter()
        held = evaluate(
            model, env_id, seeds, deterministic=args.deterministic, env_kwargs=env_kwargs
        )
        out["held_out"] = held
        mode = "greedy" if args.deterministic else "sampled"
        print(
            _summary(f"held-out ({mode})", held) + f"  seeds {seeds[0]}..{seeds[-1]}, "
            f"{time.perf_counter() - t0:.0f} s"
        )
        if args.train_gap:
            tc = config.get("train_config", {})
            train = training_seeds(
                args.episodes, int(config.get("seed", 1)), int(tc.get("num_envs", 16))
            )
            tr = evaluate(
                model, env_id, train, deterministic=args.deterministic, env_kwargs=env_kwargs
            )
            out["train"] = tr
            print(_summary(f"train seeds ({mode})", tr))
            print(
                f"{'gap (train - held-out)':<22} success {100 * (tr['success_rate'] - held['success_rate']):+5.1f} "
                f"points, mean steps {tr['mean_steps'] - held['mean_steps']:+.1f}"
            )
        if args.oracle:
            orc = evaluate_oracle(env_id, seeds, env_kwargs)
            out["oracle"] = orc
            print(_summary("oracle (same seeds)", orc))
            print(
                f"{'steps / oracle':<22} {held['mean_steps'] / orc['mean_steps']:.3f} (all episodes), "
                f"{held['mean_steps_success'] / orc['mean_steps_success']:.3f} (successful)"
            )
    except ValueError as exc:
        print(f"rlviz evaluate: {exc}", file=sys.stderr)
        return 2
    if args.json:
        atomic_write_bytes(args.json, (json.dumps(out, indent=1) + "\n").encode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
