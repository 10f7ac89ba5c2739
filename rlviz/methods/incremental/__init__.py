"""Incremental inference for input-perturbation methods (occlusion): recompute only the changed
region of each conv layer. See :mod:`rlviz.methods.incremental.runner`.

>>> from rlviz.methods.incremental import plan
>>> print(plan(adapter, (3, 60, 80), box=(8, 8), stride=(4, 4)))   # per-layer decisions
"""

from rlviz.methods.incremental.runner import (
    FULL_FRACTION,
    Decision,
    IncrementalRunner,
    Plan,
    plan,
    warn_fallback,
)

__all__ = ["FULL_FRACTION", "Decision", "IncrementalRunner", "Plan", "plan", "warn_fallback"]
