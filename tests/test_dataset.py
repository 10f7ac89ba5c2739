"""StateDataset: built from rollouts with a layer's features, saved and validated as .npz."""

import json
import os
import zipfile

import numpy as np
import pytest
import torch
from torch import nn

from rlviz import PolicyAdapter
from rlviz.hooks import hook_count
from rlviz.rollout import Rollout
from rlviz.statemap import StateDataset

H, W = 12, 16


class TinyActorCritic(nn.Module):
    """The agents' layout in miniature: conv1, conv2, policy, value."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, stride=2, padding=1)
        self.conv2 = nn.Conv2d(4, 6, 3, stride=2, padding=1)
        self.policy = nn.Linear(6 * 3 * 4, 3)
        self.value = nn.Linear(6 * 3 * 4, 1)

    def forward(self, x):
        h = torch.relu(self.conv2(torch.relu(self.conv1(x)))).flatten(1)
        return self.policy(h), self.value(h).squeeze(-1)


def make_rollout(length, success_at=None, seed=0, with_gt=True):
    rng = np.random.default_rng(seed)
    success = np.zeros(length, bool)
    if success_at is not None:
        success[success_at] = True
    infos = {"success": success}
    if with_gt:
        infos["box_visible"] = rng.random(length) > 0.5
        infos["agent_pos"] = rng.normal(size=(length, 2)).astype(np.float32)
        infos["goal_mask"] = rng.random((length, H, W)) > 0.9
    probs = rng.dirichlet(np.ones(3), length).astype(np.float32)
    return Rollout(
        obs=rng.integers(0, 256, (length, H, W, 3), dtype=np.uint8),
        actions=rng.integers(0, 3, length),
        probs=probs,
        values=rng.normal(size=length).astype(np.float32),
        rewards=np.where(success, 1.0, 0.0).astype(np.float32),
        infos=infos,
        terminated=success_at is not None,
        seed=seed,
    )


@pytest.fixture(scope="module")
def adapter():
    torch.manual_seed(0)
    return PolicyAdapter(TinyActorCritic(), action_names=("left", "forward", "right"))


@pytest.fixture(scope="module")
def rollouts():
    return [
        make_rollout(5, success_at=3, seed=1),
        make_rollout(4, None, seed=2),
        make_rollout(6, success_at=5, seed=3),
    ]


@pytest.fixture(scope="module")
def dataset(adapter, rollouts):
    return StateDataset.from_rollouts(
        rollouts, adapter, "conv2", batch_size=4, meta={"env_id": "test/Env", "checkpoint": "none"}
    )


def test_from_rollouts_rows_and_features(dataset, adapter, rollouts):
    assert len(dataset) == 15
    obs = np.concatenate([r.obs for r in rollouts])
    np.testing.assert_array_equal(dataset.obs, obs)
    with torch.no_grad():
        x = adapter.preprocess(obs)
        expected = adapter.model.conv2(torch.relu(adapter.model.conv1(x))).flatten(1).numpy()
        logits, value = adapter.model(x)
    assert dataset.features.shape == (15, 6 * 3 * 4) and dataset.features.dtype == np.float32
    np.testing.assert_allclose(dataset.features, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(dataset.probs, torch.softmax(logits, -1).numpy(), atol=1e-6)
    np.testing.assert_allclose(dataset.values, value.numpy(), atol=1e-6)
    np.testing.assert_array_equal(dataset.actions, np.concatenate([r.actions for r in rollouts]))
    np.testing.assert_array_equal(dataset.episodes, [0] * 5 + [1] * 4 + [2] * 6)
    np.testing.assert_array_equal(dataset.steps, [0, 1, 2, 3, 4, 0, 1, 2, 3, 0, 1, 2, 3, 4, 5])


def test_time_to_goal_and_success(dataset):
    # Episode 0 reaches the goal with the action of step 3; the state after it has no goal ahead.
    np.testing.assert_array_equal(dataset.time_to_goal[:5], [4, 3, 2, 1, np.nan])
    assert np.isnan(dataset.time_to_goal[5:9]).all()  # failed episode
    np.testing.assert_array_equal(dataset.time_to_goal[9:], [6, 5, 4, 3, 2, 1])
    np.testing.assert_array_equal(dataset.success, [True] * 5 + [False] * 4 + [True] * 6)


def test_ground_truth_kept_small_by_default_masks_on_request(adapter, rollouts, dataset):
    assert set(dataset.info) == {"success", "box_visible", "agent_pos"}
    assert dataset.info["agent_pos"].shape == (15, 2)
    with_masks = StateDataset.from_rollouts(
        rollouts, adapter, "conv2", info_keys=["goal_mask", "box_visible"]
    )
    assert set(with_masks.info) == {"goal_mask", "box_visible"}
    assert with_masks.info["goal_mask"].shape == (15, H, W)
    with pytest.raises(ValueError, match="info key 'nope' is missing"):
        StateDataset.from_rollouts(rollouts, adapter, "conv2", info_keys=["nope"])


def test_pooling_batching_hooks_and_mode(adapter, rollouts, dataset):
    model = adapter.model
    model.train()
    before = hook_count(model)
    pooled = StateDataset.from_rollouts(rollouts, adapter, "conv2", pool="avg", batch_size=256)
    assert hook_count(model) == before and model.training
    np.testing.assert_allclose(
        pooled.features, dataset.features.reshape(15, 6, 12).mean(-1), atol=1e-6
    )
    one_batch = StateDataset.from_rollouts(rollouts, adapter, "conv2", batch_size=1000)
    np.testing.assert_allclose(one_batch.features, dataset.features, atol=1e-6)
    with pytest.raises(ValueError, match="layer 'conv9' not found; available: conv1, conv2"):
        StateDataset.from_rollouts(rollouts, adapter, "conv9")
    with pytest.raises(ValueError, match="pool="):
        StateDataset.from_rollouts(rollouts, adapter, "conv2", pool="max")
    with pytest.raises(ValueError, match="different shapes"):
        odd = make_rollout(3)
        odd.obs = odd.obs[:, :8]
        StateDataset.from_rollouts([rollouts[0], odd], adapter, "conv2")


def test_round_trip(tmp_path, dataset):
    path = dataset.save(tmp_path / "sub" / "states.npz")
    assert path == tmp_path / "sub" / "states.npz"
    assert [p.name for p in path.parent.iterdir()] == ["states.npz"]  # no temp files left
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # not the temp file's private 0600
    loaded = StateDataset.load(path)
    for name, a in _fields(dataset).items():
        b = getattr(loaded, name)
        assert a.dtype == b.dtype, name
        np.testing.assert_array_equal(a, b)
    assert set(loaded.info) == set(dataset.info)
    np.testing.assert_array_equal(loaded.info["agent_pos"], dataset.info["agent_pos"])
    assert loaded.meta["layer"] == "conv2" and loaded.meta["env_id"] == "test/Env"
    assert loaded.meta["checkpoint"] == "none" and loaded.meta["rlviz_version"]
    assert loaded.action_names == ("left", "forward", "right")
    # Saving again over the file replaces it whole.
    dataset.subset(slice(0, 5)).save(path)
    assert len(StateDataset.load(path)) == 5


def _rewrite(src, dst, change):
    with np.load(src, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    change(arrays)
    np.savez(dst, **arrays)
    return dst


def test_load_says_what_is_wrong(tmp_path, dataset):
    good = dataset.save(tmp_path / "good.npz")
    cases = [
        (lambda a: a.pop("features"), r"missing entries \['features'\]"),
        (
            lambda a: a.update(obs=a["obs"].astype(np.float32)),
            r"'obs' is float32 .* expected uint8 \[N, H, W, C\]",
        ),
        (
            lambda a: a.update(values=a["values"][:-1]),
            r"'values' has 14 rows but 'obs' has 15 states",
        ),
        (
            lambda a: a.update(features=a["features"][:, :, None]),
            r"'features' is float32 \(15, 72, 1\), expected float \[N, D\]",
        ),
        (lambda a: a.update(meta=np.array("{not json")), "'meta' is not valid JSON"),
        (
            lambda a: a.update(meta=np.array(json.dumps({"format": "other"}))),
            "metadata format is 'other'",
        ),
        (
            lambda a: a.update(**{"info.box_visible": a["info.box_visible"][:3]}),
            r"'info.box_visible' is bool \(3,\)",
        ),
        (lambda a: a.update(actions=a["actions"] + 5), "'actions' range"),
    ]
    for i, (change, message) in enumerate(cases):
        bad = _rewrite(good, tmp_path / f"bad{i}.npz", change)
        with pytest.raises(ValueError, match=message):
            StateDataset.load(bad)


def test_load_refuses_pickles_and_junk(tmp_path, dataset):
    good = dataset.save(tmp_path / "good.npz")
    pickled = _rewrite(
        good, tmp_path / "pickled.npz", lambda a: a.update(features=np.array([object()] * 15))
    )
    with pytest.raises(ValueError, match="refusing"):
        StateDataset.load(pickled)
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not a readable .npz"):
        StateDataset.load(junk)
    with pytest.raises(FileNotFoundError, match="no state dataset at"):
        StateDataset.load(tmp_path / "missing.npz")
    assert zipfile.is_zipfile(good)


def test_constructor_validates(dataset):
    with pytest.raises(ValueError, match="'probs' rows do not sum to 1"):
        StateDataset(**{**_fields(dataset), "probs": dataset.probs * 2})
    with pytest.raises(ValueError, match="NaN or inf"):
        features = dataset.features.copy()
        features[0, 0] = np.nan
        StateDataset(**{**_fields(dataset), "features": features})


def _fields(dataset):
    """Every array field of ``dataset`` by name (spelled out: the test checks the format)."""
    names = (
        "obs",
        "features",
        "probs",
        "actions",
        "values",
        "rewards",
        "steps",
        "episodes",
        "time_to_goal",
        "success",
    )
    return {n: getattr(dataset, n) for n in names}


def test_layer_features_match_the_dataset(adapter, rollouts, dataset):
    from rlviz.statemap import layer_features

    feats = layer_features(adapter, rollouts[1].obs, "conv2", batch_size=3)
    np.testing.assert_allclose(feats, dataset.features[5:9], atol=1e-6)
    assert layer_features(adapter, rollouts[1].obs[0], "conv2").shape == (1, 72)
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        layer_features(adapter, rollouts[1].obs, "conv2", batch_size=0)


def test_subset(dataset):
    part = dataset.subset(dataset.episodes == 2)
    assert len(part) == 6 and (part.episodes == 2).all()
    np.testing.assert_array_equal(part.info["agent_pos"], dataset.info["agent_pos"][9:])


@pytest.mark.slow
def test_from_real_boxreach_rollouts():
    """Real MiniWorld episodes: ground truth lines up and probs match what the agent acted on."""
    import gymnasium as gym

    from rlviz import envs  # noqa: F401
    from rlviz.rollout import collect

    model = TinyActorCritic()
    model.policy = nn.Linear(6 * 15 * 20, 3)  # 60x80 frames -> conv2 maps of 15x20
    model.value = nn.Linear(6 * 15 * 20, 1)
    net = PolicyAdapter(model, action_names=("left", "forward", "right"))
    env = gym.make("rlviz/BoxReachSmall-v0", ground_truth=True)
    try:
        rollouts = list(collect(env, net, 2, seed=0, max_steps=15))
    finally:
        env.close()
    data = StateDataset.from_rollouts(
        rollouts, net, "conv2", meta={"env_id": "rlviz/BoxReachSmall-v0"}
    )
    assert len(data) == sum(map(len, rollouts))
    assert data.obs.shape[1:] == (60, 80, 3)
    assert {"box_visible", "agent_pos", "agent_dir", "box_pos", "success"} <= set(data.info)
    assert "goal_mask" not in data.info  # masks only on request
    np.testing.assert_allclose(data.probs, np.concatenate([r.probs for r in rollouts]), atol=1e-5)
    np.testing.assert_allclose(data.values, np.concatenate([r.values for r in rollouts]), atol=1e-5)
    # box_visible is the goal mask being non-empty, state by state.
    masks = np.concatenate([r.infos["goal_mask"] for r in rollouts])
    np.testing.assert_array_equal(data.info["box_visible"], masks.any((1, 2)))
