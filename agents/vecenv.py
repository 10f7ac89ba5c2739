"""Environment workers in subprocesses, stepped in groups so the learner never waits for the renderer.

MiniWorld's software renderer takes a whole core per step, so the trainer keeps the envs in worker
processes and splits each worker's envs into groups ("slots"). While a worker renders one group,
the main process reads the previous group's frames and picks its next actions: rendering and
inference overlap, and the worker never idles as long as inference for a group is faster than
rendering the other group.

Observations come back through shared memory (no pickling of frames); rewards and flags too. The
module does not import torch, so workers start fast and stay small.

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


def episode_seed(seed: int, env_index: int, episode: int, seed_range: int = TRAIN_SEED_RANGE) -> int:
    """The reset seed of episode ``episode`` of env ``env_index`` in a run seeded ``seed``."""
    return int(np.random.default_rng([seed, env_index, episode]).integers(0, seed_range))


def make_env(env_id: str, env_kwargs: dict | None = None):
    """Create ``env_id`` with ``gymnasium.make`` after registering and preparing rlviz's envs."""
    import gymnasium as gym

    try:
        import envs  # registers rlviz/* ids and knows how to start MiniWorld headless

        envs.prepare()
    except ImportError:  # used outside the rlviz repo: plain Gymnasium ids still work
        pass
    if env_id.startswith("MiniWorld-"):
        import miniworld  # noqa: F401  (registers MiniWorld-* ids)
    try:
        return gym.make(env_id, **(env_kwargs or {}))
    except gym.error.Error as exc:
        raise ValueError(
            f"could not make env {env_id!r} with kwargs {env_kwargs or {}} ({exc}); registered "
            "rlviz ids: " + ", ".join(k for k in gym.registry if k.startswith("rlviz/"))
        ) from None


@dataclass
class Episode:
    """A finished episode, as a worker reports it."""

    env: int
    seed: int
    ret: float
    length: int
    success: bool


def _worker(conn, env_id, env_kwargs, lo, hi, groups, shared, shape, seed, counts, seed_range):
    # Never import torch._dynamo here (nothing in the worker uses torch), saving ~2 s per worker.
    os.environ.setdefault("RLVIZ_SKIP_DYNAMO_PREIMPORT", "1")
    try:
        n_total = shared["n"]
        obs = np.frombuffer(shared["obs"], dtype=np.uint8).reshape(n_total, *shape)
        actions = np.frombuffer(shared["actions"], dtype=np.int64)
        rewards = np.frombuffer(shared["rewards"], dtype=np.float32)
        terms = np.frombuffer(shared["terms"], dtype=np.uint8)
        truncs = np.frombuffer(shared["truncs"], dtype=np.uint8)
        env_list = [make_env(env_id, env_kwargs) for _ in range(lo, hi)]
        ep_count = list(counts)
        ep_ret = [0.0] * (hi - lo)
        ep_len = [0] * (hi - lo)
        ep_seed = [0] * (hi - lo)

        def reset(j: int) -> np.ndarray:
            i = lo + j
            ep_seed[j] = episode_seed(seed, i, ep_count[j], seed_range)
            ep_ret[j], ep_len[j] = 0.0, 0
            o, _ = env_list[j].reset(seed=ep_seed[j])
            return o

        conn.send(("ready", None))
        while True:
            cmd, arg = conn.recv()
            if cmd == "reset":
                for j in range(hi - lo):
                    obs[lo + j] = reset(j)
                conn.send(("ok", None))
            elif cmd == "step":
                g_lo, g_hi = groups[arg]
                finished = []
                for i in range(g_lo, g_hi):
                    j = i - lo
                    o, r, term, trunc, info = env_list[j].step(int(actions[i]))
                    ep_ret[j] += float(r)
                    ep_len[j] += 1
                    rewards[i], terms[i], truncs[i] = r, term, trunc
                    if term or trunc:
                        success = bool(info.get("success", term and r > 0))
                        finished.append(Episode(i, ep_seed[j], ep_ret[j], ep_len[j], success))
                        ep_count[j] += 1
                        o = reset(j)
                    obs[i] = o
                conn.send(("ok", finished))
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

    Slot ``s`` covers envs ``slots[s] = (lo, hi)``. Use :meth:`step_async` / :meth:`step_wait` per
    slot; a slot's observation view is valid until its next :meth:`step_async`.
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
    ) -> None:
        if num_workers < 1 or groups < 1 or num_envs % (num_workers * groups):
            raise ValueError(
                f"num_envs={num_envs} must split evenly into num_workers={num_workers} x "
                f"groups={groups} slots; choose num_envs as a multiple of {num_workers * groups}"
            )
        probe = make_env(env_id, env_kwargs)
        space = probe.observation_space
        self.action_space = probe.action_space
        probe.close()
        if space.dtype != np.uint8 or len(space.shape) != 3:
            raise ValueError(
                f"env {env_id!r} observes {space}; the trainer needs uint8 images [H, W, C]"
            )
        self.obs_shape = tuple(space.shape)
        self.num_envs = num_envs
        self.seed = seed
        counts = list(episode_counts) if episode_counts is not None else [0] * num_envs
        if len(counts) != num_envs:
            raise ValueError(f"episode_counts has {len(counts)} entries for {num_envs} envs")
        self.episode_counts = counts

        ctx = mp.get_context("spawn")  # never fork a process that may hold a GL context or threads
        n = num_envs
        self._shared = {
            "n": n,
            "obs": ctx.RawArray("B", n * int(np.prod(self.obs_shape))),
            "actions": ctx.RawArray("q", n),
            "rewards": ctx.RawArray("f", n),
            "terms": ctx.RawArray("B", n),
            "truncs": ctx.RawArray("B", n),
        }
        self.obs = np.frombuffer(self._shared["obs"], dtype=np.uint8).reshape(n, *self.obs_shape)
        self.actions = np.frombuffer(self._shared["actions"], dtype=np.int64)
        self.rewards = np.frombuffer(self._shared["rewards"], dtype=np.float32)
        self.terms = np.frombuffer(self._shared["terms"], dtype=np.uint8)
        self.truncs = np.frombuffer(self._shared["truncs"], dtype=np.uint8)

        per_worker = n // num_workers
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
                args=(child, env_id, env_kwargs or {}, lo, hi, worker_groups, self._shared,
                      self.obs_shape, seed, counts[lo:hi], seed_range),
                daemon=True,
                name=f"rlviz-env-{w}",
            )
            proc.start()
            child.close()
            self._conns.append(parent)
            self._procs.append(proc)
        self._pending = [False] * len(self.slots)
        self._closed = False
        for w in range(num_workers):
            self._recv(w)

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
        """Reset every env (next seeds of their sequences); returns the shared obs [N, H, W, C]."""
        for conn in self._conns:
            conn.send(("reset", None))
        for w in range(len(self._conns)):
            self._recv(w)
        return self.obs

    def step_async(self, slot: int, actions: np.ndarray) -> None:
        """Start stepping the envs of ``slot`` with ``actions`` [n_slot] (int)."""
        lo, hi = self.slots[slot]
        self.actions[lo:hi] = actions
        self._conns[self._slot_worker[slot]].send(("step", self._slot_group[slot]))
        self._pending[slot] = True

    def step_wait(self, slot: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[Episode]]:
        """Wait for ``slot``'s step.

        Returns:
            ``(obs [n, H, W, C] uint8 view, rewards [n] float32, terminated [n] bool,
            truncated [n] bool, finished episodes)``; an env that ended was reset, and its obs is
            the first of the next episode.
        """
        if not self._pending[slot]:
            raise RuntimeError(f"step_wait({slot}) without step_async({slot})")
        finished = self._recv(self._slot_worker[slot])
        self._pending[slot] = False
        for ep in finished:
            self.episode_counts[ep.env] += 1
        lo, hi = self.slots[slot]
        return (
            self.obs[lo:hi],
            self.rewards[lo:hi].copy(),
            self.terms[lo:hi].astype(bool),
            self.truncs[lo:hi].astype(bool),
            finished,
        )

    def close(self) -> None:
        """Stop the workers (idempotent)."""
        if self._closed:
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
