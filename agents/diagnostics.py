"""Training diagnostics: the checks a practitioner runs on every PPO update, a CSV log and a plot.

Per update the trainer logs episodic return, success rate, episode length, entropy, approx KL,
clip fraction, explained variance, value loss, gradient norm and the fraction of dead ReLU units.
:class:`HealthCheck` turns those numbers into console warnings when something is off: non-finite
values, entropy collapse before the task is solved, exploding gradients, KL spikes, dead units,
inputs that are not normalised.
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from rlviz.io import atomic_write_bytes

#: Columns of ``progress.csv``, in order.
COLUMNS = (
    "update",
    "step",
    "time_s",
    "sps",
    "episodes",
    "return",
    "success_rate",
    "episode_length",
    "success_rate_100",
    "entropy",
    "approx_kl",
    "clip_frac",
    "explained_var",
    "value_loss",
    "policy_loss",
    "grad_norm",
    "dead_relu",
    "lr",
    "skipped",
    "update_s",
    "env_wait",
    "stuck_frac",
)


def explained_variance(values: np.ndarray, returns: np.ndarray) -> float:
    """1 - Var(returns - values) / Var(returns): 1 is a perfect critic, <= 0 no better than a constant.

    Returns:
        float (NaN when the returns have no variance).
    """
    var = float(np.var(returns))
    return float("nan") if var == 0 else 1.0 - float(np.var(returns - values)) / var


@torch.no_grad()
def dead_relu_fraction(model: nn.Module, x: torch.Tensor, layers: Sequence[str]) -> float:
    """Fraction of ReLU units that output zero for every sample in ``x`` (and every position).

    ``layers`` name modules whose outputs are post-ReLU activations. A unit is a channel of a conv
    map (its weights are shared over positions) or a feature of a vector. A unit that never fires
    on a whole batch gets no gradient: a high fraction means lost capacity (learning rate too high).

    Returns:
        float in [0, 1].
    """
    from rlviz.hooks import capture

    with capture(model, list(layers)) as acts:
        model(x)
    dead = total = 0
    for name in layers:
        a = acts[name]
        fired = a > 0
        alive = fired.flatten(2).any(-1).any(0) if a.ndim == 4 else fired.any(0)
        dead += int((~alive).sum())
        total += alive.numel()
    return dead / max(total, 1)


@dataclass
class Thresholds:
    """When :class:`HealthCheck` warns."""

    entropy_frac: float = 0.1
    """Entropy below this fraction of log(A) while success_rate_100 < solved: entropy collapse."""
    solved: float = 0.9
    """Success rate above which low entropy is expected (a confident, solved policy)."""
    grad_norm: float = 50.0
    """Gradient norm (before clipping) above this: exploding gradients."""
    approx_kl: float = 0.1
    """Approx KL of one update above this: the policy jumped (lower the learning rate)."""
    dead_relu: float = 0.5
    """Fraction of dead ReLU units above this."""
    every: int = 20
    """Repeat the same kind of warning at most once per this many updates."""


class HealthCheck:
    """Turns per-update statistics into warnings (strings); the caller prints them."""

    def __init__(self, n_actions: int, thresholds: Thresholds | None = None) -> None:
        self.n_actions = n_actions
        self.t = thresholds or Thresholds()
        self._last: dict[str, int] = {}

    def _due(self, kind: str, update: int) -> bool:
        last = self._last.get(kind)
        if last is not None and update - last < self.t.every:
            return False
        self._last[kind] = update
        return True

    def check(self, stats: dict) -> list[str]:
        """Warnings for one update's ``stats`` (a row of :data:`COLUMNS`).

        Returns:
            list of human-readable warnings, empty when all is well.
        """
        update = int(stats.get("update", 0))
        out = []
        bad = [
            k
            for k in ("entropy", "approx_kl", "value_loss", "policy_loss", "grad_norm")
            if isinstance(stats.get(k), float) and not math.isfinite(stats[k])
        ]
        if bad or stats.get("skipped", 0):
            if self._due("nonfinite", update):
                out.append(
                    f"update {update}: non-finite {', '.join(bad) or 'loss'} "
                    f"({stats.get('skipped', 0)} optimizer steps skipped). Check the inputs and "
                    "rewards for NaN/Inf and lower the learning rate."
                )
        entropy, success = stats.get("entropy"), stats.get("success_rate_100")
        floor = self.t.entropy_frac * math.log(self.n_actions)
        if entropy is not None and math.isfinite(entropy) and entropy < floor:
            if (success is None or not success >= self.t.solved) and self._due("entropy", update):
                out.append(
                    f"update {update}: entropy collapsed to {entropy:.3f} (< {floor:.3f}) while "
                    f"success is {success if success is not None else 'unknown'}; the policy stopped "
                    "exploring. Raise --ent-coef or lower the learning rate."
                )
        grad = stats.get("grad_norm")
        if grad is not None and math.isfinite(grad) and grad > self.t.grad_norm:
            if self._due("grad", update):
                out.append(
                    f"update {update}: gradient norm {grad:.1f} > {self.t.grad_norm:g} (exploding "
                    "gradients; clipped). Lower the learning rate or check reward scale."
                )
        kl = stats.get("approx_kl")
        if kl is not None and math.isfinite(kl) and kl > self.t.approx_kl:
            if self._due("kl", update):
                out.append(
                    f"update {update}: approx KL {kl:.3f} > {self.t.approx_kl:g} (the policy moved "
                    "too far in one update). Lower the learning rate or set --target-kl."
                )
        dead = stats.get("dead_relu")
        if dead is not None and math.isfinite(dead) and dead > self.t.dead_relu:
            if self._due("dead", update):
                out.append(
                    f"update {update}: {100 * dead:.0f}% of ReLU units are dead on a whole "
                    "minibatch. Lower the learning rate."
                )
        return out


def check_inputs(x: torch.Tensor) -> list[str]:
    """Warnings about a preprocessed observation batch: non-finite, outside [0, 1], or blank.

    Returns:
        list of warnings (empty when the inputs look like normalised images).
    """
    out = []
    if not torch.isfinite(x).all():
        out.append("observations contain NaN/Inf after preprocessing")
        return out
    lo, hi = float(x.min()), float(x.max())
    if lo < 0.0 or hi > 1.0:
        out.append(f"observations span [{lo:.3g}, {hi:.3g}]; expected [0, 1] (uint8 frames / 255)")
    if float(x.std()) < 1e-3:
        out.append("observations are blank (constant); is the env rendering?")
    return out


def episode_stats(eps: list[tuple], recent: list[tuple], env_wait: float) -> dict:
    """Episode statistics of one rollout for ``progress.csv`` (NaN where no episode ended).

    Args:
        eps: ``(return, length, success, stuck_steps)`` of the episodes that ended in the rollout.
        recent: ``(return, length, success)`` of the last 100 episodes of the run.
        env_wait: fraction of the rollout's wall time spent waiting for the env workers.
    """
    nan = float("nan")
    return {
        "episodes": len(eps),
        "return": float(np.mean([e[0] for e in eps])) if eps else nan,
        "episode_length": float(np.mean([e[1] for e in eps])) if eps else nan,
        "success_rate": float(np.mean([e[2] for e in eps])) if eps else nan,
        "success_rate_100": float(np.mean([r[2] for r in recent])) if recent else nan,
        "env_wait": env_wait,
        "stuck_frac": sum(e[3] for e in eps) / max(sum(e[1] for e in eps), 1) if eps else nan,
    }


class CsvLog:
    """Appends rows of :data:`COLUMNS` to a CSV file (flushed after every row)."""

    def __init__(self, path: str | os.PathLike, keep_until_step: int | None = None) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if keep_until_step is not None and self.path.exists():
            # Resuming: drop rows logged after the checkpoint we resume from.
            rows = [r for r in read_csv(self.path) if float(r["step"]) <= keep_until_step]
            buf = io.StringIO()
            writer = csv.DictWriter(buf, fieldnames=COLUMNS)
            writer.writeheader()
            writer.writerows({k: r.get(k, "") for k in COLUMNS} for r in rows)
            atomic_write_bytes(self.path, buf.getvalue().encode())
        elif keep_until_step is None or not self.path.exists():
            with open(self.path, "w", newline="") as f:
                csv.DictWriter(f, fieldnames=COLUMNS).writeheader()

    def write(self, row: dict) -> None:
        """Append one row (missing columns are left empty)."""
        with open(self.path, "a", newline="") as f:
            csv.DictWriter(f, fieldnames=COLUMNS).writerow(
                {k: _fmt(row.get(k, "")) for k in COLUMNS}
            )


def _fmt(v: object) -> object:
    if isinstance(v, float):
        return f"{v:.6g}"
    return v


def read_csv(path: str | os.PathLike) -> list[dict]:
    """Rows of a ``progress.csv`` as dicts of strings."""
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _column(rows: Iterable[dict], key: str) -> np.ndarray:
    out = []
    for r in rows:
        try:
            out.append(float(r.get(key, "nan") or "nan"))
        except ValueError:
            out.append(float("nan"))
    return np.asarray(out)


def plot_learning_curve(
    csv_path: str | os.PathLike, png_path: str | os.PathLike, title: str = ""
) -> Path:
    """Draw success rate, return, episode length, entropy, KL, explained variance, value loss and
    grad norm against env steps from ``csv_path`` into ``png_path`` (atomic write).

    Returns:
        The PNG path.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    rows = read_csv(csv_path)
    steps = _column(rows, "step")
    panels = [
        ("success_rate_100", "success rate (last 100 episodes)"),
        ("return", "episodic return"),
        ("episode_length", "episode length"),
        ("entropy", "entropy"),
        ("approx_kl", "approx KL"),
        ("explained_var", "explained variance"),
        ("value_loss", "value loss"),
        ("grad_norm", "grad norm (pre-clip)"),
    ]
    fig = Figure(figsize=(12, 6), dpi=80)
    axes = fig.subplots(2, 4)
    for ax, (key, label) in zip(axes.flat, panels, strict=True):
        y = _column(rows, key)
        ax.plot(steps, y, lw=1.2)
        if not np.isfinite(np.asarray(y, dtype=float)).any():
            # No episode has ended yet (or nothing logged): say so, not an empty -0.04..0.04 box.
            ax.text(0.5, 0.5, "no episode ended yet", ha="center", va="center",
                    transform=ax.transAxes, fontsize=8, color="0.4")  # fmt: skip
            ax.set_yticks([])
            if len(steps) and np.nanmax(steps) > np.nanmin(steps):
                ax.set_xlim(np.nanmin(steps), np.nanmax(steps))  # the steps the others show
        ax.set_title(label, fontsize=9)
        ax.set_xlabel("env steps", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    atomic_write_bytes(png_path, buf.getvalue())
    return Path(png_path)
