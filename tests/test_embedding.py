"""StateEmbedding, quality numbers, plots and the `rlviz tsne` command on small synthetic data."""

import numpy as np
import pytest
from PIL import Image

from rlviz.statemap import StateDataset, StateEmbedding, embedding_quality, format_quality
from rlviz.statemap.plots import COLORS, color_values, mosaic_cells, plot_mosaic, plot_state_map

N_CLUSTERS = 4


def clusters(n, seed, dims=32, spread=1.0):
    """Points around 4 fixed centres (the same for every seed): features [n, dims], labels [n]."""
    centres = np.random.default_rng(123).normal(0, 4, (N_CLUSTERS, dims))
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, N_CLUSTERS, n)
    return (centres[labels] + rng.normal(0, spread, (n, dims))).astype(np.float32), labels


@pytest.fixture(scope="module")
def data():
    return clusters(300, seed=0)


@pytest.fixture(scope="module")
def fitted(data):
    features, labels = data
    return StateEmbedding("tsne", perplexity=20, seed=0).fit(
        features, point_data={"value": labels * 0.5}
    )


def span(embedding):
    return float(np.ptp(embedding.embedding_, axis=0).max())


def test_tsne_separates_clusters(fitted, data):
    features, labels = data
    assert fitted.embedding_.shape == (300, 2) and fitted.embedding_.dtype == np.float32
    quality = embedding_quality(features, fitted.embedding_, labels)
    assert quality["trustworthiness"] > 0.9
    assert quality["knn_accuracy_map"] > 0.97 and quality["knn_accuracy_features"] > 0.97
    assert quality["majority_baseline"] < 0.4
    assert "trustworthiness 0.9" in format_quality(quality)
    # Each cluster is a compact island: centroid distances dwarf within-cluster spread.
    centroids = np.stack([fitted.embedding_[labels == c].mean(0) for c in range(N_CLUSTERS)])
    within = max(
        np.linalg.norm(fitted.embedding_[labels == c] - centroids[c], axis=1).mean()
        for c in range(N_CLUSTERS)
    )
    between = min(
        np.linalg.norm(centroids[a] - centroids[b]) for a in range(4) for b in range(a + 1, 4)
    )
    assert between > 3 * within


def test_quality_numbers_can_fail():
    features, labels = clusters(200, seed=5)
    scrambled = np.random.default_rng(0).normal(size=(200, 2))
    quality = embedding_quality(features, scrambled, labels)
    assert quality["trustworthiness"] < 0.7
    assert quality["knn_accuracy_map"] < 0.5 < quality["knn_accuracy_features"]
    # A map that is the data itself is perfectly trustworthy.
    assert embedding_quality(features[:, :2], features[:, :2])["trustworthiness"] == pytest.approx(
        1.0
    )
    # Duplicated states must not count themselves as their own neighbour.
    dup = np.repeat(features[:50], 2, axis=0)
    lab = np.tile([0, 1], 50)  # each state's twin has the other label
    assert embedding_quality(dup, dup[:, :2], lab, k=1)["knn_accuracy_features"] == 0.0


def test_fast_transform_puts_training_states_on_their_spots(fitted, data):
    features, _ = data
    placed = fitted.transform(features, fast=True, batch_size=64)
    assert placed.shape == (300, 2) and placed.dtype == np.float32
    assert np.abs(placed - fitted.embedding_).max() < 1e-3 * span(fitted)


def test_fast_and_accurate_transform_agree(fitted, data):
    new, labels = clusters(60, seed=1)
    fast = fitted.transform(new, fast=True)
    accurate = fitted.transform(new, fast=False)
    assert accurate.shape == (60, 2)
    gap = np.linalg.norm(fast - accurate, axis=1)
    assert np.median(gap) < 0.05 * span(fitted)
    # Both land new states in their own cluster's island.
    _, train_labels = data
    centroids = np.stack([fitted.embedding_[train_labels == c].mean(0) for c in range(N_CLUSTERS)])
    for placed in (fast, accurate):
        nearest = np.linalg.norm(placed[:, None] - centroids[None], axis=2).argmin(1)
        assert (nearest == labels).mean() > 0.95
    # openTSNE transform() must not have moved the reference map.
    np.testing.assert_array_equal(fitted.transform(data[0][:5]), fitted.transform(data[0][:5]))


def test_neighbour_weights_have_the_asked_perplexity():
    from rlviz.statemap.embedding import _neighbour_weights

    d2 = np.sort(np.random.default_rng(0).uniform(1.0, 2.0, (50, 10)), axis=1)
    for perplexity in (1.5, 2.0, 5.0):
        w = _neighbour_weights(d2, perplexity)
        np.testing.assert_allclose(w.sum(1), 1.0)
        entropy = -(w * np.log(w)).sum(1)
        np.testing.assert_allclose(np.exp(entropy), perplexity, rtol=1e-3)
        assert (np.diff(w, axis=1) <= 1e-12).all()  # nearer neighbours weigh more
    idw = _neighbour_weights(d2, None)
    np.testing.assert_allclose(idw, (1 / d2) / (1 / d2).sum(1, keepdims=True))


def test_seeded_fit_is_deterministic(data):
    features, _ = data
    a = StateEmbedding(perplexity=20, seed=3).fit(features[:150]).embedding_
    b = StateEmbedding(perplexity=20, seed=3).fit(features[:150]).embedding_
    c = StateEmbedding(perplexity=20, seed=4).fit(features[:150]).embedding_
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


@pytest.mark.slow
def test_seeded_fit_is_deterministic_with_annoy_neighbours():
    features, _ = clusters(1100, seed=7, dims=16)  # >= 1000 states: approximate neighbours
    a = StateEmbedding(seed=1, n_iter=100).fit(features).embedding_
    b = StateEmbedding(seed=1, n_iter=100).fit(features).embedding_
    np.testing.assert_array_equal(a, b)


def test_save_load_round_trip(tmp_path, fitted, data):
    new, _ = clusters(20, seed=2)
    before_fast, before_accurate = fitted.transform(new), fitted.transform(new, fast=False)
    path = fitted.save(tmp_path / "map.npz")
    assert [p.name for p in tmp_path.iterdir()] == ["map.npz"]
    loaded = StateEmbedding.load(path)
    assert (loaded.method, loaded.perplexity, loaded.seed) == ("tsne", 20.0, 0)
    np.testing.assert_array_equal(loaded.embedding_, fitted.embedding_)
    np.testing.assert_array_equal(loaded.point_data["value"], fitted.point_data["value"])
    np.testing.assert_array_equal(loaded.transform(new), before_fast)
    assert loaded.fast_perplexity == fitted.fast_perplexity == 2.0
    # Accurate placement after load rebuilds openTSNE's index over the stored points (no refit).
    np.testing.assert_allclose(
        loaded.transform(new, fast=False), before_accurate, atol=1e-3 * span(fitted)
    )
    background = loaded.background()
    assert background["xy"].shape == (300, 2) and background["values"] is loaded.point_data["value"]
    x0, x1, y0, y1 = background["bounds"]
    unit = loaded.to_unit(loaded.embedding_)
    assert unit.min() > 0 and unit.max() < 1 and x0 < x1 and y0 < y1


def test_load_rejects_bad_files(tmp_path, fitted):
    path = fitted.save(tmp_path / "map.npz")
    with np.load(path) as d:
        arrays = {k: d[k] for k in d.files}
    arrays["components"] = arrays["components"][:, :5]
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(
        ValueError, match=r"'components' is float32 \(32, 5\), expected float \[P=32, D=32\]"
    ):
        StateEmbedding.load(tmp_path / "bad.npz")
    arrays.pop("header")
    np.savez(tmp_path / "bad2.npz", **arrays)
    with pytest.raises(ValueError, match=r"missing entries \['header'\]"):
        StateEmbedding.load(tmp_path / "bad2.npz")


def test_pca_method_is_the_linear_projection(data):
    features, _ = data
    emb = StateEmbedding("pca", seed=0).fit(features)
    z = (features - features.mean(0)) / features.std(0)
    _, _, vt = np.linalg.svd(z, full_matrices=False)
    expected = z @ vt[:2].T
    # Same axes up to sign.
    for j in range(2):
        assert abs(np.corrcoef(emb.embedding_[:, j], expected[:, j])[0, 1]) > 0.9999
    np.testing.assert_allclose(emb.transform(features, fast=False), emb.embedding_, atol=1e-4)
    assert emb.embedding_[:, 0].var() >= emb.embedding_[:, 1].var()


def test_errors_say_what_to_do(fitted):
    with pytest.raises(RuntimeError, match="not fitted"):
        StateEmbedding().transform(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="features have 7 dims but the map was fitted on 32"):
        fitted.transform(np.zeros((2, 7)))
    with pytest.raises(ValueError, match="method='umap' is not one of"):
        StateEmbedding("umap")
    with pytest.raises(ValueError, match="NaN or inf"):
        StateEmbedding().fit(np.full((10, 3), np.nan))
    with pytest.raises(ValueError, match=r"numeric array \[N, D\]"):
        StateEmbedding().fit(np.zeros(10))
    with pytest.warns(UserWarning, match="perplexity 30.0 is too high for 40 states"):
        StateEmbedding(perplexity=30).fit(clusters(40, seed=3)[0])


# -- plots and CLI -------------------------------------------------------------------------------


def make_dataset(features, labels, with_box=True):
    n = len(features)
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(3), n).astype(np.float32)
    obs = np.zeros((n, 12, 16, 3), np.uint8)
    obs[..., 0] = (labels * 60)[:, None, None]  # thumbnails tell clusters apart
    obs[:, 4:8, 6:10, 1] = 200
    info = {"box_visible": labels % 2 == 0} if with_box else {}
    return StateDataset(
        obs=obs,
        features=features,
        probs=probs,
        actions=(labels % 3).astype(np.int64),
        values=labels.astype(np.float32),
        rewards=np.zeros(n, np.float32),
        steps=np.arange(n) % 25,
        episodes=np.arange(n) // 25,
        time_to_goal=np.where(labels == 3, np.nan, 25 - np.arange(n) % 25).astype(np.float32),
        success=labels != 3,
        info=info,
        meta={"layer": "conv3", "action_names": ["left", "forward", "right"]},
    )


def png_size(path):
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as im:
        return im.size


def test_plots_write_pngs(tmp_path, fitted, data):
    features, labels = data
    dataset = make_dataset(features, labels)
    quality = embedding_quality(features, fitted.embedding_, dataset.actions)
    for color in COLORS:
        path = plot_state_map(
            dataset, fitted.embedding_, color, tmp_path / f"map_{color}.png", quality=quality
        )
        w, h = png_size(path)
        assert w > 300 and h > 300 and path.stat().st_size > 10_000, color
    mosaic = plot_mosaic(
        fitted.embedding_,
        dataset.obs,
        tmp_path / "mosaic.png",
        cols=12,
        labels=dataset.actions,
        label_names=dataset.action_names,
    )
    assert png_size(mosaic)[0] > 500
    assert not list(tmp_path.glob(".*"))  # no temp files left behind
    with pytest.raises(ValueError, match="infos: none. Collect with ground_truth=True"):
        color_values(make_dataset(features, labels, with_box=False), "box_visible")
    with pytest.raises(ValueError, match="unknown colour 'hue'; choose one of value, action"):
        color_values(dataset, "hue")
    values, _, kind, names = color_values(dataset, "action")
    assert kind == "categorical" and names == ["left", "forward", "right"]
    np.testing.assert_array_equal(values, dataset.actions)


def test_mosaic_cells_do_not_overlap():
    xy = np.random.default_rng(0).uniform(0, 10, (500, 2))
    cells = mosaic_cells(xy, (5, 5))
    assert len(cells) == 25 and len(set(cells.values())) == 25
    # The chosen state is the one nearest its cell's centre, and lies in that cell.
    for (row, col), i in cells.items():
        lo, hi = xy.min(0), xy.max(0)
        centre = lo + (hi - lo) * np.array([(col + 0.5) / 5, 1 - (row + 0.5) / 5])
        x_cell = np.minimum(((xy[:, 0] - lo[0]) / (hi - lo)[0] * 5).astype(int), 4) == col
        y_cell = np.minimum(((hi[1] - xy[:, 1]) / (hi - lo)[1] * 5).astype(int), 4) == row
        members = np.flatnonzero(x_cell & y_cell)
        assert i in members
        assert (
            np.linalg.norm(xy[i] - centre)
            <= np.linalg.norm(xy[members] - centre, axis=1).min() + 1e-12
        )


def test_cli_maps_a_saved_dataset(tmp_path, data, capsys):
    from rlviz.cli import main

    features, labels = data
    dataset_path = make_dataset(features[:120], labels[:120]).save(tmp_path / "states.npz")
    out = tmp_path / "out"
    argv = [
        "tsne",
        "--dataset",
        str(dataset_path),
        "--perplexity",
        "15",
        "--color",
        "value",
        "box_visible",
        "--mosaic-cols",
        "8",
        "--out",
        str(out),
    ]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "trustworthiness" in printed and "k-NN acc" in printed
    names = sorted(p.name for p in out.iterdir())
    assert names == [
        "embedding.npz",
        "map_box_visible.png",
        "map_value.png",
        "mosaic.png",
        "quality.json",
    ]
    emb = StateEmbedding.load(out / "embedding.npz")
    assert emb.embedding_.shape == (120, 2) and emb.meta["layer"] == "conv3"
    np.testing.assert_array_equal(emb.point_data["value"], labels[:120].astype(np.float32))
    # Bad input: a clear message and exit status 2, not a traceback.
    assert main(["tsne", "--dataset", str(tmp_path / "nope.npz"), "--out", str(out)]) == 2
    assert "no state dataset at" in capsys.readouterr().err
    assert main(["tsne", "--out", str(out)]) == 2
    assert "exactly one of --checkpoint" in capsys.readouterr().err
    no_box = make_dataset(features[:60], labels[:60], with_box=False).save(tmp_path / "nobox.npz")
    assert (
        main(
            [
                "tsne",
                "--dataset",
                str(no_box),
                "--method",
                "pca",
                "--color",
                "box_visible",
                "--out",
                str(out),
            ]
        )
        == 2
    )
    assert "needs the env's ground truth" in capsys.readouterr().err


@pytest.mark.slow
def test_cli_plays_a_checkpoint_in_miniworld(tmp_path, capsys):
    """The whole command: a saved (untrained) agent plays real BoxReach episodes and gets mapped."""
    import torch

    from rlviz.agents.checkpoint import save_checkpoint
    from rlviz.agents.policy import ActorCritic, Architecture
    from rlviz.cli import main

    torch.manual_seed(0)
    ckpt = save_checkpoint(
        tmp_path / "agent.safetensors",
        ActorCritic(Architecture()),
        {"env_id": "rlviz/BoxReachSmall-v0"},
    )
    out = tmp_path / "map"
    argv = ["tsne", "--checkpoint", str(ckpt), "--episodes", "2", "--max-steps", "40"]
    argv += ["--layer", "conv3", "--perplexity", "10", "--mosaic-cols", "6", "--out", str(out)]
    assert main(argv) == 0, capsys.readouterr().err
    assert "trustworthiness" in capsys.readouterr().out
    dataset = StateDataset.load(out / "dataset.npz")
    assert len(dataset) == 80 and dataset.obs.shape[1:] == (60, 80, 3)
    assert dataset.meta["env_id"] == "rlviz/BoxReachSmall-v0"
    assert dataset.meta["layer"] == "conv3" and dataset.meta["checkpoint"] == str(ckpt)
    assert "box_visible" in dataset.info and not np.isnan(dataset.values).any()
    for name in (
        "map_value",
        "map_action",
        "map_time_to_goal",
        "map_box_visible",
        "map_step",
        "mosaic",
    ):
        assert png_size(out / f"{name}.png")[0] > 300, name
    emb = StateEmbedding.load(out / "embedding.npz")
    # The saved map places the recorded states back on their own spots; a frame seen several
    # times (an untrained agent turning on the spot) lands on the mean of its copies' spots.
    _, group = np.unique(dataset.features, axis=0, return_inverse=True)
    group = group.ravel()
    assert np.bincount(group).max() > 1  # the case is exercised
    placed = emb.transform(dataset.features)
    for g in range(group.max() + 1):
        spots = emb.embedding_[group == g]
        if len(spots) <= emb.n_neighbors:
            np.testing.assert_allclose(
                placed[group == g], spots.mean(0)[None].repeat(len(spots), 0), atol=1e-4
            )
        else:  # more copies than neighbours: the mean of some of them
            assert (placed[group == g] >= spots.min(0) - 1e-4).all()
            assert (placed[group == g] <= spots.max(0) + 1e-4).all()
    assert main([*argv, "--layer", "conv9"]) == 2
    assert "layer 'conv9' not found; available: conv1" in capsys.readouterr().err
