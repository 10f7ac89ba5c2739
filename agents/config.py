"""The training config: one dataclass, one field per ``rlviz train`` flag (CleanRL's ``Args``).

Each field carries a one-line docstring under it; :func:`rlviz.options.add_dataclass_arguments`
turns the fields into ``--flags`` and those docstrings into ``--help`` text, so the config is
documented once.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field

from rlviz.options import add_dataclass_arguments  # noqa: F401  (this config's CLI; re-exported)

if typing.TYPE_CHECKING:
    import torch


#: What ``mirror_augment`` may mirror.
MIRROR_CHOICES = ("none", "all", "goal")


@dataclass
class Config:
    """PPO settings. Every field is a command-line flag: ``env_id`` -> ``--env-id``."""

    env_id: str = "rlviz/BoxReach-v0"
    """Gymnasium id of the task (import rlviz.envs registers rlviz/*)."""
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
    """Entropy bonus weight (at the start of the run when ent_coef_end is set)."""
    ent_coef_end: float | None = None
    """Entropy bonus weight reached at total_steps, linearly from ent_coef (None: constant).
    A schedule that ends sharp cuts the sampled wrong turns of a trained policy."""
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
    progress_turns: bool = False
    """Shaping: the progress potential also counts the turn steps to face the oracle's heading
    (envs.oracle.steps_to_go, in forward-step metres), so turning the short way round is progress
    too; without it a policy can settle on turning one way only. Still potential-based."""
    mirror_augment: str = "none"
    """Also learn from rollout samples mirrored left-right (frames flipped, "left"/"right" actions
    swapped; BoxReach's room is mirror-symmetric), so the policy cannot settle on turning one way
    only: none; all (every sample); goal (samples whose frames show the red box: search keeps
    its own direction)."""
    frame_stack: int = 1
    """Memory: the policy sees the last K frames, stacked on the channel axis oldest first
    (envs.wrappers.StackFrames; 1: one frame, no memory)."""
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
        if self.mirror_augment not in MIRROR_CHOICES:
            problems.append(
                f"mirror_augment={self.mirror_augment!r}; expected one of {', '.join(MIRROR_CHOICES)}"
            )
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
            "frame_stack",
        ):
            if getattr(self, name) < 1:
                problems.append(f"{name}={getattr(self, name)}; expected >= 1")
        if problems:
            raise ValueError("invalid training config: " + "; ".join(problems))


def config_from_dict(data: dict) -> Config:
    """A :class:`Config` from a dict (e.g. a checkpoint's ``train_config``); unknown keys raise."""
    names = {f.name for f in dataclasses.fields(Config)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"unknown config keys {unknown}; valid: {sorted(names)}")
    return Config(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


def resolve_device(name: str) -> torch.device:
    """``auto`` -> cuda when available else cpu; anything else is checked and returned (one
    rule for every command: :func:`rlviz.ops.resolve_device`)."""
    from rlviz.ops import resolve_device as resolve  # here: reading a config imports no torch

    return resolve(name)


def default_run_name(cfg: Config) -> str:
    """``<env>_<head>_s<seed>``, e.g. ``BoxReach-v0_gap_s1``."""
    return f"{cfg.env_id.split('/')[-1]}_{cfg.head}_s{cfg.seed}"
