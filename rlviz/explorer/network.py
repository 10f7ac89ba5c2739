"""The explorer's network tab: a few units per layer with their top states, dissection IoU,
ablation effect and a feature visualisation, all from the rlviz.features tools.

Cost is bounded: ``units_per_layer`` units (default 4) per conv layer, states subsampled to
``max_states``, feature visualisations of ``optvis_steps`` steps.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from rlviz.hooks import default_layers, layer_activations
from rlviz.ops import evenly_spaced
from rlviz.policy import PolicyAdapter


def _pick_units(adapter, obs, layer: str, iou: np.ndarray | None, k: int) -> list[int]:
    """The ``k`` units with the best goal-box IoU, else the ``k`` most active on average."""
    if iou is not None:
        order = np.argsort(-iou, kind="stable")
    else:
        act = layer_activations(adapter, obs, layer, pool="avg", stop_early=True)[layer]
        order = np.argsort(-act.mean(0).numpy(), kind="stable")
    return [int(u) for u in order[:k]]


def network_units(
    adapter: PolicyAdapter,
    obs: np.ndarray,
    state_ids: np.ndarray,
    masks: np.ndarray | None = None,
    *,
    layers: Sequence[str] | None = None,
    units_per_layer: int = 4,
    top_k: int = 4,
    max_states: int = 1500,
    optvis_steps: int = 64,
    seed: int = 0,
    frames: int | None = None,
) -> tuple[list[dict], list[np.ndarray]]:
    """Describe a few units of each layer for the page.

    Args:
        obs: uint8 frames [N, H, W, C] of the explored episodes.
        state_ids: int [N, 2], (episode, step) of each frame, so top states link to the timeline.
        masks: bool [N, H, W] goal-box masks for dissection, or None (units picked by activity).

    Returns:
        (layers: ``[{"name", "units": [{"unit", "iou", "kl", "flip", "top": [{"ep", "t",
        "score", "box"}], "vis"}]}]``, images uint8 [H, W, 3]: one feature visualisation per unit,
        indexed by ``"vis"``; a frame stack's newest frame, ``frames`` default the adapter's).
    """
    from rlviz.explorer.sprites import newest_rgb
    from rlviz.features import action_change, dissect, optvis, top_k_examples

    if frames is None:
        frames = adapter.layout.frames if adapter.layout is not None else 1

    layers = list(layers) if layers is not None else default_layers(adapter.model)
    keep = evenly_spaced(len(obs), max_states)
    obs, state_ids = obs[keep], np.asarray(state_ids)[keep]
    dissection = None
    if masks is not None and len(masks):
        dissection = dissect(adapter, obs, np.asarray(masks)[keep], layers)
    # (H, W) through the layout: a channels-first stack [K, H, W] is not [H, W, C]
    size = adapter.layout_for(obs).image_size(tuple(obs.shape[1:]))
    out, images = [], []
    for layer in layers:
        iou = dissection.iou[layer][:, 0] if dissection is not None else None
        units = []
        for unit in _pick_units(adapter, obs, layer, iou, units_per_layer):
            top = top_k_examples(adapter, obs, layer, unit, k=top_k, min_separation=3)
            change = action_change(adapter, obs, [(layer, unit)])
            objective = optvis.channel(layer, unit) - 1e-2 * optvis.total_variation()
            vis = optvis.optimize(
                adapter, objective, steps=optvis_steps, seed=seed, size=size, progress=False
            )
            units.append(
                {
                    "unit": unit,
                    "iou": None if iou is None else round(float(iou[unit]), 4),
                    "kl": round(float(change.kl.mean()), 5),
                    "flip": round(change.flip_rate, 4),
                    "top": [
                        {
                            "ep": int(state_ids[i][0]),
                            "t": int(state_ids[i][1]),
                            "score": round(float(s), 4),
                            "box": [int(b) for b in box],
                        }
                        for i, s, box in zip(top.indices, top.scores, top.boxes, strict=True)
                    ],
                    "vis": len(images),
                }
            )
            images.append(newest_rgb(vis.image, frames))
        out.append({"name": layer, "units": units})
    return out, images
