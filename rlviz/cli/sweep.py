"""``rlviz sweep``: every snapshot of a run on the same held-out seeds and the same probe frames.

Per snapshot: success and mean steps, faithfulness per method (pointing game, mass in box),
box-detector units per layer, the success drop with the top detectors off, and saliency drift
between consecutive snapshots; for a fine-tune (``--init-from`` run) also which detectors of the
init checkpoint survived and which were born. Each snapshot x block of episodes is one task:
serial by default, on Ray with ``--workers N`` (local) or ``--address`` (a cluster; checkpoint
paths must then be readable on every node).

Example::

    rlviz sweep --run runs/ft_b --episodes 50 --workers 2
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from pathlib import Path

from rlviz.cli.common import (
    CliError,
    add_shared,
    at_least,
    bad_input,
    check_method_names,
    check_out_dir,
    command,
    load_policy,
    new_parser,
    picked,
    policy_env,
    print_paths,
    require_checkpoint,
    resolve_device,
    warn,
)
from rlviz.cli.workers import WORKER_SETUP, add_worker_flags

#: Probe episodes start here: above the held-out evaluation seeds (1e6..), never trained on.
PROBE_SEED_START = 2_000_000


def build_parser() -> argparse.ArgumentParser:
    """The ``rlviz sweep`` argument parser."""
    from rlviz.agents.evaluate import HELD_OUT_START

    p = new_parser(
        "sweep",
        "Metrics of every snapshot of a run vs training steps: success, faithfulness, "
        "box detectors, ablation, saliency drift.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument(
        "--run",
        type=Path,
        nargs="+",
        help="run folder(s), in training order (e.g. a pre-training run, then its fine-tune); "
        "sweeps each RUN/snapshots/*.safetensors",
    )
    which.add_argument("--checkpoints", nargs="+", type=Path, help="checkpoints, in training order")
    add_shared(p, "episodes", episodes=dict(default=50, help="held-out episodes per snapshot"))
    p.add_argument(
        "--seed-start", type=at_least(0), default=HELD_OUT_START, help="first held-out seed"
    )
    p.add_argument("--block-size", type=at_least(1), default=10, help="episodes per task")
    p.add_argument("--methods", nargs="+", default=["gradient", "gradcam"], help="saliency methods")
    p.add_argument(
        "--probe-frames", type=at_least(2), default=64, help="fixed frames explained per snapshot"
    )
    p.add_argument(
        "--probe-episodes",
        type=at_least(1),
        default=4,
        help="oracle episodes the probe frames come from",
    )
    p.add_argument(
        "--top-k", type=at_least(0), default=3, help="top box detectors to ablate (0: none)"
    )
    p.add_argument("--iou-threshold", type=float, default=0.04, help="IoU of a box detector")
    p.add_argument(
        "--init-checkpoint",
        type=Path,
        default=None,
        help="the checkpoint a fine-tune started from (default: the run's recorded --init-from)",
    )
    p.add_argument("--no-init", action="store_true", help="no before/after unit comparison")
    add_shared(p, "deterministic", "max_steps", "env", "device")
    add_worker_flags(p, "snapshots x blocks of episodes")
    add_shared(p, "out", "no_progress", out=dict(help="output folder (default RUN/sweep)"))
    return p


def run_snapshots(run: Path) -> list[Path]:
    """The weights snapshots of a run folder, in training-step order."""
    folder = run / "snapshots"
    found = [p for p in folder.glob("*.safetensors") if not p.name.endswith(".state.safetensors")]
    if not found:
        raise CliError(
            f"no snapshots in {str(folder)!r}; train with `rlviz train --snapshot-every N` or "
            "pass --checkpoints A B ..."
        )
    return sorted(found, key=lambda p: (int(_read_config(p).get("steps", 0)), p.name))


def steps_before(path: Path, seen: frozenset = frozenset()) -> int:
    """Training steps before the run of checkpoint ``path`` began: 0 for a run from scratch,
    the init checkpoint's steps in all for a fine-tune (its recorded ``init_from_steps``, else
    followed back through ``--init-from``). An init checkpoint that is gone, or that is this
    file again (overwritten since), counts 0, said on stderr."""
    config = _read_config(path)
    if "init_from_steps" in config:
        return int(config["init_from_steps"])
    init = (config.get("train_config") or {}).get("init_from")
    if not init:
        return 0
    init, seen = Path(init), seen | {path.resolve()}
    if not init.exists() or init.resolve() in seen:
        why = "which is gone" if not init.exists() else "which has been overwritten since"
        warn(
            "sweep",
            f"{str(path)!r} was fine-tuned from {str(init)!r}, {why}; its steps are counted from 0",
        )
        return 0
    return int(_read_config(init).get("steps", 0)) + steps_before(init, seen)


def init_checkpoint(args, last_config: dict) -> Path | None:
    """The fine-tune's init checkpoint when it can be compared, else None (said why on stderr)."""
    if args.no_init:
        return None
    given = args.init_checkpoint
    recorded = (last_config.get("train_config") or {}).get("init_from")
    path = given or (Path(recorded) if recorded else None)
    if path is None:
        return None
    if not path.exists():
        warn(
            "sweep",
            f"init checkpoint {str(path)!r} not found; no unit comparison (pass --init-checkpoint)",
        )
        return None
    if given is None and "init_from_steps" in last_config:
        if int(_read_config(path).get("steps", -1)) != int(last_config["init_from_steps"]):
            warn(
                "sweep",
                f"{str(path)!r} is no longer the checkpoint the run started from (its steps "
                f"differ from init_from_steps {last_config['init_from_steps']}); no unit "
                "comparison (pass --init-checkpoint)",
            )
            return None
    return path


def _run_of(config: dict) -> tuple | None:
    """What names a training run in a checkpoint's config (its run name and seed), or None
    where the config does not say (a checkpoint saved by hand)."""
    tc = config.get("train_config") or {}
    if not tc.get("run_name"):
        return None
    return (tc["run_name"], config.get("seed", tc.get("seed")))


def _lineage(path: Path, depth: int = 0) -> set:
    """The runs a checkpoint's weights came through: its own and, via ``--init-from``, each
    earlier one that is still on disk."""
    config = _read_config(path)
    runs = {_run_of(config)} - {None}
    init = (config.get("train_config") or {}).get("init_from")
    if init and Path(init).exists() and depth < 20:
        runs |= _lineage(Path(init), depth + 1)
    return runs


def check_one_lineage(checkpoints: Sequence[Path]) -> None:
    """A :class:`CliError` when a checkpoint is neither from the run of the one before it nor
    fine-tuned from it: steps would add up and saliency "drift" compare unrelated models."""
    for before, after in zip(checkpoints, checkpoints[1:], strict=False):
        run = _run_of(_read_config(before))
        if run is None or _run_of(_read_config(after)) is None:
            continue  # no run recorded: nothing to compare
        init = (_read_config(after).get("train_config") or {}).get("init_from")
        if init and not Path(init).exists():
            continue  # its init is gone: steps_before says so; the link cannot be checked
        if run not in _lineage(after):
            raise CliError(
                f"{str(after)!r} is not from the run of {str(before)!r} ({run[0]}) nor "
                "fine-tuned from it; a sweep follows one training run (give --checkpoints in "
                "training order of one run, or sweep each run on its own)"
            )


def _read_config(path: Path) -> dict:
    """The config of checkpoint ``path``; a corrupt or missing one is a :class:`CliError`."""
    from rlviz.agents.checkpoint import CheckpointError, read_config

    with bad_input(FileNotFoundError, CheckpointError):
        return read_config(path)


def _fmt(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"  # not measured (the first snapshot has no drift)
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def print_table(rows: Sequence[dict], methods: Sequence[str]) -> None:
    """The main columns of the sweep table, one line per snapshot, each column as wide as its
    widest cell (labels left, numbers right)."""
    columns = ["label", "steps", "success_rate", "mean_steps", "ablation_drop", "detectors_total"]
    if any(row.get("steps_in_all", row["steps"]) != row["steps"] for row in rows):
        columns.insert(2, "steps_in_all")
    columns += [f"{kind}_{m}" for kind in ("pointing", "mass", "drift") for m in methods]
    cells = [[_fmt(row.get(c, float("nan"))) for c in columns] for row in rows]
    widths = [max([len(c), *(len(r[i]) for r in cells)]) for i, c in enumerate(columns)]

    def line(values: Sequence[str]) -> str:
        return "  ".join(
            v.ljust(w) if i == 0 else v.rjust(w)
            for i, (v, w) in enumerate(zip(values, widths, strict=True))
        ).rstrip()

    print(line(columns))
    for row in cells:
        print(line(row))
    print()


@command("sweep")
def main(argv: Sequence[str] | None = None) -> int:
    """``rlviz sweep``: write RUN/sweep/sweep.{csv,json,png} and print the table."""
    from rlviz.agents.checkpoint import checkpoint_env
    from rlviz.agents.evaluate import held_out_seeds
    from rlviz.cli.sweep_tasks import build_spec, frame_stack
    from rlviz.parallel import make_executor, parallelism_hint
    from rlviz.sweep import run_sweep

    args = build_parser().parse_args(argv)
    check_method_names(args.methods)
    device = str(resolve_device(args.device))  # a name: it travels to the workers
    checkpoints = (
        [c for run in args.run for c in run_snapshots(run)] if args.run else list(args.checkpoints)
    )
    for path in checkpoints:
        require_checkpoint(path)
    if len(set(map(str, checkpoints))) != len(checkpoints):
        raise CliError("a checkpoint is given twice (--run or --checkpoints); give each run once")
    check_one_lineage(checkpoints)
    last, first = _read_config(checkpoints[-1]), _read_config(checkpoints[0])
    env_id, env_kwargs = checkpoint_env(first, args.env)
    if args.env is not None:  # the one check before any task: can these weights play it?
        policy_env(load_policy(checkpoints[-1], env_id=args.env)).close()
    spec = build_spec(
        env_id=env_id,
        env_kwargs=env_kwargs,
        probe_seeds=range(PROBE_SEED_START, PROBE_SEED_START + args.probe_episodes),
        **picked(args, "probe_frames", "methods", "top_k", "iou_threshold", "deterministic"),
        max_steps=args.max_steps,
        env_override=args.env is not None,
        device=device,
        # Frame stacks are built from the probe episodes' frames (a fine-tune keeps its init's K).
        keep_history=any(frame_stack(_read_config(c)) > 1 for c in checkpoints),
    )
    init = init_checkpoint(args, last)
    if init is not None:  # swept with its pre-training run: the same file, not a second row
        init = next((c for c in checkpoints if c.resolve() == init.resolve()), init)
    out = args.out or (args.run[-1] / "sweep" if args.run else checkpoints[-1].parent / "sweep")
    check_out_dir(out)
    with bad_input(RuntimeError, ValueError):
        executor = make_executor(
            args.workers, args.address, setup=WORKER_SETUP, progress=not args.no_progress
        )
    if args.workers == 1 and args.address is None:
        parallelism_hint()
    n = len(checkpoints) + (init is not None and init not in checkpoints)
    print(
        f"sweeping {n} checkpoints x {args.episodes} held-out episodes in {env_id} "
        f"({executor.describe()})",
        file=sys.stderr,
    )
    with executor:
        result = run_sweep(
            [str(c) for c in checkpoints],
            spec,
            held_out_seeds(args.episodes, args.seed_start),
            executor,
            block_size=args.block_size,
            init=None if init is None else str(init),
            step_offsets={str(c): steps_before(c) for c in checkpoints},
            # Several runs: their snapshots share file names, so the run names the row.
            labels=[f"{c.parent.parent.name}/{c.stem}" for c in checkpoints]
            if args.run and len(args.run) > 1
            else None,
        )
    print_table(result.rows, args.methods)
    if result.comparison is not None:
        c = result.comparison
        print(
            f"box detectors, {c['before']} -> {c['after']}: {len(c['survived'])} survived, "
            f"{len(c['born'])} born, {len(c['lost'])} lost"
        )
    where = " then ".join(map(str, args.run)) if args.run else checkpoints[-1].parent
    title = f"rlviz sweep: {where} ({env_id})"
    print_paths(result.write(out, title))
    return 0
