"""``rlviz featvis --method texture | style``: Gram-matrix texture synthesis and style transfer.

Each method takes the parsed flags and the featvis ``Scene`` (adapter, env, frame, episode) and
returns the files it wrote, like the other ``featvis`` methods.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from rlviz.cli.common import CliError, bad_input
from rlviz.cli.features.common import layers_arg, optimisation

DEFAULT_STYLE = "brick_wall"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The flags only ``--method style`` reads (texture uses --layers, --channel, --steps, --tv)."""
    p.add_argument(
        "--style",
        default=DEFAULT_STYLE,
        metavar="SOURCE",
        help="style: a MiniWorld texture name (default brick_wall), frame:T (step T of the "
        "played episode) or a PNG file",
    )
    p.add_argument(
        "--content-layer",
        default=None,
        help="style: the layer whose code of the frame is kept (default: the second-last conv block)",
    )
    p.add_argument(
        "--style-weight",
        type=float,
        default=10.0,
        help="style: weight of the Gram loss against the content loss (default 10)",
    )


def texture(args: argparse.Namespace, scene) -> list[Path]:
    """Texture synthesis: what each of ``--layers`` keeps of the frame's texture (its Gram
    matrix), from noise; with ``--channel C``, the texture that puts the layer's map along C."""
    from rlviz.features import optvis

    adapter, frame = scene.adapter, scene.frame
    layers = layers_arg(adapter.model, args.layers)
    steps, tv = args.steps or 150, 0.05 if args.tv is None else args.tv
    if args.channel is not None:
        with bad_input(prefix=f"--channel {args.channel}: "):
            vis = [
                optvis.optimize(
                    adapter,
                    optvis.gram_direction(layer, args.channel) - tv * optvis.total_variation(),
                    param=optvis.fourier(frame.shape[:2], channels=frame.shape[-1], seed=args.seed),
                    **optimisation(args, steps),
                )
                for layer in layers
            ]
        titles = [f"{layer} channel {args.channel}: share of Gram trace" for layer in layers]
        title = "Texture of a channel direction (d^T G d / tr G); dotted: random start"
        path = args.out / "texture_channel.png"
        return [optvis.plot_visualisations(vis, path, titles, suptitle=title)]
    sets = [[layer] for layer in layers] + ([layers] if len(layers) > 1 else [])
    results = []
    for layer_set in sets:
        r = optvis.synthesize_texture(
            adapter, frame, layer_set, param=args.param, tv_weight=tv, **optimisation(args, steps)
        )
        print(
            f"{'+'.join(layer_set)}: Gram distance {r.style_start[0]:.3f} -> {r.style_end[0]:.4f}"
        )
        results.append(r)
    return [optvis.plot_textures([("observation", frame, results)], args.out / "texture.png")]


def _style_source(spec: str, scene) -> np.ndarray:
    """The style image ``--style`` names, uint8 [H, W, C] at the frame's size."""
    size = scene.frame.shape[:2]
    if spec.startswith("frame:"):
        try:
            return scene.episode[int(spec.split(":", 1)[1])]
        except (ValueError, IndexError):
            raise CliError(
                f"--style {spec!r}: expected frame:T with T in 0..{len(scene.episode) - 1}"
            ) from None
    if spec.lower().endswith(".png"):
        from PIL import Image

        if not Path(spec).is_file():
            raise CliError(f"--style {spec!r}: no such PNG file")
        img = Image.open(spec).convert("RGB").resize((size[1], size[0]), Image.BILINEAR)
        return np.asarray(img, dtype=np.uint8)
    from rlviz.envs.textures import texture_image

    try:
        return texture_image(spec, size)
    except ValueError as exc:
        raise CliError(f"--style {spec!r}: {exc}; or pass frame:T or a .png file") from None


def style(args: argparse.Namespace, scene) -> list[Path]:
    """Style transfer of the frame: ``--content-layer``'s code kept, the Gram matrices of
    ``--layers`` (default: the conv blocks up to the content layer) taken from ``--style``."""
    from rlviz.features import optvis
    from rlviz.hooks import default_layers

    adapter, frame = scene.adapter, scene.frame
    convs = default_layers(adapter.model)
    content_layer = layers_arg(adapter.model, [args.content_layer or convs[max(len(convs) - 2, 0)]])
    content_layer = content_layer[0]
    upto = convs[: convs.index(content_layer) + 1] if content_layer in convs else convs
    style_layers = layers_arg(adapter.model, args.layers or upto)
    source = _style_source(args.style, scene)
    r = optvis.style_transfer(
        adapter, frame, source, content_layer=content_layer, style_layers=style_layers,
        style_weight=args.style_weight, tv_weight=0.05 if args.tv is None else args.tv,
        **optimisation(args, 150),
    )  # fmt: skip
    print(
        f"style distance {r.style_start[0]:.3f} -> {r.style_end[0]:.4f}; content distance "
        f"{r.content_start[0]:.3f} -> {r.content_end[0]:.4f}"
    )
    probs = adapter.probs(np.stack([frame, source, r.image])).cpu().numpy()
    names = adapter.action_names or [str(k) for k in range(probs.shape[1])]
    captions = [" ".join(f"{n}:{p:.2f}" for n, p in zip(names, row, strict=True)) for row in probs]
    rows = [(args.style, source, [(f"style weight {args.style_weight:g}", r)])]
    return [optvis.plot_style_transfer(frame, rows, args.out / "style_transfer.png", [captions])]
