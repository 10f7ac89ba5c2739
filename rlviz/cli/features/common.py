"""What ``rlviz filters | featvis | topk | dissect`` share: their options, and playing the
checkpoint for frames to look at."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from rlviz.cli.common import (
    CliError,
    add_shared,
    check_layers,
    check_out_dir,
    new_parser,
    output_name,
    picked,
    policy_from_args,
    require_checkpoint,
)

if TYPE_CHECKING:
    from rlviz.agents.checkpoint import LoadedPolicy

# Not videos/features: that folder holds the committed example figures, which a default run must
# never overwrite (videos/demo/ is git-ignored). Pass --out videos/features to regenerate them.
DEFAULT_OUT = Path("videos/demo/features")


def feature_parser(name: str, description: str) -> argparse.ArgumentParser:
    """A feature command's parser with the options all four share."""
    p = new_parser(name, description)
    add_shared(
        p,
        "checkpoint",
        "env",
        "out",
        "seed",
        "max_steps",
        "deterministic",
        "no_progress",
        "device",
        out=dict(
            default=None,
            help=f"output folder (default {DEFAULT_OUT}/NAME, NAME from the checkpoint, "
            "e.g. boxreach)",
        ),
    )
    return p


def add_layers_flag(p: argparse.ArgumentParser, what: str) -> None:
    """``--layers``, several, read by :func:`layers_arg`; ``what``: what they are for."""
    p.add_argument("--layers", nargs="+", default=None, help=f"{what} (default: every conv block)")


def load(args: argparse.Namespace, layers: Sequence[str | None] = ()) -> LoadedPolicy:
    """The ``--checkpoint``, to play in ``--env`` (default: the env it trained in), once it
    exists, ``--out`` (default: a folder named by the checkpoint) is writable and ``layers``
    name layers of the model."""
    require_checkpoint(args.checkpoint)
    if args.out is None:
        args.out = DEFAULT_OUT / output_name(args.checkpoint)
    check_out_dir(args.out)
    return policy_from_args(args, layers)


def collect_dataset(
    env,
    adapter,
    episodes: int,
    *,
    seed: int = 0,
    deterministic: bool = False,
    max_steps: int | None = None,
    ground_truth: bool = False,
    progress: bool = False,
):
    """Play ``episodes`` episodes; returns (obs uint8 [N, H, W, C], goal masks bool [N, H, W] or
    None where the env gives none, list of rollouts). ``ground_truth``: fail without masks."""
    from rlviz.features import play_episodes

    if episodes < 1:
        raise CliError(f"--episodes must be >= 1, got {episodes}")
    rollouts = play_episodes(
        env,
        adapter,
        episodes,
        seed=seed,
        deterministic=deterministic,
        max_steps=max_steps,
        info_keys=("success", "goal_mask"),
        progress=progress,
    )
    obs = np.concatenate([r.obs for r in rollouts])
    masks = None
    if all("goal_mask" in r.infos for r in rollouts):
        masks = np.concatenate([r.infos["goal_mask"] for r in rollouts]).astype(bool)
    elif ground_truth:
        raise CliError(
            "this env gives no info['goal_mask']; dissection needs an rlviz/BoxReach env "
            "made with ground_truth=True"
        )
    return obs, masks, rollouts


def play_states(args: argparse.Namespace, env, adapter, *, ground_truth: bool = False):
    """:func:`collect_dataset` with the command's ``--episodes``, ``--seed``,
    ``--deterministic``, ``--max-steps`` and ``--no-progress``."""
    played = picked(args, "seed", "deterministic", "max_steps")
    progress = not args.no_progress
    return collect_dataset(
        env, adapter, args.episodes, **played, ground_truth=ground_truth, progress=progress
    )


def optimisation(args: argparse.Namespace, steps: int) -> dict:
    """What an image optimisation takes from the flags: ``--steps`` (default ``steps``, the
    method's own), ``--lr``, ``--seed`` and the progress bar."""
    return dict(
        steps=args.steps or steps, lr=args.lr, seed=args.seed, progress=not args.no_progress
    )


def showcase_index(masks: np.ndarray | None) -> int:
    """Index of a state where the goal box is clearly in view (75th percentile of its visible
    area), or 0 without masks or a visible box."""
    if masks is None:
        return 0
    area = masks.reshape(len(masks), -1).sum(1)
    visible = np.flatnonzero(area > 0)
    if not len(visible):
        return 0
    order = visible[np.argsort(area[visible], kind="stable")]
    return int(order[int(0.75 * (len(order) - 1))])


def pick_frame(
    env, adapter, seed: int, max_steps: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """A frame worth showing: from one episode of the policy, a state where the goal box is
    clearly in view (75th percentile of its visible area), else the first frame.

    Returns:
        (frame uint8 [H, W, C], all the episode's frames [T, H, W, C]).
    """
    import torch

    from rlviz.rollout import run_episode

    episode = run_episode(
        env,
        adapter,
        seed=seed,
        info_keys=("goal_mask",),
        max_steps=max_steps or 200,
        generator=torch.Generator().manual_seed(seed),
    )
    return episode.obs[showcase_index(episode.infos.get("goal_mask"))], episode.obs


def layers_arg(model, layers: Sequence[str] | None) -> list[str]:
    """``--layers`` checked against ``model``, default every conv block."""
    from rlviz.hooks import default_layers

    return check_layers(model, layers or default_layers(model))
