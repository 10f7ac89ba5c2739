"""Fingerprints of what rlviz writes on fixed seeds: a refactor must leave every one unchanged.

Runs, each in a fresh process through the CLI (the way a user meets them):
  video     `rlviz video` of the shipped agent, one episode, gradient + gradcam  -> the MP4's bytes
  explore   `rlviz explore` of the same episode                                   -> every file's bytes
  evaluate  `rlviz evaluate`, 6 held-out episodes                                 -> the JSON summary
  train     `rlviz train`, 2 synchronous updates on 4 envs, 2 snapshots           -> weights, logs
  sweep     `rlviz sweep` over that run's snapshots, serial, small               -> the table files

Prints one sha256 per output file; `--save F` writes them as JSON, `--compare F` fails (exit 1)
on any difference and names the files that changed. An older commit is fingerprinted from a
worktree whose rlviz/envs and rlviz/agents link to its envs/ and agents/ (the editable install
maps those names to this checkout):

    git worktree add /tmp/old REV && ln -s ../envs /tmp/old/rlviz/envs && ln -s ../agents /tmp/old/rlviz/agents
    cp benchmarks/behaviour_fingerprint.py /tmp/old/benchmarks/
    (cd /tmp/old && PYTHONPATH=/tmp/old ../main/.venv/bin/python benchmarks/behaviour_fingerprint.py --save /tmp/before.json)
    .venv/bin/python benchmarks/behaviour_fingerprint.py --compare /tmp/before.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RLVIZ = [sys.executable, "-m", "rlviz"]
AGENT = str(ROOT / "agents/checkpoints/boxreach.safetensors")

# What legitimately differs run to run: wall-clock fields, the temp folder's name, the state
# file's digest (it holds the wall time). These are dropped before hashing; all else is hashed.
TIMED_KEYS = {
    "time_s",
    "sps",
    "update_s",
    "env_wait",
    "time_probe_s",
    "time_tasks_s",
    "state_sha256",
    "command",
}


def commands(out: Path) -> dict[str, list[str]]:
    """Each output's command line; its files land under ``out / FOLDERS[name]``."""
    lines = {
        "train": "train --total-steps 512 --num-envs 4 --num-steps 64 --num-minibatches 2 "
        "--update-epochs 1 --no-async-learner --checkpoint-every 256 --snapshot-every 256 "
        f"--seed 3 --runs-dir {out / 'runs'} --run-name fp",
        "video": f"video --checkpoint {AGENT} --episodes 1 --seed 0 --methods gradient,gradcam "
        f"--out {out / 'video'}",
        "explore": f"explore --checkpoint {AGENT} --episodes 1 --seed 0 --out {out / 'explore'}",
        "evaluate": f"evaluate --checkpoint {AGENT} --episodes 6 --oracle "
        f"--json {out / 'evaluate/summary.json'}",
        # the snapshots of the training run above
        "sweep": f"sweep --run {out / 'runs/fp'} --episodes 2 --block-size 1 --probe-frames 8 "
        f"--probe-episodes 1 --methods gradient --top-k 1 --no-init --out {out / 'sweep'}",
    }
    return {name: RLVIZ + line.split() + ["--no-progress"] for name, line in lines.items()}


#: The folder each command writes under the output folder.
FOLDERS = {"train": "runs", "video": "video", "explore": "explore", "evaluate": "evaluate",
           "sweep": "sweep"}  # fmt: skip


def _untimed(value):
    if isinstance(value, dict):
        return {k: _untimed(v) for k, v in value.items() if k not in TIMED_KEYS}
    if isinstance(value, list):
        return [_untimed(v) for v in value]
    return value


def digest(path: Path, out: Path) -> str:
    """sha256 of the file's content with run-to-run noise (see TIMED_KEYS) taken out."""
    if path.suffix == ".safetensors":  # tensors only: the header's metadata may hold times
        from safetensors.numpy import load_file

        tensors = load_file(str(path))
        data = b"".join(
            k.encode() + tensors[k].tobytes() for k in sorted(tensors) if "time" not in k
        )
    elif path.suffix == ".json":
        text = path.read_text().replace(str(out), "<OUT>").replace(str(ROOT), "<ROOT>")
        data = json.dumps(_untimed(json.loads(text)), sort_keys=True).encode()
    elif path.name == "manifest.js":  # the explorer's: its stage timings are wall times
        data = re.sub(r'"timings":\{[^}]*\}', "", path.read_text()).encode()
    elif path.suffix == ".csv":
        rows = [
            line.split(",") for line in path.read_text().replace(str(out), "<OUT>").splitlines()
        ]
        keep = [i for i, name in enumerate(rows[0]) if name not in TIMED_KEYS]
        data = "\n".join(",".join(r[i] for i in keep if i < len(r)) for r in rows).encode()
    elif path.suffix == ".png" and path.parts[-2] in ("fp", "sweep"):
        return "plot (drawn from the hashed data)"
    else:
        data = path.read_bytes()
    return hashlib.sha256(data).hexdigest()


def fingerprint(only: list[str] | None, keep: Path | None) -> dict[str, str]:
    found: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="rlviz-fp-") as tmp:
        if keep:
            keep.mkdir(parents=True, exist_ok=True)
            tmp = str(keep)
        out = Path(tmp)
        for name, cmd in commands(out).items():
            if only and name not in only:
                continue
            run = subprocess.run(
                cmd,
                cwd=tmp,
                capture_output=True,
                text=True,
                env={**os.environ, "OMP_NUM_THREADS": "1"},
            )
            if run.returncode != 0:
                raise SystemExit(f"{name} failed (rc {run.returncode}):\n{run.stderr[-3000:]}")
            mine = [f for f in sorted((out / FOLDERS[name]).rglob("*")) if f.is_file()]
            for f in mine:
                found[str(f.relative_to(out))] = digest(f, out)
            print(f"{name}: {len(mine)} files", file=sys.stderr)
    return found


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--save", type=Path)
    ap.add_argument("--compare", type=Path)
    ap.add_argument("--keep", type=Path, help="write the outputs here and keep them")
    ap.add_argument("--only", nargs="+", choices=list(FOLDERS), help="sweep needs train")
    args = ap.parse_args()
    now = fingerprint(args.only, args.keep)
    for rel, h in now.items():
        print(f"{h[:16]}  {rel}")
    if args.save:
        args.save.write_text(json.dumps(now, indent=1, sort_keys=True))
    if args.compare:
        before = json.loads(args.compare.read_text())
        if args.only:  # compare only what ran
            folders = tuple(FOLDERS[name] + "/" for name in args.only)
            before = {k: v for k, v in before.items() if k.startswith(folders)}
        changed = sorted(k for k in before.keys() | now.keys() if before.get(k) != now.get(k))
        if changed:
            print(f"{len(changed)} of {len(before)} outputs differ:", *changed, sep="\n  ")
            raise SystemExit(1)
        print(f"all {len(now)} outputs identical to {args.compare}")


if __name__ == "__main__":
    main()
