"""``dycoke``: DyCoke's pre-LLM temporal token merging (TTM) with an exact budget."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from anchor_ot.methods import register
from anchor_ot.methods._frames import nearest_kept, rows_of_kept, spread_counts, work_dtype
from anchor_ot.methods.base import Reducer, assemble
from anchor_ot.types import ReducedVideo, VideoTokens

__all__ = ["DyCoke", "reference_frames"]

_GROUP = 4


def reference_frames(num_frames: int) -> torch.LongTensor:
    """The frame each frame is compared with in DyCoke's TTM; ``-1`` for reference frames.

    Frames come in groups of 4 ``(s, s+1, s+2, s+3)``: ``s`` is the reference
    (kept whole above the mechanism's floor); ``s+1`` and ``s+2`` are compared with
    ``s``; ``s+3`` with ``s+2``. A trailing partial group follows the same rule
    (so no frame is ever dropped for an odd frame count).

    Returns
    -------
    torch.LongTensor, shape (F,)
    """
    f = torch.arange(num_frames)
    p = f % _GROUP
    ref = torch.where(p == 3, f - 1, f - p)
    return torch.where(p == 0, torch.full_like(f, -1), ref)


def _cos(a: torch.Tensor, b: torch.Tensor, na: torch.Tensor, nb: torch.Tensor) -> torch.Tensor:
    # cosine of same-position tokens of two (n, N, d) frame stacks, given their (n, N) norms
    return torch.linalg.vecdot(a, b) / (na * nb).clamp(min=1e-12)


def _ttm_similarity(x: torch.Tensor, norms: torch.Tensor) -> torch.Tensor:
    # (F, N) cosine of every token with the same position of its comparison frame (0 for
    # reference frames). Strided views of the 3 in-group offsets: no gathered copy of x.
    sim = torch.zeros(norms.shape, dtype=norms.dtype, device=x.device)
    for offset, base in ((1, 0), (2, 0), (3, 2)):
        n = len(range(offset, x.shape[0], _GROUP))
        if n:
            sim[offset::_GROUP] = _cos(x[offset::_GROUP], x[base::_GROUP][:n],
                                       norms[offset::_GROUP], norms[base::_GROUP][:n])
    return sim


@register
@dataclass(repr=False)
class DyCoke(Reducer):
    """DyCoke's temporal token merging (Tao et al., CVPR 2025, arXiv 2411.15024; the "TTM" module).

    In each group of 4 frames the first is the reference; every other frame
    keeps only the tokens *least* similar (cosine) to the same grid position in
    its comparison frame (:func:`reference_frames`; counting from 1 within the
    group: frames 2 and 3 against frame 1, frame 4 against frame 3). Tokens are dropped, not averaged.
    DyCoke's second stage, KV-cache pruning during decoding inside the LLM, is out
    of scope for a pre-LLM token reducer and is not implemented.

    Parameters
    ----------
    retention : float, default 0.1
        Fraction of tokens kept, in (0, 1]. ``K = round(retention * F * N)``.
        The official knob is the pruning rate ``k = 0.7`` (each pruned frame keeps
        ``int(0.3 * N)`` tokens), i.e. retention ~0.47 at F = 32 with this grouping.
    extend : bool, default True
        What to do below the mechanism's floor (see Notes): ``True`` applies the
        documented extension, ``False`` raises ``ValueError`` with the feasible range.

    Notes
    -----
    Precision: similarities are computed in float32 (float64 for float64
    input); output tokens are the input tokens, in their dtype, bit for bit.

    Budget. With ``R = ceil(F / 4)`` reference frames and ``P = F - R`` pruned
    frames, TTM itself reaches ``K >= R * N`` (retention >= R / F, 25% when
    ``4 | F``):

    - ``K >= R * N``: references are kept whole; the ``K - R*N`` remaining tokens
      are split over the pruned frames (``//``, the remainder spread evenly), each
      keeping its least-similar tokens.
    - ``K < R * N`` (extension, ``extend=True``): pruned frames keep nothing, the
      K tokens are split over the reference frames, and reference ``j`` keeps the
      tokens least similar to the same position in reference ``j - 1`` (reference
      0 against reference 1; a lone reference against its frame's mean token): the
      same rule one level up. Dropped tokens of a reference go to the most similar
      kept token of that frame (or of the video if the frame keeps nothing).

    Assignment: a dropped token of a pruned frame goes to the same position of its
    comparison frame, following the chain (frame 4 -> frame 3 -> frame 1 -> its
    kept token), so ``mass`` moves to the token that represents it in the LLM input.

    Deviations from the official code (KD-TAO/DyCoke ``dycole_ttm``):

    - It loops ``range(0, F - 4, 4)`` for the 3rd frame of each group, which skips
      the last whole group (F = 32: frame 30 is never pruned, floor 9/32 = 28%
      instead of the 25% the AOT paper reports for DyCoke); here every group is
      pruned alike.
    - It drops the last frame silently when F is odd; here a trailing partial
      group is handled by the rule above (``F = 1``: the only frame is a reference).
    - Its kept tokens of a pruned frame come out in similarity order; here in raster order.
    - Fixed per-frame count ``int((1 - k) * N)`` replaced by the exact budget split.
    - Ties in similarity go to the lower raster index (stable sort).

    Raises
    ------
    ValueError
        At :meth:`num_kept` when ``extend=False`` and ``K < R * N``.
    TypeError
        At construction when ``extend`` is not a bool.
    """

    extend: bool = True

    name: ClassVar[str] = "dycoke"
    description: ClassVar[str] = "DyCoke TTM: per group of 4 frames keep the tokens least similar to a reference frame"
    paper: ClassVar[str] = "arXiv:2411.15024"

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.extend, bool):
            raise TypeError(f"extend must be True or False, got {type(self.extend).__name__}")

    @staticmethod
    def min_retention(num_frames: int) -> float:
        """Smallest retention TTM reaches without the extension: ``ceil(F / 4) / F``."""
        return -(-num_frames // _GROUP) / num_frames

    def num_kept(self, num_frames: int, grid: tuple[int, int]) -> int:
        """Exact K = round(retention * F * N); see the class notes for the feasible range."""
        k = super().num_kept(num_frames, grid)
        refs = -(-num_frames // _GROUP)
        n = grid[0] * grid[1]
        if not self.extend and k < refs * n:
            raise ValueError(
                f"dycoke without the extension keeps every reference frame whole: with F = {num_frames} "
                f"it needs K >= {refs} x {n} = {refs * n} tokens (retention in "
                f"[{self.min_retention(num_frames):.4g}, 1]), but retention {self.retention} gives K = {k}; "
                "raise the retention or pass extend=True"
            )
        return k

    def reduce(self, video: VideoTokens, num_kept: int) -> ReducedVideo:
        """Keep each pruned frame's least-redundant tokens; see the class notes."""
        x = video.tokens
        Fr, N, d = x.shape
        dev = x.device
        xf = x.to(work_dtype(x.dtype))
        norms = torch.linalg.vector_norm(xf, dim=-1)  # (F, N)
        ref = reference_frames(Fr).to(dev)
        is_ref = ref < 0
        ref_ids = torch.nonzero(is_ref).squeeze(1)
        pruned_ids = torch.nonzero(~is_ref).squeeze(1)
        R, P = len(ref_ids), len(pruned_ids)
        counts = torch.zeros(Fr, dtype=torch.long, device=dev)
        extended = num_kept < R * N
        if not extended:
            counts[ref_ids] = N
            if P:
                counts[pruned_ids] = spread_counts(num_kept - R * N, P, device=dev)
            sim = _ttm_similarity(xf, norms)  # lower = kept first
        else:
            sim = torch.zeros((Fr, N), dtype=xf.dtype, device=dev)
            counts[ref_ids] = spread_counts(num_kept, R, device=dev)
            refs, rnorms = xf[::_GROUP], norms[::_GROUP]  # views
            if R > 1:  # ref j against ref j-1, ref 0 against ref 1
                sim[_GROUP::_GROUP] = _cos(refs[1:], refs[:-1], rnorms[1:], rnorms[:-1])
                sim[0] = _cos(refs[0], refs[1], rnorms[0], rnorms[1])
            else:  # a lone reference against its frame's mean token
                mean = xf[0].mean(0)
                sim[0] = (xf[0] @ mean) / (norms[0] * torch.linalg.vector_norm(mean)).clamp(min=1e-12)
        order = torch.argsort(sim, dim=1, stable=True)
        keep = torch.zeros((Fr, N), dtype=torch.bool, device=dev)
        keep.scatter_(1, order, torch.arange(N, device=dev)[None, :] < counts[:, None])
        # where each token goes: itself if kept; same position of its comparison frame if in a
        # pruned frame; most similar kept token of its frame if in a reference frame (extension)
        pos = torch.arange(N, device=dev)[None, :]
        target = torch.where(is_ref[:, None], torch.arange(Fr, device=dev)[:, None] * N + pos,
                             ref.clamp(min=0)[:, None] * N + pos)
        if extended:
            sub = nearest_kept(xf[::_GROUP], keep[::_GROUP]).view(R, N)  # flat index in the ref-only video
            target[ref_ids] = ref_ids[sub // N] * N + sub % N
        target = target.reshape(-1)
        keep_flat = keep.reshape(-1)
        kept_idx = torch.nonzero(keep_flat).squeeze(1)
        target[kept_idx] = kept_idx
        while True:  # follow chains (at most 3 hops) until every token points at a kept token
            nxt = target[target]
            if torch.equal(nxt, target):
                break
            target = nxt
        assignment = rows_of_kept(keep_flat)[target]
        info = {"reference_frames": R, "min_retention_without_extension": R / Fr, "extended": extended}
        return assemble(x.reshape(Fr * N, d)[kept_idx], kept_idx, assignment, Fr, video.grid, info)
