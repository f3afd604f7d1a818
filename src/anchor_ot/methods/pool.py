"""``pool``: uniform spatial average pooling per frame to the exact budget."""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import ClassVar

import torch

from anchor_ot.methods import register
from anchor_ot.methods._frames import spread_counts, work_dtype
from anchor_ot.methods.base import Reducer, assemble
from anchor_ot.types import ReducedVideo, VideoTokens

__all__ = ["Pool", "grid_partition"]


def _apportion(k: int, cells: list[int], cap: int) -> list[int]:
    # largest-remainder split of k regions over bands in proportion to their cells,
    # each band getting between 1 and cap regions (feasible: len(cells) <= k <= cap * len(cells))
    total = sum(cells)
    quota = [k * c / total for c in cells]
    out = [min(cap, max(1, int(q))) for q in quota]
    while sum(out) < k:
        b = max((i for i in range(len(out)) if out[i] < cap), key=lambda i: (quota[i] - out[i], -i))
        out[b] += 1
    while sum(out) > k:
        b = min((i for i in range(len(out)) if out[i] > 1), key=lambda i: (quota[i] - out[i], i))
        out[b] -= 1
    return out


@lru_cache(maxsize=256)
def _partition(h: int, w: int, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    # number of row bands: feasible a in [ceil(k / w), min(h, k)] (every band then holds
    # at most w regions, one column strip each), closest to the square-region ideal.
    lo, hi = -(-k // w), min(h, k)
    ideal = math.sqrt(k * h / w)
    a = min(range(lo, hi + 1), key=lambda c: (abs(c - ideal), c))
    rows = torch.arange(h)
    cols = torch.arange(w)
    band = rows * a // h  # (h,) band of each row, bands of near-equal height
    heights = torch.bincount(band, minlength=a).tolist()
    per_band = torch.tensor(_apportion(k, [hb * w for hb in heights], w))  # (a,) regions per band
    offset = torch.cumsum(per_band, 0) - per_band
    c = per_band[band]  # (h,)
    labels = (offset[band][:, None] + cols[None, :] * c[:, None] // w).reshape(-1)  # (N,)
    # each region is a rectangle: its centre cell is the floor-midpoint of its extent
    r_idx = rows[:, None].expand(h, w).reshape(-1)
    c_idx = cols[None, :].expand(h, w).reshape(-1)
    big = h + w
    rmin = torch.full((k,), big).scatter_reduce(0, labels, r_idx, "amin")
    rmax = torch.full((k,), -1).scatter_reduce(0, labels, r_idx, "amax")
    cmin = torch.full((k,), big).scatter_reduce(0, labels, c_idx, "amin")
    cmax = torch.full((k,), -1).scatter_reduce(0, labels, c_idx, "amax")
    centre = ((rmin + rmax) // 2) * w + (cmin + cmax) // 2
    return labels, centre


def grid_partition(grid: tuple[int, int], k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Balanced partition of an ``h x w`` token grid into ``k`` rectangles.

    The rows are split into ``a`` bands of near-equal height and band ``b`` into
    ``c_b`` column strips of near-equal width; ``c_b`` is proportional to the
    band's cell count (largest-remainder rounding, ``1 <= c_b <= w``,
    ``sum(c_b) = k``; equal remainders favour the upper band). ``a`` is the feasible
    value (``ceil(k / w) <= a <= min(h, k)``) closest to ``sqrt(k * h / w)``, the
    count that makes regions nearest to square (a tie goes to the smaller count).
    The partition is a pure function of ``(h, w, k)`` and is cached.

    Parameters
    ----------
    grid : tuple[int, int]
        ``(h, w)``.
    k : int
        Number of regions, ``1 <= k <= h * w``.

    Returns
    -------
    labels : torch.LongTensor, shape (h * w,)
        Region of each raster position, regions numbered band by band, left to right.
    centre : torch.LongTensor, shape (k,)
        Raster position of each region's centre cell (the cell nearest the
        rectangle's centre; ties to the upper-left). Every region contains its centre.

    Raises
    ------
    ValueError
        If ``k`` is outside ``[1, h * w]``.
    """
    h, w = grid
    if not 1 <= k <= h * w:
        raise ValueError(f"k must be in [1, {h * w}] for a {h}x{w} grid, got {k}")
    return _partition(int(h), int(w), int(k))


@register
@dataclass(repr=False)
class Pool(Reducer):
    """Uniform spatial average pooling of each frame to the exact budget.

    The LLaVA family shrinks each frame's token grid by fixed average/bilinear
    pooling (LLaVA-OneVision, arXiv 2408.03326: each video frame's 27x27 grid
    -> 14x14 by bilinear interpolation; LLaVA-Video's original inference:
    average pooling to 13x13). This reducer is the budget-exact version of that
    baseline: every frame is pooled the same way, independent of content.

    Parameters
    ----------
    retention : float, default 0.1
        Fraction of tokens kept, in (0, 1]. ``K = round(retention * F * N)``.

    Notes
    -----
    Precision: means are computed in float32 (float64 for float64 input);
    output tokens have the input dtype.

    Budget: frame ``f`` gets ``k_f`` tokens, ``K // F`` plus one for ``K % F``
    frames spread evenly over the video, so ``sum(k_f) = K`` exactly. The frame's
    ``h x w`` grid is cut into ``k_f`` near-equal rectangles (:func:`grid_partition`:
    row bands, then column strips), and each output token is the mean of its
    rectangle's tokens, placed at the rectangle's centre cell (``source_index``)
    and standing for every token of the rectangle (``assignment``; ``mass`` =
    rectangle size).

    Deviations from the models' native pooling: LLaVA pools to a fixed output
    grid, which reaches only a few retentions (about 1/4, 1/9, ...) and keeps a
    2-D grid; here any budget is reached, and when ``k_f`` is not a product of
    two grid divisors the regions are not one regular lattice (bands may hold
    one region more than others; sizes within a factor of about 3). Bilinear
    interpolation is replaced by box means. Where the budget is a lattice of
    equal blocks (e.g. 49 per 14x14 frame) the result equals ``avg_pool2d``
    (tested).

    Below one token per frame (``K < F``, retention < 1/N), the frames are cut
    into K runs of consecutive frames (sizes differing by at most one) and each
    run is pooled whole into one token at the centre cell of its middle frame: a
    documented extension (spatio-temporal pooling) so that every budget is reached.

    Cost: one ``index_add_`` over the F*N*d tokens; the partition of each
    distinct ``(h, w, k_f)`` (at most two per call) is built once and cached.
    """

    name: ClassVar[str] = "pool"
    description: ClassVar[str] = "uniform spatial average pooling of each frame to the budget (LLaVA-style)"
    paper: ClassVar[str] = "arXiv:2408.03326"

    def reduce(self, video: VideoTokens, num_kept: int) -> ReducedVideo:
        """Pool each frame to its share of ``num_kept`` tokens; see the class notes."""
        x = video.tokens
        Fr, N, d = x.shape
        dev = x.device
        if num_kept < Fr:
            return self._pool_frame_groups(video, num_kept)
        counts = spread_counts(num_kept, Fr, device=dev)  # (F,)
        offsets = torch.cumsum(counts, 0) - counts
        labels = torch.empty((Fr, N), dtype=torch.long, device=dev)
        src = torch.empty(num_kept, dtype=torch.long, device=dev)
        for k in torch.unique(counts).tolist():  # at most two distinct k_f
            lab, centre = grid_partition(video.grid, int(k))
            frames = torch.nonzero(counts == k).squeeze(1)
            labels[frames] = lab.to(dev)
            rows = offsets[frames][:, None] + torch.arange(k, device=dev)[None, :]
            src[rows.reshape(-1)] = (frames[:, None] * N + centre.to(dev)[None, :]).reshape(-1)
        out_row = (labels + offsets[:, None]).reshape(-1)  # (F*N,) output row of each token
        info = {"regions_per_frame": (int(counts.min()), int(counts.max()))}
        return assemble(_region_means(x, out_row, num_kept), src, out_row, Fr, video.grid, info)

    @staticmethod
    def _pool_frame_groups(video: VideoTokens, num_kept: int) -> ReducedVideo:
        # K < F: K runs of consecutive frames, each pooled whole into one token placed at the
        # centre cell of the run's middle frame
        x = video.tokens
        Fr, N, _ = x.shape
        dev = x.device
        sizes = spread_counts(Fr, num_kept, device=dev)  # frames per run, >= 1
        run = torch.repeat_interleave(torch.arange(num_kept, device=dev), sizes)  # (F,)
        out_row = run.repeat_interleave(N)
        middle = torch.cumsum(sizes, 0) - sizes + (sizes - 1) // 2
        src = middle * N + int(grid_partition(video.grid, 1)[1])
        info = {"regions_per_frame": (0, 1), "frames_per_token": (int(sizes.min()), int(sizes.max()))}
        return assemble(_region_means(x, out_row, num_kept), src, out_row, Fr, video.grid, info)


def _region_means(x: torch.Tensor, out_row: torch.Tensor, k: int) -> torch.Tensor:
    # (k, d) mean of the tokens of each output row, computed in the work dtype, returned in x's
    wd = work_dtype(x.dtype)
    sums = torch.zeros((k, x.shape[-1]), dtype=wd, device=x.device)
    sums.index_add_(0, out_row, x.reshape(-1, x.shape[-1]).to(wd))
    size = torch.bincount(out_row, minlength=k).to(wd)
    return (sums / size[:, None]).to(x.dtype)
