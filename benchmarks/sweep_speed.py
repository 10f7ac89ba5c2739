"""Sweep speed: 10 snapshots x 50 held-out episodes, serial vs Ray on this machine's cores, and a
scaling model for a bigger cluster.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/sweep_speed.py [--run runs/A --run runs/B] [--quick]

Snapshots: the ``snapshots/`` of each ``--run`` (in the order given: a pre-training run, then its
fine-tune), ``--snapshots`` of them evenly spaced. Otherwise (the shipped run's snapshots are not
in the repository) a stand-in training trajectory is made from the shipped agent: snapshot i of
n has weights ``w0 + (i / n) * (w_shipped - w0)`` with ``w0`` a seeded random init of the same
architecture, so early snapshots wander (long episodes) and late ones reach the box like the
shipped agent. Nothing downloads; the snapshots go to ``--out/snapshots``.

Timings: the serial run is one process (tasks one after the other, one torch thread each); the
Ray run starts a local cluster of ``--workers`` CPUs, warms the workers (each runs the headless
set-up once, ~2-6 s), then runs the same sweep; the tables must be identical. The scaling model
uses the serial run's per-task times and the pickled sizes of what each task sends and returns.
"""

from __future__ import annotations

import argparse
import math
import os
import pickle
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rlviz.cli.sweep_tasks import WORKER_SETUP, build_spec  # noqa: E402
from rlviz.io import json_ready as _plain  # noqa: E402
from rlviz.parallel import RayExecutor, SerialExecutor  # noqa: E402
from rlviz.parallel.executor import run_task  # noqa: E402
from rlviz.sweep import plan, run_sweep  # noqa: E402


def interpolated_snapshots(out: Path, n: int) -> list[Path]:
    """``n`` stand-in snapshots between a random init and the shipped agent (module docstring)."""
    import torch

    from rlviz.agents.checkpoint import SHIPPED_CHECKPOINT, load_checkpoint, save_checkpoint
    from rlviz.agents.policy import ActorCritic

    trained, config = load_checkpoint(SHIPPED_CHECKPOINT)
    torch.manual_seed(0)
    start = ActorCritic(trained.arch).state_dict()
    end = trained.state_dict()
    paths = []
    for i in range(1, n + 1):
        t = i / n
        model = ActorCritic(trained.arch)
        model.load_state_dict({k: start[k] + t * (end[k] - start[k]) for k in end})
        steps = int(round(t * config.get("steps", 500_000)))
        meta = {"env_id": config.get("env_id"), "env_kwargs": config.get("env_kwargs", {})}
        meta.update(steps=steps, stand_in=f"interpolated {t:.2f} of the way to the shipped agent")
        paths.append(save_checkpoint(out / f"step_{steps:09d}.safetensors", model, meta))
    return paths


class TimedSerial(SerialExecutor):
    """The serial executor, also recording each task's time and the bytes it moves."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.times: dict = {}
        self.bytes_in: dict = {}
        self.bytes_out: dict = {}

    def map(self, fn, calls, shared=(), desc="tasks"):
        results = {}
        for key, args in calls.items():
            t0 = time.perf_counter()
            results[key] = run_task(self.setup, fn, *shared, *args)
            self.times[key] = time.perf_counter() - t0
            self.bytes_in[key] = len(pickle.dumps(args))
            self.bytes_out[key] = len(pickle.dumps(results[key]))
        return results


def scaling_model(ex: TimedSerial, snapshots: int, episodes: int, block: int, shared: int) -> dict:
    """Tasks per snapshot, per-task time and data, and predicted sweep times on P cores."""
    keys = [k for k in ex.times if k[0] != "probe"]
    analysis = [ex.times[k] for k in keys if k[1] == -1]
    blocks = [ex.times[k] for k in keys if k[1] != -1]
    per_snapshot = 1 + math.ceil(episodes / block)
    model = {
        "tasks_per_snapshot": per_snapshot,
        "analysis_task_s": float(np.mean(analysis)),
        "episode_task_s": float(np.mean(blocks)),
        "longest_task_s": float(max(ex.times[k] for k in keys)),
        "probe_task_s": ex.times[("probe", 0)],
        "bytes_in_per_task": int(np.mean([ex.bytes_in[k] for k in keys])),
        "bytes_out_analysis": int(np.mean([ex.bytes_out[k] for k in keys if k[1] == -1])),
        "bytes_out_episode_block": int(np.mean([ex.bytes_out[k] for k in keys if k[1] != -1])),
        "bytes_shared_once_per_node": shared,
    }
    work = snapshots * (model["analysis_task_s"] + (per_snapshot - 1) * model["episode_task_s"])
    model["work_s_per_snapshot"] = work / snapshots
    model["predicted_s"] = {
        cores: model["probe_task_s"] + max(work / cores, model["longest_task_s"])
        for cores in (1, 2, 8, 32, 100)
    }
    return model


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--run", type=Path, action="append", help="a run folder with snapshots/ (repeatable)"
    )
    p.add_argument("--snapshots", type=int, default=10)
    p.add_argument("--episodes", type=int, default=50)
    p.add_argument("--block-size", type=int, default=10)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--out", type=Path, default=Path("videos/sweep_benchmark"))
    p.add_argument("--quick", action="store_true", help="2 snapshots x 4 episodes: check it runs")
    args = p.parse_args()
    if args.quick:
        args.snapshots, args.episodes, args.block_size = 2, 4, 2
    from rlviz.agents.checkpoint import read_config
    from rlviz.agents.evaluate import held_out_seeds
    from rlviz.cli.sweep import PROBE_SEED_START, run_snapshots

    if args.run:
        checkpoints = [c for run in args.run for c in run_snapshots(run)]
        checkpoints = [
            checkpoints[i]
            for i in np.linspace(0, len(checkpoints) - 1, args.snapshots).round().astype(int)
        ]
        source = "snapshots of " + " then ".join(str(r) for r in args.run)
    else:
        checkpoints = interpolated_snapshots(args.out / "snapshots", args.snapshots)
        source = "stand-in snapshots interpolated toward the shipped agent"
    checkpoints = [str(c) for c in dict.fromkeys(checkpoints)]
    config = read_config(checkpoints[-1])
    env_id = config.get("env_id") or "rlviz/BoxReach-v0"
    spec = build_spec(
        env_id=env_id,
        env_kwargs=config.get("env_kwargs") or {},
        probe_seeds=range(PROBE_SEED_START, PROBE_SEED_START + 4),
        probe_frames=64,
        methods=("gradient", "gradcam"),
        top_k=3,
        iou_threshold=0.04,
        deterministic=False,
        max_steps=None,
    )
    seeds = held_out_seeds(args.episodes)
    print(
        f"# rlviz sweep benchmark: {len(checkpoints)} snapshots x {args.episodes} episodes "
        f"({source}), {env_id}, block {args.block_size}, {os.cpu_count()} cores"
    )

    serial = TimedSerial(WORKER_SETUP, progress=False)
    run_task(WORKER_SETUP, lambda: None)  # the set-up once, outside the timing (as Ray's warm-up)
    t0 = time.perf_counter()
    s_result = run_sweep(checkpoints, spec, seeds, serial, block_size=args.block_size)
    t_serial = time.perf_counter() - t0
    print(f"serial: {t_serial:.1f} s ({len(plan(checkpoints, seeds, args.block_size)) + 1} tasks)")

    t0 = time.perf_counter()
    ray_ex = RayExecutor(args.workers, setup=WORKER_SETUP, progress=False)
    t_start = time.perf_counter() - t0
    t0 = time.perf_counter()
    ray_ex.map(time.sleep, {("warm", i): (0.5,) for i in range(2 * args.workers)})
    t_warm = time.perf_counter() - t0
    t0 = time.perf_counter()
    r_result = run_sweep(checkpoints, spec, seeds, ray_ex, block_size=args.block_size)
    t_ray = time.perf_counter() - t0
    ray_ex.close()
    same = _plain(s_result.rows) == _plain(r_result.rows)
    speedup = t_serial / t_ray
    print(
        f"ray ({args.workers} workers): cluster start {t_start:.1f} s, worker warm-up "
        f"{t_warm:.1f} s, sweep {t_ray:.1f} s -> speed-up {speedup:.2f}x "
        f"({t_serial / (t_ray + t_start + t_warm):.2f}x counting start and warm-up); "
        f"tables identical: {same}"
    )
    verdict = "met" if speedup >= 1.7 else "NOT met (a loaded machine, or too few tasks: --quick)"
    print(f"target >= 1.7x on {args.workers} workers: {verdict}")
    shared = len(pickle.dumps((spec, s_result.probe)))
    model = scaling_model(serial, len(checkpoints), args.episodes, args.block_size, shared)
    print("\nscaling model (per-task numbers from the serial run):")
    for key, value in model.items():
        if key != "predicted_s":
            print(
                f"  {key:<28} {value:.3f}" if isinstance(value, float) else f"  {key:<28} {value}"
            )
    print("  predicted sweep time = probe task + max(total work / cores, longest task):")
    for cores, seconds in model["predicted_s"].items():
        print(f"    {cores:>4} cores: {seconds:8.1f} s")
    report = {
        "checkpoints": checkpoints,
        "source": source,
        "episodes": args.episodes,
        "block_size": args.block_size,
        "workers": args.workers,
        "serial_s": t_serial,
        "ray_start_s": t_start,
        "ray_warm_s": t_warm,
        "ray_s": t_ray,
        "speedup": speedup,
        "identical": same,
        "model": model,
    }
    from rlviz.io import save_json

    save_json(_plain(report), args.out / "sweep_speed.json")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
