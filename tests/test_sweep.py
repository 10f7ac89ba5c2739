"""rlviz sweep: serial and Ray give one table; a killed worker loses and duplicates nothing;
``--workers`` evaluation equals serial; Ray workers are set up for headless MiniWorld."""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import ray_worker_env

from rlviz.parallel import blocks_of, make_executor
from rlviz.parallel import executor as executor_module
from rlviz.sweep import plan, spearman

ENV_ID = "rlviz/BoxReachSmall-v0"
EPISODES, BLOCK, MAX_STEPS = 4, 2, 12


# ---- engine pieces, no env ------------------------------------------------------------------


def test_spearman_identical_reversed_constant():
    a = np.arange(12, dtype=np.float32).reshape(1, 3, 4)
    b = np.concatenate([a, a, a])
    other = np.concatenate([a, -a, np.zeros_like(a)])
    np.testing.assert_allclose(spearman(b, other)[:2], [1.0, -1.0])
    assert np.isnan(spearman(b, other)[2])
    ties = np.array([[[0.0, 0.0, 1.0, 2.0]]])
    assert spearman(ties, ties)[0] == pytest.approx(1.0)


def test_plan_keys_each_block_once():
    assert blocks_of(range(5), 2) == [(0, 1), (2, 3), (4,)]
    calls = plan(["a", "b"], range(5), 2)
    assert list(calls) == [
        ("a", -1),
        ("a", 0),
        ("a", 1),
        ("a", 2),
        ("b", -1),
        ("b", 0),
        ("b", 1),
        ("b", 2),
    ]
    with pytest.raises(ValueError, match="repeat"):
        plan(["a", "a"], range(2), 1)


def test_unit_comparison_survived_born_lost():
    from rlviz.sweep import unit_comparison

    before = {"detector_units": [["c1", 0, 0.2], ["c2", 3, 0.1]], "detectors": {"c1": 1, "c2": 1}}
    after = {"detector_units": [["c2", 3, 0.3], ["c2", 1, 0.1]], "detectors": {"c1": 0, "c2": 2}}
    out = unit_comparison(before, after)
    assert (out["survived"], out["born"], out["lost"]) == (["c2#3"], ["c2#1"], ["c1#0"])
    assert out["per_layer"]["c2"] == {"survived": 1, "born": 1, "lost": 0}


def test_without_ray_runs_serially_and_says_once(monkeypatch, capsys):
    monkeypatch.setattr(executor_module, "ray_available", lambda: False)
    monkeypatch.setattr(executor_module, "_hinted", [])
    for _ in range(2):
        ex = make_executor(workers=2)
        assert isinstance(ex, executor_module.SerialExecutor)
        assert ex.map(pow, {"k": (2, 3)}) == {"k": 8}
    assert capsys.readouterr().err.count("pip install rlviz[ray]") == 1
    with pytest.raises(RuntimeError, match="needs Ray"):
        make_executor(address="auto")


# ---- tiny snapshots, a shared Ray cluster ------------------------------------------------------


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A run folder with two tiny untrained snapshots of the real agent (saved, not trained)."""
    import torch

    from rlviz.agents.checkpoint import save_checkpoint
    from rlviz.agents.policy import ActorCritic, Architecture

    run = tmp_path_factory.mktemp("run")
    for i, steps in enumerate((1000, 2000)):
        torch.manual_seed(i)
        model = ActorCritic(Architecture(channels=(4, 8, 8)))
        save_checkpoint(
            run / "snapshots" / f"step_{steps:09d}.safetensors",
            model,
            {"env_id": ENV_ID, "env_kwargs": {}, "steps": steps},
        )
    return run


def _spec(**changes):
    from rlviz.cli.sweep_tasks import build_spec

    kwargs = dict(
        env_id=ENV_ID,
        env_kwargs={},
        probe_seeds=(2_000_000, 2_000_001),
        probe_frames=16,
        methods=("gradient", "gradcam"),
        top_k=2,
        iou_threshold=0.0,
        deterministic=False,
        max_steps=MAX_STEPS,
    )
    return build_spec(**{**kwargs, **changes})


def _rows(report: dict) -> list[dict]:
    """Rows as the JSON file has them (NaN -> null), to compare a report with a file."""
    from rlviz.io import json_ready

    return json_ready(report["rows"])


@pytest.fixture(scope="module")
def serial_report(run_dir) -> dict:
    """The CLI's serial sweep of the run (also checks the command writes its three files)."""
    from rlviz.cli.sweep import main

    out = run_dir / "serial"
    argv = [
        "--run",
        str(run_dir),
        "--episodes",
        str(EPISODES),
        "--block-size",
        str(BLOCK),
        "--max-steps",
        str(MAX_STEPS),
        "--probe-frames",
        "16",
        "--probe-episodes",
        "2",
        "--top-k",
        "2",
        "--iou-threshold",
        "0",
        "--out",
        str(out),
        "--no-progress",
    ]
    assert main(argv) == 0
    assert {p.name for p in out.iterdir()} == {"sweep.csv", "sweep.json", "sweep.png"}
    return json.loads((out / "sweep.json").read_text())


def _sweep(run_dir, spec, executor):
    from rlviz.cli.sweep import run_snapshots
    from rlviz.sweep import run_sweep

    checkpoints = [str(p) for p in run_snapshots(run_dir)]
    seeds = list(range(10**6, 10**6 + EPISODES))
    return run_sweep(checkpoints, spec, seeds, executor, block_size=BLOCK)


def test_serial_table_is_complete(serial_report):
    rows = serial_report["rows"]
    assert [r["steps"] for r in rows] == [1000, 2000]
    assert all(r["episodes"] == EPISODES for r in rows)
    assert rows[0]["drift_gradient"] is None and rows[1]["drift_gradient"] is not None
    assert serial_report["probe"]["frames"] == 16


def test_ray_sweep_equals_serial(run_dir, serial_report, ray_executor):
    result = _sweep(run_dir, _spec(), ray_executor)
    assert _rows(result.report()) == _rows(serial_report)


def stalling_load(marker: str, path: str):
    """The real loader, except that the first call anywhere records its pid and hangs (to be
    killed by the test); the retry after the kill finds the marker and goes on."""
    from rlviz.cli.sweep_tasks import load_snapshot

    try:
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return load_snapshot(path)
    os.write(fd, str(os.getpid()).encode())
    os.close(fd)
    time.sleep(300)
    raise AssertionError("this worker should have been killed")


def test_killed_worker_loses_and_duplicates_nothing(run_dir, serial_report, ray_executor, tmp_path):
    import dataclasses
    import functools

    marker = tmp_path / "stalled.pid"
    spec = dataclasses.replace(_spec(), load=functools.partial(stalling_load, str(marker)))
    box: dict = {}
    thread = threading.Thread(target=lambda: box.update(result=_sweep(run_dir, spec, ray_executor)))
    thread.start()
    deadline = time.time() + 240
    while not (marker.exists() and marker.read_text()) and time.time() < deadline:
        time.sleep(0.2)
    pid = int(marker.read_text())
    assert pid != os.getpid()
    os.kill(pid, signal.SIGKILL)
    thread.join(timeout=300)
    assert not thread.is_alive()
    result = box["result"]
    assert all(
        len([s for b in result.episodes[c] for s in b["seeds"]]) == EPISODES
        for c in result.episodes
    )
    assert _rows(result.report()) == _rows(serial_report)


def test_evaluate_workers_equal_serial(run_dir, ray_executor):
    from rlviz.agents.checkpoint import load_checkpoint
    from rlviz.agents.evaluate import evaluate

    checkpoint = str(run_dir / "snapshots" / "step_000001000.safetensors")
    seeds = list(range(10**6, 10**6 + 5))
    model, _ = load_checkpoint(checkpoint)
    serial = evaluate(model, ENV_ID, seeds, max_steps=MAX_STEPS)
    parallel = evaluate(model, ENV_ID, seeds, max_steps=MAX_STEPS, executor=ray_executor)
    assert json.dumps(parallel) == json.dumps(serial)


def render_in_worker() -> dict:
    """What a fresh task sees in a Ray worker before it touches MiniWorld, and a rendered frame."""
    seen = {m: m in sys.modules for m in ("torch._dynamo", "miniworld")}
    from rlviz.envs import headless

    seen["prepared"] = headless.is_prepared()
    from rlviz.agents.vecenv import make_env

    env = make_env(ENV_ID)
    frame, _ = env.reset(seed=0)
    import torch
    import torch._dynamo  # noqa: F401  (after a GL context: segfaults unless imported first)

    torch.optim.Adam([torch.zeros(1, requires_grad=True)]).step()
    env.close()
    return {**seen, "pid": os.getpid(), "frame_std": float(np.asarray(frame).std())}


def _in_fresh_worker(setup: str | None, fn):
    """``fn`` as the executors run a task (``run_task``), in a new worker process: a runtime env
    of its own makes Ray start one, with nothing imported yet."""
    import ray

    env = ray_worker_env()
    env["env_vars"]["RLVIZ_TEST_FRESH_WORKER"] = str(time.time())
    remote = ray.remote(num_cpus=1, runtime_env=env)(executor_module.run_task)
    return ray.get(remote.remote(setup, fn), timeout=240)


def test_ray_worker_is_set_up_for_headless_miniworld(ray_executor):
    import argparse

    from rlviz.cli.workers import WORKER_SETUP, parallel_executor

    executor = parallel_executor(argparse.Namespace(workers=2, address=None), progress=False)
    assert executor.setup == WORKER_SETUP  # what every command's executor runs before a task
    out = _in_fresh_worker(executor.setup, render_in_worker)
    assert out["pid"] != os.getpid()
    assert out["prepared"] and out["torch._dynamo"] and out["miniworld"]
    assert out["frame_std"] > 0


# ---- --workers videos ---------------------------------------------------------------------------


def _video_argv(run_dir, out, *extra) -> list[str]:
    checkpoint = run_dir / "snapshots" / "step_000001000.safetensors"
    return [
        "--checkpoint",
        str(checkpoint),
        "--episodes",
        "2",
        "--max-steps",
        "6",
        "--methods",
        "gradient",
        "--embedding",
        "none",
        "--seed",
        "5",
        "--out",
        str(out),
        "--no-progress",
        *extra,
    ]


def _frames(path: Path) -> np.ndarray:
    import imageio.v2 as imageio

    return np.stack(imageio.mimread(path, format="FFMPEG", memtest=False))


@pytest.fixture(scope="module")
def serial_videos(run_dir) -> list[Path]:
    from rlviz.cli.video import main

    out = run_dir / "videos_serial"
    assert main(_video_argv(run_dir, out)) == 0
    return sorted(out.glob("*.mp4"))


def _assert_same_videos(serial: list[Path], other: list[Path]) -> None:
    assert [p.name for p in other] == [p.name for p in serial] and len(serial) == 2
    for a, b in zip(serial, other, strict=True):
        frames_a, frames_b = _frames(a), _frames(b)
        assert len(frames_a) >= 6 and frames_a.std() > 0
        np.testing.assert_array_equal(frames_a, frames_b)
        assert a.read_bytes() == b.read_bytes()  # x264 is deterministic: bytes too


def test_parallel_video_engine_serial_executor_equals_render_video(run_dir, serial_videos):
    """The per-episode task split, without Ray: the same files as ``render_video``."""
    from rlviz.cli.common import load_policy, make_env
    from rlviz.parallel import SerialExecutor
    from rlviz.video.parallel import render_video_parallel

    policy = load_policy(run_dir / "snapshots" / "step_000001000.safetensors")
    env = make_env(policy.env_id, **policy.env_kwargs)
    out = run_dir / "videos_split"
    try:
        summary = render_video_parallel(
            env,
            policy.adapter,
            SerialExecutor(progress=False),
            out=out,
            methods=["gradient"],
            episodes=2,
            seed=5,
            max_steps=6,
            agent_name="step_000001000.safetensors",  # as `rlviz video` names it
        )
    finally:
        env.close()
    assert summary.episodes == 2 and summary.frames == 12
    _assert_same_videos(serial_videos, sorted(out.glob("*.mp4")))


def test_video_workers_equal_serial(run_dir, serial_videos, ray_executor):
    from rlviz.cli.video import main

    out = run_dir / "videos_ray"
    assert main(_video_argv(run_dir, out, "--workers", "2")) == 0
    _assert_same_videos(serial_videos, sorted(out.glob("*.mp4")))


# ---- memory reliance ------------------------------------------------------------------------------


def stacked_snapshot(frames: int):
    """A tiny untrained agent reading ``frames`` stacked RGB frames (no env)."""
    import torch

    from rlviz.agents.policy import ActorCritic, Architecture, make_adapter
    from rlviz.sweep import Snapshot

    torch.manual_seed(3)
    model = ActorCritic(
        Architecture(channels=(4, 8, 8), obs_shape=(60, 80, 3 * frames), frames=frames)
    )
    return Snapshot(make_adapter(model.eval()), 100 * frames, tuple(model.conv_layers))


def random_probe(frames: int):
    from rlviz.sweep import ProbeSet

    rng = np.random.default_rng(0)
    masks = np.zeros((6, 60, 80), bool)
    masks[:4, 20:35, 30:50] = True
    return ProbeSet(rng.integers(0, 256, (6, 60, 80, 3 * frames), dtype=np.uint8), masks)


def test_sweep_reports_memory_reliance_of_a_stacked_policy(tmp_path):
    import functools

    from rlviz.memory import memory_reliance
    from rlviz.sweep import SweepSpec, run_sweep

    def spec(frames):
        return SweepSpec(
            load=lambda _path: stacked_snapshot(frames),
            play=lambda _snap, seeds: {
                "seeds": seeds,
                "successes": [0] * len(seeds),
                "steps": [1] * len(seeds),
            },
            make_probe=functools.partial(random_probe, frames),
            methods=("gradient",),
            top_k=1,
            iou_threshold=0.0,
        )

    stacked = run_sweep(["a", "b"], spec(2), [1, 2], block_size=2)
    expected = memory_reliance(stacked_snapshot(2).adapter, random_probe(2).obs)
    row = stacked.rows[0]
    assert row["memory_kl"] == pytest.approx(float(expected.kl.mean()))
    assert row["memory_share"] == pytest.approx(float(expected.share.mean()))
    assert row["memory_kl"] > 0 and 0 < row["memory_share"] < 1
    single = run_sweep(["a"], spec(1), [1], block_size=1)
    assert "memory_kl" not in single.rows[0]  # no memory: no column, no panel
    paths = stacked.write(tmp_path)
    assert "memory_share" in paths[0].read_text().splitlines()[0]


def _save_run(run: Path, steps_list, seed: int, init_from: str | None = None) -> list[Path]:
    """Tiny untrained snapshots of a run; ``init_from`` makes it a fine-tune of that checkpoint."""
    import torch

    from rlviz.agents.checkpoint import save_checkpoint
    from rlviz.agents.policy import ActorCritic, Architecture

    paths = []
    for i, steps in enumerate(steps_list):
        torch.manual_seed(seed + i)
        meta = {"env_id": ENV_ID, "env_kwargs": {}, "steps": steps}
        if init_from is not None:
            meta["train_config"] = {"init_from": init_from}
        paths.append(
            save_checkpoint(
                run / "snapshots" / f"step_{steps:09d}.safetensors",
                ActorCritic(Architecture(channels=(4, 8, 8))),
                meta,
            )
        )
    return paths


def test_pre_training_and_fine_tune_runs_share_one_step_axis(tmp_path):
    from rlviz.cli.sweep import main

    pre = _save_run(tmp_path / "pre", (1000, 2000), seed=10)
    _save_run(tmp_path / "ft", (500, 1000), seed=20, init_from=str(pre[-1]))
    common = ["--episodes", "2", "--block-size", "2", "--max-steps", "8", "--probe-frames", "8"]
    common += ["--probe-episodes", "1", "--top-k", "1", "--iou-threshold", "0", "--no-progress"]

    def sweep(*runs: str) -> dict:
        out = tmp_path / f"out_{len(runs)}"
        assert main(["--run", *runs, "--out", str(out), *common]) == 0
        return json.loads((out / "sweep.json").read_text())

    both = sweep(str(tmp_path / "pre"), str(tmp_path / "ft"))
    # The init checkpoint is the pre-training run's last snapshot: one row, not two.
    assert [r["steps"] for r in both["rows"]] == [1000, 2000, 500, 1000]
    assert [r["steps_in_all"] for r in both["rows"]] == [1000, 2000, 2500, 3000]
    assert [r["label"] for r in both["rows"]][1:3] == ["pre/step_000002000", "ft/step_000000500"]
    assert both["unit_comparison"]["before"] == str(pre[-1])
    alone = sweep(str(tmp_path / "ft"))
    assert [r["label"] for r in alone["rows"]] == ["init", "step_000000500", "step_000001000"]
    assert [r["steps_in_all"] for r in alone["rows"]] == [2000, 2500, 3000]
    assert alone["rows"][0]["steps"] == 0  # the fine-tune's own count starts at its init
    # An init path overwritten since by the fine-tune itself (the shipped agent's history):
    # counted from 0, not followed round in a loop.
    loop = tmp_path / "loop" / "snapshots" / "step_000000700.safetensors"
    _save_run(tmp_path / "loop", (700,), seed=30, init_from=str(loop))
    out = tmp_path / "out_loop"
    assert main(["--checkpoints", str(loop), "--no-init", "--out", str(out), *common]) == 0
    assert json.loads((out / "sweep.json").read_text())["rows"][0]["steps_in_all"] == 700
    # The same run twice: a one-line error, exit 2.
    assert main(["--run", str(tmp_path / "ft"), str(tmp_path / "ft"), *common]) == 2
