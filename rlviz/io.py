"""The one way rlviz writes files: a temp file beside the target, then ``os.replace``.

A crash, a kill or an exception mid-write leaves any previous file intact and no half-written file
under the final name; the temp file is hidden (``.name.PID.*.tmp``) and removed on failure. A
temp file left by a killed process (SIGKILL runs no cleanup) is removed by the next write of the
same name.

Test hook: with ``RLVIZ_FAULT_PAUSE=PATTERN[:N]`` in the environment, the N-th write (default 1st)
whose file name matches the glob ``PATTERN`` stops right before publishing its (complete) temp file
and waits to be killed; it first touches ``RLVIZ_FAULT_SIGNAL`` (a path) when that is set.
"""

from __future__ import annotations

import csv
import fnmatch
import io
import json
import math
import os
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import BinaryIO

import numpy as np

TEMP_SUFFIX = ".tmp"
# Inside keep_existing(): {"renamed": {asked: written}, "written": {paths this block wrote}}.
_KEEP: ContextVar[dict | None] = ContextVar("rlviz_keep_existing", default=None)


@contextmanager
def keep_existing() -> Iterator[dict[Path, Path]]:
    """Within this block no write replaces a file that was there before the block: it goes to the
    first free ``NAME-2.EXT``, ``NAME-3.EXT``, ... instead (a file the block wrote itself is
    replaced as usual). Yields the ``{asked path: written path}`` of those writes; the ``rlviz``
    commands run in it unless ``--overwrite``, so outputs are replaced only when asked to."""
    renamed: dict[Path, Path] = {}
    token = _KEEP.set({"renamed": renamed, "written": set()})
    try:
        yield renamed
    finally:
        _KEEP.reset(token)


@contextmanager
def allow_overwrite() -> Iterator[None]:
    """Undo :func:`keep_existing` within this block: writes replace existing files."""
    token = _KEEP.set(None)
    try:
        yield
    finally:
        _KEEP.reset(token)


def replace_existing() -> None:
    """From here on in the current :func:`keep_existing` block, writes replace existing files
    (what ``--overwrite`` asks for)."""
    _KEEP.set(None)


def written_path(path: str | os.PathLike) -> Path:
    """Where a write of ``path`` went (or goes): ``path``, or its new name under
    :func:`keep_existing`."""
    path = Path(path)
    keep = _KEEP.get()
    return keep["renamed"].get(path.absolute(), path) if keep else path


def _target(path: Path) -> Path:
    """The file a write of ``path`` publishes to (see :func:`keep_existing`)."""
    keep = _KEEP.get()
    if keep is None:
        return path
    key = path.absolute()
    if key in keep["renamed"]:
        return keep["renamed"][key]
    if key in keep["written"] or not path.exists():
        keep["written"].add(key)
        return path
    n = 2  # video.mp4 -> video-2.mp4, filters_conv2.conv.png -> filters_conv2.conv-2.png
    while (new := path.with_name(f"{path.stem}-{n}{path.suffix}")).exists():
        n += 1
    keep["renamed"][key] = new
    keep["written"].add(new.absolute())
    return new


_fault_hits: list[int] = [0]  # writes that matched RLVIZ_FAULT_PAUSE so far


def _fault_point(path: Path) -> None:
    """Pause forever here when the ``RLVIZ_FAULT_PAUSE`` test hook names this write."""
    spec = os.environ.get("RLVIZ_FAULT_PAUSE")
    if not spec:
        return
    pattern, _, nth = spec.partition(":")
    if not fnmatch.fnmatch(path.name, pattern):
        return
    _fault_hits[0] += 1
    if _fault_hits[0] != int(nth or 1):
        return
    signal_file = os.environ.get("RLVIZ_FAULT_SIGNAL")
    if signal_file:
        Path(signal_file).write_text(f"{os.getpid()} {path}\n")
    while True:  # the test kills us here
        time.sleep(1)


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` still runs (someone else's counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def remove_stale_temps(path: str | os.PathLike) -> list[Path]:
    """Delete the temp files of writes to ``path`` whose process is gone; returns them."""
    path = Path(path)
    removed = []
    for tmp in path.parent.glob(f".{glob_escape(path.name)}.*{TEMP_SUFFIX}"):
        pid = tmp.name[len(path.name) + 2 :].split(".", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and not pid_alive(int(pid)):
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


def glob_escape(name: str) -> str:
    """``name`` with glob metacharacters escaped, for ``Path.glob``."""
    return "".join(f"[{c}]" if c in "*?[" else c for c in name)


def _publishable(tmp: str | os.PathLike) -> None:
    """Give a mkstemp file (private, 0600) the permissions a plain ``open()`` would."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)


@contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temp path beside ``path`` for a writer that takes a file name (ffmpeg, savefig).

    On success the temp file replaces ``path`` in one step; on any exception it is removed.
    ``suffix`` keeps an extension on the temp name for writers that read the format from it.
    """
    path = _target(Path(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path)
    # The pid in the name lets a later write tell a dead writer's leftover from a live one.
    fd, tmp = tempfile.mkstemp(
        prefix=f".{path.name}.{os.getpid()}.", suffix=f"{suffix}{TEMP_SUFFIX}", dir=path.parent
    )
    os.close(fd)
    try:
        yield Path(tmp)
        _publishable(tmp)
        _fault_point(path)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """Open a binary temp file beside ``path``; on success it replaces ``path`` (fsynced)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        yield handle
        handle.flush()
        os.fsync(handle.fileno())


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; returns the path."""
    with atomic_output(path) as handle:
        handle.write(data)
    return written_path(path)


def atomic_write_files(files: Mapping[str | os.PathLike, bytes]) -> list[Path]:
    """Write several files that belong together: every temp file first, then each is published,
    in the given order (put the file that commits the set, e.g. a config naming the others' hashes,
    last). A kill while writing leaves all old files; only the few renames at the end are a window.
    """
    items = [(Path(p), data) for p, data in files.items()]
    with ExitStack() as stack:
        # Entered last-first, so the stack publishes them first-first on leaving the block.
        for path, data in reversed(items):
            stack.enter_context(atomic_output(path)).write(data)
    return [written_path(path) for path, _ in items]


def save_json(data: object, path: str | os.PathLike) -> Path:
    """Write ``data`` as indented JSON at ``path`` atomically; returns the path."""
    text = json.dumps(data, indent=2) + "\n"  # fails before touching the disk if not JSON-able
    return atomic_write_bytes(path, text.encode())


def json_ready(value):
    """``value`` as strict JSON can hold it: NaN / inf become None, numpy scalars plain numbers,
    mappings (keys as strings), lists and tuples recursively."""
    if isinstance(value, Mapping):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    if isinstance(value, (np.floating, float)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def save_csv(rows: Iterable[Mapping], columns: Sequence[str], path: str | os.PathLike) -> Path:
    """Write ``rows`` under the header ``columns`` as CSV (``\\n`` line ends) atomically; returns
    the path."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return atomic_write_bytes(path, buffer.getvalue().encode())


def atomic_savez(path: str | os.PathLike, arrays: Mapping[str, np.ndarray]) -> Path:
    """Write ``arrays`` to a compressed ``.npz`` at ``path`` atomically; returns the path."""
    # Writing through a file object stops numpy from appending another ".npz" to the name.
    with atomic_output(path) as handle:
        np.savez_compressed(handle, **arrays)
    return written_path(path)


def save_figure(fig, path: str | os.PathLike) -> Path:
    """Write a matplotlib ``fig`` as PNG at ``path`` atomically; returns the path."""
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ValueError(
            f"figures are written as PNG; got path {str(path)!r}, use a name ending in .png"
        )
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png")
    return written_path(path)


def save_image(image: np.ndarray, path: str | os.PathLike) -> Path:
    """Write a uint8 [H, W, 3] (or [H, W]) array as PNG at ``path`` atomically; returns the path."""
    from PIL import Image

    with atomic_output(path) as handle:
        Image.fromarray(np.ascontiguousarray(image)).save(handle, format="PNG")
    return written_path(path)
