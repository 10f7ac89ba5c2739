"""``rlviz trust`` on the shipped agent, a randomly initialised network of its architecture and the
memory agent (frame stack 2): the table in BENCHMARKS.md ("Which map to trust").

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/trust.py [--frames 96] [--episodes 2]

Each run is the command itself (``rlviz trust --checkpoint CK --out benchmarks/out/trust/NAME``);
this script times it and prints one markdown row per method and target from its trust.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rlviz.cli.trust import main as trust  # noqa: E402

CHECKPOINTS = ROOT / "agents" / "checkpoints"
RUNS = {
    "shipped": ["--checkpoint", str(CHECKPOINTS / "boxreach.safetensors")],
    "random-init": ["--checkpoint", str(CHECKPOINTS / "boxreach.safetensors"), "--random-init"],
    "memory (K=2)": ["--checkpoint", str(CHECKPOINTS / "boxreach_memory.safetensors")],
}


def _f(value, digits=2):
    return "n/a" if value is None else f"{value:.{digits}f}"


def table(data: dict) -> list[str]:
    lines = [
        "| row | rho output / all | eMPRT | random logit | deletion AUC (random) | "
        "insertion AUC (random) | pointing / mass:share | ms/frame | verdict |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in data["rows"]:
        rand, d, i, gt = r["randomisation"], r["deletion"], r["insertion"], r["ground_truth"]
        ok = {True: "pass", False: "FAIL", None: "n/a"}
        gt_text = (
            "n/a"
            if not gt or not gt.get("frames")
            else (
                f"{gt['pointing']:.2f} / {gt['mass_ratio']:.1f} {ok[r['checks']['ground_truth']]}"
            )
        )
        lines.append(
            f"| {r['row']} | {_f(rand['rho_output'])} / {_f(rand['rho_full'])} "
            f"{ok[r['checks']['randomisation']]} | {_f(rand['emprt'])} | "
            f"{_f(r['random_logit_rho'])} {ok[r['checks']['random_logit']] if r['random_logit_rho'] is not None else ''} | "
            f"{d['auc']:.2f} ({d['random_auc']:.2f}) {ok[r['checks']['deletion']]} | "
            f"{i['auc']:.2f} ({i['random_auc']:.2f}) {ok[r['checks']['insertion']]} | "
            f"{gt_text} | {r['ms_per_frame']:.1f} | {r['verdict'].split(': ', 1)[1]} |"
        )
    lines += [
        f"| {row} | not applicable here: {why} |" for row, why in data.get("skipped", {}).items()
    ]
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", default="96")
    parser.add_argument("--episodes", default="2")
    parser.add_argument("--runs", default=",".join(RUNS), help="comma-separated subset of runs")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out" / "trust")
    args = parser.parse_args(argv)
    print(f"{time.strftime('%Y-%m-%d %H:%M')}; --frames {args.frames} --episodes {args.episodes}")
    for name in args.runs.split(","):
        out = args.out / name.split()[0]
        for stale in ("trust.json", "trust.csv", "trust.png"):  # this script's own last outputs
            (out / stale).unlink(missing_ok=True)
        start = time.perf_counter()
        code = trust([*RUNS[name], "--frames", args.frames, "--episodes", args.episodes,
                      "--out", str(out)])  # fmt: skip
        seconds = time.perf_counter() - start
        if code:
            return code
        data = json.loads((out / "trust.json").read_text())
        print(f"\n### {name}: `rlviz trust` took {seconds:.0f} s (wall, incl. playing)\n")
        print("\n".join(table(data)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
