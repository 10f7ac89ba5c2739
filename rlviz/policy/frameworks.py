"""Tianshou, skrl, TorchRL and RLlib policies as :class:`~rlviz.policy.PolicyAdapter` parts.

Each reads the framework's own objects by duck typing (rlviz imports none of them, except
``tensordict`` to call a TorchRL module) and declares what their forward returns, so nothing is
guessed from shapes. The network input the maps refer to is the observation exactly as the
framework feeds its model (floats, unscaled: ``scale=1.0``; a model that scales inside keeps doing
so), laid out channels first; each forward turns it back into the framework's own layout. A
trunk shared by actor and critic runs once per forward, so a layer hook sees one call.
"""

from __future__ import annotations

import torch
from torch import nn

from rlviz.layout import LayoutError, ObservationLayout, resolve_layout
from rlviz.policy.parts import PolicyParts


def _mixins(obj: object) -> set[str]:
    return {cls.__name__ for cls in type(obj).__mro__}


def _layout(layout, what: str) -> ObservationLayout:
    if layout is None:
        raise LayoutError(
            f"{what} needs layout= (how one observation holds its frames), e.g. '4x1:CHW' for "
            "Atari's [4, 84, 84] stack, '1x3:HWC' for one RGB frame [H, W, 3]"
        )
    return resolve_layout(layout, None)


def _owner(**parts: nn.Module) -> nn.Module:
    """One module holding an actor and a critic that are separate modules, so hooks and names
    reach both (``actor.*``, ``critic.*``)."""
    return nn.ModuleDict(parts)


def _result(*parts: torch.Tensor | None):
    """A forward's result: its policy part(s) and value, leaving out those it has not."""
    given = tuple(p for p in parts if p is not None)
    return given if len(given) > 1 else given[0]


# -- Tianshou ------------------------------------------------------------------------------


def _tianshou_modules(obj) -> tuple[nn.Module, nn.Module | None]:
    """(actor or Q-net, critic or None) of a Tianshou module, policy or algorithm."""
    critic = getattr(obj, "critic", None)
    policy = getattr(obj, "policy", obj)
    for name in ("actor", "model"):
        inner = getattr(policy, name, None)
        if isinstance(inner, nn.Module):
            return inner, critic if isinstance(critic, nn.Module) else None
    if isinstance(obj, nn.Module):
        return obj, None
    raise TypeError(
        f"from_tianshou takes a Tianshou actor, Q-network, policy or algorithm; got "
        f"{type(obj).__name__}"
    )


def tianshou_parts(actor, critic=None, *, layout=None, output=None) -> PolicyParts:
    """Parts for a Tianshou discrete actor (``DiscreteActor``: ``softmax_output`` says whether it
    returns probabilities) or Q-network (``DQNet`` & co.: Q-values), with an optional critic
    (``DiscreteCritic``: V(s)). A DiscreteActor's pre-softmax logits are read (its probabilities
    are their softmax); a critic sharing the actor's ``preprocess`` net reuses its features.
    """
    actor, found_critic = _tianshou_modules(actor)
    critic = critic if critic is not None else found_critic
    owner = _owner(actor=actor, critic=critic) if critic is not None else actor
    prefix = "actor." if critic is not None else ""
    layout = _layout(layout, "from_tianshou")
    split = hasattr(actor, "preprocess") and hasattr(actor, "last")
    if output is None:
        softmax = getattr(actor, "softmax_output", None)
        if softmax is None:
            output = "q_values"  # a bare network (DQN's model) maps s -> Q(s, .)
        else:
            output = "logits" if (split or not softmax) else "probs"
    shared = critic is not None and getattr(critic, "preprocess", None) is getattr(
        actor, "preprocess", False
    )

    def forward(x: torch.Tensor):
        obs = layout.from_network(x)
        if split:
            features, _ = actor.preprocess(obs, None)
            head = actor.last(features)
            if output == "probs":  # declared by the caller for a softmaxing actor
                head = torch.softmax(head, dim=-1)
        else:
            head, features = actor(obs)[0], None
        if critic is None:
            return head
        value = critic.last(features) if shared else critic(obs)
        return head, value.reshape(-1)

    convs = [n for n, m in actor.named_modules() if isinstance(m, nn.Conv2d)]
    return PolicyParts(
        owner,
        forward=forward,
        layout=layout,
        scale=1.0,
        output=output,
        cam_layer=prefix + convs[-1] if convs else None,
    )


# -- skrl ----------------------------------------------------------------------------------


def _skrl_kind(model, role: str) -> str:
    mixins = _mixins(model)
    if "CategoricalMixin" in mixins and role != "value":
        return "logits" if getattr(model, "_c_unnormalized_log_prob", True) else "probs"
    if "GaussianMixin" in mixins and role != "value":
        return "gaussian"
    if "DeterministicMixin" in mixins:
        return "deterministic"
    raise TypeError(
        f"from_skrl reads skrl models with CategoricalMixin, GaussianMixin or DeterministicMixin; "
        f"{type(model).__name__} has {sorted(m for m in mixins if m.endswith('Mixin'))}"
    )


def skrl_parts(policy, value=None, *, layout=None, role: str = "policy", value_role: str = "value"):
    """Parts for an skrl policy model (Categorical or Gaussian mixin; Deterministic for
    TD3/DDPG) and an optional value model (Deterministic mixin; the same object for a shared
    model, called with ``value_role``). skrl feeds models flattened observations
    (``inputs["observations"]`` [B, prod(obs_shape)]): the forward flattens the input in the
    env's ``layout`` (default: the model's ``observation_space``).
    """
    if layout is None and getattr(policy, "observation_space", None) is not None:
        layout = ObservationLayout.from_space(policy.observation_space)
    layout = _layout(layout, "from_skrl")
    kind = _skrl_kind(policy, role)
    if value is not None and _skrl_kind(value, value_role) != "deterministic":
        raise TypeError("from_skrl's value model must be a DeterministicMixin model")
    owner = policy if value is None or value is policy else _owner(policy=policy, value=value)
    clip_log_std = getattr(policy, "_g_clip_log_std", False)
    log_std_range = (getattr(policy, "_g_min_log_std", -20), getattr(policy, "_g_max_log_std", 2))

    def call(model, obs, model_role):
        # positional, as skrl's mixins call it
        return model.compute({"observations": obs, "states": None}, model_role)

    def forward(x: torch.Tensor):
        obs = layout.from_network(x).reshape(x.shape[0], -1)
        out, extra = call(policy, obs, role)
        log_std = extra["log_std"] if kind == "gaussian" else None
        if log_std is not None and clip_log_std:  # as GaussianMixin.act
            log_std = log_std.clamp(*log_std_range)
        state_value = None if value is None else call(value, obs, value_role)[0].reshape(-1)
        return _result(out, log_std, state_value)

    return PolicyParts(owner, forward=forward, layout=layout, scale=1.0, output=kind)


# -- TorchRL -------------------------------------------------------------------------------


def _prob_split(module) -> tuple[list, object]:
    """(deterministic modules, the distribution module) of a probabilistic TorchRL sequence."""
    inner = list(getattr(module, "module", []))
    if inner and hasattr(inner[-1], "distribution_class"):
        return inner[:-1], inner[-1]
    return [module], None


def _torchrl_kind(dist_module) -> tuple[str, tuple[str, ...]]:
    if dist_module is None:
        return "deterministic", ()
    name = getattr(dist_module.distribution_class, "__name__", str(dist_module.distribution_class))
    keys = tuple(dist_module.dist_keys)
    if name in ("Categorical", "OneHotCategorical", "MaskedCategorical") and "logits" in keys:
        return "logits", (dist_module.in_keys[keys.index("logits")],)
    if name in ("Normal", "IndependentNormal") and {"loc", "scale"} <= set(keys):
        return "gaussian", tuple(dist_module.in_keys[keys.index(k)] for k in ("loc", "scale"))
    raise TypeError(
        f"from_torchrl reads Categorical/OneHotCategorical (logits) and Normal (loc, scale) "
        f"actors; this one is {name} with {list(keys)} (TanhNormal is not read)"
    )


def torchrl_parts(actor, value=None, *, layout=None, in_key=None, env=None) -> PolicyParts:
    """Parts for a TorchRL ``ProbabilisticActor`` (plus an optional ``ValueOperator``) or an
    ``ActorValueOperator`` (its common trunk run once). The observation key is the actor's
    first in-key unless ``in_key`` says; the layout comes from ``env``'s transforms (a
    ``CatFrames`` stack of N frames on the channel axis) when given, else ``layout=``. uint8
    frames are divided by 255 as ``ToTensorImage`` does; float frames (a TorchRL env's own
    output) pass as given.
    """
    from tensordict import TensorDict

    common = None
    if value is None and hasattr(actor, "get_value_head") and hasattr(actor, "get_policy_head"):
        common, policy, value = actor.module[0], actor.get_policy_head(), actor.get_value_head()
        owner = actor
    else:
        policy = actor
        owner = actor if value is None else _owner(actor=actor, value=value)
    first = common if common is not None else policy
    key = in_key if in_key is not None else first.in_keys[0]
    if layout is None and env is not None:
        layout = _torchrl_env_layout(env, key)
    layout = _layout(layout, "from_torchrl")
    det, dist_module = _prob_split(policy)
    kind, keys = _torchrl_kind(dist_module)
    out_key = keys[0] if keys else policy.out_keys[0]

    def forward(x: torch.Tensor):
        td = TensorDict({key: layout.from_network(x)}, batch_size=[x.shape[0]])
        if common is not None:
            td = common(td)
        for module in det:
            td = module(td)
        log_std = td.get(keys[1]).log() if kind == "gaussian" else None
        state_value = None if value is None else value(td).get(value.out_keys[0]).reshape(-1)
        return _result(td.get(out_key), log_std, state_value)

    # scale=None: uint8 frames / 255, as TorchRL's ToTensorImage; float frames as given.
    return PolicyParts(owner, forward=forward, layout=layout, scale=None, output=kind)


def _torchrl_env_layout(env, key) -> ObservationLayout:
    """The layout of ``key`` after a TorchRL env's transforms (CatFrames on dim -3: frames)."""
    spec = env.observation_spec[key]
    shape = tuple(int(s) for s in spec.shape[-3:])
    frames = 1
    transform = getattr(env, "transform", None)
    # one transform, or a Compose of several
    chain = list(getattr(transform, "transforms", [transform] if transform is not None else []))
    for t in chain:
        if type(t).__name__ == "CatFrames" and key in t.in_keys:
            frames = int(t.N)
    if len(shape) != 3 or shape[0] % frames:
        raise LayoutError(f"the env's {key!r} is shaped {list(spec.shape)}; pass layout=")
    return ObservationLayout(frames=frames, channels=shape[0] // frames, order="CHW", source="env")


# -- RLlib ---------------------------------------------------------------------------------


def rllib_parts(module, *, layout=None) -> PolicyParts:
    """Parts for an RLlib new-stack ``RLModule`` with the ValueFunctionAPI (PPO's
    ``DefaultPPOTorchRLModule``): ``forward_train`` for the action-distribution inputs and
    ``compute_values`` on its embeddings, so the encoder runs once. RLlib's CNN encoder reads
    channels-last observations ([B, H, W, C], the default layout).
    """
    if not callable(getattr(module, "forward_train", None)):
        raise TypeError(
            f"from_rllib takes an RLlib RLModule (algo.get_module()); got {type(module).__name__}"
        )
    if callable(getattr(module, "is_stateful", None)) and module.is_stateful():
        raise ValueError("from_rllib does not read stateful (LSTM) RLModules yet")
    shape = getattr(getattr(module, "observation_space", None), "shape", None)
    if layout is None and shape is not None and len(shape) == 3 and shape[-1] in (1, 3):
        layout = ObservationLayout(frames=1, channels=int(shape[-1]), order="HWC", source="env")
    layout = _layout(layout, "from_rllib")
    dist = module.get_inference_action_dist_cls().__name__
    kinds = {"TorchCategorical": "logits", "TorchDiagGaussian": "gaussian"}
    if dist not in kinds:
        raise TypeError(f"from_rllib reads Categorical and DiagGaussian policies; got {dist}")
    kind = kinds[dist]
    has_values = callable(getattr(module, "compute_values", None))

    def forward(x: torch.Tensor):
        batch = {"obs": layout.from_network(x)}
        out = module.forward_train(batch)
        inputs = out["action_dist_inputs"]
        parts = inputs.chunk(2, dim=-1) if kind == "gaussian" else (inputs,)
        embeddings = out.get("embeddings")
        values = module.compute_values(batch, embeddings=embeddings) if has_values else None
        return _result(*parts, values)

    return PolicyParts(module, forward=forward, layout=layout, scale=1.0, output=kind)
