"""The bad-input matrix (issue 21): every command and the public API answer a bad input with one
line naming what was given, what was expected and what to do; exit status 2 for a usage error,
1 for the machine's own trouble (disk full); no traceback; no partial output file.

The CLI cases run ``rlviz.cli.main(argv)`` in-process and fail before any env starts (fast); a
few run as subprocesses to check the real exit status and that stderr holds no traceback.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import TinyCNN

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ROOT / "agents" / "checkpoints" / "boxreach.safetensors"
CHECKPOINT_COMMANDS = ("video", "explore", "tsne", "filters", "featvis", "topk", "dissect", "trust")
FEATURES = ("filters", "featvis", "topk", "dissect")
UNWRITABLE = "/proc/rlviz-test"  # /proc takes no new files, even for root


def run_cli(argv: list[str], capsys) -> tuple[int, str]:
    """``rlviz ARGV`` in-process: (exit status, stderr)."""
    from rlviz.cli import main

    try:
        code = main([str(a) for a in argv])
    except SystemExit as exc:  # argparse's usage errors
        code = exc.code
    return int(code or 0), capsys.readouterr().err


def files_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


@pytest.fixture(scope="module")
def corrupt(tmp_path_factory) -> dict[str, Path]:
    """Checkpoints broken in the ways a user meets: pickle renamed, truncated, tampered JSON."""
    folder = tmp_path_factory.mktemp("ckpts")
    made = {}

    def copy(name: str) -> Path:
        path = folder / name / "agent.safetensors"
        path.parent.mkdir()
        shutil.copy(SHIPPED, path)
        shutil.copy(SHIPPED.with_suffix(".json"), path.with_suffix(".json"))
        made[name] = path
        return path

    torch.save({"w": torch.zeros(3)}, copy("pickle"))  # a torch pickle under .safetensors
    data = SHIPPED.read_bytes()
    copy("truncated").write_bytes(data[: len(data) // 2])
    path = copy("wrong_types")
    config = json.loads(path.with_suffix(".json").read_text())
    path.with_suffix(".json").write_text(json.dumps({**config, "format_version": "one"}))
    copy("bad_json").with_suffix(".json").write_text("{not json")
    copy("no_json").with_suffix(".json").unlink()
    return made


# (command argv with {ckpt} / {out} / {file} / {bad:NAME} placeholders, status, message part)
CLI_CASES: list[tuple[str, list[str], int, str]] = []


def case(id_: str, argv: str, status: int, message: str) -> None:
    CLI_CASES.append((id_, argv.split(), status, message))


for name in CHECKPOINT_COMMANDS:
    case(
        f"{name}-seed-negative",
        f"{name} --checkpoint {{ckpt}} --seed -1",
        2,
        "expected an integer >= 0",
    )
    case(f"{name}-max-steps-0", f"{name} --checkpoint {{ckpt}} --max-steps 0", 2, ">= 1, got 0")
    case(f"{name}-seed-text", f"{name} --checkpoint {{ckpt}} --seed abc", 2, "expected an integer")
    case(f"{name}-unknown-flag", f"{name} --checkpoint {{ckpt}} --nope 1", 2, "unrecognized")
    case(
        f"{name}-missing-checkpoint",
        f"{name} --checkpoint {{out}}/missing.safetensors --out {{out}}",
        2,
        "does not exist",
    )
    for bad in ("pickle", "truncated", "wrong_types", "bad_json", "no_json"):
        case(
            f"{name}-checkpoint-{bad}",
            f"{name} --checkpoint {{bad:{bad}}} --out {{out}}",
            2,
            "checkpoint" if bad != "wrong_types" else "wrong type",
        )
for name in ("video", "explore", "featvis", "topk", "dissect", "trust"):
    case(f"{name}-episodes-0", f"{name} --checkpoint {{ckpt}} --episodes 0", 2, ">= 1, got 0")
for name in ("explore", "tsne", *FEATURES, "trust"):
    case(
        f"{name}-out-unwritable", f"{name} --checkpoint {{ckpt}} --out {UNWRITABLE}", 2, "writable"
    )
    case(f"{name}-out-is-a-file", f"{name} --checkpoint {{ckpt}} --out {{file}}", 2, "is a file")
for name in ("video", "explore", "tsne", "evaluate"):
    case(
        f"{name}-workers-negative", f"{name} --checkpoint {{ckpt}} --workers -1", 2, ">= 0, got -1"
    )
case("featvis-abbreviated-layers", "featvis --checkpoint {ckpt} --layer nope", 2, "unrecognized")
case("video-abbreviated-episodes", "video --checkpoint {ckpt} --epi 2", 2, "unrecognized")
case("video-out-proc", "video --checkpoint {ckpt} --out /proc/x.mp4", 2, "not writable")
case("video-out-bad-suffix", "video --checkpoint {ckpt} --out {out}/x.avi", 2, ".mp4 or .gif")
case("video-out-folder-named-mp4", "video --checkpoint {ckpt} --out {dirmp4}", 2, "is a folder")
case("video-unknown-method", "video --checkpoint {ckpt} --methods nope", 2, "unknown method")
case("video-fps-0", "video --checkpoint {ckpt} --fps 0", 2, "--fps must be > 0")
case("video-normalize", "video --checkpoint {ckpt} --normalize nope", 2, "invalid choice")
case("explore-unknown-method", "explore --checkpoint {ckpt} --methods nope", 2, "nope")
case("explore-unknown-target", "explore --checkpoint {ckpt} --targets nope", 2, "--targets")
case("explore-empty-methods", "explore --checkpoint {ckpt} --methods ,", 2, "--methods is empty")
case("tsne-both-sources", "tsne --checkpoint {ckpt} --dataset {file}", 2, "exactly one of")
case("tsne-no-source", "tsne", 2, "exactly one of")
case("tsne-dataset-not-npz", "tsne --dataset {file} --out {out}", 2, "npz")
case("tsne-dataset-missing", "tsne --dataset {out}/nope.npz --out {out}", 2, "nope.npz")
case("featvis-bad-objective", "featvis --checkpoint {ckpt} --objective zzz --out {out}", 2, "zzz")
case("featvis-method", "featvis --checkpoint {ckpt} --method nope", 2, "invalid choice")
case("evaluate-seed-start", "evaluate --checkpoint {ckpt} --seed-start -1", 2, ">= 0, got -1")
case("evaluate-seed", "evaluate --checkpoint {ckpt} --seed 1", 2, "unrecognized")
case("evaluate-episodes-0", "evaluate --checkpoint {ckpt} --episodes 0", 2, ">= 1, got 0")
case("evaluate-env-kwargs", "evaluate --checkpoint {ckpt} --env-kwargs {{x", 2, "not JSON")
case("evaluate-env-kwargs-list", "evaluate --checkpoint {ckpt} --env-kwargs [1]", 2, "JSON object")
case("evaluate-device", "evaluate --checkpoint {ckpt} --device tpu9", 2, "tpu9")
case(
    "evaluate-json-unwritable",
    f"evaluate --checkpoint {{ckpt}} --json {UNWRITABLE}/r.json",
    2,
    "writable",
)
case("evaluate-missing", "evaluate --checkpoint {out}/missing.safetensors", 2, "does not exist")
case("evaluate-pickle", "evaluate --checkpoint {bad:pickle}", 2, "SHA-256")
case("sweep-no-source", "sweep", 2, "required")
case("sweep-no-snapshots", "sweep --run {out}", 2, "no snapshots")
case("sweep-missing", "sweep --checkpoints {out}/missing.safetensors", 2, "does not exist")
case("sweep-corrupt", "sweep --checkpoints {bad:bad_json}", 2, "not valid JSON")
case("sweep-seed-start", "sweep --run {out} --seed-start -5", 2, ">= 0, got -5")
case("sweep-device", "sweep --checkpoints {ckpt} --device tpu9", 2, "tpu9")
case("sweep-episodes", "sweep --run {out} --episodes 0", 2, ">= 1, got 0")
case("train-total-steps", "train --total-steps 0 --runs-dir {out}", 2, "total_steps=0")
case("train-type", "train --num-envs many", 2, "invalid int value")
case("train-resume-missing", "train --resume {out}/nope", 2, "does not exist")
case("train-resume-corrupt", "train --resume {bad:bad_json}", 2, "not valid JSON")
case("train-resume-no-state", "train --resume {ckpt}", 2, "no training state")
case("train-abbreviation", "train --total 10", 2, "unrecognized")
case("train-mirror", "train --mirror-augment yes --runs-dir {out}", 2, "mirror_augment='yes'")
case(
    "video-window-empty", "video --checkpoint {ckpt} --from-step 5 --to-step 3", 2, "must be above"
)
case("explore-from-step", "explore --checkpoint {ckpt} --from-step -2", 2, ">= 0, got -2")
case(
    "explore-map-codec", "explore --checkpoint {ckpt} --map-codec jpeg", 2, "invalid choice: 'jpeg'"
)
case(
    "video-window-past-cap",
    "video --checkpoint {ckpt} --from-step 50 --max-steps 20",
    2,
    "past --max-steps=20",
)
case("train-ent-coef-end", "train --ent-coef-end much --runs-dir {out}", 2, "invalid")
case("trust-unknown-method", "trust --checkpoint {ckpt} --methods nope", 2, "unknown method")
case("trust-empty-methods", "trust --checkpoint {ckpt} --methods ,", 2, "--methods is empty")
case("trust-targets", "trust --checkpoint {ckpt} --targets value", 2, "--targets 'value'")
case("trust-frames-1", "trust --checkpoint {ckpt} --frames 1", 2, ">= 2, got 1")
case("trust-steps-1", "trust --checkpoint {ckpt} --steps 1", 2, ">= 2, got 1")
case("trust-mask-key", "trust --checkpoint {ckpt} --mask-key nope --out {out}", 2, "--mask-key")
case("video-methods-from", "video --checkpoint {ckpt} --methods-from {file}", 2, "--methods-from")
case("unknown-command", "nope", 2, "unknown command")
# A user's first hour (issue 29): each answered before any episode is played.
case("video-typo-required-flag", "video --checkpont {ckpt}", 2, "did you mean --checkpoint?")
case("video-layer", "video --checkpoint {ckpt} --layer conv9 --out {out}", 2, "'conv9' not found")
case("video-env-cartpole", "video --checkpoint {ckpt} --env CartPole-v1 --out {out}", 2, "(4,)")
case("video-map-episodes-0", "video --checkpoint {ckpt} --map-episodes 0", 2, ">= 1, got 0")
case("video-crf", "video --checkpoint {ckpt} --crf 99", 2, "invalid choice")
case("video-preset", "video --checkpoint {ckpt} --preset nope", 2, "invalid choice")
case("explore-gamma", "explore --checkpoint {ckpt} --gamma 2", 2, "in [0, 1], got 2")
case("explore-nmf-layer", "explore --checkpoint {ckpt} --nmf-layer conv9 --out {out}", 2, "conv9")
case("explore-optvis-steps", "explore --checkpoint {ckpt} --optvis-steps -1", 2, ">= 0, got -1")
case("featvis-steps-0", "featvis --checkpoint {ckpt} --steps 0", 2, ">= 1, got 0")
case("featvis-unused-layers", "featvis --checkpoint {ckpt} --layers conv3", 2, "--layers is used")
case("topk-k-0", "topk --checkpoint {ckpt} --k 0", 2, ">= 1, got 0")
case("dissect-iou", "dissect --checkpoint {ckpt} --iou-threshold 2", 2, "in [0, 1], got 2")
case("dissect-draws-0", "dissect --checkpoint {ckpt} --random-draws 0", 2, ">= 1, got 0")
case("evaluate-state-file", "evaluate --checkpoint {state}", 2, "optimizer state")
case("sweep-env-cartpole", "sweep --checkpoints {ckpt} --env CartPole-v1 --out {out}", 2, "(4,)")


def _expand(argv: list[str], tmp_path: Path, corrupt: dict[str, Path]) -> list[str]:
    file = tmp_path / "a_file.txt"
    file.write_text("not a folder\n")
    (tmp_path / "out").mkdir(exist_ok=True)
    (tmp_path / "dir.mp4").mkdir(exist_ok=True)  # an existing folder named like a video
    out = []
    for arg in argv:
        if arg.startswith("{bad:"):
            out.append(str(corrupt[arg[5:-1]]))
            continue
        out.append(
            arg.replace("{ckpt}", str(SHIPPED))
            .replace("{out}", str(tmp_path / "out"))
            .replace("{file}", str(file))
            .replace("{dirmp4}", str(tmp_path / "dir.mp4"))
            .replace("{state}", str(tmp_path / "run" / "checkpoint.state.safetensors"))
            .replace("{{", "{")
        )
    return out


@pytest.mark.parametrize(
    ("argv", "status", "message"), [c[1:] for c in CLI_CASES], ids=[c[0] for c in CLI_CASES]
)
def test_cli_bad_input_is_one_clear_line(argv, status, message, tmp_path, corrupt, capsys):
    argv = _expand(argv, tmp_path, corrupt)
    before = files_under(tmp_path)
    code, err = run_cli(argv, capsys)
    assert code == status, err
    assert message in err, err
    assert "Traceback" not in err
    lines = [line for line in err.strip().splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("rlviz") and "error:" in line]
    assert len(errors) == 1 and message in errors[0], err  # the one line says it all
    assert files_under(tmp_path) == before  # nothing written, not even a partial file


def test_the_matrix_covers_every_command():
    from rlviz.cli import COMMANDS

    covered = {argv[0] for _, argv, _, _ in CLI_CASES}
    assert set(COMMANDS) <= covered, set(COMMANDS) - covered


def test_video_into_an_existing_folder_with_a_dot(tmp_path):
    """`mktemp -d` makes tmp.AbC123: an existing folder is a folder, whatever its name."""
    from rlviz.video import output_paths

    folder = tmp_path / "tmp.AbC123"
    folder.mkdir()
    assert output_paths(folder, 2) == [folder / f"rl-explain-episode-{i}.mp4" for i in (0, 1)]
    with pytest.raises(ValueError, match="has suffix '.AbC123'"):
        output_paths(tmp_path / "missing.AbC123", 1)


def test_default_outputs_never_overwrite_shipped_files():
    """A command run without --out must not write over a file the repository ships."""
    from rlviz.cli.features import DEFAULT_OUT

    if not (ROOT / ".git").exists() or shutil.which("git") is None:
        pytest.skip("needs the git checkout")
    tracked = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    names = ["featvis.png", "deepdream.png", "inversion.png", "adversarial_epsilon.png"]
    names += ["filters_rgb.png", "kernels_vs_learned.png", "topk_conv3.png", "dissection.png"]
    names += ["dissection.json", "ablation.png", "neighbours.png"]
    shipped = [str(DEFAULT_OUT / n) for n in names if str(DEFAULT_OUT / n) in tracked]
    assert not shipped
    for i in range(3):
        assert f"videos/rl-explain-episode-{i}.mp4" not in tracked
    assert not any(t.startswith(("explorer/", "runs/")) for t in tracked)


# -- a few real processes: exit status and no traceback on stderr ---------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ["video", "--checkpoint", str(SHIPPED), "--out", "/proc/x.mp4"],
        ["evaluate", "--checkpoint", str(SHIPPED), "--seed-start", "-1"],
        ["featvis", "--checkpoint", str(SHIPPED), "--layer", "nope"],
    ],
    ids=["video-proc", "evaluate-seed", "featvis-layer"],
)
def test_cli_process_exits_2_without_traceback(argv):
    proc = subprocess.run(
        [sys.executable, "-m", "rlviz.cli", *argv], cwd=ROOT, capture_output=True, text=True
    )
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and "error" in proc.stderr


BLOCK_IMPORT = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == {name!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
sys.meta_path.insert(0, Block())
from rlviz.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _tiny_dataset(path: Path) -> Path:
    from rlviz.statemap import StateDataset

    n = 30
    rng = np.random.default_rng(0)
    StateDataset(
        obs=np.zeros((n, 12, 16, 3), np.uint8),
        features=rng.normal(size=(n, 8)).astype(np.float32),
        probs=np.full((n, 3), 1 / 3, np.float32),
        actions=np.zeros(n, np.int64),
        values=np.zeros(n, np.float32),
        rewards=np.zeros(n, np.float32),
        steps=np.arange(n),
        episodes=np.zeros(n, np.int64),
        time_to_goal=np.full(n, np.nan, np.float32),
        success=np.zeros(n, bool),
        meta={"layer": "conv3", "action_names": ["left", "forward", "right"]},
    ).save(path)
    return path


@pytest.mark.parametrize(
    ("module", "argv", "status", "message"),
    [
        ("openTSNE", ["tsne", "--dataset", "{ds}", "--out", "{out}"], 1, "pip install openTSNE"),
        # --workers N without Ray falls back to serial by design; --address cannot
        ("ray", ["evaluate", "--checkpoint", "{ckpt}", "--address", "auto"], 2, "rlviz[ray]"),
    ],
    ids=["openTSNE", "ray"],
)
def test_missing_optional_dependency(module, argv, status, message, tmp_path):
    from rlviz.agents import ActorCritic, save_checkpoint

    run = tmp_path / "run"
    save_checkpoint(run / "snapshots" / "step_1.safetensors", ActorCritic(channels=(4, 8, 8)))
    fill = {"{ds}": str(_tiny_dataset(tmp_path / "ds.npz")), "{out}": str(tmp_path / "out")}
    fill["{run}"], fill["{ckpt}"] = str(run), str(SHIPPED)
    argv = [fill.get(a, a) for a in argv]
    proc = subprocess.run(
        [sys.executable, "-c", BLOCK_IMPORT.format(name=module), *argv],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == status, proc.stderr
    assert message in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert files_under(tmp_path / "out") == []


# -- full disk: ENOSPC injected into rlviz.io's one atomic write ----------------------------------


def _disk_full(monkeypatch):
    import rlviz.io

    def full(tmp):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp))

    monkeypatch.setattr(rlviz.io, "_publishable", full)


def test_full_disk_is_one_line_and_leaves_nothing(tmp_path, monkeypatch, capsys):
    dataset = _tiny_dataset(tmp_path / "ds.npz")
    _disk_full(monkeypatch)
    out = tmp_path / "out"
    code, err = run_cli(["tsne", "--dataset", dataset, "--method", "pca", "--out", out], capsys)
    assert code == 1, err
    assert "No space left on device" in err and "free some space" in err, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert files_under(out) == []  # temp files removed too


def test_full_disk_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    from rlviz.agents import ActorCritic, load_checkpoint, save_checkpoint

    path = tmp_path / "agent.safetensors"
    first = ActorCritic(channels=(4, 8, 8))
    save_checkpoint(path, first, {"steps": 1}, optimizer_state={"steps": 1})
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    _disk_full(monkeypatch)
    with pytest.raises(OSError, match="No space"):
        save_checkpoint(path, ActorCritic(channels=(4, 8, 8)), {"steps": 2}, {"steps": 2})
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    monkeypatch.undo()
    assert load_checkpoint(path)[1]["steps"] == 1


def test_real_tiny_filesystem_if_mountable(tmp_path):
    """A 64 KiB tmpfs really fills up (needs root and mount; skipped elsewhere)."""
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("needs root to mount a tmpfs")
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)]).returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        from rlviz.io import atomic_write_bytes

        atomic_write_bytes(mnt / "keep.bin", b"old")
        with pytest.raises(OSError) as info:
            atomic_write_bytes(mnt / "keep.bin", os.urandom(1 << 20))
        assert info.value.errno == errno.ENOSPC
        assert sorted(p.name for p in mnt.iterdir()) == ["keep.bin"]
        assert (mnt / "keep.bin").read_bytes() == b"old"
    finally:
        subprocess.run(["umount", str(mnt)])


# -- the Python API --------------------------------------------------------------------------------


@pytest.fixture
def policy():
    from rlviz import PolicyAdapter

    return PolicyAdapter(TinyCNN())


GOOD = np.random.default_rng(0).integers(0, 256, (3, 24, 32, 3), dtype=np.uint8)


@pytest.mark.parametrize(
    "obs",
    [
        GOOD.astype(np.float64),
        GOOD.astype(np.float64) / 255,
        GOOD > 127,
        GOOD.astype(np.int64),
        GOOD[:, ::-1],  # negative strides
        torch.from_numpy(GOOD).permute(0, 2, 1, 3).contiguous().permute(0, 2, 1, 3),
        GOOD.tolist(),
        GOOD[0],  # one frame, no batch axis
    ],
    ids=[
        "float64",
        "float64-unit",
        "bool",
        "int64",
        "negative-strides",
        "non-contiguous",
        "list",
        "unbatched",
    ],
)
def test_explain_accepts_any_dtype_and_memory_layout(policy, obs):
    import rlviz

    maps = rlviz.explain(policy, obs, methods=["gradient", "gradcam"])
    for m in maps.values():
        assert m.shape[-2:] == (24, 32) and np.isfinite(m).all()


@pytest.mark.parametrize(
    ("obs", "error", "message"),
    [
        (np.full((2, 24, 32, 3), np.nan, np.float32), ValueError, "NaN/Inf"),
        (np.where(GOOD > 250, np.inf, GOOD / 255.0), ValueError, "NaN/Inf"),
        (torch.full((1, 3, 24, 32), float("nan")), ValueError, "NaN/Inf"),
        (GOOD[:0], ValueError, "empty batch"),
        (GOOD[:, :20], RuntimeError, "shaped [3, 20, 32, 3]"),
        (GOOD[..., :2], Exception, "fits several layouts"),
        (GOOD[..., :1], RuntimeError, "expected observations like the env"),
        ("pixels", Exception, "expected observations shaped"),
        (None, Exception, "expected observations shaped"),
    ],
    ids=[
        "nan",
        "inf",
        "nan-tensor",
        "empty",
        "wrong-size",
        "ambiguous-channels",
        "wrong-channels",
        "string",
        "none",
    ],
)
def test_explain_rejects_bad_observations_clearly(policy, obs, error, message):
    import rlviz

    with pytest.raises(error) as info:
        rlviz.explain(policy, obs, methods=["gradient"])
    assert message.lower() in str(info.value).lower()
    assert len(str(info.value).splitlines()) == 1


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda p: __import__("rlviz").explain(p, GOOD, methods=["nope"]), "available"),
        (lambda p: __import__("rlviz").explain(p, GOOD, methods=["gradcam"], layer="nope"), "nope"),
        (lambda p: __import__("rlviz").explain(p, GOOD, batch_size=0), "positive int"),
        (lambda p: __import__("rlviz").explain(p, GOOD, steps=5, methods=["gradient"]), "steps"),
        (lambda p: __import__("rlviz").PolicyAdapter("model"), "nn.Module"),
    ],
    ids=["method", "layer", "batch-size", "option", "adapter-type"],
)
def test_api_unknown_names_and_types(policy, call, message):
    with pytest.raises((ValueError, TypeError)) as info:
        call(policy)
    assert message in str(info.value)


def test_load_checkpoint_on_a_missing_gpu_is_explained(monkeypatch):
    from rlviz.agents import load_checkpoint

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="no CUDA GPU.*device='cpu'"):
        load_checkpoint(SHIPPED, device="cuda")
    with pytest.raises(ValueError, match="not a torch device"):
        load_checkpoint(SHIPPED, device="tpu9")


@pytest.mark.parametrize("bad", ["pickle", "truncated", "wrong_types", "bad_json", "no_json"])
def test_corrupt_checkpoints_are_rejected(corrupt, bad):
    from rlviz.agents import load_checkpoint
    from rlviz.agents.checkpoint import CheckpointError

    with pytest.raises(CheckpointError) as info:
        load_checkpoint(corrupt[bad])
    assert str(corrupt[bad].parent) in str(info.value)  # names what was given
    assert any(w in str(info.value) for w in ("restore", "re-save", "retrain", "Copy both"))


@pytest.mark.parametrize(
    "damage",
    ["pickle", "truncated", "not-a-zip", "wrong-meta"],
)
def test_corrupt_datasets_and_maps_are_rejected(tmp_path, damage):
    import pickle

    from rlviz.statemap import StateDataset, StateEmbedding

    path = _tiny_dataset(tmp_path / "ds.npz")
    if damage == "pickle":
        path.write_bytes(pickle.dumps({"obs": np.zeros(3)}))
    elif damage == "truncated":
        path.write_bytes(path.read_bytes()[:200])
    elif damage == "not-a-zip":
        path.write_text("hello")
    else:
        arrays = dict(np.load(path))
        arrays["meta"] = np.array("[1, 2]")
        np.savez(path, **arrays)
    for loader in (StateDataset.load, StateEmbedding.load):
        with pytest.raises(ValueError) as info:
            loader(path)
        assert "ds.npz" in str(info.value)


def test_render_video_and_writer_refuse_bad_outputs(tmp_path):
    from rlviz.video import VideoWriter, check_writable

    with pytest.raises(ValueError, match=r"\.mp4 or \.gif"):
        check_writable(tmp_path / "x.avi")
    with pytest.raises(PermissionError, match="not writable"):
        check_writable("/proc/x.mp4")
    (tmp_path / "dir.mp4").mkdir()
    with pytest.raises(IsADirectoryError, match="is a folder"):
        check_writable(tmp_path / "dir.mp4")
    with pytest.raises(ValueError, match="fps"):
        VideoWriter(tmp_path / "x.mp4", fps=0)
    writer = VideoWriter(tmp_path / "x.mp4")
    with pytest.raises(ValueError, match=r"uint8 RGB frame shaped \[H, W, 3\]"):
        writer.write(np.zeros((4, 4, 3), np.float32))
    writer.write(np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(ValueError, match="one size"):
        writer.write(np.zeros((6, 4, 3), np.uint8))
    writer.abort()
    assert files_under(tmp_path) == []


def test_wrappers_refuse_bad_arguments(tmp_path):
    from helpers import SquareEnv

    from rlviz import PolicyAdapter
    from rlviz.wrappers import RecordExplanationVideo

    with pytest.raises((TypeError, ValueError)) as info:
        RecordExplanationVideo(SquareEnv(), "not a policy", video_folder=tmp_path)
    assert "not a policy" in str(info.value) or "str" in str(info.value)
    with pytest.raises((ValueError, OSError)) as info:
        RecordExplanationVideo(SquareEnv(), PolicyAdapter(TinyCNN()), video_folder=UNWRITABLE)
    assert "rlviz-test" in str(info.value)
