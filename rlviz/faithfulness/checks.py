"""The measurements behind ``rlviz trust``, each on maps [B, H, W] of one policy and its frames.

- Model-parameter randomisation (Adebayo et al. 2018, https://arxiv.org/abs/1810.03292): reset the
  layers one after another, from the output layer down (cascading, "top_down"), and compare each
  randomised model's maps with the trained model's by Spearman rank correlation. A map that
  explains the model must decorrelate. Layers and seeds follow Quantus's MPRT (every module with
  ``reset_parameters``, registration order reversed; ``torch.manual_seed(seed + 1)`` before each
  reset), so the figures equal ``quantus.MPRT``'s on the same maps and model (tests).
- Efficient MPRT (Hedstroem et al. 2024, https://arxiv.org/abs/2405.02383): the relative rise of
  the maps' discrete entropy (100-bin histogram) from the trained to the fully randomised model,
  ``(H_random - H_trained) / H_trained``; a blank map has H = 0 and no score (NaN), so it cannot
  pass, which plain rank correlation lets through (Binder et al. 2022, arXiv 2211.12486).
- Random-logit test (Sixt et al. 2020, https://arxiv.org/abs/1912.09818): the map of another,
  randomly drawn action must differ from the taken action's.
- Deletion / insertion in map order with log pi(a_t|s_t) as the score, next to the same curves
  for a random pixel order (see :func:`log_prob_curves`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import torch
from torch import nn

from rlviz import metrics


def spearman(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Spearman rank correlation of each pair of maps a[i], b[i] (any shape past the batch axis):
    float64 [B]; NaN where a map is constant (no ranking), as ``scipy.stats.spearmanr``."""
    from scipy.stats import rankdata

    a = np.asarray(a).reshape(len(a), -1)
    b = np.asarray(b).reshape(len(b), -1)
    if a.shape != b.shape:
        raise ValueError(f"maps to correlate must have the same shape; got {a.shape}, {b.shape}")
    # Ties share their mean rank.
    ra, rb = (rankdata(np.asarray(v, dtype=np.float64), axis=1) for v in (a, b))
    ra -= ra.mean(1, keepdims=True)
    rb -= rb.mean(1, keepdims=True)
    norm = np.sqrt((ra * ra).sum(1) * (rb * rb).sum(1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(norm > 0, (ra * rb).sum(1) / np.where(norm > 0, norm, 1.0), np.nan)


def randomizable_layers(model: nn.Module) -> list[str]:
    """Names of the modules a randomisation test resets (those with ``reset_parameters``), in
    registration order (Quantus's choice)."""
    return [name for name, module in model.named_modules() if hasattr(module, "reset_parameters")]


def reset_layer(module: nn.Module, seed: int) -> None:
    """Re-initialise ``module`` as Quantus does (``reset_parameters`` after seeding with
    ``seed + 1``) without touching the caller's global random state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed + 1)
        module.reset_parameters()


@contextmanager
def restored(model: nn.Module) -> Iterator[nn.Module]:
    """Yield ``model``; on leaving, put back the parameters and buffers it had on entering."""
    saved = {k: v.detach().clone() for k, v in model.state_dict().items()}
    try:
        yield model
    finally:
        model.load_state_dict(saved)


def cascade(
    model: nn.Module,
    order: str = "top_down",
    seed: int = 42,
    layers: Sequence[str] | None = None,
) -> Iterator[str]:
    """Randomise ``model``'s layers in place one after another (cumulatively), yielding each
    layer's name once it is reset; the trained weights come back when the loop ends.

    ``order``: ``top_down`` (output layer first, Adebayo et al.'s cascade) or ``bottom_up``.
    The fully randomised model is the same for both orders (each layer's seed is ``seed + 1``).
    """
    if order not in ("top_down", "bottom_up"):
        raise ValueError(f"order must be 'top_down' or 'bottom_up', got {order!r}")
    names = list(layers) if layers is not None else randomizable_layers(model)
    modules = dict(model.named_modules())
    missing = [n for n in names if n not in modules or not hasattr(modules[n], "reset_parameters")]
    if missing or not names:
        raise ValueError(
            f"cannot randomise layers {missing or names}; randomisable: "
            f"{', '.join(randomizable_layers(model)) or '(none)'}"
        )
    if order == "top_down":
        names = names[::-1]
    with restored(model):
        for name in names:
            reset_layer(modules[name], seed)
            yield name


def mprt(
    model: nn.Module,
    explain: Callable[[], np.ndarray],
    reference: np.ndarray,
    order: str = "top_down",
    seed: int = 42,
    layers: Sequence[str] | None = None,
    keep_last: bool = False,
    absolute: bool = True,
) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    """Cascading randomisation of ``model``'s layers (:func:`cascade`; restored afterwards),
    comparing ``explain()``, maps [B, H, W] of the model as it is then, with the trained model's
    ``reference`` maps: ({layer name: Spearman per frame float64 [B]} in randomisation order, the
    fully randomised model's maps when ``keep_last`` (for :func:`efficient_mprt`), else None).

    ``absolute``: correlate |maps| (Quantus's default ``abs=True``): a sign flip of a signed map
    (a randomised head turning "for" into "against") is no change of where it looks.
    """
    scores, last = {}, None
    prepare = np.abs if absolute else np.asarray
    reference = prepare(reference)
    for name in cascade(model, order, seed, layers):
        maps = np.asarray(explain())
        scores[name] = spearman(reference, prepare(maps))
        last = maps
    return scores, (last if keep_last else None)


def discrete_entropy(maps: np.ndarray, bins: int = 100) -> np.ndarray:
    """Entropy (nats) of each map's histogram of values in ``bins`` equal bins: float64 [B]
    (Quantus's ``discrete_entropy``; 0 for a constant map)."""
    out = np.empty(len(maps))
    for i, m in enumerate(np.asarray(maps).reshape(len(maps), -1)):
        counts, _ = np.histogram(m, bins=bins)
        p = counts[counts > 0] / counts.sum()
        out[i] = float(-(p * np.log(p)).sum())
    return out


def efficient_mprt(trained: np.ndarray, randomised: np.ndarray, bins: int = 100) -> np.ndarray:
    """Efficient MPRT per frame: relative rise of the map's discrete entropy from the trained to
    the fully randomised model, float64 [B]; NaN for a blank (constant) trained map."""
    before, after = discrete_entropy(trained, bins), discrete_entropy(randomised, bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(before > 0, (after - before) / np.where(before > 0, before, 1.0), np.nan)


def other_actions(actions: np.ndarray, n_actions: int, seed: int = 0) -> np.ndarray:
    """For each taken action, another action drawn uniformly from the rest: int64 [B]."""
    actions = np.asarray(actions, dtype=np.int64)
    if n_actions < 2:
        raise ValueError(f"the random-logit test needs >= 2 actions, the policy has {n_actions}")
    shift = np.random.default_rng(seed).integers(1, n_actions, len(actions))
    return (actions + shift) % n_actions


class TakenLogProb:
    """log pi(a_t|s_t) of given actions, one per frame: the score deletion/insertion track here.

    (Not :class:`rlviz.TakenAction`, which :mod:`rlviz.metrics` turns into a probability.)
    """

    def __init__(self, actions) -> None:
        self.index = torch.as_tensor(np.asarray(actions)).long()

    def __call__(self, out) -> torch.Tensor:
        return out.log_probs.gather(1, self.index.to(out.logits.device)[:, None])[:, 0]

    def subset(self, index):
        return TakenLogProb(self.index[index])


def log_prob_curves(
    adapter,
    obs,
    maps: np.ndarray,
    actions: np.ndarray,
    fill: object,
    steps: int = 20,
    blur_sigma: float = 5.0,
    batch_size: int = 256,
) -> tuple[np.ndarray, np.ndarray]:
    """(deletion, insertion) curves of log pi(a_t|s_t), float64 [B, steps + 1] each: the
    most-attributed pixels replaced by ``fill`` first (deletion), or put back first into a frame
    that is all ``fill`` (insertion); every channel (and stack frame) of a pixel at once."""
    score = TakenLogProb(actions)
    kw = dict(target=score, steps=steps, fill=fill, blur_sigma=blur_sigma, batch_size=batch_size)
    return (
        metrics.deletion_curve(adapter, obs, maps, **kw),
        metrics.insertion_curve(adapter, obs, maps, **kw),
    )
