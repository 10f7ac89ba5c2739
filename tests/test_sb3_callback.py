"""ExplanationVideoCallback: explanation videos during an SB3 ``learn()``, handed to SB3's logger
as a ``Video`` (what TensorBoard shows), MP4s written either way."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from helpers import ColourPatchEnv

sb3 = pytest.importorskip("stable_baselines3")
from stable_baselines3.common.logger import KVWriter, Logger, Video  # noqa: E402

from rlviz.callbacks import ExplanationVideoCallback, read_video  # noqa: E402


class VideoCatcher(KVWriter):
    """A logger output that keeps every Video it is given (stands in for TensorBoard)."""

    def __init__(self) -> None:
        self.videos: list[tuple[str, Video, int]] = []

    def write(self, key_values, key_excluded, step=0) -> None:
        for key, value in key_values.items():
            if isinstance(value, Video):
                self.videos.append((key, value, step))


def ppo(**kwargs):
    return sb3.PPO(
        "CnnPolicy",
        ColourPatchEnv(),
        n_steps=32,
        batch_size=32,
        n_epochs=1,
        seed=0,
        device="cpu",
        policy_kwargs={"features_extractor_kwargs": {"features_dim": 16}},
        **kwargs,
    )


def test_learn_with_the_callback_writes_videos_and_logs_a_video(tmp_path):
    model = ppo()
    catcher = VideoCatcher()
    model.set_logger(Logger(str(tmp_path / "log"), [catcher]))
    callback = ExplanationVideoCallback(
        ColourPatchEnv(horizon=5),
        every_n_steps=32,
        methods=("gradient",),
        out_dir=tmp_path / "videos",
        max_steps=5,
    )
    model.learn(64, callback=callback)
    assert len(callback.paths) == 2  # at steps 32 and 64
    assert all(p.exists() and p.stat().st_size > 1000 for p in callback.paths)
    assert callback.paths[0].name == "step-000000032-episode-0.mp4"
    assert catcher.videos, "no Video reached the logger"
    key, video, _ = catcher.videos[0]
    assert key == "rlviz/explanation"
    frames = video.frames.numpy()
    assert frames.dtype == np.uint8 and frames.ndim == 5 and frames.shape[:3] == (1, 5, 3)
    # the logged frames are the MP4's
    np.testing.assert_array_equal(frames[0].transpose(0, 2, 3, 1), read_video(callback.paths[0]))


def test_without_tensorboard_it_still_writes_mp4s_and_says_how_to_log(tmp_path):
    model = ppo()  # default logger: stdout only
    callback = ExplanationVideoCallback(
        ColourPatchEnv(horizon=3), every_n_steps=64, out_dir=tmp_path, max_steps=3
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.learn(64, callback=callback)
    assert len(callback.paths) == 1 and callback.paths[0].exists()
    assert any("pip install tensorboard moviepy" in str(w.message) for w in caught)


def test_tensorboard_event_file_holds_a_video_summary(tmp_path):
    pytest.importorskip("tensorboard")
    pytest.importorskip("moviepy")  # SummaryWriter.add_video needs it
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    model = ppo(tensorboard_log=str(tmp_path / "tb"))
    callback = ExplanationVideoCallback(
        ColourPatchEnv(horizon=3), every_n_steps=32, out_dir=tmp_path / "v", max_steps=3
    )
    model.learn(64, callback=callback)
    runs = sorted((tmp_path / "tb").iterdir())
    events = EventAccumulator(str(runs[0]), size_guidance={"images": 0})
    events.Reload()
    assert "rlviz/explanation" in events.Tags()["images"]


def test_bad_arguments_and_envs_are_refused(tmp_path):
    with pytest.raises(ValueError, match="every_n_steps and episodes must be >= 1"):
        ExplanationVideoCallback(ColourPatchEnv(), every_n_steps=0)
    model = ppo()
    with pytest.raises(TypeError, match="Gymnasium env, an env id"):
        model.learn(32, callback=ExplanationVideoCallback(object(), out_dir=tmp_path))
