"""CleanRL-style agents as :class:`~rlviz.policy.PolicyAdapter` parts, by duck typing.

An agent is an ``nn.Module`` with ``get_action_and_value(x, action)`` and ``get_value(x)``. This
module never imports the adapter: it returns the pieces the adapter is built from.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from rlviz.policy.parts import PolicyParts

Pair = tuple[torch.Tensor, torch.Tensor]  # (logits or log-probs [B, A], value [B])
Forward = Callable[[torch.Tensor], Pair]


def _generic_forward(agent: nn.Module, n_actions: int | None) -> Forward:
    """Only ``get_action_and_value`` is known: evaluate log pi(k|s) for every k in one batched call."""
    known = [n_actions] if n_actions is not None else []

    def forward(x: torch.Tensor) -> Pair:
        if not known:
            known.append(_infer_n_actions(agent))
        count, batch = known[0], x.shape[0]
        actions = torch.arange(count, device=x.device).repeat_interleave(batch)
        _, log_prob, _, value = agent.get_action_and_value(
            x.repeat(count, *[1] * (x.ndim - 1)), actions
        )
        return log_prob.view(count, batch).T, value.reshape(-1)[:batch]

    return forward


def _infer_n_actions(agent: nn.Module) -> int:
    actor = getattr(agent, "actor", None)
    if actor is not None:
        for module in reversed(list(actor.modules()) if isinstance(actor, nn.Module) else []):
            if isinstance(module, nn.Linear):
                return module.out_features
    raise ValueError(
        "cannot tell the number of actions of this agent; pass n_actions=... to from_cleanrl"
    )


def _direct_forward(agent: nn.Module, scale: float) -> Forward:
    """``actor(network(x * scale))`` and ``critic(...)``: layer hooks see the real batch."""
    has_trunk = isinstance(getattr(agent, "network", None), nn.Module)

    def forward(x: torch.Tensor) -> Pair:
        hidden = agent.network(x * scale) if has_trunk else x * scale
        return agent.actor(hidden), agent.critic(hidden).reshape(-1)

    return forward


def _pick_matching(reference: Forward, candidates: list[Forward], x: torch.Tensor) -> Forward:
    """The first candidate whose log-probs and values match the reference on ``x``."""
    with torch.no_grad():
        want_log_probs, want_value = reference(x[:2])
        for candidate in candidates:
            logits, value = candidate(x[:2])
            same_policy = torch.allclose(torch.log_softmax(logits, -1), want_log_probs, atol=1e-5)
            if same_policy and torch.allclose(value, want_value, atol=1e-5):
                return candidate
    return reference


def _recurrent_parts(agent: nn.Module):
    """(state_forward, initial_state) of a CleanRL ``ppo_atari_lstm``-style agent.

    It has ``lstm`` and ``get_states(x, (h, c), done) -> (hidden, (h, c))``; the state here is
    (h, c), each [B, layers, hidden] (batch first).
    """
    lstm = agent.lstm

    def state_forward(x: torch.Tensor, state):
        h, c = (s.transpose(0, 1).contiguous() for s in state)
        hidden, (h, c) = agent.get_states(x, (h, c), x.new_zeros(x.shape[0]))
        outputs = agent.actor(hidden), agent.critic(hidden).reshape(-1)
        return outputs, (h.transpose(0, 1), c.transpose(0, 1))

    def initial_state(batch: int):
        shape = (batch, lstm.num_layers, lstm.hidden_size)
        return torch.zeros(shape), torch.zeros(shape)

    return state_forward, initial_state


def cleanrl_parts(agent: nn.Module, n_actions: int | None = None) -> PolicyParts:
    """The adapter's parts for a CleanRL-style ``Agent`` (recurrent when it has ``get_states``).

    The input the maps refer to is the float observation as the agent's own methods receive it
    (e.g. 0..255 pixels for ``ppo_atari``; the agent scales inside). When the agent has the usual
    ``network`` / ``actor`` / ``critic`` parts, rlviz calls them directly (checking on the first batch
    that this reproduces ``get_action_and_value`` exactly, with or without CleanRL's ``x / 255``);
    otherwise it evaluates ``get_action_and_value`` for every action in one batched call.
    """
    # CleanRL's Atari agents read [B, 4, 84, 84] stacks in 0..255 and scale inside.
    parts = PolicyParts(agent, scale=1.0)
    lstm = getattr(agent, "lstm", None)
    if isinstance(lstm, nn.LSTM) and callable(getattr(agent, "get_states", None)):
        parts.state_forward, parts.initial_state = _recurrent_parts(agent)
        return parts
    for needed in ("get_action_and_value", "get_value"):
        if not callable(getattr(agent, needed, None)):
            raise TypeError(
                f"{type(agent).__name__} has no {needed}(); a CleanRL-style agent needs both"
            )
    generic = _generic_forward(agent, n_actions)
    candidates = []
    if all(isinstance(getattr(agent, head, None), nn.Module) for head in ("actor", "critic")):
        candidates = [_direct_forward(agent, 1 / 255.0), _direct_forward(agent, 1.0)]
    chosen: list[Forward] = []

    def forward(x: torch.Tensor) -> Pair:
        if not chosen:
            chosen.append(_pick_matching(generic, candidates, x))
        return chosen[0](x)

    parts.forward = forward
    return parts
