"""Attribution speed: ms per frame for every rlviz method, next to the reference libraries doing the
same work and next to the method's floor (the bare network passes it cannot avoid).

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/attribution_speed.py [--quick] [--only NAMES]

Models: (a) the rlviz ActorCritic on 60x80 frames (agents.ActorCritic; a same-shaped stand-in if the
agents package is missing), batch 1 and 128; (b) torchvision ResNet-18 (random weights) on 224x224,
batch 1 and 16 for one-pass methods, 1 and 4 for the many-pass ones (IG, SmoothGrad, occlusion,
perturbation). Everyone gets the same preprocessed float input and the same action-logit targets.
Times are the best of several runs (the machine is shared; the minimum is the least disturbed).

Floors: a forward+backward to the input per image for gradient methods (x samples / steps for
SmoothGrad / IG), forward+backward to the layer for the CAM family, and (windows + 1) forward
passes per frame for occlusion and perturbation, in passes of the same size rlviz uses.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rlviz import ActionLogit, PolicyAdapter  # noqa: E402
from rlviz.methods import get_method  # noqa: E402
from rlviz.methods.perturbation import grid_centres  # noqa: E402
from rlviz.ops import gaussian_blur  # noqa: E402

warnings.filterwarnings("ignore")  # captum warns on every guided-backprop call


def best_times(fns: dict[str, Callable[[], object]], min_total: float, max_rounds: int) -> dict:
    """Best wall time of each function, measured round-robin so that all of them see the same
    machine load: one warm-up each, then rounds (at least 3) until ``min_total`` s or
    ``max_rounds``."""
    best: dict[str, float] = {}
    for key, fn in list(fns.items()):
        try:
            fn()
            best[key] = float("inf")
        except Exception as exc:  # report, don't hide: a reference that cannot run
            best[key] = float("nan")
            print(f"  ({key} failed: {type(exc).__name__}: {str(exc)[:120]})", flush=True)
    live = {k: f for k, f in fns.items() if not math.isnan(best[k])}
    start = time.perf_counter()
    rounds = 0
    while rounds < max_rounds and (rounds < 3 or time.perf_counter() - start < min_total):
        for key, fn in live.items():
            t0 = time.perf_counter()
            fn()
            best[key] = min(best[key], time.perf_counter() - t0)
        rounds += 1
    return best


# ------------------------------------------------------------------------------------- models


class StandIn(nn.Module):
    """Same shape as agents.ActorCritic (3 convs, 8x10 last map, GAP heads) if agents is absent."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Sequential(nn.Conv2d(3, 16, 8, 4, 3), nn.ReLU())
        self.conv2 = nn.Sequential(nn.Conv2d(16, 32, 3, 2, 1), nn.ReLU())
        self.conv3 = nn.Sequential(nn.Conv2d(32, 32, 3, 1, 1), nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.policy = nn.Linear(32, 3)
        self.value = nn.Linear(32, 1)

    def forward(self, x):
        h = self.pool(self.conv3(self.conv2(self.conv1(x)))).flatten(1)
        return self.policy(h), self.value(h)[:, 0]


def agent_model() -> tuple[nn.Module, PolicyAdapter, str, str]:
    try:
        from rlviz import agents

        torch.manual_seed(0)
        model = agents.ActorCritic().eval()
        return model, agents.make_adapter(model), "conv3", "agents.ActorCritic (gap head)"
    except ImportError:
        torch.manual_seed(0)
        model = StandIn().eval()
        return model, PolicyAdapter(model), "conv3", "stand-in ActorCritic"


def resnet_model() -> tuple[nn.Module, PolicyAdapter, str, str]:
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None).eval()
    return model, PolicyAdapter(model), "layer4", "torchvision resnet18"


# -------------------------------------------------------------------------------- the floors


def logits_of(model: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    def forward(x):
        out = model(x)
        return out[0] if isinstance(out, tuple) else out

    return forward


def in_passes(total: int, pass_size: int) -> list[int]:
    return [pass_size] * (total // pass_size) + ([total % pass_size] if total % pass_size else [])


def floor_input_grad(fwd, x, actions, images: int, pass_size: int) -> Callable[[], None]:
    """``images`` forward+backward passes to the input, ``pass_size`` at a time."""
    buf = x.repeat(math.ceil(pass_size / x.shape[0]), 1, 1, 1)[:pass_size].contiguous()
    acts = actions.repeat(math.ceil(pass_size / len(actions)))[:pass_size]

    def run():
        for n in in_passes(images, pass_size):
            xx = buf[:n].detach().requires_grad_(True)
            t = fwd(xx).gather(1, acts[:n, None]).sum()
            torch.autograd.grad(t, xx)

    return run


def floor_forward(fwd, x, images: int, pass_size: int) -> Callable[[], None]:
    """``images`` forward passes without autograd, ``pass_size`` at a time."""
    buf = x.repeat(math.ceil(pass_size / x.shape[0]), 1, 1, 1)[:pass_size].contiguous()

    def run():
        with torch.no_grad():
            for n in in_passes(images, pass_size):
                fwd(buf[:n])

    return run


def floor_layer_grad(model, fwd, layer: str, x, actions) -> Callable[[], None]:
    """One forward pass and the backward from the target to ``layer``'s output."""
    module = model.get_submodule(layer)

    def run():
        store = {}
        handle = module.register_forward_hook(lambda m, i, o: store.__setitem__("a", o))
        try:
            t = fwd(x).gather(1, actions[:, None]).sum()
        finally:
            handle.remove()
        torch.autograd.grad(t, store["a"])

    return run


# ------------------------------------------------------------------------------- references


def references(name, model, fwd, layer, x, actions, opts, pass_size):
    """(label, callable) pairs doing the same work with captum / pytorch-grad-cam."""
    import captum.attr as ca

    tgt = actions.tolist()
    b = x.shape[0]
    if name == "gradient":
        sal = ca.Saliency(fwd)
        return [("captum Saliency", lambda: sal.attribute(x, target=tgt, abs=True).amax(1))]
    if name == "gradient_signed":
        sal = ca.Saliency(fwd)
        return [("captum Saliency", lambda: sal.attribute(x, target=tgt, abs=False).sum(1))]
    if name == "grad_x_input":
        ixg = ca.InputXGradient(fwd)
        return [("captum InputXGradient", lambda: ixg.attribute(x, target=tgt).sum(1))]
    if name == "smoothgrad":
        nt = ca.NoiseTunnel(ca.Saliency(fwd))
        per = max(1, pass_size // b)
        return [
            (
                "captum NoiseTunnel",
                lambda: nt.attribute(
                    x,
                    nt_type="smoothgrad",
                    nt_samples=opts["samples"],
                    nt_samples_batch_size=per,
                    stdevs=0.15,
                    target=tgt,
                ).amax(1),
            )
        ]
    if name == "integrated_gradients":
        ig = ca.IntegratedGradients(fwd)
        return [
            (
                "captum IntegratedGradients",
                lambda: ig.attribute(
                    x,
                    baselines=0.0,
                    target=tgt,
                    n_steps=opts["steps"],
                    internal_batch_size=pass_size,
                ).sum(1),
            )
        ]
    if name == "guided_backprop":
        gbp = ca.GuidedBackprop(_Logits(model))
        return [("captum GuidedBackprop", lambda: gbp.attribute(x, target=tgt).abs().amax(1))]
    if name == "occlusion":
        occ = ca.Occlusion(fwd)
        w, s = opts["window"], opts["stride"]
        per = max(1, pass_size // b)
        return [
            (
                "captum Occlusion",
                lambda: occ.attribute(
                    x,
                    sliding_window_shapes=(3, w, w),
                    strides=(3, s, s),
                    baselines=0.0,
                    target=tgt,
                    perturbations_per_eval=per,
                )[:, 0],
            )
        ]
    if name == "perturbation":
        return [("Greydanus loop (orig. code)", greydanus_loop(fwd, x[: min(b, 2)], opts))]
    if name in ("gradcam", "gradcam_pp"):
        import pytorch_grad_cam
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

        module = model.get_submodule(layer)
        wrapper = _Logits(model)
        cls = pytorch_grad_cam.GradCAM if name == "gradcam" else pytorch_grad_cam.GradCAMPlusPlus
        targets = [ClassifierOutputTarget(int(a)) for a in actions]

        def pgc():
            with cls(model=wrapper, target_layers=[module]) as cam:
                return cam(input_tensor=x, targets=targets)

        refs = [(f"pytorch-grad-cam {cls.__name__}", pgc)]
        if name == "gradcam":
            lgc = ca.LayerGradCam(fwd, module)
            refs.append(
                (
                    "captum LayerGradCam",
                    lambda: ca.LayerAttribution.interpolate(
                        lgc.attribute(x, target=tgt, relu_attributions=True),
                        x.shape[-2:],
                        "bilinear",
                    ),
                )
            )
        return refs
    return []


class _Logits(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x):
        out = self.model(x)
        return out[0] if isinstance(out, tuple) else out


def greydanus_loop(fwd, x, opts) -> Callable[[], None]:
    """The structure of Greydanus et al.'s released code: one forward per frame per centre."""
    stride, sigma = opts["stride"], opts["mask_sigma"]

    def run():
        with torch.no_grad():
            h, w = x.shape[-2:]
            for frame in x:
                blurred = gaussian_blur(frame[None], opts["blur_sigma"])
                clean = fwd(frame[None])
                ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
                for cy in grid_centres(h, stride).tolist():
                    for cx in grid_centres(w, stride).tolist():
                        mask = torch.exp(-((ys - cy) ** 2 + (xs - cx) ** 2) / (2 * sigma**2))
                        mask = mask / mask.max()
                        pert = frame * (1 - mask) + blurred[0] * mask
                        _ = 0.5 * (clean - fwd(pert[None])).pow(2).sum()

    run.frames = x.shape[0]
    return run


# ----------------------------------------------------------------------------------- driver


def method_options(model_key: str) -> dict[str, dict]:
    if model_key == "agent":
        return {
            "smoothgrad": {"samples": 25},
            "integrated_gradients": {"steps": 32},
            "occlusion": {"window": 8, "stride": 4, "fill": 0.0},
            "perturbation": {"stride": 5, "mask_sigma": 5.0, "blur_sigma": 3.0},
        }
    return {
        "smoothgrad": {"samples": 8},
        "integrated_gradients": {"steps": 8},
        "occlusion": {"window": 56, "stride": 28, "fill": 0.0},
        "perturbation": {"stride": 28, "mask_sigma": 20.0, "blur_sigma": 10.0},
    }


OLD_FORWARD_PASS = 1 << 23  # input elements per pass of the old occlusion/perturbation floor
MANY_PASS = ("smoothgrad", "integrated_gradients", "occlusion", "perturbation")
METHODS = (
    "gradient",
    "gradient_signed",
    "grad_x_input",
    "smoothgrad",
    "integrated_gradients",
    "guided_backprop",
    "occlusion",
    "perturbation",
    "cam",
    "gradcam",
    "gradcam_pp",
)


def floor_for(name, model, fwd, layer, x, actions, opts, pass_size):
    b, h, w = x.shape[0], x.shape[2], x.shape[3]
    if name in ("gradient", "gradient_signed", "grad_x_input", "guided_backprop"):
        return floor_input_grad(fwd, x, actions, b, pass_size), "1 fwd+bwd"
    if name == "smoothgrad":
        n = opts["samples"]
        return floor_input_grad(fwd, x, actions, b * n, pass_size), f"{n} fwd+bwd"
    if name == "integrated_gradients":
        n = opts["steps"]
        return floor_input_grad(fwd, x, actions, b * n, pass_size), f"{n} fwd+bwd"
    if name == "occlusion":
        occ = get_method("occlusion", **opts)
        n = occ.windows((h, w))
        return floor_forward(fwd, x, b * (n + 1), pass_size), f"{n}+1 fwd"
    if name == "perturbation":
        n = len(grid_centres(h, opts["stride"])) * len(grid_centres(w, opts["stride"]))
        return floor_forward(fwd, x, b * (n + 1), pass_size), f"{n}+1 fwd"
    # For cam the layer is the global pooling's input, which is this same block's output.
    return floor_layer_grad(model, fwd, layer, x, actions), "fwd+bwd to layer"


def run_model(key, batches, methods, quick) -> list[dict]:
    model, adapter, layer, label = agent_model() if key == "agent" else resnet_model()
    size = (60, 80) if key == "agent" else (224, 224)
    fwd = logits_of(model)
    opts_all = method_options(key)
    rows = []
    for name in methods:
        opts = opts_all.get(name, {})
        method = get_method(name, **opts)
        for b in batches[name in MANY_PASS]:
            gen = torch.Generator().manual_seed(b)
            x = torch.rand(b, 3, *size, generator=gen)
            actions = torch.randint(0, 3, (b,), generator=gen)
            pass_size = max(1, method.pass_elements // x[0].numel())  # as rlviz chooses
            floor_pass = pass_size
            if name in ("occlusion", "perturbation"):
                # The old floor (issue 19's reference): forwards in 2^23-element passes, what
                # both methods used before perturbation's passes were halved.
                floor_pass = max(1, OLD_FORWARD_PASS // x[0].numel())
            target = ActionLogit(actions)
            # Round-robin until 4 s (at least 3 rounds, at most 200): cheap calls get many rounds,
            # which their noisy minimum needs on a shared machine.
            min_total = 0.3 if quick else 4.0
            runs = 3 if quick else 200
            layer_arg = layer if method.needs_layer and name != "cam" else None

            def ours(method=method, x=x, target=target, layer_arg=layer_arg):
                return method.attribute(adapter, x, target, layer=layer_arg)

            floor_fn, floor_label = floor_for(name, model, fwd, layer, x, actions, opts, floor_pass)
            fns = {"ours": ours, "floor": floor_fn}
            frames = {"ours": b, "floor": b}
            for ref_label, ref_fn in references(
                name, model, fwd, layer, x, actions, opts, pass_size
            ):
                fns[ref_label] = ref_fn
                frames[ref_label] = getattr(ref_fn, "frames", b)
            best = best_times(fns, min_total, runs)
            per_frame = {k: best[k] / frames[k] * 1e3 for k in fns}
            t_ours, t_floor = per_frame.pop("ours"), per_frame.pop("floor")
            refs = list(per_frame.items())
            row = dict(
                model=label,
                method=name,
                batch=b,
                ours=t_ours,
                floor=t_floor,
                floor_label=floor_label,
                refs=refs,
            )
            rows.append(row)
            print_row(row, flush=True)
    return rows


def print_header() -> None:
    print(
        f"| {'model':<28} | {'method':<20} | {'batch':>5} | {'rlviz ms/frame':>14} | "
        f"{'floor ms/frame':>14} | {'floor passes':<16} | {'x floor':>7} | "
        f"{'reference':<34} | {'ref ms/frame':>12} | {'ref/rlviz':>9} |"
    )
    print("|" + "|".join("-" * n for n in (30, 22, 7, 16, 16, 18, 9, 36, 14, 11)) + "|")


def print_row(row: dict, flush: bool = False) -> None:
    refs = row["refs"] or [("(none)", float("nan"))]
    for i, (ref_label, t_ref) in enumerate(refs):
        if i == 0:
            lead = (
                f"| {row['model']:<28} | {row['method']:<20} | {row['batch']:>5} | "
                f"{row['ours']:>14.3f} | {row['floor']:>14.3f} | {row['floor_label']:<16} | "
                f"{row['ours'] / row['floor']:>6.2f}x |"
            )
        else:
            lead = f"| {'':<28} | {'':<20} | {'':>5} | {'':>14} | {'':>14} | {'':<16} | {'':>7} |"
        ratio = t_ref / row["ours"] if np.isfinite(t_ref) else float("nan")
        print(f"{lead} {ref_label:<34} | {t_ref:>12.3f} | {ratio:>8.2f}x |", flush=flush)


def maps_speed() -> None:
    """Display helpers on a 256-frame episode: 8x10 CAM-sized maps onto 60x80 frames."""
    from rlviz.maps import colorize, normalize, overlay, upsample

    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (256, 60, 80, 3), dtype=np.uint8)
    small = rng.random((256, 8, 10), dtype=np.float32)
    full = upsample(small, (60, 80))
    norm = normalize(full)
    fns = {
        "upsample 8x10 -> 60x80": lambda: upsample(small, (60, 80)),
        "normalize (episode, p99.5)": lambda: normalize(full),
        "normalize (frame, p99.5)": lambda: normalize(full, "frame"),
        "colorize (inferno LUT)": lambda: colorize(norm),
        "overlay (resize + colour + blend)": lambda: overlay(frames, small),
    }
    best = best_times(fns, 2.0, 50)
    print("\n| display helper (256 frames of 60x80) | ms/frame |\n|---|---|")
    for key in fns:
        print(f"| {key} | {best[key] / 256 * 1e3:.4f} |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="fewer runs and small batches (smoke test)"
    )
    parser.add_argument("--only", nargs="*", default=None, help="method names to run")
    parser.add_argument(
        "--models", nargs="*", default=["agent", "resnet"], choices=["agent", "resnet"]
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: torch's)"
    )
    parser.add_argument("--maps-only", action="store_true", help="only time the display helpers")
    parser.add_argument(
        "--incremental",
        action="store_true",
        help="only the incremental vs full re-inference rows (occlusion, perturbation; issue 19)",
    )
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.maps_only:
        maps_speed()
        return 0
    if args.incremental:
        import incremental_speed  # the sibling script: benchmarks/ is on sys.path when run

        incremental_speed.run(best_times, args.quick)
        return 0
    methods = args.only or list(METHODS)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"{time.strftime('%Y-%m-%d %H:%M')}"
    )
    print_header()
    rows = []
    for key in args.models:
        if args.quick:
            batches = {False: (1, 8), True: (1, 2)}
        elif key == "agent":
            batches = {False: (1, 128), True: (1, 128)}
        else:
            batches = {False: (1, 16), True: (1, 4)}
        rows += run_model(key, batches, methods, args.quick)
    print("\nsummary (targets: never slower than a reference (> 5% counts); at the largest batch")
    print("gradient & CAM methods <= 1.2x floor, occlusion & perturbation <= 1.3x floor):")
    for row in rows:
        refs = [t for _, t in row["refs"] if np.isfinite(t)]
        # Below 5% the difference is inside this shared machine's run-to-run noise.
        slower = [t for t in refs if t < row["ours"] / 1.05]
        limit = 1.3 if row["method"] in ("occlusion", "perturbation") else 1.2
        floor_ok = row["ours"] / row["floor"] <= limit
        flags = []
        if slower:
            flags.append(f"SLOWER than a reference ({min(slower):.3f} ms)")
        if row["batch"] > 8 and not floor_ok:
            flags.append(f"{row['ours'] / row['floor']:.2f}x floor > {limit}x")
        if flags:
            print(f"  {row['model']} {row['method']} batch {row['batch']}: " + "; ".join(flags))
    maps_speed()
    return 0


if __name__ == "__main__":
    sys.exit(main())
