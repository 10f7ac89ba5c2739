"""Record real OCAtari object boxes on ALE Pong for ``tests/test_trust.py`` (the Atari ground-truth
masks of :mod:`rlviz.faithfulness.masks`, checked against the frames' own pixels).

OCAtari 2.2.1 needs ``numpy<2``, so it cannot sit in the project's venv (numpy 2.x); run this in a
scratch venv beside the same gymnasium / ale-py::

    python3 -m venv /tmp/ocvenv
    /tmp/ocvenv/bin/pip install gymnasium==1.2.2 ale-py==0.12.1 ocatari
    /tmp/ocvenv/bin/python benchmarks/ocatari_fixture.py     # -> tests/data/ocatari_pong.npz

Keeps every 4th raw frame (210x160 RGB) from step 40 on, with each object's (x, y, w, h) box.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from ocatari.core import OCAtari

OUT = Path(__file__).resolve().parents[1] / "tests" / "data" / "ocatari_pong.npz"
CATEGORIES = ("Player", "Ball", "Enemy")


def main() -> None:
    env = OCAtari("ALE/Pong-v5", mode="ram", hud=False, render_mode="rgb_array", obs_mode="ori")
    rng = np.random.default_rng(0)
    obs, _ = env.reset(seed=0)
    frames, boxes = [], []
    for step in range(120):
        obs, *_ = env.step(int(rng.integers(env.action_space.n)))
        if step >= 40 and step % 4 == 0:
            frames.append(obs.copy())
            row = np.zeros((len(CATEGORIES), 4), np.int64)  # w = h = 0: not on screen
            for o in env.objects:
                if o.category in CATEGORIES:
                    row[CATEGORIES.index(o.category)] = o.xywh
            boxes.append(row)
    buffer = io.BytesIO()
    np.savez_compressed(
        buffer, frames=np.stack(frames), boxes=np.stack(boxes), categories=np.array(CATEGORIES)
    )
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_bytes(buffer.getvalue())
    print(OUT, len(frames), "frames", OUT.stat().st_size, "bytes")


if __name__ == "__main__":
    main()
