"""``random``: seeded uniform random keep per frame (the AOT paper's Table 8 baseline)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from anchor_ot._validation import check_int
from anchor_ot.methods import register
from anchor_ot.methods._frames import nearest_kept, rows_of_kept, spread_counts, work_dtype
from anchor_ot.methods.base import Reducer, assemble
from anchor_ot.types import ReducedVideo, VideoTokens

__all__ = ["RandomKeep"]


@register
@dataclass(repr=False)
class RandomKeep(Reducer):
    """Keep a seeded, uniformly random subset of each frame's tokens.

    The AOT paper (arXiv 2603.01400, Sec. 9, Table 8) shows that picking the
    token anchors at random inside each frame costs accuracy; this reducer is
    that choice on its own, as a floor for every other method: a pure selection,
    no merging.

    Parameters
    ----------
    retention : float, default 0.1
        Fraction of tokens kept, in (0, 1]. ``K = round(retention * F * N)``.
    seed : int, default 0
        Seed of the ``torch.Generator`` that draws the kept positions; in
        ``[0, 2**63 - 1]``. Same seed and shape -> same positions, whatever the
        token values or device.

    Notes
    -----
    Precision: similarities are computed in float32 (float64 for float64
    input); output tokens are the input tokens, in their dtype, bit for bit.

    Budget: frame ``f`` keeps ``k_f`` tokens, ``K // F`` plus one for ``K % F``
    frames spread evenly over the video (``sum(k_f) = K``); which ``k_f``
    positions is uniform without replacement (ranks of ``torch.rand`` on CPU).
    When ``K < F`` some frames keep nothing.

    Assignment (our addition, the paper has none for a pure selection): each
    dropped token is assigned to the kept token of its own frame with the highest
    cosine similarity (ties: lower raster index), or, in a frame that keeps
    nothing, to the most similar kept token of the video. So ``mass`` counts how
    many tokens each kept token stands for; the kept tokens themselves are the
    input tokens, unchanged.

    Raises
    ------
    TypeError, ValueError
        At construction, for a non-int or out-of-range ``seed``.
    """

    seed: int = 0

    name: ClassVar[str] = "random"
    description: ClassVar[str] = "seeded uniform random keep per frame (AOT Table 8 baseline)"
    paper: ClassVar[str] = "arXiv:2603.01400"

    def __post_init__(self) -> None:
        super().__post_init__()
        self.seed = check_int("seed", self.seed, low=0, high=2**63 - 1)

    def reduce(self, video: VideoTokens, num_kept: int) -> ReducedVideo:
        """Draw the kept positions, then assign every dropped token; see the class notes."""
        x = video.tokens
        Fr, N, d = x.shape
        dev = x.device
        gen = torch.Generator(device="cpu").manual_seed(self.seed)
        order = torch.argsort(torch.rand((Fr, N), generator=gen), dim=1).to(dev)
        counts = spread_counts(num_kept, Fr, device=dev)
        keep = torch.zeros((Fr, N), dtype=torch.bool, device=dev)
        keep.scatter_(1, order, torch.arange(N, device=dev)[None, :] < counts[:, None])
        keep_flat = keep.reshape(-1)
        target = nearest_kept(x.to(work_dtype(x.dtype)), keep)
        src = torch.nonzero(keep_flat).squeeze(1)
        assignment = rows_of_kept(keep_flat)[target]
        return assemble(x.reshape(Fr * N, d)[src], src, assignment, Fr, video.grid, {"seed": self.seed})
