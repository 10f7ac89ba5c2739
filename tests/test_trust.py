"""rlviz trust (rlviz.faithfulness): randomisation, Efficient MPRT and deletion equal Quantus's on the
same maps and model; a blank map cannot pass; a randomly initialised network fails checks the
shipped agent passes; the command's files and bad inputs."""

import json
import warnings
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from torch import nn

import rlviz
from rlviz import ActionLogit, PolicyAdapter
from rlviz.faithfulness import checks, methods_from
from rlviz.faithfulness.verdict import judge, verdict
from rlviz.methods import AttributionMethod
from rlviz.metrics import deletion_curve

H, W = 8, 10


def tiny_model(seed=0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(6, 8, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(8 * 4 * 5, 3),
    ).eval()


@pytest.fixture(scope="module")
def batch():
    rng = np.random.default_rng(0)
    x = rng.random((6, 3, H, W)).astype(np.float32)
    y = rng.integers(0, 3, 6)
    return x, y


# Grad-CAM unrectified: an all-zero map (ReLU'd Grad-CAM of a tiny net often is one) makes
# Quantus's batched Spearman fail (scipy returns one NaN instead of a matrix); ours gives NaN.
OPTIONS = {"gradcam": {"relu": False}}


def rlviz_explainer(name):
    """An ``explain_func`` in Quantus's signature that runs an rlviz method on the given model."""

    def explain(model, inputs, targets, **_):
        adapter = PolicyAdapter(model)
        x = torch.as_tensor(inputs)
        maps = rlviz.explain(
            adapter, x, [name], target=ActionLogit(targets), **OPTIONS.get(name, {})
        )
        return maps[name][:, None]  # [B, 1, H, W], as Quantus's own explainers return

    return explain


def test_spearman_matches_scipy_with_ties_and_is_nan_for_blank_maps():
    from scipy.stats import spearmanr

    rng = np.random.default_rng(1)
    a = rng.integers(0, 4, (5, 30)).astype(float)  # many ties
    b = a + rng.normal(0, 1, a.shape)
    ours = checks.spearman(a, b)
    theirs = [spearmanr(u, v)[0] for u, v in zip(a, b, strict=True)]
    np.testing.assert_allclose(ours, theirs, atol=1e-12)
    assert np.isnan(checks.spearman(np.zeros((1, 30)), b[:1]))[0]


@pytest.mark.parametrize("name", ["gradient", "gradcam", "occlusion"])
def test_mprt_equals_quantus(batch, name):
    quantus = pytest.importorskip("quantus")
    x, y = batch
    model = tiny_model()
    explain = rlviz_explainer(name)
    a = explain(model, x, y)
    metric = quantus.MPRT(layer_order="top_down", seed=42, disable_warnings=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = metric(model=model, x_batch=x, y_batch=y, a_batch=a, explain_func=explain)
    adapter = PolicyAdapter(model)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ours, _ = checks.mprt(model, lambda: explain(adapter.model, x, y), a, order="top_down", seed=42)
    assert list(ours) == [k for k in theirs if k != "original"] == ["5", "2", "0"]
    for layer, rho in ours.items():
        np.testing.assert_allclose(rho, theirs[layer], atol=1e-10, err_msg=layer)
    # The trained weights are back, and the cascade really moved the maps.
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert np.mean(ours["0"]) < 0.9


@pytest.mark.parametrize("name", ["gradient", "gradcam"])
def test_efficient_mprt_equals_quantus(batch, name):
    quantus = pytest.importorskip("quantus")
    x, y = batch
    model = tiny_model()
    explain = rlviz_explainer(name)
    a = explain(model, x, y)
    metric = quantus.EfficientMPRT(disable_warnings=True)  # bottom-up, full randomisation only
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = metric(model=model, x_batch=x, y_batch=y, a_batch=a, explain_func=explain)
    _, last = checks.mprt(
        model, lambda: explain(model, x, y), a, order="bottom_up", seed=42, keep_last=True
    )
    np.testing.assert_allclose(checks.efficient_mprt(a, last), theirs, rtol=1e-12)
    # Top-down ends in the same fully randomised model (each layer reset from seed + 1).
    _, last_td = checks.mprt(model, lambda: explain(model, x, y), a, keep_last=True)
    np.testing.assert_array_equal(last, last_td)


def test_deletion_equals_quantus_region_perturbation(batch):
    quantus = pytest.importorskip("quantus")
    x, y = batch
    model = tiny_model()
    maps = np.random.default_rng(2).random((len(x), H, W)).astype(np.float32)  # no ties
    metric = quantus.RegionPerturbation(
        patch_size=1,
        regions_evaluation=H * W,
        order="morf",
        perturb_baseline=0.0,
        normalise=False,
        abs=False,
        disable_warnings=True,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = np.asarray(
            metric(model=model, x_batch=x, y_batch=y, a_batch=maps[:, None], softmax=True)
        )
    adapter = PolicyAdapter(model)
    curve = deletion_curve(adapter, torch.as_tensor(x), maps, target=y, steps=H * W, fill=0.0)
    # Quantus records p(x) - p(x with the first k regions removed), k = 1 .. H*W.
    np.testing.assert_allclose(curve[:, :1] - curve[:, 1:], theirs, atol=1e-6)
    # rlviz trust tracks log pi of the same curve.
    d, _ = checks.log_prob_curves(adapter, torch.as_tensor(x), maps, y, 0.0, steps=H * W)
    np.testing.assert_allclose(d, np.log(curve), atol=1e-5)


class BlankMap(AttributionMethod):
    """A map that is 0 everywhere: says nothing, so it must not pass randomisation."""

    name = "blank"

    def _maps(self, adapter, x, target, request):
        return x.new_zeros(x.shape[0], x.shape[2], x.shape[3])


def test_blank_map_cannot_pass_randomisation(batch):
    x, y = batch
    blank = np.zeros((len(x), H, W), np.float32)
    assert np.isnan(
        checks.efficient_mprt(blank, np.random.default_rng(0).random(blank.shape))
    ).all()
    row = _row_of(BlankMap(), x, y)
    assert row["checks"]["randomisation"] is False
    assert row["randomisation"]["blank_frames"] == len(x)
    assert "fails randomisation" in row["verdict"]


def _row_of(method, x, y):
    from rlviz.faithfulness.run import Frames, _Baselines, score_row

    adapter = PolicyAdapter(tiny_model())
    frames = Frames(torch.as_tensor(x), np.asarray(y), None, None, 1, len(x))
    return score_row(adapter, frames, method, "taken", _Baselines(adapter, frames, 5, 64, 0))


def test_judge_thresholds_and_verdict_line():
    row = {
        "row": "m",
        "randomisation": {"rho_output": 0.2, "rho_full": 0.1, "emprt": 0.3},
        "random_logit_rho": 0.7,
        "deletion": {"gain": 0.5, "se": 0.1},
        "insertion": {"gain": 0.1, "se": 0.1},
        "ground_truth": None,
    }
    row["checks"] = judge(row)
    assert row["checks"] == {
        "randomisation": True,
        "random_logit": False,
        "deletion": True,
        "insertion": False,
        "ground_truth": None,
    }
    assert verdict(row) == "m: fails random logit (rho 0.70); insertion (gain +0.100)"
    row["randomisation"]["emprt"] = float("nan")  # a blank map
    assert judge(row)["randomisation"] is False


CHECKPOINT = Path(__file__).resolve().parents[1] / "agents" / "checkpoints" / "boxreach.safetensors"


@pytest.fixture(scope="module")
def agent_and_random():
    """Occlusion and Grad-CAM rows of the shipped agent and of a random init of its architecture,
    on the same frames (the agent's recorded episode, goal-box masks from the env)."""
    from rlviz.cli.common import load_policy, policy_env
    from rlviz.cli.trust import _random_init
    from rlviz.faithfulness.run import _Baselines, record, score_row

    loaded = load_policy(CHECKPOINT)
    env = policy_env(loaded)
    try:
        agent, frames = record(env, loaded.adapter, 1, 24, seed=0, mask_key="goal_mask")
    finally:
        env.close()
    assert frames.masks.any(axis=(1, 2)).sum() >= 10  # the box is in view in most frames
    rows = {}
    for label, adapter in (("agent", agent), ("random", _random_init(loaded, 0).adapter)):
        baselines = _Baselines(adapter, frames, 20, 256, 0)
        rows[label] = {
            m: score_row(adapter, frames, m, "taken", baselines, mask_key="goal_mask")
            for m in ("occlusion", "gradcam")
        }
    return rows


@pytest.mark.slow
def test_random_network_fails_what_the_agent_passes(agent_and_random):
    agent, random = agent_and_random["agent"], agent_and_random["random"]
    # Occlusion of the trained agent passes every check here.
    assert agent["occlusion"]["faithful"] is True
    assert agent["occlusion"]["checks"]["ground_truth"] is True
    assert agent["occlusion"]["checks"]["deletion"] is True
    # An untrained network's maps do not get more complex when it is randomised again (its
    # occlusion map still ranks the pixels its own, nearly flat, policy reacts to, and the red box
    # draws its maps too: deletion and ground truth are not what tells it apart here).
    for method in ("occlusion", "gradcam"):
        assert agent[method]["checks"]["randomisation"] is True
        assert random[method]["checks"]["randomisation"] is False
        assert (
            random[method]["randomisation"]["emprt"] < 0.1 < agent[method]["randomisation"]["emprt"]
        )
    assert agent["gradcam"]["checks"]["ground_truth"] is True


@pytest.mark.slow
def test_trust_command_files_and_methods_from(tmp_path, agent_and_random):
    from rlviz.cli.trust import main
    from rlviz.faithfulness import TrustReport, write

    argv = ["--frames", "12", "--episodes", "1", "--methods", "occlusion,perturbation"]
    assert main([*argv, "--out", str(tmp_path)]) == 0
    header = (tmp_path / "trust.csv").read_text().splitlines()[0].split(",")
    assert header[:4] == ["row", "method", "target", "ms_per_frame"]
    assert (tmp_path / "trust.png").read_bytes()[:4] == b"\x89PNG"
    data = json.loads((tmp_path / "trust.json").read_text())
    assert data["thresholds"]["rho"] == 0.5 and data["settings"]["frames"] == 12
    assert [r["row"] for r in data["rows"]] == ["occlusion", "perturbation", "perturbation[logits]"]
    assert methods_from(tmp_path / "trust.json") == ["occlusion"]
    # Videos and the explorer take their maps from it.
    from rlviz.cli import explore, video
    from rlviz.cli.trust import methods_from_option

    for parser in (video.build_parser(), explore.build_parser()):
        argv = ["--checkpoint", str(CHECKPOINT), "--methods-from", str(tmp_path / "trust.json")]
        assert methods_from_option(parser.parse_args(argv)) == ["occlusion"]
    # A trust file where no method passes says so instead of choosing one.
    write(TrustReport(list(agent_and_random["random"].values()), {}), tmp_path / "random")
    with pytest.raises(ValueError, match="no method passes"):
        methods_from(tmp_path / "random" / "trust.json")


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--methods", "nope"], "unknown method 'nope'"),
        (["--methods", ","], "--methods is empty"),
        (["--targets", "value"], "--targets 'value'"),
        (["--frames", "1"], "expected an integer >= 2"),
        (["--steps", "x"], "expected an integer"),
        (["--checkpoint", "missing.safetensors"], "does not exist"),
    ],
)
def test_bad_inputs_one_line(capsys, tmp_path, argv, message):
    from rlviz.cli.trust import main

    argv = [*argv, "--out", str(tmp_path)]
    with pytest.raises(SystemExit) if "--frames" in argv or "--steps" in argv else _no_raise():
        assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) <= 2


class _no_raise:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


@pytest.mark.parametrize("name", ["video", "explore"])
def test_methods_from_a_bad_file_is_one_line(capsys, tmp_path, name):
    import importlib

    main = importlib.import_module(f"rlviz.cli.{name}").main
    (tmp_path / "trust.json").write_text("{not json")
    for path in (tmp_path / "missing.json", tmp_path / "trust.json"):
        argv = ["--checkpoint", str(CHECKPOINT), "--methods-from", str(path)]
        assert main([*argv, "--out", str(tmp_path / "o")]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"rlviz {name}: error: --methods-from: cannot read a trust file")
        assert len(err.splitlines()) == 1


@pytest.mark.slow
def test_bad_mask_key_and_out(capsys, tmp_path):
    from rlviz.cli.trust import main

    assert main(["--mask-key", "nope", "--out", str(tmp_path)]) == 2
    assert "--mask-key 'nope' is not in" in capsys.readouterr().err
    (tmp_path / "file").write_text("x")
    assert main(["--out", str(tmp_path / "file")]) == 2
    assert "is a file" in capsys.readouterr().err


class PatchMask(gym.Wrapper):
    """What a user writes for ground truth in their own env: the red patch's pixels in info."""

    def _with_mask(self, obs, info):
        return obs, {**info, "patch_mask": obs[..., 0] == 220}

    def reset(self, **kwargs):
        return self._with_mask(*self.env.reset(**kwargs))

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        return (*self._with_mask(obs, info)[:1], reward, terminated, truncated,
                self._with_mask(obs, info)[1])  # fmt: skip


def test_any_env_with_a_user_info_key(tmp_path):
    from helpers import ColourPatchEnv, tiny_policy

    env = PatchMask(ColourPatchEnv(size=32, horizon=6))
    report = rlviz.trust(
        tiny_policy(), env, ["gradient", "occlusion"], episodes=2, frames=10,
        mask_key="patch_mask", out=tmp_path, options={"occlusion": {"window": 8, "stride": 8}},
    )  # fmt: skip
    assert [r["row"] for r in report.rows] == ["gradient", "occlusion"]
    for row in report.rows:
        gt = row["ground_truth"]
        assert gt["key"] == "patch_mask" and gt["frames"] == 10
        assert 0 < gt["share"] < 1 and 0 <= gt["pointing"] <= 1
        assert row["checks"]["ground_truth"] is not None and row["ms_per_frame"] > 0
    assert sorted(p.name for p in report.paths) == ["trust.csv", "trust.json", "trust.png"]
    with pytest.raises(KeyError, match="'nope' is not in the env's info"):
        rlviz.trust(tiny_policy(), env, ["gradient"], episodes=1, frames=4, mask_key="nope")
    # "auto" finds no goal_mask here: no ground truth, the other checks as usual.
    report = rlviz.trust(tiny_policy(), env, ["gradient"], episodes=1, frames=4)
    assert report.rows[0]["ground_truth"] is None and report.settings["mask_key"] is None


@pytest.mark.slow
def test_sb3_atari_agent(tmp_path):
    """An SB3 PPO CnnPolicy on ALE Pong (4 stacked 84x84 frames through its VecEnv): every layer
    of SB3's policy is randomised, deletion runs on the stacked input."""
    pytest.importorskip("ale_py")
    pytest.importorskip("stable_baselines3")
    from test_atari import pong_env

    from rlviz.gym_env import OneEnv

    venv = pong_env()
    try:
        import stable_baselines3 as sb3

        model = sb3.PPO("CnnPolicy", venv, n_steps=16, batch_size=16, seed=0, device="cpu",
                        policy_kwargs={"features_extractor_kwargs": {"features_dim": 32}})  # fmt: skip
        adapter = PolicyAdapter.from_sb3(model)
        report = rlviz.trust(
            adapter, OneEnv(venv), ["gradient", "gradcam"], episodes=1, frames=6,
            max_steps=12, steps=5,
        )  # fmt: skip
    finally:
        venv.close()
    row = report.rows[0]
    layers = list(row["randomisation"]["layers"])
    assert layers[0] == "value_net" and layers[1] == "action_net"
    assert row["randomisation"]["output_layer"] == "action_net"
    assert any(name.startswith("features_extractor.cnn") for name in layers)
    assert len(row["deletion"]["curve"]) == 6 and report.settings["frames"] == 6


def test_recurrent_policy_is_explained_with_its_states():
    """A recurrent toy that acts on its memory only: explained with the state entering each step,
    its current-frame maps are blank, so randomisation cannot pass."""
    from helpers import SquareEnv
    from test_recurrent import toy_adapter

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the all-zero map warns, as it should
        report = rlviz.trust(
            toy_adapter("memory"), SquareEnv(max_steps=6, goal=False), ["gradient"],
            episodes=2, frames=8,
        )  # fmt: skip
    row = report.rows[0]
    assert report.settings["frames"] == 8
    assert row["randomisation"]["blank_frames"] == 8
    assert row["checks"]["randomisation"] is False


OCATARI_PONG = Path(__file__).resolve().parent / "data" / "ocatari_pong.npz"


def test_ocatari_boxes_mapped_onto_the_84x84_observation():
    """Real OCAtari boxes (Pong, read from RAM; benchmarks/ocatari_fixture.py): every pixel of the
    84x84 observation (SB3's WarpFrame: gray, INTER_AREA) that an object changes is inside its
    mapped mask, and the mask is no bigger than the box's footprint."""
    cv2 = pytest.importorskip("cv2")
    from rlviz.faithfulness.masks import box_mask

    data = np.load(OCATARI_PONG)  # plain arrays: no pickle
    frames, boxes = data["frames"], data["boxes"]

    def warp(frame):
        gray = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
        return cv2.resize(gray, (84, 84), interpolation=cv2.INTER_AREA)

    changed_somewhere = 0
    for frame, frame_boxes in zip(frames, boxes, strict=True):
        background = frame[100, 80]  # Pong's field colour, away from the walls
        for x, y, w, h in frame_boxes:
            if w == 0:
                continue
            removed = frame.copy()
            removed[y : y + h, x : x + w] = background
            changed = warp(frame) != warp(removed)
            mask = box_mask([(x, y, w, h)], (210, 160), (84, 84))
            assert not (changed & ~mask).any(), (x, y, w, h)
            assert mask.sum() <= (np.ceil(w * 84 / 160) + 1) * (np.ceil(h * 84 / 210) + 1)
            changed_somewhere += bool(changed.any())
    assert changed_somewhere >= len(frames)  # the paddles and the ball really show


def test_object_masks_wrapper_through_a_resize(tmp_path):
    """ObjectMasks on the screen, ResizeObservation after it: the mask matches the patch in the
    observation the policy reads, and rlviz.trust scores against it."""
    from gymnasium.wrappers import ResizeObservation
    from helpers import ColourPatchEnv, tiny_policy

    from rlviz.faithfulness import record
    from rlviz.faithfulness.masks import ObjectMasks

    def patch_box(env):  # ColourPatchEnv's red patch: rows 16..48, the left or right half
        return [(32 * env.unwrapped.side, 16, 32, 32)]

    env = ResizeObservation(ObjectMasks(ColourPatchEnv(size=64), patch_box, (32, 32)), (32, 32))
    _, frames = record(env, tiny_policy(), episodes=2, frames=12, mask_key="object_mask")
    assert frames.masks.shape == (12, 32, 32)
    np.testing.assert_array_equal(frames.masks, frames.obs[..., 0] > 100)
    report = rlviz.trust(tiny_policy(), env, ["occlusion"], episodes=1, frames=6,
                         mask_key="object_mask", options={"occlusion": {"window": 8, "stride": 8}})  # fmt: skip
    assert report.rows[0]["ground_truth"]["frames"] == 6


def test_a_method_that_does_not_fit_the_network_is_listed_not_fatal():
    """CAM needs a GAP + linear head; on a flatten + linear head it is reported as not
    applicable (with CAM's own reason) and the other methods are scored."""
    from helpers import ColourPatchEnv

    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 4, 4, stride=4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, 3)
    )
    report = rlviz.trust(
        PolicyAdapter(model), ColourPatchEnv(size=32), ["cam", "gradient"], episodes=1, frames=4
    )
    assert [r["row"] for r in report.rows] == ["gradient"]
    assert "global average pooling" in report.skipped["cam"]
    assert report.verdicts()[-1].startswith("cam: not applicable here (")
