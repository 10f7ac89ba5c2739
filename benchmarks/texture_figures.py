"""Figures of issue 22 for the shipped agent: texture synthesis per layer, channel textures, style
transfer. Drawn by ``benchmarks/texture_reliance.py --figures DIR`` (videos/features/ in the repo).
"""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import numpy as np
import torch

from rlviz import envs  # noqa: F401  (registers the ids)
from rlviz.agents.checkpoint import load_policy
from rlviz.envs.textures import texture_image
from rlviz.features import optvis

SEED = 1_000_003  # a held-out episode whose goal box comes well into view
RETEXTURE = {"floor": "wood_planks", "wall": "brick_wall", "ceiling": "white"}


def _frames(model) -> tuple[np.ndarray, np.ndarray]:
    """A frame with the goal box large in view, and the same pose re-textured (RETEXTURE)."""
    from texture_reliance import play

    env = gym.make("rlviz/BoxReach-v0", ground_truth=True)
    try:
        ep = play(env, model, SEED)
        _, info = env.reset(seed=SEED)
        masks = []
        for a in ep["actions"]:
            masks.append(info["goal_mask"].mean())
            _, *_, info = env.step(int(a))
        t = int(np.argmax(np.where(np.asarray(masks) < 0.08, masks, 0)))  # big, not filling it
        rep = play(env, model, SEED, {"textures": RETEXTURE}, actions=ep["actions"][: t + 1])
    finally:
        env.close()
    return ep["obs"][t], rep["obs"][t]


def _probs(adapter, images: np.ndarray) -> list[str]:
    with torch.no_grad():
        p = adapter.outputs(adapter.preprocess(images)).probs.numpy()
    names = adapter.action_names or ("a0", "a1", "a2")
    return [
        "pi: " + " ".join(f"{n[0].upper()}{v:.2f}" for n, v in zip(names, q, strict=True))
        for q in p
    ]


def draw_figures(checkpoint: str, out: Path, steps: int = 150) -> list[Path]:
    """Write texture_synthesis.png, texture_channels.png and style_transfer.png into ``out``."""
    lp = load_policy(checkpoint)
    adapter = lp.adapter
    frame, retextured = _frames(lp.model)
    brick = texture_image("brick_wall", frame.shape[:2])
    layer_sets = [["conv1"], ["conv2"], ["conv3"], ["conv1", "conv2", "conv3"]]
    rows = []
    for label, source in [
        ("observation", frame),
        ("same pose, re-textured", retextured),
        ("env texture 'brick_wall'", brick),
    ]:
        results = [
            optvis.synthesize_texture(
                adapter, source, layers, steps=steps, param="fourier", tv_weight=0.05, seed=0
            )
            for layers in layer_sets
        ]
        rows.append((label, source, results))
    written = [
        optvis.plot_textures(
            rows,
            out / "texture_synthesis.png",
            "Texture synthesis for the shipped BoxReach agent: images from noise matching each "
            "layer's Gram matrices",
        )
    ]

    channels = list(range(8))
    vis = [
        optvis.optimize(
            adapter,
            optvis.gram_direction("conv2", c) - 0.05 * optvis.total_variation(),
            param=optvis.fourier(frame.shape[:2], seed=c),
            steps=128,
            seed=c,
            progress=False,
        )
        for c in channels
    ]
    written.append(
        optvis.plot_visualisations(
            vis,
            out / "texture_channels.png",
            titles=[f"conv2 channel {c}:\nshare of Gram trace" for c in channels],
            suptitle="Texture of a channel direction: images maximising d^T G d / tr G at conv2 "
            "(dotted: random start)",
        )
    )

    rows, captions = [], []
    for name, src in [("env texture 'brick_wall'", brick), ("re-textured frame", retextured)]:
        results = [
            (
                f"style weight {w:g}",
                optvis.style_transfer(
                    adapter,
                    frame,
                    src,
                    content_layer="conv2",
                    style_layers=["conv1", "conv2"],
                    style_weight=w,
                    tv_weight=0.05,
                    steps=steps,
                ),
            )
            for w in (1.0, 10.0, 100.0)
        ]
        rows.append((name, src, results))
        captions.append(_probs(adapter, np.stack([frame, src] + [r.image for _, r in results])))
    written.append(optvis.plot_style_transfer(frame, rows, out / "style_transfer.png", captions))
    return written
