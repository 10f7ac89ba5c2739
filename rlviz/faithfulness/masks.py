"""Ground-truth object masks for ``rlviz trust`` from object boxes, e.g. the ones OCAtari reads from
Atari RAM (``env.objects``, each with ``xywh``), mapped onto the observation the network reads.

Atari pipelines (SB3's ``WarpFrame``, Gymnasium's ``AtariPreprocessing``) resize the whole 210x160
screen with area resampling (``cv2.INTER_AREA``) and no crop, then stack frames: an output pixel
takes the screen pixels under its footprint, so an object touches exactly the output pixels whose
footprint overlaps its box. A stack's mask is the newest frame's, where the maps of the methods
are read against it (``info`` of a step describes the screen that step produced).

OCAtari needs ``numpy<2`` (it cannot share this project's venv); with it installed::

    from ocatari.core import OCAtari
    env = OCAtari("ALE/Pong-v5", mode="ram", hud=False, obs_mode="ori", render_mode="rgb_array")
    env = ObjectMasks(env, lambda e: [o.xywh for o in e.objects if o.category == "Ball"],
                      out_hw=(84, 84))
    env = FrameStackObservation(GrayscaleObservation(ResizeObservation(env, (84, 84))), 4)
    rlviz.trust(policy, env, mask_key="object_mask")
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import gymnasium as gym
import numpy as np

Box = Sequence[float]  # (x, y, w, h) in screen pixels


def box_mask(
    boxes: Iterable[Box], frame_hw: tuple[int, int], out_hw: tuple[int, int] | None = None
) -> np.ndarray:
    """The pixels of a ``frame_hw`` screen area-resized to ``out_hw`` (default: not resized) that
    any box (x, y, w, h) overlaps: bool [h, w]. Boxes with no area (off screen) are skipped."""
    (big_h, big_w), (h, w) = frame_hw, (out_hw or frame_hw)
    if min(big_h, big_w, h, w) < 1:
        raise ValueError(f"frame_hw {frame_hw} and out_hw {out_hw} must be positive sizes")
    # Output pixel i covers [i * s, (i + 1) * s) of the screen; box [x, x + w) overlaps it when
    # x < (i + 1) * s and x + w > i * s (strict: a footprint that only touches an edge gets none
    # of its area).
    rows, cols = np.arange(h), np.arange(w)
    sy, sx = big_h / h, big_w / w
    mask = np.zeros((h, w), bool)
    for x, y, bw, bh in boxes:
        if bw <= 0 or bh <= 0:
            continue
        hit_rows = (y < (rows + 1) * sy) & (y + bh > rows * sy)
        hit_cols = (x < (cols + 1) * sx) & (x + bw > cols * sx)
        mask |= hit_rows[:, None] & hit_cols[None, :]
    return mask


class ObjectMasks(gym.Wrapper):
    """Put ``info[key]`` = :func:`box_mask` of ``boxes(env)`` after every reset and step.

    Wrap the env that knows its objects (OCAtari, or any env with a ``boxes`` callable) before
    resizing and stacking wrappers, which pass ``info`` through; ``out_hw`` is the size the
    network reads (default: the screen's).
    """

    def __init__(
        self,
        env: gym.Env,
        boxes: Callable[[gym.Env], Iterable[Box]],
        out_hw: tuple[int, int] | None = None,
        key: str = "object_mask",
    ) -> None:
        super().__init__(env)
        shape = env.observation_space.shape
        if shape is None or len(shape) < 2:
            raise ValueError(
                f"ObjectMasks needs an image observation [H, W, ...]; got space {env.observation_space}"
            )
        self.frame_hw = (int(shape[0]), int(shape[1]))
        self.boxes, self.out_hw, self.key = boxes, out_hw, key

    def _with_mask(self, info: dict) -> dict:
        mask = box_mask(self.boxes(self.env), self.frame_hw, self.out_hw)
        return {**info, self.key: mask}

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        return obs, self._with_mask(info)

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        return obs, reward, terminated, truncated, self._with_mask(info)
