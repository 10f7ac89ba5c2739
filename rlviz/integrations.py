"""Adapters for policies from other RL codebases, by duck typing (rlviz never imports them).

- Stable-Baselines3: actor-critic policies (PPO, A2C: logits from ``action_net``, value from
  ``value_net``) and DQN (Q-values stand in for logits; the value is max_a Q).
- CleanRL-style agents: an ``nn.Module`` with ``get_action_and_value(x, action)`` and ``get_value(x)``.
- Plain callables returning logits (or ``(logits, value)``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from rlviz.adapters import PolicyAdapter, PolicyOutput

# ----------------------------------------------------------------------------- Stable-Baselines3


def _sb3_policy(obj) -> nn.Module:
    """Accept an SB3 algorithm (``model``) or its ``model.policy``."""
    policy = getattr(obj, "policy", obj)
    if not isinstance(policy, nn.Module):
        raise TypeError(
            f"expected a Stable-Baselines3 policy (model.policy), got {type(obj).__name__}"
        )
    return policy


def _sb3_preprocess(policy: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """SB3's own preprocessing: match the policy's observation layout, then scale images by 1/255."""
    space = policy.observation_space
    shape = tuple(space.shape)
    is_image = len(shape) == 3 and str(space.dtype) == "uint8"
    normalize = bool(getattr(policy, "normalize_images", True)) and is_image

    def preprocess(obs: torch.Tensor) -> torch.Tensor:
        if tuple(obs.shape[1:]) != shape:
            # VecTransposeImage makes the policy channel-first while the env gives HWC frames.
            if obs.ndim == 4 and tuple(obs.permute(0, 3, 1, 2).shape[1:]) == shape:
                obs = obs.permute(0, 3, 1, 2)
            else:
                raise ValueError(
                    f"observation shape {tuple(obs.shape[1:])} does not match the policy's "
                    f"observation space {shape} (nor its channel-last form)"
                )
        obs = obs.float()
        return obs / 255.0 if normalize else obs

    return preprocess


def _sb3_actor_critic_forward(policy: nn.Module):
    def forward(x: torch.Tensor) -> PolicyOutput:
        if getattr(policy, "share_features_extractor", True):
            pi_features = vf_features = policy.features_extractor(x)
        else:
            pi_features = policy.pi_features_extractor(x)
            vf_features = policy.vf_features_extractor(x)
        latent_pi = policy.mlp_extractor.forward_actor(pi_features)
        latent_vf = policy.mlp_extractor.forward_critic(vf_features)
        return PolicyOutput(policy.action_net(latent_pi), policy.value_net(latent_vf)[:, 0])

    return forward


def _sb3_dqn_forward(policy: nn.Module):
    q_net = policy.q_net

    def forward(x: torch.Tensor) -> PolicyOutput:
        q_values = q_net.q_net(q_net.features_extractor(x))
        return PolicyOutput(q_values, q_values.max(dim=-1).values)

    return forward


def from_sb3(model, action_names: Sequence[str] | None = None) -> PolicyAdapter:
    """Adapter for a Stable-Baselines3 PPO/A2C actor-critic policy or a DQN policy.

    Layer names are those of ``model.policy`` (e.g. ``"features_extractor.cnn.4"``).
    For DQN the "logits" are Q-values, so ``ActionLogit(k)`` explains Q(s, k).
    """
    policy = _sb3_policy(model)
    if hasattr(policy, "action_net") and hasattr(policy, "mlp_extractor"):
        if type(policy.action_net).__name__ != "Linear" or not hasattr(policy.action_space, "n"):
            raise ValueError("from_sb3 supports discrete action spaces (Categorical policies) only")
        forward = _sb3_actor_critic_forward(policy)
    elif hasattr(policy, "q_net") and hasattr(policy.q_net, "features_extractor"):
        forward = _sb3_dqn_forward(policy)
    else:
        raise TypeError(
            f"{type(policy).__name__} is not a Stable-Baselines3 actor-critic (action_net, mlp_extractor) "
            "or DQN (q_net) policy"
        )
    return PolicyAdapter(
        policy, forward=forward, preprocess=_sb3_preprocess(policy), action_names=action_names
    )


# ----------------------------------------------------------------------------- CleanRL


def _cleanrl_generic_forward(agent: nn.Module, n_actions: int | None):
    """Only ``get_action_and_value`` is known: evaluate log pi(k|s) for every k in one batched call."""
    known = [n_actions] if n_actions is not None else []

    def forward(x: torch.Tensor) -> PolicyOutput:
        if not known:
            known.append(_infer_n_actions(agent))
        count, batch = known[0], x.shape[0]
        actions = torch.arange(count, device=x.device).repeat_interleave(batch)
        _, log_prob, _, value = agent.get_action_and_value(
            x.repeat(count, *[1] * (x.ndim - 1)), actions
        )
        return PolicyOutput(log_prob.view(count, batch).T, value.reshape(-1)[:batch])

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


def _cleanrl_direct_forward(agent: nn.Module, scale: float):
    """``actor(network(x * scale))`` and ``critic(...)``: layer hooks see the real batch."""
    has_trunk = isinstance(getattr(agent, "network", None), nn.Module)

    def forward(x: torch.Tensor) -> PolicyOutput:
        hidden = agent.network(x * scale) if has_trunk else x * scale
        return PolicyOutput(agent.actor(hidden), agent.critic(hidden).reshape(-1))

    return forward


def from_cleanrl(
    agent: nn.Module, n_actions: int | None = None, action_names: Sequence[str] | None = None
) -> PolicyAdapter:
    """Adapter for a CleanRL-style ``Agent`` (``get_action_and_value(x, action)``, ``get_value(x)``).

    The input the maps refer to is the float observation as the agent's own methods receive it
    (e.g. 0..255 pixels for ``ppo_atari``; the agent scales inside). When the agent has the usual
    ``network`` / ``actor`` / ``critic`` parts, rlviz calls them directly (checking on the first batch
    that this reproduces ``get_action_and_value`` exactly, with or without CleanRL's ``x / 255``);
    otherwise it evaluates ``get_action_and_value`` for every action in one batched call.
    """
    for needed in ("get_action_and_value", "get_value"):
        if not callable(getattr(agent, needed, None)):
            raise TypeError(
                f"{type(agent).__name__} has no {needed}(); a CleanRL-style agent needs both"
            )
    generic = _cleanrl_generic_forward(agent, n_actions)
    candidates = []
    if isinstance(getattr(agent, "actor", None), nn.Module) and isinstance(
        getattr(agent, "critic", None), nn.Module
    ):
        candidates = [
            _cleanrl_direct_forward(agent, 1 / 255.0),
            _cleanrl_direct_forward(agent, 1.0),
        ]
    chosen: list[Callable] = []

    def forward(x: torch.Tensor) -> PolicyOutput:
        if not chosen:
            chosen.append(_pick_matching(generic, candidates, x))
        return chosen[0](x)

    return PolicyAdapter(
        agent, forward=forward, preprocess=_float_channels_first, action_names=action_names
    )


def _pick_matching(reference: Callable, candidates: list[Callable], x: torch.Tensor) -> Callable:
    """The first candidate whose log-probs and values match the reference on ``x``."""
    with torch.no_grad():
        want = reference(x[:2])
        for candidate in candidates:
            got = candidate(x[:2])
            same_policy = torch.allclose(torch.log_softmax(got.logits, -1), want.logits, atol=1e-5)
            if same_policy and torch.allclose(got.value, want.value, atol=1e-5):
                return candidate
    return reference


def _float_channels_first(obs: torch.Tensor) -> torch.Tensor:
    # CleanRL's Atari agents read [B, 4, 84, 84] stacks in 0..255 and scale inside.
    if obs.ndim == 4 and obs.shape[-1] in (1, 3, 4) and obs.shape[1] not in (1, 3, 4):
        obs = obs.permute(0, 3, 1, 2)
    return obs.float()


# ----------------------------------------------------------------------------- plain callables


class _FunctionModule(nn.Module):
    """Holds a plain function so it can sit where an ``nn.Module`` is expected (no addressable layers)."""

    def __init__(self, fn: Callable) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, x: torch.Tensor):
        return self.fn(x)


def from_callable(
    fn: Callable | nn.Module,
    preprocess: Callable[[torch.Tensor], torch.Tensor] | None = None,
    action_names: Sequence[str] | None = None,
) -> PolicyAdapter:
    """Adapter for an ``nn.Module`` or plain function mapping the network input to logits or
    ``(logits, value)``. A plain function has no layers, so CAM-family methods need an ``nn.Module``."""
    module = fn if isinstance(fn, nn.Module) else _FunctionModule(fn)
    return PolicyAdapter(module, preprocess=preprocess, action_names=action_names)
