"""``rlviz.explore``: play episodes, explain them, and write the explorer report.

The report is a folder: ``index.html`` plus ``assets/`` (the page's JS and CSS, copied from this
package) and ``data/``: ``manifest.js`` (report-wide: episodes, state map, NMF legend, network
tab), ``episode_{i}.js`` (one episode's scalars, events and map sprite sheets as data URLs,
loaded when the episode is first shown) and ``frames_{i}.png`` / ``vis.png`` sprite sheets.
Data files are scripts that assign to ``window.RLVIZ`` because browsers refuse ``fetch()`` of
``file://`` URLs: the page opens from disk with no server. Every file is written atomically and
``index.html`` last, so a report that has an index is complete.
"""

from __future__ import annotations

import os
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from rlviz.explorer.episode import TARGETS, EpisodeData, map_size
from rlviz.explorer.page import write_page, write_script
from rlviz.explorer.sprites import DEFAULT_COLS, MAP_CODECS, map_url, png_bytes, sheet
from rlviz.explorer.tasks import EpisodeJob, explain_episode
from rlviz.io import atomic_write_bytes
from rlviz.layout import ObservationLayout
from rlviz.memory import stack_method
from rlviz.options import ExploreOptions, merge_options
from rlviz.policy import PolicyAdapter, as_adapter
from rlviz.rollout import collect
from rlviz.spool import Spool, window
from rlviz.targets import TakenAction

if TYPE_CHECKING:
    from rlviz.parallel.executor import Executor

#: Steps per part of a long episode's sheets (16 x 16 tiles a sheet): an episode longer than
#: this is written in parts that the page loads as its cursor reaches them.
PART_STEPS = 256
#: The infos an explorer report keeps per step (events, dissection masks, blocked moves); the
#: video keeps its own (rlviz.video.events.INFO_KEYS: what its panels draw). Others are dropped.
EXPLORER_INFO_KEYS = ("success", "goal_mask", "box_visible", "agent_pos")


@dataclass
class ExploreSummary:
    """What :func:`explore` wrote.

    Attributes:
        path: the report's ``index.html``.
        episodes, steps: counts. seconds: wall time. bytes: the report's size on disk.
        timings: seconds per stage (rollout, explain, state_map, nmf, network, write).
    """

    path: Path
    episodes: int = 0
    steps: int = 0
    seconds: float = 0.0
    bytes: int = 0
    timings: dict[str, float] = field(default_factory=dict)

    def __str__(self) -> str:
        return (
            f"explorer: {self.path}  ({self.episodes} episodes, {self.steps} steps, "
            f"{self.bytes / 1e6:.1f} MB, {self.seconds:.1f} s)"
        )


def _layout(rollout) -> ObservationLayout:
    """The layout decided when the episode was recorded (:func:`rlviz.rollout.rollout_layout`);
    None there means no layout fits its observations' shape: ``from_shape`` raises, asking for
    one."""
    if rollout.layout is not None:
        return rollout.layout
    return ObservationLayout.from_shape(rollout.obs.shape[1:], batched=False)


def _check(o: ExploreOptions) -> None:
    from rlviz.methods import check_methods

    if o.episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {o.episodes}")
    check_methods(o.methods)
    unknown = sorted(set(o.targets) - set(TARGETS))
    if unknown:
        raise ValueError(f"unknown target(s) {unknown}; valid: {', '.join(TARGETS)}")
    if o.map_codec not in MAP_CODECS:
        raise ValueError(
            f"map_codec={o.map_codec!r}; expected one of {', '.join(MAP_CODECS)} "
            "(png lossless, webp lossy and ~3x smaller, auto: webp for episodes over 256 steps)"
        )


def _nmf_target(spec, actions: np.ndarray):
    if spec == "taken":
        return TakenAction(actions)
    return spec


def explore(
    env,
    policy: PolicyAdapter | torch.nn.Module,
    out: str | os.PathLike = "explorer",
    *,
    options: ExploreOptions | None = None,
    executor: Executor | None = None,
    **fields: Any,
) -> ExploreSummary:
    """Play ``episodes`` episodes of ``policy`` in ``env`` and write an interactive report.

    Args:
        env: a Gymnasium env with image observations, or a registered id (``obs_key`` picks a
            ``Dict`` observation's image; a one-env SB3 ``VecEnv`` works too).
        policy: a :class:`PolicyAdapter` or an ``nn.Module`` returning ``(logits, value)``.
        out: the report's folder (``out/index.html`` opens in a browser from disk).
        options: a :class:`rlviz.options.ExploreOptions` (default: its defaults).
        executor: play the episodes in blocks and explain each episode as tasks on it
            (:mod:`rlviz.parallel`; ``env`` must be remakable, see
            :func:`rlviz.parallel.episodes.env_factory`); the same report. None: all here.
        **fields: fields of :class:`~rlviz.options.ExploreOptions` (``episodes``, ``methods``,
            ``targets``, ...; each documented there), set on ``options``.

    Returns:
        :class:`ExploreSummary` (path of ``index.html``, counts, size, time per stage).
    """
    from rlviz.explain import check_window, on_device
    from rlviz.gym_env import as_gym_env
    from rlviz.ops import torch_threads
    from rlviz.spool import map_large_blocks, release_freed_memory
    from rlviz.video.pipeline import make_env

    o = merge_options(ExploreOptions, options, fields, "explore")
    map_large_blocks()  # chunk-sized arrays unmapped when freed: a flat heap
    _check(o)
    check_window(o.from_step, o.to_step, o.max_steps)
    if o.device is not None:
        policy = on_device(policy, o.device)
    made = isinstance(env, str)
    # a one-env SB3 VecEnv, or a Dict observation's image
    env = as_gym_env(make_env(env) if made else env, o.obs_key, "explore")
    try:
        adapter = as_adapter(policy)
        job = _Job(adapter, env, Path(out), o.methods, o.targets, o.per_action or o.methods[0])
        job.map_scale = max(1, int(o.map_scale))
        job.map_codec = o.map_codec
        start = time.perf_counter()
        stages = 2 + bool(o.statemap) + bool(o.nmf) + bool(o.network)
        with (
            torch_threads(o.threads) if o.threads else nullcontext(),
            _stage_bar(o.progress, stages) as stage,
            Spool() as job.spool,  # observations and masks on disk while the report is made
        ):
            job.play(o.episodes, o.seed, o.deterministic, o.max_steps, o.progress, executor)
            job.window(o.from_step, o.to_step)
            stage("explaining every step")
            job.explain(o.layer, o.gamma, o.lam, o.batch_size, executor)
            release_freed_memory()  # the chunks' raw maps and activations are gone
            if o.statemap:
                stage("state map")
                job.state_map(o.embedding, o.map_method, o.seed or 0)
            if o.nmf:
                stage("NMF features")
                job.nmf(o.nmf_layer, o.nmf_target, o.nmf_features, o.optvis_steps, o.seed or 0)
            if o.network:
                stage("network tab")
                job.network(o.units_per_layer, o.optvis_steps, o.seed or 0)
            stage("writing the report")
            path = job.write(o.title, o.gamma, o.lam)
    finally:
        if made:
            env.close()  # we made it, we close it
    summary = ExploreSummary(path=path, episodes=len(job.data), timings=job.timings)
    summary.steps = sum(d.record["T"] for d in job.data)
    summary.seconds = time.perf_counter() - start
    summary.bytes = sum(f.stat().st_size for f in Path(out).rglob("*") if f.is_file())
    return summary


@contextmanager
def _stage_bar(progress: bool, total: int):
    """Yield ``stage(name)``: a tqdm bar (stderr) that moves on to stage ``name`` (the stages
    after playing take seconds each, silent otherwise)."""
    if not progress:
        yield lambda name: None
        return
    from tqdm.auto import tqdm

    with tqdm(total=total, desc="explore", unit="stage", leave=False) as bar:
        started = [False]

        def stage(name: str) -> None:
            if started[0]:
                bar.update()
            started[0] = True
            bar.set_postfix_str(name)

        yield stage


class _Job:
    """The stages of one :func:`explore` call, sharing what they computed."""

    def __init__(self, adapter, env, out: Path, methods, targets, per_action) -> None:
        self.adapter, self.env, self.out = adapter, env, out
        self.methods, self.targets, self.per_action = methods, targets, per_action
        self.stack_method = stack_method(methods)
        self.rollouts: list = []
        self.spool = None  # a Spool for the played observations, while explore() runs
        self.data: list[EpisodeData] = []
        self.timings: dict[str, float] = {}
        self.manifest: dict = {}
        self.nmf_maps: np.ndarray | None = None
        self.vis_images: list[np.ndarray] = []
        self.layout = None
        self.map_scale = 2
        self.map_codec = "auto"
        self.map_hw = (1, 1)
        self.names: tuple[str, ...] = ()

    def _timed(self, stage: str, t0: float) -> None:
        self.timings[stage] = self.timings.get(stage, 0.0) + time.perf_counter() - t0

    def play(self, episodes, seed, deterministic, max_steps, progress, executor=None) -> None:
        t0 = time.perf_counter()
        options = dict(seed=seed, deterministic=deterministic, max_steps=max_steps)
        if executor is not None:
            from rlviz.parallel.episodes import env_factory, play_parallel

            factory = env_factory(self.env)
            rollouts = play_parallel(
                factory, self.adapter, executor, episodes, info_keys=EXPLORER_INFO_KEYS, **options
            )
        else:
            rollouts = collect(
                self.env,
                self.adapter,
                episodes,
                info_keys=EXPLORER_INFO_KEYS,
                spool=self.spool,
                **options,
            )
        if progress and executor is None:
            from tqdm.auto import tqdm

            rollouts = tqdm(rollouts, total=episodes, unit="ep", desc="playing")
        self.rollouts = list(rollouts)
        self.layout = _layout(self.rollouts[0])
        n_actions = self.rollouts[0].action_count  # a Box policy: its dimensions
        self.names = self.adapter.action_names_for(n_actions, self.env)
        self._timed("rollout", t0)

    def window(self, start: int, stop: int | None) -> None:
        """Keep steps [start, stop) of each episode (episodes shorter than ``start``: refused)."""
        if start == 0 and stop is None:
            return
        short = [len(r) for r in self.rollouts if len(r) <= start]
        if short:
            raise ValueError(
                f"from_step={start} is past the end of an episode of {short[0]} steps; give a "
                "from_step below every episode's length"
            )
        self.rollouts = [r.window(start, stop) for r in self.rollouts]

    @property
    def all_obs(self) -> np.ndarray:
        """Every step's observation: one (long) episode's own (disk-backed: the state map and
        NMF read it a batch at a time), else the episodes' concatenated."""
        if len(self.rollouts) == 1:
            return self.rollouts[0].obs
        return np.concatenate([np.asarray(r.obs) for r in self.rollouts])

    def explain(self, layer, gamma, lam, batch_size, executor=None) -> None:
        t0 = time.perf_counter()
        job = EpisodeJob(
            self.adapter,
            self.layout,
            tuple(self.names),
            tuple(self.methods),
            tuple(self.targets),
            self.per_action if "actions" in self.targets else None,
            self.stack_method,
            self.map_scale,
            layer,
            gamma,
            lam,
            batch_size,
        )
        calls = {i: (i, rollout) for i, rollout in enumerate(self.rollouts)}
        if executor is None:
            # maps on disk in the report's spool until written: flat memory in episode length
            self.data = [explain_episode(job, *args, self.spool) for args in calls.values()]
        else:
            done = executor.map(explain_episode, calls, (job,), desc="explaining")
            self.data = [done[i] for i in calls]
        self.map_hw = map_size(tuple(self.data[0].frames.shape[1:3]), self.map_scale)
        self._timed("explain", t0)

    def state_map(self, embedding, method: str, seed: int) -> None:
        from rlviz.explorer.views import state_map

        t0 = time.perf_counter()
        values = np.concatenate(
            [
                r.values if r.values is not None else np.zeros(len(r), np.float32)
                for r in self.rollouts
            ]
        )
        result = state_map(
            self.adapter, self.all_obs, values, embedding=embedding, method=method, seed=seed
        )
        if result is not None:
            result["ep"] = [i for i, r in enumerate(self.rollouts) for _ in range(len(r))]
            result["t"] = [t for r in self.rollouts for t in range(len(r))]
            result["value"] = np.round(values, 4).tolist()
            result["action"] = np.concatenate([r.actions for r in self.rollouts]).tolist()
            self.manifest["statemap"] = result
        self._timed("state_map", t0)

    def nmf(self, layer, target, n_features, steps, seed) -> None:
        from rlviz.explorer.views import nmf_view

        t0 = time.perf_counter()
        actions = np.concatenate([r.actions for r in self.rollouts])
        # a recurrent policy: each frame read from the episode's start state (see from_start)
        with self.adapter.from_start():
            _, maps, images, legend = nmf_view(
                self.adapter,
                self.all_obs,
                layer=layer,
                target=_nmf_target(target, actions),
                n_features=n_features,
                vis_steps=steps,
                seed=seed,
                map_size=self.map_hw,
                layout=self.layout,
                keep=self.spool,
            )
        if target == "taken":
            legend["target"] = "taken action"
        legend["vis"] = list(range(len(self.vis_images), len(self.vis_images) + len(images)))
        self.vis_images += images
        self.nmf_maps = maps
        self.manifest["nmf"] = legend
        self._timed("nmf", t0)

    def network(self, units_per_layer, steps, seed) -> None:
        from rlviz.explorer.network import network_units

        t0 = time.perf_counter()
        ids = np.array([(i, t) for i, r in enumerate(self.rollouts) for t in range(len(r))])
        masks = None
        if all("goal_mask" in r.infos for r in self.rollouts):
            masks = np.concatenate([np.asarray(r.infos["goal_mask"], bool) for r in self.rollouts])
        obs = np.asarray(self.all_obs)
        if obs.ndim != 4:  # the feature tools read single frames [N, H, W, C]
            return
        with self.adapter.from_start():  # a recurrent policy: from the episode's start state
            layers, images = network_units(
                self.adapter,
                obs,
                ids,
                masks,
                units_per_layer=units_per_layer,
                optvis_steps=steps,
                seed=seed,
                frames=self.layout.frames,
            )
        offset = len(self.vis_images)
        for entry in layers:
            for unit in entry["units"]:
                unit["vis"] += offset
        self.vis_images += images
        self.manifest["network"] = {"layers": layers, "dissected": masks is not None}
        self._timed("network", t0)

    def write(self, title, gamma, lam) -> Path:
        t0 = time.perf_counter()
        data_dir = self.out / "data"
        data_dir.mkdir(parents=True, exist_ok=True)
        offset = 0
        episodes = []
        for d in self.data:
            n = d.record["T"]
            parts = n > PART_STEPS  # a long episode: its sheets in parts the page loads as needed
            lossy = self.map_codec == "webp" or (self.map_codec == "auto" and parts)
            if parts:
                feats = None if self.nmf_maps is None else window(self.nmf_maps, offset, offset + n)
                episodes.append(self._write_parts(d, data_dir, feats, lossy))
                offset += n
                continue
            maps = {key: map_url(np.asarray(m), DEFAULT_COLS, lossy) for key, m in d.maps.items()}
            record = dict(d.record, maps=maps, signed=d.signed)
            if self.nmf_maps is not None:
                feats = np.asarray(self.nmf_maps[offset : offset + n])
                record["nmf"] = [
                    map_url(feats[:, f], DEFAULT_COLS, lossy) for f in range(feats.shape[1])
                ]
            if d.stack is not None:
                record["stack"] = self._write_stack(d, data_dir, lossy)
            offset += n
            atomic_write_bytes(data_dir / f"frames_{d.index}.png", png_bytes(sheet(d.frames)))
            write_script(data_dir / f"episode_{d.index}.js", f"episodes[{d.index}]", record)
            episodes.append(_manifest_entry(d, frames=f"data/frames_{d.index}.png"))
        if self.vis_images:
            atomic_write_bytes(data_dir / "vis.png", png_bytes(sheet(np.stack(self.vis_images), 8)))
        h, w = self.data[0].frames.shape[1:3]
        env_id = getattr(getattr(self.env, "spec", None), "id", None)
        self.manifest.update(
            title=title or " \u00b7 ".join(filter(None, ["rlviz explorer", env_id])),
            env=env_id,
            actions=list(self.names),
            methods=[_method_info(m) for m in self.methods],
            per_action=self.per_action if "actions" in self.targets else None,
            targets=[t for t in self.targets if t != "actions"],
            cols=DEFAULT_COLS,
            frame={"h": int(h), "w": int(w)},
            map={"h": int(self.map_hw[0]), "w": int(self.map_hw[1])},
            vis={"file": "data/vis.png", "cols": 8} if self.vis_images else None,
            gamma=gamma,
            lam=lam,
            episodes=episodes,
        )
        self.timings["write"] = time.perf_counter() - t0
        self.manifest["timings"] = {k: round(v, 3) for k, v in self.timings.items()}
        write_script(data_dir / "manifest.js", "manifest", self.manifest)
        return write_page(self.out, self.manifest["title"])

    @staticmethod
    def _write_parts(d: EpisodeData, data_dir: Path, feats: np.ndarray | None, lossy: bool) -> dict:
        """Write a long episode as parts of :data:`PART_STEPS` steps: ``data/ep{i}/`` holds
        ``frames_{c}.png``, ``stack_{c}.png`` and ``chunk_{c}.js`` (that part's map sheets as
        data URLs); ``episode_{i}.js`` keeps the scalars. Returns its manifest entry."""
        from rlviz.explorer.page import write_part

        folder = data_dir / f"ep{d.index}"
        folder.mkdir(parents=True, exist_ok=True)
        n = d.record["T"]
        k = d.stack.shape[1] if d.stack is not None else 0
        for c, start in enumerate(range(0, n, PART_STEPS)):
            rows = slice(start, min(start + PART_STEPS, n))
            frames = png_bytes(sheet(d.frames[rows]))
            atomic_write_bytes(folder / f"frames_{c}.png", frames)
            part: dict = {
                "maps": {key: map_url(m[rows], DEFAULT_COLS, lossy) for key, m in d.maps.items()}
            }
            if feats is not None:
                block = np.asarray(feats[rows])
                part["nmf"] = [
                    map_url(block[:, f], DEFAULT_COLS, lossy) for f in range(block.shape[1])
                ]
            if d.stack is not None:
                stack = d.stack[rows].reshape(-1, *d.stack.shape[2:])
                atomic_write_bytes(folder / f"stack_{c}.png", png_bytes(sheet(stack, k * 4)))
                part["stack"] = {
                    key: map_url(m[rows].reshape(-1, *m.shape[2:]), k * 4, lossy)
                    for key, m in d.stack_maps.items()
                }
            write_part(folder / f"chunk_{c}.js", f"{d.index}:{c}", part)
        record = dict(d.record, map_keys=list(d.maps), signed=d.signed)
        if d.stack is not None:
            stack = dict(d.record.get("stack", {}), k=k, cols=k * 4)
            stack.setdefault("targets", sorted(d.stack_maps))
            record["stack"] = stack
        write_script(data_dir / f"episode_{d.index}.js", f"episodes[{d.index}]", record)
        return _manifest_entry(d, dir=f"data/ep{d.index}", chunk=PART_STEPS)

    @staticmethod
    def _write_stack(d: EpisodeData, data_dir: Path, lossy: bool) -> dict:
        """Write a stacked episode's frames sheet; its per-frame maps go inline as data URLs.

        Tile ``t * K + j`` of each sheet is frame j (oldest first) of step t; ``K * 4`` columns
        keep four steps per sheet row.
        """
        k = d.stack.shape[1]
        cols = k * 4
        frames = np.asarray(d.stack).reshape(-1, *d.stack.shape[2:])
        atomic_write_bytes(data_dir / f"stack_{d.index}.png", png_bytes(sheet(frames, cols)))
        info = dict(d.record.get("stack", {}), file=f"data/stack_{d.index}.png", k=k, cols=cols)
        info["maps"] = {
            key: map_url(np.asarray(m).reshape(-1, *m.shape[2:]), cols, lossy)
            for key, m in d.stack_maps.items()
        }
        return info


def _manifest_entry(d: EpisodeData, **where) -> dict:
    """An episode's line in the manifest: its scalars' file and ``where`` its sheets are."""
    record = d.record
    return {
        "i": d.index,
        "T": record["T"],
        "return": record["return"],
        "success": record["success"],
        "seed": record["seed"],
        "file": f"data/episode_{d.index}.js",
        **where,
    }


def _method_info(name: str) -> dict:
    from rlviz.methods import is_signed, method_title

    return {"name": name, "title": method_title(name), "signed": is_signed(name)}
