"""The explorer page on a long episode (issue 28): first paint and a jump to a late step, in
headless Chromium (Debian's ``chromium`` via Playwright), from ``file://`` as a user opens it.

    .venv/bin/python benchmarks/explorer_page.py [--steps 10000] [--jump 9000] [--repeat 5]

The report is the browser test's fixture (tests/test_explorer_long.py): SquareEnv (30x40 frames,
a step costs microseconds) and a tiny policy, gradient maps of the taken action, no state map,
NMF or network tab, so writing it takes seconds and what is timed is the page. Each repeat opens
a fresh tab: first paint (``RLVIZ.firstPaintMs``: script start to the first frame drawn with its
map), then the jump (scrub input to the step's frame drawn with its map; its part is not loaded
yet), then a step inside the loaded part. The machine is shared: a loaded machine's figures.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
JUMP = """(t) => new Promise((ok) => {
  const s = document.getElementById('scrub'), obs = document.getElementById('obs');
  const t0 = performance.now();
  s.value = t; s.dispatchEvent(new Event('input'));
  const check = () => obs.dataset.t === String(t) && obs.dataset.overlay !== 'none'
    ? ok(performance.now() - t0) : setTimeout(check, 1);
  check();
})"""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=10_000)
    p.add_argument("--jump", type=int, default=9_000)
    p.add_argument("--repeat", type=int, default=5)
    args = p.parse_args()
    warnings.filterwarnings("ignore")
    from helpers import SquareEnv, tiny_policy
    from playwright.sync_api import sync_playwright

    from rlviz.explorer import explore

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "report"
        summary = explore(
            SquareEnv(max_steps=args.steps, goal=False),
            tiny_policy(),
            out=out,
            episodes=1,
            methods=["gradient"],
            targets=("taken",),
            statemap=False,
            nmf=False,
            network=False,
        )
        print(
            f"report: {summary.steps} steps, {summary.bytes / 1e6:.1f} MB, {summary.seconds:.1f} s"
        )
        paint, jump, step = [], [], []
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS)
            for _ in range(args.repeat):
                page = browser.new_page(viewport={"width": 1400, "height": 900})
                page.goto((out / "index.html").as_uri())
                page.wait_for_selector("body[data-ready='1']", timeout=30_000)
                paint.append(page.evaluate("RLVIZ.firstPaintMs"))
                jump.append(page.evaluate(JUMP, args.jump))
                step.append(page.evaluate(JUMP, args.jump + 1))
                page.close()
            browser.close()
    for name, values in (
        ("first paint", paint),
        (f"jump to {args.jump:,}", jump),
        ("next step", step),
    ):
        print(
            f"{name:>16}: median {statistics.median(values):6.1f} ms   "
            f"max {max(values):6.1f} ms   ({args.repeat} tabs)"
        )


if __name__ == "__main__":
    main()
