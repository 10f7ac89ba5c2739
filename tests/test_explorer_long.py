"""A 10,000-step episode in the explorer page (issue 28): written in parts, opened and jumped in
as fast as a short one, in headless Chromium (Debian's ``chromium``) via Playwright.

The fixture is small but long: SquareEnv (30x40 frames, microseconds a step) and a tiny policy,
so the report takes seconds to write and the page's own cost is what is measured.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from helpers import SquareEnv, tiny_policy

from rlviz.explorer import explore
from rlviz.explorer.export import PART_STEPS

sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
if not Path(CHROMIUM).exists():
    pytest.skip("no chromium binary (apt-get install -y chromium)", allow_module_level=True)

ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
STEPS = 10_000

# From the jump to the frame of that step drawn with its map: ``obs.dataset.t`` is set only
# when the step's part is loaded and drawn.
JUMP = """(t) => new Promise((ok) => {
  const s = document.getElementById('scrub'), obs = document.getElementById('obs');
  const t0 = performance.now();
  s.value = t; s.dispatchEvent(new Event('input'));
  const check = () => obs.dataset.t === String(t) && obs.dataset.overlay !== 'none'
    ? ok(performance.now() - t0) : setTimeout(check, 1);
  check();
})"""


@pytest.fixture(scope="module")
def long_report(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("explorer_long")
    explore(
        SquareEnv(max_steps=STEPS, goal=False),
        tiny_policy(),
        out=out,
        episodes=1,
        methods=["gradient"],
        targets=("taken",),
        statemap=False,
        nmf=False,
        network=False,
    )
    return out


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


def _open(browser, report: Path):
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    errors, requests = [], []
    page.on("console", lambda m: m.type in ("error", "warning") and errors.append(m.text))
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("request", lambda r: requests.append(r.url))
    page.goto((report / "index.html").as_uri())
    page.wait_for_selector("body[data-ready='1']", timeout=15_000)
    return page, errors, requests


def test_a_long_episode_is_written_in_parts(long_report):
    parts = sorted((long_report / "data" / "ep0").glob("chunk_*.js"))
    assert len(parts) == -(-STEPS // PART_STEPS)
    assert len(list((long_report / "data" / "ep0").glob("frames_*.png"))) == len(parts)
    episode = (long_report / "data" / "episode_0.js").read_text()
    assert "data:image" not in episode  # the scalars only: the sheets are in the parts


def test_long_episode_opens_fast_and_jumps_to_step_9000_fast(browser, long_report):
    page, errors, requests = _open(browser, long_report)
    try:
        assert page.evaluate("RLVIZ.firstPaintMs") < 1000
        assert page.evaluate("document.getElementById('obs').dataset.t") == "0"
        # only the first part (and the one ahead) were read to open the page
        read = [u for u in requests if "/ep0/chunk_" in u]
        assert len(read) <= 2, read
        ms = page.evaluate(JUMP, 9000)
        assert ms < 300, f"jump to step 9,000 drawn in {ms:.0f} ms"
        assert page.evaluate("document.body.dataset.t") == "9000"
        # stepping inside the loaded part is drawn at once, and back to the start works
        assert page.evaluate(JUMP, 9001) < 100
        assert page.evaluate(JUMP, 3) < 300
        assert errors == []
    finally:
        page.close()


def test_a_long_stacked_episode_draws_its_stack_tiles_from_the_parts(browser, tmp_path):
    from explorer_helpers import TwoFrames, stacked_policy

    explore(
        TwoFrames(SquareEnv(max_steps=600, goal=False)),  # never reaches the box: 600 steps
        stacked_policy(),
        out=tmp_path,
        episodes=1,
        methods=["gradcam", "gradient"],
        statemap=False,
        nmf=False,
        network=False,
    )
    assert (tmp_path / "data" / "ep0" / "stack_2.png").exists()
    page, errors, _ = _open(browser, tmp_path)
    try:
        assert page.evaluate(JUMP, 550) < 1000
        page.wait_for_function("document.getElementById('stack').dataset.t === '550'", timeout=5000)
        assert page.evaluate("document.getElementById('stack').dataset.target") in (
            "taken",
            "value",
        )
        assert errors == []
    finally:
        page.close()
