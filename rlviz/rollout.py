"""Run a policy in any Gymnasium env with image observations and keep what explanations need.

:class:`EpisodeRecorder` is the one per-step record of an episode (s_t, info_t, a_t, r_t and an
optional per-state image such as a top-down map); :func:`run_episode` plays a policy with it, and
the video wrappers feed it from ``reset``/``step`` while someone else chooses the actions.
"""

from __future__ import annotations

import copy
import os
import zlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import nullcontext as _nothing
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path

import numpy as np
import torch

from rlviz.layout import LayoutError, ObservationLayout
from rlviz.policy import PolicyAdapter, PolicyOutput, as_policy_output
from rlviz.policy.output import env_action
from rlviz.spool import Spool, StepArray, window

#: A recurrent state: a tuple of batch-first tensors (see :class:`rlviz.PolicyAdapter`).
State = tuple[torch.Tensor, ...]


class CompressedFrames:
    """A list of uint8 images kept zlib-compressed (top-down maps shrink ~20x); indexable by t.

    With ``path``, the compressed bytes go to that file as they come (a long episode's views in
    a :class:`rlviz.spool.Spool`) and only their offsets stay in memory.
    """

    def __init__(self, level: int = 1, path: str | os.PathLike | None = None) -> None:
        self.level = int(level)
        self.path = None if path is None else Path(path)
        self._data: list[bytes] = []
        self._spans: list[tuple[int, int]] = []  # (offset, length) in ``path``
        self._shapes: list[tuple[int, ...]] = []
        self._size = 0
        if self.path is not None:
            self.path.write_bytes(b"")

    def append(self, image: np.ndarray) -> None:
        """Store one uint8 image (any shape)."""
        image = np.ascontiguousarray(image, dtype=np.uint8)
        packed = zlib.compress(image.data, self.level)
        if self.path is None:
            self._data.append(packed)
        else:
            with open(self.path, "ab") as f:
                f.write(packed)
            self._spans.append((self._size, len(packed)))
            self._size += len(packed)
        self._shapes.append(image.shape)

    def __len__(self) -> int:
        return len(self._shapes)

    def __getitem__(self, t: int) -> np.ndarray:
        if self.path is None:
            packed = self._data[t]
        else:
            offset, length = self._spans[t]
            with open(self.path, "rb") as f:
                f.seek(offset)
                packed = f.read(length)
        return np.frombuffer(zlib.decompress(packed), dtype=np.uint8).reshape(self._shapes[t])

    @property
    def nbytes(self) -> int:
        """Compressed bytes held in memory (none when kept in a file)."""
        return sum(len(d) for d in self._data)


@dataclass
class Rollout:
    """One episode. Arrays are indexed by step t = 0 .. T-1 (the state s_t the agent acted in).

    Attributes:
        obs: uint8 [T, ...], what the policy saw, as the env gave it (in ``layout``: [T, H, W, C]
            for one frame, [T, H, W, K*C] or [T, K, H, W, C] for a stack).
        actions: int64 [T], the action taken (sampled, or greedy when deterministic); for a
            continuous (Box) policy float32 [T, D], as the policy emitted it (before the env's
            rescaling: in [-1, 1] for SAC/TD3), which is what ``TakenAction`` explains.
        probs: float32 [T, A], pi(.|s_t); [T, 0] for a continuous policy.
        values: float32 [T], V(s_t), or None for a policy without critic.
        rewards: float32 [T], reward received after a_t.
        infos: per-step arrays stacked over t, for every requested info key present at each step
            (for BoxReach with ground truth: ``goal_mask`` bool [T, H, W], ``agent_pos`` [T, 2], ...).
        terminated / truncated: how the episode ended.
        seed: the reset seed, when one was given.
        views: T per-state images captured while playing (e.g. the env's top-down map), or None.
        states: for a recurrent policy, the state entering each step (reset at the episode's
            start): a tuple of CPU tensors [T, ...], as ``states=`` of the methods takes it.
        layout: the :class:`rlviz.ObservationLayout` of ``obs``, decided once as the episode
            is recorded (:func:`rollout_layout`) and read by whatever shows or explains it.
        action_mean / action_std: a continuous policy's mean action and standard deviation per
            dimension, float32 [T, D] (std None when deterministic); None for a discrete one.
        reward_sum: the env's rewards summed in step order in double precision (``rewards``
            rounds them to float32), as evaluation reports; None for a window or given rewards.
    """

    obs: np.ndarray
    actions: np.ndarray
    probs: np.ndarray
    values: np.ndarray | None
    rewards: np.ndarray
    infos: dict[str, np.ndarray] = field(default_factory=dict)
    terminated: bool = False
    truncated: bool = False
    seed: int | None = None
    views: Sequence[np.ndarray] | None = None
    states: State | None = None
    layout: ObservationLayout | None = None
    action_mean: np.ndarray | None = None
    action_std: np.ndarray | None = None
    reward_sum: float | None = None

    def __len__(self) -> int:
        return len(self.actions)

    @property
    def continuous(self) -> bool:
        """Whether the policy acts in a Box (``action_mean`` holds its means)."""
        return self.action_mean is not None

    @property
    def action_count(self) -> int:
        """A discrete actions, or D dimensions of a Box action."""
        return int(self.action_mean.shape[1] if self.continuous else self.probs.shape[1])

    def window(self, start: int, stop: int | None = None) -> Rollout:
        """Steps [start, stop) of the episode as a rollout (disk-backed arrays stay on disk)."""
        n = len(self)
        stop = n if stop is None else min(stop, n)
        if not 0 <= start < stop:
            raise ValueError(
                f"step window [{start}, {stop}) is empty for an episode of {n} steps; give "
                f"0 <= from_step < to_step <= {n}"
            )
        rows = slice(start, stop)
        return Rollout(
            obs=window(self.obs, start, stop),
            actions=self.actions[rows],
            probs=self.probs[rows],
            values=None if self.values is None else self.values[rows],
            rewards=self.rewards[rows],
            infos={k: window(v, start, stop) for k, v in self.infos.items()},
            terminated=self.terminated and stop == n,
            truncated=self.truncated or stop < n,
            seed=self.seed,
            views=None if self.views is None else _Window(self.views, start, stop),
            states=None if self.states is None else tuple(s[rows] for s in self.states),
            layout=self.layout,
            action_mean=None if self.action_mean is None else self.action_mean[rows],
            action_std=None if self.action_std is None else self.action_std[rows],
        )

    @property
    def success(self) -> bool:
        """Whether the episode reached its goal (``info["success"]``, else termination with
        reward > 0)."""
        if "success" in self.infos:
            return bool(np.any(self.infos["success"]))
        return bool(self.terminated and self.rewards.sum() > 0)

    @property
    def episode_return(self) -> float:
        """Sum of the rewards."""
        return float(self.rewards.sum())


class _Window:
    """Items [start, stop) of an indexable sequence (a rollout window's views)."""

    def __init__(self, items, start: int, stop: int) -> None:
        self.items, self.start, self.stop = items, start, stop

    def __len__(self) -> int:
        return self.stop - self.start

    def __getitem__(self, t: int):
        if not -len(self) <= t < len(self):
            raise IndexError(f"step {t} out of range for {len(self)} steps")
        return self.items[self.start + (t % len(self))]


def stack_infos(per_step: list[dict], keys: Sequence[str] | None) -> dict[str, np.ndarray]:
    """Per-step info dicts as arrays over t, for the ``keys`` (all of the first info's when None)
    present at every step; ragged entries become object arrays."""
    if not per_step:
        return {}
    wanted = keys if keys is not None else list(per_step[0])
    stacked = {}
    for key in wanted:
        if all(key in info for info in per_step):
            try:
                stacked[key] = np.stack([np.asarray(info[key]) for info in per_step])
            except ValueError:  # ragged (e.g. a varying number of objects): keep as object array
                stacked[key] = np.array([info[key] for info in per_step], dtype=object)
    return stacked


def policy_outputs(
    adapter: PolicyAdapter, obs: np.ndarray, batch_size: int = 256
) -> tuple[np.ndarray, np.ndarray | None]:
    """pi(.|s) float32 [T, A] and V(s) float32 [T] (or None) for observations [T, ...], batched."""
    probs, values = [], []
    for start in range(0, len(obs), batch_size):
        out = adapter(obs[start : start + batch_size])
        probs.append(_probs(out))
        values.append(None if out.value is None else out.value.float().cpu().numpy())
    value = None if values[0] is None else np.concatenate(values).astype(np.float32)
    return np.concatenate(probs).astype(np.float32), value


def _probs(out: PolicyOutput) -> np.ndarray:
    """pi(.|s) float32 [B, A]; [B, 0] for a continuous policy (its means are kept apart)."""
    if out.discrete:
        return out.probs.float().cpu().numpy()
    return np.zeros((out.batch, 0), np.float32)


def action_stats(
    adapter: PolicyAdapter, obs: np.ndarray, states: State | None = None, batch_size: int = 256
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """A continuous policy's mean action and standard deviation per step, float32 [T, D] each
    (std None when deterministic), with a recurrent policy's entering ``states``; (None, None)
    for a discrete policy."""
    means, stds = [], []
    for start in range(0, len(obs), batch_size):
        rows = slice(start, start + batch_size)
        held = None if states is None else tuple(s[rows] for s in states)
        with adapter.holding_state(held) if adapter.recurrent else _nothing():
            out = adapter(obs[rows])
        if out.discrete:
            return None, None
        means.append(out.action_mean.detach().float().cpu().numpy())
        stds.append(None if out.std is None else out.std.detach().float().cpu().numpy())
    std = None if stds[0] is None else np.concatenate(stds)
    return np.concatenate(means), std


def act(
    policy: PolicyAdapter, obs, state: State | None = None
) -> tuple[PolicyOutput, State | None]:
    """pi/V for one observation and, for a recurrent policy, the state after it from the
    entering ``state`` (batch of 1; no gradients)."""
    if not policy.recurrent:
        return policy(obs), None
    with torch.no_grad():
        raw, next_state = policy.step(policy.preprocess(obs), state)
    return as_policy_output(raw, policy.output), tuple(s.detach() for s in next_state)


def stack_states(per_step: Sequence[State]) -> State:
    """States of single steps (each a tuple of [1, ...] tensors) as one tuple of CPU [T, ...]."""
    return tuple(
        torch.cat([s.detach().cpu() for s in parts]) for parts in zip(*per_step, strict=True)
    )


def episode_outputs(
    adapter: PolicyAdapter, obs: np.ndarray, batch_size: int = 256
) -> tuple[np.ndarray, np.ndarray | None, State | None]:
    """pi(.|s) [T, A], V(s) [T] (or None) and the entering states (or None) of one episode's
    observations [T, ...]. A recurrent policy replays the episode from its initial state, one
    step at a time (its state depends on the observations only, so whoever chose the actions,
    this is the state it had); any other policy is evaluated in batches."""
    if not adapter.recurrent:
        return (*policy_outputs(adapter, obs, batch_size), None)
    probs, values, states, _ = carry_state(adapter, obs, adapter.initial_state(1))
    return probs, values, states


def carry_state(
    adapter: PolicyAdapter, obs: np.ndarray, state: State
) -> tuple[np.ndarray, np.ndarray | None, State, State]:
    """A recurrent policy over observations [T, ...] one step at a time from ``state``: pi [T, A],
    V [T] (or None), the states entering each step (CPU [T, ...]) and the state after the last."""
    entering, probs, values = [], [], []
    for t in range(len(obs)):
        entering.append(state)
        out, state = act(adapter, obs[t], state)
        probs.append(_probs(out)[0])
        values.append(None if out.value is None else float(out.value[0]))
    value = None if values[0] is None else np.asarray(values, np.float32)
    return np.stack(probs).astype(np.float32), value, stack_states(entering), state


def with_layout(policy: PolicyAdapter, layout: ObservationLayout | None) -> PolicyAdapter:
    """``policy`` reading observations in ``layout``: itself when it declares one (or ``layout``
    is a single frame), else a shallow copy with the layout set (the caller's stays as it was):
    by its shape alone, one stacked observation ``[K, H, W, C]`` reads as a batch of K frames."""
    if policy.layout is not None or layout is None or not layout.stacked:
        return policy
    reading = copy.copy(policy)
    reading.layout = layout
    return reading


def rollout_layout(policy: PolicyAdapter, env, obs) -> ObservationLayout | None:
    """The layout of an episode's observations: the policy's, else the env's (its wrappers),
    else the one ``obs`` (one observation) implies; None when none is clear."""
    if policy.layout is not None:
        # A policy that takes several layouts (SB3: channels first or last) names the one seen.
        return policy.layout_for(obs) if policy.accepts else policy.layout
    try:
        return ObservationLayout.from_env(env)
    except (LayoutError, AttributeError, TypeError, IndexError, KeyError):
        pass  # not a Gymnasium image env: read the observation's shape
    try:
        return policy.layout_for([obs])  # in a list: one observation, a 4-D one never a batch
    except (LayoutError, ValueError):
        return None


#: Marks an info value kept in the recorder's spool (see ``EpisodeRecorder._spool_info``).
_SPOOLED = object()


class EpisodeRecorder:
    """The per-step record of one episode as it is played: s_t, info_t, a_t, r_t (and a view).

    The info kept for step t describes s_t (the reset info for t = 0), so masks line up with
    ``obs[t]``; ``success`` is credited to the step whose action reached the goal. Infos are cut
    to ``info_keys`` as they arrive (names or glob patterns such as ``"*_visible"``), so an env
    that reports large extras (BoxReach: a mask per distractor) costs nothing per step.

    Args:
        info_keys: infos to keep (None: all).
        capture: called once per state kept (after reset and each non-final step) for an image
            of it, e.g. ``lambda: env.unwrapped.top_down_map(size=(216, 312))``; None for none.
        spool: keep observations, views and large infos (masks) in this
            :class:`rlviz.spool.Spool` as they come, not in memory (long episodes); the rollout's
            ``obs`` is then a disk-backed :class:`rlviz.spool.StepArray` read a chunk at a time.

    Attributes:
        obs, infos: the states so far, one more than ``actions`` until the episode ends.
        actions, rewards: a_t and r_t of the steps taken.
        views: the captured images (compressed), one per state.
    """

    def __init__(
        self,
        info_keys: Sequence[str] | None = None,
        capture: Callable[[], np.ndarray] | None = None,
        spool: Spool | None = None,
    ) -> None:
        self.info_keys = None if info_keys is None else tuple(info_keys)
        self.capture = capture
        self.spool = spool
        self.reset_record(None)

    def reset_record(self, seed: int | None) -> None:
        """Forget the episode recorded so far."""
        self.seed = seed
        self.infos: list[dict] = []
        self.actions: list[int] = []
        self.rewards: list[float] = []
        self.reward_sum = 0.0
        self.terminated = self.truncated = False
        if self.spool is None:
            self.obs: list[np.ndarray] | StepArray = []
            self.views = CompressedFrames()
        else:  # a new set of arrays per episode: a rollout handed out keeps its own
            self._prefix = self.spool.unique("episode") + "-"
            self.obs = self.spool.array(self._prefix + "obs")
            self.views = CompressedFrames(path=self.spool.path / (self._prefix + "views.bin"))
        self._big: dict[str, StepArray] = {}  # spooled info arrays (masks), by key

    def __len__(self) -> int:
        return len(self.actions)

    @property
    def done(self) -> bool:
        """Whether the episode has ended."""
        return self.terminated or self.truncated

    def _keep(self, info: dict) -> dict:
        if self.info_keys is None:
            return dict(info)
        return {k: v for k, v in info.items() if any(fnmatchcase(k, p) for p in self.info_keys)}

    def _add_state(self, obs, info: dict) -> None:
        self.obs.append(np.array(obs, copy=True))
        self.infos.append(self._spool_info(self._keep(info)))
        if self.capture is not None:
            self.views.append(self.capture())

    def _spool_info(self, info: dict) -> dict:
        """With a spool, large array infos (>= 1 KB, e.g. masks) go to it; the dict keeps a
        marker. A key whose shape changes stays in memory from then on (stacked as ragged)."""
        if self.spool is None:
            return info
        for key, value in info.items():
            if isinstance(value, np.ndarray) and value.nbytes >= 1024 and value.dtype != object:
                if key not in self._big:
                    if len(self.infos):  # it appears only now: not at every step, never stacked
                        continue
                    self._big[key] = self.spool.array(f"{self._prefix}info-{len(self._big)}")
                try:
                    self._big[key].append(value)
                except ValueError:
                    continue  # ragged: kept in the dict
                info[key] = _SPOOLED
        return info

    def _infos(self, n: int) -> dict[str, np.ndarray]:
        """The first ``n`` states' infos stacked over t (spooled ones as disk-backed arrays)."""
        infos = self.infos[:n]
        small = [{k: v for k, v in info.items() if v is not _SPOOLED} for info in infos]
        stacked = stack_infos(small, None)
        for key, array in self._big.items():
            if not all(key in info for info in infos):
                continue
            if all(info[key] is _SPOOLED for info in infos):
                stacked[key] = window(array, 0, n)
            else:  # its shape changed along the way: rebuild the steps, stack as ragged
                it = iter(array)
                rows = [next(it) if info[key] is _SPOOLED else info[key] for info in infos]
                stacked[key] = stack_infos([{key: r} for r in rows], [key])[key]
        order = list(infos[0]) if infos else []
        return {k: stacked[k] for k in order if k in stacked}

    def start(self, obs, info: dict, seed: int | None = None) -> None:
        """Begin an episode at the state ``reset`` returned."""
        self.reset_record(seed)
        self._add_state(obs, info)

    def step(self, action, reward: float, terminated: bool, truncated: bool, obs, info) -> None:
        """Record a_t, r_t and, unless the episode ended, the next state (what ``step`` gave)."""
        flat = np.asarray(action).reshape(-1)
        # a Box action is kept whole (float32 [D]); a discrete one as its index
        self.actions.append(flat.astype(np.float32) if flat.dtype.kind == "f" else int(flat[0]))
        self.rewards.append(float(reward))
        self.reward_sum += float(reward)
        if "success" in info and "success" in self.infos[-1]:
            # success is an event of the step a_t led to: credit it to t.
            self.infos[-1] = {**self.infos[-1], "success": info["success"]}
        if terminated or truncated:  # the state after the last step is never shown
            self.terminated, self.truncated = bool(terminated), bool(truncated)
        else:
            self._add_state(obs, info)

    def to_rollout(
        self,
        probs: np.ndarray,
        values: np.ndarray | None,
        actions: np.ndarray | None = None,
        rewards: np.ndarray | None = None,
        *,
        states: State | None = None,
        layout: ObservationLayout | None = None,
        action_mean: np.ndarray | None = None,
        action_std: np.ndarray | None = None,
    ) -> Rollout:
        """The states recorded so far with pi/V (and other actions or rewards, when given;
        without ``actions``, only the states that have one). ``states`` and ``layout`` are
        stored as given; ``action_mean`` / ``action_std`` [T, D] make it a Box policy's rollout.
        """
        n = len(self.obs) if actions is not None else len(self.actions)
        taken = self.actions if actions is None else actions
        continuous = action_mean is not None
        return Rollout(
            obs=np.stack(self.obs[:n]) if self.spool is None else window(self.obs, 0, n),
            actions=(
                np.asarray(taken, dtype=np.float32).reshape(len(taken), -1)
                if continuous
                else np.asarray(taken, dtype=np.int64)
            ),
            probs=np.asarray(probs, dtype=np.float32),
            values=None if values is None else np.asarray(values, dtype=np.float32),
            rewards=np.asarray(self.rewards if rewards is None else rewards, dtype=np.float32),
            infos=self._infos(n),
            terminated=self.terminated,
            truncated=self.truncated,
            seed=self.seed,
            views=self.views if self.capture is not None else None,
            states=states,
            layout=layout,
            action_mean=None if not continuous else np.asarray(action_mean, np.float32),
            action_std=None if action_std is None else np.asarray(action_std, np.float32),
            reward_sum=self.reward_sum if rewards is None else None,
        )


def run_episode(
    env,
    policy: PolicyAdapter,
    *,
    seed: int | None = None,
    deterministic: bool = False,
    info_keys: Sequence[str] | None = None,
    max_steps: int | None = None,
    generator: torch.Generator | None = None,
    capture: Callable[[], np.ndarray] | None = None,
    spool: Spool | None = None,
) -> Rollout:
    """Play one episode of ``policy`` in ``env`` (a Gymnasium env) as a :class:`Rollout`.

    A stochastic policy samples a_t ~ pi(.|s_t) with ``generator``; ``deterministic`` takes
    argmax. ``info_keys``, ``capture`` and ``spool``: see :class:`EpisodeRecorder`. A recurrent
    policy starts from its initial state and carries it along (``Rollout.states``).
    """
    record = EpisodeRecorder(info_keys, capture, spool)
    obs, info = env.reset(seed=seed)
    record.start(obs, info, seed)
    layout = rollout_layout(policy, env, obs)
    policy = with_layout(policy, layout)  # an env's frame stack, read as one observation
    probs, values, states, means, stds = [], [], [], [], []
    state = policy.initial_state(1) if policy.recurrent else None
    while not record.done:
        if state is not None:
            states.append(state)  # the state entering step t: what explains a_t
        out, state = act(policy, obs, state)
        if out.discrete:
            pi = out.probs[0].float().cpu()
            pick = pi.argmax() if deterministic else torch.multinomial(pi, 1, generator=generator)
            action = to_env = int(pick)
            probs.append(pi.numpy())
        else:
            # a Box policy: its own action is recorded (what TakenAction explains), the env
            # gets it rescaled or clipped to the Box
            chosen = out.greedy() if deterministic else out.sample(generator)
            action = chosen[0].detach().float().cpu().numpy()
            means.append(out.action_mean[0].detach().float().cpu().numpy())
            stds.append(None if out.std is None else out.std[0].detach().float().cpu().numpy())
            probs.append(np.zeros(0, np.float32))
            to_env = env_action(action, out.kind, env.action_space)
        values.append(None if out.value is None else float(out.value[0]))
        obs, reward, terminated, truncated, info = env.step(to_env)
        if max_steps is not None and len(record) + 1 >= max_steps:
            truncated = True
        record.step(action, reward, terminated, truncated, obs, info)
    return record.to_rollout(
        np.stack(probs),
        None if values[0] is None else np.asarray(values, np.float32),
        states=stack_states(states) if states else None,
        layout=layout,
        action_mean=np.stack(means) if means else None,
        action_std=np.stack(stds) if stds and stds[0] is not None else None,
    )


def episode_generator(seed: int | None, episode: int) -> torch.Generator:
    """The action sampler of episode ``episode`` of ``collect(..., seed=seed)``, whose reset seed
    is ``seed + episode`` (see :func:`sampler_of`)."""
    return sampler_of(None if seed is None else seed + episode, episode)


def sampler_of(reset_seed: int | None, episode: int) -> torch.Generator:
    """The one per-episode rule: an episode samples its actions from a torch generator seeded
    with its reset seed (its index ``episode`` when it has none), so it is the same played first,
    later or alone, in any process."""
    return torch.Generator().manual_seed(episode if reset_seed is None else reset_seed)


def collect(
    env,
    policy: PolicyAdapter,
    episodes: int = 1,
    *,
    seed: int | None = None,
    deterministic: bool = False,
    info_keys: Sequence[str] | None = None,
    max_steps: int | None = None,
    capture: Callable[[], np.ndarray] | None = None,
    first_episode: int = 0,
    spool: Spool | None = None,
    seeds: Sequence[int] | None = None,
) -> Iterator[Rollout]:
    """Yield episodes ``first_episode .. first_episode + episodes - 1``; episode i is reset with
    ``seed + i`` (when ``seed`` is given), or with ``seeds[i]`` (any reset seeds, e.g. the ones a
    run trained on), and samples its actions from its own generator seeded with that reset seed
    (:func:`sampler_of`), so the same call gives the same episodes, and episodes [a, b)
    played alone (``first_episode=a, episodes=b - a``, e.g. in a worker) equal those of a call
    that plays them all."""
    for i in range(first_episode, first_episode + episodes):
        reset_seed = (None if seed is None else seed + i) if seeds is None else int(seeds[i])
        yield run_episode(
            env,
            policy,
            seed=reset_seed,
            deterministic=deterministic,
            info_keys=info_keys,
            max_steps=max_steps,
            generator=sampler_of(reset_seed, i),
            capture=capture,
            spool=spool,
        )
