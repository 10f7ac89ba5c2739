"""Stream RGB frames to an H.264 MP4 or a GIF with the ffmpeg that imageio-ffmpeg ships.

Frames go straight down a pipe to ffmpeg, so memory does not grow with the video's length. The
video is written to a hidden temp file next to the output (:func:`rlviz.io.atomic_path`) and
renamed into place only when ffmpeg finished cleanly: a crash, an exception or Ctrl-C midway leaves
no (broken) file at the output path.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import tempfile
from contextlib import AbstractContextManager
from pathlib import Path

import numpy as np

from rlviz.io import atomic_path

FORMATS = (".mp4", ".gif")


def _ffmpeg_exe() -> str:
    try:
        import imageio_ffmpeg
    except ImportError as exc:  # pragma: no cover - a declared dependency
        raise ImportError(
            "writing videos needs imageio-ffmpeg; install it with `pip install imageio-ffmpeg`"
        ) from exc
    return imageio_ffmpeg.get_ffmpeg_exe()


def check_writable(path: str | os.PathLike) -> Path:
    """The output ``path`` as a Path, once its folder exists (created if needed) and is writable.

    Raises:
        ValueError: the suffix is not one we write.
        PermissionError / NotADirectoryError: the folder cannot be written, with what to do.
    """
    path = Path(path)
    if path.suffix.lower() not in FORMATS:
        raise ValueError(
            f"cannot write a video to {str(path)!r}: expected a file ending in "
            f"{' or '.join(FORMATS)}"
        )
    folder = path.parent if str(path.parent) else Path(".")
    if folder.exists() and not folder.is_dir():
        raise NotADirectoryError(
            f"cannot write {str(path)!r}: {str(folder)!r} exists and is not a folder; "
            "choose another output path"
        )
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PermissionError(
            f"cannot create the output folder {str(folder)!r} ({exc.strerror}); "
            "choose a writable --out location"
        ) from None
    if path.is_dir():
        raise IsADirectoryError(
            f"cannot write a video to {str(path)!r}: it is a folder; give a file name inside it"
        )
    # Create and remove a file: root passes os.access on read-only mounts and /proc, where
    # ffmpeg would fail only after the whole episode is explained.
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise PermissionError(
            f"the output folder {str(folder)!r} is not writable ({exc.strerror}); choose a "
            "writable --out location"
        ) from None
    return path


class _Discarded(Exception):
    """Thrown into the temp-file context of a video that is not to be published."""


class VideoWriter:
    """Write uint8 RGB frames [H, W, 3] one at a time to ``path`` (``.mp4`` H.264 or ``.gif``).

    MP4 uses libx264 with yuv420p (plays everywhere); odd frame sizes are padded by one edge pixel
    to even, as yuv420p needs. GIF uses a fresh palette per frame so it also streams. Use as a
    context manager: leaving the block normally publishes the file, an exception discards it.

    Args:
        path: output file, ``.mp4`` or ``.gif``; its folder is created if needed.
        fps: frames per second.
        crf: x264 quality (lower is better and larger; 23 is x264's default).
        preset: x264 speed/size trade-off (``"veryfast"`` encodes ~2x faster than the default).
    """

    def __init__(
        self,
        path: str | os.PathLike,
        fps: float = 15,
        *,
        crf: int = 23,
        preset: str = "veryfast",
    ) -> None:
        if not fps or fps <= 0:
            raise ValueError(f"fps must be a positive number, got {fps!r}")
        self.path = check_writable(path)
        self.fps = float(fps)
        self.crf = int(crf)
        self.preset = preset
        self.frames = 0
        self.size: tuple[int, int] | None = None  # (H, W) of the frames given
        self._pad = (0, 0)
        self._proc: subprocess.Popen | None = None
        self._stderr = None
        self._closed = False
        self._atomic: AbstractContextManager[Path] | None = None  # entered at the first frame
        self._tmp: Path | None = None

    def _command(self, height: int, width: int) -> list[str]:
        out_h, out_w = height + self._pad[0], width + self._pad[1]
        cmd = [_ffmpeg_exe(), "-y", "-loglevel", "error", "-f", "rawvideo", "-pix_fmt", "rgb24"]
        cmd += ["-s", f"{width}x{height}", "-r", f"{self.fps:g}", "-i", "-", "-an"]
        if self._pad != (0, 0):
            cmd += ["-vf", f"pad={out_w}:{out_h}:0:0"]
        if self.path.suffix.lower() == ".gif":
            # Per-frame palette (stats_mode=single, new=1) keeps colours right without a 2nd pass.
            graph = "split[a][b];[a]palettegen=stats_mode=single[p];[b][p]paletteuse=new=1"
            cmd += ["-filter_complex", graph, "-f", "gif"]
        else:
            cmd += ["-c:v", "libx264", "-preset", self.preset, "-crf", str(self.crf)]
            cmd += ["-pix_fmt", "yuv420p", "-movflags", "+faststart", "-f", "mp4"]
        return cmd + [str(self._tmp)]

    def _start(self, height: int, width: int) -> None:
        self._atomic = atomic_path(self.path, suffix=self.path.suffix)
        self._tmp = self._atomic.__enter__()
        self.size = (height, width)
        if self.path.suffix.lower() == ".mp4":
            self._pad = (height % 2, width % 2)
        self._stderr = tempfile.TemporaryFile()  # a file, not a pipe: ffmpeg can never block on it
        self._proc = subprocess.Popen(
            self._command(height, width),
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=self._stderr,
        )

    def _ffmpeg_error(self) -> str:
        if self._stderr is None:
            return ""
        self._stderr.seek(0)
        return self._stderr.read().decode(errors="replace").strip()[-2000:]

    def write(self, frame: np.ndarray) -> None:
        """Append one frame, uint8 [H, W, 3]; every frame must have the first frame's size."""
        if self._closed:
            raise RuntimeError(f"VideoWriter for {str(self.path)!r} is already closed")
        frame = np.asarray(frame)
        if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
            raise ValueError(
                f"expected a uint8 RGB frame shaped [H, W, 3], got {frame.dtype} {frame.shape}; "
                "convert with np.clip(x * 255, 0, 255).astype(np.uint8)"
            )
        if self._proc is None:
            self._start(frame.shape[0], frame.shape[1])
        elif frame.shape[:2] != self.size:
            raise ValueError(
                f"frame {self.frames} is {frame.shape[1]}x{frame.shape[0]} but the video is "
                f"{self.size[1]}x{self.size[0]}; all frames of a video must have one size"
            )
        try:
            self._proc.stdin.write(np.ascontiguousarray(frame).data)
        except (BrokenPipeError, OSError):
            self._proc.wait()
            raise RuntimeError(
                f"ffmpeg stopped while writing {str(self.path)!r}: {self._ffmpeg_error()}"
            ) from None
        self.frames += 1

    def close(self) -> Path:
        """Finish the video and move it to ``path``; returns ``path`` (raises if no frames)."""
        if self._closed:
            return self.path
        if self._proc is None:
            self._closed = True
            raise ValueError(f"no frames were written; {str(self.path)!r} was not created")
        self._proc.stdin.close()
        code = self._proc.wait()
        self._closed = True
        if code != 0:
            message = self._ffmpeg_error()
            self._cleanup()
            raise RuntimeError(f"ffmpeg failed (exit {code}) writing {str(self.path)!r}: {message}")
        self._cleanup(publish=True)
        return self.path

    def abort(self) -> None:
        """Stop ffmpeg and delete the partial file; nothing appears at ``path``."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        self._closed = True
        self._cleanup()

    def _cleanup(self, publish: bool = False) -> None:
        """Release ffmpeg's pipes; move the temp file to ``path`` (``publish``) or delete it."""
        if self._proc is not None and self._proc.stdin and not self._proc.stdin.closed:
            with contextlib.suppress(OSError):
                self._proc.stdin.close()
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None
        atomic, self._atomic = self._atomic, None
        if atomic is not None:
            if publish:
                atomic.__exit__(None, None, None)
            else:  # atomic_path deletes its temp file when the block fails
                failed = _Discarded(str(self.path))
                atomic.__exit__(_Discarded, failed, None)

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def __del__(self) -> None:
        # A writer dropped without close() (e.g. a generator abandoned) must not leave a temp file.
        if not getattr(self, "_closed", True):
            self.abort()
