"""Explanation videos end to end: the streaming writer, render_video, memory, the CLI."""

from __future__ import annotations

import gc
import os
import tracemalloc
from pathlib import Path

import imageio
import numpy as np
import pytest
from helpers import SquareEnv, tiny_policy

from rlviz.rollout import run_episode
from rlviz.video import explain_episode, output_paths, render_video
from rlviz.video.panels import ActionPanel, MapPanel, Panel
from rlviz.video.writer import VideoWriter, check_writable


def read_video(path: Path) -> list[np.ndarray]:
    """Decode every frame of a video with imageio (ffmpeg for MP4, pillow for GIF)."""
    with imageio.get_reader(str(path)) as reader:
        return [np.asarray(frame)[..., :3] for frame in reader]


def solid_frames(n: int, h: int = 48, w: int = 64) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    colors = rng.integers(30, 220, (n, 3))
    return [np.broadcast_to(c.astype(np.uint8), (h, w, 3)).copy() for c in colors]


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


# --------------------------------------------------------------------------------- VideoWriter


def test_writer_mp4_decodes_with_the_frames_written(tmp_path):
    frames = solid_frames(12)
    path = tmp_path / "sub" / "clip.mp4"
    with VideoWriter(path, fps=10) as writer:
        for frame in frames:
            writer.write(frame)
    decoded = read_video(path)
    assert len(decoded) == 12
    assert decoded[0].shape == (48, 64, 3)
    for got, want in zip(decoded, frames, strict=True):  # solid colours survive H.264 closely
        assert np.abs(got.astype(int).mean((0, 1)) - want[0, 0].astype(int)).max() < 6
    assert leftovers(path.parent) == []


def test_writer_pads_odd_sizes_to_even_for_yuv420p(tmp_path):
    path = tmp_path / "odd.mp4"
    with VideoWriter(path) as writer:
        for frame in solid_frames(3, 25, 31):
            writer.write(frame)
    assert read_video(path)[0].shape == (26, 32, 3)


def test_writer_gif(tmp_path):
    path = tmp_path / "clip.gif"
    frames = solid_frames(5, 20, 30)
    with VideoWriter(path, fps=5) as writer:
        for frame in frames:
            writer.write(frame)
    decoded = read_video(path)
    assert len(decoded) == 5 and decoded[0].shape == (20, 30, 3)
    assert np.abs(decoded[3].astype(int) - frames[3].astype(int)).max() < 12


def test_writer_exception_midway_leaves_nothing(tmp_path):
    path = tmp_path / "broken.mp4"
    with pytest.raises(RuntimeError, match="boom"):
        with VideoWriter(path) as writer:
            for i, frame in enumerate(solid_frames(10)):
                if i == 5:
                    raise RuntimeError("boom")
                writer.write(frame)
    assert not path.exists()
    assert list(tmp_path.iterdir()) == []


def test_writer_existing_file_survives_a_failed_rewrite(tmp_path):
    path = tmp_path / "keep.mp4"
    with VideoWriter(path) as writer:
        writer.write(solid_frames(1)[0])
    before = path.read_bytes()
    with pytest.raises(ValueError, match="all frames of a video must have one size"):
        with VideoWriter(path) as writer:
            writer.write(solid_frames(1)[0])
            writer.write(np.zeros((10, 10, 3), np.uint8))
    assert path.read_bytes() == before  # the old video is untouched, not half-overwritten
    assert leftovers(tmp_path) == []


def test_writer_rejects_bad_frames_and_paths(tmp_path):
    writer = VideoWriter(tmp_path / "x.mp4")
    with pytest.raises(ValueError, match=r"uint8 RGB frame shaped \[H, W, 3\]"):
        writer.write(np.zeros((4, 4, 3), np.float32))
    writer.abort()
    with pytest.raises(ValueError, match="no frames were written"):
        VideoWriter(tmp_path / "empty.mp4").close()
    assert not (tmp_path / "empty.mp4").exists()
    with pytest.raises(ValueError, match=r"\.mp4 or \.gif"):
        check_writable(tmp_path / "x.avi")
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises((NotADirectoryError, PermissionError), match="choose"):
        check_writable(tmp_path / "file" / "x.mp4")
    with pytest.raises(ValueError, match="fps"):
        VideoWriter(tmp_path / "y.mp4", fps=0)


# -------------------------------------------------------------------------------- render_video


def test_render_video_writes_one_frame_per_step(tmp_path):
    import torch

    env = SquareEnv(max_steps=24, goal=False)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        summary = render_video(
            env,
            tiny_policy(),
            out=tmp_path / "run.mp4",
            methods=["gradient", "gradcam"],
            episodes=1,
            seed=3,
            fps=12,
        )
        assert torch.get_num_threads() == 2  # the caller's setting is restored
    finally:
        torch.set_num_threads(threads)
    assert summary.paths == [tmp_path / "run.mp4"] and summary.episodes == 1
    assert summary.frames == 24 and summary.lengths == [24] and summary.seconds > 0
    frames = read_video(tmp_path / "run.mp4")
    assert len(frames) == 24
    h, w = frames[0].shape[:2]
    assert h % 2 == 0 and w % 2 == 0 and w >= 640 and h >= 400
    # Non-trivial content: a structured image, and frames change over the episode.
    assert frames[0].std() > 20
    assert np.abs(frames[0].astype(int) - frames[-1].astype(int)).mean() > 0.5
    assert "frames: 24" in str(summary)


def test_render_video_matches_the_rollout_and_counts_successes(tmp_path):
    env = SquareEnv(max_steps=30)
    policy = tiny_policy()
    summary = render_video(env, policy, out=tmp_path, methods=["gradient"], episodes=3, seed=5)
    assert [p.name for p in summary.paths] == [f"rl-explain-episode-{i}.mp4" for i in range(3)]
    from rlviz.rollout import episode_generator

    # Episode i samples from its own generator, seeded by its reset seed 5 + i.
    expected = [
        run_episode(env, policy, seed=5 + i, generator=episode_generator(5, i)) for i in range(3)
    ]
    assert summary.lengths == [len(r) for r in expected]
    assert summary.successes == sum(r.success for r in expected)
    for path, n in zip(summary.paths, summary.lengths, strict=True):
        assert len(read_video(path)) == n


def test_render_video_failure_midway_leaves_no_file(tmp_path):
    class Exploding(Panel):
        def render(self, t, episode):
            if t == 6:
                raise RuntimeError("panel failed at t=6")
            return self._require_prepared().copy()

    out = tmp_path / "fail.mp4"
    with pytest.raises(RuntimeError, match="t=6"):
        render_video(
            SquareEnv(max_steps=20, goal=False),
            tiny_policy(),
            out=out,
            methods=["gradient"],
            panels=[MapPanel("gradient"), Exploding(title="boom")],
        )
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []


def test_render_video_leaves_out_panels_the_env_cannot_feed(tmp_path):
    class PlainEnv(SquareEnv):
        """No ground truth, no top-down map: any RGB env."""

        top_down_map = None

        def _info(self, success):
            return {}

    full = render_video(
        SquareEnv(max_steps=8, goal=False),
        tiny_policy(),
        out=tmp_path / "full.mp4",
        methods=["gradient"],
    )
    plain = render_video(
        PlainEnv(max_steps=8, goal=False),
        tiny_policy(),
        out=tmp_path / "plain.mp4",
        methods=["gradient"],
    )
    assert full.frames == plain.frames == 8
    assert "TopDownPanel" in full.panels and "TopDownPanel" not in plain.panels
    assert {"MapPanel", "ActionPanel", "ValuePanel", "CaptionPanel"} <= set(plain.panels)
    assert len(read_video(plain.paths[0])) == 8


def test_render_video_gif_and_errors(tmp_path):
    summary = render_video(
        SquareEnv(max_steps=6, goal=False),
        tiny_policy(),
        out=tmp_path,
        gif=True,
        methods=["gradcam"],
        panels=lambda: [MapPanel("gradcam"), ActionPanel()],
    )
    assert summary.paths[0].suffix == ".gif" and len(read_video(summary.paths[0])) == 6
    with pytest.raises(ValueError, match="unknown attribution method 'nope'; valid: .*gradient"):
        render_video(SquareEnv(), tiny_policy(), out=tmp_path / "a.mp4", methods=["nope"])
    with pytest.raises(ValueError, match="episodes must be >= 1"):
        render_video(SquareEnv(), tiny_policy(), out=tmp_path / "a.mp4", episodes=0)
    assert output_paths(tmp_path / "r.mp4", 2) == [
        tmp_path / "r-episode-0.mp4",
        tmp_path / "r-episode-1.mp4",
    ]
    with pytest.raises(ValueError, match="folder or a file ending in .mp4 or .gif"):
        output_paths(tmp_path / "r.avi", 1)


def test_explain_episode_normalises_over_the_episode_or_per_frame():
    env = SquareEnv(max_steps=12, goal=False)
    policy = tiny_policy()
    rollout = run_episode(env, policy, seed=0)
    episode = explain_episode(policy, rollout, ["gradient"], normalize="episode")
    frame = explain_episode(policy, rollout, ["gradient"], normalize="frame")
    ep_max = episode.maps["gradient"].reshape(12, -1).max(1)
    fr_max = frame.maps["gradient"].reshape(12, -1).max(1)
    assert np.allclose(fr_max, 1.0)  # every frame reaches the top of its own scale
    assert ep_max.min() < 0.99 * ep_max.max()  # one scale: dim frames stay dim
    low, high = episode.map_ranges["gradient"]
    assert low == 0.0 and high > 0


def test_explain_episode_per_action_maps_and_embedding():
    from rlviz.statemap import StateEmbedding, layer_features

    env = SquareEnv(max_steps=30, goal=False)
    policy = tiny_policy()
    rollout = run_episode(env, policy, seed=1)
    feats = layer_features(policy, rollout.obs, "conv2", "avg")
    emb = StateEmbedding(method="pca").fit(feats, meta={"layer": "conv2", "pool": "avg"})
    episode = explain_episode(policy, rollout, ["gradient"], per_action="gradient", embedding=emb)
    maps = episode.action_maps["gradient"]
    assert maps.shape == (30, 3, 30, 40) and 0 <= maps.min() and maps.max() <= 1
    assert not np.allclose(maps[:, 0], maps[:, 2])  # left and right are explained differently
    assert np.allclose(episode.embedding_xy, emb.embedding_, atol=1e-4)  # same states, same spots


# ------------------------------------------------------------------------------------- memory


def _peak_bytes(steps: int, folder: Path) -> int:
    env = SquareEnv(max_steps=steps, goal=False)
    policy = tiny_policy()
    gc.collect()
    tracemalloc.start()
    try:
        render_video(env, policy, out=folder / f"m{steps}.mp4", methods=["gradient", "gradcam"])
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_long_episode_does_not_hold_frames(tmp_path):
    _peak_bytes(5, tmp_path)  # warm-up: imports, fonts and colour tables are allocated once
    short, long = _peak_bytes(30, tmp_path), _peak_bytes(180, tmp_path)
    frame_bytes = read_video(tmp_path / "m30.mp4")[0].nbytes
    per_step = (long - short) / 150
    # Holding composed frames would cost >= frame_bytes (~1.6 MB) a step; the episode's own data
    # (observation, maps, masks, compressed top-down view) is a few KB.
    assert per_step < 0.05 * frame_bytes, (short, long, frame_bytes)
    assert long < 3 * short, (short, long)


# ----------------------------------------------------------------------------------------- CLI


@pytest.fixture
def checkpoint(tmp_path):
    import torch

    from rlviz import agents

    torch.manual_seed(0)
    model = agents.ActorCritic()
    path = tmp_path / "ckpt" / "agent.safetensors"
    agents.save_checkpoint(path, model, config={"env_id": "rlviz/BoxReachSmall-v0"})
    return path


def test_cli_errors_are_clear(tmp_path, capsys):
    from rlviz.cli.video import main

    assert main(["--checkpoint", str(tmp_path / "missing.safetensors")]) == 2
    assert "does not exist" in capsys.readouterr().err
    real = tmp_path / "c.safetensors"
    real.write_bytes(b"x")
    assert main(["--checkpoint", str(real), "--methods", "gradient,bogus"]) == 2
    err = capsys.readouterr().err
    assert "unknown method 'bogus'" in err and "gradcam" in err
    (tmp_path / "blocker").write_text("a file where a folder should be")
    assert main(["--checkpoint", str(real), "--out", str(tmp_path / "blocker" / "v.mp4")]) == 2
    assert "choose" in capsys.readouterr().err


@pytest.mark.slow
def test_cli_renders_boxreach_from_a_checkpoint(tmp_path, checkpoint, capsys):
    from rlviz.cli.video import main

    out = tmp_path / "videos"
    code = main(
        [
            "--checkpoint",
            str(checkpoint),
            "--env",
            "rlviz/BoxReachSmall-v0",
            "--episodes",
            "2",
            "--max-steps",
            "12",
            "--map-episodes",
            "2",
            "--out",
            str(out),
            "--seed",
            "4",
            "--no-progress",
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "episodes: 2" in printed and "frames: " in printed
    files = sorted(out.glob("rl-explain-episode-*.mp4"))
    assert [f.name for f in files] == ["rl-explain-episode-0.mp4", "rl-explain-episode-1.mp4"]
    frames = read_video(files[0])
    assert 1 <= len(frames) <= 12 and frames[0].std() > 20
    assert os.path.getsize(files[0]) < 3_000_000


@pytest.mark.slow
def test_render_video_on_real_boxreach_with_all_panels(tmp_path):
    import torch

    from rlviz import agents
    from rlviz.cli.common import make_env
    from rlviz.video import fit_state_embedding

    env = make_env("rlviz/BoxReachSmall-v0")
    try:
        torch.manual_seed(0)
        policy = agents.make_adapter(agents.ActorCritic())
        embedding = fit_state_embedding(env, policy, episodes=1, max_steps=20, method="pca")
        summary = render_video(
            env,
            policy,
            out=tmp_path / "box.mp4",
            methods=["gradient", "gradcam"],
            max_steps=15,
            seed=2,
            embedding=embedding,
            per_action="gradient",
        )
    finally:
        env.close()
    frames = read_video(summary.paths[0])
    assert len(frames) == summary.frames == summary.lengths[0] <= 15
    assert frames[0].shape[1] >= 960 and frames[0].std() > 20


def test_chunked_normalisation_equals_normalize_on_the_whole_episode():
    from rlviz.maps import normalize
    from rlviz.maps import normalize_maps as _normalize_maps

    raw = np.random.default_rng(0).gamma(1.0, 1e-4, (300, 6, 8)).astype(np.float32)
    raw[5] *= 40  # one bright frame sets the episode's scale
    for mode in ("episode", "frame"):
        for signed in (False, True):
            data = raw - 1e-4 if signed else raw
            chunked, (low, high) = _normalize_maps(data, mode, signed, chunk=64)
            whole = normalize(data, mode=mode, signed=signed)
            assert chunked.shape == whole.shape
            assert np.abs(chunked.astype(np.float32) - whole).max() < 1e-3  # float16 storage
    assert low == -high and high > 0
