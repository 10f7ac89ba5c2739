"""Sweeps over training checkpoints and episodes: small keyed tasks, run serially or on Ray.

What a sweep measures per snapshot, on the same held-out seeds and the same probe frames:
success and mean steps, memory reliance (when the agent has memory), faithfulness per method
(pointing game, mass in box), box-detector units per layer (network dissection; Bau et al.,
CVPR 2017), the success drop with the top detectors ablated, and saliency drift (Spearman rank
correlation of each method's maps between consecutive snapshots)::

    from rlviz.sweep import SweepSpec, make_executor, run_sweep

    with make_executor(workers=4, setup="rlviz.envs.headless:prepare") as executor:
        result = run_sweep(checkpoints, spec, seeds, executor, block_size=10)
    result.write("runs/NAME/sweep")          # sweep.csv, sweep.json, sweep.png

The engine imports no env or agent code: :class:`SweepSpec` carries the caller's functions.
"""

from rlviz.sweep.executor import (
    Executor,
    RayExecutor,
    SerialExecutor,
    make_executor,
    parallelism_hint,
    ray_available,
)
from rlviz.sweep.run import SweepResult, blocks_of, plan, run_sweep
from rlviz.sweep.table import spearman, unit_comparison
from rlviz.sweep.tasks import ANALYSIS, ProbeSet, Snapshot, SweepSpec

__all__ = [
    "ANALYSIS",
    "Executor",
    "ProbeSet",
    "RayExecutor",
    "SerialExecutor",
    "Snapshot",
    "SweepResult",
    "SweepSpec",
    "blocks_of",
    "make_executor",
    "parallelism_hint",
    "plan",
    "ray_available",
    "run_sweep",
    "spearman",
    "unit_comparison",
]
