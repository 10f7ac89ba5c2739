"""Explanation videos: play episodes, explain each in batches, compose and stream annotated frames.

Per episode: (1) the policy plays it (:func:`rlviz.rollout.collect`), recording the env's top-down
map when it has one; (2) every method explains the whole episode in chunks (``rlviz.explain`` with
the taken actions as targets), maps normalised over the episode; (3) states are placed on a fitted
state map; (4) for each step the panels render tiles, :class:`rlviz.compose.Composer` lays them out
and :class:`rlviz.video.VideoWriter` streams the frame to ffmpeg. Only the episode's small per-step
data is held (observation, goal mask, float16 maps at observation size, a compressed top-down view:
~45 KB a step at 60x80); composed frames (~1.6 MB each) never pile up, and attribution runs in
passes of ``EXPLAIN_BATCH`` frames.
"""

from __future__ import annotations

import ctypes
import os
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rlviz.adapters import PolicyAdapter
from rlviz.rollout import Rollout, collect

DEFAULT_METHODS = ("gradient", "gradcam")
NORMALIZE_MODES = ("episode", "frame")
#: Frames per attribution pass: big enough to batch well, small enough that a long episode's
#: activations and gradients are never all alive at once (memory flat in episode length).
EXPLAIN_BATCH = 128
#: Display maps are stored as float16: [0, 1] to 1/2048, half the memory of float32.
MAP_DTYPE = np.float16
#: Ground truth the panels read (captions, events); other infos are not kept per step.
INFO_KEYS = ("success", "goal_mask", "box_visible", "agent_pos", "agent_dir", "box_pos")


# ------------------------------------------------------------------------------- episode data


def release_freed_memory() -> None:
    """Hand freed heap memory back to the OS (glibc ``malloc_trim``; a no-op elsewhere).

    glibc keeps freed blocks of a few MB (an episode's temporary maps) in the heap, so resident
    memory would creep up with episode length although the data is gone; trimming between the
    stages of an episode keeps the process's footprint at what it really holds.
    """
    global _LIBC
    if _LIBC is None:
        try:
            _LIBC = ctypes.CDLL("libc.so.6")
            _LIBC.malloc_trim  # noqa: B018  (raises AttributeError off glibc)
        except (OSError, AttributeError):
            _LIBC = False
    if _LIBC:
        _LIBC.malloc_trim(0)


_LIBC = None


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run the block with ``n`` torch intra-op threads, then restore the caller's setting.

    A rollout makes one batch-1 forward pass per step: too little work to share, and on a busy
    machine OpenMP threads spin-waiting between such passes cost ~10x the pass itself.
    """
    before = torch.get_num_threads()
    if before != n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if before != n:
            torch.set_num_threads(before)


class CompressedFrames:
    """A list of uint8 images kept zlib-compressed (top-down maps shrink ~20x); indexable by t."""

    def __init__(self, level: int = 1) -> None:
        self.level = int(level)
        self._data: list[bytes] = []
        self._shapes: list[tuple[int, ...]] = []

    def append(self, image: np.ndarray) -> None:
        """Store one uint8 image (any shape)."""
        image = np.ascontiguousarray(image, dtype=np.uint8)
        self._data.append(zlib.compress(image.data, self.level))
        self._shapes.append(image.shape)

    def __len__(self) -> int:
        return len(self._data)

    def __getitem__(self, t: int) -> np.ndarray:
        raw = zlib.decompress(self._data[t])
        return np.frombuffer(raw, dtype=np.uint8).reshape(self._shapes[t])

    def truncate(self, n: int) -> None:
        """Keep only the first ``n`` images."""
        del self._data[n:], self._shapes[n:]

    @property
    def nbytes(self) -> int:
        """Compressed bytes held."""
        return sum(len(d) for d in self._data)


@dataclass
class EpisodeExplanation:
    """Everything the panels show about one episode, indexed by step t = 0 .. T-1.

    Attributes:
        rollout: the episode (observations, actions, pi, V, rewards, ground-truth infos).
        maps: method name -> [T, H, W] in [0, 1] (float16 from the pipeline), normalised as
            ``normalize`` says ([-1, 1] for signed methods).
        map_ranges: method name -> (low, high) raw attribution values at 0 and 1 of the colour
            scale (the episode's range; per-frame scaling shows the episode's range for reference).
        map_signed: method name -> whether its maps are signed ([-1, 1], diverging colours).
        action_names: labels of the actions.
        normalize: ``"episode"`` (one colour scale for the whole episode), ``"frame"`` (each frame
            scaled on its own, as captum and pytorch-grad-cam show maps) or ``"running"`` (live
            rendering: scale of the episode so far).
        target_name: what the maps explain, for the panel footers (e.g. ``"log pi(a_t|s_t)"``).
        action_maps: method -> [T, A, H, W]: a map per action k of log pi(k|s_t), all actions on
            one scale (for :class:`rlviz.panels.PerActionPanel`).
        embedding: the fitted :class:`rlviz.embedding.StateEmbedding`, or None.
        embedding_xy: float32 [T, 2]: each state's position on that map.
        top_down: T uint8 [h, w, 3] top-down maps (indexable), or None when the env has none.
        meta: title parts: ``agent``, ``env``, ``seed``, ``episode``.
        horizon: x-axis length of time plots (defaults to T).
    """

    rollout: Rollout
    maps: dict[str, np.ndarray]
    map_ranges: dict[str, tuple[float, float]] = field(default_factory=dict)
    map_signed: dict[str, bool] = field(default_factory=dict)
    action_names: tuple[str, ...] = ()
    normalize: str = "episode"
    target_name: str | None = "log \u03c0(a_t | s_t)"
    action_maps: dict[str, np.ndarray] = field(default_factory=dict)
    embedding: Any = None
    embedding_xy: np.ndarray | None = None
    top_down: Sequence[np.ndarray] | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    horizon: int | None = None

    def __post_init__(self) -> None:
        n = len(self.rollout)
        if not self.action_names:
            self.action_names = tuple(f"a{k}" for k in range(self.rollout.probs.shape[1]))
        for name, m in self.maps.items():
            if len(m) != n:
                raise ValueError(f"maps[{name!r}] has {len(m)} frames for an episode of {n} steps")
        if self.embedding_xy is not None and len(self.embedding_xy) != n:
            raise ValueError(f"embedding_xy has {len(self.embedding_xy)} rows for {n} steps")
        if self.top_down is not None and len(self.top_down) < n:
            raise ValueError(f"top_down has {len(self.top_down)} frames for {n} steps")

    def __len__(self) -> int:
        return len(self.rollout)

    @property
    def obs_shape(self) -> tuple[int, ...]:
        """Shape of one observation as displayed, (H, W, C)."""
        from rlviz.panels import display_frame

        return display_frame(self.rollout.obs[0]).shape

    def title(self) -> str:
        """The title bar's text: agent, env, seed, episode."""
        parts = []
        for key, label in (
            ("agent", "agent"),
            ("env", "env"),
            ("seed", "seed"),
            ("episode", "episode"),
        ):
            if self.meta.get(key) is not None:
                parts.append(f"{label}: {self.meta[key]}")
        return "    ".join(parts)


# ----------------------------------------------------------------------------------- explain


def _normalize_maps(
    raw: np.ndarray, mode: str, signed: bool = False, percentile: float = 99.5, chunk: int = 128
) -> tuple[np.ndarray, tuple[float, float]]:
    """Maps [T, ...] scaled by :func:`rlviz.maps.normalize`, chunk by chunk.

    ``"episode"``: one scale, the ``percentile`` of the episode's magnitudes (as ``normalize``
    computes it), applied to ``chunk`` frames at a time so that normalising a long episode needs
    no whole-episode temporaries beyond one magnitude copy.

    Returns:
        (maps in ``MAP_DTYPE`` [T, ...] in [0, 1] ([-1, 1] if signed), the raw values at the ends
        of the episode's colour scale).
    """
    from rlviz.maps import normalize

    if mode not in NORMALIZE_MODES:
        raise ValueError(f"normalize={mode!r}; expected one of {NORMALIZE_MODES}")
    raw = np.asarray(raw, dtype=np.float32)
    magnitude = np.abs(raw) if signed else np.maximum(raw, 0)
    high = float(np.percentile(magnitude, percentile, overwrite_input=True)) if raw.size else 0.0
    del magnitude
    out = np.empty(raw.shape, MAP_DTYPE)
    for start in range(0, len(raw), chunk):
        part = raw[start : start + chunk]
        if mode == "episode":
            out[start : start + chunk] = normalize(part, signed=signed, scale=np.float32(high))
        else:
            out[start : start + chunk] = normalize(
                part, mode="frame", signed=signed, percentile=percentile
            )
    return out, (-high if signed else 0.0, high)


def layer_features(
    policy: PolicyAdapter, obs: np.ndarray, layer: str, pool: str = "flatten", batch_size: int = 256
) -> np.ndarray:
    """Outputs of ``layer`` for observations [T, ...], flattened (or averaged over space with
    ``pool="avg"``) in batches without gradients: float32 [T, D]."""
    from rlviz.hooks import capture

    chunks = []
    with torch.no_grad(), capture(policy.model, layer) as acts:
        for start in range(0, len(obs), batch_size):
            policy.outputs(policy.preprocess(obs[start : start + batch_size]))
            act = acts[layer]
            if act.ndim == 4 and pool == "avg":
                act = act.mean(dim=(2, 3))
            chunks.append(act.reshape(act.shape[0], -1).float().cpu().numpy())
    return np.concatenate(chunks).astype(np.float32, copy=False)


def embedding_layer_of(embedding) -> tuple[str | None, str]:
    """(layer, pool) an embedding was fitted on, from its metadata (``layer``, ``pool``)."""
    meta = getattr(embedding, "meta", {}) or {}
    return meta.get("layer"), meta.get("pool", "flatten")


def explain_episode(
    policy: PolicyAdapter | torch.nn.Module,
    rollout: Rollout,
    methods: Sequence[str] = DEFAULT_METHODS,
    *,
    layer: str | None = None,
    normalize: str = "episode",
    per_action: str | None = None,
    embedding=None,
    embedding_layer: str | None = None,
    top_down: Sequence[np.ndarray] | None = None,
    action_names: Sequence[str] | None = None,
    batch_size: int | None = EXPLAIN_BATCH,
    meta: dict[str, Any] | None = None,
) -> EpisodeExplanation:
    """Explain a whole episode in batches (never frame by frame) for the video panels.

    Args:
        policy: the policy that played ``rollout``.
        methods: attribution methods (``rlviz.methods`` names); each explains log pi(a_t|s_t) of
            the action taken.
        layer: layer for CAM-type methods (default: the method's, usually the last conv).
        normalize: ``"episode"`` (one fixed colour scale) or ``"frame"``.
        per_action: a method name to also compute one map per action (PerActionPanel).
        embedding: a fitted ``StateEmbedding``; states are placed on it (``transform(fast=True)``).
        embedding_layer: the layer its features come from (default: ``embedding.meta["layer"]``).
        top_down: per-step top-down images of the episode, if any.
        batch_size: images per forward/backward pass (memory knob; None: the method's default).

    Returns:
        An :class:`EpisodeExplanation` with maps float16 [T, H, W] in [0, 1].
    """
    import rlviz
    from rlviz.methods import get_method
    from rlviz.targets import TakenAction

    adapter = _as_adapter(policy)
    methods = list(methods)

    def attribute(method: str, actions: np.ndarray) -> np.ndarray:
        """Raw maps float32 [T, H, W] of ``method`` for log pi(actions_t | s_t), chunk by chunk
        into one preallocated array (no list of chunks plus a concatenated copy)."""
        step = batch_size or EXPLAIN_BATCH
        out = None
        for start in range(0, len(rollout), step):
            part = rlviz.explain(
                adapter,
                rollout.obs[start : start + step],
                methods=[method],
                layer=layer,
                target=TakenAction(actions[start : start + step]),
            )[method]
            if out is None:
                out = np.empty((len(rollout), *part.shape[1:]), np.float32)
            out[start : start + len(part)] = part
        return out

    maps, ranges, signs = {}, {}, {}
    for name in methods:  # one method at a time: one raw [T, H, W] float32 alive at once
        raw = attribute(name, rollout.actions)
        signs[name] = bool(getattr(get_method(name), "signed", False))
        maps[name], ranges[name] = _normalize_maps(raw, normalize, signs[name])
        del raw
    action_maps = {}
    if per_action:
        n_actions = rollout.probs.shape[1]
        per = []
        for k in range(n_actions):
            per.append(attribute(per_action, np.full(len(rollout), k, dtype=np.int64)))
        stacked = np.stack(per, axis=1)  # [T, A, H, W]: one scale for all actions
        signs[per_action] = bool(getattr(get_method(per_action), "signed", False))
        scaled, _ = _normalize_maps(
            stacked.reshape(len(rollout), -1, stacked.shape[-1]), normalize, signs[per_action]
        )
        action_maps[per_action] = scaled.reshape(stacked.shape)
    xy = None
    if embedding is not None:
        layer_name, pool = embedding_layer_of(embedding)
        layer_name = embedding_layer or layer_name
        if layer_name is None:
            raise ValueError(
                "the state embedding does not say which layer it was fitted on (meta['layer']); "
                "pass embedding_layer=..."
            )
        xy = np.concatenate(
            [  # in chunks: features of a whole long episode are never held
                embedding.transform(
                    layer_features(adapter, rollout.obs[s : s + 256], layer_name, pool), fast=True
                )
                for s in range(0, len(rollout), 256)
            ]
        )
    names = tuple(action_names or adapter.action_names or ())
    return EpisodeExplanation(
        rollout=rollout,
        maps=maps,
        map_ranges=ranges,
        map_signed=signs,
        action_names=names,
        normalize=normalize,
        action_maps=action_maps,
        embedding=embedding if xy is not None else None,
        embedding_xy=xy,
        top_down=top_down,
        meta=dict(meta or {}),
    )


def _as_adapter(policy) -> PolicyAdapter:
    if isinstance(policy, PolicyAdapter):
        return policy
    if isinstance(policy, torch.nn.Module):
        return PolicyAdapter(policy)
    raise TypeError(
        f"policy must be a rlviz.PolicyAdapter or an nn.Module, got {type(policy).__name__}; "
        "wrap other policies with rlviz.PolicyAdapter(module, forward=fn)"
    )


# ---------------------------------------------------------------------------------- rendering


def select_panels(panels, episode: EpisodeExplanation) -> list:
    """The panels that ``episode`` can feed (e.g. no top-down view for an env without one)."""
    kept = [p for p in panels if p.available(episode)]
    if not kept:
        names = ", ".join(type(p).__name__ for p in panels)
        raise ValueError(f"none of the panels ({names}) can show this episode")
    return kept


def render_episode(
    episode: EpisodeExplanation,
    out: str | os.PathLike,
    panels: Sequence | None = None,
    *,
    fps: float = 15,
    on_frame: Callable[[int], None] | None = None,
    crf: int = 23,
    preset: str = "veryfast",
) -> list:
    """Write the video of one explained episode to ``out`` (``.mp4`` or ``.gif``), frame by frame.

    Panels the episode cannot feed are left out. The file appears atomically: nothing is at
    ``out`` if rendering fails.

    Returns:
        The panels used, in layout order.
    """
    from rlviz.compose import Composer
    from rlviz.panels import default_panels
    from rlviz.video import VideoWriter

    chosen = select_panels(
        panels if panels is not None else default_panels(list(episode.maps)), episode
    )
    composer = Composer(chosen)
    composer.prepare(episode, title=episode.title())
    with VideoWriter(out, fps=fps, crf=crf, preset=preset) as writer:
        for t in range(len(episode)):
            writer.write(composer.frame(t, episode))
            if on_frame is not None:
                on_frame(t)
    return chosen


class EpisodeRecorder:
    """Passes reset/step through to ``env``, keeping only ``info_keys`` of each info and recording
    ``top_down_map(size)`` of each state s_t when ``top_down_size`` is given.

    Dropping unused infos as they arrive (BoxReach also reports a mask per distractor box) keeps
    a long rollout's memory to what the panels read. Duck-typed, not a gymnasium.Wrapper, so
    rlviz needs no gymnasium import here.

    Attributes:
        frames: the top-down images of the current episode (compressed), one per state so far.
    """

    def __init__(
        self,
        env,
        top_down_size: tuple[int, int] | None = None,
        info_keys: Sequence[str] | None = INFO_KEYS,
    ) -> None:
        self.env = env
        self.size = top_down_size
        self.info_keys = None if info_keys is None else set(info_keys)
        self.frames = CompressedFrames()

    def _filter(self, info: dict) -> dict:
        if self.info_keys is None:
            return info
        return {k: v for k, v in info.items() if k in self.info_keys}

    def _record(self) -> None:
        if self.size is not None:
            self.frames.append(self.env.unwrapped.top_down_map(size=self.size))

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        self.frames = CompressedFrames()
        self._record()
        return obs, self._filter(info)

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        if not (terminated or truncated):  # the state after the last step is never shown
            self._record()
        return obs, reward, terminated, truncated, self._filter(info)

    def __getattr__(self, name):
        return getattr(self.env, name)


@dataclass
class VideoSummary:
    """What :func:`render_video` did.

    Attributes:
        paths: the videos written, one per episode.
        episodes, successes, frames: counts; seconds: wall time in total.
        returns, lengths: per episode.
        timings: seconds per stage (rollout, explain, compose_encode).
        panels: class names of the panels shown (of the last episode).
    """

    paths: list[Path] = field(default_factory=list)
    episodes: int = 0
    successes: int = 0
    frames: int = 0
    seconds: float = 0.0
    returns: list[float] = field(default_factory=list)
    lengths: list[int] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    panels: list[str] = field(default_factory=list)

    @property
    def fps(self) -> float:
        """Frames written per second of wall time, end to end."""
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    def __str__(self) -> str:
        lines = [
            f"episodes: {self.episodes}   success: {self.successes}/{self.episodes}   "
            f"frames: {self.frames}   seconds: {self.seconds:.1f} ({self.fps:.0f} frames/s)",
        ]
        lines += [
            f"  {p}  ({n} steps, return {r:.2f})"
            for p, n, r in zip(self.paths, self.lengths, self.returns, strict=True)
        ]
        return "\n".join(lines)


def output_paths(
    out: str | os.PathLike, episodes: int, *, gif: bool = False, name_prefix: str = "rl-explain"
) -> list[Path]:
    """Where :func:`render_video` writes each episode.

    A file path (``.mp4``/``.gif``) is used as is for one episode and numbered
    (``run-episode-0.mp4``, ...) for several; any other path is a folder that receives
    ``{name_prefix}-episode-{i}.mp4`` (``.gif`` with ``gif=True``), Gymnasium RecordVideo's naming.
    """
    from rlviz.video import FORMATS

    out = Path(out)
    if out.suffix.lower() in FORMATS:
        if episodes == 1:
            return [out]
        return [out.with_name(f"{out.stem}-episode-{i}{out.suffix}") for i in range(episodes)]
    if out.suffix:
        raise ValueError(
            f"output {str(out)!r} has suffix {out.suffix!r}; "
            "give a folder or a file ending in .mp4 or .gif"
        )
    suffix = ".gif" if gif else ".mp4"
    return [out / f"{name_prefix}-episode-{i}{suffix}" for i in range(episodes)]


def _env_action_names(env, adapter: PolicyAdapter, n_actions: int) -> tuple[str, ...]:
    for names in (
        getattr(adapter, "action_names", None),
        getattr(env.unwrapped, "action_names", None),
    ):
        if names is not None and len(names) == n_actions:
            return tuple(names)
    module = type(env.unwrapped).__module__
    if module.startswith("envs."):  # our BoxReach envs: names live in the package
        import importlib

        names = getattr(importlib.import_module("envs"), "ACTION_NAMES", None)
        if names is not None and len(names) == n_actions:
            return tuple(names)
    meanings = getattr(env.unwrapped, "get_action_meanings", None)
    if callable(meanings):
        names = meanings()
        if len(names) == n_actions:
            return tuple(str(n).lower() for n in names)
    return tuple(f"a{k}" for k in range(n_actions))


def make_env(env_id: str, **kwargs):
    """``gymnasium.make(env_id)``; rlviz/... ids import ``envs`` first and get ground truth on."""
    import gymnasium as gym

    if env_id.startswith("rlviz/"):
        import envs  # noqa: F401  (registers the ids; prepares headless GL)

        kwargs.setdefault("ground_truth", True)
    try:
        return gym.make(env_id, **kwargs)
    except gym.error.Error as exc:
        known = sorted(k for k in gym.registry if k.startswith("rlviz/"))
        raise ValueError(
            f"cannot make env {env_id!r} ({exc}); rlviz ids: {', '.join(known)}"
        ) from None


def render_video(
    env,
    policy: PolicyAdapter | torch.nn.Module,
    out: str | os.PathLike = "videos/run.mp4",
    methods: Sequence[str] = DEFAULT_METHODS,
    episodes: int = 1,
    seed: int | None = 0,
    layer: str | None = None,
    panels: Sequence | Callable[[], Sequence] | None = None,
    fps: float = 15,
    embedding=None,
    *,
    deterministic: bool = False,
    normalize: str = "episode",
    per_action: str | None = None,
    max_steps: int | None = None,
    batch_size: int | None = EXPLAIN_BATCH,
    gif: bool = False,
    agent_name: str | None = None,
    name_prefix: str = "rl-explain",
    crf: int = 23,
    preset: str = "veryfast",
    info_keys: Sequence[str] | None = INFO_KEYS,
    threads: int | None = 1,
    progress: bool = False,
) -> VideoSummary:
    """Play ``episodes`` episodes of ``policy`` in ``env`` and write one explanation video each.

    Works for any Gymnasium env with image observations. Panels that need what the env does not
    give (ground truth, a top-down map, a state embedding) are left out.

    Args:
        env: a Gymnasium env (or a registered id, made with ``gymnasium.make``).
        policy: a :class:`PolicyAdapter` or an ``nn.Module`` mapping [B, C, H, W] floats to
            ``(logits, value)``.
        out: a ``.mp4``/``.gif`` file, or a folder for ``rl-explain-episode-{i}.mp4`` files.
        methods: attribution methods shown (one map panel each).
        episodes: how many episodes; episode i is reset with ``seed + i``.
        layer: layer for CAM-type methods.
        panels: panel instances, or a factory returning fresh ones (default
            :func:`rlviz.panels.default_panels`).
        embedding: a fitted ``StateEmbedding`` to place states on (t-SNE panel), or None.
        deterministic: act greedily instead of sampling.
        normalize: colour scale per ``"episode"`` (default) or per ``"frame"``.
        per_action: also show per-action maps of this method.
        max_steps: cut episodes at this many steps.
        gif: with a folder ``out``, write GIFs instead of MP4s.
        name_prefix: file name prefix when ``out`` is a folder.
        crf, preset: x264 quality and speed (see :class:`rlviz.video.VideoWriter`).
        info_keys: per-step infos kept for panels (None: all).
        threads: torch intra-op threads while rendering (restored after; None: leave as set).
            One is fastest for policy-sized CNNs on CPU: rollouts are batch-1 passes, and the
            other cores encode video meanwhile; spin-waiting OpenMP threads cost ~8x on a busy
            machine (BENCHMARKS.md, "## Video").
        agent_name: shown in the title bar.
        progress: show a tqdm progress bar of frames.

    Returns:
        A :class:`VideoSummary` (paths, episodes, successes, frames, seconds).
    """
    from rlviz.panels import TopDownPanel, default_panels
    from rlviz.video import check_writable

    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    env_name = env if isinstance(env, str) else getattr(getattr(env, "spec", None), "id", None)
    adapter = _as_adapter(policy)
    methods = list(methods)
    paths = output_paths(out, episodes, gif=gif, name_prefix=name_prefix)
    for path in paths:
        check_writable(path)
    _check_methods(methods + ([per_action] if per_action else []))
    if isinstance(env, str):
        env = make_env(env)
        try:
            return render_video(
                env,
                adapter,
                out,
                methods,
                episodes,
                seed,
                layer,
                panels,
                fps,
                embedding,
                deterministic=deterministic,
                normalize=normalize,
                per_action=per_action,
                max_steps=max_steps,
                batch_size=batch_size,
                gif=gif,
                agent_name=agent_name,
                name_prefix=name_prefix,
                crf=crf,
                preset=preset,
                info_keys=info_keys,
                threads=threads,
                progress=progress,
            )
        finally:
            env.close()  # we made it, we close it
    obs_space = getattr(env, "observation_space", None)
    if (
        obs_space is not None
        and getattr(obs_space, "shape", None) is not None
        and len(obs_space.shape) not in (2, 3)
    ):
        raise ValueError(
            f"render_video needs image observations [H, W, C]; this env's observation space is "
            f"{obs_space}. Wrap it (e.g. gymnasium.wrappers.AddRenderObservation) to get pixels"
        )

    def fresh_panels() -> list:
        if panels is None:
            return default_panels(methods, per_action=per_action)
        return list(panels() if callable(panels) else panels)

    top_size = next((p.map_size for p in fresh_panels() if isinstance(p, TopDownPanel)), None)
    if not callable(getattr(env.unwrapped, "top_down_map", None)):
        top_size = None
    recorder = EpisodeRecorder(env, top_size, info_keys)

    summary = VideoSummary(timings={"rollout": 0.0, "explain": 0.0, "compose_encode": 0.0})
    start = time.perf_counter()
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=0, unit="frame", desc="rendering", dynamic_ncols=True)
    try:
        with torch_threads(threads) if threads else nullcontext():
            rollouts = collect(
                recorder,
                adapter,
                episodes,
                seed=seed,
                deterministic=deterministic,
                max_steps=max_steps,
                info_keys=info_keys,
            )
            for i, path in enumerate(paths):
                t0 = time.perf_counter()
                rollout = next(rollouts)
                release_freed_memory()  # the rollout's per-step lists are gone
                t1 = time.perf_counter()
                names = _env_action_names(env, adapter, rollout.probs.shape[1])
                top_down = None
                if top_size is not None:
                    recorder.frames.truncate(len(rollout))
                    top_down = recorder.frames
                meta = {
                    "agent": agent_name,
                    "env": env_name,
                    "seed": None if seed is None else seed + i,
                    "episode": f"{i + 1}/{episodes}",
                }
                episode = explain_episode(
                    adapter,
                    rollout,
                    methods,
                    layer=layer,
                    normalize=normalize,
                    per_action=per_action,
                    embedding=embedding,
                    top_down=top_down,
                    action_names=names,
                    batch_size=batch_size,
                    meta=meta,
                )
                release_freed_memory()  # raw maps and attribution buffers are gone
                t2 = time.perf_counter()
                if bar is not None:
                    bar.total += len(rollout)
                    bar.set_postfix_str(f"episode {i + 1}/{episodes}")
                    bar.refresh()
                used = render_episode(
                    episode,
                    path,
                    fresh_panels(),
                    fps=fps,
                    crf=crf,
                    preset=preset,
                    on_frame=(lambda _t: bar.update(1)) if bar is not None else None,
                )
                summary.panels = [type(p).__name__ for p in used]
                t3 = time.perf_counter()
                summary.timings["rollout"] += t1 - t0
                summary.timings["explain"] += t2 - t1
                summary.timings["compose_encode"] += t3 - t2
                summary.paths.append(path)
                summary.episodes += 1
                summary.successes += int(rollout.success)
                summary.frames += len(rollout)
                summary.returns.append(rollout.episode_return)
                summary.lengths.append(len(rollout))
                del episode, rollout, top_down
    finally:
        if bar is not None:
            bar.close()
    summary.seconds = time.perf_counter() - start
    return summary


def _check_methods(methods: Sequence[str]) -> None:
    from rlviz.methods import available_methods, get_method

    for name in methods:
        try:
            get_method(name)
        except ValueError:
            raise ValueError(
                f"unknown attribution method {name!r}; valid: {', '.join(available_methods())}"
            ) from None


def default_embedding_layer(model: torch.nn.Module) -> str:
    """The layer a state map is fitted on by default: the model's CAM layer (its last conv block,
    what ``rlviz tsne`` maps by default), else the last ``nn.Conv2d``."""
    from rlviz.hooks import last_conv_layer

    layer = getattr(model, "cam_layer", None)
    return layer if isinstance(layer, str) else last_conv_layer(model)


def fit_state_embedding(
    env,
    policy: PolicyAdapter | torch.nn.Module,
    episodes: int = 8,
    *,
    seed: int | None = 100_000,
    layer: str | None = None,
    pool: str = "flatten",
    method: str = "tsne",
    deterministic: bool = False,
    max_steps: int | None = None,
    progress: bool = False,
):
    """Play ``episodes`` episodes and fit a state map on ``layer``'s features of every state.

    The map's ``point_data["value"]`` holds V(s) (the panel colours the background by it) and its
    ``meta`` the layer and pooling, so :func:`explain_episode` can place new states on it.

    Returns:
        A fitted :class:`rlviz.embedding.StateEmbedding` (``embedding_`` [N, 2]).
    """
    from rlviz.embedding import StateEmbedding

    adapter = _as_adapter(policy)
    layer = layer or default_embedding_layer(adapter.model)
    features, values = [], []
    rollouts = collect(
        env,
        adapter,
        episodes,
        seed=seed,
        deterministic=deterministic,
        max_steps=max_steps,
        info_keys=(),
    )
    if progress:
        from tqdm.auto import tqdm

        rollouts = iter(tqdm(rollouts, total=episodes, unit="ep", desc="fitting the state map"))
    while True:
        with torch_threads(1):  # as in render_video
            rollout = next(rollouts, None)
            if rollout is None:
                break
            features.append(layer_features(adapter, rollout.obs, layer, pool))
        values.append(
            rollout.values if rollout.values is not None else np.zeros(len(rollout), np.float32)
        )
    feats = np.concatenate(features)
    perplexity = min(30.0, max(2.0, (len(feats) - 1) / 3 - 1))
    embedding = StateEmbedding(method=method, perplexity=perplexity, seed=seed or 0)
    return embedding.fit(
        feats, point_data={"value": np.concatenate(values)}, meta={"layer": layer, "pool": pool}
    )
