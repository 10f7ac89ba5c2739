"""The PPO trainer: collect rollouts, update in the background, log, checkpoint, resume.

The algorithm is in :mod:`agents.ppo`; this module feeds it. Read :meth:`Trainer.run` first: it
builds everything a run holds, in order, then loops. :class:`RunState` is all that collection
changes from rollout to rollout; :class:`LearnerThread` takes full rollouts to the PPO update and
brings the results back. What differs from CleanRL's single loop, and why:

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
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
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
    episode_stats,
    plot_learning_curve,
)
from rlviz.agents.policy import ACTION_NAMES, ActorCritic, Architecture, preprocess
from rlviz.agents.ppo import Learner, RolloutBuffer
from rlviz.agents.vecenv import TRAIN_SEED_RANGE, EnvPool

Callback = Callable[[dict], "bool | None"]


@dataclass
class RunState:
    """What collection changes from one rollout to the next. The main thread's alone, except the
    clock (:meth:`elapsed`), which the learner thread reads.

    A checkpoint keeps the counters, the recent episodes and the action RNG (with the weights and
    the learner's state), so ``--resume`` continues from them bit for bit.
    """

    action_rng: torch.Generator
    """Draws the actions the actor takes."""
    steps: int = 0
    """Env steps so far, earlier parts of a resumed run included."""
    episodes: int = 0
    """Episodes finished so far."""
    start_steps: int = 0
    """``steps`` when this part of the run started (steps per second count from here)."""
    time_before: float = 0.0
    """Training seconds of the parts of the run before a ``--resume``."""
    clock_start: float = field(default_factory=time.perf_counter)
    """When this part's training clock started (``time.perf_counter``)."""
    recent: deque = field(default_factory=lambda: deque(maxlen=100))
    """``(return, length, success)`` of the last 100 episodes."""
    rollout_episodes: list = field(default_factory=list)
    """``(return, length, success, stuck_steps)`` of the episodes ended in this rollout."""
    rollout_start: float = 0.0
    """When this rollout's collection started (``time.perf_counter``)."""
    env_wait_s: float = 0.0
    """Seconds this rollout has waited for the env workers."""
    next_action_rng: torch.Tensor | None = None
    """``action_rng``'s state where the next rollout's first actions are drawn: a checkpoint of
    this rollout keeps it, so a resume draws them as this run does."""
    actor_version: int = 0
    """The update whose weights the actor has."""
    last_row: dict = field(default_factory=dict)
    """The newest ``progress.csv`` row."""
    stop_requested: bool = False
    """The callback asked to end training."""

    @classmethod
    def start(cls, seed: int, resumed: dict | None) -> RunState:
        """A new run's state, or where the resumed run's training state ``resumed`` stopped."""
        action_rng = torch.Generator().manual_seed(seed * 104729 + 3)
        if resumed is None:
            return cls(action_rng)
        action_rng.set_state(resumed["action_rng"])
        steps = int(resumed["steps"])
        return cls(
            action_rng,
            steps=steps,
            episodes=int(resumed["episodes"]),
            start_steps=steps,
            time_before=float(resumed["time_s"]),
            recent=deque((tuple(r) for r in resumed.get("recent", [])), maxlen=100),
        )

    def elapsed(self) -> float:
        """Training seconds of the whole run, resumed parts included."""
        return self.time_before + time.perf_counter() - self.clock_start


class LearnerThread:
    """Takes full rollout buffers to ``learn`` and brings back what it returns.

    With ``threaded`` (``async_learner``), ``learn`` runs in a background thread while the envs
    keep collecting; without, in the caller's thread at :meth:`submit`. Either way the main thread
    reads the results with :meth:`finished`, and an error in the thread is raised in the main
    thread (by :meth:`check`, which :meth:`submit` and :meth:`finish` call).
    """

    def __init__(self, learn: Callable[[RolloutBuffer], tuple], threaded: bool) -> None:
        self._learn = learn
        self._jobs: queue.Queue = queue.Queue()  # full buffers; None ends the thread
        self._results: queue.Queue = queue.Queue()  # what learn returned, oldest first
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None
        if threaded:
            self._thread = threading.Thread(target=self._loop, name="rlviz-learner", daemon=True)
            self._thread.start()

    @property
    def threaded(self) -> bool:
        return self._thread is not None

    def submit(self, buf: RolloutBuffer) -> None:
        """Learn from ``buf``: queue it for the thread, or learn from it now."""
        if self._thread is None:
            self._results.put(self._learn(buf))
            return
        self.check()
        self._jobs.put(buf)

    def finished(self) -> Iterator[tuple]:
        """What ``learn`` returned for each rollout done since the last call; never blocks."""
        while True:
            try:
                yield self._results.get_nowait()
            except queue.Empty:
                return

    def check(self) -> None:
        """Raise the learner thread's error, if it failed."""
        if self._error is not None:
            raise RuntimeError("the learner thread failed") from self._error

    def finish(self) -> None:
        """Let the thread learn from the queued buffers, then end it."""
        if self._thread is None:
            return
        self._jobs.put(None)
        while self._thread.is_alive():
            self._thread.join(timeout=0.5)
        self.check()

    def close(self) -> None:
        """Tell the thread to end after its current buffer, without waiting (on errors)."""
        if self._thread is not None and self._thread.is_alive():
            self._jobs.put(None)

    def _loop(self) -> None:
        try:
            while (buf := self._jobs.get()) is not None:
                self._results.put(self._learn(buf))
        except BaseException as exc:  # raised in the main thread by check()
            self._error = exc


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

    def run(self, callback: Callback | None = None) -> dict:
        """Train until ``cfg.total_steps``.

        Args:
            callback: optional ``f(row: dict)`` called in the main thread after every update's
                statistics are logged; returning False ends training after the rollout being
                collected (with a final checkpoint).

        Returns:
            summary dict: checkpoint path, steps, updates, time_s, sps, last row of statistics.
        """
        cfg, resumed = self.cfg, self.resume_state
        torch.set_num_threads(cfg.torch_threads)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.callback = callback
        with ExitStack() as cleanup:  # closes what it was given in reverse, errors included
            self.pool = cleanup.enter_context(self._open_env_pool())
            self.model, self.actor = self._build_policy()
            self.learner = Learner(self.model, cfg, self.device)
            if resumed:
                self.learner.load_state(resumed["learner"])
            self.state = RunState.start(cfg.seed, resumed)
            self.log = CsvLog(
                self.run_dir / "progress.csv", keep_until_step=self.state.steps if resumed else None
            )
            shape = self.pool.obs_shape
            self.buffers = (
                RolloutBuffer(cfg.num_steps, cfg.num_envs, shape),
                RolloutBuffer(cfg.num_steps, cfg.num_envs, shape),
            )
            self.published: tuple[int, dict] | None = None  # (update, weights) for the actor
            self.learner_thread = LearnerThread(self._learn, threaded=cfg.async_learner)
            cleanup.callback(self.learner_thread.close)
            self.bar = cleanup.enter_context(self._progress_bar())
            self._train_loop()
            self.learner_thread.finish()
            self._drain()
        return self._summary()

    # -------------------------------------------------------------------- setup
    def _open_env_pool(self) -> EnvPool:
        cfg, resumed = self.cfg, self.resume_state
        return EnvPool(
            cfg.env_id,
            cfg.env_kwargs,
            num_envs=cfg.num_envs,
            num_workers=cfg.num_workers,
            groups=2,
            seed=cfg.seed,
            episode_counts=resumed["episode_counts"] if resumed else None,
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

    def _build_policy(self) -> tuple[ActorCritic, ActorCritic]:
        """The trained model and the actor copy that collects, with the same weights."""
        arch, resumed = self._architecture(), self.resume_state
        # Both constructors draw initial weights from torch's global RNG (seeded in __init__).
        model = ActorCritic(arch).to(self.device)
        actor = ActorCritic(arch).to(self.device).eval()
        if resumed:
            model.load_state_dict({k: v.to(self.device) for k, v in resumed["model"].items()})
        elif self.cfg.init_from:
            model.load_state_dict(init_weights(self.cfg.init_from, arch))
        actor.load_state_dict(model.state_dict())
        return model, actor

    def _progress_bar(self):
        from tqdm import tqdm

        return tqdm(
            total=self.cfg.total_steps,
            initial=min(self.state.steps, self.cfg.total_steps),
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
        self._reset_envs(buf)
        self.state.rollout_start = time.perf_counter()
        done = self.state.steps >= self.cfg.total_steps
        while not done:
            self._collect_rollout(buf, nxt)
            done = self._hand_over(buf)
            buf, nxt = nxt, buf
            if not self.learner_thread.threaded and not done:
                # Synchronous: the next rollout's first actions come from the updated weights, as
                # after a --resume, so a resumed run continues bit for bit.
                for s in range(len(self.pool.slots)):
                    self._act(s, buf, 0)
            self._drain()
            self._show_progress()

    def _reset_envs(self, buf: RolloutBuffer) -> None:
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
                        self.state.next_action_rng = self.state.action_rng.get_state()
                    nxt.obs[0, lo:hi] = obs
                    if not self.learner_thread.threaded:  # acts on them after the update
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
        a = torch.multinomial(logp_all.exp(), 1, generator=self.state.action_rng).squeeze(1)
        buf.actions[t, lo:hi] = a.numpy()
        buf.logprobs[t, lo:hi] = logp_all.gather(1, a.unsqueeze(1)).squeeze(1).numpy()
        buf.values[t, lo:hi] = value.float().cpu().numpy()
        self.pool.step_async(slot, buf.actions[t, lo:hi])

    def _record_step(self, slot: int, buf: RolloutBuffer, t: int) -> np.ndarray:
        """Wait for ``slot``'s step, store its rewards and ends at ``t``; return the new frames."""
        state = self.state
        lo, hi = self.pool.slots[slot]
        t_wait = time.perf_counter()
        obs, rew, term, trunc, finished = self.pool.step_wait(slot)
        state.env_wait_s += time.perf_counter() - t_wait
        buf.rewards[t, lo:hi] = rew
        buf.ends[t, lo:hi] = term | trunc
        for ep in finished:
            state.recent.append((ep.ret, ep.length, ep.success))
            state.rollout_episodes.append((ep.ret, ep.length, ep.success, ep.stuck))
        state.episodes += len(finished)
        return obs

    def _claim(self, buf: RolloutBuffer) -> None:
        """Wait until the learner is done with ``buf``, then take it for collection."""
        while not buf.free.wait(timeout=0.5):
            self.learner_thread.check()
        buf.free.clear()

    def _pick_up_weights(self) -> None:
        """Load the learner's newest published weights into the actor, if it has not yet."""
        published = self.published
        if published is not None and published[0] != self.state.actor_version:
            self.state.actor_version, weights = published
            self.actor.load_state_dict(weights)

    def _hand_over(self, buf: RolloutBuffer) -> bool:
        """Give the full ``buf`` to the learner; return whether training is done."""
        cfg, state = self.cfg, self.state
        before = state.steps
        state.steps += cfg.num_steps * cfg.num_envs
        done = state.steps >= cfg.total_steps or state.stop_requested
        buf.meta = self._rollout_meta(before, done)
        self.learner_thread.submit(buf)
        if not self.learner_thread.threaded:
            self._pick_up_weights()  # always new: the update just published its weights
        return done

    def _rollout_meta(self, before: int, done: bool) -> dict:
        """What the learner thread needs about the rollout just collected: a snapshot of the
        counters and RNG (for the checkpoint), what to save, and the episode statistics."""
        cfg, state = self.cfg, self.state
        recent = list(state.recent)
        eps, state.rollout_episodes = state.rollout_episodes, []
        now = time.perf_counter()
        env_wait = state.env_wait_s / max(now - state.rollout_start, 1e-9)
        state.env_wait_s, state.rollout_start = 0.0, now
        return {
            "steps": state.steps,
            "start_steps": state.start_steps,
            "episodes": state.episodes,
            "episode_counts": list(self.pool.episode_counts),
            "action_rng": state.next_action_rng,
            "recent": recent,
            "checkpoint": done or _crossed(before, state.steps, cfg.checkpoint_every),
            "snapshot": _crossed(before, state.steps, cfg.snapshot_every)
            or (done and cfg.snapshot_every > 0),
            "episode_stats": episode_stats(eps, recent, env_wait),
        }

    # ------------------------------------------------------------------- update
    def _learn(self, buf: RolloutBuffer) -> tuple[dict, dict, Path | None]:
        """Update on ``buf``, free it, publish the weights, save; return what to log.

        Runs in the learner thread when ``async_learner``: it reads ``buf.meta``, never the
        collector's live counters in :class:`RunState` (only its clock).

        Returns:
            ``(meta, stats, saved checkpoint path or None)`` for :meth:`_log_update`.
        """
        meta = buf.meta
        t0 = time.perf_counter()
        stats = self.learner.update(buf, meta["steps"])
        stats["update_s"] = time.perf_counter() - t0
        buf.free.set()
        weights = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        self.published = (self.learner.updates, weights)
        stats.update(time_s=self.state.elapsed())
        saved = self._save(meta, stats["time_s"])
        return meta, stats, saved

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
        # Runs in the learner thread: read the main thread's snapshot in meta, never self.state.
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
        for meta, stats, saved in self.learner_thread.finished():
            self._log_update(meta, stats, saved)

    def _log_update(self, meta: dict, stats: dict, saved: Path | None) -> None:
        """One ``progress.csv`` row: warnings, the learning curve after a checkpoint, callback."""
        row = dict(meta["episode_stats"])
        row.update(
            stats,
            step=meta["steps"],
            sps=(meta["steps"] - meta["start_steps"])
            / max(stats["time_s"] - self.state.time_before, 1e-9),
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
        self.state.last_row = row
        if self.callback is not None and self.callback(row) is False:
            self.state.stop_requested = True

    def _show_progress(self) -> None:
        cfg, row = self.cfg, self.state.last_row
        self.bar.update(min(self.state.steps, cfg.total_steps) - self.bar.n)
        if row:
            self.bar.set_postfix(_bar_fields(row), refresh=False)

    def _log(self, msg: str) -> None:
        self.bar.write(msg)  # above the bar, which stays at the bottom

    def _summary(self) -> dict:
        state = self.state
        total_time = state.elapsed()
        return {
            "checkpoint": str(self.ckpt_path),
            "run_dir": str(self.run_dir),
            "steps": state.steps,
            "updates": self.learner.updates,
            "episodes": state.episodes,
            "time_s": total_time,
            "sps": (state.steps - state.start_steps) / max(total_time - state.time_before, 1e-9),
            "last": state.last_row,
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
