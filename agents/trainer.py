"""The PPO trainer: collect rollouts, update in the background, log, checkpoint, resume.

The algorithm is in :mod:`agents.ppo`; this module feeds it. What differs from CleanRL's single
loop, and why:

* **The learner hides behind the simulator.** MiniWorld renders in software, a full core per env
  step. Env workers (:class:`agents.vecenv.EnvPool`) render in subprocesses, two groups of envs per
  worker, so inference for one group overlaps rendering of the other. With ``async_learner`` (the
  default) the PPO update of rollout k runs in a background thread while the envs keep collecting
  rollout k+1 with the weights the actor has; the actor picks up the new weights as soon as the
  update is done. Rollout k+1 is then partly collected by the previous policy; PPO's ratio uses the
  behaviour policy's log-probabilities (stored per step), so the clipped objective stays correct
  (the same one-update policy lag as APPO in Sample Factory, Petrenko et al. 2020). Use
  ``--no-async-learner`` for strictly on-policy, bit-reproducible runs.
* **Two buffers** alternate: the collector fills one while the learner reads the other; a buffer's
  ``free`` event says the learner is done with it.
* **Seeds.** Episode seeds are drawn in ``[0, 1e6)`` (see :mod:`agents.vecenv`), so held-out
  evaluation starts at 1e6.
* **Truncation** is treated as termination (no bootstrap from the final frame), as in CleanRL.

Runs live in ``runs/<run_name>/``: ``checkpoint.safetensors`` (+ ``.json``, ``.state.safetensors``
for ``--resume``), ``progress.csv`` and ``learning_curve.png``.
"""

from __future__ import annotations

import math
import queue
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from rlviz.agents.checkpoint import (
    CheckpointError,
    load_checkpoint,
    load_training_state,
    save_checkpoint,
)
from rlviz.agents.config import Config, default_run_name, resolve_device
from rlviz.agents.diagnostics import (
    CsvLog,
    HealthCheck,
    Thresholds,
    check_inputs,
    plot_learning_curve,
)
from rlviz.agents.policy import ACTION_NAMES, ActorCritic, Architecture, preprocess
from rlviz.agents.ppo import Learner, RolloutBuffer
from rlviz.agents.vecenv import TRAIN_SEED_RANGE, EnvPool

Callback = Callable[[dict], "bool | None"]


class Trainer:
    """Collects rollouts with an actor copy of the policy and feeds them to a :class:`Learner`."""

    def __init__(self, cfg: Config, command: str | None = None, resume: str | None = None) -> None:
        self.cfg = cfg
        self.command = command
        self.device = resolve_device(cfg.device)
        self.run_dir = Path(cfg.runs_dir) / (cfg.run_name or default_run_name(cfg))
        self.ckpt_path = self.run_dir / "checkpoint.safetensors"
        self.resume_state = None
        torch.manual_seed(cfg.seed)
        if resume is not None:
            self.resume_state = load_training_state(resume)
            if self.resume_state is None:
                raise CheckpointError(
                    f"{resume!r} has no training state (.state.safetensors); it can be evaluated "
                    "but not resumed. Start a new run instead."
                )
        self.health = HealthCheck(
            3,
            Thresholds(
                entropy_frac=cfg.warn_entropy_frac,
                grad_norm=cfg.warn_grad_norm,
                approx_kl=cfg.warn_kl,
            ),
        )
        self.recent = deque(maxlen=100)  # (return, length, success) of the last 100 episodes
        self.bar = None

    # ---------------------------------------------------------------------- run
    def run(self, callback: Callback | None = None) -> dict:
        """Train until ``cfg.total_steps``.

        Args:
            callback: optional ``f(row: dict)`` called in the main thread after every update's
                statistics are logged; returning False ends training after the rollout being
                collected (with a final checkpoint).

        Returns:
            summary dict: checkpoint path, steps, updates, time_s, sps, last row of statistics.
        """
        torch.set_num_threads(self.cfg.torch_threads)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._callback = callback
        self._restore_counters()
        self.pool = self._open_env_pool()
        self._build_policy()
        self._prepare_rollouts()
        self._start_learner()
        self._open_progress_bar()
        try:
            self._train_loop()
            self._stop_learner()
            self._drain()
        finally:
            self._close()
        return self._summary()

    # -------------------------------------------------------------------- setup
    def _restore_counters(self) -> None:
        """Steps, episodes and time so far: zero, or where the resumed run stopped."""
        rs = self.resume_state
        self.steps = int(rs["steps"]) if rs else 0
        self.start_steps = self.steps
        self.episodes = int(rs["episodes"]) if rs else 0
        self.time_before = float(rs["time_s"]) if rs else 0.0
        self.last_row: dict = {}
        self._stop_requested = False

    def _open_env_pool(self) -> EnvPool:
        cfg, rs = self.cfg, self.resume_state
        return EnvPool(
            cfg.env_id,
            cfg.env_kwargs,
            num_envs=cfg.num_envs,
            num_workers=cfg.num_workers,
            groups=2,
            seed=cfg.seed,
            episode_counts=rs["episode_counts"] if rs else None,
            stuck_penalty=cfg.stuck_penalty,
            progress_reward=cfg.progress_reward,
            progress_turns=cfg.progress_turns,
            frame_stack=cfg.frame_stack,
        )

    def _architecture(self) -> Architecture:
        """The policy's architecture for the pool's observations and actions."""
        n_actions = int(self.pool.action_space.n)
        names = (
            ACTION_NAMES
            if n_actions == len(ACTION_NAMES)
            else tuple(f"a{i}" for i in range(n_actions))
        )
        return Architecture(
            head=self.cfg.head,
            channels=tuple(self.cfg.channels),
            hidden=self.cfg.hidden,
            obs_shape=self.pool.obs_shape,
            frames=self.cfg.frame_stack,
            action_names=names,
        )

    def _build_policy(self) -> None:
        """The trained model, the actor copy that collects, the learner and the action RNG."""
        cfg, rs = self.cfg, self.resume_state
        arch = self._architecture()
        # Both constructors draw initial weights from torch's global RNG (seeded in __init__).
        self.model = ActorCritic(arch).to(self.device)
        self.actor = ActorCritic(arch).to(self.device).eval()
        if rs:
            self.model.load_state_dict({k: v.to(self.device) for k, v in rs["model"].items()})
        elif cfg.init_from:
            self.model.load_state_dict(init_weights(cfg.init_from, arch))
        self.actor.load_state_dict(self.model.state_dict())
        self.learner = Learner(self.model, cfg, self.device)
        self.act_gen = torch.Generator().manual_seed(cfg.seed * 104729 + 3)
        if rs:
            self.learner.load_state(rs["learner"])
            self.act_gen.set_state(rs["action_rng"])
            self.recent.extend(tuple(r) for r in rs.get("recent", []))

    def _prepare_rollouts(self) -> None:
        """The CSV log (cut back to the checkpoint on resume) and the two rollout buffers."""
        cfg = self.cfg
        resumed = self.resume_state is not None
        self.log = CsvLog(
            self.run_dir / "progress.csv", keep_until_step=self.steps if resumed else None
        )
        shape = self.pool.obs_shape
        self.buffers = (
            RolloutBuffer(cfg.num_steps, cfg.num_envs, shape),
            RolloutBuffer(cfg.num_steps, cfg.num_envs, shape),
        )
        self._rollout_eps: list[tuple] = []  # (return, length, success, stuck) this rollout

    def _open_progress_bar(self) -> None:
        from tqdm import tqdm

        self.bar = tqdm(
            total=self.cfg.total_steps,
            initial=min(self.steps, self.cfg.total_steps),
            unit="step",
            dynamic_ncols=True,
            disable=not self.cfg.progress,
            smoothing=0.05,
        )

    # ------------------------------------------------------------------ collect
    def _train_loop(self) -> None:
        """Collect rollouts into the two buffers in turn, handing each full one to the learner."""
        buf, nxt = self.buffers
        buf.free.clear()
        self._first_actions(buf)
        self._waited, self._rollout_t0 = 0.0, time.perf_counter()
        done = self.steps >= self.cfg.total_steps
        while not done:
            self._collect_rollout(buf, nxt)
            done = self._hand_over(buf)
            buf, nxt = nxt, buf
            if self._thread is None and not done:
                # Synchronous: the next rollout's first actions come from the updated weights, as
                # after a --resume, so a resumed run continues bit for bit.
                for s in range(len(self.pool.slots)):
                    self._act(s, buf, 0)
            self._drain()
            self._show_progress()

    def _first_actions(self, buf: RolloutBuffer) -> None:
        """Reset the envs, check the inputs once, and act on the first frames."""
        obs = self.pool.reset()
        first = preprocess(torch.from_numpy(obs[: min(self.cfg.num_envs, 8)].copy()))
        for warning in check_inputs(first):
            self._log(f"warning: {warning}")
        for s, (lo, hi) in enumerate(self.pool.slots):
            buf.obs[0, lo:hi] = obs[lo:hi]
            self._act(s, buf, 0)

    def _collect_rollout(self, buf: RolloutBuffer, nxt: RolloutBuffer) -> None:
        """Step every slot ``num_steps`` times into ``buf``; the frames after the last step are
        the first of ``nxt`` (acted on already, their values bootstrap ``buf``)."""
        T = self.cfg.num_steps
        for t in range(T):
            for s, (lo, hi) in enumerate(self.pool.slots):
                obs = self._record_step(s, buf, t)
                if t + 1 < T:
                    buf.obs[t + 1, lo:hi] = obs
                    self._act(s, buf, t + 1)
                else:
                    if s == 0:
                        self._claim(nxt)
                        # What a checkpoint of this rollout keeps: a resume draws the next
                        # rollout's first actions from here, as this run does.
                        self._next_rng = self.act_gen.get_state()
                    nxt.obs[0, lo:hi] = obs
                    if self._thread is None:  # acts on them after the update (_train_loop)
                        buf.last_values[lo:hi] = self._value(obs)
                    else:
                        self._act(s, nxt, 0)
                        buf.last_values[lo:hi] = nxt.values[0, lo:hi]
                self._pick_up_weights()

    def _value(self, obs: np.ndarray) -> np.ndarray:
        """The actor's values of frames ``obs`` [n, H, W, C] (float32 [n])."""
        with torch.no_grad():
            _, value = self.actor(preprocess(torch.from_numpy(obs), self.device))
        return value.float().cpu().numpy()

    def _act(self, slot: int, buf: RolloutBuffer, t: int) -> None:
        """Sample actions for ``slot``'s envs at step ``t`` of ``buf`` and send them to the envs."""
        lo, hi = self.pool.slots[slot]
        x = preprocess(torch.from_numpy(buf.obs[t, lo:hi]), self.device)
        with torch.no_grad():
            logits, value = self.actor(x)
        logp_all = torch.log_softmax(logits.float(), dim=-1).cpu()
        a = torch.multinomial(logp_all.exp(), 1, generator=self.act_gen).squeeze(1)
        buf.actions[t, lo:hi] = a.numpy()
        buf.logprobs[t, lo:hi] = logp_all.gather(1, a.unsqueeze(1)).squeeze(1).numpy()
        buf.values[t, lo:hi] = value.float().cpu().numpy()
        self.pool.step_async(slot, buf.actions[t, lo:hi])

    def _record_step(self, slot: int, buf: RolloutBuffer, t: int) -> np.ndarray:
        """Wait for ``slot``'s step, store its rewards and ends at ``t``; return the new frames."""
        lo, hi = self.pool.slots[slot]
        t_wait = time.perf_counter()
        obs, rew, term, trunc, finished = self.pool.step_wait(slot)
        self._waited += time.perf_counter() - t_wait
        buf.rewards[t, lo:hi] = rew
        buf.ends[t, lo:hi] = term | trunc
        for ep in finished:
            self.recent.append((ep.ret, ep.length, ep.success))
            self._rollout_eps.append((ep.ret, ep.length, ep.success, ep.stuck))
        self.episodes += len(finished)
        return obs

    def _claim(self, buf: RolloutBuffer) -> None:
        """Wait until the learner is done with ``buf``, then take it for collection."""
        while not buf.free.wait(timeout=0.5):
            self._check_learner()
        buf.free.clear()

    def _pick_up_weights(self) -> None:
        """Load the learner's newest published weights into the actor, if it has not yet."""
        published = self._published
        if published is not None and published[0] != self._version:
            self._version, weights = published
            self.actor.load_state_dict(weights)

    def _hand_over(self, buf: RolloutBuffer) -> bool:
        """Give the full ``buf`` to the learner; return whether training is done."""
        cfg = self.cfg
        before = self.steps
        self.steps += cfg.num_steps * cfg.num_envs
        done = self.steps >= cfg.total_steps or self._stop_requested
        buf.meta = self._rollout_meta(before, done)
        if self._thread is not None:
            self._check_learner()
            self._jobs.put(buf)
        else:
            self._learn(buf)
            self._pick_up_weights()  # always new: the update just published its weights
        return done

    def _rollout_meta(self, before: int, done: bool) -> dict:
        """What the learner thread needs about the rollout just collected: a snapshot of the
        counters and RNG (for the checkpoint), what to save, and the episode statistics."""
        cfg = self.cfg
        recent = list(self.recent)
        eps, self._rollout_eps = self._rollout_eps, []
        now = time.perf_counter()
        env_wait = self._waited / max(now - self._rollout_t0, 1e-9)
        self._waited, self._rollout_t0 = 0.0, now
        return {
            "steps": self.steps,
            "start_steps": self.start_steps,
            "episodes": self.episodes,
            "episode_counts": list(self.pool.episode_counts),
            "action_rng": self._next_rng,
            "recent": recent,
            "checkpoint": done or _crossed(before, self.steps, cfg.checkpoint_every),
            "snapshot": _crossed(before, self.steps, cfg.snapshot_every)
            or (done and cfg.snapshot_every > 0),
            "episode_stats": episode_stats(eps, recent, env_wait),
        }

    # ------------------------------------------------------------------- update
    def _start_learner(self) -> None:
        """The learner's hand-over state, and its thread when ``async_learner``."""
        self._jobs: queue.Queue = queue.Queue()  # full buffers; None stops the thread
        self._results: queue.Queue = queue.Queue()  # (meta, stats, saved checkpoint or None)
        self._published: tuple[int, dict] | None = None  # (update, state_dict) for the actor
        self._version = 0  # the update whose weights the actor has
        self._learner_error: BaseException | None = None
        self._clock0 = time.perf_counter()
        self._thread = None
        if self.cfg.async_learner:
            self._thread = threading.Thread(
                target=self._learner_loop, name="rlviz-learner", daemon=True
            )
            self._thread.start()

    def _learner_loop(self) -> None:
        try:
            while (buf := self._jobs.get()) is not None:
                self._learn(buf)
        except BaseException as exc:  # surfaced in the main thread by _check_learner
            self._learner_error = exc

    def _check_learner(self) -> None:
        if self._learner_error is not None:
            raise RuntimeError("the learner thread failed") from self._learner_error

    def _learn(self, buf: RolloutBuffer) -> None:
        """Update on ``buf``, free it, publish the weights, save; queue the results for logging.

        Runs in the learner thread when ``async_learner``: it reads ``buf.meta``, never the
        collector's live counters.
        """
        meta = buf.meta
        t0 = time.perf_counter()
        stats = self.learner.update(buf, meta["steps"])
        stats["update_s"] = time.perf_counter() - t0
        buf.free.set()
        weights = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        self._published = (self.learner.updates, weights)
        stats.update(time_s=self._elapsed())
        saved = self._save(meta, stats["time_s"])
        self._results.put((meta, stats, saved))

    def _stop_learner(self) -> None:
        """Let the learner thread finish the queued updates, then end it."""
        if self._thread is None:
            return
        self._jobs.put(None)
        while self._thread.is_alive():
            self._thread.join(timeout=0.5)
        self._check_learner()

    # ---------------------------------------------------------------- save, log
    def _save(self, meta: dict, time_s: float) -> Path | None:
        """Write the checkpoint and/or snapshot ``meta`` asks for; return the checkpoint path."""
        saved = None
        if meta["checkpoint"]:
            saved = save_checkpoint(
                self.ckpt_path,
                self.model,
                self._ckpt_config(meta, self.learner.updates, time_s),
                optimizer_state=self._resume_state(meta, time_s),
            )
        if meta["snapshot"]:
            snap = self.run_dir / "snapshots" / f"step_{meta['steps']:09d}.safetensors"
            save_checkpoint(snap, self.model, self._ckpt_config(meta, self.learner.updates, time_s))
        return saved

    def _resume_state(self, meta: dict, time_s: float) -> dict:
        """Everything ``--resume`` needs to continue exactly: weights, optimizer, counters, RNG."""
        return {
            "model": self.model.state_dict(),
            "learner": self.learner.state(),
            "action_rng": meta["action_rng"],
            "episode_counts": meta["episode_counts"],
            "steps": meta["steps"],
            "episodes": meta["episodes"],
            "time_s": time_s,
            "recent": [list(r) for r in meta["recent"]],
        }

    def _train_config(self) -> dict:
        data = asdict(self.cfg)
        data["channels"] = list(self.cfg.channels)
        return data

    def _ckpt_config(self, meta: dict, updates: int, elapsed: float) -> dict:
        # Runs in the learner thread: read the main thread's snapshot in meta, never self.recent.
        cfg = self.cfg
        recent = meta["recent"]
        return {
            "env_id": cfg.env_id,
            "env_kwargs": cfg.env_kwargs,
            "steps": meta["steps"],
            "updates": updates,
            "episodes": meta["episodes"],
            "seed": cfg.seed,
            "train_seed_range": [0, TRAIN_SEED_RANGE],
            "time_s": round(elapsed, 2),
            "success_rate_100": float(np.mean([r[2] for r in recent])) if recent else None,
            "command": self.command,
            "train_config": self._train_config(),
            "torch_version": torch.__version__,
        }

    def _drain(self) -> None:
        """Log every update the learner has finished so far (main thread, never blocks)."""
        while True:
            try:
                meta, stats, saved = self._results.get_nowait()
            except queue.Empty:
                return
            self._log_update(meta, stats, saved)

    def _log_update(self, meta: dict, stats: dict, saved: Path | None) -> None:
        """One ``progress.csv`` row: warnings, the learning curve after a checkpoint, callback."""
        row = dict(meta["episode_stats"])
        row.update(
            stats,
            step=meta["steps"],
            sps=(meta["steps"] - meta["start_steps"])
            / max(stats["time_s"] - self.time_before, 1e-9),
        )
        self.log.write(row)
        for warning in self.health.check(row):
            self._log(f"warning: {warning}")
        if saved is not None:
            try:
                plot_learning_curve(
                    self.log.path, self.run_dir / "learning_curve.png", title=str(self.run_dir.name)
                )
            except Exception as exc:  # a plot must never stop training
                self._log(f"warning: could not draw the learning curve ({exc})")
        self.last_row = row
        if self._callback is not None and self._callback(row) is False:
            self._stop_requested = True

    def _show_progress(self) -> None:
        cfg, row = self.cfg, self.last_row
        self.bar.update(min(self.steps, cfg.total_steps) - self.bar.n)
        if row:
            self.bar.set_postfix(_bar_fields(row), refresh=False)

    def _log(self, msg: str) -> None:
        if self.bar is not None:
            self.bar.write(msg)
        else:
            print(msg, file=sys.stderr)

    # -------------------------------------------------------------------- close
    def _elapsed(self) -> float:
        """Training seconds of the whole run, resumed parts included."""
        return self.time_before + time.perf_counter() - self._clock0

    def _close(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            self._jobs.put(None)
        self.pool.close()
        self.bar.close()

    def _summary(self) -> dict:
        total_time = self._elapsed()
        return {
            "checkpoint": str(self.ckpt_path),
            "run_dir": str(self.run_dir),
            "steps": self.steps,
            "updates": self.learner.updates,
            "episodes": self.episodes,
            "time_s": total_time,
            "sps": (self.steps - self.start_steps) / max(total_time - self.time_before, 1e-9),
            "last": self.last_row,
        }


def episode_stats(eps: list[tuple], recent: list[tuple], env_wait: float) -> dict:
    """Episode statistics of one rollout for ``progress.csv`` (NaN where no episode ended).

    Args:
        eps: ``(return, length, success, stuck_steps)`` of the episodes that ended in the rollout.
        recent: ``(return, length, success)`` of the last 100 episodes of the run.
        env_wait: fraction of the rollout's wall time spent waiting for the env workers.
    """
    nan = float("nan")
    return {
        "episodes": len(eps),
        "return": float(np.mean([e[0] for e in eps])) if eps else nan,
        "episode_length": float(np.mean([e[1] for e in eps])) if eps else nan,
        "success_rate": float(np.mean([e[2] for e in eps])) if eps else nan,
        "success_rate_100": float(np.mean([r[2] for r in recent])) if recent else nan,
        "env_wait": env_wait,
        "stuck_frac": sum(e[3] for e in eps) / max(sum(e[1] for e in eps), 1) if eps else nan,
    }


def _bar_fields(row: dict) -> dict[str, str]:
    """The progress bar's fields; the episode ones only once an episode has ended (no "nan"
    while none has: the first episodes take a few rollouts)."""
    fields = {}
    if math.isfinite(row.get("success_rate_100", math.nan)):
        fields["success"] = f"{row['success_rate_100']:.2f}"
    if math.isfinite(row.get("return", math.nan)):
        fields["ret"] = f"{row['return']:.2f}"
        fields["len"] = f"{row['episode_length']:.0f}"
    if not fields:
        fields["episodes"] = "none ended yet"
    fields["sps"] = f"{row['sps']:.0f}"
    return fields


def init_weights(path: str, arch: Architecture) -> dict[str, torch.Tensor]:
    """Weights of checkpoint ``path`` for a new run of architecture ``arch`` (``--init-from``).

    Raises:
        CheckpointError: the checkpoint is unreadable or its architecture differs from ``arch``.
    """
    source, _ = load_checkpoint(path)
    if source.arch != arch:
        raise CheckpointError(
            f"--init-from {path!r} has architecture {source.arch.to_dict()}, but this run builds "
            f"{arch.to_dict()}; pass the same --head/--channels/--hidden and env"
        )
    return source.state_dict()


def _crossed(before: int, after: int, every: int) -> bool:
    """Whether a multiple of ``every`` lies in (before, after]."""
    return every > 0 and after // every > before // every


def train(
    cfg: Config, command: str | None = None, resume: str | None = None, callback=None
) -> dict:
    """Train a PPO agent with ``cfg``; see :meth:`Trainer.run` for what is returned."""
    return Trainer(cfg, command=command, resume=resume).run(callback=callback)
