"""``rlviz.trust(policy, env)``: which attribution map to trust for this agent, measured on its own
recorded episodes. Every method (and target) is scored on the same frames with the checks of
:mod:`rlviz.faithfulness.checks` and ground truth where the env gives masks; each row ends in a
one-line verdict. :mod:`rlviz.faithfulness.report` writes the result as JSON, CSV and PNG.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from rlviz import metrics
from rlviz.faithfulness import checks
from rlviz.faithfulness.verdict import THRESHOLDS, judge, verdict
from rlviz.methods import AttributionMethod, available_methods, get_method
from rlviz.methods.perturbation import AllLogits
from rlviz.policy import PolicyAdapter, as_adapter
from rlviz.targets import TakenAction

#: Row targets: ``taken`` = log pi(a_t|s_t) of the recorded action; ``logits`` = Greydanus' score
#: over the whole logit vector (perturbation only).
TARGETS = ("taken", "logits")


class NotApplicable(ValueError):
    """A method that cannot explain this network (its own error says why); the report lists it."""


@dataclass
class Frames:
    """The recorded frames every row is scored on."""

    obs: np.ndarray  # [N, ...] as the policy reads them
    actions: np.ndarray  # int64 [N], the actions taken
    masks: np.ndarray | None  # bool [N, H, W] ground truth, or None
    states: tuple | None  # recurrent state entering each frame, or None
    episodes: int
    steps: int  # steps recorded in all episodes


@dataclass
class TrustReport:
    """What :func:`trust` measured: ``rows`` (one dict per method and target), the settings and
    the thresholds; :meth:`verdicts` the one-line verdicts."""

    rows: list[dict]
    settings: dict
    thresholds: dict = field(default_factory=lambda: dict(THRESHOLDS))
    paths: list = field(default_factory=list)  # the files written, if any
    skipped: dict = field(default_factory=dict)  # row -> why the method does not apply here

    def verdicts(self) -> list[str]:
        """One line per row: ``"occlusion: faithful here"`` or what it fails; then the methods
        that do not apply to this network (CAM without a GAP head) and why."""
        lines = [row["verdict"] for row in self.rows]
        return lines + [f"{row}: not applicable here ({why})" for row, why in self.skipped.items()]

    def to_dict(self) -> dict:
        """JSON-ready dict (what ``trust.json`` holds)."""
        return {
            "settings": self.settings,
            "thresholds": self.thresholds,
            "rows": self.rows,
            "skipped": self.skipped,
        }


def record(
    env,
    policy: PolicyAdapter,
    episodes: int = 2,
    frames: int = 48,
    seed: int = 0,
    mask_key: str | None = None,
    deterministic: bool = False,
    max_steps: int | None = None,
) -> tuple[PolicyAdapter, Frames]:
    """Play ``episodes`` with :func:`rlviz.rollout.collect` and keep ``frames`` steps evenly spread
    over them (all when fewer): (the policy in the env's layout, the frames)."""
    from rlviz.rollout import collect, with_layout

    keys = [mask_key] if mask_key else []
    rollouts = list(
        collect(
            env,
            policy,
            episodes,
            seed=seed,
            deterministic=deterministic,
            info_keys=keys,
            max_steps=max_steps,
        )
    )
    total = sum(len(r.actions) for r in rollouts)
    pick = np.unique(np.linspace(0, total - 1, min(frames, total)).round().astype(np.int64))
    obs = np.concatenate([r.obs for r in rollouts])[pick]
    actions = np.concatenate([r.actions for r in rollouts])[pick]
    masks = None
    if mask_key:
        missing = [i for i, r in enumerate(rollouts) if mask_key not in r.infos]
        if missing:
            raise KeyError(
                f"info key {mask_key!r} is not in the env's info (episode {missing[0]}); "
                f"keys there: {sorted(rollouts[missing[0]].infos) or '(none)'}"
            )
        masks = np.concatenate([r.infos[mask_key] for r in rollouts])[pick].astype(bool)
    states = None
    if rollouts[0].states is not None:
        states = tuple(
            torch.cat([r.states[i] for r in rollouts])[torch.as_tensor(pick)]
            for i in range(len(rollouts[0].states))
        )
    adapter = with_layout(as_adapter(policy), rollouts[0].layout)
    return adapter, Frames(obs, actions, masks, states, len(rollouts), total)


def method_fill(method) -> tuple[object, float]:
    """The fill a method itself puts where it removes evidence, and its blur sigma: occlusion's
    ``fill``, perturbation's blur, integrated gradients' baseline; black (0, RISE's deletion) for
    the gradient and CAM families, which remove nothing."""
    if method.name == "perturbation":
        return "blur", method.blur_sigma
    for attribute in ("fill", "baseline"):
        value = getattr(method, attribute, None)
        if value is not None:
            return value, float(getattr(method, "blur_sigma", 5.0))
    return 0.0, 5.0


def _curve_summary(curves, auc, random_auc, gains) -> dict:
    """A deletion or insertion curve's entry of a row: AUCs, mean gain over the random order
    (``gains`` per frame) with its standard error, and the mean curve."""
    gains = np.asarray(gains, dtype=np.float64)
    se = gains.std(ddof=1) / np.sqrt(len(gains)) if len(gains) > 1 else float("inf")
    return {
        "auc": float(auc.mean()),
        "random_auc": float(random_auc.mean()),
        "gain": float(gains.mean()),
        "se": float(se),
        "curve": curves.mean(0).tolist(),
    }


def _nan_as(values: np.ndarray, fill: float) -> float:
    """Mean over frames with an undefined value (a constant map) counted as ``fill``."""
    return float(np.where(np.isnan(values), fill, values).mean())


class _Baselines:
    """Random-order deletion / insertion AUCs per fill, computed once for all rows."""

    def __init__(self, adapter, frames: Frames, steps: int, batch_size: int, seed: int):
        self.adapter, self.frames, self.steps, self.batch_size = adapter, frames, steps, batch_size
        self.seed = seed
        self._cache: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def __call__(self, fill, sigma: float) -> tuple[np.ndarray, np.ndarray]:
        key = f"{fill!r}/{sigma}"
        if key not in self._cache:
            x = self.adapter.preprocess(self.frames.obs[:1])
            shape = (len(self.frames.actions), x.shape[-2], x.shape[-1])
            # Uniform noise maps: a random pixel order.
            noise = np.random.default_rng(self.seed).random(shape).astype(np.float32)
            d, i = checks.log_prob_curves(
                self.adapter, self.frames.obs, noise, self.frames.actions, fill, self.steps,
                sigma, self.batch_size,
            )  # fmt: skip
            self._cache[key] = (metrics.auc(d), metrics.auc(i))
        return self._cache[key]


def _ground_truth(maps: np.ndarray, masks: np.ndarray | None, key: str | None) -> dict | None:
    if masks is None:
        return None
    if masks.shape[1:] != maps.shape[1:]:
        raise ValueError(
            f"info[{key!r}] masks are {masks.shape[1:]} but the maps are {maps.shape[1:]} (the "
            "network input's size); give masks at the network input's resolution"
        )
    seen = masks.reshape(len(masks), -1).any(1)
    if not seen.any():
        return {"key": key, "frames": 0}
    maps, masks = maps[seen], masks[seen]
    mass = float(metrics.mass_in_mask(maps, masks).mean())
    share = float(metrics.mask_share(masks).mean())
    return {
        "key": key,
        "frames": int(seen.sum()),
        "pointing": float(metrics.pointing_game(maps, masks, tolerance=1).mean()),
        "pointing_chance": float(metrics.mask_share(metrics.dilate(masks, 1).numpy()).mean()),
        "mass": mass,
        "share": share,
        "mass_ratio": mass / share if share > 0 else float("nan"),
    }


def _label(name: str, target_name: str) -> str:
    return name if target_name == "taken" else f"{name}[{target_name}]"


def score_row(
    adapter: PolicyAdapter,
    frames: Frames,
    name: str | AttributionMethod,
    target_name: str,
    baselines: _Baselines,
    *,
    options: dict | None = None,
    steps: int = 20,
    seed: int = 42,
    batch_size: int = 256,
    mask_key: str | None = None,
) -> dict:
    """Every check for one method (``options``: its constructor's) and target on ``frames``: a
    dict (one row of the report)."""
    method = get_method(name, **(options or {}))
    target = TakenAction(frames.actions) if target_name == "taken" else AllLogits()

    def explain(tgt=target) -> np.ndarray:
        return method.attribute(adapter, frames.obs, tgt, states=frames.states).numpy()

    # A recurrent policy: every pass reads the state that entered each frame.
    with adapter.holding_state(frames.states):
        start = time.perf_counter()
        try:
            maps = explain()
        except ValueError as exc:  # e.g. CAM on a network whose head is not GAP + linear
            raise NotApplicable(str(exc)) from exc
        ms = 1000 * (time.perf_counter() - start) / len(maps)

        # Cascading randomisation, output layer first; note which reset first moves pi (the
        # output layer for the policy: resetting a value head leaves pi and its maps unchanged).
        x = adapter.preprocess(frames.obs[: min(len(maps), 16)])

        @torch.no_grad()
        def logits() -> torch.Tensor:
            return adapter.outputs(x, rows=torch.arange(len(x))).logits

        clean, moved = logits(), []

        def randomised() -> np.ndarray:
            moved.append(not torch.equal(logits(), clean))
            return explain()

        # Maps are compared as |map| (Quantus's MPRT default): a randomised head that flips the
        # sign of a signed map has not changed where it looks.
        layers, last = checks.mprt(adapter.model, randomised, maps, seed=seed, keep_last=True)
        output_layer = next((layer for layer, m in zip(layers, moved, strict=True) if m), None)
        random_logit = None
        if target_name == "taken":
            other = checks.other_actions(frames.actions, int(clean.shape[-1]), seed)
            # Signed here (Quantus's RandomLogit has abs=False): evidence for another action that
            # is evidence against this one is a different map.
            random_logit = _nan_as(checks.spearman(maps, explain(TakenAction(other))), 1.0)
        fill, sigma = method_fill(method)
        d, i = checks.log_prob_curves(
            adapter, frames.obs, maps, frames.actions, fill, steps, sigma, batch_size
        )
        d_rand, i_rand = baselines(fill, sigma)
    emprt = checks.efficient_mprt(maps, last)
    d_auc, i_auc = metrics.auc(d), metrics.auc(i)
    row = {
        "method": method.name,
        "target": target_name,
        "row": _label(method.name, target_name),
        "ms_per_frame": ms,
        "randomisation": {
            "order": "top_down",
            "layers": {k: _nan_as(v, 1.0) for k, v in layers.items()},
            "output_layer": output_layer,
            "rho_output": _nan_as(layers[output_layer or next(iter(layers))], 1.0),
            "rho_full": _nan_as(list(layers.values())[-1], 1.0),
            "emprt": float(np.mean(emprt)),
            "blank_frames": int(np.isnan(emprt).sum()),
        },
        "random_logit_rho": random_logit,
        "deletion": {
            "fill": fill if isinstance(fill, (str, int, float)) else "tensor",
            **_curve_summary(d, d_auc, d_rand, d_rand - d_auc),
        },
        "insertion": _curve_summary(i, i_auc, i_rand, i_auc - i_rand),
        "ground_truth": _ground_truth(maps, frames.masks, mask_key),
    }
    row["checks"] = judge(row)
    row["faithful"] = all(v for v in row["checks"].values() if v is not None)
    row["verdict"] = verdict(row)
    return row


def trust(
    policy: PolicyAdapter | torch.nn.Module,
    env,
    methods: Sequence[str] | None = None,
    *,
    episodes: int = 2,
    frames: int = 48,
    seed: int = 0,
    mask_key: str | None = "auto",
    targets: Sequence[str] = TARGETS,
    steps: int = 20,
    options: dict | None = None,
    batch_size: int = 256,
    deterministic: bool = False,
    max_steps: int | None = None,
    out: str | None = None,
    progress: Callable[[str], None] | None = None,
) -> TrustReport:
    """Score attribution methods for ``policy`` in ``env`` (any Gymnasium env with image
    observations) on the same recorded frames; write ``trust.json``/``.csv``/``.png`` to ``out``.

    Args:
        methods: names (default: every registered method).
        episodes, frames, seed: play ``episodes`` (reset seeds ``seed + i``) and keep ``frames``
            steps spread evenly over them.
        mask_key: an ``info`` key with a bool [H, W] object mask per step for ground truth;
            ``"auto"``: ``goal_mask`` if the env gives it, None: no ground truth.
        targets: ``taken`` (log pi of the recorded action, every method) and ``logits``
            (Greydanus' whole-logit score, perturbation only).
        steps: deletion / insertion steps.
        options: per-method constructor options, ``{"occlusion": {"window": 6}}``.

    Returns:
        a :class:`TrustReport`; ``report.verdicts()`` is one line per method and target.
    """
    names = list(methods) if methods is not None else available_methods()
    options = options or {}
    # Built here: unknown names and options fail before playing.
    built = [(name, get_method(name, **options.get(name, {}))) for name in names]
    bad = sorted(set(targets) - set(TARGETS))
    if bad or not targets:
        raise ValueError(f"unknown targets {bad or list(targets)}; use some of {list(TARGETS)}")
    if mask_key == "auto":
        _, info = env.reset(seed=seed)
        mask_key = "goal_mask" if "goal_mask" in info else None
    say = progress or (lambda _message: None)
    start = time.perf_counter()
    adapter, recorded = record(
        env, policy, episodes, frames, seed, mask_key, deterministic, max_steps
    )
    say(f"recorded {recorded.steps} steps in {recorded.episodes} episodes; scoring "
        f"{len(recorded.actions)} frames")  # fmt: skip
    baselines = _Baselines(adapter, recorded, steps, batch_size, seed)
    rows, skipped = [], {}
    for name, method in built:
        for target_name in targets:
            if target_name == "logits" and method.name != "perturbation":
                continue
            t = time.perf_counter()
            kw = dict(steps=steps, batch_size=batch_size, mask_key=mask_key)
            try:
                row = score_row(adapter, recorded, method, target_name, baselines, **kw)
            except NotApplicable as exc:
                skipped[_label(name, target_name)] = str(exc)
                say(f"{_label(name, target_name)}: not applicable here ({exc})")
                continue
            rows.append(row)
            say(f"{row['verdict']}  [{time.perf_counter() - t:.1f} s]")
    settings = {
        "episodes": recorded.episodes,
        "steps_recorded": recorded.steps,
        "frames": int(len(recorded.actions)),
        "seed": seed,
        "mask_key": mask_key,
        "deletion_steps": steps,
        "randomisation_seed": 42,
        "seconds": time.perf_counter() - start,
        "threads": torch.get_num_threads(),
    }
    report = TrustReport(rows, settings, skipped=skipped)
    if out is not None:
        from rlviz.faithfulness.report import write

        report.paths = write(report, out)
    return report
