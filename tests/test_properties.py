"""Property-based tests of the engine's invariants (issue 21), with few examples so they stay fast:
maps are finite and shaped [B, H, W] for any valid layout and batch; chunking never changes them;
normalisation is stable; hooks are always released and the model left as found, even when the
target raises or a KeyboardInterrupt arrives inside a pass."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

import rlviz
from rlviz import ObservationLayout, PolicyAdapter

FAST = settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
METHODS = ["gradient", "grad_x_input", "gradcam", "occlusion"]


class StackNet(nn.Module):
    """A small conv net taking K*C input channels of any H, W (global pooling)."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv1 = nn.Conv2d(in_channels, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 6, 3, stride=2, padding=1)
        self.policy = nn.Linear(6, 3)
        self.value = nn.Linear(6, 1)

    def forward(self, x):
        h = torch.relu(self.conv2(torch.relu(self.conv1(x)))).mean((2, 3))
        return self.policy(h), self.value(h).squeeze(-1)


layouts = st.builds(
    lambda frames, channels, order: ObservationLayout(
        frames=frames, channels=channels, order=order
    ),
    frames=st.integers(1, 3),
    channels=st.sampled_from([1, 3]),
    order=st.sampled_from(["HWC", "CHW"]),
)


def observations(layout: ObservationLayout, batch: int, h: int, w: int, seed: int) -> np.ndarray:
    """uint8 observations [B, *shape] in ``layout``."""
    k, c = layout.frames, layout.channels
    shape = {"HWC": (h, w, k * c), "CHW": (k * c, h, w)}[layout.order]
    if k == 1 and c == 1 and layout.order == "HWC":
        shape = (h, w, 1)
    return np.random.default_rng(seed).integers(0, 256, (batch, *shape), dtype=np.uint8)


@FAST
@given(
    layout=layouts,
    batch=st.integers(1, 5),
    h=st.integers(8, 20),
    w=st.integers(8, 20),
    method=st.sampled_from(METHODS),
    seed=st.integers(0, 2**16),
)
def test_maps_are_finite_and_shaped(layout, batch, h, w, method, seed):
    adapter = PolicyAdapter(StackNet(layout.frames * layout.channels), layout=layout)
    obs = observations(layout, batch, h, w, seed)
    maps = rlviz.explain(adapter, obs, methods=[method])[method]
    assert maps.shape == (batch, h, w) and maps.dtype == np.float32
    assert np.isfinite(maps).all()


@FAST
@given(
    batch=st.integers(2, 7),
    chunk=st.integers(1, 7),
    method=st.sampled_from(METHODS + ["smoothgrad", "integrated_gradients"]),
    seed=st.integers(0, 2**16),
)
def test_chunking_never_changes_results(batch, chunk, method, seed):
    layout = ObservationLayout(frames=1, channels=3, order="HWC")
    adapter = PolicyAdapter(StackNet(3), layout=layout)
    obs = observations(layout, batch, 12, 16, seed)
    options = {"seed": 0} if method == "smoothgrad" else {}
    whole = rlviz.explain(adapter, obs, methods=[method], **options)[method]
    chunked = rlviz.explain(adapter, obs, methods=[method], batch_size=chunk, **options)[method]
    np.testing.assert_allclose(chunked, whole, rtol=1e-4, atol=1e-6)


values = st.one_of(st.just(0.0), st.floats(1e-3, 1e6), st.floats(-1e6, -1e-3))


@FAST
@given(
    maps=st.integers(1, 4).flatmap(lambda b: st.lists(values, min_size=b * 12, max_size=b * 12)),
    scale=st.floats(1e-3, 1e3),
    mode=st.sampled_from(["episode", "frame"]),
    signed=st.booleans(),
)
def test_normalisation_is_stable(maps, scale, mode, signed):
    from rlviz.maps import normalize

    m = np.asarray(maps, np.float32).reshape(-1, 3, 4)
    out = normalize(m, mode=mode, signed=signed)
    assert out.shape == m.shape and out.dtype == np.float32 and np.isfinite(out).all()
    assert out.min() >= (-1.0 if signed else 0.0) and out.max() <= 1.0
    assert np.array_equal(out == 0, (m == 0) | (out == 0))  # zero stays zero
    np.testing.assert_allclose(normalize(m * scale, mode=mode, signed=signed), out, atol=1e-4)
    # with the plain max as the scale (percentile 100) a normalised map is a fixed point
    top = normalize(m, mode=mode, signed=signed, percentile=100)
    np.testing.assert_allclose(
        normalize(top, mode=mode, signed=signed, percentile=100), top, atol=1e-5
    )


def _model_state(model: nn.Module):
    return (
        model.training,
        [m.training for m in model.modules()],
        {k: v.clone() for k, v in model.state_dict().items()},
        [p.requires_grad for p in model.parameters()],
    )


def _hook_counts(model: nn.Module) -> list[int]:
    return [
        len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
        for m in model.modules()
    ]


def _assert_unchanged(model, before, hooks_before):
    training, modes, params, grads = before
    assert model.training == training and [m.training for m in model.modules()] == modes
    for key, value in model.state_dict().items():
        assert torch.equal(value, params[key]), key
    assert [p.requires_grad for p in model.parameters()] == grads
    assert _hook_counts(model) == hooks_before
    assert all(p.grad is None for p in model.parameters())


class Boom(Exception):
    pass


@FAST
@given(
    method=st.sampled_from(METHODS + ["guided_backprop", "gradcam_pp"]),
    train_mode=st.booleans(),
    failure=st.sampled_from(["target", "interrupt"]),
)
def test_failures_release_hooks_and_leave_the_model_as_found(method, train_mode, failure):
    model = StackNet(3).train(train_mode)
    adapter = PolicyAdapter(model)
    obs = observations(ObservationLayout(frames=1, channels=3, order="HWC"), 3, 12, 16, 0)
    before, hooks_before = _model_state(model), _hook_counts(model)
    if failure == "target":

        def target(out):
            raise Boom("target failed")

        with pytest.raises(Boom):
            rlviz.explain(adapter, obs, methods=[method], target=target)
    else:
        # A KeyboardInterrupt (Ctrl-C) raised inside the forward pass, by a hook of our own.
        def interrupt(module, args, output):
            raise KeyboardInterrupt

        handle = model.conv2.register_forward_hook(interrupt)
        hooks_before = _hook_counts(model)
        try:
            with pytest.raises(KeyboardInterrupt):
                rlviz.explain(adapter, obs, methods=[method])
            _assert_unchanged(model, before, hooks_before)
        finally:
            handle.remove()
        hooks_before = _hook_counts(model)
    _assert_unchanged(model, before, hooks_before)
    # and it still works afterwards
    maps = rlviz.explain(adapter, obs, methods=[method])[method]
    assert np.isfinite(maps).all()
