"""Write the explorer's page: the HTML and its assets (package data), and data files as scripts.

The page's code lives in ``rlviz/explorer/assets/`` (plain JS and CSS, no build step, no CDN) and
is copied into each report, so a report folder is self-contained and keeps working when rlviz
changes.
"""

from __future__ import annotations

import html
import json
from importlib import resources
from pathlib import Path

from rlviz.io import atomic_write_bytes

#: The page's files, copied into ``out/assets/``.
ASSET_FILES = ("explorer.js", "explorer.css")


def asset_text(name: str) -> str:
    """The text of one of the page's package files (``index.html``, ``explorer.js``, ...)."""
    return resources.files("rlviz.explorer").joinpath("assets", name).read_text(encoding="utf-8")


def write_script(path: str | Path, key: str, data: object) -> Path:
    """Write ``data`` as a script that sets ``window.RLVIZ.<key>`` (atomically).

    A script, not a JSON file: a page opened from ``file://`` may add ``<script>`` tags but may
    not ``fetch()`` files beside it.
    """
    body = json.dumps(data, separators=(",", ":"), allow_nan=False)
    text = (
        "(function(R){R.episodes=R.episodes||{};R." + key + "=" + body + ";})"
        "(window.RLVIZ=window.RLVIZ||{});\n"
    )
    return atomic_write_bytes(path, text.encode("utf-8"))


def write_part(path: str | Path, key: str, data: object) -> Path:
    """Write one part of a long episode as a script that sets ``window.RLVIZ.parts[key]``."""
    body = json.dumps(data, separators=(",", ":"), allow_nan=False)
    text = (
        "(function(R){R.parts=R.parts||{};R.parts[" + json.dumps(key) + "]=" + body + ";})"
        "(window.RLVIZ=window.RLVIZ||{});\n"
    )
    return atomic_write_bytes(path, text.encode("utf-8"))


def write_page(out: str | Path, title: str) -> Path:
    """Copy the assets into ``out/assets/`` and write ``out/index.html`` (last); returns its path."""
    out = Path(out)
    (out / "assets").mkdir(parents=True, exist_ok=True)
    for name in ASSET_FILES:
        atomic_write_bytes(out / "assets" / name, asset_text(name).encode("utf-8"))
    page = asset_text("index.html").replace("{{title}}", html.escape(title))
    return atomic_write_bytes(out / "index.html", page.encode("utf-8"))
