"""Incremental vs full re-inference for occlusion and perturbation (issue 19), printed by
``benchmarks/attribution_speed.py --incremental`` (or as part of its full run).

Rows: occlusion 8x8 / stride 4 on (a) the shipped agent at 60x80 (batch 128), (b) SB3's
NatureCNN at 84x84x4 (random weights, batch 16), (c) torchvision ResNet-18 at 224 (random
weights); for perturbation (stride 5) the share of the frame one blend changes exactly, which is
why it keeps full passes. Columns: rlviz incremental, rlviz full re-inference (the same method with
``incremental=False``: builds each occluded image and runs the whole network), the old floor (one
bare forward per window on a ready buffer), captum Occlusion / the Greydanus loop. ResNet-18 has
3025 windows per frame at this geometry, so its rows time a spread sample of 96 windows of one
frame (ms per window x 3025 = ms per frame). Every timing is the best round, round-robin.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch

from rlviz import PolicyAdapter
from rlviz.methods import get_method
from rlviz.methods.base import freeze_greedy, scalar_per_sample
from rlviz.methods.incremental import IncrementalRunner, plan
from rlviz.methods.incremental.occlusion import occlusion_drops, window_boxes
from rlviz.methods.occlusion import _window_weights, window_masks
from rlviz.ops import fill_values
from rlviz.targets import ActionLogit

OCCLUSION = {"window": 8, "stride": 4, "fill": 0.0}
PERTURBATION = {"stride": 5, "mask_sigma": 5.0, "blur_sigma": 3.0}


def agent():
    from rlviz.agents.checkpoint import SHIPPED_CHECKPOINT, load_checkpoint
    from rlviz.agents.policy import make_adapter

    model, _ = load_checkpoint(SHIPPED_CHECKPOINT)
    return "agent (shipped) 60x80", make_adapter(model), (3, 60, 80)


def nature_cnn():
    from gymnasium import spaces
    from stable_baselines3.common.policies import ActorCriticCnnPolicy

    torch.manual_seed(0)
    space = spaces.Box(0, 255, (4, 84, 84), np.uint8)
    policy = ActorCriticCnnPolicy(space, spaces.Discrete(6), lambda _: 1e-3).eval()
    return "SB3 NatureCNN 84x84x4", PolicyAdapter.from_sb3(policy), (4, 84, 84)


def resnet18():
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None).eval()
    return "ResNet-18 224", PolicyAdapter(model), (3, 224, 224)


def occlusion_fn(adapter, raw, target, incremental: bool) -> Callable[[], torch.Tensor]:
    """The registered occlusion method, incremental or full (through the method's option once it
    has one; else the same computation spelled out)."""
    occ = get_method("occlusion", **OCCLUSION)
    if "incremental" in vars(occ):
        method = get_method("occlusion", **OCCLUSION, incremental=incremental)
        return lambda: method.attribute(adapter, raw, target)
    if not incremental:
        return lambda: occ.attribute(adapter, raw, target)
    pass_size = max(1, occ.pass_elements // raw[0].numel())

    def run():
        with torch.no_grad():
            x_net = adapter.preprocess(raw)  # what attribute() does first (SB3 scales by 1/255)
            x = x_net
            size = tuple(x.shape[-2:])
            out = adapter.outputs(x)
            tgt = freeze_greedy(target, out)
            clean = scalar_per_sample(tgt(out), x.shape[0])
            masks = window_masks(size, occ.window, occ.stride, x.device)
            fill = fill_values(x, occ.fill, occ.blur_sigma)
            drops = occlusion_drops(
                adapter, x, tgt, clean, fill, masks, occ.window, occ.stride, pass_size, mode=True
            )
            weights = _window_weights(size, occ.window, occ.stride, x.device, x.dtype)
            return (drops @ weights).view(x.shape[0], *size)

    return run


def floor_fn(adapter, x, images: int, pass_size: int) -> Callable[[], None]:
    """``images`` bare forwards on a ready buffer, ``pass_size`` at a time (the old floor)."""
    buf = x.repeat(math.ceil(pass_size / x.shape[0]), 1, 1, 1)[:pass_size].contiguous()

    def run():
        with torch.no_grad():
            for start in range(0, images, pass_size):
                adapter.outputs(buf[: min(pass_size, images - start)])

    return run


def captum_fn(adapter, x, actions, pass_size) -> Callable[[], object]:
    import captum.attr as ca

    def logits(inp):
        return adapter.outputs(inp).logits

    occ = ca.Occlusion(logits)
    w, s, c = OCCLUSION["window"], OCCLUSION["stride"], x.shape[1]
    per = max(1, pass_size // x.shape[0])
    return lambda: occ.attribute(
        x,
        sliding_window_shapes=(c, w, w),
        strides=(c, s, s),
        baselines=0.0,
        target=actions.tolist(),
        perturbations_per_eval=per,
    )


def sampled_fns(adapter, x, count: int) -> dict[str, Callable[[], object]]:
    """Incremental vs full outputs for ``count`` spread windows of frame 0 (ResNet rows)."""
    box = (OCCLUSION["window"],) * 2
    stride = (OCCLUSION["stride"],) * 2
    rows, cols = window_boxes(tuple(x.shape[-2:]), box, stride)
    runner = IncrementalRunner(adapter, x[:1], rows, cols, box)
    chosen = torch.linspace(0, len(rows) - 1, count).round().long()
    frames = torch.zeros(count, dtype=torch.long)
    values = torch.zeros(count, x.shape[1], *box)
    buf = x[:1].repeat(count, 1, 1, 1)
    with torch.no_grad():
        got, want = runner.outputs(frames, chosen, values), runner._full(frames, chosen, values)
    err = float((got.logits - want.logits).abs().max())
    print(
        f"  (sampled windows: max |logit diff| {err:.2e} of max |logit| "
        f"{float(want.logits.abs().max()):.3g}; {len(rows)} windows per frame)"
    )
    return {
        "incremental": lambda: runner.outputs(frames, chosen, values),
        "full": lambda: runner._full(frames, chosen, values),
        "floor": lambda: adapter.outputs(buf),
    }, len(rows)


def perturbation_support(x: torch.Tensor) -> float:
    """Share of the frame that Greydanus' blend actually changes (float32, a centre in the middle):
    the exact region an incremental pass would have to recompute."""
    pert = get_method("perturbation", **PERTURBATION)
    from rlviz.ops import gaussian_blur

    masks = pert.masks(tuple(x.shape[-2:]), x.device, x.dtype)
    mid = masks.shape[0] // 2
    blurred = gaussian_blur(x[:1], pert.blur_sigma)
    changed = torch.lerp(x[:1], blurred, masks[mid]) != x[:1]
    rows, cols = changed.any(dim=1)[0].nonzero().unbind(1)
    box = (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)
    return float(box) / (x.shape[-2] * x.shape[-1])


def run(best_times, quick: bool, models=("agent", "nature", "resnet")) -> list[dict]:
    """Print and return the rows (see the module docstring)."""
    builders = {"agent": agent, "nature": nature_cnn, "resnet": resnet18}
    rows = []
    print(
        "\n| model | method | batch | incremental ms/frame | full re-inference | old floor | "
        "reference | inc vs full | inc vs floor | inc vs ref |"
    )
    print("|---|---|---:|---:|---:|---:|---|---:|---:|---:|")
    for key in models:
        label, adapter, shape = builders[key]()
        decisions = plan(adapter, shape, box=(8, 8), stride=(4, 4))
        print(f"\n{label}: incremental plan (occlusion 8x8 / 4)\n{decisions}\n")
        gen = torch.Generator().manual_seed(0)
        # The agent at the batch 128; NatureCNN's full passes are 8x dearer per frame.
        b = 1 if key == "resnet" else (2 if quick else (128 if key == "agent" else 16))
        # Raw uint8 observations in the layout the policy's env gives (HWC; SB3: its own CHW).
        raw = torch.randint(0, 256, (b, *shape), generator=gen, dtype=torch.uint8)
        if key == "agent":
            raw = raw.permute(0, 2, 3, 1).contiguous()
        x = adapter.preprocess(raw) if key != "resnet" else raw.float() / 255
        actions = torch.randint(0, 3, (b,), generator=gen)
        target = ActionLogit(actions)
        min_total, rounds = (0.3, 3) if quick else (4.0, 50)
        if key == "resnet":
            fns, per_frame = sampled_fns(adapter, x, 16 if quick else 96)
            best = best_times(fns, min_total, rounds)
            count = 16 if quick else 96
            ms = {k: v / count * per_frame * 1e3 for k, v in best.items()}
            ref = ("captum Occlusion", float("nan"))
        else:
            occ = get_method("occlusion", **OCCLUSION)
            pass_size = max(1, occ.pass_elements // x[0].numel())
            n = occ.windows(shape[1:])
            fns = {
                "incremental": occlusion_fn(adapter, raw, target, True),
                "full": occlusion_fn(adapter, raw, target, False),
                "floor": floor_fn(adapter, x, b * (n + 1), pass_size),
                "captum Occlusion": captum_fn(adapter, x, actions, pass_size),
            }
            inc, full = fns["incremental"](), fns["full"]()
            err = float((inc - full).abs().max() / full.abs().max())
            print(f"  (maps: max |incremental - full| = {err:.2e} of the map's max)")
            best = best_times(fns, min_total, rounds)
            ms = {k: v / b * 1e3 for k, v in best.items()}
            ref = ("captum Occlusion", ms["captum Occlusion"])
        row = dict(model=label, method="occlusion 8x8/4", batch=b, ref=ref, **ms)
        rows.append(row)
        print(
            f"| {label} | occlusion 8x8/4 | {b} | {ms['incremental']:.3f} | {ms['full']:.3f} | "
            f"{ms['floor']:.3f} | {ref[0]} {ref[1]:.3f} | {ms['full'] / ms['incremental']:.2f}x | "
            f"{ms['floor'] / ms['incremental']:.2f}x | {ref[1] / ms['incremental']:.2f}x |",
            flush=True,
        )
        if key != "resnet":
            share = perturbation_support(x)
            print(
                f"| {label} | perturbation stride 5 | - | (full passes) | | | | | | |  "
                f"exact changed box of one Greydanus blend: {share:.0%} of the frame"
            )
    return rows
