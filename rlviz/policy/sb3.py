"""Stable-Baselines3 / sb3-contrib policies as :class:`~rlviz.policy.PolicyAdapter` parts, by duck
typing (rlviz never imports SB3 itself, and this module never imports the adapter).

What each algorithm's forward is declared as (``output=``):

- PPO / A2C, Discrete: ``logits`` from ``action_net``, value from ``value_net``.
- PPO / A2C, Box: ``gaussian``: mean from ``action_net``, the state-independent ``log_std``.
- SAC: ``squashed_gaussian`` (the actor's pre-tanh mean and clamped log-std); value Q1(s, tanh(mean)).
- TD3 / DDPG: ``deterministic`` (the actor's action in [-1, 1]); value Q1(s, action).
- DQN: ``q_values``; value max_a Q. QR-DQN: the quantiles' mean per action; value max_a Q.
- RecurrentPPO: as PPO, recurrent (state (h_pi, c_pi, h_vf, c_vf)).

Observations are taken as ``model.predict`` takes them: the policy's channels-first frames or the
env's own channels-last ones (``VecFrameStack`` over ``make_atari_env`` yields [84, 84, 4]).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from rlviz.layout import LayoutError, ObservationLayout, resolve_layout
from rlviz.policy.parts import PolicyParts

State = tuple[torch.Tensor, ...]
# SB3's SAC actor clamps its log-std to this range (stable_baselines3.sac.policies).
_SAC_LOG_STD = (-20.0, 2.0)


def _sb3_policy(obj) -> nn.Module:
    """Accept an SB3 algorithm (``model``) or its ``model.policy``."""
    policy = getattr(obj, "policy", obj)
    if not isinstance(policy, nn.Module) or not hasattr(policy, "observation_space"):
        raise TypeError(
            f"expected a Stable-Baselines3 algorithm or its model.policy, got {type(obj).__name__}"
        )
    return policy


def _sb3_scale(policy: nn.Module) -> float:
    """SB3 scales uint8 image spaces by 1/255 (``normalize_images``); everything else not at all."""
    space = policy.observation_space
    shape = getattr(space, "shape", None)
    image = shape is not None and len(shape) == 3 and str(space.dtype) == "uint8"
    return 255.0 if bool(getattr(policy, "normalize_images", True)) and image else 1.0


def _env_frames(obj) -> int | None:
    """K of a ``VecFrameStack`` in an SB3 algorithm's VecEnv chain (None: no env or no stack)."""
    get_env = getattr(obj, "get_env", None)
    venv = get_env() if callable(get_env) else None
    if venv is None:
        return None
    while venv is not None:
        if type(venv).__name__ == "VecFrameStack":
            return int(venv.stacked_obs.n_stack)
        venv = getattr(venv, "venv", None)
    return 1


def _sb3_layouts(obj, policy: nn.Module, layout) -> tuple[ObservationLayout, tuple]:
    """(the layout of the policy's own frames, the channels-last twin users' envs yield).

    The policy's space is channels-first after SB3's ``VecTransposeImage``; K comes from the
    algorithm's ``VecFrameStack``, else from ``layout=``; 1 or 3 channels without a stack are one
    frame, and any other count must be said (4 is Atari's stack as often as RGBA).
    """
    shape = tuple(int(s) for s in policy.observation_space.shape)
    if len(shape) != 3:
        raise LayoutError(
            f"from_sb3 explains image observations [C, H, W]; this policy's observation space is "
            f"{list(shape)}"
        )
    # SB3's own rule (is_image_space_channels_first): the smallest axis is the channel axis.
    channels_first = int(np.argmin(shape)) == 0
    total = shape[0] if channels_first else shape[-1]
    order, twin = ("CHW", "HWC") if channels_first else ("HWC", "CHW")
    if layout is not None:
        frames = resolve_layout(layout, None).frames
    else:
        frames = _env_frames(obj)
        if frames is None or (frames == 1 and total not in (1, 3)):
            if total in (1, 3):
                frames = 1
            else:
                raise LayoutError(
                    f"this SB3 policy reads {total} channels ({list(shape)}) and no VecFrameStack "
                    f"says how many frames they hold; pass the algorithm with its env, or "
                    f"layout='{total}x1:{order}' ({total} gray frames) / '1x{total}:{order}'"
                )
    if total % frames:
        raise LayoutError(f"{total} channels do not split into {frames} frames; check layout=")
    own = ObservationLayout(frames=frames, channels=total // frames, order=order, source="sb3")
    return own, (ObservationLayout(frames=frames, channels=own.channels, order=twin, source="sb3"),)


def _features(policy: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if getattr(policy, "share_features_extractor", True):
        features = policy.features_extractor(x)
        return features, features
    return policy.pi_features_extractor(x), policy.vf_features_extractor(x)


def _dist_kind(policy: nn.Module) -> str:
    """``logits`` (Categorical) or ``gaussian`` (DiagGaussian) of an actor-critic policy."""
    dist = type(getattr(policy, "action_dist", None)).__name__
    if dist == "CategoricalDistribution":
        return "logits"
    if dist == "DiagGaussianDistribution" and not getattr(policy, "squash_output", False):
        return "gaussian"
    raise ValueError(
        f"from_sb3 reads Categorical (Discrete) and DiagGaussian (Box) actor-critic policies; "
        f"this one's distribution is {dist} (gSDE, MultiDiscrete and MultiBinary are not read)"
    )


def _head(policy: nn.Module, kind: str, latent_pi: torch.Tensor, latent_vf: torch.Tensor):
    value = policy.value_net(latent_vf)[:, 0]
    if kind == "logits":
        return policy.action_net(latent_pi), value
    mean = policy.action_net(latent_pi)
    return mean, policy.log_std.expand_as(mean), value


def _actor_critic_forward(policy: nn.Module, kind: str) -> Callable:
    def forward(x: torch.Tensor):
        pi_features, vf_features = _features(policy, x)
        latent_pi = policy.mlp_extractor.forward_actor(pi_features)
        latent_vf = policy.mlp_extractor.forward_critic(vf_features)
        return _head(policy, kind, latent_pi, latent_vf)

    return forward


def _q1(critic: nn.Module, features: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
    """SB3's ``q1_forward`` on features already extracted (its own runs under no_grad)."""
    return critic.q_networks[0](torch.cat([features, action], dim=1))[:, 0]


def _critic_features(policy: nn.Module, actor_features: torch.Tensor, x: torch.Tensor):
    critic = policy.critic
    if critic.features_extractor is policy.actor.features_extractor:
        return actor_features  # shared: the encoder runs once, so its hook sees one call
    return critic.features_extractor(x)


def _actor_q_forward(policy: nn.Module, sac: bool) -> Callable:
    """SAC's (pre-tanh mean, log-std, Q1(s, tanh(mean))) or TD3's (action, Q1(s, action))."""
    actor = policy.actor
    if sac and getattr(actor, "use_sde", False):
        raise ValueError("from_sb3 does not read SAC with gSDE (use_sde=True)")

    def forward(x: torch.Tensor):
        features = actor.features_extractor(x)
        if not sac:
            action = actor.mu(features)
            return action, _q1(policy.critic, _critic_features(policy, features, x), action)
        latent = actor.latent_pi(features)
        mean = actor.mu(latent)
        log_std = actor.log_std(latent).clamp(*_SAC_LOG_STD)
        q = _q1(policy.critic, _critic_features(policy, features, x), torch.tanh(mean))
        return mean, log_std, q

    return forward


def _q_forward(policy: nn.Module, quantiles: bool) -> Callable:
    """DQN's Q-values, or QR-DQN's quantiles' mean per action; value max_a Q."""
    net = policy.quantile_net if quantiles else policy.q_net

    def forward(x: torch.Tensor):
        if quantiles:
            q_values = net.quantile_net(net.features_extractor(x))
            q_values = q_values.view(x.shape[0], net.n_quantiles, -1).mean(dim=1)
        else:
            q_values = net.q_net(net.features_extractor(x))
        return q_values, q_values.max(dim=-1).values

    return forward


def _recurrent_parts(policy: nn.Module, kind: str):
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
        latent_pi = policy.mlp_extractor.forward_actor(latent_pi)
        latent_vf = policy.mlp_extractor.forward_critic(latent_vf)
        outputs = _head(policy, kind, latent_pi, latent_vf)
        return outputs, tuple(s.transpose(0, 1) for s in (h_pi, c_pi, h_vf, c_vf))

    def initial_state(batch: int) -> State:
        shape = (batch, lstm.num_layers, lstm.hidden_size)
        return tuple(torch.zeros(shape) for _ in range(4))

    return state_forward, initial_state


def _actor_cam_layer(policy: nn.Module, prefix: str) -> str | None:
    """The last conv of the actor's encoder: CAM of the action must hook a layer it runs."""
    names = [
        name
        for name, m in policy.named_modules()
        if name.startswith(prefix) and isinstance(m, nn.Conv2d)
    ]
    return names[-1] if names else None


def sb3_parts(model, layout=None) -> PolicyParts:
    """The adapter's parts for any SB3 / sb3-contrib policy with image observations: the module
    is ``model.policy``; the layout comes from the algorithm's ``VecFrameStack`` or ``layout=``
    (see the module docstring for what each algorithm's forward is declared as)."""
    policy = _sb3_policy(model)
    parts = PolicyParts(policy, scale=_sb3_scale(policy), action_space=policy.action_space)
    parts.layout, parts.accepts = _sb3_layouts(model, policy, layout)
    recurrent = hasattr(policy, "lstm_actor") and hasattr(policy, "_process_sequence")
    if hasattr(policy, "action_net") and hasattr(policy, "mlp_extractor"):
        kind = _dist_kind(policy)
        parts.output = kind
        if recurrent:
            parts.state_forward, parts.initial_state = _recurrent_parts(policy, kind)
        else:
            parts.forward = _actor_critic_forward(policy, kind)
        if not getattr(policy, "share_features_extractor", True):
            parts.cam_layer = _actor_cam_layer(policy, "pi_features_extractor")
    elif hasattr(policy, "actor") and hasattr(policy, "critic") and hasattr(policy.actor, "mu"):
        sac = hasattr(policy.actor, "latent_pi")
        parts.output = "squashed_gaussian" if sac else "deterministic"
        parts.forward = _actor_q_forward(policy, sac)
        parts.cam_layer = _actor_cam_layer(policy, "actor.")
    elif hasattr(policy, "quantile_net") and hasattr(policy.quantile_net, "features_extractor"):
        parts.output, parts.forward = "q_values", _q_forward(policy, quantiles=True)
        parts.cam_layer = _actor_cam_layer(policy, "quantile_net.")
    elif hasattr(policy, "q_net") and hasattr(policy.q_net, "features_extractor"):
        parts.output, parts.forward = "q_values", _q_forward(policy, quantiles=False)
        parts.cam_layer = _actor_cam_layer(policy, "q_net.")
    else:
        raise TypeError(
            f"{type(policy).__name__} is not a Stable-Baselines3 actor-critic (PPO, A2C, "
            "RecurrentPPO), SAC, TD3, DQN or QR-DQN policy"
        )
    return parts
