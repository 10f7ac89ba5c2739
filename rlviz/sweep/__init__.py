"""Sweeps over training checkpoints and episodes: small keyed tasks, run serially or on Ray
(the executors are :mod:`rlviz.parallel`'s).

What a sweep measures per snapshot, on the same held-out seeds and the same probe frames:
success and mean steps, memory reliance (when the agent has memory), faithfulness per method
(pointing game, mass in box), box-detector units per layer (network dissection; Bau et al.,
CVPR 2017), the success drop with the top detectors ablated, and saliency drift (Spearman rank
correlation of each method's maps between consecutive snapshots)::

    from rlviz.parallel import make_executor
    from rlviz.sweep import SweepSpec, run_sweep

    with make_executor(workers=4, setup="rlviz.envs.headless:prepare") as executor:
        result = run_sweep(checkpoints, spec, seeds, executor, block_size=10)
    result.write("runs/NAME/sweep")          # sweep.csv, sweep.json, sweep.png

The engine imports no env or agent code: :class:`SweepSpec` carries the caller's functions.
"""

from rlviz.faithfulness.checks import spearman
from rlviz.sweep.run import SweepResult, plan, run_sweep
from rlviz.sweep.table import unit_comparison
from rlviz.sweep.tasks import ANALYSIS, ProbeSet, Snapshot, SweepSpec

__all__ = [
    "ANALYSIS",
    "ProbeSet",
    "Snapshot",
    "SweepResult",
    "SweepSpec",
    "plan",
    "run_sweep",
    "spearman",
    "unit_comparison",
]
