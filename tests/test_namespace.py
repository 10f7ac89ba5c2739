"""rlviz's envs/ and agents/ install as ``rlviz.envs`` / ``rlviz.agents``: from a folder that holds
a user's own ``envs`` and ``agents`` packages (common in RL code), rlviz works and theirs stay
theirs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "agents" / "checkpoints" / "boxreach.safetensors"
RLVIZ = Path(sys.executable).parent / "rlviz"


@pytest.fixture
def user_project(tmp_path: Path) -> Path:
    """A folder with the user's own envs/ and agents/ packages (no ``prepare``, no checkpoints)."""
    for name in ("envs", "agents"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text(f'OWNER = "user"\nNAME = "{name}"\n')
    return tmp_path


def run(args: list[str], cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    # No PYTHONPATH: what the user has is the installed rlviz and their own folder.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)


def test_import_rlviz_keeps_the_users_envs_and_agents(user_project):
    script = (
        "import rlviz, rlviz.envs, rlviz.agents, envs, agents\n"
        "assert envs.OWNER == agents.OWNER == 'user', (envs, agents)\n"
        "assert rlviz.envs.__name__ == 'rlviz.envs' and hasattr(rlviz.envs, 'prepare')\n"
        "assert hasattr(rlviz.agents, 'load_checkpoint')\n"
        "import gymnasium\n"
        "assert 'rlviz/BoxReach-v0' in gymnasium.registry\n"
        "assert gymnasium.registry['rlviz/BoxReach-v0'].entry_point.startswith('rlviz.envs.')\n"
        "print('ok')\n"
    )
    result = run([sys.executable, "-c", script], user_project)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr


@pytest.mark.slow
def test_cli_commands_run_beside_the_users_envs_and_agents(user_project):
    evaluate = run(
        [sys.executable, "-m", "rlviz", "evaluate", "--checkpoint", str(SHIPPED),
         "--episodes", "1"],
        user_project,
    )
    assert evaluate.returncode == 0, evaluate.stderr
    assert "success" in evaluate.stdout.lower()

    video = run(
        [sys.executable, "-m", "rlviz.cli", "video", "--checkpoint", str(SHIPPED),
         "--episodes", "1", "--methods", "gradient", "--embedding", "none", "--max-steps", "8",
         "--out", str(user_project / "run.mp4"), "--no-progress"],
        user_project,
    )
    assert video.returncode == 0, video.stderr
    assert (user_project / "run.mp4").stat().st_size > 0

    # Ray workers start in other processes: their set-up must import rlviz's envs, not the user's.
    explore = run(
        [str(RLVIZ), "explore", "--checkpoint", str(SHIPPED), "--episodes", "2",
         "--methods", "gradient", "--units", "0", "--map", "none", "--max-steps", "6",
         "--workers", "2", "--out", str(user_project / "report"), "--no-progress"],
        user_project,
    )
    assert explore.returncode == 0, explore.stderr
    assert (user_project / "report" / "index.html").exists()
    # Their packages are untouched.
    for name in ("envs", "agents"):
        assert sorted(p.name for p in (user_project / name).iterdir() if p.suffix == ".py") == [
            "__init__.py"
        ]


def test_a_wheel_installs_only_the_rlviz_package(tmp_path):
    """A non-editable install must not write site-packages/envs or site-packages/agents."""
    import shutil
    import zipfile

    source = tmp_path / "src"
    source.mkdir()
    for name in ("setup.py", "pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    skip = shutil.ignore_patterns("__pycache__", "*.pyc")
    for folder in ("rlviz", "envs", "agents"):
        shutil.copytree(ROOT / folder, source / folder, ignore=skip)
    built = run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
         "-w", str(tmp_path / "dist"), str(source)],
        tmp_path,
    )
    assert built.returncode == 0, built.stderr[-2000:]
    (wheel,) = (tmp_path / "dist").glob("rlviz-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert {n.split("/")[0] for n in names} == {"rlviz", wheel.name.split("-py")[0] + ".dist-info"}
    assert "rlviz/envs/boxreach.py" in names and "rlviz/agents/trainer.py" in names
    assert "rlviz/agents/checkpoints/boxreach.safetensors" in names
    assert "rlviz/explorer/assets/index.html" in names
