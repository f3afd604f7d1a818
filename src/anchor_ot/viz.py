"""Pictures of what a reducer kept and what each kept token absorbed.

:func:`plot_anchors` draws the sampled frames with the token grid laid over them:
every grid cell is tinted with the colour of the output token that absorbed it
(``ReducedVideo.assignment``) and the cells where output tokens sit
(``ReducedVideo.source_index``) are outlined. A cell tinted with the colour of a
token in another frame was merged across time. This is the idea of the AOT
paper's Fig. 4-6 (arXiv 2603.01400), which shows anchors and the regions merged
into them; the drawing itself is ours.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from anchor_ot.types import ReducedVideo

__all__ = ["AnchorPlot", "plot_anchors", "token_colors"]

_GOLDEN = 0.618033988749895


@dataclass(frozen=True)
class AnchorPlot:
    """What :func:`plot_anchors` drew.

    Attributes
    ----------
    path : pathlib.Path
        The PNG written.
    image : numpy.ndarray, shape (H, W, 4), uint8
        The rendered figure, RGBA, identical in size to the PNG.
    colors : numpy.ndarray, shape (K, 4), float
        RGBA colour (in [0, 1], alpha 1) of each output token, row k for ``reduced.tokens[k]``.
    frames_shown : numpy.ndarray, shape (P,), int64
        Indices of the frames drawn (all frames, or ``max_frames`` evenly spaced ones).
    frame_boxes : numpy.ndarray, shape (P, 4), float
        Pixel box ``(x0, y0, x1, y1)`` of each drawn frame in ``image`` (x to the right,
        y downwards from the top row), for locating grid cells.
    """

    path: Path
    image: np.ndarray
    colors: np.ndarray
    frames_shown: np.ndarray
    frame_boxes: np.ndarray


def token_colors(num_tokens: int) -> np.ndarray:
    """Distinct RGBA colours for ``num_tokens`` output tokens.

    Hues step by the golden ratio (so consecutive tokens, which are neighbours in
    raster order, get far-apart hues); saturation and value alternate in three
    levels to separate tokens whose hues come close.

    Returns
    -------
    numpy.ndarray, shape (num_tokens, 4), float in [0, 1]
    """
    from matplotlib.colors import hsv_to_rgb

    k = np.arange(num_tokens)
    hsv = np.stack([(k * _GOLDEN) % 1.0, 0.95 - 0.2 * ((k // 7) % 2), 1.0 - 0.2 * (k % 3 == 2)], axis=1)
    return np.concatenate([hsv_to_rgb(hsv), np.ones((num_tokens, 1))], axis=1)


def _as_frames(frames) -> np.ndarray:
    if isinstance(frames, torch.Tensor):
        frames = frames.detach().cpu().numpy()
    if not isinstance(frames, np.ndarray):
        raise TypeError(f"frames must be a uint8 array (F, H, W, 3), got {type(frames).__name__}")
    if frames.dtype != np.uint8:
        raise TypeError(f"frames must be uint8 RGB, got {frames.dtype}")
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must have shape (F, H, W, 3), got {frames.shape}")
    return frames


def plot_anchors(frames, reduced: ReducedVideo, path: str | Path, max_frames: int = 16, ncols: int = 4,
                 alpha: float = 0.45, panel_width: float = 3.2, dpi: int = 100) -> AnchorPlot:
    """Draw kept tokens (outlined) and what they absorbed (tinted) over the frames; save a PNG.

    Parameters
    ----------
    frames : numpy.ndarray or torch.Tensor, shape (F, H, W, 3), uint8
        The frames the tokens came from (any size: the token grid is stretched over each frame).
    reduced : ReducedVideo
        A reducer's output for these F frames.
    path : str or pathlib.Path
        PNG file to write (parent folders are created).
    max_frames : int, default 16
        Draw at most this many frames, evenly spaced over the video (first and last included).
    ncols : int, default 4
        Frames per row.
    alpha : float, default 0.45
        Opacity of the tint; the colour of a cell is ``alpha * token colour + (1 - alpha) * pixel``.
    panel_width : float, default 3.2
        Width of one frame in inches.
    dpi : int, default 100
        Resolution; the PNG is ``round(figure inches * dpi)`` pixels.

    Returns
    -------
    AnchorPlot
        The path, the rendered RGBA array, the token colours and where each frame sits.

    Raises
    ------
    TypeError
        If ``frames`` is not uint8 or ``reduced`` is not a ReducedVideo.
    ValueError
        If the number of frames differs from ``reduced.num_frames`` or a parameter is out of range.

    Notes
    -----
    Each frame title gives ``kept/total``: output tokens sitting in that frame
    over the frame's N grid cells, and how many of its cells were absorbed by a
    token of another frame ("merged across frames").
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.collections import PatchCollection
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    from anchor_ot._validation import check_int, check_number

    frames = _as_frames(frames)
    if not isinstance(reduced, ReducedVideo):
        raise TypeError(f"reduced must be a ReducedVideo, got {type(reduced).__name__}")
    F = reduced.num_frames
    if frames.shape[0] != F:
        raise ValueError(f"got {frames.shape[0]} frames but the reduced video has {F}; pass the frames that were encoded")
    max_frames = check_int("max_frames", max_frames, low=1)
    ncols = check_int("ncols", ncols, low=1)
    alpha = check_number("alpha", alpha, low=0.0, high=1.0)
    check_number("panel_width", panel_width, low=0.0, low_open=True)
    dpi = check_int("dpi", dpi, low=10)

    h, w = reduced.grid
    N = h * w
    K = reduced.num_tokens
    assignment = reduced.assignment.detach().cpu().numpy().reshape(F, h, w)
    source = reduced.source_index.detach().cpu().numpy()
    owner_frame = source // N  # frame of each output token
    colors = token_colors(K)
    shown = np.unique(np.linspace(0, F - 1, min(F, max_frames)).round().astype(np.int64))

    H, W = frames.shape[1:3]
    cols = min(ncols, len(shown))
    rows = math.ceil(len(shown) / cols)
    gap, title_in, head_in, foot_in = 0.06, 0.24, 0.36, 0.06  # inches
    panel_h = panel_width * H / W
    fig_w = cols * panel_width + (cols + 1) * gap
    fig_h = head_in + rows * (title_in + panel_h) + foot_in
    fig = Figure(figsize=(fig_w, fig_h), dpi=dpi)
    FigureCanvasAgg(fig)
    fig.suptitle(f"{K} of {F * N} tokens kept ({100 * K / (F * N):.1f}%); outlined = kept, "
                 "tint = colour of the token that absorbed the cell", fontsize=9, y=1 - 0.08 / fig_h, va="top")
    images = []
    for slot in range(len(shown)):
        row, col = divmod(slot, cols)
        bottom = fig_h - head_in - (row + 1) * (title_in + panel_h) + 0.0
        ax = fig.add_axes(((gap + col * (panel_width + gap)) / fig_w, bottom / fig_h,
                           panel_width / fig_w, panel_h / fig_h))
        ax.set_axis_off()
        f = int(shown[slot])
        extent = (0, w, h, 0)  # grid units: cell (r, c) is the unit square at (c, r)
        images.append(ax.imshow(frames[f], extent=extent, interpolation="bilinear"))
        tint = colors[assignment[f]].copy()
        tint[..., 3] = alpha
        ax.imshow(tint, extent=extent, interpolation="nearest")
        kept = np.flatnonzero(owner_frame == f)
        cells = source[kept] - f * N
        ax.add_collection(PatchCollection(
            [Rectangle((c, r), 1, 1) for r, c in zip(cells // w, cells % w)],
            facecolor="none", edgecolor="white", linewidth=1.2))
        ax.set_xlim(0, w)
        ax.set_ylim(h, 0)
        ax.set_aspect((H / h) / (W / w))  # the axes box already has the frame's shape
        foreign = int((owner_frame[assignment[f]] != f).sum())
        ax.set_title(f"frame {f}: kept {len(kept)}/{N}, {foreign} merged across frames", fontsize=8, pad=2)
    fig.canvas.draw()
    image = np.asarray(fig.canvas.buffer_rgba()).copy()
    height = image.shape[0]
    boxes = []
    for im in images:
        b = im.get_window_extent()
        boxes.append((b.x0, height - b.y1, b.x1, height - b.y0))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    return AnchorPlot(path=path, image=image, colors=colors, frames_shown=shown,
                      frame_boxes=np.asarray(boxes, dtype=float).reshape(-1, 4))
