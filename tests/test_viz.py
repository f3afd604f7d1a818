"""The anchors picture: size, and that each cell shows the colour of the token that absorbed it."""

from __future__ import annotations

import matplotlib.image as mpimg
import numpy as np
import pytest
import torch

from anchor_ot.methods.base import assemble
from anchor_ot.viz import plot_anchors, token_colors

GRAY = 128
ALPHA = 0.45


def _reduced(F=3, grid=(4, 5), step=4):
    """Keep every ``step``-th token (flat index); every token goes to the nearest kept one by flat index."""
    h, w = grid
    total = F * h * w
    kept = torch.arange(0, total, step)
    assignment = ((torch.arange(total) + step // 2) // step).clamp(max=len(kept) - 1)
    return assemble(torch.randn(len(kept), 6), kept, assignment, F, grid).validate()


def _cell_pixel(plot, slot, r, c, grid):
    x0, y0, x1, y1 = plot.frame_boxes[slot]
    h, w = grid
    return plot.image[int(y0 + (r + 0.5) * (y1 - y0) / h), int(x0 + (c + 0.5) * (x1 - x0) / w)]


def test_png_size_and_content(tmp_path):
    reduced = _reduced()
    frames = np.full((3, 60, 100, 3), GRAY, np.uint8)
    plot = plot_anchors(frames, reduced, tmp_path / "sub" / "anchors.png", dpi=80)
    png = mpimg.imread(plot.path)
    assert png.shape[:2] == plot.image.shape[:2]
    assert plot.image.shape[1] == round((3 * 3.2 + 4 * 0.06) * 80)  # 3 panels of 3.2 in + gaps
    assert plot.colors.shape == (reduced.num_tokens, 4)
    np.testing.assert_allclose(png[..., :3], plot.image[..., :3] / 255.0, atol=1 / 255)


def test_merged_cells_show_their_absorbers_colour(tmp_path):
    grid = (4, 5)
    reduced = _reduced(grid=grid)
    N = grid[0] * grid[1]
    frames = np.full((3, 60, 100, 3), GRAY, np.uint8)
    plot = plot_anchors(frames, reduced, tmp_path / "a.png", alpha=ALPHA, dpi=100)
    assignment = reduced.assignment.numpy()
    frame_of_owner = reduced.frame_index.numpy()
    cross = 0
    for flat in range(3 * N):
        f, n = divmod(flat, N)
        r, c = divmod(n, grid[1])
        owner = assignment[flat]
        expected = ALPHA * plot.colors[owner, :3] * 255 + (1 - ALPHA) * GRAY
        got = _cell_pixel(plot, f, r, c, grid)[:3].astype(float)
        np.testing.assert_allclose(got, expected, atol=3, err_msg=f"cell {flat} (frame {f}, row {r}, col {c})")
        cross += frame_of_owner[owner] != f
    assert cross > 0  # the example has tokens absorbed by a token of the next frame


def test_kept_cells_are_outlined(tmp_path):
    grid = (4, 5)
    reduced = _reduced(grid=grid)
    frames = np.full((3, 60, 100, 3), GRAY, np.uint8)
    plot = plot_anchors(frames, reduced, tmp_path / "a.png", dpi=100)
    x0, y0, x1, y1 = plot.frame_boxes[0]
    cw, ch = (x1 - x0) / grid[1], (y1 - y0) / grid[0]
    src = set(reduced.source_index.tolist())
    for n in range(grid[0] * grid[1]):
        r, c = divmod(n, grid[1])
        # middle of the cell's top edge: white outline iff a kept token sits here
        px = plot.image[int(round(y0 + r * ch)), int(x0 + (c + 0.5) * cw), :3]
        neighbour_above = n - grid[1] in src
        if n in src:
            assert px.min() > 215, (n, px)
        elif not neighbour_above:  # the cell above does not share this edge with an outline
            assert px.min() < 215, (n, px)


def test_max_frames_subsamples(tmp_path):
    reduced = _reduced(F=10)
    frames = np.full((10, 30, 30, 3), GRAY, np.uint8)
    plot = plot_anchors(frames, reduced, tmp_path / "a.png", max_frames=4, dpi=40)
    assert plot.frames_shown.tolist() == [0, 3, 6, 9]
    assert plot.frame_boxes.shape == (4, 4)


def test_token_colors_distinct_neighbours():
    c = token_colors(50)
    assert c.shape == (50, 4) and np.all((c >= 0) & (c <= 1))
    assert np.abs(np.diff(c[:, :3], axis=0)).sum(axis=1).min() > 0.2


def test_bad_inputs(tmp_path):
    reduced = _reduced()
    with pytest.raises(ValueError, match="3"):
        plot_anchors(np.zeros((2, 20, 20, 3), np.uint8), reduced, tmp_path / "a.png")
    with pytest.raises(TypeError, match="uint8"):
        plot_anchors(np.zeros((3, 20, 20, 3), np.float32), reduced, tmp_path / "a.png")
    with pytest.raises(TypeError, match="ReducedVideo"):
        plot_anchors(np.zeros((3, 20, 20, 3), np.uint8), "nope", tmp_path / "a.png")
    with pytest.raises(ValueError, match="max_frames"):
        plot_anchors(np.zeros((3, 20, 20, 3), np.uint8), reduced, tmp_path / "a.png", max_frames=0)
