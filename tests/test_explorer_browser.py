"""The explorer page in a real browser: headless Chromium (Debian's ``chromium``) via Playwright.

The report comes from a tiny real env and policy; the page is opened from ``file://`` as a user
would. CI installs chromium with apt (``.ci/run``); elsewhere these tests skip without it.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from helpers import SquareEnv, tiny_policy

from rlviz.explorer import explore

sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
if not Path(CHROMIUM).exists():
    pytest.skip("no chromium binary (apt-get install -y chromium)", allow_module_level=True)

ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("explorer_page")
    explore(
        SquareEnv(max_steps=25),
        tiny_policy(),
        out=out,
        episodes=2,
        seed=3,
        methods=["gradient", "gradcam"],
        map_method="pca",
        nmf_features=3,
        units_per_layer=2,
        optvis_steps=4,
    )
    return out


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


class Page:
    """A fresh tab on the report, with every request and console message recorded."""

    def __init__(self, browser, report: Path) -> None:
        self.page = browser.new_page(viewport={"width": 1400, "height": 900})
        self.requests: list[str] = []
        self.errors: list[str] = []
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.page.on(
            "console", lambda m: m.type in ("error", "warning") and self.errors.append(m.text)
        )
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.goto((report / "index.html").as_uri())
        self.page.wait_for_selector("body[data-ready='1']", timeout=15_000)

    def js(self, expr: str):
        return self.page.evaluate(expr)

    def cursor(self) -> tuple[int, int]:
        return int(self.js("document.body.dataset.ep")), int(self.js("document.body.dataset.t"))

    def view_steps(self) -> dict[str, str]:
        """The step each linked view shows (its ``data-t``)."""
        return self.js(
            """(() => { const out = {};
            for (const id of ['obs', 'probs', 'tsne', 'scrub']) out[id] = document.getElementById(id).dataset.t;
            document.querySelectorAll('canvas.chart').forEach(c => out[c.id] = c.dataset.t);
            return out; })()"""
        )

    def pixels(self, selector: str = "#obs") -> bytes:
        """What ``selector`` shows, as PNG bytes (the canvas itself is tainted by file:// frames,
        as any page's would be, so it is read through a screenshot)."""
        return self.page.locator(selector).screenshot()

    def wait_step(self, ep: int, t: int) -> None:
        self.page.wait_for_function(
            f"document.body.dataset.ep === '{ep}' && document.body.dataset.t === '{t}'",
            timeout=10_000,
        )


@pytest.fixture
def page(browser, report):
    p = Page(browser, report)
    yield p
    p.page.close()


def test_opens_from_file_with_no_network_and_no_errors(page, report):
    assert page.cursor() == (0, 0)
    outside = [u for u in page.requests if not u.startswith(("file://", "data:"))]
    assert outside == [], f"requests outside the report: {outside}"
    root = report.resolve().as_uri()
    assert all(u.startswith(root) for u in page.requests if u.startswith("file://"))
    assert page.errors == []
    assert page.js("RLVIZ.firstPaintMs") < 5000
    assert not page.page.locator("#stack-card").is_visible()  # no memory: no memory views


def test_scrubbing_moves_every_linked_view(page):
    before = page.pixels()
    page.page.fill("#scrub", "7")  # what a drag ends with: an input event at the new value
    page.page.dispatch_event("#scrub", "input")
    page.wait_step(0, 7)
    steps = page.view_steps()
    assert set(steps.values()) == {"7"}, steps
    assert {"chart-value", "chart-reward", "chart-advantage", "chart-entropy"} <= set(steps)
    assert page.pixels() != before  # the frame changed
    assert page.js("document.getElementById('tsne').dataset.current") == "7"
    assert page.errors == []


def test_keyboard_steps_jumps_and_plays(page):
    page.page.keyboard.press("ArrowRight")
    page.page.keyboard.press("ArrowRight")
    page.wait_step(0, 2)
    page.page.keyboard.press("Shift+ArrowRight")
    page.wait_step(0, 12)
    page.page.keyboard.press("ArrowLeft")
    page.wait_step(0, 11)
    page.page.keyboard.press("End")
    page.wait_step(0, 24)
    page.page.keyboard.press("Home")
    page.wait_step(0, 0)
    page.page.keyboard.press(" ")
    page.page.wait_for_function("+document.body.dataset.t >= 3", timeout=10_000)
    page.page.keyboard.press(" ")
    assert page.js("RLVIZ.explorer.state.playing") is False
    assert set(page.view_steps().values()) == {page.js("document.body.dataset.t")}


def test_clicking_a_state_map_point_jumps_there(page, report):
    sm = page.js("RLVIZ.manifest.statemap")
    box = page.page.locator("#tsne").bounding_box()
    xy = np.array(sm["xy"]) * (340 - 20) + 10
    xy[:, 1] = 340 - xy[:, 1]
    # a point of episode 1 with no other point within 8 px, so the click is unambiguous
    dist = np.linalg.norm(xy[:, None] - xy[None], axis=-1) + np.eye(len(xy)) * 1e9
    candidates = [i for i in range(len(xy)) if sm["ep"][i] == 1 and dist[i].min() > 8]
    i = candidates[0] if candidates else int(np.argmax(dist.min(1)))
    page.page.mouse.move(box["x"] + xy[i, 0], box["y"] + xy[i, 1])
    page.page.wait_for_selector("#tsne-tip:not([hidden])")
    page.page.mouse.click(box["x"] + xy[i, 0], box["y"] + xy[i, 1])
    page.wait_step(sm["ep"][i], sm["t"][i])
    assert page.js("document.getElementById('tsne').dataset.current") == str(i)


def test_switching_episodes_loads_them_lazily(page):
    lazy = [u for u in page.requests if "/data/episode_" in u]
    assert [Path(u).name for u in lazy] == ["episode_0.js"]
    page.page.select_option("#episode", "1")
    page.wait_step(1, 0)
    assert any(u.endswith("/data/episode_1.js") for u in page.requests)
    assert sorted(page.js("RLVIZ.explorer.loaded()")) == [0, 1]
    page.page.keyboard.press("[")
    page.wait_step(0, 0)
    assert sum(u.endswith("/data/episode_0.js") for u in page.requests) == 1  # cached


def test_method_target_and_nmf_legend_change_the_overlay(page):
    page.page.keyboard.press("End")
    page.wait_step(0, 24)
    seen = {page.pixels()}
    assert page.js("document.getElementById('obs').dataset.overlay") == "gradient|taken"
    page.page.select_option("#target", "value")
    assert page.js("document.getElementById('obs').dataset.overlay") == "gradient|value"
    seen.add(page.pixels())
    page.page.select_option("#target", "a2")
    assert page.js("document.getElementById('obs').dataset.overlay") == "gradient|a2"
    page.page.select_option("#method", "gradcam")  # (a random tiny net's Grad-CAM may be all 0)
    assert page.js("document.getElementById('obs').dataset.overlay") == "gradcam|taken"
    page.page.click(".feature[data-feature='1']")  # isolate NMF feature 2
    assert page.js("document.getElementById('obs').dataset.overlay") == "nmf:1"
    assert page.js("document.querySelectorAll('.feature.dimmed').length") == 2
    seen.add(page.pixels())
    page.page.fill("#opacity", "0")
    page.page.dispatch_event("#opacity", "input")
    seen.add(page.pixels())
    assert len(seen) == 4
    assert page.errors == []


def test_network_tab_units_link_to_their_top_states(page):
    page.page.click("#tab-btn-network")
    assert page.page.locator(".unit").count() == 4  # 2 units x 2 layers
    top = page.page.locator(".unit .tops canvas").first
    ep, t = int(top.get_attribute("data-ep")), int(top.get_attribute("data-t"))
    top.click()
    page.wait_step(ep, t)
    assert page.page.locator("#tab-episode").is_visible()


def test_screenshot_is_not_blank(page, tmp_path):
    page.page.keyboard.press("Shift+ArrowRight")
    shot = tmp_path / "explorer.png"
    page.page.screenshot(path=str(shot), full_page=True)
    from PIL import Image

    image = np.asarray(Image.open(shot).convert("RGB"), dtype=np.float32)
    assert image.shape[0] >= 600 and image.std() > 10
    obs = np.asarray(
        Image.open(__import__("io").BytesIO(page.page.locator("#obs").screenshot())).convert("RGB"),
        dtype=np.float32,
    )
    assert obs.std() > 5  # a frame with its overlay, not an empty canvas
    # the page reports its own render cost per frame (scrub latency)
    assert float(page.js("document.body.dataset.renderMs")) < 100
    assert json.loads(page.js("JSON.stringify(RLVIZ.manifest.frame)")) == {"h": 30, "w": 40}


# ------------------------------------------------------------------ memory views (frame stack)


@pytest.fixture(scope="module")
def stacked_report(tmp_path_factory) -> Path:
    from explorer_helpers import stacked_env, stacked_policy

    out = tmp_path_factory.mktemp("explorer_stack")
    explore(
        stacked_env(max_steps=16),
        stacked_policy(),
        out=out,
        episodes=1,
        seed=3,
        methods=["gradient"],
        map_method="pca",
        nmf_features=2,
        units_per_layer=1,
        optvis_steps=2,
    )
    return out


def test_stack_tiles_and_memory_chart_follow_the_cursor(browser, stacked_report):
    page = Page(browser, stacked_report)
    try:
        assert page.page.locator("#stack-card").is_visible()
        assert page.page.locator("#stack canvas").count() == 2
        captions = page.page.locator("#stack figcaption").all_inner_texts()
        assert captions[0].startswith("t-1") and captions[1].startswith("t ")
        shares = [float(c.split("\u00b7")[1].strip(" %")) for c in captions]
        assert sum(shares) == pytest.approx(100, abs=1.5)  # per-frame attribution shares
        before = page.pixels("#stack")
        page.page.fill("#scrub", "9")
        page.page.dispatch_event("#scrub", "input")
        page.wait_step(0, 9)
        steps = page.view_steps()
        assert {"chart-memory", "chart-memory-share"} <= set(steps)
        assert set(steps.values()) == {"9"}, steps
        assert page.js("document.getElementById('stack').dataset.t") == "9"
        assert page.pixels("#stack") != before
        assert "memory reliance: KL" in page.page.locator("#memory-info").inner_text()
        taken = page.pixels("#stack")
        page.page.select_option("#target", "value")  # the tiles follow the page's target
        assert page.js("document.getElementById('stack').dataset.target") == "value"
        assert page.pixels("#stack") != taken
        assert page.errors == []
    finally:
        page.page.close()
