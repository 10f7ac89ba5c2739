"""Long episodes at flat memory (issue 28): disk-backed steps, the streamed colour scale, chunked
explanation equal to the whole-episode one, step windows, and no temp files left behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import SquareEnv, tiny_policy

from rlviz.explain import attribute_episode, check_window
from rlviz.maps import EpisodeScale, normalize_maps, normalize_stack
from rlviz.methods import is_signed
from rlviz.rollout import run_episode
from rlviz.spool import Spool, StepArray, remove_stale
from rlviz.targets import TakenAction
from rlviz.video.explain import explain_episode

ROOT = Path(__file__).resolve().parents[1]

# ------------------------------------------------------------------------------------ storage


def test_step_array_reads_like_the_array_it_stores(tmp_path):
    ref = np.arange(23 * 3 * 2, dtype=np.int32).reshape(23, 3, 2)
    with Spool(chunk=5, root=tmp_path) as spool:
        a = spool.array("a")
        a.extend(ref[:3])  # a partial chunk, then whole chunks straight from a block
        a.extend(ref[3:17])
        for step in ref[17:]:
            a.append(step)
        assert a.shape == ref.shape and a.dtype == ref.dtype and len(a) == 23
        assert len(list((spool.path / "a").glob("*.npy"))) == 4  # 20 steps on disk, 3 pending
        np.testing.assert_array_equal(np.asarray(a), ref)
        np.testing.assert_array_equal(a[4:13], ref[4:13])
        np.testing.assert_array_equal(a[-1], ref[-1])
        np.testing.assert_array_equal(a[[0, 7, 22, -2]], ref[[0, 7, 22, -2]])
        np.testing.assert_array_equal(a[6:9, 1], ref[6:9, 1])
        np.testing.assert_array_equal(a[8, :, 0], ref[8, :, 0])
        w = a.window(3, 19)
        np.testing.assert_array_equal(np.asarray(w), ref[3:19])
        np.testing.assert_array_equal(w[2:7], ref[5:10])
        np.testing.assert_array_equal(w.window(1, 4)[0], ref[4])
        assert [t for t, _ in w.chunks()] == [0, 2, 7, 12]  # aligned to the base's chunks
        with pytest.raises(IndexError):
            a[23]
        with pytest.raises(ValueError, match="same shape"):
            a.append(np.zeros((2, 2), np.int32))
        folder = spool.path
    assert not folder.exists()


def test_spool_is_removed_when_its_block_fails_and_stale_spools_are_swept(tmp_path):
    with pytest.raises(RuntimeError), Spool(root=tmp_path) as spool:
        spool.array("x").append(np.zeros(3))
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
    # a folder of a process that no longer runs (killed: nothing could clean up) is removed
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True
    )
    stale = tmp_path / f"rlviz-spool-{int(dead.stdout)}-abc"
    (stale / "obs").mkdir(parents=True)
    mine = tmp_path / f"rlviz-spool-{os.getpid()}-keep"
    mine.mkdir()
    assert remove_stale(tmp_path) == [stale]
    assert not stale.exists() and mine.exists()


# ------------------------------------------------------------------------------- colour scale


@pytest.mark.parametrize("seed", range(6))
def test_streamed_scale_is_numpys_percentile_exactly(seed):
    rng = np.random.default_rng(seed)
    for _ in range(60):
        steps = int(rng.integers(1, 50))
        shape = tuple(int(x) for x in rng.integers(1, 7, size=int(rng.integers(1, 4))))
        raw = (rng.standard_normal((steps, *shape)) * 10.0 ** rng.integers(-6, 4)).astype(
            np.float32
        )
        raw[rng.random(raw.shape) < rng.random()] = 0  # many ties at 0
        if rng.random() < 0.3:
            raw = np.round(raw).astype(np.float32)  # ties above 0
        signed = bool(rng.integers(2))
        magnitude = np.abs(raw) if signed else np.maximum(raw, 0)
        expected = float(np.percentile(magnitude, 99.5))
        scale = EpisodeScale(steps, signed)
        block = int(rng.integers(1, 9))
        for start in range(0, steps, block):
            scale.update(raw[start : start + block])
        assert scale.high == expected
    with pytest.raises(ValueError, match="every block"):
        partial = EpisodeScale(4)
        partial.update(np.ones((2, 3), np.float32))
        _ = partial.high


# ------------------------------------------------------------------- chunked == whole episode


def _whole_episode(adapter, rollout, method, per_frame=False):
    """The whole-episode path: every raw map in memory, np.percentile over all of them."""
    raw = attribute_episode(
        adapter, rollout.obs, method, TakenAction(rollout.actions), per_frame=per_frame
    )
    if per_frame:
        return normalize_stack(raw, "episode", False)
    return normalize_maps(raw, "episode", is_signed(method))


def test_chunked_explanation_of_a_long_episode_equals_the_whole_episode_one():
    torch.manual_seed(0)
    adapter = tiny_policy()
    # 300 steps: one whole chunk of 256 and a partial one, on disk
    with Spool(chunk=64) as spool:
        rollout = run_episode(SquareEnv(max_steps=300, goal=False), adapter, seed=2, spool=spool)
        assert len(rollout) == 300 and not isinstance(rollout.obs, np.ndarray)
        episode = explain_episode(
            adapter, rollout, ["gradient", "gradcam"], per_action="gradient", spool=spool
        )
        assert isinstance(episode.maps["gradient"], StepArray)
        for name in ("gradient", "gradcam"):
            maps, ranges = _whole_episode(adapter, rollout, name)
            np.testing.assert_array_equal(np.asarray(episode.maps[name]), maps)
            assert episode.map_ranges[name] == ranges
        per = np.asarray(episode.action_maps["gradient"])  # [T, A, H, W], one scale
        assert per.shape == (300, 3, 30, 40) and per.max() == pytest.approx(1.0, abs=0.01)


def test_chunked_explanation_of_a_stacked_episode_keeps_frame_maps_shares_and_memory():
    from explorer_helpers import stacked_env, stacked_policy

    from rlviz.explain import frame_share
    from rlviz.memory import memory_reliance

    adapter = stacked_policy()
    rollout = run_episode(stacked_env(max_steps=280), adapter, seed=1)
    episode = explain_episode(adapter, rollout, ["gradcam", "gradient"])
    scaled, _ = _whole_episode(adapter, rollout, "gradient", per_frame=True)
    np.testing.assert_array_equal(episode.frame_maps["gradient"], scaled)
    np.testing.assert_array_equal(episode.maps["gradient"], scaled[:, -1])
    raw = attribute_episode(
        adapter, rollout.obs, "gradient", TakenAction(rollout.actions), per_frame=True
    )
    np.testing.assert_array_equal(episode.frame_shares, frame_share(raw))
    whole = memory_reliance(adapter, rollout)
    np.testing.assert_array_equal(episode.memory.kl, whole.kl)
    np.testing.assert_array_equal(episode.memory.share, whole.share)


def test_spooled_rollout_equals_the_in_memory_one_and_windows_cut_it():
    keys = ("goal_mask", "box_visible", "success")
    view = lambda: np.full((20, 20, 3), 7, np.uint8)  # noqa: E731
    plain = run_episode(
        SquareEnv(max_steps=150, goal=False), tiny_policy(), seed=4, info_keys=keys, capture=view
    )
    with Spool(chunk=32) as spool:
        spooled = run_episode(
            SquareEnv(max_steps=150, goal=False),
            tiny_policy(),
            seed=4,
            info_keys=keys,
            capture=view,
            spool=spool,
        )
        assert not isinstance(spooled.infos["goal_mask"], np.ndarray)  # masks went to disk
        np.testing.assert_array_equal(np.asarray(spooled.obs), plain.obs)
        for key in keys:
            np.testing.assert_array_equal(np.asarray(spooled.infos[key]), plain.infos[key])
        assert len(spooled.views) == len(plain.views) and spooled.views.nbytes == 0
        np.testing.assert_array_equal(spooled.views[149], plain.views[149])
        part = spooled.window(40, 90)
        assert len(part) == 50 and part.truncated
        np.testing.assert_array_equal(np.asarray(part.obs), plain.obs[40:90])
        np.testing.assert_array_equal(part.actions, plain.actions[40:90])
        np.testing.assert_array_equal(
            np.asarray(part.infos["goal_mask"]), plain.infos["goal_mask"][40:90]
        )
        np.testing.assert_array_equal(part.views[0], plain.views[40])
    with pytest.raises(ValueError, match="empty"):
        plain.window(150, 160)
    with pytest.raises(ValueError, match="to_step=3 must be above from_step=5"):
        check_window(5, 3)


def test_render_video_draws_only_the_window(tmp_path):
    from rlviz import render_video
    from rlviz.callbacks import read_video

    summary = render_video(
        SquareEnv(max_steps=60, goal=False),
        tiny_policy(),
        tmp_path / "w.mp4",
        methods=["gradient"],
        from_step=20,
        to_step=45,
    )
    assert summary.frames == 25 and len(read_video(tmp_path / "w.mp4")) == 25
    with pytest.raises(ValueError, match="past the episode's end"):
        render_video(
            SquareEnv(max_steps=10),
            tiny_policy(),
            tmp_path / "x.mp4",
            methods=["gradient"],
            from_step=30,
        )


def test_asking_for_cuda_without_one_is_a_one_line_error(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the error cannot happen")
    from rlviz import render_video

    with pytest.raises(
        ValueError,
        match=r"^--device cuda was asked for but torch sees no CUDA GPU; use --device cpu$",
    ):
        render_video(SquareEnv(max_steps=5), tiny_policy(), tmp_path / "x.mp4", device="cuda")


# ------------------------------------------------------------------------------------ faults

_LONG_RENDER = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {tests!r})
    from helpers import SquareEnv, tiny_policy
    from rlviz import render_video

    class Slow(SquareEnv):
        def step(self, action):
            if self.t == 200:
                print("recording", flush=True)  # the spool holds chunks by now
            return super().step(action)

    render_video(Slow(max_steps=100000, goal=False), tiny_policy(), {out!r}, methods=["gradient"])
    """
)


def _run_script(template: str, out: Path, spools: Path) -> subprocess.Popen:
    """Start ``template`` (filled with the tests folder and ``out``) in a fresh Python whose
    spools go to ``spools``."""
    script = template.format(tests=str(ROOT / "tests"), out=str(out))
    env = dict(os.environ, RLVIZ_TMPDIR=str(spools), OMP_NUM_THREADS="1")
    return subprocess.Popen(
        [sys.executable, "-c", script],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.parametrize("how", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL])
def test_an_interrupted_long_render_leaves_no_temp_files(tmp_path, how):
    spools = tmp_path / "tmp"
    spools.mkdir()
    proc = _run_script(_LONG_RENDER, tmp_path / "v.mp4", spools)
    try:
        assert proc.stdout.readline().strip() == "recording", proc.stderr.read()
        deadline = time.time() + 60
        while not any(spools.rglob("*.npy")) and time.time() < deadline:
            time.sleep(0.05)
        assert any(spools.rglob("*.npy"))  # chunks were on disk when it was stopped
        proc.send_signal(how)
        proc.wait(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode != 0
    if how == signal.SIGKILL:  # nothing runs in a killed process: the next spool sweeps it
        assert list(spools.iterdir())
        Spool(root=spools).close()
    assert list(spools.iterdir()) == []
    assert not (tmp_path / "v.mp4").exists()


_LONG_REPORT = textwrap.dedent(
    """
    import sys, time
    sys.path.insert(0, {tests!r})
    from helpers import SquareEnv, tiny_policy
    import rlviz.explorer.views as views
    from rlviz import explore

    def stalled_state_map(*args, **kwargs):  # reached once every map of the episode is on disk
        print("explained", flush=True)
        time.sleep(120)

    views.state_map = stalled_state_map
    explore(SquareEnv(max_steps=600, goal=False), tiny_policy(), {out!r}, episodes=1,
            methods=["gradient"], nmf=False, network=False)
    """
)


@pytest.mark.parametrize("how", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupted_long_report_leaves_no_temp_files_and_no_report(tmp_path, how):
    spools = tmp_path / "tmp"
    spools.mkdir()
    proc = _run_script(_LONG_REPORT, tmp_path / "report", spools)
    try:
        assert proc.stdout.readline().strip() == "explained", proc.stderr.read()
        assert len(list(spools.rglob("*.npy"))) > 4  # observations and maps are on disk
        proc.send_signal(how)
        proc.wait(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode != 0
    assert list(spools.iterdir()) == []
    assert not (tmp_path / "report" / "index.html").exists()


def test_explorer_maps_of_a_long_episode_equal_the_whole_episode_ones():
    from explorer_helpers import TwoFrames, stacked_policy

    from rlviz.explain import frame_share
    from rlviz.explorer.episode import episode_maps, scaled_maps
    from rlviz.explorer.stack import stack_maps
    from rlviz.targets import Value

    adapter = stacked_policy()
    rollout = run_episode(TwoFrames(SquareEnv(max_steps=300, goal=False)), adapter, seed=5)
    maps, _ = episode_maps(
        adapter, rollout, ["gradient"], ["taken", "value", "actions"], per_action="gradient",
        layer=None, batch_size=128, size=(15, 20),
    )  # fmt: skip
    for key, target in (
        ("gradient|taken", TakenAction(rollout.actions)),
        ("gradient|value", Value()),
    ):
        whole, _ = scaled_maps(
            attribute_episode(adapter, rollout.obs, "gradient", target), "gradient", (15, 20)
        )
        np.testing.assert_array_equal(maps[key], whole)
    assert {f"gradient|a{k}" for k in range(3)} <= set(maps)
    per_frame, shares, _ = stack_maps(
        adapter, rollout, "gradient", ["taken"], size=(15, 20), batch_size=128
    )
    raw = attribute_episode(
        adapter, rollout.obs, "gradient", TakenAction(rollout.actions), per_frame=True
    )
    np.testing.assert_array_equal(per_frame["taken"], scaled_maps(raw, "gradient", (15, 20))[0])
    assert shares["taken"] == np.round(frame_share(raw).astype(np.float64), 4).tolist()


def test_nmf_of_a_long_episode_is_fitted_on_a_sample_and_projects_every_frame():
    from rlviz.explorer.nmf import nmf_attribution, nmf_attribution_streamed
    from rlviz.targets import TakenAction

    adapter = tiny_policy()
    rollout = run_episode(SquareEnv(max_steps=120, goal=False), adapter, seed=3)
    target = TakenAction(rollout.actions)
    whole = nmf_attribution(adapter, np.asarray(rollout.obs), "conv2.0", target, n_features=3)
    # every frame in the fit: the same directions, and projecting the fitted frames recovers
    # the fit's maps (coordinate descent on W alone converges to the same optimum)
    every = nmf_attribution_streamed(
        adapter, rollout.obs, "conv2.0", target, 3, fit_frames=10_000, batch_size=32
    )
    np.testing.assert_array_equal(every.directions, whole.directions)
    assert every.maps.shape == whole.maps.shape
    np.testing.assert_allclose(every.maps, whole.maps, atol=0.05 * whole.maps.max())
    # a sample of 30 frames: directions close to the whole fit's, every frame still mapped
    sample = nmf_attribution_streamed(
        adapter, rollout.obs, "conv2.0", target, 3, fit_frames=30, batch_size=32
    )
    assert sample.maps.shape == whole.maps.shape and (sample.maps >= 0).all()
    cos = np.abs(sample.directions @ whole.directions.T).max(1)
    assert cos.min() > 0.9, cos
    assert sample.scale.shape == (3,) and (sample.scale > 0).all()


def test_a_long_explorer_report_keeps_its_maps_on_disk_not_in_memory(tmp_path, monkeypatch):
    import rlviz.explorer.views as views
    from rlviz.explorer import explore
    from rlviz.spool import StepArray

    # the streamed NMF and the sampled state map on a short fixture
    monkeypatch.setattr(views, "NMF_FIT_FRAMES", 40)
    monkeypatch.setattr(views, "STATEMAP_FIT_STATES", 60)
    seen = {}
    real = views.nmf_view

    def spy(*args, **kwargs):
        result = real(*args, **kwargs)
        seen["nmf"] = result[1]
        return result

    monkeypatch.setattr(views, "nmf_view", spy)
    summary = explore(
        SquareEnv(max_steps=300, goal=False), tiny_policy(), out=tmp_path / "r", episodes=1,
        methods=["gradient"], nmf_features=2, network=False, optvis_steps=0,
    )  # fmt: skip
    assert summary.steps == 300
    assert isinstance(seen["nmf"], StepArray) and seen["nmf"].shape[:2] == (300, 2)
    parts = sorted((tmp_path / "r" / "data" / "ep0").glob("chunk_*.js"))
    assert len(parts) == 2 and all('"nmf"' in p.read_text() for p in parts)
    from test_explorer import read_script

    xy = read_script(tmp_path / "r" / "data" / "manifest.js")["statemap"]["xy"]
    assert len(xy) == 300 and np.isfinite(xy).all()
    assert np.ptp(np.asarray(xy), axis=0).min() > 0.5  # placed over the map, not in one spot


def test_long_episode_map_sheets_are_lossy_webp_close_to_the_lossless_ones(tmp_path):
    import base64
    import io
    import json

    from PIL import Image
    from test_explorer import read_script

    from rlviz.explorer import explore

    def decode(url):  # the page reads the red channel (a WebP gray image decodes as RGB)
        image = np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))))
        return image[..., 0] if image.ndim == 3 else image

    def read_part(path):  # (function(R){...;R.parts["0:c"]=<json>;})(...)
        text = path.read_text()
        return json.loads(text[text.index('"]=') + 3 : text.rindex(";})")])

    def report(codec, steps):
        out = tmp_path / f"{codec}{steps}"
        explore(
            SquareEnv(max_steps=steps, goal=False), tiny_policy(), out=out, episodes=1,
            methods=["gradient"], targets=("taken",), statemap=False, nmf=False, network=False,
            map_codec=codec,
        )  # fmt: skip
        return out

    lossless, auto = report("png", 300), report("auto", 300)
    for c in range(2):
        exact = read_part(lossless / "data" / "ep0" / f"chunk_{c}.js")["maps"]["gradient|taken"]
        lossy = read_part(auto / "data" / "ep0" / f"chunk_{c}.js")["maps"]["gradient|taken"]
        assert exact.startswith("data:image/png;") and lossy.startswith("data:image/webp;")
        a, b = decode(exact).astype(int), decode(lossy).astype(int)
        assert a.shape == b.shape and np.abs(a - b).mean() < 6, np.abs(a - b).mean()
    # a short episode (written whole) keeps lossless maps under auto
    short = read_script(report("auto", 40) / "data" / "episode_0.js")
    assert short["maps"]["gradient|taken"].startswith("data:image/png;")
    with pytest.raises(ValueError, match="map_codec='jpeg'; expected one of auto, png, webp"):
        report("jpeg", 40)


def test_step_array_reads_of_the_chunk_being_filled_are_views_that_stay_valid(tmp_path):
    rng = np.random.default_rng(0)
    steps = rng.integers(0, 255, (10, 3, 4), dtype=np.uint8)
    array = StepArray(tmp_path / "a", chunk=4)
    array.extend(steps[:6])  # one chunk on disk, two steps being filled
    early = array[4:6]
    tail = array[5]
    array.extend(steps[6:])  # fills and writes that chunk, starts the next
    np.testing.assert_array_equal(early, steps[4:6])
    np.testing.assert_array_equal(tail, steps[5])
    np.testing.assert_array_equal(np.asarray(array), steps)
    np.testing.assert_array_equal(array[8:], steps[8:])
