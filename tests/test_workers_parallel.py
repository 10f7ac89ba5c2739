"""``--workers`` for ``rlviz tsne`` and ``rlviz explore`` (issue 20): episodes played as tasks
give the serial run's files; an episode of ``collect`` is the same played alone."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np
import pytest
from helpers import SquareEnv, tiny_policy

from rlviz.parallel import SerialExecutor
from rlviz.parallel.episodes import env_factory, play_parallel
from rlviz.rollout import collect

ENV_ID = "rlviz/BoxReachSmall-v0"


def _assert_same_rollouts(a, b) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert x.seed == y.seed and len(x) == len(y)
        np.testing.assert_array_equal(x.obs, y.obs)
        np.testing.assert_array_equal(x.actions, y.actions)
        np.testing.assert_array_equal(x.probs, y.probs)
        np.testing.assert_array_equal(x.values, y.values)
        np.testing.assert_array_equal(x.rewards, y.rewards)


def test_collect_plays_an_episode_alone_as_in_a_full_run():
    policy = tiny_policy()
    options = dict(seed=7, max_steps=15, info_keys=())
    full = list(collect(SquareEnv(goal=False), policy, 3, **options))
    assert len({tuple(r.actions) for r in full}) == 3  # sampled: the episodes differ
    alone = list(collect(SquareEnv(goal=False), policy, 1, first_episode=2, **options))
    _assert_same_rollouts(alone, full[2:])
    blocks = play_parallel(
        functools.partial(SquareEnv, goal=False),
        policy,
        SerialExecutor(progress=False),
        3,
        block_size=2,
        **options,
    )
    _assert_same_rollouts(blocks, full)


def _numbers(rollout) -> tuple:
    return rollout.seed, len(rollout), rollout.reward_sum


def test_collect_with_any_reset_seeds_samples_each_episode_from_its_own_seed():
    import torch

    from rlviz.rollout import run_episode

    policy = tiny_policy()
    seeds = (40, 7, 123)  # not consecutive: e.g. the seeds a run trained on
    options = dict(max_steps=15, info_keys=())
    played = list(collect(SquareEnv(goal=False), policy, 3, seeds=seeds, **options))
    alone = [
        run_episode(
            SquareEnv(goal=False),
            policy,
            seed=s,
            generator=torch.Generator().manual_seed(s),
            **options,
        )
        for s in seeds
    ]
    _assert_same_rollouts(played, alone)
    assert [r.reward_sum for r in played] == pytest.approx([r.episode_return for r in played])
    kept = play_parallel(
        functools.partial(SquareEnv, goal=False),
        policy,
        SerialExecutor(progress=False),
        3,
        seeds=seeds,
        keep=_numbers,
        block_size=2,
        **options,
    )
    assert kept == [_numbers(r) for r in played]


def test_env_factory_remakes_the_env_or_says_why_not():
    import gymnasium as gym

    with pytest.raises(ValueError, match="no spec"):
        env_factory(SquareEnv())
    env = gym.make("CartPole-v1")
    copy = env_factory(env)()
    assert copy.spec == env.spec
    np.testing.assert_array_equal(env.reset(seed=3)[0], copy.reset(seed=3)[0])
    opaque = gym.Wrapper(env)  # records no constructor arguments
    with pytest.raises(ValueError, match="RecordConstructorArgs"):
        env_factory(opaque)


# ---- the commands, on a local Ray cluster ------------------------------------------------------


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A tiny untrained agent of the real architecture, saved for BoxReachSmall."""
    import torch

    from rlviz.agents.checkpoint import save_checkpoint
    from rlviz.agents.policy import ActorCritic, Architecture

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "agent.safetensors"
    return save_checkpoint(path, ActorCritic(Architecture(channels=(4, 8, 8))), {"env_id": ENV_ID})


def _tsne(checkpoint: Path, out: Path, *extra: str) -> Path:
    from rlviz.cli import main

    argv = ["tsne", "--checkpoint", str(checkpoint), "--episodes", "2", "--max-steps", "20"]
    argv += ["--seed", "3", "--perplexity", "5", "--color", "value", "--mosaic-cols", "0"]
    assert main([*argv, "--out", str(out), *extra]) == 0
    return out


def _arrays(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as data:
        return {key: data[key] for key in data.files}


def test_tsne_workers_equal_serial(checkpoint, tmp_path, ray_executor):
    serial = _tsne(checkpoint, tmp_path / "serial")
    parallel = _tsne(checkpoint, tmp_path / "ray", "--workers", "2")
    for name in ("dataset.npz", "embedding.npz"):
        a, b = _arrays(serial / name), _arrays(parallel / name)
        assert sorted(a) == sorted(b)
        for key in a:
            np.testing.assert_array_equal(a[key], b[key], err_msg=f"{name}: {key}")
    assert len(_arrays(serial / "dataset.npz")["actions"]) == 40


def _explore(checkpoint: Path, out: Path, *extra: str) -> Path:
    from rlviz.cli import main

    argv = ["explore", "--checkpoint", str(checkpoint), "--episodes", "2", "--max-steps", "20"]
    argv += ["--seed", "3", "--methods", "gradient", "--map", "pca", "--nmf-features", "2"]
    argv += ["--units", "0", "--optvis-steps", "0", "--no-progress"]
    assert main([*argv, "--out", str(out), *extra]) == 0
    return out / "data"


def _manifest(path: Path) -> dict:
    text = path.read_text()
    manifest = json.loads(text[text.index("=", text.index("R.manifest")) + 1 : text.rindex(";})")])
    manifest.pop("timings")  # wall time, the one thing that may differ
    return manifest


def test_explore_workers_equal_serial(checkpoint, tmp_path, ray_executor):
    serial = _explore(checkpoint, tmp_path / "serial")
    parallel = _explore(checkpoint, tmp_path / "ray", "--workers", "2")
    names = sorted(p.name for p in serial.iterdir())
    assert names == sorted(p.name for p in parallel.iterdir())
    assert {"episode_0.js", "episode_1.js", "frames_1.png", "manifest.js"} <= set(names)
    for name in names:
        if name == "manifest.js":
            assert _manifest(serial / name) == _manifest(parallel / name)
        else:
            assert (serial / name).read_bytes() == (parallel / name).read_bytes(), name
