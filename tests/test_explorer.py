"""The explorer's data export: GAE, events, sprite sheets, NMF layer attribution, report files."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest
import torch
from helpers import SquareEnv, TinyGapNet, tiny_policy
from PIL import Image

from rlviz import PolicyAdapter
from rlviz.explorer import explore, factorize, gae, layer_attribution, nmf_attribution
from rlviz.explorer.episode import fit_maps
from rlviz.explorer.nmf import direction_objective
from rlviz.explorer.scalars import blocked_steps, caption_kind, entropy, structured_events
from rlviz.explorer.sprites import quantize, sheet


def read_script(path) -> dict:
    """The JSON a data script assigns (``...R.key=<json>;})(...)``)."""
    text = path.read_text()
    start = text.index("=", text.index("R.episodes=R.episodes||{};R.") + 28) + 1
    return json.loads(text[start : text.rindex(";})")])


def decode(url: str) -> np.ndarray:
    assert url.startswith("data:image/png;base64,")
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))))


# ------------------------------------------------------------------------------------ scalars


def test_gae_matches_a_hand_computation():
    rewards, values = np.array([0.0, 0.0, 1.0]), np.array([0.5, 0.6, 0.7])
    adv, ret = gae(rewards, values, gamma=0.9, lam=0.8, terminated=True)
    # delta = (0.04, 0.03, 0.3); A2 = 0.3, A1 = 0.03 + 0.72 * 0.3, A0 = 0.04 + 0.72 * A1
    np.testing.assert_allclose(adv, [0.04 + 0.72 * 0.246, 0.246, 0.3], atol=1e-6)
    np.testing.assert_allclose(ret, adv + values, atol=1e-6)
    cut, _ = gae(rewards, values, gamma=0.9, lam=0.8, terminated=False)  # bootstrap: last V
    assert cut[2] == pytest.approx(1.0 + 0.9 * 0.7 - 0.7)
    with pytest.raises(ValueError, match="rewards and values"):
        gae(rewards, values[:2])


def test_entropy_blocked_steps_and_events():
    assert entropy(np.array([[0.5, 0.5], [1.0, 0.0]])) == pytest.approx([np.log(2), 0.0], abs=1e-6)
    pos = np.array([[0, 0], [0, 0], [1, 0], [1, 0]], np.float32)
    blocked = blocked_steps(np.array([1, 1, 0, 1]), pos, ("left", "forward", "right"))
    assert blocked.tolist() == [True, False, False, False]  # step 2 turned; step 3 unknown
    assert not blocked_steps(np.array([1, 1]), pos[:2], ("a0", "a1")).any()  # no "forward"
    events = structured_events([["box came into view"], [], ["reached the box"]], blocked[:3])
    assert [(e["t"], e["kind"]) for e in events] == [(0, "seen"), (0, "blocked"), (2, "reached")]
    assert caption_kind("lost sight of the box") == "lost"
    assert caption_kind("time limit: episode ends") == "end"


def test_sprite_sheet_layout_and_quantize():
    tiles = np.arange(5 * 2 * 3, dtype=np.uint8).reshape(5, 2, 3)
    grid = sheet(tiles, cols=2)
    assert grid.shape == (3 * 2, 2 * 3)
    for t in range(5):  # tile t at row t // cols, column t % cols
        r, c = divmod(t, 2)
        np.testing.assert_array_equal(grid[r * 2 : r * 2 + 2, c * 3 : c * 3 + 3], tiles[t])
    assert quantize(np.array([0.0, 0.5, 1.0])).tolist() == [0, 128, 255]
    assert quantize(np.array([-1.0, 0.0, 1.0]), signed=True).tolist() == [0, 128, 255]
    with pytest.raises(ValueError, match="uint8"):
        sheet(tiles.astype(np.float32))
    maps = np.arange(16, dtype=np.float32).reshape(1, 4, 4)
    assert fit_maps(maps, (2, 2))[0].tolist() == [[2.5, 4.5], [10.5, 12.5]]  # block means


# ---------------------------------------------------------------------------------------- NMF


def test_factorize_reconstructs_low_rank_attribution():
    rng = np.random.default_rng(0)
    w, h = rng.random((6 * 4 * 5, 2)), rng.random((2, 7))
    x = (w @ h).reshape(6, 4, 5, 7).transpose(0, 3, 1, 2)  # [N, C, h, w], rank 2
    maps, directions, error = factorize(x, n_features=2)
    assert maps.shape == (6, 2, 4, 5) and directions.shape == (2, 7)
    assert error < 1e-2
    np.testing.assert_allclose(np.linalg.norm(directions, axis=1), 1.0, atol=1e-5)
    rebuilt = np.einsum("nfhw,fc->nchw", maps, directions)
    assert np.linalg.norm(rebuilt - x) / np.linalg.norm(x) < 1e-2
    with pytest.raises(ValueError, match="n_features"):
        factorize(x, n_features=8)


def test_layer_attribution_is_exact_before_a_linear_head():
    # value = w . mean(act) + b, so sum(act * dV/dact) = V - b exactly.
    torch.manual_seed(0)
    model = TinyGapNet(inplace=True)
    adapter = PolicyAdapter(model)
    obs = np.random.default_rng(1).integers(0, 255, (5, 12, 16, 3), dtype=np.uint8)
    attr = layer_attribution(adapter, obs, "relu2", "value", batch_size=2)
    assert attr.shape == (5, 8, 6, 8)
    value = adapter(obs).value.numpy()
    np.testing.assert_allclose(attr.sum((1, 2, 3)), value - model.value.bias.item(), atol=1e-5)


def test_nmf_attribution_and_its_direction_objective():
    adapter = tiny_policy()
    obs = np.random.default_rng(2).integers(0, 255, (6, 30, 40, 3), dtype=np.uint8)
    result = nmf_attribution(adapter, obs, "conv2.0", target=1, n_features=3, keep_raw=True)
    assert result.maps.shape == (6, 3, 8, 10) and result.directions.shape == (3, 8)
    assert (result.maps >= 0).all() and result.raw.shape == (6, 8, 8, 10)
    assert result.upsampled((30, 40)).shape == (6, 3, 30, 40)
    objective = direction_objective("conv2.0", result.directions[0])
    assert objective.layers == frozenset({"conv2.0"})


# ------------------------------------------------------------------------------------- export


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("explorer")
    summary = explore(
        SquareEnv(max_steps=12),
        tiny_policy(),
        out=out,
        episodes=2,
        methods=["gradient", "gradcam"],
        map_method="pca",
        nmf_features=2,
        units_per_layer=1,
        optvis_steps=2,
    )
    return out, summary


def test_report_files_and_shapes(report):
    out, summary = report
    assert summary.path == out / "index.html" and summary.episodes == 2
    assert {p.name for p in (out / "assets").iterdir()} == {"explorer.js", "explorer.css"}
    manifest = read_script(out / "data" / "manifest.js")
    assert [e["T"] for e in manifest["episodes"]] == [12, 12]
    assert manifest["map"] == {"h": 15, "w": 20} and manifest["frame"] == {"h": 30, "w": 40}
    assert len(manifest["statemap"]["xy"]) == 24 and manifest["statemap"]["ep"][12] == 1
    assert len(manifest["nmf"]["features"]) == 2
    assert [layer["name"] for layer in manifest["network"]["layers"]] == ["conv1.0", "conv2.0"]
    record = read_script(out / "data" / "episode_0.js")
    assert set(record["maps"]) == {
        "gradient|taken", "gradcam|taken", "gradient|value", "gradcam|value",
        "gradient|a0", "gradient|a1", "gradient|a2",
    }  # fmt: skip
    sheet_img = decode(record["maps"]["gradient|taken"])
    assert sheet_img.dtype == np.uint8 and sheet_img.shape == (15, 12 * 20)  # one row of 12
    assert len(record["nmf"]) == 2 and decode(record["nmf"][0]).shape == (15, 240)
    frames = np.asarray(Image.open(out / "data" / "frames_0.png"))
    assert frames.shape == (30, 12 * 40, 3)
    for key in ("probs", "values", "rewards", "entropy", "advantages", "returns", "actions"):
        assert len(record[key]) == 12, key
    adv, _ = gae(
        np.array(record["rewards"]), np.array(record["values"]), terminated=record["terminated"]
    )
    np.testing.assert_allclose(record["advantages"], adv, atol=2e-4)  # rounded to 4 places
    assert any(e["kind"] == "seen" for e in record["events"]) or not any(record["visible"])


def test_explore_refuses_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="unknown attribution method"):
        explore(SquareEnv(), tiny_policy(), out=tmp_path, methods=["nope"])
    with pytest.raises(ValueError, match="unknown target"):
        explore(SquareEnv(), tiny_policy(), out=tmp_path, targets=["taken", "q"])
    with pytest.raises(ValueError, match="episodes"):
        explore(SquareEnv(), tiny_policy(), out=tmp_path, episodes=0)
    assert not (tmp_path / "index.html").exists()


# ------------------------------------------------------------------------------------ memory


def test_stacked_policy_exports_frames_per_frame_maps_and_memory(tmp_path):
    from explorer_helpers import STACK_LAYOUT, stacked_env, stacked_policy

    from rlviz.explain import explain, frame_share
    from rlviz.memory import memory_reliance
    from rlviz.targets import TakenAction

    adapter = stacked_policy()
    explore(
        stacked_env(max_steps=6),
        adapter,
        out=tmp_path,
        episodes=1,
        methods=["gradcam", "gradient"],  # per-frame maps take the input method
        map_method="pca",
        statemap=False,
        nmf_features=2,
        units_per_layer=1,
        optvis_steps=2,
    )
    record = read_script(tmp_path / "data" / "episode_0.js")
    stack = record["stack"]
    assert (stack["k"], stack["cols"], stack["method"]) == (2, 8, "gradient")
    assert set(stack["maps"]) == {"taken", "value"} == set(stack["shares"])
    frames = np.asarray(Image.open(tmp_path / stack["file"]))
    assert frames.shape == (2 * 30, 8 * 40, 3)  # 6 steps x 2 frames: rows of 8 columns
    # tile t * K + j is frame j of step t: step 3's oldest frame is step 2's newest frame
    newest = np.asarray(Image.open(tmp_path / "data" / "frames_0.png"))
    np.testing.assert_array_equal(frames[:30, 6 * 40 : 7 * 40], newest[:, 2 * 40 : 3 * 40])
    assert decode(stack["maps"]["taken"]).shape == (2 * 15, 8 * 20)
    # shares are those of explain()'s per-frame maps, memory what rlviz.memory says, on the
    # same observations (replayed: the env is deterministic given its seed and the actions)
    actions = np.array(record["actions"])
    env = stacked_env(max_steps=6)
    obs = [env.reset(seed=record["seed"])[0]]
    obs += [env.step(a)[0] for a in actions[:-1]]
    obs = np.stack(obs)
    np.testing.assert_array_equal(STACK_LAYOUT.display_frames(obs)[:, -1], newest_tiles(newest, 6))
    taken = TakenAction(actions)
    maps = explain(adapter, obs, "gradient", target=taken, per_frame=True)["gradient"]
    np.testing.assert_allclose(stack["shares"]["taken"], frame_share(maps), atol=1e-3)
    reliance = memory_reliance(adapter, obs, taken)
    np.testing.assert_allclose(record["memory"]["share"], reliance.share, atol=1e-4)
    assert len(record["memory"]["kl"]) == record["T"] == 6


def newest_tiles(sheet_img: np.ndarray, n: int, w: int = 40) -> np.ndarray:
    """The first ``n`` tiles of a one-row frames sheet, [n, H, w, 3]."""
    return np.stack([sheet_img[:, t * w : (t + 1) * w] for t in range(n)])
