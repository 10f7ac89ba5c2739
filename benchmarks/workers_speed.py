"""``--workers``: serial vs Ray wall time of `rlviz evaluate`, `video`, `tsne` and `explore` on the
shipped agent, and whether the outputs are identical.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/workers_speed.py [--workers 2] [--out DIR]

Each command runs as a fresh process (as a user runs it), so every time includes Python start,
imports and, for Ray, starting the local cluster and its workers' set-up: the figure a user sees
for one call. Outputs are compared file by file (explore: its data files; timings in its
manifest differ by nature, so manifest.js is left out).
"""

from __future__ import annotations

import argparse
import filecmp
import os
import subprocess
import sys
import time
from pathlib import Path

CHECKPOINT = "agents/checkpoints/boxreach.safetensors"

#: name -> (arguments, output files to compare, relative to the run's folder)
COMMANDS = {
    "evaluate": (["evaluate", "--episodes", "40", "--json", "{out}/eval.json"], ["eval.json"]),
    "video": (
        ["video", "--episodes", "4", "--methods", "occlusion,gradcam", "--no-progress"]
        + ["--out", "{out}/video"],
        [f"video/rl-explain-episode-{i}.mp4" for i in range(4)],
    ),
    "tsne": (
        ["tsne", "--episodes", "8", "--out", "{out}/tsne"],
        ["tsne/dataset.npz", "tsne/embedding.npz"],
    ),
    "explore": (
        ["explore", "--episodes", "4", "--out", "{out}/explore"],
        None,  # every data file but the manifest
    ),
}


def run(argv: list[str]) -> float:
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    t0 = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - t0
    if done.returncode != 0:
        sys.exit(f"{' '.join(argv)} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return seconds


def same_outputs(a: Path, b: Path, files: list[str] | None) -> bool:
    if files is None:
        files = [
            str(p.relative_to(a))
            for p in sorted((a / "explore").rglob("*"))
            if p.is_file() and p.name != "manifest.js"
        ]
    return all(filecmp.cmp(a / f, b / f, shallow=False) for f in files)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--out", type=Path, default=Path("/tmp/rlviz_workers_speed"))
    p.add_argument("--only", nargs="+", choices=sorted(COMMANDS), default=sorted(COMMANDS))
    p.add_argument(
        "--scale", type=int, default=1, help="episodes x SCALE (Ray's start-up is fixed)"
    )
    args = p.parse_args()
    rlviz = str(Path(sys.executable).with_name("rlviz"))
    print(
        f"# --workers {args.workers} vs serial, episodes x {args.scale}, {os.cpu_count()} cores, "
        f"{CHECKPOINT}"
    )
    print(f"{'command':<10} {'serial s':>9} {'workers s':>10} {'speed-up':>9}  identical")
    ok = True
    for name in args.only:
        argv, files = COMMANDS[name]
        if name == "video" and args.scale > 1:
            files = [f"video/rl-explain-episode-{i}.mp4" for i in range(4 * args.scale)]
        times, outs = [], []
        for label, extra in (("serial", []), ("workers", ["--workers", str(args.workers)])):
            out = args.out / name / label
            out.mkdir(parents=True, exist_ok=True)
            filled = [a.replace("{out}", str(out)) for a in argv]
            at = filled.index("--episodes") + 1
            filled[at] = str(int(filled[at]) * args.scale)
            times.append(run([rlviz, *filled, "--checkpoint", CHECKPOINT, *extra]))
            outs.append(out)
        same = same_outputs(outs[0], outs[1], files)
        ok &= same
        print(f"{name:<10} {times[0]:9.1f} {times[1]:10.1f} {times[0] / times[1]:8.2f}x  {same}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
