"""Texture and style: Gram-matrix objectives, texture synthesis and style transfer.

Gatys, Ecker & Bethge: a layer's Gram matrix G = F F^T / (h w) (channel co-activations summed
over positions) keeps *what* patterns occur and drops *where*: it captures texture, while the
activation itself captures content ("Texture Synthesis Using Convolutional Neural Networks",
NeurIPS 2015, https://arxiv.org/abs/1505.07376; "A Neural Algorithm of Artistic Style",
https://arxiv.org/abs/1508.06576). The objectives here are penalties like
:func:`~rlviz.features.optvis.objectives.feature_distance` and compose with every other
objective, parameterisation and transform::

    t = optvis.layer_targets(adapter, [content_frame, style_frame], ["conv1", "conv2"])
    obj = -(optvis.content("conv2", t["conv2"][:1]) + 0.5 * optvis.style("conv1", t["conv1"][1:]))
    vis = optvis.optimize(adapter, obj, param=optvis.pixels((60, 80), init=content_frame))
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from rlviz.features._common import forward_to_layers, network_input
from rlviz.features.optvis.objectives import Objective, feature_distance, total_variation
from rlviz.features.optvis.optimize import optimize_and_measure
from rlviz.features.optvis.param import ImageParam, noise_image, pixels
from rlviz.features.optvis.transforms import Transform
from rlviz.policy import PolicyAdapter


def gram_matrix(act: torch.Tensor) -> torch.Tensor:
    """Gram matrices of a conv activation [B, C, h, w]: F F^T / (h w), float [B, C, C].

    Normalised by the number of positions, so images of different sizes compare.
    """
    if act.ndim != 4:
        raise ValueError(
            f"a Gram matrix needs a conv map [B, C, h, w], got shape {tuple(act.shape)}; "
            "pick a convolutional layer (see rlviz.hooks.default_layers(model))"
        )
    f = act.flatten(2)
    return f @ f.transpose(1, 2) / f.shape[-1]


def gram_distance(gram: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """||G - T||_F^2 / ||T||_F^2 per image, [B]; ``target`` is [B, C, C] or [1, C, C] / [C, C]."""
    target = target if target.ndim == 3 else target[None]
    if gram.shape[1:] != target.shape[1:]:
        raise ValueError(
            f"Gram matrix is {tuple(gram.shape[1:])}, target is {tuple(target.shape[1:])}; "
            "compute the target at the same layer"
        )
    target = target.to(gram)
    norm = target.flatten(1).pow(2).sum(1).clamp_min(1e-12)
    return (gram - target).flatten(1).pow(2).sum(1) / norm


def gram(layer: str, target_gram: torch.Tensor) -> Objective:
    """Penalty: relative Gram distance of ``layer`` to ``target_gram`` [B | 1, C, C]. Subtract it."""
    target = target_gram.detach()
    return Objective(
        lambda ctx: gram_distance(gram_matrix(ctx.acts[layer]), target),
        f"gram({layer!r})",
        frozenset([layer]),
    )


def style(layer: str, target: torch.Tensor) -> Objective:
    """Penalty: Gram distance to the style of ``target``, ``layer``'s activation [B | 1, C, h, w]
    of the style image (any size). Subtract it."""
    return Objective(
        gram(layer, gram_matrix(target.detach())).fn, f"style({layer!r})", frozenset([layer])
    )


def content(layer: str, target: torch.Tensor) -> Objective:
    """Penalty: relative feature distance to ``layer``'s activation ``target`` of the content
    image (:func:`feature_distance` under its style-transfer name). Subtract it."""
    return Objective(feature_distance(layer, target).fn, f"content({layer!r})", frozenset([layer]))


def gram_direction(layer: str, direction: int | Sequence[float] | torch.Tensor) -> Objective:
    """Objective: d^T G d / trace(G), the share of ``layer``'s co-activation energy along unit
    direction d (a channel index, or a vector over channels). Maximise it: the texture that makes
    the layer's whole map point along d, wherever it occurs."""

    def fn(ctx) -> torch.Tensor:
        g = gram_matrix(ctx.acts[layer])
        c = g.shape[-1]
        if isinstance(direction, int):
            if not 0 <= direction < c:
                raise ValueError(f"layer {layer!r} has {c} channels (0..{c - 1}); got {direction}")
            d = torch.zeros(c, dtype=g.dtype, device=g.device)
            d[direction] = 1.0
        else:
            d = torch.as_tensor(direction, dtype=g.dtype, device=g.device).flatten()
            if d.numel() != c:
                raise ValueError(f"direction has {d.numel()} entries; layer {layer!r} has {c}")
            d = d / d.norm().clamp_min(1e-12)
        trace = torch.diagonal(g, dim1=1, dim2=2).sum(1).clamp_min(1e-12)
        return torch.einsum("i,bij,j->b", d, g, d) / trace

    what = direction if isinstance(direction, int) else "vector"
    return Objective(fn, f"gram_direction({layer!r}, {what})", frozenset([layer]))


@torch.no_grad()
def layer_targets(
    adapter: PolicyAdapter, images, layers: str | Sequence[str]
) -> dict[str, torch.Tensor]:
    """Activations of ``layers`` for ``images`` (raw frames or network input), graph-free."""
    x = network_input(adapter, images)
    return {k: v.detach() for k, v in forward_to_layers(adapter, x, layers).items()}


@dataclass
class TextureResult:
    """Result of :func:`synthesize_texture` / :func:`style_transfer`.

    Attributes:
        images: uint8 [B, H, W, C], the optimised images; tensor: float [B, C, H, W] in [0, 1].
        trace: float32 [steps], the objective per step (minus the weighted losses).
        style_start / style_end: float32 [B], the style loss (sum of relative Gram distances over
            the style layers) at the start image and at the end.
        content_start / content_end: float32 [B], the relative content distance (zeros for
            texture synthesis, which has no content term).
        style_layers, content_layer: what was matched.
    """

    images: np.ndarray
    tensor: torch.Tensor
    trace: np.ndarray
    style_start: np.ndarray
    style_end: np.ndarray
    content_start: np.ndarray
    content_end: np.ndarray
    style_layers: tuple[str, ...]
    content_layer: str | None = None

    @property
    def image(self) -> np.ndarray:
        """The first image, uint8 [H, W, C]."""
        return self.images[0]


def style_loss(targets: Mapping[str, torch.Tensor]) -> Objective:
    """Penalty: the sum of :func:`style` over the layers of ``targets`` (layer -> activation)."""
    if not targets:
        raise ValueError("style_loss needs at least one layer -> activation target")
    return sum(style(layer, act) for layer, act in targets.items())


def synthesize_texture(
    adapter: PolicyAdapter,
    target,
    layers: str | Sequence[str],
    *,
    steps: int = 200,
    lr: float = 0.05,
    param: str | ImageParam = "pixels",
    tv_weight: float = 0.0,
    transforms: Sequence[Transform] = (),
    seed: int = 0,
    progress: bool = False,
) -> TextureResult:
    """An image whose Gram matrices at ``layers`` match those of ``target``, from noise.

    Args:
        target: the texture source: raw frames [H, W, C] / [N, H, W, C] or network input
            [N, C, H, W] (any size; N > 1 gives one synthesis per target).
        layers: the layer(s) whose Gram matrices are matched ("what texture does conv2 encode?").
        param: ``"pixels"`` (noise of std 0.5 before the sigmoid) or ``"fourier"``, both of the
            target's size and count, or any :class:`ImageParam` (e.g. a bigger canvas).
        tv_weight: weight of a total-variation prior (0: none, the raw texture).
    """
    layers = [layers] if isinstance(layers, str) else list(layers)
    x = network_input(adapter, target).detach()
    style_obj = style_loss(layer_targets(adapter, x, layers))
    loss = style_obj + tv_weight * total_variation() if tv_weight else style_obj
    run = dict(steps=steps, lr=lr, transforms=transforms, seed=seed, progress=progress)
    image = noise_image(param, x, seed)
    vis, (s0,), (s1,) = optimize_and_measure(adapter, -loss, image, [style_obj], **run)
    no_content = np.zeros_like(s0), np.zeros_like(s1)
    return TextureResult(vis.images, vis.tensor, vis.trace, s0, s1, *no_content, tuple(layers))


def style_transfer(
    adapter: PolicyAdapter,
    content_image,
    style_image,
    *,
    content_layer: str,
    style_layers: str | Sequence[str],
    style_weight: float = 1.0,
    tv_weight: float = 0.0,
    steps: int = 150,
    lr: float = 0.03,
    start: str = "content",
    transforms: Sequence[Transform] = (),
    seed: int = 0,
    progress: bool = False,
) -> TextureResult:
    """Restyle observations: keep ``content_layer``'s code of ``content_image``, take the Gram
    matrices of ``style_layers`` from ``style_image``.

    Minimises content + style_weight * style (+ tv_weight * TV) starting from the content frames
    (``start="content"``, so the layout stays put) or from noise (``start="noise"``).

    Args:
        content_image: raw frames [N, H, W, C] (or one) or network input [N, C, H, W].
        style_image: one style source (another frame, or a texture image of any size) used for
            every content frame, or N of them, one per frame.
    """
    style_layers = [style_layers] if isinstance(style_layers, str) else list(style_layers)
    x0 = network_input(adapter, content_image).detach()
    n = len(x0)
    c_target = layer_targets(adapter, x0, content_layer)[content_layer]
    s_targets = layer_targets(adapter, style_image, style_layers)
    n_style = len(next(iter(s_targets.values())))
    if n_style not in (1, n):
        raise ValueError(f"got {n_style} style images for {n} content frames; pass 1 or {n}")
    if start not in ("content", "noise"):
        raise ValueError(f"start must be 'content' or 'noise', got {start!r}")
    init = x0.cpu() if start == "content" else None
    image = pixels(tuple(x0.shape[-2:]), n, channels=x0.shape[1], sd=0.5, init=init, seed=seed)
    style_obj, content_obj = style_weight * style_loss(s_targets), content(content_layer, c_target)
    loss = style_obj + content_obj
    if tv_weight:
        loss = loss + tv_weight * total_variation()
    run = dict(steps=steps, lr=lr, transforms=transforms, seed=seed, progress=progress)
    measures = [style_obj, content_obj]
    vis, (s0, c0), (s1, c1) = optimize_and_measure(adapter, -loss, image, measures, **run)
    # report the unweighted style distance (the weight only sets the trade-off)
    s0, s1 = s0 / style_weight, s1 / style_weight
    return TextureResult(
        vis.images, vis.tensor, vis.trace, s0, s1, c0, c1, tuple(style_layers), content_layer
    )
