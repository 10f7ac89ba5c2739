"""Policies for explanation: :class:`PolicyAdapter` over any network, and constructors for others'.

``sb3``, ``cleanrl`` and ``frameworks`` build the parts (module, forward, preprocess) the adapter is
made of; they never import the adapter, so imports flow one way.
"""

from rlviz.policy.adapter import (
    PolicyAdapter,
    PolicyOutput,
    as_adapter,
    as_policy_output,
    default_preprocess,
    to_tensor_batch,
)

# Module-level spellings of the constructors (the old ``rlviz.integrations`` API).
from_sb3 = PolicyAdapter.from_sb3
from_cleanrl = PolicyAdapter.from_cleanrl
from_callable = PolicyAdapter.from_callable
from_tianshou = PolicyAdapter.from_tianshou
from_skrl = PolicyAdapter.from_skrl
from_torchrl = PolicyAdapter.from_torchrl
from_rllib = PolicyAdapter.from_rllib

__all__ = [
    "PolicyAdapter",
    "PolicyOutput",
    "as_adapter",
    "as_policy_output",
    "default_preprocess",
    "from_callable",
    "from_cleanrl",
    "from_rllib",
    "from_sb3",
    "from_skrl",
    "from_tianshou",
    "from_torchrl",
    "to_tensor_batch",
]
