"""Environment workers in subprocesses, stepped in groups so the learner never waits for the renderer.

MiniWorld's software renderer takes a whole core per step, so the trainer keeps the envs in worker
processes and splits each worker's envs into groups ("slots"). While a worker renders one group,
the main process reads the previous group's frames and picks its next actions: rendering and
inference overlap, and the worker never idles as long as inference for a group is faster than
rendering the other group.

The module does not import torch, so workers start fast and stay small (a frame stack imports it
through :mod:`envs.wrappers`, which declares the stack's rlviz layout); the trainer's process never
creates an environment (the workers report the spaces).

Episode seeds: episode ``e`` of env ``i`` is reset with a seed drawn from
``np.random.default_rng([seed, i, e])`` in ``[0, seed_range)`` (1e6 by default), so training
never uses seeds >= 1e6 and held-out evaluation can start there. Knowing ``e`` per env (see
:attr:`EnvPool.episode_counts`) is enough to continue the same seed sequence after ``--resume``.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import traceback
from dataclasses import dataclass
from typing import Any

import numpy as np

TRAIN_SEED_RANGE = 10**6


def episode_seed(
    seed: int, env_index: int, episode: int, seed_range: int = TRAIN_SEED_RANGE
) -> int:
    """The reset seed of episode ``episode`` of env ``env_index`` in a run seeded ``seed``."""
    return int(np.random.default_rng([seed, env_index, episode]).integers(0, seed_range))


def register_optional_envs(env_id: str) -> None:
    """Register the ids of an installed package that Gymnasium does not import by itself:
    ale-py's ``ALE/*`` (gymnasium >= 1.0 needs ``gym.register_envs(ale_py)``)."""
    import gymnasium as gym

    if env_id.startswith("ALE/") and env_id not in gym.registry:
        try:
            import ale_py
        except ImportError:
            return  # gym.make then says which package the namespace needs
        gym.register_envs(ale_py)


def make_env(env_id: str, env_kwargs: dict | None = None, frame_stack: int = 1):
    """Create ``env_id`` with ``gymnasium.make`` after registering and preparing rlviz's envs.

    Args:
        env_id, env_kwargs: what ``gymnasium.make`` gets.
        frame_stack: K > 1 wraps the env in :class:`envs.wrappers.StackFrames` (the last K frames
            on the channel axis, oldest first); 1 returns the env's own frames.
    """
    import gymnasium as gym

    if int(frame_stack) < 1:
        raise ValueError(f"frame_stack={frame_stack}; expected K >= 1 (1: no stacking)")
    if frame_stack > 1:
        # Before the first env: the wrapper imports torch, which must not follow a GL context.
        from rlviz.envs.wrappers import StackFrames
    try:
        from rlviz import envs  # registers rlviz/* ids and knows how to start MiniWorld headless

        envs.prepare()
    except ImportError:  # used outside the rlviz repo: plain Gymnasium ids still work
        pass
    if env_id.startswith("MiniWorld-"):
        import miniworld  # noqa: F401  (registers MiniWorld-* ids)
    register_optional_envs(env_id)
    try:
        env = gym.make(env_id, **(env_kwargs or {}))
    except gym.error.Error as exc:
        raise ValueError(
            f"could not make env {env_id!r} with kwargs {env_kwargs or {}} ({exc}); registered "
            "rlviz ids: " + ", ".join(k for k in gym.registry if k.startswith("rlviz/"))
        ) from None
    return StackFrames(env, frame_stack) if frame_stack > 1 else env


def newest_frame(obs: np.ndarray, frame_stack: int) -> np.ndarray:
    """The newest frame of observation ``[H, W, K*C]`` stacked by :func:`make_env` (K =
    ``frame_stack``): its last C channels."""
    return obs[..., obs.shape[-1] - obs.shape[-1] // frame_stack :]


@dataclass
class Episode:
    """A finished episode, as a worker reports it."""

    env: int
    seed: int
    ret: float
    length: int
    success: bool
    stuck: int = 0
    """Steps that left the frame unchanged (walking into a wall or box)."""


class RewardShaping:
    """The reward the trainer learns from, for one env; episode statistics keep the env's own.

    The env's reward, minus ``stuck_penalty`` for a step that leaves the newest frame unchanged
    (the agent walked into a wall or a box), plus ``progress_reward`` per metre of walking
    distance gained toward the goal box (:func:`envs.oracle.goal_distance`; BoxReach only), or with
    ``progress_turns`` per forward-step metre of the oracle's steps to go (turns included,
    :func:`envs.oracle.steps_to_go`).

    Args:
        env: the env (possibly wrapped in a frame stack of ``frame_stack`` frames).
        stuck_penalty, progress_reward, progress_turns: see :class:`EnvPool`.
        frame_stack: K of the observations, whose newest frames the stuck test compares.
    """

    def __init__(
        self,
        env,
        stuck_penalty: float = 0.0,
        progress_reward: float = 0.0,
        frame_stack: int = 1,
        progress_turns: bool = False,
    ) -> None:
        self.env = env
        self.stuck_penalty = float(stuck_penalty)
        self.progress_reward = float(progress_reward)
        self.frame_stack = int(frame_stack)
        self._last: np.ndarray | None = None
        self._goal_dist = 0.0
        if self.progress_reward:
            if getattr(env.unwrapped, "distractors", None) is None:
                raise ValueError(
                    f"progress_reward needs a BoxReach env (goal box known to the oracle); "
                    f"{env.unwrapped!r} has none. Use progress_reward=0 for other envs."
                )
            from rlviz.envs.oracle import goal_distance, steps_to_go

            # The potential, in metres: walking distance, or with progress_turns the oracle's
            # steps to go (turns included) in forward-step metres.
            if progress_turns:
                step = float(env.unwrapped.params.sample(None, "forward_step"))
                self._metres_to_go = lambda e: steps_to_go(e) * step
            else:
                self._metres_to_go = goal_distance

    def _distance(self) -> float:
        return self._metres_to_go(self.env)

    def reset(self, obs: np.ndarray) -> None:
        """Start an episode whose first observation is ``obs``."""
        self._last = obs
        if self.progress_reward:
            self._goal_dist = self._distance()

    def step(self, obs: np.ndarray, reward: float, ended: bool) -> tuple[float, bool]:
        """``(shaped reward, stuck)`` of the step that returned ``obs`` and ``reward``."""
        # Only the newest frame counts: two stacks differ whenever an older frame does.
        stuck = not ended and np.array_equal(
            newest_frame(obs, self.frame_stack), newest_frame(self._last, self.frame_stack)
        )
        shaped = float(reward) - self.stuck_penalty * stuck
        if self.progress_reward:
            # Potential-based shaping (Ng et al. 1999, gamma = 1): metres of walking distance
            # gained toward the box, so it sums to a constant per episode and leaves the best
            # policy unchanged while telling the agent early which steps help, e.g. going around
            # a distractor rather than into it.
            d = self._distance()
            if np.isfinite(d) and np.isfinite(self._goal_dist):
                shaped += self.progress_reward * (self._goal_dist - d)
            self._goal_dist = d
        self._last = obs
        return shaped, bool(stuck)


def _worker(
    conn,
    env_id,
    env_kwargs,
    lo,
    hi,
    groups,
    seed,
    counts,
    seed_range,
    stuck_penalty,
    progress_reward,
    frame_stack,
    progress_turns=False,
):
    # Nothing in a worker uses torch, so skip envs' torch._dynamo pre-import (~2 s per worker).
    os.environ.setdefault("RLVIZ_SKIP_DYNAMO_PREIMPORT", "1")
    try:
        env_list = [make_env(env_id, env_kwargs, frame_stack) for _ in range(lo, hi)]
        shaping = [
            RewardShaping(env, stuck_penalty, progress_reward, frame_stack, progress_turns)
            for env in env_list
        ]
        ep_count = list(counts)
        ep_ret = [0.0] * (hi - lo)
        ep_len = [0] * (hi - lo)
        ep_seed = [0] * (hi - lo)
        ep_stuck = [0] * (hi - lo)

        def reset(j: int) -> np.ndarray:
            ep_seed[j] = episode_seed(seed, lo + j, ep_count[j], seed_range)
            ep_ret[j], ep_len[j], ep_stuck[j] = 0.0, 0, 0
            obs = env_list[j].reset(seed=ep_seed[j])[0]
            shaping[j].reset(obs)
            return obs

        conn.send(("ok", (env_list[0].observation_space, env_list[0].action_space)))
        while True:
            cmd, arg = conn.recv()
            if cmd == "reset":
                conn.send(("ok", np.stack([reset(j) for j in range(hi - lo)])))
            elif cmd == "step":
                group, actions = arg
                g_lo, g_hi = groups[group]
                n = g_hi - g_lo
                obs = None
                rewards = np.zeros(n, np.float32)
                terms = np.zeros(n, bool)
                truncs = np.zeros(n, bool)
                finished = []
                for k in range(n):
                    i = g_lo + k
                    j = i - lo
                    o, r, term, trunc, info = env_list[j].step(int(actions[k]))
                    ep_ret[j] += float(r)  # episode statistics keep the env's own reward
                    ep_len[j] += 1
                    rewards[k], stuck = shaping[j].step(o, r, term or trunc)
                    ep_stuck[j] += stuck
                    terms[k], truncs[k] = term, trunc
                    if term or trunc:
                        success = bool(info.get("success", term and r > 0))
                        finished.append(
                            Episode(i, ep_seed[j], ep_ret[j], ep_len[j], success, ep_stuck[j])
                        )
                        ep_count[j] += 1
                        o = reset(j)
                    if obs is None:
                        obs = np.empty((n, *o.shape), o.dtype)
                    obs[k] = o
                # Frames travel pickled through the pipe: ~0.1 ms for 8 frames of 60x80, noise
                # next to the ~1 ms each env step costs to render.
                conn.send(("ok", (obs, rewards, terms, truncs, finished)))
            elif cmd == "close":
                for env in env_list:
                    env.close()
                conn.send(("ok", None))
                return
            else:
                raise ValueError(f"unknown command {cmd!r}")
    except (KeyboardInterrupt, BrokenPipeError, EOFError):
        return
    except BaseException:
        try:
            conn.send(("error", traceback.format_exc()))
        except (BrokenPipeError, OSError):
            pass


class EnvPool:
    """``num_envs`` envs in ``num_workers`` processes, stepped as ``num_workers * groups`` slots.

    Args:
        env_id, env_kwargs: what :func:`make_env` creates in each worker.
        num_envs: total envs; must split evenly into slots.
        num_workers: worker processes (each renders on one core).
        groups: slots per worker; 2 lets a worker render one group while the learner acts on the
            other.
        seed: run seed (episode seeds derive from it, see the module docstring).
        episode_counts: episodes already played per env (to continue a resumed run's seeds).
        seed_range: episode seeds are drawn from ``[0, seed_range)``.
        stuck_penalty: subtracted from the reward of a step after which the frame is unchanged
            (the agent walked into a wall or box); episode statistics keep the env's reward.
        progress_reward: added per metre of walking distance gained toward the goal box
            (:func:`envs.oracle.goal_distance`; BoxReach envs only; 0 turns it off). Training-only
            privileged information: the policy still sees pixels alone.
        progress_turns: the progress potential also counts turn steps toward the oracle's
            heading (:func:`envs.oracle.steps_to_go`).
        frame_stack: K > 1 stacks each env's last K frames on the channel axis (see
            :func:`make_env`); the stuck test compares the newest frames only.

    Slot ``s`` covers envs ``slots[s] = (lo, hi)``. Use :meth:`step_async` / :meth:`step_wait` per
    slot.
    """

    def __init__(
        self,
        env_id: str,
        env_kwargs: dict | None = None,
        num_envs: int = 8,
        num_workers: int = 1,
        groups: int = 2,
        seed: int = 0,
        episode_counts: list[int] | None = None,
        seed_range: int = TRAIN_SEED_RANGE,
        stuck_penalty: float = 0.0,
        progress_reward: float = 0.0,
        frame_stack: int = 1,
        progress_turns: bool = False,
    ) -> None:
        if num_workers < 1 or groups < 1 or num_envs % (num_workers * groups):
            raise ValueError(
                f"num_envs={num_envs} must split evenly into num_workers={num_workers} x "
                f"groups={groups} slots; choose num_envs as a multiple of {num_workers * groups}"
            )
        counts = list(episode_counts) if episode_counts is not None else [0] * num_envs
        if len(counts) != num_envs:
            raise ValueError(f"episode_counts has {len(counts)} entries for {num_envs} envs")
        self.num_envs = num_envs
        self.seed = seed
        self.frame_stack = int(frame_stack)
        self.episode_counts = counts
        self._closed = True  # until the workers are up

        ctx = mp.get_context("spawn")  # never fork a process that may hold a GL context or threads
        per_worker = num_envs // num_workers
        per_slot = per_worker // groups
        self.slots: list[tuple[int, int]] = []
        self._slot_worker: list[int] = []
        self._slot_group: list[int] = []
        self._conns = []
        self._procs = []
        for w in range(num_workers):
            lo, hi = w * per_worker, (w + 1) * per_worker
            worker_groups = [(lo + g * per_slot, lo + (g + 1) * per_slot) for g in range(groups)]
            for g, bounds in enumerate(worker_groups):
                self.slots.append(bounds)
                self._slot_worker.append(w)
                self._slot_group.append(g)
            parent, child = ctx.Pipe()
            proc = ctx.Process(
                target=_worker,
                args=(
                    child,
                    env_id,
                    env_kwargs or {},
                    lo,
                    hi,
                    worker_groups,
                    seed,
                    counts[lo:hi],
                    seed_range,
                    float(stuck_penalty),
                    float(progress_reward),
                    int(frame_stack),
                    bool(progress_turns),
                ),
                daemon=True,
                name=f"rlviz-env-{w}",
            )
            proc.start()
            child.close()
            self._conns.append(parent)
            self._procs.append(proc)
        self._pending = [False] * len(self.slots)
        self._closed = False
        spaces = [self._recv(w) for w in range(num_workers)]
        space, self.action_space = spaces[0]
        if space.dtype != np.uint8 or len(space.shape) != 3:
            self.close()
            raise ValueError(
                f"env {env_id!r} observes {space}; the trainer needs uint8 images [H, W, C]"
            )
        self.obs_shape = tuple(space.shape)
        self.obs = np.zeros((num_envs, *self.obs_shape), np.uint8)

    def _recv(self, w: int) -> Any:
        try:
            status, payload = self._conns[w].recv()
        except (EOFError, ConnectionResetError):
            code = self._procs[w].exitcode
            self.close()
            raise RuntimeError(f"env worker {w} died (exit code {code})") from None
        if status == "error":
            self.close()
            raise RuntimeError(f"env worker {w} failed:\n{payload}")
        return payload

    def reset(self) -> np.ndarray:
        """Reset every env (next seeds of their sequences).

        Returns:
            uint8 [N, H, W, C], the first observation of each env.
        """
        for conn in self._conns:
            conn.send(("reset", None))
        per_worker = self.num_envs // len(self._conns)
        for w in range(len(self._conns)):
            self.obs[w * per_worker : (w + 1) * per_worker] = self._recv(w)
        return self.obs

    def step_async(self, slot: int, actions: np.ndarray) -> None:
        """Start stepping the envs of ``slot`` with ``actions`` [n_slot] (int)."""
        if self._pending[slot]:
            raise RuntimeError(f"step_async({slot}) twice without step_wait({slot})")
        actions = np.asarray(actions, dtype=np.int64).copy()
        self._conns[self._slot_worker[slot]].send(("step", (self._slot_group[slot], actions)))
        self._pending[slot] = True

    def step_wait(
        self, slot: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[Episode]]:
        """Wait for ``slot``'s step.

        Returns:
            ``(obs [n, H, W, C] uint8, rewards [n] float32, terminated [n] bool, truncated [n]
            bool, finished episodes)``; an env that ended was reset, and its obs is the first of
            the next episode.
        """
        if not self._pending[slot]:
            raise RuntimeError(f"step_wait({slot}) without step_async({slot})")
        obs, rewards, terms, truncs, finished = self._recv(self._slot_worker[slot])
        self._pending[slot] = False
        for ep in finished:
            self.episode_counts[ep.env] += 1
        return obs, rewards, terms, truncs, finished

    def close(self) -> None:
        """Stop the workers (idempotent)."""
        if getattr(self, "_closed", True):
            return
        self._closed = True
        for w, conn in enumerate(self._conns):
            try:
                # Drain replies still owed, then ask the worker to close its envs.
                for s, pending in enumerate(self._pending):
                    if pending and self._slot_worker[s] == w:
                        conn.recv()
                conn.send(("close", None))
                if conn.poll(10):
                    conn.recv()
            except (BrokenPipeError, EOFError, OSError):
                pass
        for proc in self._procs:
            proc.join(timeout=5)
            if proc.is_alive():
                proc.terminate()
                proc.join(timeout=1)
        for conn in self._conns:
            conn.close()

    def __enter__(self) -> EnvPool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass
