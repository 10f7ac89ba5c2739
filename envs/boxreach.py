"""BoxReach: walk to the red box in a MiniWorld room full of distractor boxes.

Importing this module prepares headless OpenGL (see :mod:`envs.headless`) and imports miniworld.
"""

from __future__ import annotations

import ctypes
import math
from typing import Any

import numpy as np

from rlviz.envs import ACTION_NAMES
from rlviz.envs.headless import prepare, quiet
from rlviz.envs.textures import ROOM_KWARGS, room_textures

prepare()

from gymnasium import spaces, utils  # noqa: E402
from miniworld.entity import Box  # noqa: E402
from miniworld.miniworld import MiniWorldEnv  # noqa: E402
from miniworld.opengl import drawBox  # noqa: E402
from miniworld.params import DEFAULT_PARAMS  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402
from pyglet import gl  # noqa: E402

__all__ = ["BoxReachEnv", "ACTION_NAMES", "DISTRACTOR_COLORS"]

# Our action index -> MiniWorld's action id (MiniWorld: 0 turn_left, 1 turn_right, 2 move_forward).
_TO_MINIWORLD = (
    MiniWorldEnv.Actions.turn_left,
    MiniWorldEnv.Actions.move_forward,
    MiniWorldEnv.Actions.turn_right,
)

#: Colours distractors are drawn from (never red); sampled without replacement per episode.
DISTRACTOR_COLORS = ("green", "blue", "yellow", "purple", "grey")

_BOX_SIZE = 0.8
_MAP_FLOOR = (222, 222, 214)
_MAP_WALL = (60, 60, 60)
_MAP_OUTSIDE = (255, 255, 255)
_MAP_PATH = (40, 110, 230)
_MAP_AGENT = (20, 20, 20)


class _StaticBox(Box):
    """A Box that never moves, so MiniWorld compiles it into the per-episode display list."""

    @property
    def is_static(self) -> bool:
        return True


def _params(fast: bool):
    params = DEFAULT_PARAMS.copy()
    if fast:  # MiniWorld's OneRoomS6Fast steps; ranges only matter with domain_rand
        params.set("forward_step", 0.7, 0.6, 0.8)
        params.set("turn_step", 45, 35, 55)
    return params


def _wrap_angle(a: float) -> float:
    return (a + math.pi) % (2 * math.pi) - math.pi


class BoxReachEnv(MiniWorldEnv, utils.EzPickle):
    """Walk to the red box; distractor boxes of other colours are in the way.

    ## Description
    A first-person MiniWorld task. One square room (``size`` x ``size`` metres, textured floor,
    walls and ceiling), one red goal box and ``num_distractors`` boxes of other colours (green,
    blue, yellow, purple, grey; sampled per episode), all 0.8 m cubes at random non-overlapping
    places, and the agent at a random pose not already within reach of the goal. The only way to
    find the goal is to look for red: the task makes a policy *see*. On the default task a uniformly
    random policy reaches the goal in 12% of episodes, the scripted :class:`envs.oracle.OracleAgent`
    in 100% with 45 steps on average (200 seeds; BENCHMARKS.md). When within ~1.6 m the box drops below the camera's
    view (MiniWorld's 60 deg vertical field of view), so the last ~3 steps are taken blind.

    ## Action Space
    ``Discrete(3)``: names in ``envs.ACTION_NAMES``.

    | Num | Action       | Effect (default / ``fast``)   |
    |-----|--------------|-------------------------------|
    | 0   | left         | turn left 15 deg / 45 deg     |
    | 1   | forward      | move forward 0.15 m / 0.7 m   |
    | 2   | right        | turn right 15 deg / 45 deg    |

    Moving into a wall or a box does nothing (the agent stays put).

    ## Observation Space
    ``Box(0, 255, (obs_height, obs_width, 3), uint8)``: the RGB camera image, default 60x80.

    ## Rewards
    ``1 - 0.2 * step_count / max_episode_steps`` (MiniWorld's) on the step the agent gets within
    reach of the red box (centre distance < box radius + agent radius + 1.1 * max forward step,
    about 1.15 m), else 0. The episode is ``terminated`` on that step (then ``truncated`` is False)
    and ``truncated`` when ``max_episode_steps`` is reached. Touching a distractor neither rewards
    nor ends the episode: it only blocks the way.

    ## Arguments
    ``gym.make("rlviz/BoxReach-v0", **kwargs)`` or ``BoxReachEnv(**kwargs)``:

    * ``size`` (float, 12): side of the square room in metres.
    * ``num_distractors`` (int, 3): boxes of other colours (0 for a single box).
    * ``fast`` (bool, False): bigger steps, 0.7 m and 45 deg (MiniWorld's OneRoomS6Fast).
    * ``domain_rand`` (bool, False): MiniWorld's domain randomisation: wall/floor/ceiling
      textures, sky and light colour/position, box colour bias, step sizes, drift, camera pose/fov.
    * ``obs_height``, ``obs_width`` (int, 60, 80): observation size.
    * ``max_episode_steps`` (int | None, None): step limit; None -> 250 (80 with ``fast``).
      ``gym.make(id, max_episode_steps=N)`` is taken by Gymnasium (adds a TimeLimit wrapper but
      leaves this limit and hence the reward scale alone): pass the limit to ``BoxReachEnv`` or
      register an id with ``kwargs={"max_episode_steps": N}``.
    * ``ground_truth`` (bool, False): add masks and poses to ``info`` (below).
    * ``render_mode`` (None | "rgb_array" | "human"): ``render()`` returns MiniWorld's 800x600
      view from the agent.

    ``reset(seed=..., options=...)`` options (all optional; the seed alone sets the layout):

    * ``texture_seed`` (int): floor, wall and ceiling textures drawn from
      :data:`envs.textures.PALETTE` by their own RNG, so one seed's layout renders re-textured.
    * ``textures`` ({"floor" | "wall" | "ceiling": name}): set surfaces by MiniWorld texture name.
    * ``box_pos`` ((x, z)): move the goal box there after the layout is drawn (the agent and the
      distractors stay where the seed put them); a position that collides raises ValueError.

    ## Ground truth
    ``info["success"]`` (bool, reached the goal this step) is always present. With
    ``ground_truth=True``, ``reset`` and ``step`` also return:

    * ``goal_mask`` bool [H, W]: pixels of the observation the red box covers (any MSAA sample),
      exactly the pixels that change when the box is removed.
    * ``distractor_masks`` bool [K, H, W], one per distractor, same meaning.
    * ``box_visible`` bool: ``goal_mask.any()``.
    * ``agent_pos`` float32 [2] (x, z); ``agent_dir`` float (radians, in [-pi, pi); MiniWorld's
      convention: facing (cos d, -sin d) in (x, z), left turns increase it).
    * ``box_pos`` float32 [2]; ``distractor_pos`` float32 [K, 2].

    Masks come from one extra flat-colour pass per step that redraws only the boxes inside the view
    frustum against the observation's own depth buffer (depth test EQUAL), four boxes per pass (one
    per RGBA channel), and is skipped when no box is in the frustum. Cost: ~0.15-0.2 ms per step on
    an idle core, i.e. ~80% of the plain env's steps/s (target >= 70% of raw MiniWorld; figures in
    BENCHMARKS.md, "## Environment"). Off by default.

    For videos, :meth:`top_down_map` draws the room from above with the agent and its path, and
    :meth:`world_to_map` maps world (x, z) to its pixel coordinates.

    ## Version History
    * v0: first version (rlviz 0.1).
    """

    metadata = {
        "render_modes": ["human", "rgb_array"],
        "render_fps": 30,
    }
    #: Names of the actions by index (also ``envs.ACTION_NAMES``).
    ACTION_NAMES = ACTION_NAMES
    action_names = ACTION_NAMES

    def get_action_meanings(self) -> list[str]:
        """Action names by index (the Atari-style accessor some tools look for)."""
        return list(ACTION_NAMES)

    def __init__(
        self,
        size: float = 12,
        num_distractors: int = 3,
        fast: bool = False,
        domain_rand: bool = False,
        obs_height: int = 60,
        obs_width: int = 80,
        max_episode_steps: int | None = None,
        ground_truth: bool = False,
        render_mode: str | None = None,
    ):
        if size < 3:
            raise ValueError(f"size={size!r} is too small; expected >= 3 (metres)")
        if num_distractors < 0:
            raise ValueError(f"num_distractors={num_distractors!r}; expected >= 0")
        if max_episode_steps is None:
            max_episode_steps = 80 if fast else 250
        self.size = float(size)
        self.num_distractors = int(num_distractors)
        self.fast = bool(fast)
        self.ground_truth = bool(ground_truth)

        # GL objects owned by this env; created on the first reset (inside MiniWorld's __init__).
        self._lists_base = 0
        self._lists_count = 0
        self._static_list = 0
        self._ent_lists: list[int] = []
        self._mask_buf: np.ndarray | None = None
        self._map_cache: dict[tuple[int, int], np.ndarray] = {}
        self._trail_cache: dict[tuple[int, int], list] = {}
        self._path: list[tuple[float, float]] = []
        self.box: Box | None = None
        self.distractors: list[Box] = []
        # Set per reset from its options (envs/textures.py); layout RNG use does not depend on them.
        self.textures = room_textures(None)
        self._box_pos: tuple[float, float] | None = None

        prepare()
        # Only render() uses MiniWorld's 800x600 frame buffer: keep it tiny when nobody renders.
        window = (800, 600) if render_mode is not None else (obs_width, obs_height)
        with quiet():  # MiniWorld prints "Falling back to num_samples=4" per frame buffer
            MiniWorldEnv.__init__(
                self,
                max_episode_steps=max_episode_steps,
                obs_width=obs_width,
                obs_height=obs_height,
                window_width=window[0],
                window_height=window[1],
                params=_params(fast),
                domain_rand=domain_rand,
                render_mode=render_mode,
            )
        utils.EzPickle.__init__(
            self,
            size=size,
            num_distractors=num_distractors,
            fast=fast,
            domain_rand=domain_rand,
            obs_height=obs_height,
            obs_width=obs_width,
            max_episode_steps=max_episode_steps,
            ground_truth=ground_truth,
            render_mode=render_mode,
        )
        self.action_space = spaces.Discrete(len(ACTION_NAMES))

    # ------------------------------------------------------------------ world
    def _gen_world(self) -> None:
        tex = {ROOM_KWARGS[surface]: name for surface, name in self.textures.items()}
        self.add_rect_room(min_x=0, max_x=self.size, min_z=0, max_z=self.size, **tex)
        self.box = self.place_entity(_StaticBox(color="red", size=_BOX_SIZE))
        k = self.num_distractors
        if k <= len(DISTRACTOR_COLORS):
            idx = self.np_random.permutation(len(DISTRACTOR_COLORS))[:k]
        else:
            idx = self.np_random.integers(0, len(DISTRACTOR_COLORS), size=k)
        self.distractors = [
            self.place_entity(_StaticBox(color=DISTRACTOR_COLORS[i], size=_BOX_SIZE)) for i in idx
        ]
        # Place the agent; never start already within reach of the goal.
        reach = self.box.radius + 0.4 + 1.1 * self.params.get_max("forward_step")
        while True:
            self.place_agent()
            if np.linalg.norm(self.agent.pos - self.box.pos) > reach + 0.5:
                break
            self.entities.remove(self.agent)
        if self._box_pos is not None:
            # After every random draw, so the rest of the layout is the seed's own.
            self._move_box(self._box_pos)

    def _move_box(self, xz: tuple[float, float]) -> None:
        pos = np.array([float(xz[0]), 0.0, float(xz[1])])
        r = self.box.radius
        inside = r <= pos[0] <= self.size - r and r <= pos[2] <= self.size - r
        if not inside or self.intersect(self.box, pos, r):
            raise ValueError(
                f"options['box_pos']={tuple(xz)} puts the goal box outside the {self.size:g} m "
                "room or into a wall, distractor or the agent; pick a free (x, z)"
            )
        self.box.pos = pos

    # --------------------------------------------------------------- gym API
    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        self.textures = room_textures(options)
        box_pos = (options or {}).get("box_pos")
        self._box_pos = None if box_pos is None else (float(box_pos[0]), float(box_pos[1]))
        obs, _ = super().reset(seed=seed, options=options)
        self._map_cache.clear()
        self._trail_cache.clear()
        self._path = [self._agent_xz()]
        return obs, self._info(success=False)

    def step(self, action) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        a = int(action)
        if not 0 <= a < len(ACTION_NAMES):
            raise ValueError(f"action {action!r} is invalid; expected 0..2 ({ACTION_NAMES})")
        obs, _, _, truncated, _ = super().step(_TO_MINIWORLD[a])
        self._path.append(self._agent_xz())
        success = bool(self.near(self.box))
        reward = float(self._reward()) if success else 0.0
        if success:
            truncated = False
        return obs, reward, success, bool(truncated), self._info(success=success)

    def close(self) -> None:
        super().close()
        if getattr(self, "shadow_window", None) is None:
            return
        self.shadow_window.switch_to()
        if self._lists_count:
            gl.glDeleteLists(self._lists_base, self._lists_count)
            self._lists_count = 0
        for fb in (getattr(self, "obs_fb", None), getattr(self, "vis_fb", None)):
            if fb is not None:
                _delete_frame_buffer(fb)
        self.obs_fb = self.vis_fb = None
        self.shadow_window.close()
        self.shadow_window = None

    # ------------------------------------------------------------- rendering
    def _render_static(self) -> None:
        """MiniWorld's static display list, but in lists this env owns.

        MiniWorld hard-codes display list 1, which every env in a process shares (one GL object
        space): two envs in one process would draw each other's rooms. We also compile one list per
        box for the mask pass.
        """
        n_ents = 1 + len(self.distractors)
        if self._lists_count < 1 + n_ents:
            if self._lists_count:
                gl.glDeleteLists(self._lists_base, self._lists_count)
            count = 2 + n_ents
            base = gl.glGenLists(count)
            if base == 0:
                raise RuntimeError("glGenLists failed")
            if base == 1:  # leave name 1 to MiniWorld (it deletes/recreates it on every reset)
                base, count = 2, count - 1
            self._lists_base, self._lists_count = base, count
        self._static_list = self._lists_base
        self._ent_lists = [self._lists_base + 1 + i for i in range(n_ents)]

        gl.glNewList(self._static_list, gl.GL_COMPILE)
        # Exactly MiniWorld's calls: light_pos is an ndarray, so `+ [1]` adds 1 to each coordinate
        # and w stays 0 (a directional light). Kept as is so frames match MiniWorld's.
        gl.glLightfv(gl.GL_LIGHT0, gl.GL_POSITION, (gl.GLfloat * 4)(*self.light_pos + [1]))
        gl.glLightfv(gl.GL_LIGHT0, gl.GL_AMBIENT, (gl.GLfloat * 4)(*self.light_ambient))
        gl.glLightfv(gl.GL_LIGHT0, gl.GL_DIFFUSE, (gl.GLfloat * 4)(*self.light_color))
        gl.glEnable(gl.GL_LIGHTING)
        gl.glEnable(gl.GL_LIGHT0)
        gl.glShadeModel(gl.GL_SMOOTH)
        gl.glEnable(gl.GL_COLOR_MATERIAL)
        gl.glColorMaterial(gl.GL_FRONT_AND_BACK, gl.GL_AMBIENT_AND_DIFFUSE)
        gl.glEnable(gl.GL_TEXTURE_2D)
        for room in self.rooms:
            room._render()
        for ent in self.entities:
            if ent.is_static:
                ent.render()
        gl.glEndList()

        # Geometry only (same transforms as Box.render, hence the same depth values).
        for list_id, ent in zip(self._ent_lists, [self.box, *self.distractors], strict=True):
            sx, sy, sz = ent.size
            gl.glNewList(list_id, gl.GL_COMPILE)
            gl.glPushMatrix()
            gl.glTranslatef(*ent.pos)
            gl.glRotatef(ent.dir * (180 / math.pi), 0, 1, 0)
            drawBox(x_min=-sx / 2, x_max=sx / 2, y_min=0, y_max=sy, z_min=-sz / 2, z_max=sz / 2)
            gl.glPopMatrix()
            gl.glEndList()

    def _render_world(self, frame_buffer, render_agent):
        gl.glCallList(self._static_list)
        for ent in self.entities:
            if not ent.is_static and ent is not self.agent:
                ent.render()
        if render_agent:
            self.agent.render()
        return frame_buffer.resolve()

    def _in_frustum(self, ents: list) -> list[int]:
        """Indices of the entities whose bounding circle may be in the horizontal view frustum."""
        cam = self.agent.cam_pos
        fx, fz = math.cos(self.agent.dir), -math.sin(self.agent.dir)
        half_fov_y = math.radians(self.agent.cam_fov_y) / 2
        half_fov_x = math.atan(math.tan(half_fov_y) * self.obs_fb.width / self.obs_fb.height)
        keep = []
        for i, ent in enumerate(ents):
            dx, dz = ent.pos[0] - cam[0], ent.pos[2] - cam[2]
            dist = math.hypot(dx, dz)
            if dist <= ent.radius + 0.05:
                keep.append(i)
                continue
            ang = abs(math.atan2(fx * dz - fz * dx, fx * dx + fz * dz))
            if ang <= half_fov_x + math.asin(min(1.0, ent.radius / dist)) + 0.02:
                keep.append(i)
        return keep

    def _masks(self) -> np.ndarray:
        """Masks [1 + K, H, W] bool of the boxes in the last rendered observation (goal first).

        Must run right after ``render_obs()``: redraws each box that is in the view frustum into the
        observation's multisampled frame buffer with depth test EQUAL against the observation's own
        depth, flat white, one RGBA channel per box, so a pixel is set iff one of its samples shows
        that box. Resolves and reads back once per four boxes.
        """
        fb = self.obs_fb
        h, w = fb.height, fb.width
        ents = [self.box, *self.distractors]
        masks = np.zeros((len(ents), h, w), dtype=bool)
        todo = self._in_frustum(ents)
        if not todo:
            return masks
        if self._mask_buf is None or self._mask_buf.shape[:2] != (h, w):
            self._mask_buf = np.zeros((h, w, 4), dtype=np.uint8)
        buf = self._mask_buf
        ptr = buf.ctypes.data_as(ctypes.POINTER(gl.GLubyte))
        self.shadow_window.switch_to()
        for start in range(0, len(todo), 4):
            group = todo[start : start + 4]
            gl.glBindFramebuffer(gl.GL_FRAMEBUFFER, fb.multi_fbo)
            gl.glViewport(0, 0, w, h)
            gl.glPushAttrib(gl.GL_ALL_ATTRIB_BITS)
            gl.glDisable(gl.GL_LIGHTING)
            gl.glDisable(gl.GL_TEXTURE_2D)
            gl.glColorMask(True, True, True, True)
            gl.glClearColor(0, 0, 0, 0)
            gl.glClear(gl.GL_COLOR_BUFFER_BIT)
            gl.glDepthFunc(gl.GL_EQUAL)
            gl.glDepthMask(False)
            gl.glColor4f(1, 1, 1, 1)
            for ch, i in enumerate(group):
                gl.glColorMask(ch == 0, ch == 1, ch == 2, ch == 3)
                gl.glCallList(self._ent_lists[i])
            gl.glPopAttrib()
            gl.glBindFramebuffer(gl.GL_READ_FRAMEBUFFER, fb.multi_fbo)
            gl.glBindFramebuffer(gl.GL_DRAW_FRAMEBUFFER, fb.final_fbo)
            gl.glBlitFramebuffer(0, 0, w, h, 0, 0, w, h, gl.GL_COLOR_BUFFER_BIT, gl.GL_NEAREST)
            gl.glBindFramebuffer(gl.GL_FRAMEBUFFER, fb.final_fbo)
            gl.glPixelStorei(gl.GL_PACK_ALIGNMENT, 1)
            gl.glReadPixels(0, 0, w, h, gl.GL_RGBA, gl.GL_UNSIGNED_BYTE, ptr)
            gl.glBindFramebuffer(gl.GL_FRAMEBUFFER, 0)
            for ch, i in enumerate(group):
                masks[i] = buf[::-1, :, ch] > 0  # GL rows start at the bottom
        return masks

    # ----------------------------------------------------------- ground truth
    def _agent_xz(self) -> tuple[float, float]:
        return float(self.agent.pos[0]), float(self.agent.pos[2])

    def _info(self, success: bool) -> dict[str, Any]:
        info: dict[str, Any] = {"success": success}
        if not self.ground_truth:
            return info
        masks = self._masks()
        info["goal_mask"] = masks[0]
        info["distractor_masks"] = masks[1:]
        info["box_visible"] = bool(masks[0].any())
        info["agent_pos"] = np.array(self._agent_xz(), dtype=np.float32)
        info["agent_dir"] = _wrap_angle(float(self.agent.dir))
        info["box_pos"] = np.array(self.box.pos[[0, 2]], dtype=np.float32)
        info["distractor_pos"] = np.array(
            [d.pos[[0, 2]] for d in self.distractors], dtype=np.float32
        ).reshape(-1, 2)
        return info

    # -------------------------------------------------------------- top view
    def _map_transform(self, size: tuple[int, int]) -> tuple[float, float, float]:
        """Scale (px per metre) and offsets so that the room plus a margin fits ``size``."""
        h, w = size
        margin = 0.04 * max(self.max_x - self.min_x, self.max_z - self.min_z) + 0.1
        ext_x = self.max_x - self.min_x + 2 * margin
        ext_z = self.max_z - self.min_z + 2 * margin
        scale = min(w / ext_x, h / ext_z)
        off_x = (w - scale * (self.max_x - self.min_x)) / 2 - scale * self.min_x
        off_z = (h - scale * (self.max_z - self.min_z)) / 2 - scale * self.min_z
        return scale, off_x, off_z

    def world_to_map(self, pos, size: tuple[int, int] = (128, 128)) -> np.ndarray:
        """Map world positions to pixel coordinates of :meth:`top_down_map` of the same ``size``.

        Args:
            pos: [..., 2] (x, z) or [..., 3] (x, y, z) world coordinates.
            size: (H, W) of the map.

        Returns:
            float32 [..., 2] (column, row) pixel coordinates: x grows to the right, z downwards.
        """
        p = np.asarray(pos, dtype=np.float64)
        if p.shape[-1] == 3:
            p = p[..., [0, 2]]
        elif p.shape[-1] != 2:
            raise ValueError(f"pos has shape {p.shape}; expected [..., 2] (x, z) or [..., 3]")
        scale, off_x, off_z = self._map_transform(size)
        return np.stack([p[..., 0] * scale + off_x, p[..., 1] * scale + off_z], -1).astype(
            np.float32
        )

    def _box_corners(self, ent) -> np.ndarray:
        sx, _, sz = ent.size
        local = np.array([[-sx, -sz], [sx, -sz], [sx, sz], [-sx, sz]]) / 2
        c, s = math.cos(ent.dir), math.sin(ent.dir)
        # glRotatef(dir, 0, 1, 0): x' = x cos + z sin, z' = -x sin + z cos
        x = local[:, 0] * c + local[:, 1] * s + ent.pos[0]
        z = -local[:, 0] * s + local[:, 1] * c + ent.pos[2]
        return np.stack([x, z], -1)

    def _static_map(self, size: tuple[int, int]) -> np.ndarray:
        key = (int(size[0]), int(size[1]))
        cached = self._map_cache.get(key)
        if cached is not None:
            return cached
        ss = 3  # draw supersampled, then downsample: smooth edges, drawn once per episode
        big = (key[0] * ss, key[1] * ss)
        img = Image.new("RGB", (big[1], big[0]), _MAP_OUTSIDE)
        draw = ImageDraw.Draw(img)
        scale = self._map_transform(big)[0]
        for room in self.rooms:
            outline = [tuple(p) for p in self.world_to_map(room.outline[:, [0, 2]], big)]
            draw.polygon(outline, fill=_MAP_FLOOR)
            draw.line([*outline, outline[0]], fill=_MAP_WALL, width=max(1, round(0.12 * scale)))
        for ent in [*self.distractors, self.box]:
            corners = [tuple(p) for p in self.world_to_map(self._box_corners(ent), big)]
            colour = tuple(int(255 * c) for c in np.clip(ent.color_vec, 0, 1))
            draw.polygon(corners, fill=colour, outline=(0, 0, 0))
        out = np.asarray(img.resize((key[1], key[0]), Image.LANCZOS), dtype=np.uint8)
        out.setflags(write=False)
        self._map_cache[key] = out
        return out

    def top_down_map(self, size: tuple[int, int] = (128, 128)) -> np.ndarray:
        """Draw the room from above with the agent's pose and path so far.

        The static room (floor, walls, boxes in their colours) is drawn once per episode and size;
        the path is drawn incrementally onto a cached copy; each call only adds the new path
        segments and the agent's triangle (~0.1 ms at 128x128).

        Args:
            size: (H, W) of the image.

        Returns:
            uint8 [H, W, 3] RGB image, x to the right and z downwards (MiniWorld's top view);
            use :meth:`world_to_map` to draw on it.
        """
        key = (int(size[0]), int(size[1]))
        scale = self._map_transform(key)[0]
        trail = self._trail_cache.get(key)
        if trail is None:
            trail = [Image.fromarray(self._static_map(key)), 1]
            self._trail_cache[key] = trail
        img, drawn = trail
        if len(self._path) > drawn:
            pts = self.world_to_map(np.array(self._path[drawn - 1 :]), key)
            ImageDraw.Draw(img).line(
                [tuple(p) for p in pts], fill=_MAP_PATH, width=max(1, round(0.06 * scale))
            )
            trail[1] = len(self._path)
        img = img.copy()
        x, z = self._agent_xz()
        d = self.agent.dir
        fwd = np.array([math.cos(d), -math.sin(d)])
        right = np.array([math.sin(d), math.cos(d)])
        r = max(self.agent.radius, 2.5 / scale)
        p = np.array([x, z])
        back = p - 0.7 * r * fwd
        tri = np.stack([p + r * fwd, back + 0.7 * r * right, back - 0.7 * r * right])
        ImageDraw.Draw(img).polygon(
            [tuple(q) for q in self.world_to_map(tri, key)], fill=_MAP_AGENT
        )
        return np.asarray(img, dtype=np.uint8)


def _delete_frame_buffer(fb) -> None:
    """Free a MiniWorld FrameBuffer's GL objects (MiniWorld never does; 800x600 MSAA is ~40 MB)."""
    for fbo in (fb.multi_fbo, fb.final_fbo):
        gl.glBindFramebuffer(gl.GL_FRAMEBUFFER, fbo)
        for attachment in (gl.GL_COLOR_ATTACHMENT0, gl.GL_DEPTH_ATTACHMENT):
            kind, name = gl.GLint(0), gl.GLint(0)
            gl.glGetFramebufferAttachmentParameteriv(
                gl.GL_FRAMEBUFFER, attachment, gl.GL_FRAMEBUFFER_ATTACHMENT_OBJECT_TYPE, kind
            )
            gl.glGetFramebufferAttachmentParameteriv(
                gl.GL_FRAMEBUFFER, attachment, gl.GL_FRAMEBUFFER_ATTACHMENT_OBJECT_NAME, name
            )
            obj = gl.GLuint(name.value)
            if kind.value == gl.GL_TEXTURE:
                gl.glDeleteTextures(1, ctypes.byref(obj))
            elif kind.value == gl.GL_RENDERBUFFER:
                gl.glDeleteRenderbuffers(1, ctypes.byref(obj))
    gl.glBindFramebuffer(gl.GL_FRAMEBUFFER, 0)
    for fbo in (fb.multi_fbo, fb.final_fbo):
        gl.glDeleteFramebuffers(1, ctypes.byref(fbo))
