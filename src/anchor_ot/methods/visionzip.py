"""``visionzip``: dominant tokens by attention plus contextual tokens merged by similarity, per frame."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from anchor_ot._validation import check_choice, check_number
from anchor_ot.methods import register
from anchor_ot.methods._frames import check_per_frame_budget, rows_of_kept, spread_counts, unit_rows, work_dtype
from anchor_ot.methods.base import Reducer, assemble
from anchor_ot.types import ReducedVideo, VideoTokens

__all__ = ["VisionZip"]


@register
@dataclass(repr=False)
class VisionZip(Reducer):
    """VisionZip (Yang et al., CVPR 2025, arXiv 2412.04467), applied frame by frame.

    Each frame keeps its ``dominant`` tokens with the highest attention received
    (the paper's "dominant token selection") and summarises the rest in
    ``contextual`` tokens (its "contextual tokens merging"): every
    ``step``-th remaining token in raster order is a target, ``step =
    max(1, remaining // contextual)``, and each other remaining token joins its
    most similar target.

    Parameters
    ----------
    retention : float, default 0.1
        Fraction of tokens kept, in (0, 1]. ``K = round(retention * F * N)``.
    dominant_fraction : float, default 54/64
        Share of each frame's tokens that are dominant, in [0, 1): frame ``f``
        with budget ``S_f`` keeps ``dominant_f = floor(S_f * dominant_fraction)``
        dominant and ``S_f - dominant_f >= 1`` contextual tokens. The official
        code's LLaVA-OneVision setting is 54 dominant + 10 contextual of 64.
    merge : {"author", "mean"}, default "author"
        Value of a contextual token. ``"author"``: target + mean of the tokens
        assigned to it (what the official code feeds the LLM; the target counts
        twice, so a merged token's norm can reach twice a token's). ``"mean"``:
        the plain mean of the target and its assigned tokens (mass-weighted).

    Notes
    -----
    Precision: similarities and means are computed in float32 (float64 for
    float64 input); output tokens have the input dtype; dominant tokens are
    the input values, bit for bit.

    Budget: ``S_f`` is ``K // F`` plus one for ``K % F`` frames spread evenly over
    the video, so ``sum(S_f) = K`` exactly; dominant/contextual split as above
    (floor on the dominant side, e.g. ``S = 19 -> 16 + 3``, ``S = 1 -> 0 + 1``).
    Exactly ``S_f - dominant_f`` targets exist because ``N - dominant_f >= S_f -
    dominant_f``.

    Scores: ``video.global_scores`` (attention each token receives at a late
    encoder layer, higher = more important). Without them the token's L2 norm is
    used (high-norm tokens are the ones that attract attention in ViTs, Darcet et
    al., arXiv 2309.16588); ``info["scores"]`` records which. Ties go to the lower
    raster index.

    Deviations from the official code (dvlab-research/VisionZip and the LLaVA-OV
    video port described in NOTES):

    - Similarity for merging is the cosine of the tokens themselves; the official
      code uses the key states of the encoder layer, which a token reducer does
      not see.
    - The official video port gives every frame ``S = 200 * r`` tokens (20 at
      10%, i.e. 10.2% of 196); here ``S_f`` splits ``round(r * F * N)`` exactly.
    - The official output per frame is dominant tokens (in score order) then
      contextual tokens; here every output token sits at its own grid position
      (contextual tokens at their target's), in temporal-raster order, as the
      contract requires.
    - The official code also keeps the [CLS] token in images; video frames have none.

    Assignment: dominant tokens and targets stand for themselves; every other
    token is assigned to the target it merged into, so ``mass`` of a contextual
    token is 1 + its merged count.

    Raises
    ------
    ValueError
        At :meth:`num_kept` when ``K < F`` (at least one token per frame; the
        message gives the smallest retention, 1/N); at construction for a
        ``dominant_fraction`` outside [0, 1) or an unknown ``merge``.
    TypeError
        At construction for a non-number ``dominant_fraction``.
    """

    dominant_fraction: float = 54 / 64
    merge: str = "author"

    name: ClassVar[str] = "visionzip"
    description: ClassVar[str] = "per frame: top-attention dominant tokens + contextual tokens merged by similarity"
    paper: ClassVar[str] = "arXiv:2412.04467"

    def __post_init__(self) -> None:
        super().__post_init__()
        self.dominant_fraction = check_number("dominant_fraction", self.dominant_fraction,
                                              low=0.0, high=1.0, high_open=True)
        self.merge = check_choice("merge", self.merge, ("author", "mean"))

    def num_kept(self, num_frames: int, grid: tuple[int, int]) -> int:
        """Exact K = round(retention * F * N); raises ValueError if K < F (see class notes)."""
        k = super().num_kept(num_frames, grid)
        check_per_frame_budget(self.name, k, num_frames, grid)
        return k

    def split(self, num_frames: int, grid: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-frame ``(dominant, contextual)`` counts, each a LongTensor of shape (F,)."""
        budget = spread_counts(self.num_kept(num_frames, grid), num_frames)
        dominant = torch.floor(budget.to(torch.float64) * self.dominant_fraction).long()
        return dominant, budget - dominant

    def reduce(self, video: VideoTokens, num_kept: int) -> ReducedVideo:
        """Select dominant tokens, then merge the rest into contextual tokens; see the class notes."""
        x = video.tokens
        Fr, N, d = x.shape
        dev = x.device
        xf = x.to(work_dtype(x.dtype))
        dominant, contextual = (t.to(dev) for t in self.split(Fr, video.grid))
        if video.global_scores is not None:
            scores, source = video.global_scores.to(xf.dtype), "global_scores"
        else:
            scores, source = torch.linalg.vector_norm(xf, dim=-1), "token_norm (no global_scores given)"
        # dominant: top-dominant_f scores of each frame (stable: ties to the lower index)
        order = torch.argsort(scores, dim=1, descending=True, stable=True)
        ranks = torch.arange(N, device=dev)[None, :]
        is_dom = torch.zeros((Fr, N), dtype=torch.bool, device=dev)
        is_dom.scatter_(1, order, ranks < dominant[:, None])
        # targets: every step-th remaining token in raster order, the first contextual_f of them
        rest = ~is_dom
        rest_rank = torch.cumsum(rest.long(), 1) - 1
        step = torch.clamp((N - dominant) // contextual, min=1)[:, None]
        is_tgt = rest & (rest_rank % step == 0) & (rest_rank // step < contextual[:, None])
        to_merge = rest & ~is_tgt
        # most similar target of every token: one padded bmm (F, N, d) x (F, d, C_max)
        cmax = int(contextual.max())
        tgt_pos = torch.argsort((~is_tgt).to(torch.int8), dim=1, stable=True)[:, :cmax]  # (F, C_max)
        valid = torch.arange(cmax, device=dev)[None, :] < contextual[:, None]
        tgt_vec = unit_rows(torch.gather(xf, 1, tgt_pos[:, :, None].expand(Fr, cmax, d)))
        sim = torch.bmm(xf, tgt_vec.transpose(1, 2))
        sim.masked_fill_(~valid[:, None, :], float("-inf"))
        owner = torch.gather(tgt_pos, 1, sim.argmax(2)) + torch.arange(Fr, device=dev)[:, None] * N  # (F, N) flat
        keep_flat = (is_dom | is_tgt).reshape(-1)
        row = rows_of_kept(keep_flat)
        flat = torch.arange(Fr * N, device=dev)
        merge_flat = to_merge.reshape(-1)
        assignment = row[torch.where(merge_flat, owner.reshape(-1), flat)]
        # merged sums per contextual token (targets numbered 0..C-1 in raster order); tokens not
        # merged go to a scratch row C that is dropped. Only the C contextual rows are touched.
        tgt_flat = is_tgt.reshape(-1)
        n_ctx = int(contextual.sum())
        ctx_id = torch.cumsum(tgt_flat.long(), 0) - 1
        dest = torch.where(merge_flat, ctx_id[owner.reshape(-1)], torch.full_like(flat, n_ctx))
        sums = torch.zeros((n_ctx + 1, d), dtype=xf.dtype, device=dev)
        sums.index_add_(0, dest, xf.reshape(Fr * N, d))
        sums, count = sums[:n_ctx], torch.bincount(dest, minlength=n_ctx + 1)[:n_ctx].to(xf.dtype)[:, None]
        src = torch.nonzero(keep_flat).squeeze(1)
        out = xf.reshape(Fr * N, d)[src]  # dominant tokens and targets, as they are
        tgt_rows = row[tgt_flat]
        if self.merge == "author":
            out[tgt_rows] += sums / count.clamp(min=1.0)
        else:
            out[tgt_rows] = (out[tgt_rows] + sums) / (1.0 + count)
        info = {"scores": source, "dominant": int(dominant.sum()), "contextual": int(contextual.sum()),
                "merge": self.merge}
        return assemble(out.to(x.dtype), src, assignment, Fr, video.grid, info)
