"""The agent rlviz explains: an actor-critic CNN, its PPO trainer, checkpoints and evaluation.

```python
from rlviz import agents
model, config = agents.load_checkpoint("agents/checkpoints/boxreach.safetensors")
adapter = agents.make_adapter(model)            # an rlviz.PolicyAdapter
logits, value = model(agents.preprocess(frames))  # frames: uint8 [B, 60, 80, 3]
```

Installed as ``rlviz.agents`` (the repository folder is agents/; see setup.py). Names are
imported on first use, so an env worker process that imports ``rlviz.agents.vecenv`` loads only
what ``import rlviz`` does (torch and numpy), not the trainer.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

_EXPORTS = {
    "ACTION_NAMES": "rlviz.agents.policy",
    "ActorCritic": "rlviz.agents.policy",
    "Architecture": "rlviz.agents.policy",
    "make_adapter": "rlviz.agents.policy",
    "preprocess": "rlviz.agents.policy",
    "CheckpointError": "rlviz.agents.checkpoint",
    "load_checkpoint": "rlviz.agents.checkpoint",
    "load_training_state": "rlviz.agents.checkpoint",
    "save_checkpoint": "rlviz.agents.checkpoint",
    "SHIPPED_CHECKPOINT": "rlviz.agents.checkpoint",
}

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:  # for type checkers and IDEs
    from rlviz.agents.checkpoint import (  # noqa: F401
        SHIPPED_CHECKPOINT,
        CheckpointError,
        load_checkpoint,
        load_training_state,
        save_checkpoint,
    )
    from rlviz.agents.policy import (  # noqa: F401
        ACTION_NAMES,
        ActorCritic,
        Architecture,
        make_adapter,
        preprocess,
    )


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'agents' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
