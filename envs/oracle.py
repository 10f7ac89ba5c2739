"""Scripted oracle for BoxReach: the yardstick for learned policies (mean steps vs oracle).

:class:`CameraLimitedOracle` is what a camera allows: it knows nothing of the box until the box
first shows in its image, so it is the bar a pixel agent can reach (~1.07x the oracle's steps).

The oracle reads the true layout from ``env.unwrapped`` (no pixels). Once per episode it computes a
distance-to-goal field on a 0.1 m grid of the room (walls and distractor boxes inflated by the
agent's radius, a soft penalty near them). Each step it picks the heading whose look-ahead point
(about 1 m away, reachable in a straight collision-free line) is closest to the goal along that
field, turns toward it, or walks when it is already facing it within half a turn step. In an empty
room that is "turn toward the red box and walk to it"; distractors are steered around.
"""

from __future__ import annotations

import math
import weakref

import numpy as np

__all__ = ["CameraLimitedOracle", "OracleAgent", "goal_distance", "oracle_action", "steps_to_go"]

_LEFT, _FORWARD, _RIGHT = 0, 1, 2
_CELL = 0.1  # metres
_MARGIN = 0.25  # metres of soft clearance kept from walls and distractors
_MARGIN_COST = 4.0  # cost multiplier inside the margin
_N_HEADINGS = 72

_fields: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


class _Field:
    """Geodesic distance (metres) from each grid cell to the goal's reach region; inf = blocked."""

    def __init__(self, u) -> None:
        self.x0, self.z0 = u.min_x, u.min_z
        nx = int(math.ceil((u.max_x - u.min_x) / _CELL)) + 1
        nz = int(math.ceil((u.max_z - u.min_z) / _CELL)) + 1
        xs = self.x0 + _CELL * np.arange(nx)
        zs = self.z0 + _CELL * np.arange(nz)
        x, z = np.meshgrid(xs, zs, indexing="xy")  # [nz, nx]
        r = u.agent.radius
        # Clearance to walls (single rectangular room: distance to the nearest side).
        clear = np.minimum.reduce([x - u.min_x, u.max_x - x, z - u.min_z, u.max_z - z]) - r
        for b in u.distractors:
            d = np.hypot(x - b.pos[0], z - b.pos[2]) - (b.radius + r)
            clear = np.minimum(clear, d)
        gd = np.hypot(x - u.box.pos[0], z - u.box.pos[2])
        clear = np.minimum(clear, gd - (u.box.radius + r))
        reach = u.box.radius + r + 1.1 * u.params.get_max("forward_step")
        cost = np.where(clear < _MARGIN, _MARGIN_COST, 1.0)
        cost[clear < 0] = np.inf
        dist = np.full(x.shape, np.inf)
        dist[(gd < reach - 0.05) & (clear >= 0)] = 0.0  # free cells within reach of the goal
        # Bellman-Ford relaxation over the 8-neighbourhood, vectorised (converges in path length).
        shifts = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if dy or dx]
        for _ in range(4 * (nx + nz)):
            new = dist.copy()
            for dy, dx in shifts:
                step = _CELL * math.hypot(dy, dx)
                src = np.full(dist.shape, np.inf)
                src[max(dy, 0) : nz + min(dy, 0), max(dx, 0) : nx + min(dx, 0)] = dist[
                    max(-dy, 0) : nz + min(-dy, 0), max(-dx, 0) : nx + min(-dx, 0)
                ]
                np.minimum(new, src + step * cost, out=new)
            if np.array_equal(new, dist):
                break
            dist = new
        self.dist = dist

    def sample(self, x: np.ndarray, z: np.ndarray) -> np.ndarray:
        """Bilinear lookup over the unblocked corner cells; inf if all four are blocked/outside."""
        fx = (x - self.x0) / _CELL
        fz = (z - self.z0) / _CELL
        nz, nx = self.dist.shape
        ix = np.clip(np.floor(fx).astype(int), 0, nx - 2)
        iz = np.clip(np.floor(fz).astype(int), 0, nz - 2)
        tx = np.clip(fx - ix, 0, 1)
        tz = np.clip(fz - iz, 0, 1)
        corners = (
            (self.dist[iz, ix], (1 - tx) * (1 - tz)),
            (self.dist[iz, ix + 1], tx * (1 - tz)),
            (self.dist[iz + 1, ix], (1 - tx) * tz),
            (self.dist[iz + 1, ix + 1], tx * tz),
        )
        num = np.zeros_like(fx)
        den = np.zeros_like(fx)
        for d, w in corners:
            ok = np.isfinite(d)
            num += np.where(ok, d, 0.0) * w
            den += np.where(ok, w, 0.0)
        outside = (fx < 0) | (fz < 0) | (fx > nx - 1) | (fz > nz - 1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(outside | (den < 1e-6), np.inf, num / den)


def _field(u) -> _Field:
    key = (id(u.box), tuple(u.box.pos), tuple(tuple(b.pos) for b in u.distractors))
    cached = _fields.get(u)
    if cached is None or cached[0] != key:
        cached = (key, _Field(u))
        _fields[u] = cached
    return cached[1]


def goal_distance(env) -> float:
    """Walking cost from the agent to the red box's reach region, around distractors.

    In metres, except that steps within 25 cm of a wall or distractor count 4x (the oracle's
    clearance margin), so hugging obstacles costs more. Zero once the agent is within reach; inf
    only if the agent is somehow inside an obstacle. The trainer's progress reward
    (``agents.train.Config.progress_reward``) is built on it.
    """
    u = env.unwrapped
    d = _field(u).sample(np.array([float(u.agent.pos[0])]), np.array([float(u.agent.pos[2])]))
    return float(d[0])


def _heading_error(env) -> float:
    """Radians to turn (positive: left) to face the oracle's chosen heading."""
    u = env.unwrapped
    field = _field(u)
    ax, az = float(u.agent.pos[0]), float(u.agent.pos[2])
    fwd_step = float(u.params.sample(None, "forward_step"))
    look = max(1.0, 1.5 * fwd_step)

    # Candidate headings on a fixed absolute grid (so the choice does not depend on the current
    # heading: no left-right dithering), with points along each ray up to `look`.
    ang = np.linspace(-math.pi, math.pi, _N_HEADINGS, endpoint=False)
    rel = (ang - u.agent.dir + math.pi) % (2 * math.pi) - math.pi
    ts = np.arange(1, 21) / 20 * look  # 5 cm apart for the default look-ahead
    px = ax + np.cos(ang)[:, None] * ts[None, :]
    pz = az - np.sin(ang)[:, None] * ts[None, :]  # dir_vec = (cos d, -sin d) in (x, z)
    vals = field.sample(px, pz)  # [headings, points]
    # A heading scores the field value at its farthest point, blocked if any point is blocked,
    # and 0 if the ray enters the goal's reach region before anything blocks it.
    clear_prefix = np.cumprod(np.isfinite(vals), axis=1).astype(bool)
    reached = (clear_prefix & (vals <= 0.05)).any(1)
    score = np.where(reached, 0.0, np.where(clear_prefix[:, -1], vals[:, -1], np.inf))
    if not np.isfinite(score).any():  # pinned against something: any heading with a way out
        score = np.where(np.isfinite(vals[:, -1]), vals[:, -1], 1e9)
    # A heading whose very next step would bump into a box or wall is no good either.
    nx_, nz_ = ax + fwd_step * np.cos(ang), az - fwd_step * np.sin(ang)
    r = u.agent.radius
    bump = (nx_ < u.min_x + r) | (nx_ > u.max_x - r) | (nz_ < u.min_z + r) | (nz_ > u.max_z - r)
    for b in u.distractors:
        bump |= np.hypot(nx_ - b.pos[0], nz_ - b.pos[2]) < b.radius + r
    if not bump.all():
        score = np.where(bump, np.inf, score)
    score = score + 1e-3 * np.abs(rel)  # ties (e.g. inside the reach region): turn least
    return float(rel[int(np.argmin(score))])


def steps_to_go(env) -> float:
    """The oracle's cost to go, in steps: walking distance / forward step plus the turn steps to
    face its heading. A potential for the trainer's progress shaping that also counts turning
    the short way round as progress (a policy can otherwise settle on turning one way only)."""
    u = env.unwrapped
    fwd_step = float(u.params.sample(None, "forward_step"))
    turn = math.radians(float(u.params.sample(None, "turn_step")))
    return goal_distance(env) / fwd_step + abs(_heading_error(env)) / turn


def oracle_action(env) -> int:
    """Return the oracle's action (0 left, 1 forward, 2 right) for a BoxReach env (or wrapper)."""
    u = env.unwrapped
    fwd_step = float(u.params.sample(None, "forward_step"))
    turn = math.radians(float(u.params.sample(None, "turn_step")))
    err = _heading_error(env)

    def blocked(heading: float) -> bool:
        nxt = u.agent.pos + fwd_step * np.array([math.cos(heading), 0.0, -math.sin(heading)])
        hit = u.intersect(u.agent, nxt, u.agent.radius)
        return hit is not None and hit is not u.box

    d = u.agent.dir
    if abs(err) <= turn / 2:
        if not blocked(d):
            return _FORWARD
        # Facing the right way but would bump into something: turn to a free side.
        first, second = (_LEFT, _RIGHT) if err >= 0 else (_RIGHT, _LEFT)
        return first if not blocked(d + (turn if first == _LEFT else -turn)) else second
    side = 1.0 if err > 0 else -1.0
    if abs(err) <= turn and blocked(d + side * turn) and not blocked(d):
        return _FORWARD  # turning back would face the obstacle we just turned away from
    return _LEFT if side > 0 else _RIGHT


class OracleAgent:
    """Scripted policy with the ``act(env) -> int`` interface; see :func:`oracle_action`."""

    def act(self, env) -> int:
        """Return the next action (0 left, 1 forward, 2 right) for ``env``."""
        return oracle_action(env)

    def __call__(self, env) -> int:
        return oracle_action(env)


class CameraLimitedOracle:
    """What a camera allows: turn in place one way until the red box first shows in the camera
    image (the env's ``box_visible`` ground truth), then act as the oracle.

    It needs the env made with ground truth (``info["box_visible"]``). One object per episode:
    call :meth:`act` with the latest info, the reset's first.
    """

    def __init__(self, turn: str = "right") -> None:
        if turn not in ("left", "right"):
            raise ValueError(f"turn={turn!r}; expected 'left' or 'right'")
        self.turn = _LEFT if turn == "left" else _RIGHT
        self.seen = False

    def act(self, env, info: dict) -> int:
        """The next action given the latest ``info`` (from the reset or the previous step)."""
        if "box_visible" not in info:
            raise ValueError(
                "CameraLimitedOracle needs the env's ground truth (info['box_visible']); "
                "make the env with ground_truth=True"
            )
        self.seen = self.seen or bool(info["box_visible"])
        return oracle_action(env) if self.seen else self.turn
