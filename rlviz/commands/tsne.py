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
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

DEFAULT_COLORS = ("value", "action", "time_to_goal", "box_visible", "step")


def build_parser() -> argparse.ArgumentParser:
    """The command's argument parser."""
    from rlviz.plots import COLORS

    p = argparse.ArgumentParser(
        prog="rlviz tsne", description="t-SNE / PCA map of the states an agent visits."
    )
    src = p.add_argument_group("states")
    src.add_argument(
        "--checkpoint", type=Path, help="agent checkpoint (.safetensors) to play and map"
    )
    src.add_argument(
        "--dataset", type=Path, help="reuse a saved dataset.npz instead of playing episodes"
    )
    src.add_argument(
        "--env",
        default=None,
        help="Gymnasium id (default: the checkpoint's env, else rlviz/BoxReach-v0)",
    )
    src.add_argument("--episodes", type=int, default=20, help="episodes to play (default 20)")
    src.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seeds episodes, action sampling and the map (default 0)",
    )
    src.add_argument(
        "--deterministic", action="store_true", help="greedy actions instead of sampling"
    )
    src.add_argument(
        "--max-steps", type=int, default=None, help="cut episodes after this many steps"
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
    out.add_argument(
        "--out", type=Path, default=Path("runs/tsne"), help="output folder (default runs/tsne/)"
    )
    return p


def collect_dataset(args: argparse.Namespace):
    """Play the checkpoint in the env and return the :class:`StateDataset` of its states."""
    import gymnasium as gym
    from tqdm import tqdm

    import envs  # noqa: F401  (registers the rlviz/ ids; envs handles the headless-GL import order)

    # From the submodules: an editable install made before agents/__init__.py existed maps
    # `agents` as a bare namespace package without the re-exported names.
    from agents.checkpoint import load_checkpoint
    from agents.policy import make_adapter
    from rlviz.dataset import StateDataset
    from rlviz.hooks import get_layer
    from rlviz.rollout import collect

    if not args.checkpoint.is_file():
        raise FileNotFoundError(
            f"checkpoint {args.checkpoint} not found; pass --checkpoint PATH to a saved agent"
        )
    model, config = load_checkpoint(args.checkpoint)
    adapter = make_adapter(model)
    env_id = args.env or config.get("env_id") or "rlviz/BoxReach-v0"
    # The env the agent was trained in, unless another one is asked for.
    kwargs = dict(config.get("env_kwargs") or {}) if env_id == config.get("env_id") else {}
    if not args.no_ground_truth:
        kwargs["ground_truth"] = True
    get_layer(model, args.layer)  # fail before playing if the layer name is wrong
    env = gym.make(env_id, **kwargs)
    rollouts = []
    bar = tqdm(total=args.episodes, desc=f"playing {env_id}", unit="ep")
    try:
        for rollout in collect(
            env,
            adapter,
            args.episodes,
            seed=args.seed,
            deterministic=args.deterministic,
            max_steps=args.max_steps,
        ):
            rollouts.append(rollout)
            bar.set_postfix(
                states=sum(map(len, rollouts)),
                success=f"{np.mean([r.success for r in rollouts]):.2f}",
            )
            bar.update()
    finally:
        bar.close()
        env.close()
    return StateDataset.from_rollouts(
        rollouts,
        adapter,
        args.layer,
        batch_size=args.batch_size,
        pool=args.pool,
        meta={
            "env_id": env_id,
            "env_kwargs": kwargs,
            "checkpoint": str(args.checkpoint),
            "deterministic": args.deterministic,
        },
    )


def map_dataset(dataset, args: argparse.Namespace) -> dict:
    """Fit the map of ``dataset``, write PNGs / npz / quality.json under ``args.out``.

    Returns:
        dict with ``quality`` (numbers) and ``files`` (paths written).
    """
    from rlviz.embedding import StateEmbedding, embedding_quality, format_quality
    from rlviz.plots import color_values, plot_mosaic, plot_state_map

    colors = list(args.color) if args.color else list(DEFAULT_COLORS)
    usable = []
    for color in colors:
        try:
            color_values(dataset, color)
            usable.append(color)
        except ValueError as exc:
            if args.color:  # asked for by name: say why not
                raise
            print(f"  skipping colour {color!r}: {exc}")
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    files = []
    n, d = dataset.features.shape
    print(
        f"fitting {args.method} on {n} states x {d} features "
        f"(layer {dataset.meta.get('layer')}) ...",
        flush=True,
    )
    t0 = time.perf_counter()
    embedding = StateEmbedding(
        args.method,
        perplexity=args.perplexity,
        seed=args.seed,
        n_jobs=args.n_jobs,
        pca_dims=args.pca_dims,
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
    embedding.fit(dataset.features, point_data=point_data, meta=meta)
    print(f"  fitted in {time.perf_counter() - t0:.1f} s")
    quality = embedding_quality(
        dataset.features, embedding.embedding_, dataset.actions, seed=args.seed
    )
    print(f"  quality: {format_quality(quality)}")

    if args.dataset is None:
        files.append(dataset.save(out / "dataset.npz"))
    files.append(embedding.save(out / "embedding.npz"))
    files.append(
        _write_json(
            out / "quality.json",
            {
                **quality,
                "method": args.method,
                "perplexity": args.perplexity,
                "layer": dataset.meta.get("layer"),
            },
        )
    )
    for color in usable:
        files.append(
            plot_state_map(
                dataset, embedding.embedding_, color, out / f"map_{color}.png", quality=quality
            )
        )
    if args.mosaic_cols > 0:
        files.append(
            plot_mosaic(
                embedding.embedding_,
                dataset.obs,
                out / "mosaic.png",
                cols=args.mosaic_cols,
                labels=dataset.actions,
                label_names=dataset.action_names,
            )
        )
    return {"quality": quality, "files": files, "embedding": embedding}


def _write_json(path: Path, data: dict) -> Path:
    from rlviz.dataset import atomic_output

    with atomic_output(path) as handle:
        handle.write(json.dumps(data, indent=2).encode())
    return path


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``rlviz tsne``; returns the exit status."""
    args = build_parser().parse_args(None if argv is None else list(argv))
    if (args.checkpoint is None) == (args.dataset is None):
        print(
            "rlviz tsne: give exactly one of --checkpoint PATH (play and map) "
            "or --dataset PATH (map saved states)",
            file=sys.stderr,
        )
        return 2
    if args.episodes < 1:
        print(f"rlviz tsne: --episodes must be >= 1, got {args.episodes}", file=sys.stderr)
        return 2
    try:
        if args.dataset is not None:
            from rlviz.dataset import StateDataset

            dataset = StateDataset.load(args.dataset)
        else:
            dataset = collect_dataset(args)
        result = map_dataset(dataset, args)
    except (FileNotFoundError, ValueError) as exc:
        print(f"rlviz tsne: {exc}", file=sys.stderr)
        return 2
    except ImportError as exc:
        print(
            "rlviz tsne: needs the envs/ and agents/ packages of this repository to play "
            f"a checkpoint ({exc})",
            file=sys.stderr,
        )
        return 2
    print("wrote:")
    for path in result["files"]:
        print(f"  {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
