"""Where the CAM family's time goes on the agent, without the reference libraries in between.

Times, alternating round by round (best round kept): the floor (forward + backward to the layer,
as in attribution_speed.py), rlviz's activations-and-gradients step, each method end to end, and
the Grad-CAM++ channel-weight step in rlviz's form and in the paper's closed form
g^3 / (2 g^2 + S g^3 + eps), whose results it also compares.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/cam_breakdown.py [--batch 128]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from attribution_speed import agent_model, best_times, floor_layer_grad, logits_of  # noqa: E402

from rlviz import ActionLogit  # noqa: E402
from rlviz.methods import get_method  # noqa: E402
from rlviz.methods.cam import layer_activations_and_gradients, weighted_maps  # noqa: E402


def paper_form_map(acts: torch.Tensor, grads: torch.Tensor, eps: float) -> torch.Tensor:
    """Grad-CAM++ with its channel weights written as in the paper / pytorch-grad-cam (the
    reference for rlviz's rewritten form)."""
    total = acts.sum(dim=(2, 3), keepdim=True)
    g = grads.clamp(min=0)
    g2 = g.square()
    g3 = g2 * g
    weights = (g3 / (2 * g2 + total * g3 + eps)).sum(dim=(2, 3))
    return weighted_maps(weights, acts).clamp(min=0)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--seconds", type=float, default=6.0, help="time budget per comparison")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    model, adapter, layer, label = agent_model()
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(args.batch, 3, 60, 80, generator=gen)
    actions = torch.randint(0, 3, (args.batch,), generator=gen)
    target = ActionLogit(actions)
    methods = {name: get_method(name) for name in ("cam", "gradcam", "gradcam_pp")}
    pp = methods["gradcam_pp"]
    acts, grads = layer_activations_and_gradients(adapter, x, target, layer)

    new_map = pp._combine(acts, grads, layer)
    old_map = paper_form_map(acts, grads, pp.eps)
    rel = float((new_map - old_map).abs().max() / old_map.abs().max().clamp(min=1e-12))

    fns = {
        "floor (fwd + bwd to layer)": floor_layer_grad(model, logits_of(model), layer, x, actions),
        "rlviz activations + gradients": lambda: layer_activations_and_gradients(
            adapter, x, target, layer
        ),
        **{
            f"rlviz {n} (end to end)": (lambda m=m: m.attribute(adapter, x, target))
            for n, m in methods.items()
        },
        "gradcam_pp combine, rlviz form": lambda: pp._combine(acts, grads, layer),
        "gradcam_pp combine, paper form": lambda: paper_form_map(acts, grads, pp.eps),
    }
    times = best_times(fns, min_total=args.seconds, max_rounds=400)
    floor = times["floor (fwd + bwd to layer)"]
    print(f"{label}, layer {layer} {tuple(acts.shape)}, batch {args.batch}, 1 thread")
    for name, t in times.items():
        print(f"  {name:34s} {t * 1e3:8.3f} ms   {t / floor:5.2f}x floor")
    print(f"  Grad-CAM++ rlviz form vs paper form: max |diff| = {rel:.1e} x max |map|")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
