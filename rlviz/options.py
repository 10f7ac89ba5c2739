"""Options objects: the settings of :func:`rlviz.render_video` and :func:`rlviz.explore`, one
dataclass field each with its meaning in the docstring under it (CleanRL's ``Args``).

The functions, the wrappers, the SB3 callback and the ``rlviz video`` / ``rlviz explore`` commands
all hold one of these instead of copying the arguments; :func:`add_option_flags` turns fields into
``--flags`` whose default and help are the field's, so each setting is documented once.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import functools
import inspect
import json
import types
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any


def _default_methods() -> list[str]:
    # imported when an options object is made: rlviz.video imports this module
    from rlviz.video.explain import DEFAULT_METHODS

    return list(DEFAULT_METHODS)


def _default_info_keys() -> tuple[str, ...]:
    from rlviz.video.events import INFO_KEYS

    return INFO_KEYS


@dataclass(kw_only=True)
class EpisodeOptions:
    """What playing and explaining episodes takes, for videos and the explorer alike."""

    methods: Sequence[str] = field(default_factory=_default_methods)
    """Attribution methods (rlviz.available_methods()), one map each; the default pairs the most
    faithful input method with Grad-CAM."""
    episodes: int = 1
    """Episodes to play; episode i is reset with seed + i."""
    seed: int | None = 0
    """Episode i is reset with seed + i (None: unseeded)."""
    layer: str | None = None
    """Layer for CAM-type methods (default: the last conv block)."""
    embedding: Any = None
    """A fitted rlviz.statemap.StateEmbedding to place the states on (None: the video shows no
    state map, the explorer fits one)."""
    deterministic: bool = False
    """Act greedily instead of sampling."""
    max_steps: int | None = None
    """Cut episodes at this many steps."""
    from_step: int = 0
    """Play whole episodes but explain and draw only steps from this one on."""
    to_step: int | None = None
    """Explain and draw only steps before this one (None: to the episode's end)."""
    batch_size: int | None = None
    """Frames per attribution pass (None: chosen for the policy's device,
    rlviz.explain.device_batch)."""
    device: Any = None
    """Move the policy to this device first (cuda, cpu, auto); None: leave it where it is."""
    threads: int | None = 1
    """Torch intra-op threads while playing and explaining, restored after (None: leave as set).
    One is fastest for policy-sized CNNs on CPU: rollouts are batch-1 passes, and the other cores
    encode meanwhile; spin-waiting OpenMP threads cost ~8x on a busy machine (BENCHMARKS.md)."""
    progress: bool = False
    """Show progress bars (on stderr)."""
    obs_key: str | None = None
    """For an env with Dict observations, the key of the image (the rest goes to info["obs"]);
    the env may also be a one-env SB3 VecEnv."""

    def __post_init__(self) -> None:
        self.methods = list(self.methods)


@dataclass(kw_only=True)
class VideoOptions(EpisodeOptions):
    """The settings of :func:`rlviz.render_video` (and of the wrappers and the SB3 callback)."""

    panels: Sequence | Callable[[], Sequence] | None = None
    """Panel instances, or a factory returning fresh ones (default
    rlviz.video.panels.default_panels); panels the env cannot feed are left out."""
    fps: float = 15
    """Video frame rate."""
    normalize: str = "episode"
    """Colour scale over the whole episode (episode) or per frame (frame)."""
    per_action: str | None = None
    """Also show a row of per-action maps of this method (what makes it turn left vs right)."""
    gif: bool = False
    """With a folder out, write GIFs instead of MP4s."""
    agent_name: str | None = None
    """Shown in the title bar."""
    name_prefix: str = "rl-explain"
    """File name prefix when out is a folder: PREFIX-episode-{i}.mp4."""
    crf: int = 23
    """x264 quality, lower is better and larger (rlviz.video.writer.VideoWriter)."""
    preset: str = "veryfast"
    """x264 speed preset, ultrafast .. veryslow."""
    info_keys: Sequence[str] | None = field(default_factory=_default_info_keys)
    """Per-step infos kept for the panels (names or glob patterns; None: all)."""


@dataclass(kw_only=True)
class ExploreOptions(EpisodeOptions):
    """The settings of :func:`rlviz.explore`."""

    episodes: int = 2
    """Episodes to explore; episode i is reset with seed + i."""
    batch_size: int | None = 128
    """Frames per attribution pass."""
    targets: Sequence[str] = ("taken", "value", "actions")
    """What the maps explain: taken (log pi(a_t|s_t)), value (V(s_t)), actions (log pi(k|s_t)
    for every k, with the per_action method only)."""
    per_action: str | None = None
    """The method of the actions maps (None: the first of methods)."""
    gamma: float = 0.99
    """Discount for the GAE advantages."""
    lam: float = 0.95
    """GAE lambda."""
    statemap: bool = True
    """Place every step on a state map (fitted on these steps with map_method, or placed on a
    fitted embedding)."""
    map_method: str = "tsne"
    """How the state map is fitted: tsne or pca."""
    nmf: bool = True
    """Add URV's layer attribution reduced by NMF."""
    nmf_layer: str | None = None
    """Layer for the NMF attribution (default: the CAM layer)."""
    nmf_target: str | int = "value"
    """NMF attribution target: value, taken, or an action index."""
    nmf_features: int = 4
    """NMF layer features."""
    network: bool = True
    """Add the network tab."""
    units_per_layer: int = 4
    """Network tab: units shown per conv layer."""
    optvis_steps: int = 64
    """Steps of each feature visualisation (0: none)."""
    map_scale: int = 2
    """Maps are stored at 1/map_scale of the frame size per side (the page draws them smoothed);
    2 keeps a report 4x smaller with little visible change."""
    map_codec: str = "auto"
    """How map sheets are stored: png (lossless), webp (lossy, ~3x smaller on noisy maps, mean
    error ~3/255), auto (png for episodes up to 256 steps, webp for longer ones)."""
    title: str | None = None
    """The report's title (default: rlviz explorer and the env id)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.targets = list(self.targets)


OptionsT = typing.TypeVar("OptionsT", bound=EpisodeOptions)


def merge_options(
    cls: type[OptionsT],
    options: OptionsT | None,
    fields: dict[str, Any],
    caller: str,
    allowed: Sequence[str] | None = None,
) -> OptionsT:
    """``options`` (default ``cls()``) with ``fields`` set, for a function ``caller`` that takes
    both; a field it does not know (or ``allowed`` leaves out) is a one-line ``TypeError``."""
    valid = list(allowed) if allowed is not None else [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(fields) - set(valid))
    if unknown:
        raise TypeError(
            f"{caller}() got unknown option(s) {', '.join(unknown)}; valid: {', '.join(valid)}"
        )
    if options is None:
        return cls(**fields)
    if not isinstance(options, cls):
        raise TypeError(
            f"{caller}(options=...) must be a {cls.__name__}, got {type(options).__name__}"
        )
    return dataclasses.replace(options, **fields)


def episode_meta(
    agent: str | None, env: str | None, seed: int | None, episode: Any = None, **more: Any
) -> dict[str, Any]:
    """The title bar's parts of one episode (``EpisodeExplanation.meta``): agent, env id, the
    episode's reset seed and which episode it is; ``more``: further parts (``steps``, ...)."""
    return {"agent": agent, "env": env, "seed": seed, "episode": episode, **more}


def video_episode_meta(
    options: VideoOptions, env: str | None, i: int, played: int, shown: int
) -> dict[str, Any]:
    """:func:`episode_meta` of episode ``i`` of a :func:`rlviz.render_video` call: seed + i,
    ``"i+1/episodes"``, and which steps a window shows (``shown`` of the ``played`` steps)."""
    first = options.from_step
    more = {"steps": f"{first}-{first + shown - 1} of {played}"} if shown < played else {}
    seed = None if options.seed is None else options.seed + i
    return episode_meta(options.agent_name, env, seed, f"{i + 1}/{options.episodes}", **more)


# -- command-line flags from dataclass fields ---------------------------------------------------


@functools.cache
def field_docs(cls: type) -> dict[str, str]:
    """The docstring under each dataclass field (CleanRL/tyro style), base classes' first."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            tree = ast.parse(inspect.getsource(klass))
        except (OSError, TypeError):
            continue
        body = tree.body[0].body
        for node, nxt in zip(body, body[1:], strict=False):
            if (
                isinstance(node, ast.AnnAssign)
                and isinstance(node.target, ast.Name)
                and isinstance(nxt, ast.Expr)
                and isinstance(nxt.value, ast.Constant)
                and isinstance(nxt.value.value, str)
            ):
                docs[node.target.id] = " ".join(nxt.value.value.split())
    return docs


def _parse_none(inner: type):
    """A parser for ``inner | None`` flags: ``none``/``null``/empty text is None."""

    def parse(text: str):
        return None if text.lower() in ("none", "null", "") else inner(text)

    parse.__name__ = inner.__name__
    return parse


def _parse_json_dict(text: str) -> dict:
    """A ``dict`` flag's value, written as a JSON object."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(
            f"expected a JSON object like '{{\"size\": 8}}', got {text!r} ({exc})"
        ) from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object, got {text!r}")
    return value


def comma_separated(text: str) -> list[str]:
    """A flag's list of names, written ``a,b,c`` (empty parts dropped)."""
    return [part.strip() for part in text.split(",") if part.strip()]


def _shown(default: Any) -> str:
    """A default as --help shows it (a list of names comma-separated, as they are typed)."""
    if isinstance(default, list | tuple) and default and all(isinstance(d, str) for d in default):
        return ",".join(default)
    return str(default)


def field_argument(cls: type, name: str) -> dict[str, Any]:
    """argparse keyword arguments of field ``name`` of dataclass ``cls``: its default, a type
    read from its annotation (``X | None`` also takes ``none``; bools get ``--no-flag``) and its
    docstring as the help."""
    f = {f.name: f for f in dataclasses.fields(cls)}[name]
    tp = typing.get_type_hints(cls)[name]
    default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
    doc = field_docs(cls).get(name, "")
    kwargs: dict = {"dest": name, "default": default}
    shown = "" if default is None or default is False else f" (default: {_shown(default)})"
    kwargs["help"] = f"{doc}{shown}".replace("%", "%%")
    args = typing.get_args(tp)
    optional = (typing.get_origin(tp) in (typing.Union, types.UnionType)) and type(None) in args
    if optional:
        tp = next(a for a in args if a is not type(None))
    if tp is bool:
        kwargs["action"] = argparse.BooleanOptionalAction
    elif typing.get_origin(tp) is tuple:
        kwargs.update(nargs="+", type=typing.get_args(tp)[0])
    elif tp is dict or typing.get_origin(tp) is dict:
        kwargs.update(type=_parse_json_dict, metavar="JSON")
    elif isinstance(tp, type):
        kwargs["type"] = _parse_none(tp) if optional else tp
    return kwargs


def add_dataclass_arguments(
    parser: argparse.ArgumentParser,
    cls: type,
    suppress_defaults: bool = False,
    aliases: dict[str, list[str]] | None = None,
) -> None:
    """Add one ``--flag`` per field of dataclass ``cls`` (:func:`add_option_flags`);
    ``aliases`` maps a field name to extra flags (``{"env_id": ["--env"]}``)."""
    default = {"default": argparse.SUPPRESS} if suppress_defaults else {}
    names = [f.name for f in dataclasses.fields(cls)]
    changes = {name: {**default, "aliases": (aliases or {}).get(name, [])} for name in names}
    add_option_flags(parser, cls, *names, **changes)


def add_option_flags(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    cls: type,
    *names: str,
    **changes: dict[str, Any],
) -> None:
    """Add ``--flags`` for the fields ``names`` of options class ``cls``, default and help from
    the field (:func:`field_argument`); ``changes[name]`` updates that flag's keyword arguments
    (``type``, ``choices``, ``metavar``, ``action``; ``flag`` renames it, ``aliases`` adds flags;
    ``note`` adds to the help what the command makes of a value)."""
    unknown = sorted(set(changes) - set(names))
    if unknown:
        raise ValueError(f"changes for flags not added: {unknown}; added: {list(names)}")
    for name in names:
        kwargs = {**field_argument(cls, name), **changes.get(name, {})}
        flag = kwargs.pop("flag", "--" + name.replace("_", "-"))
        aliases = kwargs.pop("aliases", [])
        if "note" in kwargs:  # before the default, if one is shown
            doc, cut, default = kwargs["help"].partition(" (default: ")
            kwargs["help"] = f"{doc} {kwargs.pop('note')}{cut}{default}"
        if kwargs.get("action") in ("store_true", "store_false"):
            kwargs.pop("type", None)
        parser.add_argument(flag, *aliases, **kwargs)
