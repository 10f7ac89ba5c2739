"""Ablation: switch units off and measure what the policy does without them.

The causal check behind "this unit detects the box": if the top box detectors matter, zeroing them
should hurt the success rate more than zeroing as many random units of the same layers (compare
Bau et al. 2017, section 4, and Zhou et al., "Revisiting the Importance of Individual Units in
CNNs via Ablation", 2018).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from rlviz.features._common import new_figure, observations, play_episodes
from rlviz.hooks import get_layer
from rlviz.io import save_figure
from rlviz.policy import PolicyAdapter

Units = Mapping[str, Sequence[int]] | Sequence[tuple[str, int]] | Sequence[object]


def group_units(units: Units) -> dict[str, list[int]]:
    """Normalise units to ``{layer: [unit, ...]}``: accepts that dict, (layer, unit) pairs, or
    objects with ``.layer`` and ``.unit`` (e.g. dissection scores)."""
    if isinstance(units, Mapping):
        return {str(layer): sorted({int(u) for u in idx}) for layer, idx in units.items()}
    grouped: dict[str, set[int]] = {}
    for item in units:
        if hasattr(item, "layer") and hasattr(item, "unit"):
            layer, unit = item.layer, item.unit
        elif isinstance(item, (tuple, list)) and len(item) == 2:
            layer, unit = item
        else:
            raise TypeError(f"a unit must be (layer, index) or have .layer/.unit, got {item!r}")
        grouped.setdefault(str(layer), set()).add(int(unit))
    return {layer: sorted(idx) for layer, idx in grouped.items()}


@contextmanager
def ablate(model: nn.Module, units: Units, value: float = 0.0) -> Iterator[dict[str, list[int]]]:
    """Inside the ``with`` block, the given units output ``value`` (0: switched off).

    A forward hook on each layer replaces the chosen channels of its output (conv [B, C, h, w] or
    linear [B, D]); the hooks are removed on exit, also when the block raises.

    Yields:
        the units as ``{layer: [unit, ...]}``.
    """
    grouped = group_units(units)
    modules = {layer: get_layer(model, layer) for layer in grouped}
    handles = []

    def make_hook(layer: str, index: list[int]):
        def hook(_module: nn.Module, _inputs: tuple, output: torch.Tensor) -> torch.Tensor:
            channels = output.shape[1] if output.ndim > 1 else 0
            if index and index[-1] >= channels:
                raise ValueError(
                    f"layer {layer!r} has {channels} units; cannot ablate unit {index[-1]}"
                )
            out = output.clone()  # never write into a tensor the graph may still need
            out[:, index] = value
            return out

        return hook

    try:
        for layer, index in grouped.items():
            if index:
                handles.append(modules[layer].register_forward_hook(make_hook(layer, index)))
        yield grouped
    finally:
        for handle in handles:
            handle.remove()


@dataclass
class ActionChange:
    """How the action distribution moves when units are ablated, over a set of frames.

    Attributes:
        probs: float32 [N, A], pi(.|s) intact.
        probs_ablated: float32 [N, A], pi(.|s) with the units off.
        kl: float32 [N], KL(intact || ablated) per frame.
        tv: float32 [N], total-variation distance per frame.
        flipped: bool [N], whether the most likely action changed.
    """

    probs: np.ndarray
    probs_ablated: np.ndarray
    kl: np.ndarray
    tv: np.ndarray
    flipped: np.ndarray

    @property
    def flip_rate(self) -> float:
        """Fraction of frames whose greedy action changed."""
        return float(self.flipped.mean())


@torch.no_grad()
def action_change(
    adapter: PolicyAdapter,
    obs: np.ndarray,
    units: Units,
    *,
    value: float = 0.0,
    batch_size: int = 128,
) -> ActionChange:
    """Compare pi(.|s) with and without ``units`` on raw observations ``obs`` (frames
    [N, H, W, C], or stacks in the adapter's layout).
    """
    obs, _ = observations(adapter, obs)
    intact, ablated = [], []
    for start in range(0, len(obs), batch_size):
        x = adapter.preprocess(obs[start : start + batch_size])
        intact.append(adapter.outputs(x))
        with ablate(adapter.model, units, value):
            ablated.append(adapter.outputs(x))
    if not intact[0].discrete:
        return _box_action_change(intact, ablated)
    p, q = _gather(intact, "probs"), _gather(ablated, "probs")
    eps = 1e-12
    kl = (p * (torch.log(p + eps) - torch.log(q + eps))).sum(-1)
    return ActionChange(
        probs=p.numpy(),
        probs_ablated=q.numpy(),
        kl=kl.numpy(),
        tv=(0.5 * (p - q).abs().sum(-1)).numpy(),
        flipped=(p.argmax(-1) != q.argmax(-1)).numpy(),
    )


def _gather(outputs: list, field: str) -> torch.Tensor:
    """One field of per-batch policy outputs, concatenated as float32 on the CPU."""
    return torch.cat([getattr(out, field).float().cpu() for out in outputs])


def _box_action_change(intact: list, ablated: list) -> ActionChange:
    """A Box policy: KL between the diagonal Gaussians (a deterministic one: half the squared
    distance of its actions), TV left as NaN, a "flip" when any dimension's mean changes sign.
    ``probs`` hold the mean actions [N, D]."""
    m1, m2 = _gather(intact, "action_mean"), _gather(ablated, "action_mean")
    if intact[0].std is None:
        kl = 0.5 * (m1 - m2).pow(2).sum(-1)
    else:
        s1, s2 = _gather(intact, "std"), _gather(ablated, "std")
        kl = (torch.log(s2 / s1) + (s1.pow(2) + (m1 - m2).pow(2)) / (2 * s2.pow(2)) - 0.5).sum(-1)
    return ActionChange(
        probs=m1.numpy(),
        probs_ablated=m2.numpy(),
        kl=kl.numpy(),
        tv=np.full(len(m1), np.nan, np.float32),
        flipped=(torch.sign(m1) != torch.sign(m2)).any(-1).numpy(),
    )


@dataclass
class SuccessRate:
    """Outcome of ``episodes`` episodes: per-episode success flags and lengths."""

    successes: np.ndarray
    lengths: np.ndarray

    @property
    def rate(self) -> float:
        """Fraction of successful episodes."""
        return float(np.mean(self.successes)) if len(self.successes) else float("nan")


def success_rate(
    env,
    adapter: PolicyAdapter,
    episodes: int,
    *,
    units: Units | None = None,
    seed: int = 0,
    deterministic: bool = False,
    max_steps: int | None = None,
) -> SuccessRate:
    """Play ``episodes`` episodes in ``env`` (Gymnasium) with ``units`` ablated (None: intact).

    Episode i resets with ``seed + i`` and action sampling is seeded from ``seed``, so runs with
    and without ablation face the same rooms and the same random numbers (a paired comparison).
    """
    if episodes < 1:
        raise ValueError(f"episodes must be at least 1, got {episodes}")
    with ablate(adapter.model, units or {}):
        runs = play_episodes(
            env, adapter, episodes, seed=seed, deterministic=deterministic, max_steps=max_steps
        )
    return SuccessRate(np.array([r.success for r in runs]), np.array([len(r) for r in runs]))


def random_units_like(
    units: Units,
    model: nn.Module,
    channels: Mapping[str, int],
    rng: np.random.Generator,
    exclude: bool = True,
) -> dict[str, list[int]]:
    """As many random units per layer as ``units`` has, drawn from the same layers.

    Args:
        channels: layer -> number of units in it.
        exclude: never draw the units in ``units`` themselves (a control of other units).
    """
    grouped = group_units(units)
    out = {}
    for layer, chosen in grouped.items():
        if layer not in channels:
            get_layer(model, layer)  # raises with the list of valid names if misspelled
            raise ValueError(f"no unit count for layer {layer!r}; pass channels={{'{layer}': C}}")
        pool = np.arange(channels[layer])
        if exclude:
            pool = np.setdiff1d(pool, chosen)
        if len(pool) < len(chosen):
            raise ValueError(
                f"layer {layer!r} has only {len(pool)} other units; cannot draw {len(chosen)} random ones"
            )
        out[layer] = sorted(int(u) for u in rng.choice(pool, size=len(chosen), replace=False))
    return out


@dataclass
class AblationStudy:
    """Top-k detectors switched off vs k random units of the same layers.

    Attributes:
        units: the ablated detectors ``{layer: [unit]}``; k = their total.
        baseline: success with every unit on.
        targeted: success with the detectors off.
        random: one result per random draw, with the units drawn in ``random_units``.
        action_targeted / action_random: action-distribution change on a frame set, if one was given.
    """

    units: dict[str, list[int]]
    baseline: SuccessRate
    targeted: SuccessRate
    random: list[SuccessRate]
    random_units: list[dict[str, list[int]]]
    action_targeted: ActionChange | None = None
    action_random: list[ActionChange] = field(default_factory=list)

    @property
    def k(self) -> int:
        return sum(len(v) for v in self.units.values())

    def summary(self) -> dict[str, float]:
        """Success rates and drops (baseline minus ablated) as plain numbers."""
        rand = np.array([r.rate for r in self.random]) if self.random else np.array([np.nan])
        out = {
            "k": float(self.k),
            "baseline": self.baseline.rate,
            "targeted": self.targeted.rate,
            "targeted_drop": self.baseline.rate - self.targeted.rate,
            "random_mean": float(rand.mean()),
            "random_std": float(rand.std()),
            "random_drop_mean": float(self.baseline.rate - rand.mean()),
        }
        if self.action_targeted is not None:
            out["kl_targeted"] = float(self.action_targeted.kl.mean())
            out["flip_targeted"] = self.action_targeted.flip_rate
        if self.action_random:
            out["kl_random_mean"] = float(np.mean([a.kl.mean() for a in self.action_random]))
            out["flip_random_mean"] = float(np.mean([a.flip_rate for a in self.action_random]))
        return out

    def report(self) -> dict:
        """:meth:`summary` with the units switched off: the detectors and each random draw's."""
        return {**self.summary(), "units": self.units, "random_units": self.random_units}


def ablation_study(
    env,
    adapter: PolicyAdapter,
    units: Units,
    channels: Mapping[str, int],
    *,
    episodes: int = 20,
    random_draws: int = 5,
    seed: int = 0,
    deterministic: bool = False,
    obs: np.ndarray | None = None,
    max_steps: int | None = None,
    progress: bool = False,
) -> AblationStudy:
    """Success rate intact, with ``units`` off, and with as many random units off (``random_draws``
    draws from the same layers, excluding ``units``); all on the same seeded episodes.

    Args:
        channels: layer -> number of units, to draw random units from.
        obs: optional frames [N, H, W, C] to also measure the action-distribution change on.
    """
    from tqdm.auto import tqdm

    grouped = group_units(units)
    rng = np.random.default_rng(seed)
    draws = [random_units_like(grouped, adapter.model, channels, rng) for _ in range(random_draws)]
    conditions: list[dict[str, list[int]] | None] = [None, grouped, *draws]
    play = dict(seed=seed, deterministic=deterministic, max_steps=max_steps)
    results = [
        success_rate(env, adapter, episodes, units=condition, **play)
        for condition in tqdm(conditions, desc="ablation conditions", disable=not progress)
    ]
    study = AblationStudy(grouped, results[0], results[1], results[2:], draws)
    if obs is not None:
        study.action_targeted = action_change(adapter, obs, grouped)
        study.action_random = [action_change(adapter, obs, d) for d in draws]
    return study


#: Fewer episodes than this per condition: success rates are flagged as a small sample.
SMALL_SAMPLE = 30


def binomial_margin(n: int) -> float:
    """The widest 95% margin of a success rate from ``n`` episodes (p = 0.5, normal approx.)."""
    return 1.96 * 0.5 / max(n, 1) ** 0.5


def format_units(units: dict[str, list[int]]) -> str:
    """``{"conv3": [1, 4]}`` -> ``"conv3 #1 #4"``, one layer after another."""
    return ", ".join(f"{layer} " + " ".join(f"#{u}" for u in us) for layer, us in units.items())


def plot_ablation(study: AblationStudy, path: str | os.PathLike, title: str | None = None) -> Path:
    """Success rate intact / detectors off / random units off (mean, std and each draw), and the
    action-distribution change if measured; returns the PNG path."""
    with_actions = study.action_targeted is not None
    fig = new_figure(9.0 if with_actions else 5.0, 3.8)
    axes = fig.subplots(1, 2 if with_actions else 1, squeeze=False)[0]
    ax = axes[0]
    rand = np.array([r.rate for r in study.random])
    means = [study.baseline.rate, study.targeted.rate, rand.mean() if len(rand) else np.nan]
    spread = [0, 0, rand.std() if len(rand) else 0]
    bars = ax.bar(
        [0, 1, 2], means, yerr=spread, capsize=4, color=["tab:grey", "tab:red", "tab:blue"]
    )
    # values written on the bars, so a zero success rate is visible too
    ax.bar_label(bars, labels=[f"{m:.2f}" for m in means], padding=2, fontsize=8)
    ax.scatter(2.0 + np.linspace(-0.15, 0.15, len(rand)), rand, color="black", s=10, zorder=3)
    n = len(study.baseline.successes)
    # No legend (it sat on the bar labels): the tick label says what the dots are.
    draws = f"dots: {len(rand)} draws" if len(rand) > 1 else "1 draw: no spread"
    ax.set_xticks(
        [0, 1, 2],
        [
            "intact",
            f"top-{study.k} detectors off\n{format_units(study.units)}",
            f"{study.k} random\nunits off\n({draws})",
        ],
        fontsize=8,
    )
    ax.set_ylabel(f"success rate ({n} episodes each)")
    ax.set_ylim(0, 1.15)
    panel = "Success rate under ablation"
    if n < SMALL_SAMPLE:
        panel += f"\nonly {n} episodes: each rate is +-{binomial_margin(n):.2f} (95%)"
    ax.set_title(panel, fontsize=9, color="tab:red" if n < SMALL_SAMPLE else "black")
    if with_actions:
        ax = axes[1]
        kl_rand = [a.kl.mean() for a in study.action_random]
        kls = [
            float(study.action_targeted.kl.mean()),
            float(np.mean(kl_rand)) if kl_rand else np.nan,
        ]
        spread = [0, np.std(kl_rand) if kl_rand else 0]
        bars = ax.bar([0, 1], kls, yerr=spread, capsize=4, color=["tab:red", "tab:blue"])
        ax.bar_label(bars, labels=[f"{k:.3f}" for k in kls], padding=2, fontsize=8)
        ax.set_xticks([0, 1], ["detectors off", "random off"])
        ax.set_ylabel("mean KL(intact || ablated) per frame")
        flips = f"greedy action flips: {study.action_targeted.flip_rate:.0%} vs " + (
            f"{np.mean([a.flip_rate for a in study.action_random]):.0%}"
            if study.action_random
            else "n/a"
        )
        ax.set_title(f"Action distribution change\n{flips}", fontsize=9)
    fig.suptitle(title or "Ablating box-detector units vs random units", fontsize=10)
    return save_figure(fig, path)
