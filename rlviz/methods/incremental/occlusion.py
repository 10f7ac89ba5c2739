"""Occlusion drops through incremental inference: the same numbers as the full passes of
:class:`rlviz.methods.occlusion.Occlusion`, recomputing only each window's receptive field."""

from __future__ import annotations

import torch

from rlviz.methods.base import scalar_per_sample
from rlviz.methods.incremental.ops import compose, nhwc, window_boxes
from rlviz.methods.incremental.runner import IncrementalRunner, warn_fallback
from rlviz.methods.passes import block_target, job_blocks

MODES = ("auto", True, False)
#: Incremental passes hold boxes, not frames: a patch needs a fraction of a frame's memory, and
#: bigger batches make the small per-box products efficient (NatureCNN's linear head: 54 -> 35 us
#: a patch from 300 to 1200 patches a pass).
PASS_FACTOR = 4


def occlusion_drops(
    adapter, x, target, clean, fill, masks, window, stride, pass_size, mode="auto"
) -> torch.Tensor | None:
    """target(clean) - target(occluded) for every frame and window, [B, P], or None when the
    full passes should run instead (``mode=False``, a model that falls back, or ``"auto"`` and a
    plan that does not pay). ``masks`` [P, H, W] are the window masks, ``fill`` [1 or B, C, H, W]."""
    if mode is False:
        return None
    b = x.shape[0]
    rows, cols = window_boxes(tuple(x.shape[-2:]), window, stride)
    runner = IncrementalRunner(adapter, x, rows, cols, window)
    try:
        if runner.plan.fallback is not None:
            if mode is True:
                warn_fallback(runner.plan.fallback)
            return None
        if mode == "auto" and not runner.plan.pays:
            return None
        n_windows = masks.shape[0]
        device = x.device
        per_frame_fill = fill.shape[0] > 1
        x_nhwc, fill_nhwc = nhwc(x), nhwc(fill.expand(fill.shape[0], *x.shape[1:]))
        index = torch.arange(n_windows, device=device)
        mask_box = compose(nhwc(masks[:, None].to(x.dtype)), index, rows, cols, window) > 0.5

        def values(frames, patches):
            r, c = rows[patches], cols[patches]
            return torch.where(
                mask_box[patches],
                compose(fill_nhwc, frames if per_frame_fill else frames * 0, r, c, window),
                compose(x_nhwc, frames, r, c, window),
            )

        probe_f = torch.zeros(2, dtype=torch.long, device=device)
        probe_p = torch.tensor([0, n_windows - 1], device=device)
        problem = runner.check(probe_f, probe_p, values(probe_f, probe_p))
        if problem is not None:
            warn_fallback(f"self-check failed ({problem})")
            return None
        drops = x.new_zeros(b, n_windows)
        for frames, wins in job_blocks(b, n_windows, pass_size * PASS_FACTOR):
            n_f, n_w = frames.stop - frames.start, wins.stop - wins.start
            f_idx = torch.arange(frames.start, frames.stop, device=device).repeat_interleave(n_w)
            p_idx = torch.arange(wins.start, wins.stop, device=device).repeat(n_f)
            out = runner.outputs(f_idx, p_idx, values(f_idx, p_idx))
            got = scalar_per_sample(block_target(target, frames, n_w)(out), len(f_idx))
            drops[frames, wins] = clean[frames, None] - got.view(n_f, n_w)
        return drops
    finally:
        runner.close()
