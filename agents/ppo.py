"""The PPO core, read top to bottom: rollout buffer, GAE, the clipped loss, the learner step.

The same algorithm as CleanRL's ``ppo_atari.py`` (Schulman et al. 2017,
https://arxiv.org/abs/1707.06347): advantages by GAE, per-minibatch advantage normalization, the
clipped surrogate, an optionally clipped value loss, an entropy bonus, a global gradient-norm clip.
Two additions: minibatches whose loss or gradient is not finite are skipped (the weights stay as
they were and the health check reports it), and the first minibatch of each update measures the
fraction of dead ReLU units. Collection and threading live in :mod:`agents.trainer`.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np
import torch

from rlviz.agents.config import Config
from rlviz.agents.diagnostics import dead_relu_fraction, explained_variance
from rlviz.agents.policy import ActorCritic, preprocess

#: Statistics averaged over an update's minibatches, in the order they are summed.
MINIBATCH_STATS = ("entropy", "approx_kl", "clip_frac", "value_loss", "policy_loss", "grad_norm")


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


@dataclass
class Batch:
    """A rollout flattened to T * N samples: frames stay uint8 numpy, the rest are tensors."""

    obs: np.ndarray
    actions: torch.Tensor
    logprobs: torch.Tensor
    values: torch.Tensor
    advantages: torch.Tensor
    returns: torch.Tensor

    @classmethod
    def from_rollout(
        cls, buf: RolloutBuffer, adv: np.ndarray, ret: np.ndarray, device: torch.device
    ) -> Batch:
        """Flatten ``buf`` and its GAE ``adv`` / ``ret`` [T, N]; tensors go to ``device``."""

        def flat(a: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(a.reshape(-1)).to(device)

        return cls(
            obs=buf.obs.reshape(-1, *buf.obs.shape[2:]),
            actions=flat(buf.actions),
            logprobs=flat(buf.logprobs),
            values=flat(buf.values),
            advantages=flat(adv),
            returns=flat(ret),
        )

    def __len__(self) -> int:
        return len(self.obs)

    def with_mirror(self, mirror_action: torch.Tensor, keep: np.ndarray | None = None) -> Batch:
        """This batch followed by the left-right mirror image of its samples (those where
        ``keep`` [N] is True, default all): frames flipped along W, each action replaced by
        ``mirror_action[a]``; a mirrored sample keeps the original's log-probability, value and
        advantage (the mirror-image policy would have taken it)."""
        rows = np.arange(len(self)) if keep is None else np.flatnonzero(keep)
        idx = torch.from_numpy(rows).to(self.actions.device)
        flipped = np.ascontiguousarray(self.obs[rows][:, :, ::-1])
        plus = lambda t: torch.cat([t, t[idx]])  # noqa: E731
        mirrored = mirror_action.to(self.actions.device)[self.actions[idx]]
        return Batch(
            obs=np.concatenate([self.obs, flipped]),
            actions=torch.cat([self.actions, mirrored]),
            logprobs=plus(self.logprobs),
            values=plus(self.values),
            advantages=plus(self.advantages),
            returns=plus(self.returns),
        )


def red_box_in_view(obs: np.ndarray) -> np.ndarray:
    """Whether any frame of each observation uint8 [N, H, W, K*3] shows the red goal box: at
    least 2 pixels whose red is over 100 and twice their green and blue (BoxReach's distractors
    are green, blue, yellow, purple and grey). Bool [N]. On 415 frames with ground truth it
    agreed with the env's goal mask on every one."""
    frames = obs.reshape(*obs.shape[:3], -1, 3).astype(np.int16)
    r, g, b = frames[..., 0], frames[..., 1], frames[..., 2]
    red = (r > 100) & (r > 2 * g) & (r > 2 * b)
    return red.sum(axis=(1, 2, 3)) >= 2


def mirror_actions(names: tuple[str, ...]) -> torch.Tensor:
    """Index map of each action to its mirror image ("left" <-> "right", others stay) [A]."""
    swap = {"left": "right", "right": "left"}
    if not {"left", "right"} <= set(names):
        raise ValueError(
            f"mirror_augment needs actions named 'left' and 'right'; the policy's are {names}"
        )
    return torch.tensor([names.index(swap.get(n, n)) for n in names], dtype=torch.int64)


def ppo_loss(
    logits: torch.Tensor,
    value: torch.Tensor,
    batch: Batch,
    idx: torch.Tensor,
    cfg: Config,
    ent_coef: float,
) -> dict[str, torch.Tensor]:
    """PPO's loss on minibatch ``idx`` of ``batch``, given the model's ``logits`` [B, A] and
    ``value`` [B] on those samples, with entropy weight ``ent_coef`` (this update's, see
    :meth:`Learner.entropy_coef`).

    Returns:
        dict of scalar tensors: ``loss`` (to minimize) and the statistics of
        :data:`MINIBATCH_STATS` except ``grad_norm``.
    """
    logp_all = torch.log_softmax(logits, dim=-1)
    logp = logp_all.gather(1, batch.actions[idx].unsqueeze(1)).squeeze(1)
    entropy = -(logp_all.exp() * logp_all).sum(-1).mean()
    log_ratio = logp - batch.logprobs[idx]
    ratio = log_ratio.exp()
    with torch.no_grad():
        approx_kl = ((ratio - 1) - log_ratio).mean()  # Schulman's low-variance estimator
        clip_frac = ((ratio - 1.0).abs() > cfg.clip_coef).float().mean()
    mb_adv = batch.advantages[idx]
    mb_adv = (mb_adv - mb_adv.mean()) / (mb_adv.std(unbiased=False) + 1e-8)
    pg_loss = torch.max(
        -mb_adv * ratio, -mb_adv * ratio.clamp(1 - cfg.clip_coef, 1 + cfg.clip_coef)
    ).mean()
    old_values, returns = batch.values[idx], batch.returns[idx]
    if cfg.clip_vloss:
        v_clipped = old_values + (value - old_values).clamp(-cfg.clip_coef, cfg.clip_coef)
        v_loss = 0.5 * torch.max((value - returns) ** 2, (v_clipped - returns) ** 2).mean()
    else:
        v_loss = 0.5 * ((value - returns) ** 2).mean()
    return {
        "loss": pg_loss - ent_coef * entropy + cfg.vf_coef * v_loss,
        "entropy": entropy,
        "approx_kl": approx_kl,
        "clip_frac": clip_frac,
        "value_loss": v_loss,
        "policy_loss": pg_loss,
    }


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
        mirrored = cfg.mirror_augment != "none"
        self.mirror = mirror_actions(tuple(model.action_names)) if mirrored else None

    def learning_rate(self, step: int) -> float:
        """Learning rate for an update that starts at env step ``step``."""
        if not self.cfg.anneal_lr:
            return self.cfg.learning_rate
        return self.cfg.learning_rate * max(1.0 - step / self.cfg.total_steps, 0.0)

    def entropy_coef(self, step: int) -> float:
        """Entropy bonus weight for an update that starts at env step ``step``."""
        if self.cfg.ent_coef_end is None:
            return self.cfg.ent_coef
        frac = min(step / self.cfg.total_steps, 1.0)
        return self.cfg.ent_coef + frac * (self.cfg.ent_coef_end - self.cfg.ent_coef)

    def update(self, buf: RolloutBuffer, step: int) -> dict:
        """One PPO update on ``buf`` (collected up to env step ``step``).

        Returns:
            dict of statistics (keys of :data:`agents.diagnostics.COLUMNS`).
        """
        cfg = self.cfg
        adv, ret = compute_gae(
            buf.rewards, buf.values, buf.ends, buf.last_values, cfg.gamma, cfg.gae_lambda
        )
        batch = Batch.from_rollout(buf, adv, ret, self.device)
        if self.mirror is not None:
            keep = red_box_in_view(batch.obs) if self.cfg.mirror_augment == "goal" else None
            batch = batch.with_mirror(self.mirror, keep)
        lr = self.learning_rate(step - len(batch))
        ent_coef = self.entropy_coef(step - len(batch))
        for group in self.optimizer.param_groups:
            group["lr"] = lr

        self.model.train()
        sums = dict.fromkeys(MINIBATCH_STATS, 0.0)
        count = skipped = 0
        dead = float("nan")
        for idx in self._minibatches(len(batch)):
            x = preprocess(torch.from_numpy(batch.obs[idx.numpy()]), self.device)
            if count == 0:
                dead = dead_relu_fraction(self.model, x, self.relu_layers)
            stats = self._step(x, batch, idx.to(self.device), ent_coef)
            skipped += not stats.pop("applied")
            for key in MINIBATCH_STATS:
                sums[key] += float(stats[key].detach())
            count += 1
            if cfg.target_kl is not None and float(stats["approx_kl"]) > cfg.target_kl:
                break
        self.model.eval()
        self.updates += 1
        out = {k: v / max(count, 1) for k, v in sums.items()}
        out.update(
            explained_var=explained_variance(buf.values.reshape(-1), ret.reshape(-1)),
            dead_relu=dead,
            lr=lr,
            skipped=skipped,
            update=self.updates,
        )
        return out

    def _minibatches(self, size: int):
        """Yield index tensors: ``update_epochs`` shuffled passes over ``size`` samples."""
        mb_size = max(size // self.cfg.num_minibatches, 1)
        for _ in range(self.cfg.update_epochs):
            perm = torch.randperm(size, generator=self.generator)
            for start in range(0, size, mb_size):
                yield perm[start : start + mb_size]

    def _step(self, x: torch.Tensor, batch: Batch, idx: torch.Tensor, ent_coef: float) -> dict:
        """One gradient step on minibatch ``idx`` (frames ``x``); returns its loss statistics,
        ``grad_norm`` and ``applied`` (False when the step was refused as non-finite)."""
        logits, value = self.model(x)
        stats = ppo_loss(logits, value, batch, idx, self.cfg, ent_coef)
        loss = stats.pop("loss")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.max_grad_norm)
        applied = bool(torch.isfinite(loss) and torch.isfinite(grad_norm))
        if applied:
            self.optimizer.step()
        else:
            # Never let one bad batch poison the weights; the health check reports it.
            self.optimizer.zero_grad(set_to_none=True)
        return {**stats, "grad_norm": grad_norm, "applied": applied}

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
