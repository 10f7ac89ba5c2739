"""Panels and composition: tile sizes and dtypes, what each panel draws, layout, captions, fonts."""

from __future__ import annotations

import numpy as np
import pytest

from rlviz.rollout import CompressedFrames, Rollout
from rlviz.video import draw as compose
from rlviz.video.draw import ACCENT, display_frame, put_text, text_mask
from rlviz.video.episode import EpisodeExplanation
from rlviz.video.events import episode_events
from rlviz.video.grid import Composer, grid_shape
from rlviz.video.panels import (
    ActionPanel,
    CaptionPanel,
    EmbeddingPanel,
    MapPanel,
    ObservationPanel,
    PerActionPanel,
    TopDownPanel,
    ValuePanel,
    default_panels,
)

T, H, W = 10, 30, 40
NAMES = ("left", "forward", "right")


def make_episode(with_extras: bool = True) -> EpisodeExplanation:
    """A hand-made episode: grey frames, a map hot in the top-left corner, known actions."""
    obs = np.full((T, H, W, 3), 100, np.uint8)
    heat = np.zeros((T, H, W), np.float32)
    heat[:, :10, :10] = 1.0
    probs = np.tile(np.array([[0.2, 0.7, 0.1]], np.float32), (T, 1))
    actions = np.array([1, 1, 0, 2, 2, 1, 1, 0, 1, 1])
    mask = np.zeros((T, H, W), bool)
    mask[3:6, 10:16, 2:8] = True  # box on the left at t = 3..5
    rewards = np.zeros(T, np.float32)
    rewards[-1] = 1.0
    success = np.zeros(T, bool)
    success[-1] = True
    rollout = Rollout(
        obs=obs,
        actions=actions,
        probs=probs,
        values=np.linspace(0, 1, T).astype(np.float32),
        rewards=rewards,
        infos={"goal_mask": mask, "box_visible": mask.any((1, 2)), "success": success},
        terminated=True,
    )
    extras = {}
    if with_extras:
        from rlviz.statemap import StateEmbedding

        feats = np.random.default_rng(0).normal(size=(40, 6)).astype(np.float32)
        emb = StateEmbedding(method="pca").fit(feats, point_data={"value": feats[:, 0]})
        top = CompressedFrames()
        for t in range(T):
            img = np.full((60, 80, 3), 200, np.uint8)
            img[t, :5] = (0, 0, 255)
            top.append(img)
        extras = {
            "embedding": emb,
            "embedding_xy": emb.embedding_[:T],
            "top_down": top,
            "action_maps": {"gradient": np.stack([heat, heat[:, ::-1], heat[:, :, ::-1]], 1)},
        }
    return EpisodeExplanation(
        rollout=rollout,
        maps={"gradient": heat, "gradcam": heat * 0.5},
        map_ranges={"gradient": (0.0, 2e-3)},
        action_names=NAMES,
        meta={"agent": "tiny", "env": "Square", "seed": 0},
        **extras,
    )


ALL_PANELS = [
    lambda: MapPanel("gradient"),
    lambda: MapPanel("gradcam", cmap="viridis"),
    ObservationPanel,
    ActionPanel,
    ValuePanel,
    EmbeddingPanel,
    TopDownPanel,
    CaptionPanel,
    lambda: PerActionPanel("gradient"),
]


@pytest.mark.parametrize("factory", ALL_PANELS)
def test_every_panel_renders_its_size_as_uint8(factory):
    episode = make_episode()
    panel = factory()
    assert panel.available(episode)
    panel.prepare(episode)
    for t in (0, 4, T - 1):
        tile = panel.render(t, episode)
        assert tile.dtype == np.uint8 and tile.shape == (*panel.size, 3)
    assert panel.render(0, episode).std() > 0  # draws something


def test_render_before_prepare_raises():
    with pytest.raises(RuntimeError, match=r"prepare\(episode\) must be called"):
        ActionPanel().render(0, make_episode())


def test_panels_say_when_the_episode_cannot_feed_them():
    bare = make_episode(with_extras=False)
    assert not TopDownPanel().available(bare)
    assert not EmbeddingPanel().available(bare)
    assert not PerActionPanel("gradient").available(bare)
    assert not MapPanel("occlusion").available(bare)
    assert MapPanel("gradient").available(bare) and ActionPanel().available(bare)


def test_map_panel_colours_where_the_map_is_high_only():
    episode = make_episode()
    panel = MapPanel("gradient")
    panel.prepare(episode)
    tile = panel.render(0, episode).astype(int)
    y0, x0 = panel._origin
    k = panel._scale
    hot = tile[y0 + 2 * k, x0 + 2 * k]  # map = 1 here
    cold = tile[y0 + 20 * k, x0 + 30 * k]  # map = 0: the frame shows through, only dimmed
    assert np.array_equal(cold, [round(100 * panel.dim)] * 3)
    assert np.abs(hot - cold).max() > 60
    # nearest upscale: a k x k block of the observation is one colour
    block = tile[y0 + 20 * k : y0 + 21 * k, x0 + 30 * k : x0 + 31 * k]
    assert (block == block[0, 0]).all()


def test_action_panel_highlights_the_taken_action_with_proportional_bars():
    episode = make_episode()
    panel = ActionPanel()
    panel.prepare(episode)
    x0, x1, bar_h = panel._bar
    for t in (0, 2, 3):
        tile = panel.render(t, episode)
        taken = episode.rollout.actions[t]
        for k, y in enumerate(panel._rows):
            row = tile[y + bar_h // 2, x0:x1]
            filled = int(
                (row == ACCENT).all(1).sum() if k == taken else (row != row[-1]).any(1).sum()
            )
            assert abs(filled - episode.rollout.probs[t, k] * (x1 - x0)) <= 2
        others = [y for k, y in enumerate(panel._rows) if k != taken]
        assert not (tile[others[0] + bar_h // 2, x0:x1] == ACCENT).all(1).any()


def test_value_panel_cursor_moves_with_t():
    episode = make_episode()
    panel = ValuePanel()
    panel.prepare(episode)
    x0, x1, y0, y1 = panel._plot

    def cursor_x(t):
        row = panel.render(t, episode)[(y0 + y1) // 2]
        return np.flatnonzero((row == ACCENT).all(1)).max()

    assert cursor_x(0) <= x0 + 1 and cursor_x(T - 1) >= x1 - 1
    assert cursor_x(2) < cursor_x(5) < cursor_x(8)


def test_top_down_panel_shows_the_frame_of_step_t():
    episode = make_episode()
    panel = TopDownPanel()
    panel.prepare(episode)
    a, b = panel.render(1, episode), panel.render(7, episode)
    assert not np.array_equal(a, b)


def test_embedding_panel_marks_the_current_state():
    episode = make_episode()
    panel = EmbeddingPanel(trail=3)
    panel.prepare(episode)
    px = panel._pixels[5].round().astype(int)
    tile = panel.render(5, episode)
    assert (tile[px[1], px[0]] == ACCENT).all()
    assert "PCA" in panel.title


def test_events_from_ground_truth():
    episode = make_episode()
    events = episode_events(episode.rollout, episode.action_names)
    assert "box came into view" in events[3] and "lost sight of the box" in events[6]
    # box on the left (columns 2..7 of 40) and the agent turns right at t = 3 and 4
    assert (
        "turning away from a visible box" in events[3]
        and "turning away from a visible box" in events[4]
    )
    assert "turning away from a visible box" not in events[5]  # forward
    assert events[-1] == ["reached the box"]
    assert all(not e for e in events[:3])


def test_caption_holds_events_and_shows_box_chip():
    episode = make_episode()
    panel = CaptionPanel(hold=4)
    panel.fit_width(500)
    panel.prepare(episode)
    seen, unseen = panel.render(4, episode), panel.render(0, episode)
    assert seen.shape == (30, 500, 3)
    assert not np.array_equal(seen, unseen)


def test_composer_lays_out_without_overlap_and_even_size():
    episode = make_episode()
    panels = [p() if callable(p) else p for p in ALL_PANELS]
    composer = Composer(panels)
    composer.prepare(episode, title=episode.title())
    frame = composer.frame(3, episode)
    h, w = composer.size
    assert frame.shape == (h, w, 3) and h % 2 == 0 and w % 2 == 0
    boxes = [
        (y, x, y + p.size[0], x + p.size[1])
        for p, (y, x) in zip(panels, composer._positions, strict=True)
    ]
    for i, a in enumerate(boxes):
        assert a[0] >= composer.title_height and a[2] <= h and a[3] <= w
        for b in boxes[i + 1 :]:
            assert a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1], (a, b)
    # each tile is pasted where the layout says
    for p, (y, x) in zip(panels, composer._positions, strict=True):
        assert np.array_equal(frame[y : y + p.size[0], x : x + p.size[1]], p.render(3, episode))
    with pytest.raises(RuntimeError, match="prepare"):
        Composer([ActionPanel()]).frame(0, episode)


def test_grid_shape_prefers_full_landscape_grids():
    cell = (240, 320)
    assert grid_shape(1, cell) == (1, 1)
    assert grid_shape(4, cell) == (2, 2)
    assert grid_shape(6, cell) == (2, 3)
    rows, cols = grid_shape(5, cell)
    assert rows * cols >= 5 and cols >= rows


def test_default_panels_cover_the_brief():
    kinds = [
        type(p).__name__ for p in default_panels(["gradient", "gradcam"], per_action="gradient")
    ]
    assert kinds.count("MapPanel") == 2
    for name in (
        "ActionPanel",
        "ValuePanel",
        "EmbeddingPanel",
        "TopDownPanel",
        "CaptionPanel",
        "PerActionPanel",
    ):
        assert name in kinds


def test_text_is_drawn_and_font_falls_back(monkeypatch):
    canvas = np.zeros((20, 80, 3), np.uint8)
    box = put_text(canvas, "step 3", (2, 10), anchor="lm", color=(255, 255, 255))
    assert canvas.max() > 200 and box[0] == 2
    put_text(canvas, "clipped off the edge", (70, 10))  # no error when text leaves the canvas
    monkeypatch.setattr(compose, "_font_paths", lambda bold: [])
    compose.get_font.cache_clear()
    text_mask.cache_clear()
    try:
        assert text_mask("fallback", 12).max() > 0.5  # PIL's built-in font
    finally:
        compose.get_font.cache_clear()
        text_mask.cache_clear()


def test_display_frame_handles_grey_rgba_and_channel_first():
    assert display_frame(np.zeros((5, 6), np.uint8)).shape == (5, 6, 3)
    assert display_frame(np.zeros((5, 6, 4), np.uint8)).shape == (5, 6, 3)
    assert display_frame(np.zeros((3, 5, 6), np.uint8)).shape == (5, 6, 3)
    assert display_frame(np.ones((5, 6, 3), np.float32)).max() == 255
    with pytest.raises(ValueError, match="image observation"):
        display_frame(np.zeros(5))
