"""Checkpoints: safetensors weights + a JSON config, written atomically, loaded without unpickling.

A checkpoint ``NAME.safetensors`` always has its config ``NAME.json`` beside it (architecture,
observation shape, action names, env id and kwargs, steps, seed, rlviz version, the command that
trained it, and the SHA-256 of the weights). A training checkpoint also has ``NAME.state.safetensors``
(optimizer state, counters and RNG states for ``--resume``). Every file is written to a temporary
file and moved into place with ``os.replace``; the JSON goes last, so a crash leaves either the old
checkpoint or a new one whose hashes give it away. Before a training checkpoint is replaced, its
last whole version is copied to ``NAME.prev.*``: a kill between the renames leaves mixed files,
and :func:`load_training_state` (``--resume``) then falls back to that previous one.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import nn

from rlviz.agents.policy import ActorCritic, Architecture, make_adapter
from rlviz.io import atomic_write_files

if TYPE_CHECKING:
    from rlviz import PolicyAdapter

#: The trained BoxReach agent shipped with rlviz (weights; its config is the .json beside it).
SHIPPED_CHECKPOINT = Path(__file__).resolve().parent / "checkpoints" / "boxreach.safetensors"

#: The env a checkpoint plays in when neither the caller nor its config names one.
DEFAULT_ENV_ID = "rlviz/BoxReach-v0"

FORMAT = "rlviz-agent"
FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint is missing, corrupt, or does not fit what it is loaded into."""


def config_path(path: str | os.PathLike) -> Path:
    """The JSON config that belongs to weights file ``path``."""
    return Path(path).with_suffix(".json")


def state_path(path: str | os.PathLike) -> Path:
    """The training-state file (optimizer, counters, RNG) that belongs to weights file ``path``."""
    return Path(path).with_suffix(".state.safetensors")


def _weights_path(path: str | os.PathLike) -> Path:
    path = Path(path)
    if path.suffix == ".json":
        path = path.with_suffix(".safetensors")
    if path.suffix != ".safetensors":
        raise CheckpointError(
            f"checkpoint path {str(path)!r} should end in .safetensors (its config is the .json "
            "beside it)"
        )
    return path


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# Nested state (an optimizer's state_dict, RNG states, counters) goes into safetensors as flat
# tensors plus a JSON skeleton in the file's metadata, where each tensor is {"__tensor__": key}.
def _flatten(obj: Any, tensors: dict[str, torch.Tensor], prefix: str) -> Any:
    if isinstance(obj, torch.Tensor):
        key = prefix or "root"
        tensors[key] = obj.detach().cpu().contiguous()
        return {"__tensor__": key}
    if isinstance(obj, dict):
        # Keys become strings in JSON; remember which were ints (optimizer state is keyed by index).
        return {
            "__dict__": [
                [k, isinstance(k, int), _flatten(v, tensors, f"{prefix}.{k}" if prefix else str(k))]
                for k, v in obj.items()
            ]
        }
    if isinstance(obj, (list, tuple)):
        return {"__list__": [_flatten(v, tensors, f"{prefix}.{i}") for i, v in enumerate(obj)]}
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"cannot store {type(obj).__name__} at {prefix!r} in a training state")


def _unflatten(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, dict):
        if "__tensor__" in obj:
            return tensors[obj["__tensor__"]]
        if "__dict__" in obj:
            return {
                (int(k) if is_int else k): _unflatten(v, tensors)
                for k, is_int, v in obj["__dict__"]
            }
        if "__list__" in obj:
            return [_unflatten(v, tensors) for v in obj["__list__"]]
    return obj


def save_checkpoint(
    path: str | os.PathLike,
    model: ActorCritic,
    config: dict | None = None,
    optimizer_state: dict | None = None,
) -> Path:
    """Save ``model`` to ``path`` (.safetensors) and its config to the .json beside it.

    Args:
        path: weights file, ``*.safetensors``.
        model: an :class:`ActorCritic` (its architecture goes into the config).
        config: anything JSON-serialisable to keep with the weights (env id and kwargs, steps,
            seed, training config, command, metrics, ...).
        optimizer_state: optional nested dict of tensors and plain values (optimizer state_dict,
            RNG states, counters) written to ``*.state.safetensors`` for ``--resume``.

    Returns:
        The weights path.
    """
    from rlviz import __version__

    path = _weights_path(path)
    if not isinstance(model, ActorCritic):
        raise TypeError(f"save_checkpoint saves an agents.ActorCritic, got {type(model).__name__}")
    weights = st_save({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()})
    meta = dict(config or {})
    meta.update(
        format=FORMAT,
        format_version=FORMAT_VERSION,
        rlviz_version=__version__,
        architecture=model.arch.to_dict(),
        obs_shape=list(model.arch.obs_shape),
        action_names=list(model.action_names),
        weights_file=path.name,
        weights_sha256=_sha256(weights),
    )
    files: dict[Path, bytes] = {}
    if optimizer_state is not None:
        tensors: dict[str, torch.Tensor] = {}
        skeleton = _flatten(optimizer_state, tensors, "")
        state = st_save(tensors, metadata={"skeleton": json.dumps(skeleton)})
        files[state_path(path)] = state
        meta["state_file"] = state_path(path).name
        meta["state_sha256"] = _sha256(state)
    else:
        meta.pop("state_file", None)
        meta.pop("state_sha256", None)
    text = (
        json.dumps(meta, indent=2, sort_keys=False) + "\n"
    )  # fail before writing if not JSON-able
    files[path] = weights
    files[config_path(path)] = text.encode()  # last: the config commits the set (its hashes)
    if optimizer_state is not None:
        _keep_previous(path)
    # Every file is complete on disk before any replaces its old version: a kill while writing
    # leaves the previous checkpoint whole.
    atomic_write_files(files)
    return path


def read_config(path: str | os.PathLike) -> dict:
    """The JSON config of checkpoint ``path`` (weights or .json path), checked for format."""
    wpath = _weights_path(path)
    cpath = config_path(wpath)
    if not wpath.exists():
        raise FileNotFoundError(
            f"checkpoint {str(wpath)!r} does not exist; train one with `rlviz train` or pass the "
            "shipped agents/checkpoints/boxreach.safetensors"
        )
    if not cpath.exists():
        raise CheckpointError(
            f"config {str(cpath)!r} is missing: a checkpoint is two files, NAME.safetensors and "
            "NAME.json. Copy both, or re-save the model with agents.save_checkpoint."
        )
    try:
        config = json.loads(cpath.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(
            f"config {str(cpath)!r} is not valid JSON ({exc}); the file is corrupt: restore it or "
            "re-save the checkpoint"
        ) from None
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise CheckpointError(
            f'{str(cpath)!r} is not an rlviz agent config (expected "format": "{FORMAT}")'
        )
    _check_config_types(config, cpath)
    if int(config.get("format_version", 0)) > FORMAT_VERSION:
        raise CheckpointError(
            f"{str(cpath)!r} has format_version {config['format_version']}, newer than this rlviz "
            f"reads ({FORMAT_VERSION}); upgrade rlviz"
        )
    return config


# The config entries the loader relies on, and the JSON types they must have.
_CONFIG_TYPES: dict[str, tuple[type, ...]] = {
    "format_version": (int,),
    "architecture": (dict,),
    "weights_sha256": (str,),
    "state_file": (str,),
    "state_sha256": (str,),
    "env_id": (str,),
    "env_kwargs": (dict,),
    "steps": (int,),
    "train_config": (dict,),
}


def _check_config_types(config: dict, cpath: Path) -> None:
    """Raise :class:`CheckpointError` naming every entry of ``config`` with the wrong JSON type."""
    wrong = [
        f"{key!r} is {type(config[key]).__name__} {config[key]!r:.40}, expected "
        + " or ".join(t.__name__ for t in types)
        for key, types in _CONFIG_TYPES.items()
        if config.get(key) is not None
        and (not isinstance(config[key], types) or isinstance(config[key], bool))
    ]
    if wrong:
        raise CheckpointError(
            f"config {str(cpath)!r} has entries of the wrong type ({'; '.join(wrong)}); it was "
            "edited or is corrupt: restore it or re-save the checkpoint"
        )


def _read_verified(path: Path, expected_sha: str | None, what: str) -> bytes:
    data = path.read_bytes()
    if expected_sha is not None and _sha256(data) != expected_sha:
        raise CheckpointError(
            f"{what} {str(path)!r} does not match the SHA-256 recorded in its config: it is corrupt, "
            "half-written or from another checkpoint. Restore both files together or retrain."
        )
    return data


def _load_tensors(data: bytes, path: Path, what: str) -> dict[str, torch.Tensor]:
    try:
        return st_load(data)
    except (SafetensorError, ValueError, RuntimeError) as exc:
        raise CheckpointError(
            f"{what} {str(path)!r} is not a readable safetensors file ({exc}); it is corrupt: restore "
            "it or retrain"
        ) from None


def load_checkpoint(
    path: str | os.PathLike, device: str | torch.device = "cpu"
) -> tuple[ActorCritic, dict]:
    """Rebuild the model saved at ``path`` (weights or .json path).

    Returns:
        ``(model, config)``: the :class:`ActorCritic` in eval mode on ``device`` and the JSON config.

    Raises:
        FileNotFoundError: no such checkpoint.
        CheckpointError: a missing/corrupt config, weights that fail their hash, or weights that do
            not fit the architecture the config describes.
    """
    device = _usable_device(device)
    wpath = _weights_path(path)
    config = read_config(wpath)
    data = _read_verified(wpath, config.get("weights_sha256"), "weights file")
    tensors = _load_tensors(data, wpath, "weights file")
    try:
        arch = Architecture.from_dict(config["architecture"])
        model = ActorCritic(arch)
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(
            f"config {str(config_path(wpath))!r} has no usable architecture ({exc}); re-save the "
            "checkpoint with agents.save_checkpoint"
        ) from None
    check_state_dict(model, tensors, wpath)
    model.load_state_dict(tensors)
    return model.to(device).eval(), config


def _usable_device(device: str | torch.device) -> torch.device:
    """``device`` as a torch device this machine has, else a ``ValueError`` saying what to pass."""
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(
            f"device {device!r} is not a torch device ({exc}); pass 'cpu' or 'cuda'"
        ) from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"device {str(device)!r} asked for, but this machine has no CUDA GPU "
            "(torch.cuda.is_available() is False); pass device='cpu'"
        )
    return device


class LoadedPolicy(NamedTuple):
    """A checkpoint ready to play: what :func:`load_policy` returns."""

    model: ActorCritic
    adapter: PolicyAdapter
    config: dict
    env_id: str
    env_kwargs: dict

    @property
    def frame_stack(self) -> int:
        """K, the frames the policy reads per observation (1: none stacked; from the config's
        ``architecture.frames``)."""
        return int(self.model.arch.frames)

    def make_env(self, **overrides):
        """The env this policy plays in: its id and kwargs (``overrides`` win), in its frame stack."""
        from rlviz.agents.vecenv import make_env

        return make_env(self.env_id, {**self.env_kwargs, **overrides}, self.frame_stack)


def checkpoint_env(
    config: dict, env_id: str | None = None, env_kwargs: dict | None = None
) -> tuple[str, dict]:
    """The env a checkpoint plays in: ``(env_id, env_kwargs)``.

    ``env_id`` defaults to the one in ``config`` (then :data:`DEFAULT_ENV_ID`). ``env_kwargs``
    defaults to the variant the agent trained in (e.g. its ``num_distractors``) when the id is
    the trained one, else none: another env's kwargs need not fit.
    """
    trained = config.get("env_id")
    env_id = env_id or trained or DEFAULT_ENV_ID
    if env_kwargs is None:
        env_kwargs = (config.get("env_kwargs") or {}) if env_id == trained else {}
    return env_id, dict(env_kwargs)


def load_policy(
    path: str | os.PathLike,
    device: str | torch.device = "cpu",
    env_id: str | None = None,
    env_kwargs: dict | None = None,
) -> LoadedPolicy:
    """The one way a command loads a checkpoint: model, rlviz adapter, config and its env.

    Args:
        path: weights (``.safetensors``) or config (``.json``) path.
        device: where the model goes.
        env_id, env_kwargs: the env to play in, see :func:`checkpoint_env`.

    Raises:
        FileNotFoundError, CheckpointError: as :func:`load_checkpoint`.
    """
    model, config = load_checkpoint(path, device=device)
    env_id, env_kwargs = checkpoint_env(config, env_id, env_kwargs)
    return LoadedPolicy(model, make_adapter(model), config, env_id, env_kwargs)


def check_state_dict(
    model: nn.Module, tensors: dict[str, torch.Tensor], where: object = ""
) -> None:
    """Raise :class:`CheckpointError` listing every missing, unexpected or mis-shaped tensor."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    shapes = [
        f"{k}: file {tuple(tensors[k].shape)} vs model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in tensors and tuple(tensors[k].shape) != tuple(v.shape)
    ]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing {missing}")
        if unexpected:
            parts.append(f"unexpected {unexpected}")
        if shapes:
            parts.append("shape mismatch " + "; ".join(shapes))
        raise CheckpointError(
            f"weights {str(where)!r} do not fit the architecture in their config ("
            + ", ".join(parts)
            + "). The .safetensors and .json come from different models: keep the pair together."
        )


def _safetensors_metadata(data: bytes) -> dict:
    # The format: 8-byte little-endian header length, then a JSON header with "__metadata__".
    size = int.from_bytes(data[:8], "little")
    return json.loads(data[8 : 8 + size]).get("__metadata__") or {}


def previous_path(path: str | os.PathLike) -> Path:
    """Where :func:`save_checkpoint` keeps the version before the newest of training checkpoint
    ``path`` (``NAME.prev.safetensors``, with its ``.json`` and ``.state.safetensors``)."""
    path = _weights_path(path)
    return path.with_name(path.name[: -len(".safetensors")] + ".prev.safetensors")


def _whole_set(wpath: Path) -> dict[Path, bytes]:
    """The files of the checkpoint at ``wpath`` (state, weights, config), verified against the
    config's hashes; raises :class:`CheckpointError` or ``OSError`` when they do not match."""
    config = read_config(wpath)
    files = {}
    if "state_file" in config:
        files[state_path(wpath)] = _read_verified(
            state_path(wpath), config.get("state_sha256"), "training state"
        )
    files[wpath] = _read_verified(wpath, config.get("weights_sha256"), "weights file")
    files[config_path(wpath)] = config_path(wpath).read_bytes()
    return files


def _keep_previous(wpath: Path) -> None:
    """Copy the checkpoint about to be replaced to :func:`previous_path` when it is whole.

    A mixed set (an earlier save killed between its renames) is not copied: the previous whole
    one stays.
    """
    if not config_path(wpath).exists():
        return
    try:
        files = _whole_set(wpath)
    except (OSError, CheckpointError):
        return
    prev = previous_path(wpath)
    names = {
        wpath: prev,
        state_path(wpath): state_path(prev),
        config_path(wpath): config_path(prev),
    }
    atomic_write_files({names[p]: data for p, data in files.items()})


def load_training_state(path: str | os.PathLike) -> dict | None:
    """The resume state saved with checkpoint ``path`` (optimizer, counters, RNG), or None if absent.

    When the newest files do not match their config (a save killed between its renames) and the
    previous version (:func:`previous_path`) is whole, that one is returned, with a one-line
    warning on stderr.

    Returns:
        The nested dict given to :func:`save_checkpoint` as ``optimizer_state``, tensors on CPU.
    """
    wpath = _weights_path(path)
    config = read_config(wpath)
    if "state_file" not in config:
        return None
    try:
        _whole_set(wpath)
    except (OSError, CheckpointError) as exc:
        prev = previous_path(wpath)
        try:
            _whole_set(prev)
        except (OSError, CheckpointError):
            return _read_state(wpath)  # nothing to fall back to: raises what is wrong
        print(
            f"warning: skipped {wpath.name} + {state_path(wpath).name} ({_reason(exc)}); resuming "
            f"from the previous checkpoint {prev.name} (step {read_config(prev).get('steps', '?')})",
            file=sys.stderr,
        )
        wpath = prev
    return _read_state(wpath)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError):
        return f"{exc.strerror or exc}: {exc.filename}"
    return "they do not match the hashes in their .json: a save was interrupted"


def _read_state(wpath: Path) -> dict:
    config = read_config(wpath)
    spath = state_path(wpath)
    if not spath.exists():
        raise CheckpointError(
            f"training state {str(spath)!r} is missing although {str(config_path(wpath))!r} "
            "names it; restore it, or start a new run instead of --resume"
        )
    data = _read_verified(spath, config.get("state_sha256"), "training state")
    tensors = _load_tensors(data, spath, "training state")
    metadata = _safetensors_metadata(data)
    if "skeleton" not in metadata:
        raise CheckpointError(
            f"training state {str(spath)!r} has no skeleton metadata; it is corrupt"
        )
    return _unflatten(json.loads(metadata["skeleton"]), tensors)
