"""Shared fixtures; tests import tiny models and envs with ``import helpers`` / ``from helpers``."""

import sys
from pathlib import Path

import pytest

# The tests folder is no package; put it on the path so `helpers` imports under any import mode.
TESTS = str(Path(__file__).resolve().parent)
if TESTS not in sys.path:
    sys.path.insert(0, TESTS)

from helpers import TinyCNN, ray_worker_env, sb3_model  # noqa: E402  (needs the path above)


@pytest.fixture
def tiny():
    """A fresh seeded TinyCNN and its PolicyAdapter."""
    from rlviz import PolicyAdapter

    model = TinyCNN()
    return model, PolicyAdapter(model)


@pytest.fixture(scope="session")
def sb3_ppo():
    """A real SB3 PPO model trained 256 steps on ColourPatchEnv; shared, so never modify it."""
    return sb3_model("PPO", learn_steps=256)


@pytest.fixture(scope="session")
def ray_executor():
    """One local 2-CPU Ray cluster for the session, started bare (no worker set-up hook, as a
    cluster joined with --address), the tests folder on the workers' path; the executor the
    commands use joins it, so the set-up comes from the tasks themselves."""
    ray = pytest.importorskip("ray")
    from rlviz.cli.workers import WORKER_SETUP
    from rlviz.parallel import RayExecutor

    ray.init(num_cpus=2, runtime_env=ray_worker_env(), include_dashboard=False, logging_level=30)
    try:
        yield RayExecutor(setup=WORKER_SETUP, progress=False)
    finally:
        ray.shutdown()
