"""Videos of policies with memory: the frame stack panel, the memory-reliance trace, the wrappers.

Stacked policies (SB3-style [H, W, K*C] from ``envs.wrappers.StackFrames`` and Gymnasium
``FrameStackObservation`` [K, H, W, C]) and recurrent ones are rendered end to end with real
ffmpeg; single-frame videos keep their panels.
"""

from __future__ import annotations

import gymnasium as gym
import imageio
import numpy as np
import pytest
import torch
from helpers import H, SquareEnv, W, tiny_policy
from torch import nn

import rlviz
from rlviz.envs.wrappers import StackFrames
from rlviz.layout import ObservationLayout
from rlviz.memory import memory_reliance
from rlviz.rollout import run_episode
from rlviz.video import explain_episode, render_video
from rlviz.wrappers import ExplanationRender, RecordExplanationVideo

K = 2
STACK = ObservationLayout(frames=K, channels=3, order="HWC")


class StackNet(nn.Module):
    """A conv net over K stacked RGB frames; ``reads`` zeroes all frames but one (or none)."""

    def __init__(self, reads: int | None = None, frames: int = K) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.reads, self.frames = reads, frames
        self.conv1 = nn.Conv2d(3 * frames, 6, 3, stride=2, padding=1)
        self.conv2 = nn.Conv2d(6, 8, 3, stride=2, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.policy = nn.Linear(8, 3)
        self.value = nn.Linear(8, 1)

    def forward(self, x):
        if self.reads is not None:
            keep = torch.zeros_like(x)
            keep[:, 3 * self.reads : 3 * self.reads + 3] = 1
            x = x * keep
        h = self.pool(torch.relu(self.conv2(torch.relu(self.conv1(x))))).flatten(1)
        return self.policy(h), self.value(h)[:, 0]


class MemoryToy(nn.Module):
    """A recurrent toy: logits from the incoming state, the state follows the frames' colours."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.inp, self.head = nn.Linear(3, 4), nn.Linear(4, 3)
        nn.init.normal_(self.inp.weight, std=4.0)

    def step(self, x, state):
        (h,) = state
        return self.head(h), (torch.tanh(self.inp(x.mean(dim=(2, 3))) + h),)


def memory_toy() -> rlviz.PolicyAdapter:
    model = MemoryToy()
    return rlviz.PolicyAdapter(
        model, state_forward=model.step, initial_state=lambda b: (torch.zeros(b, 4),)
    )


def frame_count(path) -> int:
    with imageio.get_reader(str(path)) as reader:
        return sum(1 for _ in reader)


def test_stacked_policy_video_has_stack_and_memory_panels(tmp_path):
    adapter = rlviz.PolicyAdapter(StackNet())  # [H, W, 6]: the env's wrapper declares the layout
    env = StackFrames(SquareEnv(max_steps=8, goal=False), K)
    summary = render_video(
        env, adapter, out=tmp_path / "stack.mp4", methods=["gradient", "gradcam"]
    )
    assert {"StackPanel", "MemoryPanel"} <= set(summary.panels)
    assert frame_count(tmp_path / "stack.mp4") == 8


def test_single_frame_video_keeps_its_panels(tmp_path):
    summary = render_video(
        SquareEnv(max_steps=4, goal=False), tiny_policy(), out=tmp_path / "one.mp4"
    )
    assert "StackPanel" not in summary.panels and "MemoryPanel" not in summary.panels
    rollout = run_episode(SquareEnv(max_steps=4, goal=False), tiny_policy(), seed=0)
    episode = explain_episode(tiny_policy(), rollout)
    assert episode.memory is None and not episode.frame_maps and not episode.stacked


def test_stack_panel_maps_put_the_mass_on_the_frame_read():
    adapter = rlviz.PolicyAdapter(StackNet(reads=0), layout=STACK)  # reads the oldest frame only
    rollout = run_episode(StackFrames(SquareEnv(max_steps=6, goal=False), K), adapter, seed=1)
    episode = explain_episode(adapter, rollout, ["gradient", "gradcam"])
    assert episode.frame_maps["gradient"].shape == (6, K, H, W)
    np.testing.assert_allclose(episode.frame_shares[:, 0], 1.0, atol=1e-6)
    np.testing.assert_allclose(episode.memory.share, 1.0, atol=1e-6)  # all on the past frame
    # The map panel shows the newest frame's own map: empty for a policy that never reads it.
    assert np.all(episode.maps["gradient"] == 0)
    assert episode.newest_maps == ("gradient",)
    frame = episode.frame(0)
    assert frame.shape == (H, W, 3)
    np.testing.assert_array_equal(frame, rollout.obs[0][..., 3:])  # the newest RGB frame


def test_stack_panel_without_an_input_method_falls_back_to_the_gradient():
    adapter = rlviz.PolicyAdapter(StackNet(), layout=STACK)
    rollout = run_episode(StackFrames(SquareEnv(max_steps=3, goal=False), K), adapter, seed=1)
    episode = explain_episode(adapter, rollout, ["gradcam"])
    assert list(episode.frame_maps) == ["gradient"] and list(episode.maps) == ["gradcam"]


def test_gymnasium_frame_stack_renders_end_to_end(tmp_path):
    env = gym.wrappers.FrameStackObservation(SquareEnv(max_steps=5, goal=False), stack_size=3)
    adapter = rlviz.PolicyAdapter(StackNet(frames=3))  # [3, H, W, 3]: the layout is unambiguous
    summary = render_video(env, adapter, out=tmp_path / "fs.mp4", methods=["gradient"])
    assert "StackPanel" in summary.panels
    assert frame_count(tmp_path / "fs.mp4") == 5


def test_recurrent_rollout_without_states_is_refused():
    adapter = memory_toy()
    rollout = run_episode(SquareEnv(max_steps=3, goal=False), adapter, seed=0)
    rollout.states = None
    with pytest.raises(ValueError, match="no states"):
        explain_episode(adapter, rollout, ["gradient"])


def test_record_explanation_video_replays_the_recurrent_state(tmp_path):
    adapter = memory_toy()
    env = RecordExplanationVideo(
        SquareEnv(max_steps=6, goal=False), adapter, tmp_path, methods=["gradient"]
    )
    env.reset(seed=0)
    done = False
    while not done:
        *_, terminated, truncated, _ = env.step(1)
        done = terminated or truncated
    env.close()
    assert frame_count(env.video_paths[0]) == 6


def test_explanation_render_carries_the_state_along_the_episode():
    adapter = memory_toy()
    played = run_episode(SquareEnv(max_steps=5, goal=False), adapter, seed=4, deterministic=True)
    env = ExplanationRender(SquareEnv(max_steps=5, goal=False), adapter, methods=["gradient"])
    env.reset(seed=4)
    for action in played.actions[:-1]:
        env.render()
        env.step(int(action))
    frame = env.render()
    assert frame.ndim == 3 and frame.shape[2] == 3
    episode = env._episode_so_far()
    np.testing.assert_allclose(episode.rollout.probs, played.probs, atol=1e-6)
    assert episode.memory is not None and len(episode.memory) == len(played)


def test_explanation_render_shows_the_stack():
    adapter = rlviz.PolicyAdapter(StackNet(), layout=STACK)
    env = ExplanationRender(StackFrames(SquareEnv(max_steps=5, goal=False), K), adapter)
    env.reset(seed=0)
    env.step(1)
    frame = env.render()
    episode = env._episode_so_far()
    assert episode.frame_maps["gradient"].shape == (2, K, H, W)
    assert frame.shape[0] > 480  # the stack panel's row under the grid


def test_memory_reliance_reads_the_env_layout_of_a_rollout():
    adapter = rlviz.PolicyAdapter(StackNet(reads=0))  # no layout: StackFrames declares it
    rollout = run_episode(StackFrames(SquareEnv(max_steps=4, goal=False), K), adapter, seed=0)
    assert rollout.layout == StackFrames(SquareEnv(), K).observation_layout
    np.testing.assert_allclose(memory_reliance(adapter, rollout).share, 1.0, atol=1e-6)
