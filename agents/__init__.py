"""The agent rlviz explains: an actor-critic CNN, its PPO trainer, checkpoints and evaluation.

```python
import agents
model, config = agents.load_checkpoint("agents/checkpoints/boxreach.safetensors")
adapter = agents.make_adapter(model)            # an rlviz.PolicyAdapter
logits, value = model(agents.preprocess(frames))  # frames: uint8 [B, 60, 80, 3]
```

Names are imported on first use, so ``import agents.vecenv`` (in env worker processes) does not
import torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

_EXPORTS = {
    "ACTION_NAMES": "agents.policy",
    "ActorCritic": "agents.policy",
    "Architecture": "agents.policy",
    "make_adapter": "agents.policy",
    "preprocess": "agents.policy",
    "CheckpointError": "agents.checkpoint",
    "load_checkpoint": "agents.checkpoint",
    "load_training_state": "agents.checkpoint",
    "save_checkpoint": "agents.checkpoint",
    "SHIPPED_CHECKPOINT": "agents.checkpoint",
}

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:  # for type checkers and IDEs
    from agents.checkpoint import (  # noqa: F401
        SHIPPED_CHECKPOINT,
        CheckpointError,
        load_checkpoint,
        load_training_state,
        save_checkpoint,
    )
    from agents.policy import (  # noqa: F401
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
