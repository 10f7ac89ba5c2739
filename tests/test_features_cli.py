"""The feature tools on real MiniWorld frames and through the `rlviz filters | featvis | topk |
dissect` commands, with a checkpoint on disk (random weights, or a planted red detector)."""

import json

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.slow

ENV = "rlviz/BoxReachSmall-v0"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from rlviz import agents

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "random.safetensors"
    return agents.save_checkpoint(path, agents.ActorCritic(), {"env_id": ENV})


def run(main, *argv):
    return main([str(a) for a in argv])


def pngs(folder):
    return sorted(p.name for p in folder.glob("*.png") if p.stat().st_size > 2000)


def test_dissection_finds_a_planted_red_unit_on_real_boxreach_frames():
    # conv1 of a real agent network with unit 0 made a 'red minus green minus blue' detector and
    # unit 1 a 'green' one: on MiniWorld frames the red unit's top-quantile region must line up
    # with the env's goal-box masks, which checks masks, frames, receptive-field upsampling and the
    # rollout's step bookkeeping together (masks one step out of line score far lower).
    from rlviz import agents
    from rlviz.cli.common import make_env
    from rlviz.features import dissect
    from rlviz.rollout import collect

    torch.manual_seed(0)
    model = agents.ActorCritic()
    with torch.no_grad():
        model.conv1.conv.weight.zero_()
        model.conv1.conv.bias.zero_()
        model.conv1.conv.weight[0, :, 2:6, 2:6] = (
            torch.tensor([1.0, -1.0, -1.0])[:, None, None] / 16
        )
        model.conv1.conv.weight[1, :, 2:6, 2:6] = (
            torch.tensor([-1.0, 1.0, -1.0])[:, None, None] / 16
        )
    adapter = agents.make_adapter(model)
    env = make_env(ENV)
    try:
        rollouts = list(collect(env, adapter, 2, seed=3, info_keys=("goal_mask",), max_steps=40))
    finally:
        env.close()
    obs = np.concatenate([r.obs for r in rollouts])
    masks = np.concatenate([r.infos["goal_mask"] for r in rollouts])
    assert masks.any(), "the goal box should be in view at some step"
    quantile = 1 - masks.mean()
    result = dissect(adapter, obs, masks, ["conv1"], quantile=quantile)
    red, green = result.iou["conv1"][:2, 0]
    assert result.top(1)[0].unit == 0 and red > 0.6 and green < 0.1
    assert result.precision["conv1"][0, 0] > 0.6
    shifted = dissect(adapter, obs[:-1], masks[1:], ["conv1"], quantile=quantile)
    assert shifted.iou["conv1"][0, 0] < red - 0.1


def test_filters_command_writes_every_figure(checkpoint, tmp_path):
    from rlviz.cli.features import filters_main

    assert (
        run(
            filters_main,
            "--checkpoint",
            checkpoint,
            "--out",
            tmp_path,
            "--max-steps",
            20,
            "--no-progress",
        )
        == 0
    )
    assert pngs(tmp_path) == sorted(
        [
            "filters_rgb.png",
            "filters_conv2.conv.png",
            "filters_conv3.conv.png",
            "kernels_vs_learned.png",
            "featmaps_conv1.png",
            "featmaps_conv2.png",
            "featmaps_conv3.png",
        ]
    )


def test_featvis_command_all_methods(checkpoint, tmp_path, capsys):
    from rlviz.cli.features import featvis_main

    common = ["--checkpoint", checkpoint, "--out", tmp_path, "--max-steps", 12, "--no-progress"]
    assert (
        run(
            featvis_main,
            *common,
            "--steps",
            4,
            "--objective",
            "action:left",
            "--objective",
            "neuron:conv3:2:1:1",
            "--param",
            "pixels",
        )
        == 0
    )
    assert (
        run(featvis_main, *common, "--method", "deepdream", "--steps", 2, "--layers", "conv2") == 0
    )
    assert run(featvis_main, *common, "--method", "invert", "--steps", 5, "--layers", "conv1") == 0
    assert run(featvis_main, *common, "--method", "adversarial", "--attacks", "fgsm") == 0
    out = capsys.readouterr().out
    assert "action:left: objective" in out and "fgsm:" in out and "frames flipped" in out
    assert {"featvis.png", "deepdream.png", "inversion.png", "adversarial_epsilon.png"} <= set(
        pngs(tmp_path)
    )


def test_topk_and_dissect_commands(checkpoint, tmp_path, capsys):
    from rlviz.cli.features import dissect_main, topk_main

    common = ["--checkpoint", checkpoint, "--out", tmp_path, "--max-steps", 15, "--no-progress"]
    assert run(topk_main, *common, "--episodes", 2, "--k", 4, "--neighbours", "--units", 0, 3) == 0
    assert (
        run(
            dissect_main,
            *common,
            "--episodes",
            2,
            "--ablate",
            2,
            "--ablate-episodes",
            2,
            "--random-draws",
            1,
        )
        == 0
    )
    assert {"topk_conv3.png", "neighbours.png", "dissection.png", "ablation.png"} <= set(
        pngs(tmp_path)
    )
    report = json.loads((tmp_path / "dissection.json").read_text())
    assert report["states"] == 30 and report["units_per_layer"] == {
        "conv1": 16,
        "conv2": 32,
        "conv3": 32,
    }
    assert len(report["units"]) == 80 and report["units"][0]["iou"] >= report["units"][-1]["iou"]
    assert sum(len(v) for v in report["ablation"]["units"].values()) == 2
    assert 0 <= report["ablation"]["baseline"] <= 1
    assert "units with IoU > 0.04" in capsys.readouterr().out


def test_commands_reject_bad_input_with_a_clear_message(checkpoint, tmp_path, capsys):
    from rlviz.cli.features import dissect_main, featvis_main, topk_main

    assert run(dissect_main, "--checkpoint", tmp_path / "nope.safetensors") == 2
    assert "does not exist" in capsys.readouterr().err
    from rlviz.cli import main as rlviz_main  # the dispatcher routes to these commands

    assert rlviz_main(["filters", "--checkpoint", str(tmp_path / "nope.safetensors")]) == 2
    assert "rlviz filters: error: checkpoint" in capsys.readouterr().err
    common = ["--checkpoint", checkpoint, "--out", tmp_path, "--max-steps", 5, "--no-progress"]
    assert run(topk_main, *common, "--layer", "conv9") == 2
    assert "layer 'conv9' not found; available: conv1" in capsys.readouterr().err
    assert run(featvis_main, *common, "--objective", "channel:conv2") == 2
    assert "cannot read objective 'channel:conv2'" in capsys.readouterr().err
    assert run(featvis_main, *common, "--objective", "action:jump", "--steps", 1) == 2
    assert "unknown action 'jump'" in capsys.readouterr().err
    assert run(topk_main, *common, "--episodes", 1, "--units", 99) == 2
    assert "has 32 units" in capsys.readouterr().err
