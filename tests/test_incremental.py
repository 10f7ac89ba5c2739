"""Incremental inference (rlviz.methods.incremental): equal to full re-inference, and honest about
the models it cannot handle."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from rlviz import PolicyAdapter
from rlviz.methods import get_method
from rlviz.methods.base import MapRequest, freeze_greedy, scalar_per_sample
from rlviz.methods.incremental import IncrementalRunner, plan
from rlviz.methods.incremental.occlusion import occlusion_drops, window_boxes
from rlviz.methods.occlusion import _window_weights, window_masks
from rlviz.ops import fill_values
from rlviz.targets import as_target
from tests.helpers import CleanRLAtariAgent


def _shipped_agent():
    pytest.importorskip("agents")
    from rlviz.agents.checkpoint import SHIPPED_CHECKPOINT, load_checkpoint
    from rlviz.agents.policy import make_adapter

    model, _ = load_checkpoint(SHIPPED_CHECKPOINT)
    return make_adapter(model), (3, 60, 80)


def _agent(head="gap"):
    agents = pytest.importorskip("agents")
    torch.manual_seed(0)
    model = agents.ActorCritic(head=head).eval()
    return agents.make_adapter(model), (3, 60, 80)


def _nature_cnn():
    pytest.importorskip("stable_baselines3")
    from gymnasium import spaces
    from stable_baselines3.common.policies import ActorCriticCnnPolicy

    torch.manual_seed(0)
    space = spaces.Box(0, 255, (4, 84, 84), np.uint8)
    policy = ActorCriticCnnPolicy(space, spaces.Discrete(6), lambda _: 1e-3).eval()
    return PolicyAdapter.from_sb3(policy, layout="4x1:CHW"), (4, 84, 84)


class CleanRLAtari(nn.Module):
    """cleanrl/ppo_atari.py's Agent at full size (84x84x4, x / 255 inside)."""

    def __init__(self, n_actions=6):
        super().__init__()
        self.network = nn.Sequential(
            nn.Conv2d(4, 32, 8, stride=4), nn.ReLU(),
            nn.Conv2d(32, 64, 4, stride=2), nn.ReLU(),
            nn.Conv2d(64, 64, 3, stride=1), nn.ReLU(),
            nn.Flatten(), nn.Linear(64 * 7 * 7, 512), nn.ReLU(),
        )  # fmt: skip
        self.actor = nn.Linear(512, n_actions)
        self.critic = nn.Linear(512, 1)

    def get_value(self, x):
        return self.critic(self.network(x / 255.0))

    def get_action_and_value(self, x, action=None):
        hidden = self.network(x / 255.0)
        logits = self.actor(hidden)
        log_prob = torch.log_softmax(logits, -1).gather(1, action[:, None])[:, 0]
        return action, log_prob, None, self.critic(hidden)


def _cleanrl():
    torch.manual_seed(0)
    return PolicyAdapter.from_cleanrl(CleanRLAtari().eval()), (4, 84, 84)


def _resnet():
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None, num_classes=4).eval()
    return PolicyAdapter(model), (3, 64, 64)


class Geometry(nn.Module):
    """Padding, dilation, batch norm, max / average pooling (ceil mode), a GAP head."""

    def __init__(self, padding=1, dilation=1, ceil=False):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 8, 5, stride=2, padding=padding, dilation=dilation),
            nn.BatchNorm2d(8), nn.LeakyReLU(0.1),
            nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=ceil),
            nn.Conv2d(8, 8, 3, padding="same"), nn.Sigmoid(),
            nn.AvgPool2d(2), nn.Conv2d(8, 6, 1),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )  # fmt: skip
        self.head = nn.Linear(6, 3)

    def forward(self, x):
        return self.head(self.body(x))


def _geometry(**kwargs):
    torch.manual_seed(0)
    model = Geometry(**kwargs)
    with torch.no_grad():  # non-trivial running statistics
        model.body[1].running_mean.uniform_(-0.5, 0.5)
        model.body[1].running_var.uniform_(0.5, 2.0)
    return PolicyAdapter(model.eval()), (3, 45, 61)


MODELS = {
    "agent_gap": _agent,
    "agent_mlp": lambda: _agent("mlp"),
    "nature_cnn": _nature_cnn,
    "cleanrl": _cleanrl,
    "resnet18": _resnet,
    "geometry": _geometry,
    "geometry_dilated_ceil": lambda: _geometry(padding=3, dilation=2, ceil=True),
}


def _frames(shape, count, scale=1.0, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(count, *shape, generator=gen) * scale


def _compare(adapter, x, box, stride, patches=None):
    rows, cols = window_boxes(tuple(x.shape[-2:]), box, stride)
    runner = IncrementalRunner(adapter, x, rows, cols, box)
    assert runner.plan.fallback is None, str(runner.plan)
    count = len(rows) if patches is None else patches
    chosen = torch.linspace(0, len(rows) - 1, count).round().long()
    frames = torch.arange(x.shape[0]).repeat_interleave(count)
    idx = chosen.repeat(x.shape[0])
    values = _frames((x.shape[1], *box), len(frames), float(x.max()), seed=1).to(x.dtype)
    got, want = runner.outputs(frames, idx, values), runner._full(frames, idx, values)
    runner.close()
    return got, want


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("box, stride", [((8, 8), (4, 4)), ((5, 3), (7, 2)), ((16, 16), (16, 16))])
def test_exact_in_float64(name, box, stride):
    """The algorithm itself is exact: in float64 the outputs match full re-inference to 1e-10."""
    adapter, shape = MODELS[name]()
    adapter.model.double()
    scale = 255.0 if shape[0] == 4 else 1.0
    x = _frames(shape, 2, scale).double()
    got, want = _compare(adapter, x, box, stride, patches=24)
    tol = 1e-10 * max(1.0, float(want.logits.abs().max()))
    assert (got.logits - want.logits).abs().max() <= tol
    if want.value is not None:
        assert (got.value - want.value).abs().max() <= tol


@pytest.mark.parametrize("name", ["agent_gap", "nature_cnn", "cleanrl"])
def test_float32_outputs_close(name):
    adapter, shape = MODELS[name]()
    x = _frames(shape, 2, 255.0 if shape[0] == 4 else 1.0)
    got, want = _compare(adapter, x, (8, 8), (4, 4), patches=40)
    assert (got.logits - want.logits).abs().max() <= 1e-5 * max(1.0, float(want.logits.abs().max()))


def _occlusion_maps(adapter, x, window, stride, fill, mode):
    occ = get_method("occlusion", window=window, stride=stride, fill=fill)
    size = tuple(x.shape[-2:])
    with torch.no_grad():
        out = adapter.outputs(x)
        target = freeze_greedy(as_target(None), out)
        clean = scalar_per_sample(target(out), x.shape[0])
        masks = window_masks(size, occ.window, occ.stride, x.device)
        drops = occlusion_drops(
            adapter, x, target, clean, fill_values(x, occ.fill, occ.blur_sigma), masks,
            occ.window, occ.stride, 300, mode=mode,
        )  # fmt: skip
    if drops is None:
        return None
    weights = _window_weights(size, occ.window, occ.stride, x.device, x.dtype)
    return (drops @ weights).view(x.shape[0], *size)


def _uint8_frames(shape, count, seed=0):
    """Raw observations, uint8 [B, H, W, C] (what every adapter accepts)."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (count, shape[1], shape[2], shape[0]), generator=gen).byte()


@pytest.mark.parametrize("window, stride, fill", [(8, 4, 0.0), (6, 5, "mean"), (11, 3, "blur")])
def test_occlusion_maps_equal_full_path(window, stride, fill):
    """float32 maps of the shipped agent: within 1e-5 of the map's max of the registered
    method's (a random-init agent's maps are too small for float32 to resolve that)."""
    adapter, shape = _shipped_agent()
    obs = _uint8_frames(shape, 3)
    x = adapter.preprocess(obs)
    got = _occlusion_maps(adapter, x, window, stride, fill, mode=True)
    want = get_method("occlusion", window=window, stride=stride, fill=fill).attribute(adapter, obs)
    assert got is not None
    assert (got - want).abs().max() <= 1e-5 * want.abs().max()


def test_occlusion_maps_nature_cnn_float64():
    """NatureCNN (incremental conv stack + incremental Flatten/Linear head) against the registered
    method's full passes, both in float64 (the method's own ``_maps`` on the float64 input)."""
    adapter, shape = _nature_cnn()
    adapter.model.double()
    x = _frames(shape, 2, 255.0).double()
    got = _occlusion_maps(adapter, x, 8, 4, 0.0, mode=True)
    assert _occlusion_maps(adapter, x, 8, 4, 0.0, mode=False) is None  # caller runs full passes
    occ = get_method("occlusion", window=8, stride=4, fill=0.0)
    target = freeze_greedy(as_target(None), adapter.outputs(x))
    want = occ._maps(adapter, x, target, MapRequest(pass_size=300))
    assert (got - want).abs().max() <= 1e-10 * want.abs().max()


class Flipper(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.head = nn.Linear(4, 2)

    def forward(self, x):
        return self.head(self.conv(torch.flip(x, dims=[-1])).mean(dim=(2, 3)))


class Norm(nn.Module):
    def __init__(self):
        super().__init__()
        self.norm = nn.LayerNorm([3, 20, 20])
        self.conv = nn.Conv2d(3, 4, 3)
        self.head = nn.Linear(4, 2)

    def forward(self, x):
        return self.head(self.conv(self.norm(x)).mean(dim=(2, 3)))


@pytest.mark.parametrize(
    "model, reason",
    [(Flipper(), "not elementwise"), (Norm(), "no incremental rule for LayerNorm")],
)
def test_fallback_is_reported(model, reason):
    adapter = PolicyAdapter(model.eval())
    decisions = plan(adapter, (3, 20, 20), box=(4, 4), stride=(2, 2))
    assert decisions.fallback is not None and reason in decisions.fallback
    assert not decisions.pays
    x = _frames((3, 20, 20), 2)
    with pytest.warns(UserWarning, match="falls back to full passes"):
        assert _occlusion_maps(adapter, x, 4, 2, 0.0, mode=True) is None
    assert _occlusion_maps(adapter, x, 4, 2, 0.0, mode="auto") is None  # quietly full


def test_plan_reports_layers_and_stop():
    adapter, shape = _agent()
    decisions = plan(adapter, shape, box=(8, 8), stride=(4, 4))
    text = str(decisions)
    assert decisions.pays and decisions.speedup > 2.5
    assert [d.mode for d in decisions.decisions][-1] == "model"
    assert "conv3 (constant channels)" in text  # CoordConv's coordinates are input-independent
    layers = {d.layer: d for d in decisions.decisions}
    assert layers["conv1.conv"].box == (4, 4) and layers["conv1.conv"].map_size == (15, 20)


def test_cleanrl_small_agent_prestage():
    """tests.helpers' CleanRL agent scales by 1/255 before its first layer: an elementwise step the
    engine runs on the patch only."""
    torch.manual_seed(0)
    agent = CleanRLAtariAgent().eval()
    agent.get_value(torch.zeros(1, 3, 30, 40))
    adapter = PolicyAdapter.from_cleanrl(agent)
    x = _frames((3, 30, 40), 2, 255.0)
    adapter.outputs(x)
    got, want = _compare(adapter, x, (4, 4), (3, 3))
    assert (got.logits - want.logits).abs().max() <= 1e-5 * max(1.0, float(want.logits.abs().max()))


@pytest.mark.parametrize("fill", [0.0, "mean"])
def test_registered_occlusion_option(fill):
    """The registered method: incremental (default "auto", and True) equals incremental=False."""
    adapter, shape = _shipped_agent()
    obs = _uint8_frames(shape, 2, seed=3)
    full = get_method("occlusion", fill=fill, incremental=False).attribute(adapter, obs)
    for mode in ("auto", True):
        got = get_method("occlusion", fill=fill, incremental=mode).attribute(adapter, obs)
        assert (got - full).abs().max() <= 1e-5 * full.abs().max()
    with pytest.raises(ValueError, match="incremental must be one of"):
        get_method("occlusion", incremental="yes")


class Picky(nn.Module):
    """Refuses batches of 2 (the engine's probe size): tracing fails, occlusion must not."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.head = nn.Linear(4, 2)

    def forward(self, x):
        if x.shape[0] == 2:
            raise RuntimeError("no pairs")
        return self.head(self.conv(x).mean(dim=(2, 3)))


def test_tracing_failure_falls_back():
    adapter = PolicyAdapter(Picky().eval())
    decisions = plan(adapter, (3, 12, 12), box=(4, 4))
    assert "tracing the forward failed" in decisions.fallback
    x = _frames((3, 12, 12), 3)
    maps = get_method("occlusion", window=4, stride=2, fill=0.0).attribute(adapter, x)
    assert maps.shape == (3, 12, 12)
