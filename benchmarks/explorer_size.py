"""Explorer report cost: generation time, size on disk, first painted frame and scrub latency in
headless Chromium, for N episodes of the shipped agent x methods x (taken action, value), plus
the NMF layer view and the network tab.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/explorer_size.py            # the issue's figure
    .venv/bin/python benchmarks/explorer_size.py --tiny                       # a smoke run

Defaults (issue 18): 10 episodes, 4 methods (gradient, grad_x_input, gradcam, integrated_gradients)
x (taken, value), NMF with 4 features, network tab with 4 units per layer. Targets: generation
<= 30 s, report <= 25 MB, first painted frame from file:// <= 1.5 s, scrub <= 16 ms per frame.

Generation time is ``rlviz.explore``'s own wall time (imports and loading the checkpoint are
not counted; the first call pays one-off costs such as t-SNE's compilation, so with ``--repeat 2``
the best of two is printed). First paint is measured in the page (``performance.now()`` when
the first frame is drawn, from navigation start) and from Python (``goto`` to the ready flag);
scrub latency is the page's own render time per step while every step of episode 0 is visited
(JS work of one cursor move: frame, overlay, stack, charts, map), then one step per animation
frame to include painting.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rlviz.cli.common import load_policy, make_env  # noqa: E402
from rlviz.explorer import explore  # noqa: E402

CHECKPOINT = Path(__file__).resolve().parents[1] / "agents" / "checkpoints" / "boxreach.safetensors"
METHODS = "gradient,grad_x_input,gradcam,integrated_gradients"
CHROMIUM = "/usr/bin/chromium"


def generate(args, out: Path) -> dict:
    """Write one report into ``out``; returns its summary as a dict (best time of ``repeat``)."""
    policy = load_policy(args.checkpoint)
    best = None
    for _ in range(args.repeat):
        if out.exists():
            shutil.rmtree(out)
        env = make_env(policy.env_id, **policy.env_kwargs)
        try:
            summary = explore(
                env,
                policy.adapter,
                out=out,
                episodes=args.episodes,
                methods=args.methods.split(","),
                targets=args.targets.split(","),
                seed=0,
                max_steps=args.max_steps,
                nmf=args.nmf_features > 0,
                nmf_features=max(1, args.nmf_features),
                network=args.units > 0,
                units_per_layer=max(1, args.units),
                optvis_steps=args.optvis_steps,
                threads=args.threads,
            )
        finally:
            env.close()
        if best is None or summary.seconds < best.seconds:
            best = summary
    return {
        "episodes": best.episodes,
        "steps": best.steps,
        "seconds": round(best.seconds, 2),
        "timings": {k: round(v, 2) for k, v in best.timings.items()},
    }


def sizes(out: Path) -> dict:
    """Bytes on disk: total and by kind (episode scripts with their map sheets, frame sheets,
    stack sheets, manifest, page assets)."""
    kinds = {"episode_js": 0, "frames_png": 0, "stack_png": 0, "manifest": 0, "other": 0}
    for f in out.rglob("*"):
        if not f.is_file():
            continue
        n = f.stat().st_size
        if f.name.startswith("episode_"):
            kinds["episode_js"] += n
        elif f.name.startswith("frames_"):
            kinds["frames_png"] += n
        elif f.name.startswith("stack_"):
            kinds["stack_png"] += n
        elif f.name == "manifest.js":
            kinds["manifest"] += n
        else:
            kinds["other"] += n
    return {"total": sum(kinds.values()), **kinds}


SCRUB_JS = """async () => {
  const X = RLVIZ.explorer, T = RLVIZ.episodes[0].T, work = [];
  for (let t = 0; t < T; t++) { X.setCursor(t); work.push(+document.body.dataset.renderMs); }
  const frames = [];
  await new Promise((done) => {
    let t = 0, last = performance.now();
    const tick = (now) => {
      if (t) frames.push(now - last);
      last = now; X.setCursor(t++ % T);
      if (t <= Math.min(T, 120)) requestAnimationFrame(tick); else done();
    };
    requestAnimationFrame(tick);
  });
  return { work, frames };
}"""


def in_browser(out: Path, loads: int) -> dict:
    """First paint (best of ``loads`` fresh tabs) and scrub latency, in headless Chromium."""
    from playwright.sync_api import sync_playwright

    paint_page, paint_wall = [], []
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"]
        )
        errors: list[str] = []
        for _ in range(loads):
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.on("pageerror", lambda e: errors.append(str(e)))
            t0 = time.perf_counter()
            page.goto((out / "index.html").resolve().as_uri())
            page.wait_for_selector("body[data-ready='1']", timeout=60_000)
            paint_wall.append((time.perf_counter() - t0) * 1000)
            paint_page.append(page.evaluate("RLVIZ.firstPaintSinceNavMs"))
            scrub = page.evaluate(SCRUB_JS)
            page.close()
        browser.close()
    work, frames = sorted(scrub["work"]), sorted(scrub["frames"])
    return {
        "first_paint_ms": round(min(paint_page), 1),
        "first_paint_wall_ms": round(min(paint_wall), 1),
        "scrub_work_ms": {"median": round(statistics.median(work), 2), "p95": round(_p95(work), 2)},
        "scrub_frame_ms": {
            "median": round(statistics.median(frames), 2),
            "p95": round(_p95(frames), 2),
        },
        "errors": errors,
    }


def _p95(sorted_values: list[float]) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(0.95 * len(sorted_values)))]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", type=Path, default=CHECKPOINT)
    ap.add_argument("--episodes", type=int, default=10)
    ap.add_argument("--methods", default=METHODS)
    ap.add_argument("--targets", default="taken,value", help="add ,actions for per-action maps")
    ap.add_argument("--nmf-features", type=int, default=4)
    ap.add_argument("--units", type=int, default=4, help="network tab units per layer (0: none)")
    ap.add_argument("--optvis-steps", type=int, default=64)
    ap.add_argument("--max-steps", type=int, default=None)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: explore's)")
    ap.add_argument("--repeat", type=int, default=1, help="generate N times, keep the fastest")
    ap.add_argument("--loads", type=int, default=3, help="fresh page loads for first paint")
    ap.add_argument("--out", type=Path, default=None, help="keep the report here")
    ap.add_argument("--no-browser", action="store_true")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures as JSON")
    ap.add_argument(
        "--tiny",
        action="store_true",
        help="smoke run: 1 episode of <= 20 steps, 2 methods, 2 NMF features, no network tab",
    )
    args = ap.parse_args(argv)
    if args.tiny:
        args.episodes, args.methods, args.max_steps = 1, "gradient,gradcam", 20
        args.nmf_features, args.units, args.optvis_steps, args.loads = 2, 0, 4, 1
    args.threads = args.threads if args.threads is not None else 1
    out = args.out or Path(tempfile.mkdtemp(prefix="explorer_bench_"))
    try:
        result = {"config": _config(args), "generate": generate(args, out), "bytes": sizes(out)}
        if not args.no_browser:
            result["browser"] = in_browser(out, args.loads)
        _print(result)
        if args.json:
            args.json.write_text(json.dumps(result, indent=2))
    finally:
        if args.out is None:
            shutil.rmtree(out, ignore_errors=True)
    return 0


def _config(args) -> dict:
    return {
        "episodes": args.episodes,
        "methods": args.methods.split(","),
        "targets": args.targets.split(","),
        "nmf_features": args.nmf_features,
        "units_per_layer": args.units,
        "optvis_steps": args.optvis_steps,
        "max_steps": args.max_steps,
        "threads": args.threads,
    }


def _print(r: dict) -> None:
    c, g, b = r["config"], r["generate"], r["bytes"]
    print(
        f"explorer: {g['episodes']} episodes ({g['steps']} steps) x {len(c['methods'])} methods "
        f"x {'/'.join(c['targets'])}, NMF {c['nmf_features']}, network {c['units_per_layer']} "
        f"units/layer, {c['threads']} torch thread(s)"
    )
    stages = ", ".join(f"{k} {v:.1f}" for k, v in g["timings"].items())
    print(f"  generation   {g['seconds']:6.1f} s   (target <= 30 s; {stages})")
    parts = ", ".join(f"{k} {v / 1e6:.2f}" for k, v in b.items() if k != "total")
    print(f"  report size  {b['total'] / 1e6:6.1f} MB  (target <= 25 MB; {parts})")
    if "browser" in r:
        w = r["browser"]
        print(
            f"  first paint  {w['first_paint_ms'] / 1000:6.2f} s   (target <= 1.5 s; from "
            f"navigation start, in the page; goto to ready {w['first_paint_wall_ms'] / 1000:.2f} s)"
        )
        print(
            f"  scrub        {w['scrub_work_ms']['median']:6.2f} ms  median JS per step "
            f"(p95 {w['scrub_work_ms']['p95']:.2f}; target <= 16 ms); one step per animation "
            f"frame: frame interval {w['scrub_frame_ms']['median']:.1f} ms "
            f"(p95 {w['scrub_frame_ms']['p95']:.1f}; 16.7 = 60 fps kept)"
        )
        if w["errors"]:
            print(f"  page errors: {w['errors']}")


if __name__ == "__main__":
    raise SystemExit(main())
