"""A user's first hour (issue 29): every mistake answered by one line before any episode is
played, no output replaced unless asked, progress for the slow stages, pictures that read.

The CLI cases run ``rlviz.cli.main(argv)`` in-process, as tests/test_bad_inputs.py does.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import SquareEnv, TinyActorCritic

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ROOT / "agents" / "checkpoints" / "boxreach.safetensors"


def run_cli(argv, capsys) -> tuple[int, str, str]:
    """``rlviz ARGV`` in-process: (exit status, stdout, stderr)."""
    from rlviz.cli import main

    try:
        code = main([str(a) for a in argv])
    except SystemExit as exc:  # argparse's usage errors
        code = exc.code
    captured = capsys.readouterr()
    return int(code or 0), captured.out, captured.err


def one_error_line(err: str, status: int, code: int, *parts: str) -> str:
    """The one ``rlviz ...: error:`` line of ``err``, checked to hold every part."""
    assert code == status, err
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("rlviz") and "error:" in line]
    assert len(errors) == 1, err
    for part in parts:
        assert part in errors[0], errors[0]
    return errors[0]


def files_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def tiny_run(folder: Path, steps: int = 512, name: str = "X", seed: int = 1, **overrides) -> Path:
    """A run folder as `rlviz train` leaves it (checkpoint, config, optimizer state), made
    without training: ``folder/name/checkpoint.safetensors``."""
    from rlviz.agents import ActorCritic, save_checkpoint
    from rlviz.agents.config import Config

    cfg = Config(total_steps=steps, run_name=name, runs_dir=str(folder), seed=seed, **overrides)
    model = ActorCritic(channels=tuple(cfg.channels))
    config = {
        "env_id": cfg.env_id,
        "env_kwargs": {},
        "steps": steps,
        "seed": seed,
        "train_config": json.loads(json.dumps(asdict(cfg), default=list)),
    }
    path = folder / name / "checkpoint.safetensors"
    save_checkpoint(path, model, config, optimizer_state={"steps": steps})
    return path


# -- one place validates layers, envs and checkpoints before any episode ---------------------------


def test_video_wrong_layer_is_one_line_before_the_state_map(tmp_path, capsys):
    code, out, err = run_cli(
        ["video", "--checkpoint", SHIPPED, "--methods", "gradcam", "--layer", "conv9"]
        + ["--out", tmp_path / "v", "--no-progress"],
        capsys,
    )
    one_error_line(err, 2, code, "layer 'conv9' not found", "conv3")
    assert "state map" not in out  # failed before fitting it (14 s before)
    assert files_under(tmp_path) == []


@pytest.mark.parametrize("command", ["video", "explore", "tsne", "topk"])
def test_an_env_the_model_cannot_play_is_one_line(command, tmp_path, capsys):
    code, _, err = run_cli(
        [command, "--checkpoint", SHIPPED, "--env", "CartPole-v1", "--out", tmp_path / "o"],
        capsys,
    )
    one_error_line(err, 2, code, "CartPole-v1", "(60, 80, 3)", "(4,)")
    assert not (tmp_path / "o").exists()  # no empty output folder left behind


def test_ale_ids_are_registered_when_ale_py_is_installed():
    import importlib.util

    if importlib.util.find_spec("ale_py") is None:  # not imported here: importing registers
        pytest.skip("ale-py is not installed")
    proc = subprocess.run(
        [sys.executable, "-m", "rlviz", "evaluate", "--env", "ALE/Pong-v5", "--episodes", "1"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    # Made (not "Namespace ALE not found"), then refused for its frame size.
    one_error_line(proc.stderr, 2, proc.returncode, "(210, 160, 3)")
    assert "Namespace ALE not found" not in proc.stderr


def test_optimizer_state_file_is_named(tmp_path, capsys):
    path = tiny_run(tmp_path)
    state = path.with_name("checkpoint.state.safetensors")
    assert state.exists()
    for command in ("evaluate", "video", "filters"):
        code, _, err = run_cli([command, "--checkpoint", state], capsys)
        one_error_line(err, 2, code, "optimizer state", f"--checkpoint {path}")


def test_default_checkpoint_is_the_shipped_one_from_any_folder(tmp_path):
    from rlviz.cli.common import DEFAULT_CHECKPOINT

    assert DEFAULT_CHECKPOINT.is_absolute() and DEFAULT_CHECKPOINT.exists()
    # Outside the repository, a missing checkpoint leaves no empty videos/demo/features/.
    proc = subprocess.run(
        [sys.executable, "-m", "rlviz", "topk", "--checkpoint", "nope.safetensors"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert str(DEFAULT_CHECKPOINT) in proc.stderr  # the shipped agent, by a path that works here
    assert list(tmp_path.iterdir()) == []


def test_python_dash_m_rlviz_runs_the_command():
    proc = subprocess.run(
        [sys.executable, "-m", "rlviz", "--version"], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0 and proc.stdout.startswith("rlviz "), proc.stderr


# -- usage errors: one line, the unknown flag first, with its near match ---------------------------


@pytest.mark.parametrize(
    ("argv", "near"),
    [
        (
            ["video", "--checkpont", "x.safetensors"],
            "--checkpoint",
        ),  # before "--checkpoint required"
        (["video", "--checkpoint", "x", "--epi", "2"], "--episodes"),
        (["train", "--total", "10"], "--total-steps"),
        (["evaluate", "--seed", "3"], "--seed-start"),
    ],
)
def test_unknown_flag_is_named_with_its_near_match(argv, near, capsys):
    code, _, err = run_cli(argv, capsys)
    line = one_error_line(err, 2, code, "unrecognized arguments", f"did you mean {near}?")
    assert "required" not in line
    assert len(err.strip().splitlines()) == 1  # no usage block around it


# -- train: --resume and --init-from ----------------------------------------------------------------


def test_resume_with_nothing_left_to_do_says_so(tmp_path, capsys):
    path = tiny_run(tmp_path, steps=512)
    code, _, err = run_cli(["train", "--resume", path.parent, "--no-progress"], capsys)
    one_error_line(err, 2, code, "already at 512 >= 512 steps", "--total-steps")


@pytest.mark.parametrize(
    ("flags", "flag"),
    [(["--head", "mlp"], "--head"), (["--channels", "8", "8", "8"], "--channels")],
)
def test_resume_names_the_flag_that_cannot_change(flags, flag, tmp_path, capsys):
    path = tiny_run(tmp_path, steps=512)
    before = files_under(tmp_path)
    code, _, err = run_cli(
        ["train", "--resume", path.parent, "--total-steps", "1024", *flags], capsys
    )
    one_error_line(err, 2, code, f"{flag} cannot change on --resume")
    assert files_under(tmp_path) == before


def test_init_from_other_channels_is_one_line_and_no_run_folder(tmp_path, capsys):
    path = tiny_run(tmp_path / "a")
    runs = tmp_path / "runs"
    code, _, err = run_cli(
        ["train", "--init-from", path, "--channels", "8", "8", "8", "--runs-dir", runs]
        + ["--run-name", "ft", "--total-steps", "256"],
        capsys,
    )
    one_error_line(err, 2, code, "--channels 16 32 32", "--channels 8 8 8")
    assert "{" not in err  # no config dicts
    assert not (runs / "ft").exists()


def test_progress_bar_has_no_nan_before_an_episode_ends():
    from rlviz.agents.trainer import _bar_fields

    nan = float("nan")
    row = {"success_rate_100": nan, "return": nan, "episode_length": nan, "sps": 812.0}
    fields = _bar_fields(row)
    assert "nan" not in " ".join(fields.values()) and fields["sps"] == "812"
    row = {"success_rate_100": 0.5, "return": 0.25, "episode_length": 40.0, "sps": 800.0}
    assert _bar_fields(row)["ret"] == "0.25"


# -- sweep --------------------------------------------------------------------------------------------


def test_sweep_refuses_checkpoints_of_unrelated_runs(tmp_path, capsys):
    a = tiny_run(tmp_path, name="A", seed=1)
    b = tiny_run(tmp_path, name="B", seed=2)
    code, _, err = run_cli(["sweep", "--checkpoints", a, b, "--episodes", "1"], capsys)
    one_error_line(err, 2, code, "is not from the run of", "(A)")


def test_sweep_accepts_a_fine_tune_of_the_run_before(tmp_path):
    from rlviz.cli.sweep import check_one_lineage

    a = tiny_run(tmp_path, name="A")
    b = tiny_run(tmp_path, name="B", init_from=str(a))
    check_one_lineage([a, b])  # no error: B continues A


def test_sweep_table_columns_line_up(capsys):
    from rlviz.cli.sweep import print_table

    rows = [
        {"label": "run/step_000100352", "steps": 100352, "success_rate": 0.72, "drift_g": None},
        {"label": "step_9", "steps": 9, "success_rate": float("nan"), "drift_g": 0.5},
    ]
    for row in rows:
        row.update(mean_steps=1.0, ablation_drop=0.0, detectors_total=3)
    print_table(rows, ["g"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert len({len(line) for line in lines}) == 1, lines  # right-aligned to one width
    header = lines[0]
    for line in lines[1:]:  # each value ends where its column name ends
        for name in ("steps", "success_rate", "drift_g"):
            end = header.index(name) + len(name)
            assert line[end - 1] != " " and (end == len(line) or line[end] == " "), (name, line)
    assert "None" not in "".join(lines)


# -- outputs: named by checkpoint, never replaced unless asked --------------------------------------


def test_default_outputs_are_named_by_checkpoint(tmp_path):
    from rlviz.cli.common import output_name

    names = {
        output_name(SHIPPED),
        output_name(tmp_path / "runs/X/checkpoint.safetensors"),
        output_name(tmp_path / "runs/Y/checkpoint.safetensors"),
        output_name(tmp_path / "runs/X/snapshots/step_000100.safetensors"),
    }
    assert names == {"boxreach", "X", "Y", "X-step_000100"}


def _tiny_dataset(path: Path) -> Path:
    from rlviz.statemap import StateDataset

    n = 30
    rng = np.random.default_rng(0)
    StateDataset(
        obs=np.zeros((n, 12, 16, 3), np.uint8),
        features=rng.normal(size=(n, 8)).astype(np.float32),
        probs=np.full((n, 3), 1 / 3, np.float32),
        actions=np.zeros(n, np.int64),
        values=rng.normal(size=n).astype(np.float32),
        rewards=np.zeros(n, np.float32),
        steps=np.arange(n),
        episodes=np.zeros(n, np.int64),
        time_to_goal=np.full(n, np.nan, np.float32),
        success=np.zeros(n, bool),
        meta={"layer": "conv3", "action_names": ["left", "forward", "right"]},
    ).save(path)
    return path


def test_an_existing_output_is_kept_unless_overwrite(tmp_path, capsys):
    dataset = _tiny_dataset(tmp_path / "ds.npz")
    out = tmp_path / "out"
    argv = ["tsne", "--dataset", dataset, "--method", "pca", "--color", "value", "--out", out]
    assert run_cli(argv, capsys)[0] == 0
    first = {p.name: p.read_bytes() for p in files_under(out)}
    assert "map_value.png" in first
    os.utime(out / "map_value.png", (0, 0))
    code, stdout, err = run_cli([*argv, "--perplexity", "5"], capsys)
    assert code == 0, err
    assert {p.name: p.read_bytes() for p in files_under(out) if p.name in first} == first
    assert (out / "map_value-2.png").exists() and str(out / "map_value-2.png") in stdout
    assert "--overwrite" in err and "kept the existing" in err
    code, _, err = run_cli([*argv, "--overwrite"], capsys)
    assert code == 0 and "kept" not in err
    assert os.stat(out / "map_value.png").st_mtime > 0  # replaced, as asked
    assert not (out / "map_value-3.png").exists()


def test_an_existing_explorer_report_is_kept_whole(tmp_path, capsys, monkeypatch):
    """The report's files refer to each other: a new report goes to a new folder, not single
    renamed files."""
    import argparse

    from rlviz.cli.explore import _report_folder

    out = tmp_path / "boxreach"
    args = argparse.Namespace(out=str(out), overwrite=False, checkpoint=SHIPPED)
    assert _report_folder(args) == out  # nothing there yet
    out.mkdir()
    (out / "index.html").write_text("old report")
    assert _report_folder(args) == tmp_path / "boxreach-2"
    assert "--overwrite" in capsys.readouterr().err
    args.overwrite = True
    assert _report_folder(args) == out
    monkeypatch.chdir(tmp_path)
    args.out = None  # the default: explorer/NAME, by checkpoint
    assert _report_folder(args) == Path("explorer") / "boxreach"


def test_keep_existing_in_the_io_layer(tmp_path):
    from rlviz.io import atomic_write_bytes, keep_existing, replace_existing, written_path

    path = tmp_path / "a.png"
    path.write_bytes(b"old")
    with keep_existing() as renamed:
        assert atomic_write_bytes(path, b"new") == tmp_path / "a-2.png"
        atomic_write_bytes(path, b"newer")  # the block's own file: replaced in place
        assert written_path(path) == tmp_path / "a-2.png"
        fresh = atomic_write_bytes(tmp_path / "b.png", b"b")
        replace_existing()
        atomic_write_bytes(tmp_path / "b.png", b"b2")
    assert path.read_bytes() == b"old" and (tmp_path / "a-2.png").read_bytes() == b"newer"
    assert renamed == {path.absolute(): tmp_path / "a-2.png"} and fresh == tmp_path / "b.png"
    assert (tmp_path / "b.png").read_bytes() == b"b2"


# -- progress --------------------------------------------------------------------------------------------


def test_progress_only_on_a_terminal(monkeypatch):
    import argparse

    from rlviz.cli.common import progress_on

    class Tty:
        def isatty(self):
            return True

    monkeypatch.setattr(sys, "stderr", Tty())
    assert progress_on(argparse.Namespace(no_progress=False))
    assert not progress_on(argparse.Namespace(no_progress=True))
    monkeypatch.undo()
    assert not progress_on(argparse.Namespace(no_progress=False))  # pytest's captured stderr


def test_every_command_turns_bars_off_off_a_terminal():
    """One place (the parser) turns progress off when stderr is not a terminal, so no command
    writes bars into a log."""
    from rlviz.cli.features.topk import build_parser as topk
    from rlviz.cli.video import build_parser as video

    assert video().parse_args(["--checkpoint", "x"]).no_progress  # pytest's stderr: no TTY
    assert topk().parse_args([]).no_progress


def test_tsne_fit_shows_progress(capsys):
    from rlviz.statemap import StateEmbedding

    x = np.random.default_rng(0).normal(size=(60, 6)).astype(np.float32)
    StateEmbedding("tsne", perplexity=5, n_iter=50).fit(x, progress=True)
    assert "t-SNE of 60 states" in capsys.readouterr().err


def test_evaluate_shows_progress(capsys):
    from rlviz.agents import load_checkpoint
    from rlviz.agents.evaluate import evaluate

    model, _ = load_checkpoint(SHIPPED)
    evaluate(model, "rlviz/BoxReach-v0", [1_000_000], max_steps=3, progress=True)
    assert "held-out episodes" in capsys.readouterr().err


# -- pictures -----------------------------------------------------------------------------------------


def test_map_overlay_stays_visible_on_the_red_box():
    """Where a map is at its top over a red goal box, the drawn pixel is not red, and the top
    region has an outline (a red-topped scale made it vanish there)."""
    from rlviz.video.draw import ATTRIBUTION_LUT, SIGNED_LUT
    from rlviz.video.panels import map_over_frame

    frame = np.full((12, 16, 3), 90, np.uint8)
    frame[4:9, 5:11] = (200, 20, 20)  # the red box
    heat = np.zeros((12, 16), np.float32)
    heat[5:8, 6:10] = 1.0
    heat[6, 7:9] = 0.7  # a strong, not top, value inside
    for lut, signed in ((ATTRIBUTION_LUT, False), (SIGNED_LUT, True)):
        shown = map_over_frame(frame, heat, lut, 0.85, signed, dim=0.6, border=(255, 255, 255))
        for y, x in ((6, 7), (7, 7)):
            r, g, b = shown[y, x].astype(int)
            assert r < max(g, b) + 10, (y, x, shown[y, x])  # cyan to white, never red
        assert (shown[5, 6:10] == 255).all()  # the outline
        assert shown[0, 0].max() < 90  # the frame is dimmed under the map


def test_per_action_map_of_a_confident_action_is_not_blank():
    """log pi(a) of an action with pi ~ 1 has a vanishing gradient: the per-action row explains
    each action's logit, so the chosen action has a map too."""
    from rlviz import PolicyAdapter
    from rlviz.rollout import run_episode
    from rlviz.video.explain import explain_episode

    model = TinyActorCritic()
    with torch.no_grad():
        model.policy.weight.mul_(0)
        model.policy.bias.copy_(torch.tensor([0.0, 30.0, 0.0]))  # pi(forward) ~ 1
        model.policy.weight[1] += 0.01
    policy = PolicyAdapter(model)
    rollout = run_episode(SquareEnv(max_steps=4), policy, seed=0, deterministic=True)
    episode = explain_episode(policy, rollout, ["gradient"], per_action="gradient")
    maps = np.asarray(episode.action_maps["gradient"], np.float32)  # [T, A, H, W]
    assert (rollout.actions == 1).all()
    assert np.abs(maps[:, 1]).max() > 0.1
    assert "action:" in episode.map_ranges and episode.map_ranges["action:"][1] > 0


def test_ablation_figure_and_text_say_which_units_and_how_few_episodes(tmp_path, capsys):
    code, out, err = run_cli(
        ["dissect", "--checkpoint", SHIPPED, "--episodes", "1", "--max-steps", "30"]
        + ["--ablate", "2", "--ablate-episodes", "2", "--random-draws", "1", "--no-progress"]
        + ["--out", tmp_path],
        capsys,
    )
    assert code == 0, err
    assert "ablated: conv" in out and "#" in out
    assert "1 draw: no spread" in out and "+- 0.00" not in out
    assert "small sample" in err and "--ablate-episodes" in err
    assert (tmp_path / "ablation.png").exists()
