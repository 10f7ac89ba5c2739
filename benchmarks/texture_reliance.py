"""Texture reliance of the shipped BoxReach agent: does it act on texture or on shape? (issue 22)

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/texture_reliance.py [--episodes 30] [--quick]
    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/texture_reliance.py --figures videos/features

1. Plays ``--episodes`` episodes on ``rlviz/BoxReach-v0`` (held-out seeds 1e6.., actions sampled
   from a generator seeded by the episode seed, as ``rlviz evaluate``), recording actions and poses.
2. Replays each episode's actions under each perturbation family, so frame i of a replay shows
   the pose of frame i of the original: textures changed (floor / walls / ceiling / all three,
   from ``envs.textures``, one draw per ``--texture-seeds``) with the layout untouched, or the goal
   box moved 1.5 m with the textures untouched (the replay stops where the agent's pose departs,
   e.g. when the moved box blocks a step).
3. Style transfer: every ``--stride``-th replayed frame restyled (content: conv2's code of the
   frame; style: Gram matrices of conv1 + conv2 of the all-surfaces re-textured frame of the same
   step, weight 10, TV 0.05).
4. KL(pi(.|original) || pi(.|perturbed)) per frame; also over frames with the goal box in view.
5. Success of fresh episodes (same seeds and sampling generators) with every surface re-textured
   (each texture seed) and with the goal box moved, vs the original textures.

Prints the table for BENCHMARKS.md and writes texture_reliance.json to ``--out``. ``--figures DIR``
instead draws texture_synthesis.png, texture_channels.png and style_transfer.png into DIR.
"""

from __future__ import annotations

import argparse
import datetime
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import gymnasium as gym  # noqa: E402

from rlviz import envs  # noqa: E402, F401  (registers the ids)
from rlviz.agents.checkpoint import SHIPPED_CHECKPOINT, load_policy  # noqa: E402
from rlviz.agents.evaluate import held_out_seeds  # noqa: E402
from rlviz.envs.textures import SURFACES, sample_textures  # noqa: E402
from rlviz.features import optvis  # noqa: E402
from rlviz.features.texture_reliance import (  # noqa: E402
    action_kl,
    family_result,
    format_table,
    measure_family,
    reliance_ratio,
)
from rlviz.io import save_json  # noqa: E402

ENV_ID = "rlviz/BoxReach-v0"
SHIFT_M = 1.5  # how far the goal box moves in the geometry family


def play(env, model, seed: int, options: dict | None = None, actions=None, max_steps: int = 250):
    """One episode; sampled actions (generator seeded by ``seed``) or the given ``actions``.

    Returns:
        dict: obs uint8 [T, H, W, 3] (the frames acted on), actions [T], poses [T, 3]
        (x, z, dir), in_view bool [T], success bool.
    """
    gen = torch.Generator().manual_seed(seed)
    obs, info = env.reset(seed=seed, options=options)
    frames, acts, poses, seen, success = [], [], [], [], False
    limit = len(actions) if actions is not None else max_steps
    for t in range(limit):
        frames.append(obs)
        poses.append([*info["agent_pos"], info["agent_dir"]])
        seen.append(info["box_visible"])
        if actions is not None:
            a = int(actions[t])
        else:
            with torch.no_grad():
                logits, _ = model(torch.as_tensor(obs).permute(2, 0, 1)[None].float() / 255.0)
            a = int(torch.multinomial(torch.softmax(logits[0], -1), 1, generator=gen))
        acts.append(a)
        obs, _, term, trunc, info = env.step(a)
        if term or trunc:
            success = bool(info["success"])
            break
    return {
        "obs": np.stack(frames),
        "actions": np.asarray(acts),
        "poses": np.asarray(poses, dtype=np.float64),
        "in_view": np.asarray(seen, dtype=bool),
        "success": success,
    }


def moved_box(env, seed: int) -> dict | None:
    """Reset options that move the goal box ``SHIFT_M`` to a free spot (None if there is none)."""
    _, info = env.reset(seed=seed)
    rng = np.random.default_rng(seed)
    for angle in rng.permutation(8) * (np.pi / 4):
        pos = info["box_pos"] + SHIFT_M * np.array([np.cos(angle), np.sin(angle)])
        try:
            env.reset(seed=seed, options={"box_pos": pos})
        except ValueError:
            continue
        return {"box_pos": pos}
    return None


def same_prefix(a: dict, b: dict) -> int:
    """Steps for which two plays of one seed have the same pose."""
    n = min(len(a["poses"]), len(b["poses"]))
    diff = np.abs(a["poses"][:n] - b["poses"][:n]).max(1) > 1e-6
    return int(diff.argmax()) if diff.any() else n


def families() -> dict:
    """Family name -> (kind, ``(env, seed, texture seed) -> reset options`` or None to skip)."""
    out = {}
    for surface in SURFACES:
        out[f"{surface} re-textured"] = (
            "texture",
            lambda env, s, k, surface=surface: {"textures": sample_textures(k, [surface])},
        )
    out["floor+walls+ceiling re-textured"] = (
        "texture",
        lambda env, s, k: {"textures": sample_textures(k)},
    )
    out["goal box moved 1.5 m"] = ("geometry", lambda env, s, k: moved_box(env, s))
    return out


def restyle(adapter, originals: list[dict], styles: list[dict], stride: int, steps: int):
    """Every ``stride``-th frame restyled toward the same step of the re-textured replay."""
    n = [len(s["obs"]) for s in styles]
    content = np.concatenate([o["obs"][:k:stride] for o, k in zip(originals, n, strict=True)])
    style = np.concatenate([s["obs"][::stride] for s in styles])
    seen = np.concatenate([o["in_view"][:k:stride] for o, k in zip(originals, n, strict=True)])
    r = optvis.style_transfer(
        adapter,
        content,
        style,
        content_layer="conv2",
        style_layers=["conv1", "conv2"],
        style_weight=10.0,
        tv_weight=0.05,
        steps=steps,
    )
    return content, r, seen


def run(args) -> dict:
    lp = load_policy(args.checkpoint)
    model, adapter = lp.model, lp.adapter
    env = gym.make(ENV_ID, ground_truth=True)
    seeds = held_out_seeds(args.episodes)
    fams = families()
    t0 = time.time()
    originals = [play(env, model, s) for s in seeds]
    pairs = {name: ([], [], []) for name in fams}  # original frames, perturbed frames, in view
    for name, (kind, options) in fams.items():
        for seed, orig in zip(seeds, originals, strict=True):
            for k in args.texture_seeds if kind == "texture" else [0]:
                opts = options(env, seed, k)
                if opts is None:
                    continue
                rep = play(env, model, seed, opts, actions=orig["actions"][: args.max_frames])
                n = same_prefix(orig, rep)
                pairs[name][0].append(orig["obs"][:n])
                pairs[name][1].append(rep["obs"][:n])
                pairs[name][2].append(orig["in_view"][:n] | rep["in_view"][:n])
    print(f"plays and replays: {time.time() - t0:.0f} s", flush=True)

    # success of fresh episodes under the perturbations
    success = {"original textures": [o["success"] for o in originals]}
    all_tex = "floor+walls+ceiling re-textured"
    success[all_tex] = [
        play(env, model, s, fams[all_tex][1](env, s, k))["success"]
        for k in args.texture_seeds
        for s in seeds
    ]
    geo = "goal box moved 1.5 m"
    success[geo] = [
        play(env, model, s, o)["success"]
        for s in seeds
        if (o := fams[geo][1](env, s, 0)) is not None
    ]
    print(f"+ success episodes: {time.time() - t0:.0f} s", flush=True)

    rows = []
    for name, (kind, _) in fams.items():
        orig, pert, seen = (np.concatenate(x) for x in pairs[name])
        extra = {}
        if name in success:
            extra = {"success": float(np.mean(success[name])), "episodes": len(success[name])}
        rows.append(measure_family(adapter, name, kind, orig, pert, seen, **extra))
    # style transfer toward the first texture seed's all-surfaces replay
    style_src = [
        play(
            env,
            model,
            s,
            fams[all_tex][1](env, s, args.texture_seeds[0]),
            actions=o["actions"][: args.max_frames],
        )
        for s, o in zip(seeds, originals, strict=True)
    ]
    content, styled, seen = restyle(adapter, originals, style_src, args.stride, args.style_steps)
    kl, flipped = action_kl(adapter, content, styled.images)
    rows.append(
        family_result("style-transferred (Gram of conv1+conv2)", "texture", kl, flipped, seen)
    )
    print(f"+ style transfer: {time.time() - t0:.0f} s", flush=True)
    env.close()
    original = {
        "success": float(np.mean(success["original textures"])),
        "episodes": len(seeds),
        "frames": int(sum(len(o["obs"]) for o in originals)),
    }
    return {
        "rows": rows,
        "original": original,
        "ratio": reliance_ratio(rows),
        "style_content": float(np.mean(styled.content_end)),
        "style_gram": (float(np.mean(styled.style_start)), float(np.mean(styled.style_end))),
        "seconds": time.time() - t0,
        "seeds": seeds,
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", default=str(SHIPPED_CHECKPOINT))
    p.add_argument("--episodes", type=int, default=10, help="held-out seeds (default 10)")
    p.add_argument("--texture-seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--max-frames", type=int, default=100, help="replayed frames per episode")
    p.add_argument("--stride", type=int, default=4, help="style transfer: every N-th frame")
    p.add_argument("--style-steps", type=int, default=80, help="style transfer: optimiser steps")
    p.add_argument("--quick", action="store_true", help="5 episodes, 1 texture seed (a smoke run)")
    p.add_argument("--out", default="runs/texture_reliance", help="folder for the JSON")
    p.add_argument("--figures", default=None, metavar="DIR", help="draw the figures instead")
    args = p.parse_args()
    torch.set_num_threads(2)
    if args.figures:
        from texture_figures import draw_figures

        for path in draw_figures(args.checkpoint, Path(args.figures)):
            print(path)
        return 0
    if args.quick:
        args.episodes, args.texture_seeds = 5, args.texture_seeds[:1]
    res = run(args)
    o = res["original"]
    print(
        f"\nTexture reliance, {ENV_ID}, shipped agent, {o['episodes']} held-out episodes "
        f"(seeds {res['seeds'][0]}..{res['seeds'][-1]}, {o['frames']} frames), texture seeds "
        f"{args.texture_seeds}; original textures: success {o['success']:.0%}. "
        f"{datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC, {res['seconds']:.0f} s\n"
    )
    print(format_table(res["rows"]))
    print(
        f"\ntexture / geometry mean-KL ratio: {res['ratio']:.3f}; style transfer kept conv2's "
        f"code within {res['style_content']:.3f} (relative squared distance) and took the "
        f"Gram distance {res['style_gram'][0]:.3f} -> {res['style_gram'][1]:.4f}"
    )
    save_json(
        {
            **{k: v for k, v in res.items() if k != "rows"},
            "rows": [r.as_dict() for r in res["rows"]],
        },
        Path(args.out) / "texture_reliance.json",
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
