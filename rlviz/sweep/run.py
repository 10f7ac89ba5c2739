"""Plan a sweep as keyed tasks, run them on an executor, and assemble the table.

Order of work: one task makes the probe set (the fixed frames every snapshot is explained on);
then every (checkpoint, block) task at once: block :data:`~rlviz.sweep.tasks.ANALYSIS` is the
checkpoint's probe-frame analysis, blocks 0.. its held-out episodes in ``block_size`` seeds each.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from rlviz.io import json_ready, save_json
from rlviz.parallel import Executor, SerialExecutor, blocks_of
from rlviz.sweep.table import build_rows, plot_sweep, unit_comparison, write_csv
from rlviz.sweep.tasks import ANALYSIS, ProbeSet, SweepSpec, sweep_task

Key = tuple[str, int]


def plan(
    checkpoints: Sequence[str], seeds: Sequence[int], block_size: int
) -> dict[Key, tuple[str, int, tuple[int, ...]]]:
    """The sweep's calls ``{(checkpoint, block): (checkpoint, block, seeds)}``; analysis first."""
    if len(set(checkpoints)) != len(checkpoints):
        raise ValueError(f"checkpoints repeat: {list(checkpoints)}; give each one once")
    calls: dict[Key, tuple[str, int, tuple[int, ...]]] = {}
    for checkpoint in checkpoints:
        calls[(checkpoint, ANALYSIS)] = (checkpoint, ANALYSIS, ())
        for block, chunk in enumerate(blocks_of(seeds, block_size)):
            calls[(checkpoint, block)] = (checkpoint, block, chunk)
    return calls


@dataclass
class SweepResult:
    """What :func:`run_sweep` returns: the table rows and everything behind them."""

    rows: list[dict]  # one flat dict per checkpoint (the CSV's rows), in sweep order
    analyses: dict[str, dict]  # checkpoint -> its analysis task's result (maps included)
    episodes: dict[str, list[dict]]  # checkpoint -> its episode blocks' results, in block order
    probe: ProbeSet
    methods: tuple[str, ...]
    comparison: dict | None = None  # before/after unit comparison (init vs last snapshot)
    info: dict = field(default_factory=dict)  # executor, seeds, block size, timings

    def report(self) -> dict:
        """The JSON report: rows, unit comparison, probe-set facts and run info (no maps)."""
        return {
            "rows": self.rows,
            "methods": list(self.methods),
            "unit_comparison": self.comparison,
            "probe": {
                "frames": int(len(self.probe.obs)),
                "box_visible": int(self.probe.visible.sum()),
                "seeds": list(self.probe.seeds),
            },
            "detector_units": {str(c): a["detector_units"] for c, a in self.analyses.items()},
            **self.info,
        }

    def write(self, out: str | os.PathLike, title: str = "") -> list[Path]:
        """Write ``sweep.csv``, ``sweep.json`` and ``sweep.png`` into folder ``out``."""
        out = Path(out)
        return [
            write_csv(self.rows, out / "sweep.csv"),
            save_json(json_ready(self.report()), out / "sweep.json"),
            plot_sweep(self.rows, self.methods, out / "sweep.png", title),
        ]


def run_sweep(
    checkpoints: Sequence[str],
    spec: SweepSpec,
    seeds: Sequence[int],
    executor: Executor | None = None,
    *,
    block_size: int = 10,
    labels: Sequence[str] | None = None,
    init: str | None = None,
    step_offsets: Mapping[str, int] | None = None,
) -> SweepResult:
    """Evaluate every checkpoint (in training order: rows and drift follow it) on the same
    held-out ``seeds`` and the same probe frames, ``block_size`` seeds per episode task, on
    ``executor`` (default: serial in this process). Rows are labelled ``labels`` (default: the
    checkpoint file names without extension).

    ``init``: the checkpoint a fine-tune started from: swept first (row ``init``, steps 0) and
    compared unit by unit with the last checkpoint; already among ``checkpoints`` (a
    pre-training run swept with its fine-tune), it is not swept twice, only compared.
    ``step_offsets``: checkpoint -> training steps before its run began (a fine-tune's init
    checkpoint's steps in all); each row's ``steps_in_all`` adds it to ``steps``.
    """
    executor = executor or SerialExecutor(spec.setup)
    checkpoints = [str(c) for c in checkpoints]
    labels = list(labels) if labels is not None else [Path(c).stem for c in checkpoints]
    prepend_init = init is not None and str(init) not in checkpoints
    if prepend_init:
        checkpoints, labels = [str(init), *checkpoints], ["init", *labels]
    if not checkpoints or not seeds:
        raise ValueError(
            f"a sweep needs checkpoints and seeds; got {len(checkpoints)} checkpoints and "
            f"{len(seeds)} seeds"
        )
    calls = plan(checkpoints, seeds, block_size)
    t0 = time.perf_counter()
    probe = executor.map(spec.make_probe, {"probe": ()}, desc="probe frames")["probe"]
    t1 = time.perf_counter()
    results = executor.map(sweep_task, calls, (spec, probe), desc="sweep tasks")
    t2 = time.perf_counter()
    analyses = {c: results[(c, ANALYSIS)] for c in checkpoints}
    episodes = {
        c: [results[key] for key in calls if key[0] == c and key[1] != ANALYSIS]
        for c in checkpoints
    }
    offsets = step_offsets or {}
    rows = build_rows(checkpoints, labels, analyses, episodes, spec.methods)
    for row in rows:
        row["steps_in_all"] = int(row["steps"]) + int(offsets.get(row["checkpoint"], 0))
    comparison = None
    if init is not None:
        if prepend_init:
            rows[0]["steps"] = 0  # a fine-tune counts its steps from the init checkpoint
        comparison = unit_comparison(analyses[str(init)], analyses[checkpoints[-1]])
        comparison.update(before=str(init), after=checkpoints[-1])
    info = {
        "executor": executor.describe(),
        "seeds": [int(s) for s in seeds],
        "block_size": block_size,
        "tasks": len(calls) + 1,
        "time_probe_s": round(t1 - t0, 3),
        "time_tasks_s": round(t2 - t1, 3),
    }
    return SweepResult(rows, analyses, episodes, probe, tuple(spec.methods), comparison, info)
