"""The PPO trainer's pieces, gathered under one name for code that imports ``agents.train``.

Read them top to bottom: :mod:`agents.config` (every flag, documented once), :mod:`agents.ppo`
(buffer, GAE, the clipped loss, the learner step) and :mod:`agents.trainer` (collection, the
background learner, logging, checkpoints, resume). The command line is :mod:`rlviz.cli.train`.
"""

from __future__ import annotations

from rlviz.agents.config import (
    Config,
    add_dataclass_arguments,
    config_from_dict,
    default_run_name,
    resolve_device,
)
from rlviz.agents.diagnostics import COLUMNS
from rlviz.agents.ppo import Learner, RolloutBuffer, compute_gae
from rlviz.agents.trainer import Trainer, init_weights, train

__all__ = [
    "COLUMNS",
    "Config",
    "Learner",
    "RolloutBuffer",
    "Trainer",
    "add_dataclass_arguments",
    "compute_gae",
    "config_from_dict",
    "default_run_name",
    "init_weights",
    "resolve_device",
    "train",
]
