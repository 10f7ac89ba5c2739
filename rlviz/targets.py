"""What to explain: small callables from a :class:`PolicyOutput` to one scalar per sample, [B].

A target that carries per-sample data (the actions of a rollout) also implements ``subset(index)``
so methods can explain long episodes in chunks; sample-independent targets need not.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from rlviz.policy import PolicyOutput

Target = Callable[[PolicyOutput], torch.Tensor]


def _gather(values: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    if index.ndim == 0:
        index = index.expand(values.shape[0])
    if index.shape[0] != values.shape[0]:
        raise ValueError(
            f"got {index.shape[0]} actions for a batch of {values.shape[0]} observations"
        )
    n_actions = values.shape[-1]
    if int(index.min()) < 0 or int(index.max()) >= n_actions:
        raise ValueError(
            f"action index out of range: policy has {n_actions} actions, got {index.tolist()}"
        )
    return values.gather(1, index.view(-1, 1)).squeeze(1)


class _PerSampleIndex:
    """Shared by targets indexed by an action (one for all samples, or one per sample)."""

    def __init__(self, actions: int | Sequence[int] | np.ndarray | torch.Tensor) -> None:
        tensor = torch.as_tensor(
            np.asarray(actions) if not isinstance(actions, torch.Tensor) else actions
        )
        # Box actions stay real-valued ([B, D] or one [D] for all); indices become int64.
        self.actions = tensor.float() if tensor.is_floating_point() else tensor.long()

    def _index(self, like: torch.Tensor) -> torch.Tensor:
        return self.actions.to(like.device)

    def subset(self, index: slice | np.ndarray | torch.Tensor):
        """The same target restricted to the samples ``index`` (for chunked attribution)."""
        if self.actions.ndim == 0:
            return self
        clone = object.__new__(type(self))
        clone.__dict__.update(self.__dict__)
        clone.actions = self.actions[index]
        return clone


class TakenAction(_PerSampleIndex):
    """log pi(a_t | s_t) of the action each sample took: the default for stochastic policies.

    Discrete: one index per sample (or one for all). Continuous: actions [B, D] (or one [D] for
    all) as the policy emits them (in [-1, 1] for a squashed Gaussian such as SAC's).
    """

    def __call__(self, out: PolicyOutput) -> torch.Tensor:
        if out.discrete:
            return _gather(out.log_probs, self._index(out.logits))
        actions = self.actions.to(out.mean.device)
        if actions.ndim == 1 and actions.shape[0] == out.action_dims:
            actions = actions.expand(out.batch, -1)
        if actions.ndim != 2 or tuple(actions.shape) != (out.batch, out.action_dims):
            raise ValueError(
                f"a continuous policy's TakenAction needs actions [{out.batch}, "
                f"{out.action_dims}] (one per sample) or [{out.action_dims}]; got "
                f"{list(actions.shape)}"
            )
        return out.log_prob(actions)


class ActionMean(_PerSampleIndex):
    """A continuous policy's mean action in dimension ``d`` (tanh'd for a squashed Gaussian;
    the action itself for a deterministic one): what moves steering, gas, ..."""

    def __call__(self, out: PolicyOutput) -> torch.Tensor:
        if out.discrete:
            raise ValueError(
                "ActionMean explains a continuous (Box) policy; this one is discrete: use "
                "ActionLogit(k) or TakenAction(actions)"
            )
        return _gather(out.action_mean, self._index(out.mean))


class ActionStd(_PerSampleIndex):
    """A Gaussian policy's standard deviation in dimension ``d``: what makes it (un)sure there."""

    def __call__(self, out: PolicyOutput) -> torch.Tensor:
        if out.std is None:
            raise ValueError(f"a {out.kind!r} policy has no standard deviation to explain")
        return _gather(out.std, self._index(out.mean))


class ActionLogit(_PerSampleIndex):
    """The raw logit of action ``k`` (one index for all samples, or one per sample)."""

    def __call__(self, out: PolicyOutput) -> torch.Tensor:
        return _gather(out.logits, self._index(out.logits))


class ActionProb(_PerSampleIndex):
    """pi(k | s): the probability of action ``k``."""

    def __call__(self, out: PolicyOutput) -> torch.Tensor:
        return _gather(out.probs, self._index(out.logits))


class MostLikelyAction:
    """log pi(a* | s) for the greedy action a* = argmax pi (chosen without gradient)."""

    def __call__(self, out: PolicyOutput) -> torch.Tensor:
        if not out.discrete:
            raise ValueError(
                f"a {out.kind!r} (continuous) policy has no single most likely action to "
                "explain; pass target=rlviz.targets.ActionMean(d) (dimension d's mean), "
                "TakenAction(actions) or 'value'"
            )
        best = out.logits.detach().argmax(dim=-1)
        return _gather(out.log_probs, best)


class Value:
    """The critic's value estimate V(s)."""

    def __call__(self, out: PolicyOutput) -> torch.Tensor:
        if out.value is None:
            raise ValueError(
                "target Value() needs a policy with a value head; this adapter returns none"
            )
        return out.value


class Entropy:
    """Entropy of pi(.|s): what makes the agent (un)certain."""

    def __call__(self, out: PolicyOutput) -> torch.Tensor:
        if out.kind == "gaussian":  # closed form of a diagonal Gaussian's entropy
            return (out.log_std + 0.5 * (1.0 + np.log(2 * np.pi))).sum(dim=-1)
        log_probs = out.log_probs
        return -(log_probs.exp() * log_probs).sum(dim=-1)


def as_target(spec: Target | int | str | None) -> Target:
    """Normalise a user's target: ``None`` -> greedy action, int -> that action's logit,
    ``"value"`` / ``"entropy"`` / ``"greedy"`` by name, callables unchanged."""
    if spec is None:
        return MostLikelyAction()
    if isinstance(spec, (int, np.integer)):
        return ActionLogit(int(spec))
    if isinstance(spec, str):
        named = {"value": Value, "entropy": Entropy, "greedy": MostLikelyAction}
        if spec not in named:
            raise ValueError(f"unknown target {spec!r}; use one of {sorted(named)} or a callable")
        return named[spec]()
    if callable(spec):
        return spec
    raise TypeError(
        f"a target must be a callable, an action index or a name, got {type(spec).__name__}"
    )


def subset_target(target: Target, index: slice | np.ndarray | torch.Tensor) -> Target:
    """``target`` restricted to the samples ``index``; sample-independent targets are returned as is."""
    subset = getattr(target, "subset", None)
    return subset(index) if subset is not None else target
