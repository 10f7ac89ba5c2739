"""``rlviz tsne``: a t-SNE / PCA map of the states an agent visits.

Plays ``--episodes`` episodes with a checkpoint (or reuses a saved ``--dataset``), records a layer's
features for every state, fits a map and writes, under ``--out``:

* ``dataset.npz``  the states (:class:`rlviz.dataset.StateDataset`),
* ``embedding.npz`` the fitted map (:class:`rlviz.embedding.StateEmbedding`, with value/action
  per point),
* ``map_<color>.png`` one scatter per ``--color``, ``mosaic.png`` observation thumbnails on the map,
* ``quality.json`` trustworthiness and action k-NN accuracy (also printed).

Example::

    rlviz tsne --checkpoint agents/checkpoints/boxreach.safetensors --env rlviz/BoxReach-v0 \\
        --episodes 20 --layer conv3 --color value action --out runs/tsne/
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from rlviz.cli.common import (
    CliError,
    add_shared,
    bad_input,
    check_out_dir,
    command,
    new_parser,
    output_name,
    picked,
    play_env,
    policy_from_args,
    progress_on,
    require_checkpoint,
)
from rlviz.cli.workers import add_worker_flags, parallel

DEFAULT_COLORS = ("value", "action", "time_to_goal", "box_visible", "step")


def build_parser() -> argparse.ArgumentParser:
    """The command's argument parser."""
    from rlviz.statemap.plots import COLORS

    p = new_parser("tsne", "t-SNE / PCA map of the states an agent visits.")
    src = p.add_argument_group("states")
    add_shared(
        src,
        "checkpoint",
        checkpoint=dict(default=None, help="agent checkpoint (.safetensors) to play and map"),
    )
    src.add_argument(
        "--dataset", type=Path, help="reuse a saved dataset.npz instead of playing episodes"
    )
    add_shared(
        src,
        "env",
        "episodes",
        "seed",
        "deterministic",
        "max_steps",
        episodes=dict(default=20, help="episodes to play (default 20)"),
        seed=dict(help="seeds episodes, action sampling and the map (default 0)"),
    )
    src.add_argument(
        "--no-ground-truth",
        action="store_true",
        help="do not ask the env for ground truth (non-BoxReach envs)",
    )
    src.add_argument(
        "--layer", default="conv3", help="layer whose output is mapped (default conv3)"
    )
    src.add_argument(
        "--pool",
        choices=("flatten", "avg"),
        default="flatten",
        help="conv maps: keep all units or average-pool channels",
    )
    src.add_argument(
        "--batch-size", type=int, default=256, help="states per forward pass (default 256)"
    )
    add_worker_flags(src, "blocks of episodes")
    fit = p.add_argument_group("map")
    fit.add_argument("--method", choices=("tsne", "pca"), default="tsne")
    fit.add_argument("--perplexity", type=float, default=30.0)
    fit.add_argument("--pca-dims", type=int, default=50, help="PCA dims before t-SNE (default 50)")
    fit.add_argument("--n-jobs", type=int, default=1, help="openTSNE threads (-1: all cores)")
    out = p.add_argument_group("output")
    out.add_argument(
        "--color",
        nargs="+",
        default=None,
        metavar="NAME",
        help=f"colour maps by any of: {', '.join(COLORS)} "
        f"(default: {' '.join(DEFAULT_COLORS)}, those available)",
    )
    out.add_argument(
        "--mosaic-cols", type=int, default=20, help="thumbnail columns of mosaic.png (0: none)"
    )
    add_shared(
        out,
        "out",
        "no_progress",
        "device",
        out=dict(
            default=None,
            help="output folder (default runs/tsne/NAME/, NAME from the checkpoint or dataset)",
        ),
    )
    return p


def collect_dataset(args: argparse.Namespace):
    """Play the checkpoint in the env (here, or as Ray tasks with ``--workers``: the same
    episodes) and return the :class:`StateDataset` of its states."""
    from rlviz.statemap import StateDataset

    policy = policy_from_args(args, layers=[args.layer])
    kwargs = dict(policy.env_kwargs)
    if not args.no_ground_truth:
        kwargs["ground_truth"] = True  # asked of any env, so the dataset records it
    elif policy.env_id.startswith("rlviz/"):
        kwargs["ground_truth"] = False  # make_env turns it on for rlviz ids otherwise
    with play_env(policy, **kwargs) as env, parallel(args) as executor:
        rollouts = _play(env, policy, args, executor)
    return StateDataset.from_rollouts(
        rollouts,
        policy.adapter,
        args.layer,
        batch_size=args.batch_size,
        pool=args.pool,
        meta={
            "env_id": policy.env_id,
            "env_kwargs": kwargs,
            "checkpoint": str(args.checkpoint),
            "deterministic": args.deterministic,
        },
    )


def _play(env, policy, args: argparse.Namespace, executor) -> list:
    """The ``--episodes`` rollouts: played in ``env`` with a progress bar, or in blocks on
    ``executor``, each task in its own copy of ``env``."""
    options = dict(seed=args.seed, deterministic=args.deterministic, max_steps=args.max_steps)
    if executor is not None:
        from rlviz.parallel.episodes import env_factory, play_parallel

        return play_parallel(env_factory(env), policy.adapter, executor, args.episodes, **options)
    from tqdm import tqdm

    from rlviz.rollout import collect

    rollouts = []
    with tqdm(
        total=args.episodes,
        desc=f"playing {policy.env_id}",
        unit="ep",
        disable=not progress_on(args),
    ) as bar:
        for rollout in collect(env, policy.adapter, args.episodes, **options):
            rollouts.append(rollout)
            bar.set_postfix(
                states=sum(map(len, rollouts)),
                success=f"{np.mean([r.success for r in rollouts]):.2f}",
            )
            bar.update()
    return rollouts


def usable_colors(dataset, args: argparse.Namespace) -> list[str]:
    """The ``--color`` names the dataset can colour by; a default one it lacks is skipped."""
    from rlviz.statemap.plots import color_values

    usable = []
    for color in list(args.color) if args.color else list(DEFAULT_COLORS):
        try:
            color_values(dataset, color)
            usable.append(color)
        except ValueError as exc:
            if args.color:  # asked for by name: say why not
                raise
            print(f"  skipping colour {color!r}: {exc}")
    return usable


def fit_map(dataset, args: argparse.Namespace):
    """``(embedding, quality)``: the ``--method`` map of ``dataset`` fitted and scored."""
    from rlviz.statemap import StateEmbedding, embedding_quality, format_quality

    n, d = dataset.features.shape
    print(
        f"fitting {args.method} on {n} states x {d} features "
        f"(layer {dataset.meta.get('layer')}) ...",
        flush=True,
    )
    t0 = time.perf_counter()
    embedding = StateEmbedding(
        args.method, **picked(args, "perplexity", "seed", "n_jobs", "pca_dims")
    )
    point_data = {
        "value": dataset.values,
        "action": dataset.actions,
        "step": dataset.steps,
        "episode": dataset.episodes,
    }
    meta = {
        k: dataset.meta.get(k) for k in ("layer", "pool", "env_id", "checkpoint", "action_names")
    }
    embedding.fit(dataset.features, point_data=point_data, meta=meta, progress=progress_on(args))
    print(f"  fitted in {time.perf_counter() - t0:.1f} s")
    quality = embedding_quality(
        dataset.features, embedding.embedding_, dataset.actions, seed=args.seed
    )
    print(f"  quality: {format_quality(quality)}")
    return embedding, quality


def map_dataset(dataset, args: argparse.Namespace) -> dict:
    """Fit the map of ``dataset``, write PNGs / npz / quality.json under ``args.out``; returns
    its ``quality`` (numbers), ``files`` (paths written) and ``embedding``."""
    from rlviz.io import save_json
    from rlviz.statemap.plots import plot_mosaic, plot_state_map

    usable = usable_colors(dataset, args)  # before fitting: a bad --color fails fast
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    embedding, quality = fit_map(dataset, args)
    files = [] if args.dataset is not None else [dataset.save(out / "dataset.npz")]
    files.append(embedding.save(out / "embedding.npz"))
    report = {
        **quality,
        "method": args.method,
        "perplexity": args.perplexity,
        "layer": dataset.meta.get("layer"),
    }
    files.append(save_json(report, out / "quality.json"))
    xy = embedding.embedding_
    for color in usable:
        files.append(plot_state_map(dataset, xy, color, out / f"map_{color}.png", quality=quality))
    if args.mosaic_cols > 0:
        files.append(
            plot_mosaic(
                xy,
                dataset.newest_frames() if dataset.layout.stacked else dataset.obs,
                out / "mosaic.png",
                cols=args.mosaic_cols,
                labels=dataset.actions,
                label_names=dataset.action_names,
            )
        )
    return {"quality": quality, "files": files, "embedding": embedding}


@command("tsne")
def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``rlviz tsne``; returns the exit status."""
    args = build_parser().parse_args(argv)
    if (args.checkpoint is None) == (args.dataset is None):
        raise CliError(
            "give exactly one of --checkpoint PATH (play and map) "
            "or --dataset PATH (map saved states)"
        )
    if args.checkpoint is not None:
        require_checkpoint(args.checkpoint)
    if args.out is None:
        args.out = Path("runs/tsne") / output_name(args.checkpoint or args.dataset)
    check_out_dir(args.out)
    with bad_input(FileNotFoundError, ValueError):
        if args.dataset is not None:
            from rlviz.statemap import StateDataset

            dataset = StateDataset.load(args.dataset)
        else:
            dataset = collect_dataset(args)
        result = map_dataset(dataset, args)
    from rlviz.io import written_path

    print("wrote:")
    for path in result["files"]:
        print(f"  {written_path(path)}")
    return 0
