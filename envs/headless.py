"""Headless OpenGL set-up for MiniWorld: the one place that imports pyglet and miniworld.

Call :func:`prepare` before anything touches ``miniworld`` or ``pyglet.gl``. It is idempotent and
costs nothing after the first call. :class:`envs.boxreach.BoxReachEnv` calls it for you.

What it does, in order, and why:

1. ``import torch._dynamo`` when torch is installed. With this torch build, importing
   ``torch._dynamo`` (``torch.optim.Adam`` does) *after* a MiniWorld GL context exists segfaults:
   triton's LLVM and Mesa's llvmpipe LLVM clash. Importing it first avoids the crash. Set
   ``RLVIZ_SKIP_DYNAMO_PREIMPORT=1`` in worker processes that will never import torch to save the
   ~2 s import.
2. ``LP_NUM_THREADS=0`` unless already set: llvmpipe then rasterises in the calling thread, which is
   ~1.6x faster for 60x80 frames than its worker threads (and friendlier to a shared CPU).
3. ``pyglet.options["headless"] = True`` (EGL, no X display), then ``import miniworld``.
   Importing ``pyglet.gl`` creates pyglet's hidden 1x1 "shadow window" context, which lives as long
   as the process and anchors the GL object space every environment shares (so closing an
   environment never frees textures another one uses). If EGL/GL cannot be loaded or the context
   cannot be created, raises :class:`HeadlessGLError` naming the system packages to install.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
from collections.abc import Iterator

__all__ = ["HeadlessGLError", "prepare", "quiet", "is_prepared"]

_INSTALL_HINT = (
    "MiniWorld renders off-screen with EGL through Mesa's software renderer. Install the system "
    "packages: Debian/Ubuntu `apt-get install libegl1 libgl1 libgles2 libegl-mesa0 "
    "libgl1-mesa-dri`; Fedora `dnf install mesa-libEGL mesa-libGL mesa-dri-drivers`; "
    "conda `conda install -c conda-forge mesalib`."
)


class HeadlessGLError(RuntimeError):
    """OpenGL/EGL could not be initialised headless; the message names the packages to install."""


_state = {"prepared": False}


def is_prepared() -> bool:
    """Return True once :func:`prepare` has succeeded in this process."""
    return bool(_state["prepared"])


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Silence Python-level stdout (MiniWorld prints "Falling back to num_samples=4" per env)."""
    with contextlib.redirect_stdout(io.StringIO()):
        yield


def _preimport_dynamo() -> None:
    if os.environ.get("RLVIZ_SKIP_DYNAMO_PREIMPORT", "") not in ("", "0"):
        return
    try:
        import torch._dynamo  # noqa: F401
    except ImportError:  # torch not installed: nothing can clash
        pass


def prepare() -> None:
    """Make MiniWorld importable and renderable headless in this process (idempotent).

    Raises:
        HeadlessGLError: if EGL/OpenGL cannot be loaded or a context cannot be created.
    """
    if _state["prepared"]:
        return
    if sys.modules.get("miniworld") is not None or sys.modules.get("pyglet.gl") is not None:
        import pyglet

        if not pyglet.options["headless"]:
            raise HeadlessGLError(
                "miniworld or pyglet.gl was imported before envs.headless.prepare(), so pyglet "
                "is not in headless mode (it would look for an X display). Import `envs` and "
                "create environments through it (or call envs.headless.prepare() first)."
            )
    _preimport_dynamo()
    os.environ.setdefault("LP_NUM_THREADS", "0")
    try:
        import pyglet

        pyglet.options["headless"] = True
        # Importing pyglet.gl loads libEGL/libGL and creates pyglet's hidden "shadow window"
        # context, which anchors the GL object space all environments share.
        import pyglet.gl

        if pyglet.gl.current_context is None:
            raise RuntimeError("pyglet created no GL context")
        with quiet():
            import miniworld  # noqa: F401
    except Exception as exc:  # ImportError, OSError, pyglet's EGL/context exceptions
        raise HeadlessGLError(
            f"could not create a headless OpenGL context ({type(exc).__name__}: {exc}). "
            + _INSTALL_HINT
        ) from exc
    _state["prepared"] = True
