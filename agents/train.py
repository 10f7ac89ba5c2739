"""PPO for the BoxReach agent, in one file: config, rollout collection, the update, the CLI.

Read it top to bottom like CleanRL's ``ppo_atari.py``. What is different, and why:

* **The learner hides behind the simulator.** MiniWorld renders in software, a full core per env
  step. Env workers (:class:`agents.vecenv.EnvPool`) render in subprocesses, two groups of envs per
  worker, so inference for one group overlaps rendering of the other. With ``async_learner`` (the
  default) the PPO update of rollout k runs in a background thread while the envs keep collecting
  rollout k+1 with the weights the actor has; the actor picks up the new weights as soon as the
  update is done. Rollout k+1 is then partly collected by the previous policy; PPO's ratio uses the
  behaviour policy's log-probabilities (stored per step), so the clipped objective stays correct
  (the same one-update policy lag as APPO in Sample Factory, Petrenko et al. 2020). Use
  ``--no-async-learner`` for strictly on-policy, bit-reproducible runs.
* **Seeds.** Episode seeds are drawn in ``[0, 1e6)`` (see :mod:`agents.vecenv`), so held-out
  evaluation starts at 1e6.
* **Truncation** is treated as termination (no bootstrap from the final frame), as in CleanRL.

Runs live in ``runs/<run_name>/``: ``checkpoint.safetensors`` (+ ``.json``, ``.state.safetensors``
for ``--resume``), ``progress.csv`` and ``learning_curve.png``.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import json
import queue
import shlex
import sys
import threading
import time
import types
import typing
from collections import deque
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from agents.checkpoint import (
    CheckpointError,
    load_training_state,
    read_config,
    save_checkpoint,
)
from agents.diagnostics import (
    COLUMNS,
    CsvLog,
    HealthCheck,
    Thresholds,
    check_inputs,
    dead_relu_fraction,
    explained_variance,
    plot_learning_curve,
)
from agents.policy import ActorCritic, Architecture, preprocess


@dataclass
class Config:
    """PPO settings. Every field is a command-line flag: ``env_id`` -> ``--env-id``."""

    env_id: str = "rlviz/BoxReach-v0"
    """Gymnasium id of the task (import envs registers rlviz/*)."""
    env_kwargs: dict = field(default_factory=dict)
    """Extra keyword arguments for gymnasium.make, as JSON (e.g. '{"num_distractors": 1}')."""
    total_steps: int = 600_000
    """Env steps to train for."""
    seed: int = 1
    """Seeds weights, action sampling, minibatches and the episode-seed sequence."""
    run_name: str | None = None
    """Folder under runs_dir; default <env>_<head>_s<seed>."""
    runs_dir: str = "runs"
    """Where run folders go."""
    device: str = "auto"
    """cpu, cuda, cuda:N or auto (cuda when available)."""
    head: str = "gap"
    """Policy head: gap (global average pooling, exact CAM) or mlp (flatten + hidden layer)."""
    channels: tuple[int, ...] = (16, 32, 32)
    """Channels of conv1, conv2, conv3."""
    hidden: int = 256
    """Hidden width of the mlp head."""
    num_envs: int = 16
    """Parallel envs (split evenly over num_workers x 2 groups)."""
    num_workers: int = 1
    """Env worker processes; each renders on one core. The learner uses the main process."""
    num_steps: int = 64
    """Steps per env per rollout (rollout = num_envs * num_steps transitions)."""
    update_epochs: int = 6
    """Passes over each rollout."""
    num_minibatches: int = 8
    """Minibatches per pass."""
    learning_rate: float = 5e-4
    """Adam step size (linearly annealed to 0 with anneal_lr)."""
    anneal_lr: bool = True
    """Anneal the learning rate linearly to 0 over total_steps."""
    gamma: float = 0.99
    """Discount."""
    gae_lambda: float = 0.95
    """GAE lambda."""
    clip_coef: float = 0.2
    """PPO clip range for the probability ratio."""
    clip_vloss: bool = True
    """Clip the value update like the policy's."""
    ent_coef: float = 0.01
    """Entropy bonus weight."""
    vf_coef: float = 0.5
    """Value loss weight."""
    max_grad_norm: float = 0.5
    """Global gradient-norm clip."""
    target_kl: float | None = None
    """Stop an update's epochs early when approx KL exceeds this."""
    stuck_penalty: float = 0.01
    """Subtracted from the reward when a step leaves the frame unchanged (walked into a wall or
    box); statistics and evaluation use the env's own reward."""
    progress_reward: float = 0.0
    """Shaping: added per metre of walking distance gained toward the red box (privileged, from
    envs.oracle.goal_distance; BoxReach only). Sums to a constant per episode, so it speeds learning
    without changing the best policy; statistics and evaluation use the env's own reward."""
    init_from: str | None = None
    """Start from this checkpoint's weights (fine-tuning; same architecture); optimizer fresh."""
    async_learner: bool = True
    """Update in a background thread while the envs keep stepping (see the module docstring)."""
    torch_threads: int = 1
    """torch intra-op threads of the main process (1 leaves the other core to the envs)."""
    checkpoint_every: int = 50_000
    """Env steps between checkpoints (one is always written at the end)."""
    snapshot_every: int = 0
    """Also keep weights-only copies every this many env steps in snapshots/ (0: off)."""
    progress: bool = True
    """Show a progress bar with the live success rate."""
    warn_entropy_frac: float = 0.1
    """Warn when entropy < this x log(A) before the task is solved."""
    warn_grad_norm: float = 50.0
    """Warn when the pre-clip gradient norm exceeds this."""
    warn_kl: float = 0.1
    """Warn when one update's approx KL exceeds this."""

    def __post_init__(self) -> None:
        self.channels = tuple(int(c) for c in self.channels)
        problems = []
        if self.head not in ("gap", "mlp"):
            problems.append(f"head={self.head!r}; expected gap or mlp")
        if self.num_envs % (2 * self.num_workers):
            problems.append(
                f"num_envs={self.num_envs} must be a multiple of 2 x num_workers={self.num_workers} "
                "(each worker steps two equal groups)"
            )
        for name in (
            "total_steps",
            "num_steps",
            "num_envs",
            "num_workers",
            "update_epochs",
            "num_minibatches",
        ):
            if getattr(self, name) < 1:
                problems.append(f"{name}={getattr(self, name)}; expected >= 1")
        if problems:
            raise ValueError("invalid training config: " + "; ".join(problems))


def _field_docs(cls: type) -> dict[str, str]:
    """The docstring under each dataclass field (CleanRL/tyro style), for --help."""
    docs: dict[str, str] = {}
    try:
        tree = ast.parse(inspect.getsource(cls))
    except (OSError, TypeError):
        return docs
    body = tree.body[0].body
    for node, nxt in zip(body, body[1:], strict=False):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(nxt, ast.Expr)
            and isinstance(nxt.value, ast.Constant)
            and isinstance(nxt.value.value, str)
        ):
            docs[node.target.id] = " ".join(nxt.value.value.split())
    return docs


def _parse_none(inner: type):
    def parse(text: str):
        return None if text.lower() in ("none", "null", "") else inner(text)

    parse.__name__ = inner.__name__
    return parse


def _parse_json_dict(text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(
            f"expected a JSON object like '{{\"size\": 8}}', got {text!r} ({exc})"
        ) from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object, got {text!r}")
    return value


def add_dataclass_arguments(
    parser: argparse.ArgumentParser,
    cls: type,
    suppress_defaults: bool = False,
    aliases: dict[str, list[str]] | None = None,
) -> None:
    """Add one ``--flag`` per field of dataclass ``cls`` (bools get ``--no-flag`` too);
    ``aliases`` maps a field name to extra flags (``{"env_id": ["--env"]}``)."""
    hints = typing.get_type_hints(cls)
    docs = _field_docs(cls)
    for f in dataclasses.fields(cls):
        flag = "--" + f.name.replace("_", "-")
        tp = hints[f.name]
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        kwargs: dict = {"dest": f.name, "help": f"{docs.get(f.name, '')} (default: {default})"}
        kwargs["default"] = argparse.SUPPRESS if suppress_defaults else default
        args = typing.get_args(tp)
        optional = (typing.get_origin(tp) in (typing.Union, types.UnionType)) and type(None) in args
        if optional:
            tp = next(a for a in args if a is not type(None))
        if tp is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif typing.get_origin(tp) is tuple:
            kwargs.update(nargs="+", type=typing.get_args(tp)[0])
        elif tp is dict or typing.get_origin(tp) is dict:
            kwargs.update(type=_parse_json_dict, metavar="JSON")
        else:
            kwargs["type"] = _parse_none(tp) if optional else tp
        parser.add_argument(flag, *(aliases or {}).get(f.name, []), **kwargs)


def config_from_dict(data: dict) -> Config:
    """A :class:`Config` from a dict (e.g. a checkpoint's ``train_config``); unknown keys raise."""
    names = {f.name for f in dataclasses.fields(Config)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"unknown config keys {unknown}; valid: {sorted(names)}")
    return Config(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


def resolve_device(name: str) -> torch.device:
    """``auto`` -> cuda when available else cpu; anything else is checked and returned."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(
            f"--device {name!r} is not a device; use cpu, cuda, cuda:N or auto"
        ) from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for but torch sees no CUDA GPU; use --device cpu")
    return device


def default_run_name(cfg: Config) -> str:
    """``<env>_<head>_s<seed>``, e.g. ``BoxReach-v0_gap_s1``."""
    return f"{cfg.env_id.split('/')[-1]}_{cfg.head}_s{cfg.seed}"


def compute_gae(
    rewards: np.ndarray,
    values: np.ndarray,
    ends: np.ndarray,
    last_values: np.ndarray,
    gamma: float,
    lam: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Generalised advantage estimation (Schulman et al. 2016, https://arxiv.org/abs/1506.02438).

    ``ends[t]`` says the episode ended after the action at step t (then s_{t+1} belongs to a new
    episode and nothing is bootstrapped across). ``last_values`` are V(s_T) [N].

    Returns:
        ``(advantages, returns)``, both float32 [T, N]; returns = advantages + values.
    """
    T = rewards.shape[0]
    adv = np.zeros_like(rewards, dtype=np.float32)
    running = np.zeros(rewards.shape[1], dtype=np.float32)
    for t in reversed(range(T)):
        next_values = last_values if t == T - 1 else values[t + 1]
        alive = 1.0 - ends[t].astype(np.float32)
        delta = rewards[t] + gamma * next_values * alive - values[t]
        running = delta + gamma * lam * alive * running
        adv[t] = running
    return adv, (adv + values).astype(np.float32)


class RolloutBuffer:
    """One rollout: [T, N] arrays filled by the collector, then read by the learner."""

    def __init__(self, num_steps: int, num_envs: int, obs_shape: tuple[int, ...]) -> None:
        self.obs = np.zeros((num_steps, num_envs, *obs_shape), dtype=np.uint8)
        self.actions = np.zeros((num_steps, num_envs), dtype=np.int64)
        self.logprobs = np.zeros((num_steps, num_envs), dtype=np.float32)
        self.values = np.zeros((num_steps, num_envs), dtype=np.float32)
        self.rewards = np.zeros((num_steps, num_envs), dtype=np.float32)
        self.ends = np.zeros((num_steps, num_envs), dtype=bool)
        self.last_values = np.zeros(num_envs, dtype=np.float32)
        self.free = threading.Event()  # set while the learner does not need it
        self.free.set()
        self.meta: dict = {}


class Learner:
    """The PPO update. Owns the trained model and the optimizer."""

    def __init__(self, model: ActorCritic, cfg: Config, device: torch.device) -> None:
        self.model = model
        self.cfg = cfg
        self.device = device
        self.optimizer = torch.optim.Adam(model.parameters(), lr=cfg.learning_rate, eps=1e-5)
        self.generator = torch.Generator().manual_seed(cfg.seed * 7919 + 1)
        self.updates = 0
        self.relu_layers = list(model.conv_layers)  # post-ReLU maps, for the dead-unit fraction

    def learning_rate(self, step: int) -> float:
        """Learning rate for an update that starts at env step ``step``."""
        if not self.cfg.anneal_lr:
            return self.cfg.learning_rate
        return self.cfg.learning_rate * max(1.0 - step / self.cfg.total_steps, 0.0)

    def update(self, buf: RolloutBuffer, step: int) -> dict:
        """One PPO update on ``buf`` (collected up to env step ``step``).

        Returns:
            dict of statistics (keys of :data:`agents.diagnostics.COLUMNS`).
        """
        cfg, model = self.cfg, self.model
        T, N = buf.actions.shape
        adv, ret = compute_gae(
            buf.rewards, buf.values, buf.ends, buf.last_values, cfg.gamma, cfg.gae_lambda
        )
        b_obs = buf.obs.reshape(T * N, *buf.obs.shape[2:])
        b_actions = torch.from_numpy(buf.actions.reshape(-1)).to(self.device)
        b_logprobs = torch.from_numpy(buf.logprobs.reshape(-1)).to(self.device)
        b_values = torch.from_numpy(buf.values.reshape(-1)).to(self.device)
        b_adv = torch.from_numpy(adv.reshape(-1)).to(self.device)
        b_ret = torch.from_numpy(ret.reshape(-1)).to(self.device)
        lr = self.learning_rate(step - T * N)
        for group in self.optimizer.param_groups:
            group["lr"] = lr

        batch = T * N
        mb_size = max(batch // cfg.num_minibatches, 1)
        model.train()
        sums = {
            "entropy": 0.0,
            "approx_kl": 0.0,
            "clip_frac": 0.0,
            "value_loss": 0.0,
            "policy_loss": 0.0,
            "grad_norm": 0.0,
        }
        count = skipped = 0
        dead = float("nan")
        stop = False
        for epoch in range(cfg.update_epochs):
            perm = torch.randperm(batch, generator=self.generator)
            for start in range(0, batch, mb_size):
                idx = perm[start : start + mb_size]
                x = preprocess(torch.from_numpy(b_obs[idx.numpy()]), self.device)
                if epoch == 0 and start == 0:
                    dead = dead_relu_fraction(model, x, self.relu_layers)
                idx = idx.to(self.device)
                logits, value = model(x)
                logp_all = torch.log_softmax(logits, dim=-1)
                logp = logp_all.gather(1, b_actions[idx].unsqueeze(1)).squeeze(1)
                entropy = -(logp_all.exp() * logp_all).sum(-1).mean()
                log_ratio = logp - b_logprobs[idx]
                ratio = log_ratio.exp()
                with torch.no_grad():
                    approx_kl = (
                        (ratio - 1) - log_ratio
                    ).mean()  # Schulman's low-variance estimator
                    clip_frac = ((ratio - 1.0).abs() > cfg.clip_coef).float().mean()
                mb_adv = b_adv[idx]
                mb_adv = (mb_adv - mb_adv.mean()) / (mb_adv.std(unbiased=False) + 1e-8)
                pg_loss = torch.max(
                    -mb_adv * ratio, -mb_adv * ratio.clamp(1 - cfg.clip_coef, 1 + cfg.clip_coef)
                ).mean()
                if cfg.clip_vloss:
                    v_clipped = b_values[idx] + (value - b_values[idx]).clamp(
                        -cfg.clip_coef, cfg.clip_coef
                    )
                    v_loss = (
                        0.5
                        * torch.max((value - b_ret[idx]) ** 2, (v_clipped - b_ret[idx]) ** 2).mean()
                    )
                else:
                    v_loss = 0.5 * ((value - b_ret[idx]) ** 2).mean()
                loss = pg_loss - cfg.ent_coef * entropy + cfg.vf_coef * v_loss

                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
                if not (torch.isfinite(loss) and torch.isfinite(grad_norm)):
                    # Never let one bad batch poison the weights; the health check reports it.
                    self.optimizer.zero_grad(set_to_none=True)
                    skipped += 1
                else:
                    self.optimizer.step()
                for key, v in (
                    ("entropy", entropy),
                    ("approx_kl", approx_kl),
                    ("clip_frac", clip_frac),
                    ("value_loss", v_loss),
                    ("policy_loss", pg_loss),
                    ("grad_norm", grad_norm),
                ):
                    sums[key] += float(v.detach())
                count += 1
                if cfg.target_kl is not None and float(approx_kl) > cfg.target_kl:
                    stop = True
                    break
            if stop:
                break
        model.eval()
        self.updates += 1
        stats = {k: v / max(count, 1) for k, v in sums.items()}
        stats.update(
            explained_var=explained_variance(buf.values.reshape(-1), ret.reshape(-1)),
            dead_relu=dead,
            lr=lr,
            skipped=skipped,
            update=self.updates,
        )
        return stats

    def state(self) -> dict:
        """Optimizer state, minibatch RNG and update counter (for --resume)."""
        return {
            "optimizer": self.optimizer.state_dict(),
            "minibatch_rng": self.generator.get_state(),
            "updates": self.updates,
        }

    def load_state(self, state: dict) -> None:
        """Inverse of :meth:`state`."""
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["minibatch_rng"])
        self.updates = int(state["updates"])


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

    # ------------------------------------------------------------------ helpers
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
            "train_seed_range": [0, 10**6],
            "time_s": round(elapsed, 2),
            "success_rate_100": float(np.mean([r[2] for r in recent])) if recent else None,
            "command": self.command,
            "train_config": self._train_config(),
            "torch_version": torch.__version__,
        }

    def _log(self, msg: str) -> None:
        if self.bar is not None:
            self.bar.write(msg)
        else:
            print(msg, file=sys.stderr)

    # ---------------------------------------------------------------------- run
    def run(self, callback=None) -> dict:
        """Train until ``cfg.total_steps``.

        Args:
            callback: optional ``f(row: dict)`` called in the main thread after every update's
                statistics are logged; returning False ends training after the rollout being
                collected (with a final checkpoint).

        Returns:
            summary dict: checkpoint path, steps, updates, time_s, sps, last row of statistics.
        """
        from agents.vecenv import EnvPool

        cfg = self.cfg
        torch.set_num_threads(cfg.torch_threads)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        rs = self.resume_state
        steps = int(rs["steps"]) if rs else 0
        episodes = int(rs["episodes"]) if rs else 0
        time_before = float(rs["time_s"]) if rs else 0.0

        pool = EnvPool(
            cfg.env_id,
            cfg.env_kwargs,
            num_envs=cfg.num_envs,
            num_workers=cfg.num_workers,
            groups=2,
            seed=cfg.seed,
            episode_counts=rs["episode_counts"] if rs else None,
            stuck_penalty=cfg.stuck_penalty,
            progress_reward=cfg.progress_reward,
        )
        obs_shape = pool.obs_shape
        n_actions = int(pool.action_space.n)
        from agents.policy import ACTION_NAMES

        names = (
            ACTION_NAMES
            if n_actions == len(ACTION_NAMES)
            else tuple(f"a{i}" for i in range(n_actions))
        )
        arch = Architecture(
            head=cfg.head,
            channels=tuple(cfg.channels),
            hidden=cfg.hidden,
            obs_shape=obs_shape,
            action_names=names,
        )
        model = ActorCritic(arch).to(self.device)
        actor = ActorCritic(arch).to(self.device).eval()
        if rs:
            model.load_state_dict({k: v.to(self.device) for k, v in rs["model"].items()})
        elif cfg.init_from:
            model.load_state_dict(init_weights(cfg.init_from, arch))
        actor.load_state_dict(model.state_dict())
        learner = Learner(model, cfg, self.device)
        act_gen = torch.Generator().manual_seed(cfg.seed * 104729 + 3)
        if rs:
            learner.load_state(rs["learner"])
            act_gen.set_state(rs["action_rng"])
            self.recent.extend(tuple(r) for r in rs.get("recent", []))

        log = CsvLog(self.run_dir / "progress.csv", keep_until_step=steps if rs else None)
        T, N = cfg.num_steps, cfg.num_envs
        per_rollout = T * N
        buffers = [RolloutBuffer(T, N, obs_shape), RolloutBuffer(T, N, obs_shape)]
        jobs: queue.Queue = queue.Queue()
        results: queue.Queue = queue.Queue()
        published: list = [None]  # (version, state_dict) from the learner
        errors: list[BaseException] = []
        start = time.perf_counter()
        version = 0

        def elapsed() -> float:
            return time_before + time.perf_counter() - start

        def learn(buf: RolloutBuffer) -> None:
            meta = buf.meta
            t0 = time.perf_counter()
            stats = learner.update(buf, meta["steps"])
            stats["update_s"] = time.perf_counter() - t0
            buf.free.set()
            published[0] = (
                learner.updates,
                {k: v.detach().clone() for k, v in model.state_dict().items()},
            )
            stats.update(time_s=elapsed())
            saved = None
            if meta["checkpoint"]:
                resume_state = {
                    "model": model.state_dict(),
                    "learner": learner.state(),
                    "action_rng": meta["action_rng"],
                    "episode_counts": meta["episode_counts"],
                    "steps": meta["steps"],
                    "episodes": meta["episodes"],
                    "time_s": stats["time_s"],
                    "recent": [list(r) for r in meta["recent"]],
                }
                saved = save_checkpoint(
                    self.ckpt_path,
                    model,
                    self._ckpt_config(meta, learner.updates, stats["time_s"]),
                    optimizer_state=resume_state,
                )
            if meta["snapshot"]:
                snap = self.run_dir / "snapshots" / f"step_{meta['steps']:09d}.safetensors"
                save_checkpoint(
                    snap,
                    model,
                    self._ckpt_config(meta, learner.updates, stats["time_s"]),
                )
            results.put((meta, stats, saved))

        def learner_loop() -> None:
            try:
                while True:
                    buf = jobs.get()
                    if buf is None:
                        return
                    learn(buf)
            except BaseException as exc:  # surfaced in the main thread
                errors.append(exc)

        thread = None
        if cfg.async_learner:
            thread = threading.Thread(target=learner_loop, name="rlviz-learner", daemon=True)
            thread.start()

        from tqdm import tqdm

        self.bar = tqdm(
            total=cfg.total_steps,
            initial=min(steps, cfg.total_steps),
            unit="step",
            dynamic_ncols=True,
            disable=not cfg.progress,
            smoothing=0.05,
        )
        last_row: dict = {}
        rollout_eps: list = []

        def act(slot: int, buf: RolloutBuffer, t: int) -> None:
            lo, hi = pool.slots[slot]
            x = preprocess(torch.from_numpy(buf.obs[t, lo:hi]), self.device)
            with torch.no_grad():
                logits, value = actor(x)
            logp_all = torch.log_softmax(logits.float(), dim=-1).cpu()
            a = torch.multinomial(logp_all.exp(), 1, generator=act_gen).squeeze(1)
            buf.actions[t, lo:hi] = a.numpy()
            buf.logprobs[t, lo:hi] = logp_all.gather(1, a.unsqueeze(1)).squeeze(1).numpy()
            buf.values[t, lo:hi] = value.float().cpu().numpy()
            pool.step_async(slot, buf.actions[t, lo:hi])

        def drain(block: bool) -> None:
            nonlocal last_row
            while True:
                try:
                    meta, stats, saved = results.get(block=block, timeout=None)
                except queue.Empty:
                    return
                block = False
                row = dict(meta["episode_stats"])
                row.update(
                    stats,
                    step=meta["steps"],
                    sps=(meta["steps"] - meta["start_steps"])
                    / max(stats["time_s"] - time_before, 1e-9),
                )
                log.write(row)
                for warning in self.health.check(row):
                    self._log(f"warning: {warning}")
                if saved is not None:
                    try:
                        plot_learning_curve(
                            log.path,
                            self.run_dir / "learning_curve.png",
                            title=str(self.run_dir.name),
                        )
                    except Exception as exc:  # a plot must never stop training
                        self._log(f"warning: could not draw the learning curve ({exc})")
                last_row = row
                if callback is not None and callback(row) is False:
                    stop_requested[0] = True

        def check_errors() -> None:
            if errors:
                raise RuntimeError("the learner thread failed") from errors[0]

        start_steps = steps
        stop_requested = [False]
        try:
            obs = pool.reset()
            buf, k = buffers[0], 0
            buf.free.clear()
            first = preprocess(torch.from_numpy(obs[: min(N, 8)].copy()))
            for warning in check_inputs(first):
                self._log(f"warning: {warning}")
            for s, (lo, hi) in enumerate(pool.slots):
                buf.obs[0, lo:hi] = obs[lo:hi]
                act(s, buf, 0)
            t = 0
            waited, t_rollout = 0.0, time.perf_counter()
            done = steps >= cfg.total_steps
            while not done:
                for s, (lo, hi) in enumerate(pool.slots):
                    t_wait = time.perf_counter()
                    obs_s, rew, term, trunc, finished = pool.step_wait(s)
                    waited += time.perf_counter() - t_wait
                    buf.rewards[t, lo:hi] = rew
                    buf.ends[t, lo:hi] = term | trunc
                    for ep in finished:
                        self.recent.append((ep.ret, ep.length, ep.success))
                        rollout_eps.append((ep.ret, ep.length, ep.success, ep.stuck))
                    episodes += len(finished)
                    if t + 1 < T:
                        buf.obs[t + 1, lo:hi] = obs_s
                        act(s, buf, t + 1)
                    else:
                        if s == 0:
                            nxt = buffers[(k + 1) % 2]
                            while not nxt.free.wait(timeout=0.5):
                                check_errors()
                            nxt.free.clear()
                        nxt.obs[0, lo:hi] = obs_s
                        act(s, nxt, 0)
                        buf.last_values[lo:hi] = nxt.values[0, lo:hi]
                    if published[0] is not None and published[0][0] != version:
                        version, weights = published[0]
                        actor.load_state_dict(weights)
                if t + 1 < T:
                    t += 1
                    continue
                # Every slot crossed the rollout boundary: hand the full buffer to the learner.
                t = 0
                prev = steps
                steps += per_rollout
                done = steps >= cfg.total_steps or stop_requested[0]
                recent = list(self.recent)
                eps = rollout_eps
                rollout_eps = []
                now = time.perf_counter()
                env_wait, waited, t_rollout = waited / max(now - t_rollout, 1e-9), 0.0, now
                buf.meta = {
                    "steps": steps,
                    "start_steps": start_steps,
                    "episodes": episodes,
                    "episode_counts": list(pool.episode_counts),
                    "action_rng": act_gen.get_state(),
                    "recent": recent,
                    "checkpoint": done or _crossed(prev, steps, cfg.checkpoint_every),
                    "snapshot": _crossed(prev, steps, cfg.snapshot_every)
                    or (done and cfg.snapshot_every > 0),
                    "episode_stats": {
                        "episodes": len(eps),
                        "return": float(np.mean([e[0] for e in eps])) if eps else float("nan"),
                        "episode_length": float(np.mean([e[1] for e in eps]))
                        if eps
                        else float("nan"),
                        "success_rate": float(np.mean([e[2] for e in eps]))
                        if eps
                        else float("nan"),
                        "success_rate_100": float(np.mean([r[2] for r in recent]))
                        if recent
                        else float("nan"),
                        "env_wait": env_wait,
                        "stuck_frac": sum(e[3] for e in eps) / max(sum(e[1] for e in eps), 1)
                        if eps
                        else float("nan"),
                    },
                }
                if thread is not None:
                    check_errors()
                    jobs.put(buf)
                else:
                    learn(buf)
                    version, weights = published[0]
                    actor.load_state_dict(weights)
                buf, k = nxt, k + 1
                drain(block=False)
                self.bar.update(min(steps, cfg.total_steps) - self.bar.n)
                if last_row:
                    self.bar.set_postfix(
                        success=f"{last_row['success_rate_100']:.2f}",
                        ret=f"{last_row['return']:.2f}",
                        len=f"{last_row['episode_length']:.0f}",
                        sps=f"{last_row['sps']:.0f}",
                        refresh=False,
                    )
            if thread is not None:
                jobs.put(None)
                while thread.is_alive():
                    thread.join(timeout=0.5)
                check_errors()
            drain(block=False)
        finally:
            if thread is not None and thread.is_alive():
                jobs.put(None)
            pool.close()
            self.bar.close()
        total_time = elapsed()
        return {
            "checkpoint": str(self.ckpt_path),
            "run_dir": str(self.run_dir),
            "steps": steps,
            "updates": learner.updates,
            "episodes": episodes,
            "time_s": total_time,
            "sps": (steps - start_steps) / max(total_time - time_before, 1e-9),
            "last": last_row,
        }


def init_weights(path: str, arch: Architecture) -> dict[str, torch.Tensor]:
    """Weights of checkpoint ``path`` for a new run of architecture ``arch`` (``--init-from``).

    Raises:
        CheckpointError: the checkpoint is unreadable or its architecture differs from ``arch``.
    """
    from agents.checkpoint import load_checkpoint

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


def _resume_path(arg: str) -> Path:
    path = Path(arg)
    if path.is_dir():
        path = path / "checkpoint.safetensors"
    return path


def build_parser() -> argparse.ArgumentParser:
    """The ``rlviz train`` argument parser."""
    parser = argparse.ArgumentParser(
        prog="rlviz train",
        description="Train a PPO agent on a BoxReach env. Runs go to runs/<run-name>/ "
        "(checkpoint, progress.csv, learning_curve.png).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--resume",
        metavar="PATH",
        default=None,
        help="continue a run from its checkpoint (run folder or checkpoint.safetensors): weights, "
        "optimizer, counters and RNG; flags given now override the saved config",
    )
    add_dataclass_arguments(parser, Config, suppress_defaults=True, aliases={"env_id": ["--env"]})
    return parser


def main(argv: list[str] | None = None) -> int:
    """``rlviz train``: parse flags into a :class:`Config`, train, print where the checkpoint is."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = vars(parser.parse_args(argv))
    resume = args.pop("resume")
    if resume is not None:
        path = _resume_path(resume)
        if not path.exists():
            parser.error(
                f"--resume {resume}: {str(path)!r} does not exist; pass a run folder "
                "(runs/NAME) or its checkpoint.safetensors"
            )
        try:
            saved = read_config(path)
        except (FileNotFoundError, CheckpointError) as exc:
            parser.error(str(exc))
        base = dict(saved.get("train_config", {}))
        base.update(args)  # flags given now win (e.g. a larger --total-steps)
        try:
            cfg = config_from_dict(base)
        except (TypeError, ValueError) as exc:
            parser.error(str(exc))
        if cfg.run_name is None:
            cfg.run_name = path.parent.name
            cfg.runs_dir = str(path.parent.parent)
        # Provenance: how the run started, then each resume.
        command = f"{saved.get('command') or '?'} && rlviz train {shlex.join(argv)}"
        resume = str(path)
    else:
        try:
            cfg = Config(**args)
        except ValueError as exc:
            parser.error(str(exc))
        command = "rlviz train " + shlex.join(argv) if argv else "rlviz train"
    try:
        summary = train(cfg, command=command, resume=resume)
    except (ValueError, CheckpointError) as exc:
        print(f"rlviz train: {exc}", file=sys.stderr)
        return 2
    last = summary["last"]
    print(
        f"trained {summary['steps']} steps in {summary['time_s']:.0f} s ({summary['sps']:.0f} steps/s); "
        f"success (last 100 episodes) {last.get('success_rate_100', float('nan')):.2f}\n"
        f"checkpoint: {summary['checkpoint']}\n"
        f"evaluate:   rlviz evaluate --checkpoint {summary['checkpoint']}"
    )
    return 0


__all__ = ["COLUMNS", "Config", "Learner", "Trainer", "compute_gae", "main", "train"]

if __name__ == "__main__":
    sys.exit(main())
