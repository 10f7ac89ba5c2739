"""Explanation-video speed and memory: rlviz's pipeline vs a naive per-frame loop, same run.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/video_speed.py [--steps 100] [--naive-frames 30]
        [--memory 100,1000] [--checkpoint PATH] [--quick]

* ours: ``rlviz.render_video`` on rlviz/BoxReach-v0 (ground truth on) for one ``--steps``-step
  episode with the standard panels (saliency + Grad-CAM overlays, policy bars, value trace, t-SNE
  map, top-down view, captions): rollout + batched attribution + t-SNE placement + composition +
  H.264 encoding, end to end. The t-SNE map is fitted beforehand (setup, not timed).
* naive: the same episode length played frame by frame, each frame explained with captum
  (Saliency + LayerGradCam on one frame), placed on the same map, drawn as a new matplotlib figure
  (2x3 subplots, 960x540) and appended to an imageio MP4 writer: the way such videos are usually
  made. Timed over ``--naive-frames`` frames.
* calibration: numpy/PIL composition of a 4-panel 960x540 frame, libx264 encoding of composed
  frames, and batched saliency / Grad-CAM per frame.
* memory: peak RSS (VmHWM, reset after setup) of a fresh process rendering an episode of each
  length in ``--memory`` (e.g. ``100,1000,10000``), next to its RSS before rendering, and the
  growth per extra step. Reaching the box does not end these episodes (a trained agent would
  stop after ~50 steps): each runs to its step limit.

The agent is the shipped checkpoint when it exists, else a randomly initialised agents.ActorCritic
(said in the output). The machine is shared: figures vary with its load.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rlviz import agents  # noqa: E402
from rlviz.ops import torch_threads  # noqa: E402
from rlviz.video import fit_state_embedding, render_video  # noqa: E402

warnings.filterwarnings("ignore")
ENV_ID = "rlviz/BoxReach-v0"
SHIPPED = ROOT / "agents" / "checkpoints" / "boxreach.safetensors"


def load_policy(checkpoint: Path | None):
    """(adapter, description): the checkpoint, else the shipped one, else a random-init agent."""
    path = checkpoint or (SHIPPED if SHIPPED.exists() else None)
    if path is not None:
        model, _ = agents.load_checkpoint(path)
        return agents.make_adapter(
            model
        ), f"checkpoint {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}"
    torch.manual_seed(0)
    return agents.make_adapter(
        agents.ActorCritic().eval()
    ), "random-init agents.ActorCritic (no shipped checkpoint yet)"


def _boxreach(max_steps: int, until_limit: bool = False):
    """BoxReach (default task) with ground truth and a step limit of ``max_steps``; with
    ``until_limit``, reaching the box does not end the episode (memory runs need every step)."""
    from rlviz import envs  # noqa: F401
    from rlviz.envs.boxreach import BoxReachEnv

    if not until_limit:
        return BoxReachEnv(ground_truth=True, max_episode_steps=max_steps)

    class UntilLimit(BoxReachEnv):
        def step(self, action):
            obs, reward, _, truncated, info = super().step(action)
            return obs, reward, False, truncated, info

    return UntilLimit(ground_truth=True, max_episode_steps=max_steps)


# ----------------------------------------------------------------------------------------- ours


def run_ours(
    policy,
    embedding,
    steps: int,
    seed: int,
    out: Path,
    methods=("gradient", "gradcam"),
    until_limit: bool = False,
    **kwargs,
):
    env = _boxreach(steps, until_limit)
    try:
        return render_video(
            env,
            policy,
            out=out,
            methods=list(methods),
            seed=seed,
            embedding=embedding,
            max_steps=steps,
            agent_name="bench",
            **kwargs,
        )
    finally:
        env.close()


# ---------------------------------------------------------------------------------------- naive


def run_naive(policy, embedding, frames: int, seed: int, out: Path) -> tuple[float, int]:
    """Frame-by-frame: captum per frame + a new matplotlib figure per frame. Returns (s, frames)."""
    import imageio
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from captum.attr import LayerAttribution, LayerGradCam, Saliency

    from rlviz.statemap import layer_features

    model = policy.model
    logits_fn = lambda x: model(x)[0]  # noqa: E731
    saliency, gradcam = (
        Saliency(logits_fn),
        LayerGradCam(logits_fn, model.get_submodule(model.cam_layer)),
    )
    layer, pool = embedding.meta["layer"], embedding.meta.get("pool", "flatten")
    background = embedding.embedding_
    env = _boxreach(frames)
    # Batch-1 passes, as ours in its rollout: one torch thread (else OpenMP spin-waits dominate).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(seed)
    values, trail = [], []
    start = time.perf_counter()
    obs, info = env.reset(seed=seed)
    writer = imageio.get_writer(str(out), fps=15, codec="libx264", macro_block_size=2)
    n = 0
    try:
        for _ in range(frames):
            x = policy.preprocess(obs)
            with torch.no_grad():
                logits, value = model(x)
            probs = torch.softmax(logits, -1)[0]
            action = int(torch.multinomial(probs, 1, generator=gen))
            sal = saliency.attribute(x.clone().requires_grad_(True), target=action, abs=True)[
                0
            ].amax(0)
            cam = gradcam.attribute(x, target=action, relu_attributions=True)
            cam = LayerAttribution.interpolate(cam, x.shape[-2:])[0, 0].detach()
            xy = embedding.transform(layer_features(policy, obs[None], layer, pool), fast=True)[0]
            values.append(float(value[0]))
            trail.append(xy)
            top = env.top_down_map((214, 312))
            fig, ax = plt.subplots(2, 3, figsize=(9.6, 5.4), dpi=100)
            ax[0, 0].imshow(obs)
            ax[0, 0].imshow(sal.numpy(), cmap="inferno", alpha=0.5)
            ax[0, 0].set_title("saliency")
            ax[0, 1].imshow(obs)
            ax[0, 1].imshow(cam.numpy(), cmap="inferno", alpha=0.5)
            ax[0, 1].set_title("Grad-CAM")
            ax[0, 2].barh(
                ["left", "forward", "right"],
                probs.numpy(),
                color=["orange" if k == action else "steelblue" for k in range(3)],
            )
            ax[0, 2].set_xlim(0, 1)
            ax[1, 0].plot(values)
            ax[1, 0].set_title("value")
            ax[1, 1].scatter(background[:, 0], background[:, 1], s=2, c="grey")
            tr = np.array(trail[-20:])
            ax[1, 1].plot(tr[:, 0], tr[:, 1], "w-")
            ax[1, 1].scatter([xy[0]], [xy[1]], c="orange")
            ax[1, 2].imshow(top)
            fig.suptitle(f"step {n}")
            fig.canvas.draw()
            writer.append_data(np.asarray(fig.canvas.buffer_rgba())[..., :3])
            plt.close(fig)
            n += 1
            obs, _, terminated, truncated, info = env.step(action)
            if terminated or truncated:
                break
    finally:
        writer.close()
        env.close()
        torch.set_num_threads(threads)
    return time.perf_counter() - start, n


# ---------------------------------------------------------------------------------- calibration


def calibration(policy, tmp: Path) -> dict[str, float]:
    from rlviz.methods import get_method
    from rlviz.rollout import run_episode
    from rlviz.targets import TakenAction
    from rlviz.video import VideoWriter, explain_episode
    from rlviz.video.grid import Composer
    from rlviz.video.panels import ActionPanel, MapPanel, ObservationPanel, ValuePanel

    env = _boxreach(100)
    try:
        rollout = run_episode(env, policy, seed=1, max_steps=100)
    finally:
        env.close()
    episode = explain_episode(policy, rollout, ["gradient"])
    tile = (250, 474)  # 2 x 2 cells + title bar = a 960 x 540 frame, as in the calibration
    composer = Composer(
        [
            ObservationPanel(size=tile),
            MapPanel("gradient", size=tile),
            ActionPanel(size=tile),
            ValuePanel(size=tile),
        ]
    )
    composer.prepare(episode, "calibration")
    n = len(rollout)
    t0 = time.perf_counter()
    frames = [composer.frame(t, episode) for t in range(n)]
    compose_fps = n / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    with VideoWriter(tmp / "calib.mp4") as writer:
        for frame in frames:
            writer.write(frame)
    encode_fps = n / (time.perf_counter() - t0)
    out = {
        "frames": n,
        "size": f"{frames[0].shape[1]}x{frames[0].shape[0]}",
        "compose_fps": compose_fps,
        "encode_fps": encode_fps,
    }
    target = TakenAction(rollout.actions)
    for name in ("gradient", "gradcam"):
        method = get_method(name)
        with torch_threads(1):  # as render_video runs it
            method.attribute(policy, rollout.obs, target)  # warm-up
            best = min(
                _timed(lambda m=method: m.attribute(policy, rollout.obs, target)) for _ in range(3)
            )
        out[f"{name}_ms_per_frame"] = 1000 * best / n
    return out


class CpuClock:
    """CPU seconds used by this process (all its threads) and by finished children (ffmpeg).

    Wall time on a shared machine depends on everyone else's load; CPU time much less so.
    """

    def __enter__(self) -> CpuClock:
        self._self, self._kids = time.process_time(), _children_cpu()
        return self

    def __exit__(self, *exc) -> None:
        self.main = time.process_time() - self._self
        self.ffmpeg = _children_cpu() - self._kids
        self.total = self.main + self.ffmpeg


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


# --------------------------------------------------------------------------------------- memory


def _status_mb(key: str) -> float:
    """A memory figure of this process from /proc/self/status (VmRSS, VmHWM), in MB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    raise KeyError(key)


def memory_child(steps: int, checkpoint: str | None) -> None:
    """Run in a fresh process: render one ``steps``-step episode, print RSS figures as JSON.

    The peak is the high-water mark of resident memory while rendering: it is reset (Linux
    ``clear_refs``) after the setup, so the peak of loading torch, GL and the map does not hide it.
    """
    policy, _ = load_policy(Path(checkpoint) if checkpoint else None)
    env = _boxreach(steps)
    embedding = fit_state_embedding(env, policy, episodes=1, max_steps=60, method="pca")
    env.close()
    with tempfile.TemporaryDirectory() as tmp:
        run_ours(policy, embedding, 5, seed=7, out=Path(tmp) / "warm.mp4")  # imports, fonts, GL
        before = _status_mb("VmRSS")
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset VmHWM to the current RSS
        summary = run_ours(
            policy, embedding, steps, seed=7, out=Path(tmp) / "m.mp4", until_limit=True
        )
        peak = _status_mb("VmHWM")
    print(
        json.dumps(
            {"steps": steps, "frames": summary.frames, "rss_before_mb": before, "rss_peak_mb": peak}
        )
    )


def measure_memory(lengths: list[int], checkpoint: Path | None) -> list[dict]:
    results = []
    for steps in lengths:
        cmd = [sys.executable, __file__, "--memory-child", str(steps)]
        if checkpoint:
            cmd += ["--checkpoint", str(checkpoint)]
        done = subprocess.run(cmd, capture_output=True, text=True, check=True)
        results.append(json.loads(done.stdout.strip().splitlines()[-1]))
    return results


def report_memory(lengths: str, checkpoint: Path | None) -> None:
    """Run and print the memory test for the comma-separated episode ``lengths``."""
    mem = measure_memory([int(s) for s in lengths.split(",")], checkpoint)
    print()
    for m in mem:
        print(
            f"memory: {m['steps']}-step limit, {m['frames']} frames: "
            f"peak RSS {m['rss_peak_mb']:.0f} MB "
            f"(before rendering {m['rss_before_mb']:.0f} MB)"
        )
    for a, b in zip(mem, mem[1:], strict=False):
        growth = (b["rss_peak_mb"] - a["rss_peak_mb"]) / max(b["frames"] - a["frames"], 1) * 1024
        print(
            f"peak RSS ratio {b['frames']} vs {a['frames']} frames: "
            f"{b['rss_peak_mb'] / a['rss_peak_mb']:.3f}x (target <= 1.2x); "
            f"~{growth:.0f} KB per extra step"
        )


# ----------------------------------------------------------------------------------------- main


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--naive-frames", type=int, default=30)
    p.add_argument(
        "--memory", default="100,1000", help="episode lengths for the memory test ('' to skip)"
    )
    p.add_argument(
        "--memory-only", action="store_true", help="run only the memory test (--memory lengths)"
    )
    p.add_argument("--checkpoint", type=Path, default=None)
    p.add_argument("--seed", type=int, default=3)
    p.add_argument("--repeat", type=int, default=3, help="timed runs of ours (median reported)")
    p.add_argument("--quick", action="store_true", help="fewer steps, no memory test")
    p.add_argument("--memory-child", type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.memory_child is not None:
        memory_child(args.memory_child, str(args.checkpoint) if args.checkpoint else None)
        return
    if args.quick:
        args.steps, args.naive_frames, args.memory, args.repeat = 40, 10, "", 1

    if args.memory_only:
        report_memory(args.memory, args.checkpoint)
        return
    policy, what = load_policy(args.checkpoint)
    print(
        f"agent: {what}; env {ENV_ID} (ground truth); torch threads {torch.get_num_threads()}; "
        f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"
    )
    env = _boxreach(args.steps)
    t0 = time.perf_counter()
    embedding = fit_state_embedding(env, policy, episodes=4, max_steps=args.steps, seed=1000)
    env.close()
    print(
        f"setup (not timed below): t-SNE map of {len(embedding.embedding_)} states fitted in "
        f"{time.perf_counter() - t0:.1f} s"
    )

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        run_ours(policy, embedding, 10, args.seed, tmp / "warm.mp4")  # warm-up: imports, GL, fonts
        runs = []
        for _ in range(args.repeat):  # the machine is shared: report every run and the median
            with CpuClock() as clock:
                runs.append(
                    (run_ours(policy, embedding, args.steps, args.seed, tmp / "ours.mp4"), clock)
                )
        runs.sort(key=lambda r: r[0].fps)
        ours, ours_cpu = runs[len(runs) // 2]
        print(
            f"\nours, {len(runs)} runs: " + ", ".join(f"{r.fps:.1f}" for r, _ in runs) + " frames/s"
        )
        t = ours.timings
        print(
            f"ours (median run): {ours.frames} frames in {ours.seconds:.2f} s = "
            f"{ours.fps:.1f} frames/s end to end "
            f"(rollout {t['rollout']:.2f} s, attribution + t-SNE placement {t['explain']:.2f} s, "
            f"compose + encode {t['compose_encode']:.2f} s); panels: {', '.join(ours.panels)}; "
            f"{os.path.getsize(ours.paths[0]) / 1e6:.2f} MB"
        )
        per = run_ours(
            policy, embedding, args.steps, args.seed, tmp / "per.mp4", per_action="gradient"
        )
        print(f"ours + per-action maps row: {per.fps:.1f} frames/s")
        # Occlusion is the most faithful map (BENCHMARKS "Faithfulness"); incremental inference
        # (issue 19) is what lets a video afford it.
        occ = run_ours(
            policy,
            embedding,
            args.steps,
            args.seed,
            tmp / "occ.mp4",
            methods=("occlusion", "gradient", "gradcam"),
        )
        print(f"ours + occlusion panel (occlusion, gradient, gradcam): {occ.fps:.1f} frames/s")
        fast = run_ours(
            policy, embedding, args.steps, args.seed, tmp / "fast.mp4", preset="ultrafast"
        )
        print(
            f"ours with x264 preset ultrafast (--preset ultrafast): {fast.fps:.1f} frames/s, "
            f"{os.path.getsize(fast.paths[0]) / 1e6:.2f} MB"
        )
        with CpuClock() as naive_cpu:
            naive_s, naive_n = run_naive(
                policy, embedding, args.naive_frames, args.seed, tmp / "naive.mp4"
            )
        naive_fps = naive_n / naive_s
        print(
            f"naive: {naive_n} frames in {naive_s:.2f} s = {naive_fps:.1f} frames/s "
            "(captum per frame + new matplotlib figure per frame + imageio)"
        )
        print(
            f"speed-up (wall): {ours.fps / naive_fps:.1f}x   (targets: >= 60 frames/s, >= 5x naive)"
        )
        ours_ms, naive_ms = 1000 * ours_cpu.total / ours.frames, 1000 * naive_cpu.total / naive_n
        print(
            f"CPU time per frame: ours {ours_ms:.1f} ms "
            f"({1000 * ours_cpu.main / ours.frames:.1f} python "
            f"+ {1000 * ours_cpu.ffmpeg / ours.frames:.1f} ffmpeg), naive {naive_ms:.1f} ms "
            f"-> speed-up {naive_ms / ours_ms:.1f}x; on 2 idle cores ours would need >= "
            f"{ours_ms / 2:.1f} ms/frame (<= {2000 / ours_ms:.0f} frames/s) "
            f"and at most {ours_ms:.1f} "
            f"({1000 / ours_ms:.0f} frames/s) if nothing overlapped"
        )

        cal = calibration(policy, tmp)
        print(
            f"\ncalibration: compose 4-panel {cal['size']} frame {cal['compose_fps']:.0f} fps; "
            f"libx264 encode {cal['encode_fps']:.0f} fps; batched saliency "
            f"{cal['gradient_ms_per_frame']:.2f} ms/frame, "
            f"Grad-CAM {cal['gradcam_ms_per_frame']:.2f} ms/frame "
            f"({cal['frames']}-frame episode)"
        )

    if args.memory:
        report_memory(args.memory, args.checkpoint)
    print(f"\nload average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
