"""``rlviz evaluate``: success rate, steps and return of a checkpoint on held-out seeds.

Held-out seeds start at 1e6, above every seed training draws (:mod:`agents.evaluate`);
``--train-gap`` also replays seeds the run trained on, ``--oracle`` the scripted oracle.

Example::

    rlviz evaluate --checkpoint agents/checkpoints/boxreach.safetensors --episodes 200 --oracle
"""

from __future__ import annotations

import argparse
import functools
import json
import time
from collections.abc import Sequence
from pathlib import Path

from rlviz.cli.common import (
    CliError,
    add_shared,
    at_least,
    bad_input,
    check_out_dir,
    command,
    load_policy,
    new_parser,
    progress_on,
    resolve_device,
)
from rlviz.cli.workers import add_worker_flags, parallel


def build_parser() -> argparse.ArgumentParser:
    """The ``rlviz evaluate`` argument parser."""
    from rlviz.agents.checkpoint import SHIPPED_CHECKPOINT
    from rlviz.agents.evaluate import HELD_OUT_START

    p = new_parser(
        "evaluate",
        "Success rate, steps and return of a checkpoint on held-out seeds (>= 1e6, "
        "never used in training).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_shared(
        p,
        "checkpoint",
        "episodes",
        checkpoint=dict(type=str, default=str(SHIPPED_CHECKPOINT), help="checkpoint .safetensors"),
        episodes=dict(default=200, help="held-out episodes (one seed each)"),
    )
    p.add_argument(
        "--seed-start", type=at_least(0), default=HELD_OUT_START, help="first held-out seed"
    )
    add_shared(
        p,
        "deterministic",
        "env",
        deterministic=dict(action=argparse.BooleanOptionalAction, default=False),
        # --env as elsewhere; --env-id is this command's original spelling
        env=dict(flags=("--env-id",), dest="env_id", help="env id; None: the checkpoint's"),
    )
    p.add_argument("--env-kwargs", default=None, help="env kwargs as JSON; None: the checkpoint's")
    p.add_argument(
        "--train-gap",
        action="store_true",
        help="also play as many seeds the run trained on and report the gap",
    )
    p.add_argument(
        "--oracle",
        action="store_true",
        help="also run the scripted oracle and the camera limit (turns until the box shows, then "
        "the oracle) on the same seeds",
    )
    add_shared(p, "device", "no_progress")
    p.add_argument(
        "--json", default=None, metavar="PATH", help="write all results to this JSON file"
    )
    add_worker_flags(p, "blocks of episodes")
    return p


def _summary(name: str, r: dict) -> str:
    return (
        f"{name:<22} success {100 * r['success_rate']:5.1f}%  mean steps {r['mean_steps']:6.1f}  "
        f"(successful {r['mean_steps_success']:6.1f})  mean return {r['mean_return']:.3f}  "
        f"[{r['episodes']} episodes]"
    )


def _env_kwargs(text: str | None) -> dict | None:
    if text is None:
        return None
    try:
        kwargs = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CliError(
            f"--env-kwargs {text!r} is not JSON ({exc}); e.g. '{{\"size\": 8}}'"
        ) from None
    if not isinstance(kwargs, dict):
        raise CliError(f"--env-kwargs {text!r} should be a JSON object, e.g. '{{\"size\": 8}}'")
    return kwargs


@command("evaluate")
def main(argv: Sequence[str] | None = None) -> int:
    """``rlviz evaluate``: print success rate, mean steps and return on held-out seeds."""
    import torch

    from rlviz.agents.evaluate import evaluate, held_out_seeds
    from rlviz.io import save_json

    args = build_parser().parse_args(argv)
    if args.json:  # before playing: a bad path must not cost the whole evaluation
        check_out_dir(Path(args.json).parent, "--json's folder")
    policy = load_policy(
        args.checkpoint,
        env_id=args.env_id,
        device=resolve_device(args.device),
        env_kwargs=_env_kwargs(args.env_kwargs),
    )
    config, env_id, env_kwargs = policy.config, policy.env_id, policy.env_kwargs
    seeds = held_out_seeds(args.episodes, args.seed_start)
    torch.set_num_threads(1)
    out: dict = {"checkpoint": args.checkpoint, "env_id": env_id, "env_kwargs": env_kwargs}
    print(
        f"{args.checkpoint}: {env_id} {env_kwargs or ''}, trained {config.get('steps', '?')} steps "
        f"(seed {config.get('seed', '?')})"
    )
    mode = "greedy" if args.deterministic else "sampled"
    progress = progress_on(args)
    # A ValueError while playing: the env does not fit the model.
    with parallel(args, progress) as executor, bad_input():
        # Here, or as tasks on the executor (--workers), with identical results.
        play = functools.partial(
            evaluate,
            policy.model,
            env_id,
            deterministic=args.deterministic,
            env_kwargs=env_kwargs,
            progress=progress,
            executor=executor,
        )
        t0 = time.perf_counter()
        out["held_out"] = held = play(seeds)
        print(
            _summary(f"held-out ({mode})", held) + f"  seeds {seeds[0]}..{seeds[-1]}, "
            f"{time.perf_counter() - t0:.0f} s"
        )
        if args.train_gap:
            out["train"] = _train_gap(play, config, args.episodes, held, mode)
        if args.oracle:
            out["oracle"] = _oracle(env_id, seeds, env_kwargs, held, executor, progress)
    if args.json:
        save_json(out, args.json)
    return 0


def _train_gap(play, config: dict, episodes: int, held: dict, mode: str) -> dict:
    """``play`` as many seeds as the run trained on; print them and the gap to ``held``."""
    from rlviz.agents.evaluate import training_seeds

    tc = config.get("train_config", {})
    tr = play(training_seeds(episodes, int(config.get("seed", 1)), int(tc.get("num_envs", 16))))
    print(_summary(f"train seeds ({mode})", tr))
    print(
        f"{'gap (train - held-out)':<22} success "
        f"{100 * (tr['success_rate'] - held['success_rate']):+5.1f} points, "
        f"mean steps {tr['mean_steps'] - held['mean_steps']:+.1f}"
    )
    return tr


def _oracle(
    env_id: str, seeds: list[int], env_kwargs: dict, held: dict, executor=None, progress=False
) -> dict:
    """The scripted oracle and the camera limit on the same seeds; print them and the agent's
    steps relative to each. Returns the oracle's dict with the camera limits under ``camera``."""
    from rlviz.agents.evaluate import SCRIPTED, evaluate_oracle

    results = {
        policy: evaluate_oracle(env_id, seeds, env_kwargs, progress, policy, executor)
        for policy in SCRIPTED
    }
    orc = results["oracle"]
    print(_summary("oracle (same seeds)", orc))
    for policy in SCRIPTED[1:]:
        turn = policy.removeprefix("camera-")
        print(_summary(f"camera limit ({turn})", results[policy]))
    # The camera limit: the better of its two turning directions (what a camera allows).
    camera = min((results[p] for p in SCRIPTED[1:]), key=lambda r: r["mean_steps"])
    for name, ref in (("oracle", orc), ("camera limit", camera)):
        print(
            f"{'steps / ' + name:<22} {held['mean_steps'] / ref['mean_steps']:.3f} (all episodes), "
            f"{held['mean_steps_success'] / ref['mean_steps_success']:.3f} (successful)"
        )
    print(f"{'camera limit / oracle':<22} {camera['mean_steps'] / orc['mean_steps']:.3f}")
    return {**orc, "camera": {p.removeprefix("camera-"): results[p] for p in SCRIPTED[1:]}}
