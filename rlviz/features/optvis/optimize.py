"""Activation maximisation: optimise an image parameterisation to maximise an objective."""

from __future__ import annotations

import os
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from rlviz.features._common import forward_to_layers, frames_strip, new_figure, to_uint8
from rlviz.features.optvis.objectives import Context, Objective, as_objective
from rlviz.features.optvis.param import ImageParam, fourier
from rlviz.features.optvis.stack import network_layout, stack
from rlviz.features.optvis.transforms import Transform, compose, standard_transforms
from rlviz.hooks import capture
from rlviz.io import save_figure
from rlviz.layout import ObservationLayout
from rlviz.policy import PolicyAdapter


class Adam:
    """Adam (Kingma & Ba 2015) on a few tensors, ascending or descending a given gradient.

    Written out here rather than taken from torch.optim because importing that pulls in
    torch._dynamo, which crashes once a MiniWorld OpenGL context exists in the process.
    """

    def __init__(
        self, params: Sequence[torch.Tensor], lr: float, betas=(0.9, 0.999), eps: float = 1e-8
    ):
        self.params, self.lr, self.betas, self.eps = list(params), lr, betas, eps
        self.m = [torch.zeros_like(p) for p in self.params]
        self.v = [torch.zeros_like(p) for p in self.params]
        self.t = 0

    @torch.no_grad()
    def step(self, grads: Sequence[torch.Tensor]) -> None:
        """Move each parameter against its gradient (descent on the loss)."""
        self.t += 1
        b1, b2 = self.betas
        for p, g, m, v in zip(self.params, grads, self.m, self.v, strict=True):
            m.mul_(b1).add_(g, alpha=1 - b1)
            v.mul_(b2).addcmul_(g, g, value=1 - b2)
            m_hat = m / (1 - b1**self.t)
            v_hat = v / (1 - b2**self.t)
            p.sub_(self.lr * m_hat / (v_hat.sqrt() + self.eps))


def evaluate(adapter: PolicyAdapter, objective: Objective, image: torch.Tensor) -> torch.Tensor:
    """The objective on an image [B, C, H, W] (network input space), float [B], graph kept.

    Only the layers the objective reads are hooked (released on exit); the forward pass stops
    after them unless the objective needs the policy's outputs. A recurrent policy reads the
    image with its initial state.
    """
    state = nullcontext()
    if adapter.recurrent:  # the image enters the initial state, as at an episode's start
        state = adapter.holding_state(adapter.initial_state(image.shape[0]))
    layers = sorted(objective.layers)
    with state:
        if objective.needs_output:
            with capture(adapter.model, layers) as acts:
                out = adapter.outputs(image)
                return objective(Context(dict(acts), out, image))
        acts = forward_to_layers(adapter, image, layers) if layers else {}
        return objective(Context(acts, None, image))


@dataclass
class Visualisation:
    """Result of :func:`optimize`.

    Attributes:
        images: uint8 [B, H, W, C], the optimised images.
        tensor: float32 [B, C, H, W] in [0, 1], the same before quantisation.
        trace: float32 [steps], the objective (mean over the batch, on transformed images) per step.
        initial: float32 [B], the objective on the starting images (no transforms).
        final: float32 [B], the objective on the final images (no transforms).
        objective: the objective's readable name.
        layout: for a frame stack (a :class:`~rlviz.features.optvis.stack.StackImage`), the
            observation layout; ``images`` then hold K*C channels and :attr:`frames` the frames.
    """

    images: np.ndarray
    tensor: torch.Tensor
    trace: np.ndarray
    initial: np.ndarray
    final: np.ndarray
    objective: str
    layout: ObservationLayout | None = None

    @property
    def image(self) -> np.ndarray:
        """The first image, uint8 [H, W, C]."""
        return self.images[0]

    @property
    def frames(self) -> np.ndarray:
        """The images as RGB frames for drawing, uint8 [B, K, H, W, 3] (K = 1 for one frame)."""
        layout = self.layout or ObservationLayout(1, self.tensor.shape[1], "CHW")
        return network_layout(layout).display_frames(self.tensor)


def optimize(
    adapter: PolicyAdapter,
    objective: Objective,
    param: ImageParam | None = None,
    transforms: Sequence[Transform] | None = None,
    steps: int = 256,
    *,
    lr: float = 0.05,
    seed: int = 0,
    size: tuple[int, int] = (60, 80),
    batch: int = 1,
    progress: bool = True,
    frames: str = "all",
) -> Visualisation:
    """Find images that maximise ``objective`` for the policy behind ``adapter``.

    The image lives in the network's input space (for the default preprocess: RGB in [0, 1], at
    the policy's own resolution). Only the image's parameters change; the model's weights, their
    ``.grad`` and its train/eval mode are left as they are.

    Args:
        param: the parameterisation (default: :func:`fourier` of ``size``, decorrelated colour).
        transforms: random transforms per step (default :func:`standard_transforms`; ``[]`` for none).
        steps: optimisation steps; lr: Adam step size.
        seed: seeds the default parameterisation's start and the transforms' randomness.
        size / batch: image size (H, W) and count for the default parameterisation.
        frames: for a policy whose layout stacks K frames (``adapter.layout``), the default
            parameterisation is a :func:`~rlviz.features.optvis.stack.stack` that optimises
            ``"all"`` frames or only the ``"newest"`` (past frames mid grey).
    """
    from tqdm.auto import tqdm

    objective = as_objective(objective)
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    if param is None:
        layout = adapter.layout
        if layout is not None and (layout.stacked or layout.channels != 3):
            param = stack(layout, size, batch, frames=frames, seed=seed)
        else:
            param = fourier(size, batch, seed=seed)
    transform = compose(*(standard_transforms() if transforms is None else transforms))
    generator = torch.Generator().manual_seed(seed)
    device = adapter.device
    for p in param.params:
        p.data = p.data.to(device)

    with torch.no_grad():
        initial = evaluate(adapter, objective, param().to(device)).float().cpu().numpy()
    optimiser = Adam(param.params, lr)
    trace = []
    bar = tqdm(range(steps), desc=objective.name[:40], disable=not progress, leave=False)
    for _ in bar:
        image = param()
        values = evaluate(adapter, objective, transform(image, generator))
        # autograd.grad (not backward) so no gradient lands in the model's parameters
        grads = torch.autograd.grad(-values.sum(), param.params)
        optimiser.step(grads)
        trace.append(float(values.detach().mean()))
        if progress:
            bar.set_postfix(objective=f"{trace[-1]:.3f}")
    with torch.no_grad():
        final_image = param().detach()
        final = evaluate(adapter, objective, final_image).float().cpu().numpy()
    return Visualisation(
        images=to_uint8(final_image),
        tensor=final_image.float().cpu(),
        trace=np.asarray(trace, dtype=np.float32),
        initial=initial.astype(np.float32),
        final=final.astype(np.float32),
        objective=objective.name,
        layout=getattr(param, "layout", None),
    )


def optimize_and_measure(
    adapter: PolicyAdapter,
    objective: Objective,
    param: ImageParam,
    measures: Sequence[Objective],
    **options,
) -> tuple[Visualisation, list[np.ndarray], list[np.ndarray]]:
    """:func:`optimize` ``param`` (``options`` as there) and evaluate ``measures`` (float32 [B]
    each, no transforms) on the start images and on the result: (visualisation, starts, ends)."""

    def measure(image: torch.Tensor) -> list[np.ndarray]:
        x = image.to(adapter.device)
        return [evaluate(adapter, m, x).float().cpu().numpy() for m in measures]

    with torch.no_grad():
        start = measure(param())
    vis = optimize(adapter, objective, param, **options)
    with torch.no_grad():
        return vis, start, measure(vis.tensor)


def plot_visualisations(
    results: Sequence[Visualisation],
    path: str | os.PathLike,
    titles: Sequence[str] | None = None,
    suptitle: str | None = None,
) -> Path:
    """The optimised images in a row, each with its objective trace underneath; returns the PNG path."""
    if not results:
        raise ValueError("plot_visualisations needs at least one Visualisation")
    titles = list(titles) if titles is not None else [r.objective for r in results]
    fig = new_figure(2.6 * len(results) + 0.3, 4.2)
    axes = fig.subplots(2, len(results), squeeze=False, height_ratios=[2.2, 1.0])
    for j, (result, title) in enumerate(zip(results, titles, strict=False)):
        img = result.image
        if result.layout is not None and result.layout.stacked:
            axes[0, j].imshow(frames_strip(result.frames[0]))  # oldest -> newest
        else:
            axes[0, j].imshow(
                img if img.shape[-1] == 3 else img[..., 0],
                cmap=None if img.shape[-1] == 3 else "gray",
            )
        axes[0, j].set_axis_off()
        axes[0, j].set_title(title, fontsize=8)
        axes[1, j].plot(result.trace, linewidth=1)
        axes[1, j].axhline(float(result.initial.mean()), color="grey", linestyle=":", linewidth=1)
        axes[1, j].set_xlabel("step", fontsize=7)
        axes[1, j].set_ylabel("objective", fontsize=7)
        axes[1, j].tick_params(labelsize=6)
        axes[1, j].set_title(
            f"start {result.initial.mean():.2f} -> end {result.final.mean():.2f}", fontsize=7
        )
    fig.suptitle(
        suptitle or "Activation maximisation (dotted: objective at the random start)", fontsize=10
    )
    return save_figure(fig, path)
