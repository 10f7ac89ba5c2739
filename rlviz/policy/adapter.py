"""PolicyAdapter: one interface over any policy network.

Every explanation method talks to a policy only through an adapter: ``preprocess`` turns raw
observations (uint8 frames, HWC) into the float tensor the network reads, and ``outputs`` maps that
tensor to action logits (and, when the policy has a critic, a value). Gradients are always taken with
respect to the preprocessed tensor, so maps have the network's input resolution.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace

import numpy as np
import torch
from torch import nn

from rlviz.layout import LayoutError, ObservationLayout, resolve_layout
from rlviz.policy.cleanrl import cleanrl_parts
from rlviz.policy.frameworks import rllib_parts, skrl_parts, tianshou_parts, torchrl_parts
from rlviz.policy.output import OUTPUT_KINDS, PolicyOutput, read_output
from rlviz.policy.sb3 import sb3_parts

Preprocess = Callable[[torch.Tensor], torch.Tensor]
ForwardFn = Callable[[torch.Tensor], "torch.Tensor | tuple | PolicyOutput"]
#: A recurrent state: a tuple of tensors with the batch axis first, [B, ...] each.
State = tuple[torch.Tensor, ...]
#: (network input, state) -> (outputs, next state), for recurrent policies.
StateForwardFn = Callable[[torch.Tensor, State], "tuple[object, State]"]


def to_tensor_batch(
    obs: np.ndarray | torch.Tensor | Sequence, device: torch.device
) -> torch.Tensor:
    """Observations as a batched tensor on ``device``: adds the batch axis to a single frame."""
    if isinstance(obs, (list, tuple)):
        obs = np.stack([np.asarray(o) for o in obs])
    tensor = torch.as_tensor(np.asarray(obs) if not isinstance(obs, torch.Tensor) else obs)
    if tensor.ndim == 3:
        tensor = tensor.unsqueeze(0)
    if tensor.ndim != 4:
        raise ValueError(
            f"expected observations shaped [B, H, W, C] or [B, C, H, W] (or one frame without B), "
            f"got shape {tuple(tensor.shape)}"
        )
    return tensor.to(device)


def default_preprocess(obs: torch.Tensor) -> torch.Tensor:
    """A raw batch -> float32 [B, K*C, H, W] through the layout its shape implies.

    For one frame: uint8 [B, H, W, C] -> float [B, C, H, W] / 255; float [B, C, H, W] passes
    through. A shape that fits several layouts raises :class:`rlviz.layout.LayoutError`.
    """
    layout = ObservationLayout.from_shape(
        tuple(obs.shape[1:]), batched=False, floating=obs.dtype.is_floating_point
    )
    return layout.to_network(obs)


def _floating(obs: object) -> bool:
    """Whether observations hold floats (network inputs, read channels-first when unclear)."""
    dtype = getattr(obs, "dtype", None)
    if isinstance(dtype, torch.dtype):
        return dtype.is_floating_point
    return dtype is not None and np.issubdtype(dtype, np.floating)


class _FunctionModule(nn.Module):
    """Holds a plain function where an ``nn.Module`` is expected (no addressable layers)."""

    def __init__(self, fn: Callable) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, x: torch.Tensor):
        return self.fn(x)


#: A forward's raw result as a :class:`PolicyOutput` (the public name of
#: :func:`rlviz.policy.output.read_output`).
as_policy_output = read_output


class PolicyAdapter:
    """Wraps a policy network for explanation.

    Args:
        model: the ``nn.Module`` that owns the layers (hooks and dotted layer names refer to it).
        forward: maps the preprocessed input [B, C, H, W] to what ``output`` declares (e.g. logits
            [B, A] or ``(logits, value)``), or a :class:`PolicyOutput`. Defaults to ``model(x)``.
        output: what the forward returns, one of :data:`rlviz.policy.output.OUTPUT_KINDS`.
            Undeclared, only unambiguous results are read (logits [B, A] or (logits, value
            [B])); anything else (rows that already sum to 1, a pair that could be a Gaussian's
            (mean, log_std) or an (output, state)) raises, asking for ``output=``.
        preprocess: raw observations (batched tensor) -> network input. Defaults to
            :func:`default_preprocess` (uint8 HWC -> float CHW / 255).
        action_names: labels for the action axis, used by panels and plots.
        layout: how one observation holds its frames (:class:`rlviz.ObservationLayout` or a
            string such as ``"4:KHW"``). Without it the layout is read off each batch's shape,
            which raises when the shape is ambiguous (``[H, W, 6]``: two RGB frames?).
        state_forward, initial_state: a recurrent policy's ``(x, state) -> (outputs,
            next_state)`` (the state a tuple of batch-first tensors; methods explain each step
            with its entering state held fixed) and ``batch -> state`` at an episode start.
        scale: the input value that maps to 1.0 when the layout names none (default: 255 for
            uint8, floats unscaled); CleanRL agents, which scale inside, use 1.0. On the first
            uint8 batch the adapter checks that the network's first layer does not see pixels
            scaled twice (max <= 1/255: the model divides by 255 too) and raises if it does.
        accepts: other layouts the raw observations may come in, each giving the same network
            input (SB3's channels-last frames beside its policy's channels-first ones).
        action_space: the env's action space (a Gymnasium ``Box`` for continuous policies), so
            players can map the policy's actions to the env's bounds.
        cam_layer: the layer CAM methods use when none is named (default: the model's
            ``cam_layer`` attribute, else its last conv outside target networks).
    """

    def __init__(
        self,
        model: nn.Module,
        forward: ForwardFn | None = None,
        preprocess: Preprocess | None = None,
        action_names: Sequence[str] | None = None,
        layout: ObservationLayout | str | None = None,
        state_forward: StateForwardFn | None = None,
        initial_state: Callable[[int], State] | None = None,
        scale: float | None = None,
        output: str | None = None,
        accepts: Sequence[ObservationLayout] = (),
        action_space=None,
        cam_layer: str | None = None,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(
                f"PolicyAdapter needs the nn.Module that owns the layers, got {type(model).__name__}; "
                "wrap a plain function with PolicyAdapter(module, forward=fn)"
            )
        if (state_forward is None) != (initial_state is None):
            raise TypeError(
                "a recurrent PolicyAdapter needs both state_forward and initial_state; got only "
                f"{'state_forward' if state_forward is not None else 'initial_state'}"
            )
        self.model = model
        self._forward = forward if forward is not None else model
        self._preprocess = preprocess
        self.action_names = tuple(action_names) if action_names is not None else None
        self.layout = None if layout is None else resolve_layout(layout, None)
        self.scale = scale
        self._state_forward = state_forward
        self._initial_state = initial_state
        self._held_state: State | None = None
        if output is not None and output not in OUTPUT_KINDS:
            raise ValueError(
                f"output={output!r} is not a policy output kind; use one of {list(OUTPUT_KINDS)}"
            )
        self.output = output
        self.accepts = tuple(resolve_layout(a, None) for a in accepts)
        self.action_space = action_space
        self.cam_layer = cam_layer
        self._scale_checked = False
        self._from_start = False

    @classmethod
    def from_sb3(
        cls,
        model,
        action_names: Sequence[str] | None = None,
        layout: ObservationLayout | str | None = None,
    ) -> PolicyAdapter:
        """Any Stable-Baselines3 / sb3-contrib algorithm (PPO, A2C, SAC, TD3, DQN, QR-DQN,
        RecurrentPPO) or its ``model.policy``; see :mod:`rlviz.policy.sb3`.

        Layer names are those of ``model.policy`` (e.g. ``"features_extractor.cnn.4"``). For DQN
        the "logits" are Q-values, so ``ActionLogit(k)`` explains Q(s, k). Observations are taken
        channels first or last, as ``model.predict`` takes them; the number of stacked frames is
        read from the algorithm's ``VecFrameStack`` or given as ``layout=`` (e.g. ``"4x1:CHW"``).
        """
        parts = sb3_parts(model, layout=layout)
        return cls(parts.module, action_names=action_names, **parts.adapter_kwargs())

    @classmethod
    def from_tianshou(
        cls,
        actor,
        critic=None,
        *,
        layout: ObservationLayout | str,
        output: str | None = None,
        action_names: Sequence[str] | None = None,
    ) -> PolicyAdapter:
        """Tianshou ``DiscreteActor`` (its ``softmax_output`` read), Q-network (``DQNet``:
        Q-values) or policy/algorithm, with an optional ``DiscreteCritic``; ``layout`` of the
        env's observations, e.g. ``"4x1:CHW"``. See :func:`rlviz.policy.frameworks.tianshou_parts`."""
        parts = tianshou_parts(actor, critic, layout=layout, output=output)
        return cls(parts.module, action_names=action_names, **parts.adapter_kwargs())

    @classmethod
    def from_skrl(
        cls,
        policy,
        value=None,
        *,
        layout: ObservationLayout | str | None = None,
        role: str = "policy",
        value_role: str = "value",
        action_names: Sequence[str] | None = None,
    ) -> PolicyAdapter:
        """skrl policy model (Categorical/Gaussian/Deterministic mixin) and optional value model
        (the same object for a shared model); see :func:`rlviz.policy.frameworks.skrl_parts`."""
        parts = skrl_parts(policy, value, layout=layout, role=role, value_role=value_role)
        return cls(parts.module, action_names=action_names, **parts.adapter_kwargs())

    @classmethod
    def from_torchrl(
        cls,
        actor,
        value=None,
        *,
        env=None,
        layout: ObservationLayout | str | None = None,
        in_key=None,
        action_names: Sequence[str] | None = None,
    ) -> PolicyAdapter:
        """TorchRL ``ProbabilisticActor`` (+ ``ValueOperator``) or ``ActorValueOperator``; the
        layout read from ``env``'s transforms or given; see
        :func:`rlviz.policy.frameworks.torchrl_parts`."""
        parts = torchrl_parts(actor, value, layout=layout, in_key=in_key, env=env)
        return cls(parts.module, action_names=action_names, **parts.adapter_kwargs())

    @classmethod
    def from_rllib(
        cls,
        module,
        *,
        layout: ObservationLayout | str | None = None,
        action_names: Sequence[str] | None = None,
    ) -> PolicyAdapter:
        """RLlib new-stack ``RLModule`` (``algo.get_module()``), e.g. ``DefaultPPOTorchRLModule``;
        see :func:`rlviz.policy.frameworks.rllib_parts`."""
        parts = rllib_parts(module, layout=layout)
        return cls(parts.module, action_names=action_names, **parts.adapter_kwargs())

    @classmethod
    def from_cleanrl(
        cls,
        agent: nn.Module,
        n_actions: int | None = None,
        action_names: Sequence[str] | None = None,
    ) -> PolicyAdapter:
        """CleanRL-style agent; see :func:`rlviz.policy.cleanrl.cleanrl_parts`."""
        parts = cleanrl_parts(agent, n_actions=n_actions)
        return cls(parts.module, action_names=action_names, **parts.adapter_kwargs())

    @classmethod
    def from_callable(
        cls, fn, preprocess: Preprocess | None = None, action_names: Sequence[str] | None = None
    ) -> PolicyAdapter:
        """``nn.Module`` or plain function mapping the network input to logits or
        ``(logits, value)``. A plain function has no layers, so CAM-family methods need a module."""
        module = fn if isinstance(fn, nn.Module) else _FunctionModule(fn)
        return cls(module, preprocess=preprocess, action_names=action_names)

    @property
    def device(self) -> torch.device:
        """Device of the model's first parameter (CPU for a parameter-free model)."""
        for param in self.model.parameters():
            return param.device
        return torch.device("cpu")

    @property
    def recurrent(self) -> bool:
        """Whether the policy carries a recurrent state between steps."""
        return self._state_forward is not None

    def layout_for(self, obs: np.ndarray | torch.Tensor | Sequence) -> ObservationLayout:
        """The declared layout (or one of ``accepts``) that fits ``obs`` (one or a batch), or
        the one its shape implies."""
        first = obs[0] if isinstance(obs, (list, tuple)) else obs
        layout = self.layout
        if layout is not None and self.accepts:
            shape = tuple(np.shape(first))
            for candidate in (layout, *self.accepts):
                if _fits(candidate, shape) or _fits(candidate, shape[1:]):
                    layout = candidate
                    break
            else:
                wanted = " or ".join(
                    f"[{', '.join(str(d) for d in _example_shape(c, shape))}]"
                    for c in (layout, *self.accepts)
                )
                raise LayoutError(
                    f"observations shaped {list(shape)} fit none of this policy's layouts; "
                    f"expected one observation {wanted} (or a batch of them)"
                )
        if layout is None:
            shape = tuple(np.shape(first))
            if not isinstance(obs, (list, tuple)) and len(shape) in (4, 5):
                shape = shape[1:]  # 4-D and 5-D arrays are batches of observations
            layout = ObservationLayout.from_shape(shape, batched=False, floating=_floating(first))
        if self.scale is not None and layout.scale is None:
            layout = replace(layout, scale=self.scale)
        return layout

    def preprocess(self, obs: np.ndarray | torch.Tensor | Sequence) -> torch.Tensor:
        """Raw observations (one or a batch) -> float network input [B, K*C, H, W]."""
        if self._preprocess is None:
            layout = self.layout_for(obs)
            x = layout.to_network(obs, self.device)
        elif self.layout is not None:
            x = self._preprocess(self.layout_for(obs).batch(obs, self.device))
        else:
            x = self._preprocess(to_tensor_batch(obs, self.device))
        if not self._scale_checked:
            self._check_input_scale(obs, x)
        return x

    def _check_input_scale(self, obs, x: torch.Tensor) -> None:
        """Once: raise if uint8 pixels reach the first layer scaled twice (max <= 1/255)."""
        first = obs[0] if isinstance(obs, (list, tuple)) else obs
        dtype = getattr(first, "dtype", None)
        if dtype not in (np.uint8, torch.uint8):
            return
        raw_max = float(first.max()) if isinstance(first, torch.Tensor) else float(np.max(first))
        if raw_max < 2:  # a (nearly) black frame says nothing about scaling
            return
        self._scale_checked = True
        seen: list[tuple[str, float]] = []
        names = {m: n for n, m in self.model.named_modules()}

        per_row = x[:1].numel()

        def record(module: nn.Module, args: tuple) -> None:
            # The first layer fed the pixels themselves (same size as the input, perhaps
            # scaled or permuted), not a recurrent state or another head's features.
            if not seen and args and isinstance(args[0], torch.Tensor):
                if args[0].numel() == per_row:
                    seen.append((names.get(module, "?"), float(args[0].detach().abs().max())))

        layers = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
        hooked = [m for m in self.model.modules() if isinstance(m, layers)]
        handles = [m.register_forward_pre_hook(record) for m in hooked]
        try:
            with torch.no_grad():
                row = x[:1]
                if self.recurrent:
                    self.step(row, self.initial_state(1))
                else:
                    self._forward(row)
        except RuntimeError:
            # the network rejects these inputs: the caller's own forward says so, in its words
            self._scale_checked = False
            return
        finally:
            for handle in handles:
                handle.remove()
        if seen and 0.0 < seen[0][1] <= 1.0 / 255.0 + 1e-7:
            layer, top = seen[0]
            raise ValueError(
                f"pixels up to {raw_max:.0f} reach the network's first layer {layer!r} as at most "
                f"{top:.2g} (<= 1/255): they are scaled twice (rlviz divides uint8 by 255 and the "
                "model divides again); pass scale=1.0 to PolicyAdapter, or use the framework's "
                "PolicyAdapter.from_* constructor"
            )

    def initial_state(self, batch: int) -> State:
        """A recurrent policy's state at an episode start, batch-first tensors [batch, ...]."""
        if self._initial_state is None:
            raise ValueError("this policy is not recurrent: it has no state")
        return tuple(s.to(self.device) for s in self._initial_state(int(batch)))

    @contextmanager
    def from_start(self) -> Iterator[None]:
        """Within the block, a recurrent policy given no state (and holding none) reads each
        batch with its initial state, as at an episode's start: exact for the layers before its
        memory (a CNN encoder's), an episode-start reading for what comes after. For views that
        have no state per observation (the explorer's NMF and network tabs)."""
        previous, self._from_start = self._from_start, True
        try:
            yield
        finally:
            self._from_start = previous

    @contextmanager
    def holding_state(self, state: State | None) -> Iterator[None]:
        """Within the block, :meth:`outputs` of a recurrent policy uses ``state`` (rows [B, ...]).

        For code that runs the network through layers it does not own (state maps, deletion
        curves, feature visualisation); attribution methods pass the state to
        :meth:`outputs` themselves (:class:`rlviz.methods.base.MapRequest`)."""
        previous, self._held_state = self._held_state, state
        try:
            yield
        finally:
            self._held_state = previous

    def outputs(
        self, x: torch.Tensor, state: State | None = None, rows: torch.Tensor | slice | None = None
    ) -> PolicyOutput:
        """Network outputs for a preprocessed batch ``x`` [B, C, H, W] (keeps the autograd graph).

        A recurrent policy reads ``state`` or, when none is given, the held state (see
        :meth:`holding_state`); ``rows`` picks the state row of each input, for batches built
        from repeated frames.
        """
        if self._state_forward is None:
            return read_output(self._forward(x), self.output)
        return read_output(self.step(x, state, rows)[0], self.output)

    def step(
        self, x: torch.Tensor, state: State | None = None, rows: torch.Tensor | slice | None = None
    ) -> tuple[object, State]:
        """A recurrent policy's (raw outputs, next state) for input ``x`` entering ``state`` (or
        the held one), input i reading state row ``rows[i]`` when ``rows`` is given."""
        if self._state_forward is None:
            raise ValueError("this policy is not recurrent: use outputs(x)")
        if state is None and self._held_state is None and self._from_start:
            state, rows = self.initial_state(x.shape[0]), None  # every row starts alike
        if state is None:
            if self._held_state is None:
                raise ValueError(
                    "a recurrent policy is explained with the state entering each step held "
                    "fixed: pass states= (rollouts record them, e.g. states=rollout.states)"
                )
            state = self._held_state
        if rows is not None:
            state = tuple(s[rows] for s in state)
        if state[0].shape[0] != x.shape[0]:
            raise ValueError(
                f"the recurrent state has {state[0].shape[0]} rows for {x.shape[0]} inputs; give "
                "one state per observation"
            )
        return self._state_forward(x, state)

    @torch.no_grad()
    def __call__(self, obs: np.ndarray | torch.Tensor | Sequence) -> PolicyOutput:
        """Outputs for raw observations, without gradients."""
        return self.outputs(self.preprocess(obs))

    def logits(self, obs: np.ndarray | torch.Tensor | Sequence) -> torch.Tensor:
        """Action logits [B, A] for raw observations."""
        return self(obs).logits

    def value(self, obs: np.ndarray | torch.Tensor | Sequence) -> torch.Tensor:
        """State values [B]; raises if the policy has no critic."""
        value = self(obs).value
        if value is None:
            raise ValueError(
                "this policy has no value head; pass a forward that returns (logits, value)"
            )
        return value

    def probs(self, obs: np.ndarray | torch.Tensor | Sequence) -> torch.Tensor:
        """Action probabilities [B, A] for raw observations."""
        return self(obs).probs

    def action_names_for(self, n_actions: int, env=None) -> tuple[str, ...]:
        """Labels for ``n_actions`` actions: the one rule for every panel, plot and wrapper.

        The first source whose length is ``n_actions`` wins: this adapter's ``action_names``, the
        env's ``unwrapped.action_names``, its ``unwrapped.get_action_meanings()`` (lower-cased, as
        Atari's), else ``a0, a1, ...``.
        """
        unwrapped = getattr(env, "unwrapped", env)
        for names in (self.action_names, getattr(unwrapped, "action_names", None)):
            if names is not None and len(names) == n_actions:
                return tuple(names)
        meanings = getattr(unwrapped, "get_action_meanings", None)
        if callable(meanings):
            names = meanings()
            if len(names) == n_actions:
                return tuple(str(n).lower() for n in names)
        return tuple(f"a{k}" for k in range(n_actions))


def _fits(layout: ObservationLayout, shape: tuple[int, ...]) -> bool:
    try:
        layout.image_size(shape)
    except LayoutError:
        return False
    return True


def _example_shape(layout: ObservationLayout, shape: tuple[int, ...]) -> tuple[int, ...]:
    """One observation of ``layout``, with the image size guessed from the largest axes seen."""
    sizes = sorted(shape, reverse=True)[:2] if len(shape) >= 2 else [84, 84]
    return layout.obs_shape(*sizes)


def as_adapter(policy: PolicyAdapter | nn.Module) -> PolicyAdapter:
    """``policy`` as a :class:`PolicyAdapter` (an ``nn.Module`` is wrapped with the defaults)."""
    if isinstance(policy, PolicyAdapter):
        return policy
    if isinstance(policy, nn.Module):
        return PolicyAdapter(policy)
    raise TypeError(
        f"expected a rlviz.PolicyAdapter or an nn.Module, got {type(policy).__name__}; "
        "wrap other policies with rlviz.PolicyAdapter(module, forward=fn)"
    )
