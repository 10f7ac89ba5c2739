"""Stable-Baselines3 policies as :class:`~rlviz.policy.PolicyAdapter` parts, by duck typing.

Actor-critic policies (PPO, A2C): logits from ``action_net``, value from ``value_net``. DQN:
Q-values stand in for logits and the value is max_a Q. rlviz never imports SB3 itself, and this
module never imports the adapter: it returns the pieces the adapter is built from.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from rlviz.layout import ObservationLayout
from rlviz.policy.parts import PolicyParts

Forward = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
State = tuple[torch.Tensor, ...]


def _sb3_policy(obj) -> nn.Module:
    """Accept an SB3 algorithm (``model``) or its ``model.policy``."""
    policy = getattr(obj, "policy", obj)
    if not isinstance(policy, nn.Module):
        raise TypeError(
            f"expected a Stable-Baselines3 policy (model.policy), got {type(obj).__name__}"
        )
    return policy


def _sb3_scale(policy: nn.Module) -> float:
    """SB3 scales uint8 image spaces by 1/255 (``normalize_images``); everything else not at all."""
    space = policy.observation_space
    is_image = len(space.shape) == 3 and str(space.dtype) == "uint8"
    return 255.0 if bool(getattr(policy, "normalize_images", True)) and is_image else 1.0


def _sb3_layout(obj, policy: nn.Module) -> ObservationLayout | None:
    """The stack layout of an SB3 algorithm's VecEnv chain; None for one frame (read per batch)."""
    get_env = getattr(obj, "get_env", None)
    venv = get_env() if callable(get_env) else None
    if venv is None:
        return None
    layout = ObservationLayout.from_vec_env(venv)
    return layout if layout.stacked else None


def _actor_critic_forward(policy: nn.Module) -> Forward:
    def forward(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pi_features, vf_features = _features(policy, x)
        latent_pi = policy.mlp_extractor.forward_actor(pi_features)
        latent_vf = policy.mlp_extractor.forward_critic(vf_features)
        return policy.action_net(latent_pi), policy.value_net(latent_vf)[:, 0]

    return forward


def _dqn_forward(policy: nn.Module) -> Forward:
    q_net = policy.q_net

    def forward(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        q_values = q_net.q_net(q_net.features_extractor(x))
        return q_values, q_values.max(dim=-1).values

    return forward


def _features(policy: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if getattr(policy, "share_features_extractor", True):
        features = policy.features_extractor(x)
        return features, features
    return policy.pi_features_extractor(x), policy.vf_features_extractor(x)


def _recurrent_parts(policy: nn.Module):
    """(state_forward, initial_state) of an sb3-contrib ``RecurrentActorCriticPolicy``.

    The state is (h_pi, c_pi, h_vf, c_vf), each [B, layers, hidden] (batch first; the LSTMs take
    [layers, B, hidden]). One step per row: episode starts are 0, the state is given.
    """
    lstm = policy.lstm_actor

    def state_forward(x: torch.Tensor, state: State):
        h_pi, c_pi, h_vf, c_vf = (s.transpose(0, 1).contiguous() for s in state)
        starts = x.new_zeros(x.shape[0])
        pi_features, vf_features = _features(policy, x)
        latent_pi, (h_pi, c_pi) = policy._process_sequence(pi_features, (h_pi, c_pi), starts, lstm)
        if policy.lstm_critic is not None:
            latent_vf, (h_vf, c_vf) = policy._process_sequence(
                vf_features, (h_vf, c_vf), starts, policy.lstm_critic
            )
        elif policy.shared_lstm:
            latent_vf, (h_vf, c_vf) = latent_pi, (h_pi, c_pi)
        else:
            latent_vf, (h_vf, c_vf) = policy.critic(vf_features), (h_pi, c_pi)
        logits = policy.action_net(policy.mlp_extractor.forward_actor(latent_pi))
        value = policy.value_net(policy.mlp_extractor.forward_critic(latent_vf))[:, 0]
        return (logits, value), tuple(s.transpose(0, 1) for s in (h_pi, c_pi, h_vf, c_vf))

    def initial_state(batch: int) -> State:
        shape = (batch, lstm.num_layers, lstm.hidden_size)
        return tuple(torch.zeros(shape) for _ in range(4))

    return state_forward, initial_state


def sb3_parts(model) -> PolicyParts:
    """The adapter's parts for an SB3 PPO/A2C actor-critic policy, a DQN policy, or an
    sb3-contrib ``RecurrentPPO`` policy (then recurrent).

    The forward returns ``(logits, value)``; the module is ``model.policy``, whose dotted names
    address the layers. Given the algorithm (not only its policy), a frame stack in its VecEnv
    chain (``VecFrameStack``) becomes the adapter's layout.
    """
    policy = _sb3_policy(model)
    recurrent = hasattr(policy, "lstm_actor") and hasattr(policy, "_process_sequence")
    forward = state_forward = initial_state = None
    if hasattr(policy, "action_net") and hasattr(policy, "mlp_extractor"):
        if type(policy.action_net).__name__ != "Linear" or not hasattr(policy.action_space, "n"):
            raise ValueError("from_sb3 supports discrete action spaces (Categorical policies) only")
        if recurrent:
            state_forward, initial_state = _recurrent_parts(policy)
        else:
            forward = _actor_critic_forward(policy)
    elif hasattr(policy, "q_net") and hasattr(policy.q_net, "features_extractor"):
        forward = _dqn_forward(policy)
    else:
        raise TypeError(
            f"{type(policy).__name__} is not a Stable-Baselines3 actor-critic (action_net, "
            "mlp_extractor), RecurrentPPO or DQN (q_net) policy"
        )
    return PolicyParts(
        policy,
        forward=forward,
        scale=_sb3_scale(policy),
        layout=_sb3_layout(model, policy),
        state_forward=state_forward,
        initial_state=initial_state,
    )
