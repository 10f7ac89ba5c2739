"""What a policy's forward means: a typed :class:`PolicyOutput`, and reading raw results by a
declared kind.

A forward returns tensors; what they are (logits or probabilities? a Gaussian's mean and log-std,
or logits and a value?) cannot be read off their shapes. The adapter declares it with one of
:data:`OUTPUT_KINDS`; a result that fits several readings and was not declared raises with what was
seen and how to declare it, rather than being guessed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import torch

#: Discrete policies: ``logits`` (softmax gives pi), ``probs`` (rows already sum to 1),
#: ``q_values`` (Q(s, a) per action; pi is read as softmax(Q), the greedy action as argmax Q).
DISCRETE_KINDS = ("logits", "probs", "q_values")
#: Continuous (Box) policies: ``gaussian`` (mean, log-std; PPO/A2C), ``squashed_gaussian``
#: (tanh of a Gaussian, in [-1, 1]; SAC), ``deterministic`` (the action itself; TD3/DDPG).
CONTINUOUS_KINDS = ("gaussian", "squashed_gaussian", "deterministic")
OUTPUT_KINDS = DISCRETE_KINDS + CONTINUOUS_KINDS

_DECLARE = (
    "declare it: PolicyAdapter(model, output=KIND) with KIND one of "
    + ", ".join(repr(k) for k in OUTPUT_KINDS)
    + ", and a forward returning that (plus an optional value [B])"
)
# SB3's TanhBijector epsilon in the log-prob correction; matching it makes log pi agree exactly.
_TANH_EPS = 1e-6


def _describe(raw: object) -> str:
    if isinstance(raw, torch.Tensor):
        return f"Tensor {list(raw.shape)}"
    if isinstance(raw, (tuple, list)):
        inner = ", ".join(_describe(r) for r in raw)
        return f"{type(raw).__name__}({inner})"
    if isinstance(raw, Mapping):
        return "dict{" + ", ".join(f"{k}: {_describe(v)}" for k, v in raw.items()) + "}"
    return type(raw).__name__


class PolicyOutput:
    """What a policy says about a batch, typed by ``kind`` (see :data:`OUTPUT_KINDS`).

    Discrete kinds hold ``logits`` [B, A] (for ``probs`` the log of the probabilities, so that
    softmax gives them back; for ``q_values`` the Q-values). Continuous kinds hold ``mean`` [B, D]
    (the pre-tanh mean for ``squashed_gaussian``, the action for ``deterministic``) and ``log_std``
    [B, D]. ``value`` [B] is V(s) or Q(s, a) when the policy has a critic.
    """

    def __init__(
        self,
        logits: torch.Tensor | None = None,
        value: torch.Tensor | None = None,
        *,
        kind: str = "logits",
        mean: torch.Tensor | None = None,
        log_std: torch.Tensor | None = None,
    ) -> None:
        if kind not in OUTPUT_KINDS:
            raise ValueError(f"unknown policy output kind {kind!r}; {_DECLARE}")
        if kind in DISCRETE_KINDS and logits is None:
            raise ValueError(f"a {kind!r} policy output needs logits [B, A]")
        if kind in CONTINUOUS_KINDS and mean is None:
            raise ValueError(f"a {kind!r} policy output needs mean [B, D]")
        if kind in ("gaussian", "squashed_gaussian") and log_std is None:
            raise ValueError(f"a {kind!r} policy output needs log_std [B, D]")
        self.kind = kind
        self._logits = logits
        self.value = value
        self.mean = mean
        self.log_std = log_std

    def __repr__(self) -> str:
        parts = [f"kind={self.kind!r}"]
        for name in ("_logits", "mean", "log_std", "value"):
            tensor = getattr(self, name)
            if tensor is not None:
                parts.append(f"{name.strip('_')}={list(tensor.shape)}")
        return f"PolicyOutput({', '.join(parts)})"

    def tensors(self) -> dict[str, torch.Tensor | None]:
        """The output's tensors by name (``logits``, ``mean``, ``log_std``, ``value``; None where
        this kind has none), e.g. to compare two runs of one policy."""
        return dict(logits=self._logits, mean=self.mean, log_std=self.log_std, value=self.value)

    # -- kinds -----------------------------------------------------------------------------
    @classmethod
    def from_probs(cls, probs: torch.Tensor, value: torch.Tensor | None = None) -> PolicyOutput:
        """A discrete policy given as probabilities [B, A] (never softmaxed again)."""
        tiny = torch.finfo(probs.dtype).tiny
        return cls(torch.log(probs.clamp_min(tiny)), value, kind="probs")

    @classmethod
    def gaussian(
        cls,
        mean: torch.Tensor,
        log_std: torch.Tensor,
        value: torch.Tensor | None = None,
        squashed: bool = False,
    ) -> PolicyOutput:
        """A diagonal Gaussian policy (``squashed``: its tanh, as SAC's)."""
        kind = "squashed_gaussian" if squashed else "gaussian"
        return cls(None, value, kind=kind, mean=mean, log_std=log_std.expand_as(mean))

    @classmethod
    def deterministic(cls, action: torch.Tensor, value: torch.Tensor | None = None) -> PolicyOutput:
        """A deterministic continuous policy (TD3/DDPG): the action itself [B, D]."""
        return cls(None, value, kind="deterministic", mean=action)

    @property
    def discrete(self) -> bool:
        """Whether the policy picks one of A actions (else a Box action [D])."""
        return self.kind in DISCRETE_KINDS

    def _need_discrete(self, what: str) -> None:
        if not self.discrete:
            raise ValueError(
                f"a {self.kind!r} (continuous) policy has no {what}; explain "
                "rlviz.targets.TakenAction(actions) (log pi(a|s)), ActionMean(d) or Value()"
            )

    # -- discrete --------------------------------------------------------------------------
    @property
    def logits(self) -> torch.Tensor:
        """Discrete: logits [B, A] (log-probs for ``probs``, Q-values for ``q_values``)."""
        self._need_discrete("action logits")
        return self._logits

    @property
    def log_probs(self) -> torch.Tensor:
        """Discrete: log pi(.|s), [B, A]."""
        self._need_discrete("per-action log-probabilities")
        return torch.log_softmax(self._logits, dim=-1)

    @property
    def probs(self) -> torch.Tensor:
        """Discrete: pi(.|s), [B, A]."""
        self._need_discrete("per-action probabilities")
        return torch.softmax(self._logits, dim=-1)

    # -- any kind --------------------------------------------------------------------------
    @property
    def batch(self) -> int:
        """Rows in the batch."""
        return int((self._logits if self.discrete else self.mean).shape[0])

    @property
    def action_dims(self) -> int:
        """A (discrete actions) or D (dimensions of a Box action)."""
        return int((self._logits if self.discrete else self.mean).shape[-1])

    @property
    def std(self) -> torch.Tensor | None:
        """Continuous: the Gaussian's standard deviation [B, D] (None when deterministic)."""
        return None if self.log_std is None else self.log_std.exp()

    @property
    def action_mean(self) -> torch.Tensor:
        """Continuous: the mean action [B, D] (tanh of the mean for a squashed Gaussian, in
        [-1, 1], as SAC acts deterministically)."""
        if self.discrete:
            raise ValueError(f"a {self.kind!r} (discrete) policy has no mean action")
        return torch.tanh(self.mean) if self.kind == "squashed_gaussian" else self.mean

    def greedy(self) -> torch.Tensor:
        """The action a deterministic player takes: argmax [B] (discrete) or the mean [B, D]."""
        if self.discrete:
            return self._logits.argmax(dim=-1)
        return self.action_mean

    def log_prob(self, actions: torch.Tensor) -> torch.Tensor:
        """log pi(a|s) [B] of actions [B] (discrete indices) or [B, D] (continuous; in [-1, 1]
        for a squashed Gaussian)."""
        if self.discrete:
            index = actions.long().view(-1, 1)
            return self.log_probs.gather(1, index).squeeze(1)
        if self.kind == "deterministic":
            raise ValueError(
                "a deterministic policy has no log pi(a|s); explain ActionMean(d) or Value() instead"
            )
        actions = actions.to(self.mean.dtype).reshape(self.mean.shape)
        if self.kind == "squashed_gaussian":
            bound = 1.0 - torch.finfo(actions.dtype).eps
            clipped = actions.clamp(-bound, bound)
            pre_tanh = 0.5 * (clipped.log1p() - (-clipped).log1p())
            correction = torch.log(1.0 - actions.pow(2) + _TANH_EPS).sum(-1)
            return _normal_log_prob(pre_tanh, self.mean, self.log_std) - correction
        return _normal_log_prob(actions, self.mean, self.log_std)

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        """One action per row: [B] indices drawn from pi, or [B, D] Gaussian draws (tanh'd for a
        squashed Gaussian; the mean for a deterministic policy)."""
        if self.discrete:
            return torch.multinomial(self.probs.float(), 1, generator=generator)[:, 0]
        if self.kind == "deterministic":
            return self.mean
        noise = torch.randn(self.mean.shape, generator=generator, dtype=self.mean.dtype)
        draw = self.mean + noise.to(self.mean.device) * self.log_std.exp()
        return torch.tanh(draw) if self.kind == "squashed_gaussian" else draw


def kl_divergence(p: PolicyOutput, q: PolicyOutput) -> torch.Tensor:
    """KL(p || q) per row [B] of two outputs of one policy: over the actions (discrete), between
    diagonal Gaussians (summed over dimensions; for a squashed one, of the pre-tanh Gaussians,
    which tanh leaves unchanged), or half the squared distance of two deterministic actions."""
    if p.discrete:
        log_p, log_q = torch.log_softmax(p._logits, -1), torch.log_softmax(q._logits, -1)
        return (log_p.exp() * (log_p - log_q)).sum(-1).clamp_min(0.0)
    if p.log_std is None:
        return 0.5 * (p.mean - q.mean).pow(2).sum(-1)
    var_p, var_q = (2 * p.log_std).exp(), (2 * q.log_std).exp()
    terms = q.log_std - p.log_std + (var_p + (p.mean - q.mean).pow(2)) / (2 * var_q) - 0.5
    return terms.sum(-1).clamp_min(0.0)


def env_action(action: torch.Tensor | np.ndarray, kind: str, space) -> np.ndarray | int:
    """The policy's action (one row) as the env takes it.

    Discrete: the index. ``squashed_gaussian`` / ``deterministic`` (in [-1, 1], as SB3's SAC and
    TD3 emit): rescaled to the Box's bounds; ``gaussian``: clipped to them (as SB3's predict).
    """
    if kind in DISCRETE_KINDS:
        return int(np.asarray(action).reshape(-1)[0])
    values = np.asarray(action, dtype=np.float32).reshape(-1)
    low, high, finite = _bounds(space)
    if low is None:
        return values
    if kind == "gaussian" or not finite:
        return np.clip(values, low, high)
    return (low + 0.5 * (np.clip(values, -1.0, 1.0) + 1.0) * (high - low)).astype(np.float32)


def policy_action(actions: np.ndarray, kind: str, space) -> np.ndarray:
    """Env actions [T, D] back in the policy's own space (the inverse of :func:`env_action`):
    [-1, 1] for ``squashed_gaussian`` / ``deterministic`` policies on a bounded Box; as given
    otherwise (a Gaussian's clipped draw is the closest to what it sampled)."""
    actions = np.asarray(actions, np.float32)
    low, high, finite = _bounds(space)
    if kind not in ("squashed_gaussian", "deterministic") or not finite:
        return actions
    return (2.0 * (actions - low) / (high - low) - 1.0).astype(np.float32)


def _bounds(space) -> tuple[np.ndarray | None, np.ndarray | None, bool]:
    """A Box's (low, high) as float32 [D] and whether both are finite; (None, None, False)
    for a space without bounds."""
    low, high = getattr(space, "low", None), getattr(space, "high", None)
    if low is None or high is None:
        return None, None, False
    low, high = np.asarray(low, np.float32).reshape(-1), np.asarray(high, np.float32).reshape(-1)
    return low, high, bool(np.isfinite(low).all() and np.isfinite(high).all())


def _normal_log_prob(x: torch.Tensor, mean: torch.Tensor, log_std: torch.Tensor) -> torch.Tensor:
    z = (x - mean) * torch.exp(-log_std)
    return (-0.5 * z.pow(2) - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)


def _as_value(value: object, batch: int, raw: object) -> torch.Tensor | None:
    """``value`` as [B]: accepts [B] or [B, 1]; anything else raises (never a silent column 0)."""
    if value is None:
        return None
    if isinstance(value, torch.Tensor) and value.shape in ((batch,), (batch, 1)):
        return value.reshape(batch)
    raise ValueError(
        f"the policy's value must be a Tensor [B] or [B, 1] (B={batch}); the forward returned "
        f"{_describe(raw)}. {_DECLARE}"
    )


def _looks_like_probs(tensor: torch.Tensor) -> bool:
    """Rows that are non-negative and sum to 1: probabilities, not logits."""
    if tensor.ndim != 2 or tensor.shape[-1] < 2:
        return False
    rows = tensor.detach().float()
    return bool((rows >= 0).all()) and bool(
        torch.allclose(rows.sum(-1), torch.ones_like(rows[:, 0]), atol=1e-4)
    )


def read_output(raw: object, kind: str | None = None) -> PolicyOutput:
    """A forward's raw result as a :class:`PolicyOutput`.

    With ``kind`` declared, ``raw`` is (for discrete kinds) ``x`` or ``(x, value)``; for
    ``gaussian``/``squashed_gaussian`` ``(mean, log_std)`` or ``(mean, log_std, value)``; for
    ``deterministic`` ``action`` or ``(action, value)``; a dict may name ``logits``/``probs``/
    ``q_values``/``mean``/``log_std``/``value``. Undeclared, only the unambiguous forms are read:
    a Tensor [B, A] of logits (rows that already sum to 1 raise: declare ``'probs'`` or
    ``'logits'``) and a pair (logits [B, A], value [B] or [B, 1]); anything else raises.
    """
    if isinstance(raw, PolicyOutput):
        return raw
    if kind is not None and kind not in OUTPUT_KINDS:
        raise ValueError(f"unknown policy output kind {kind!r}; {_DECLARE}")
    if isinstance(raw, Mapping):
        return _read_mapping(raw, kind)
    parts = tuple(raw) if isinstance(raw, (tuple, list)) else (raw,)
    if not parts or not all(isinstance(p, torch.Tensor) or p is None for p in parts):
        raise ValueError(
            f"the policy's forward returned {_describe(raw)}; rlviz reads Tensors only. A "
            "(output, state) or (output, info) pair is not a (logits, value) pair: pass "
            "forward=lambda x: model(x)[0], or use the framework's PolicyAdapter.from_* "
            f"constructor; {_DECLARE}"
        )
    first = parts[0]
    if first is None or first.ndim != 2:
        raise ValueError(
            f"the policy's forward returned {_describe(raw)}; the policy part must be [B, A] "
            f"(or [B, D]); {_DECLARE}"
        )
    batch = first.shape[0]
    if kind is None:
        second = parts[1] if len(parts) == 2 else None
        if len(parts) > 2 or (second is not None and second.shape not in ((batch,), (batch, 1))):
            raise ValueError(
                f"the policy's forward returned {_describe(raw)}, which could be (logits, value), "
                f"a Gaussian's (mean, log_std) or (output, state); {_DECLARE}"
            )
        if _looks_like_probs(first):
            raise ValueError(
                f"the policy's forward returned rows that are already probabilities (>= 0, sum "
                f"1; first row {[round(float(p), 3) for p in first[0, :8]]}); softmaxing them "
                "again would flatten pi. Declare output='probs' (or output='logits' if they are "
                "logits)"
            )
        kind = "logits"
    gaussian = kind in ("gaussian", "squashed_gaussian")
    policy_parts = 2 if gaussian else 1  # the tensors before the optional value
    if not policy_parts <= len(parts) <= policy_parts + 1:
        shapes = "(mean, log_std) or (mean, log_std, value)"
        if not gaussian:
            shapes = f"{kind} [B, A] or ({kind}, value)"
        raise ValueError(f"a {kind!r} forward returns {shapes}; got {_describe(raw)}")
    if gaussian and (parts[1] is None or parts[1].shape[-1] != first.shape[-1]):
        raise ValueError(
            f"a {kind!r} output is (mean [B, D], log_std [B, D] or [D]); got {_describe(raw)}"
        )
    value = _as_value(parts[policy_parts] if len(parts) > policy_parts else None, batch, raw)
    if gaussian:
        return PolicyOutput.gaussian(first, parts[1], value, squashed=kind == "squashed_gaussian")
    if kind == "deterministic":
        return PolicyOutput.deterministic(first, value)
    if kind == "probs":
        return PolicyOutput.from_probs(first, value)
    return PolicyOutput(first, value, kind=kind)


def _read_mapping(raw: Mapping, kind: str | None) -> PolicyOutput:
    if kind is None:
        found = [k for k in ("logits", "probs", "q_values") if k in raw]
        if len(found) != 1 or "mean" in raw:
            raise ValueError(
                f"the policy's forward returned {_describe(raw)}; name one of 'logits', 'probs', "
                f"'q_values' (or declare output= for 'mean'/'log_std'); {_DECLARE}"
            )
        kind = found[0]
    value = raw.get("value")
    if kind in DISCRETE_KINDS:
        tensor = raw.get(kind, raw.get("logits"))
        if tensor is None:
            keys = [k for k in OUTPUT_KINDS + ("mean",) if k in raw]
            raise ValueError(f"a {kind!r} output dict needs the key {kind!r}; got keys {keys}")
        return read_output((tensor, value), kind)
    if "mean" not in raw:
        raise ValueError(f"a {kind!r} output dict needs the key 'mean'; got {_describe(raw)}")
    log_std = () if kind == "deterministic" else (raw.get("log_std"),)
    return read_output((raw["mean"], *log_std, value), kind)
