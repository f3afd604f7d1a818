"""FastVID: dynamic temporal segmentation + density-based spatiotemporal pruning."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from anchor_ot._validation import check_int, check_number
from anchor_ot.methods import register
from anchor_ot.methods._density import (
    attach_orphans, dpc_knn_scores, pairwise_dist, rank_desc, split_budget,
)
from anchor_ot.methods._frames import distinctiveness, spread_counts
from anchor_ot.methods.base import Reducer, assemble
from anchor_ot.segment import dynamic_segments
from anchor_ot.types import ReducedVideo, VideoTokens

__all__ = ["FastVID", "anchor_frames"]


def anchor_frames(segments: list[tuple[int, int]], p: int) -> list[int]:
    """Anchor frames of each clip: every ``p``-th frame counted back from the clip's last frame.

    FastVID (arXiv 2503.11187, Sec. 3.3, "DTM"): a clip ``[s, e)`` has anchors
    ``e-1, e-1-p, e-1-2p, ... >= s``, i.e. ``ceil((e - s) / p)`` of them.
    Returned sorted ascending over the whole video.
    """
    out: list[int] = []
    for s, e in segments:
        out.extend(range(s + (e - 1 - s) % p, e, p))
    return out


@register
@dataclass
class FastVID(Reducer):
    """FastVID (Shen et al., NeurIPS 2025, arXiv 2503.11187): DySeg + STPrune.

    1. **DySeg** (Sec. 3.2): clips cut where adjacent frame features have cosine
       below ``tau`` and at the ``c - 1`` lowest transitions
       (:func:`anchor_ot.segment.dynamic_segments`).
    2. **Salient tokens** ("ATS", Sec. 3.3): per frame, the top tokens by
       ``video.global_scores``; kept unchanged.
    3. **Context tokens** ("DTM", Sec. 3.3): in each clip, anchor frames are every
       ``p``-th frame counted from the clip's end; on each anchor frame the
       non-salient tokens with the highest density-peak score (DPC-kNN,
       ``k`` neighbours) become anchors. Every non-salient token of the clip joins
       the anchor of highest cosine similarity, and an anchor with ``n`` members
       becomes ``a * anchor + (1 - a) * mean(members)``, ``a = max(1/(n+1), beta)``.

    Parameters
    ----------
    retention : float, default 0.10
        Fraction of tokens kept, in (0, 1].
    c : int, default 8
        DySeg's minimum number of clips (>= 1).
    tau : float, default 0.9
        DySeg similarity threshold, in [-1, 1].
    d : float, default 0.4
        Share of the budget given to context (density-peak) tokens, in [0, 1].
    p : int, default 4
        Anchor-frame stride within a clip (>= 1).
    beta : float, default 0.6
        Lower bound of an anchor's own weight in its merge, in [0, 1].
    k : int, default 4
        Neighbours of the DPC-kNN density (>= 1).

    Notes
    -----
    Defaults are the official LLaVA-OneVision settings (r=0.10, c=8, tau=0.9,
    d=0.4, p=4, beta=0.6; k=4 from its density function). Deviations, all for an
    exact budget or for inputs the official code does not take:

    - **Exact budget.** ``K = round(r * F * N)`` (the official code keeps
      ``F * int(N * r)`` minus rounding losses). ``K`` is split evenly over the frames
      and the official per-frame rule is applied to each frame's share ``n_f``
      (:meth:`budget_split`): ``n_f - int(n_f * d)`` salient tokens, and a clip's
      ``sum int(n_f * d)`` context tokens shared equally by its anchor frames. When
      ``K = F * int(N * r)`` (e.g. retention ``19 / 196`` on a 14x14 grid) this is the
      official split exactly (19 per frame: 12 salient, 7 context) except that the
      ``total mod anchors`` context tokens the official floor division loses go one
      each to the clip's earliest anchors. Context an anchor frame cannot hold
      (high retention; the official code fails there) becomes salient tokens of the
      same clip. Counts are fixed before any feature is read.
    - **Frame features for DySeg**: the frame's mean token (the official code uses
      SigLIP's attention-pooling head, which the reducer does not see).
    - **Scores**: ``video.global_scores`` (the official code uses the pooling
      head's attention). Without scores the salient tokens are those least
      similar to their frame's mean token (``1 - cos``); ``info["scores"]`` says
      which was used.
    - An anchor always keeps its own position (merging averages the raw tokens and
      assigns by cosine, as the reference code does).
    - DySeg with fewer than ``c`` frames cuts every transition (see
      :func:`~anchor_ot.segment.dynamic_segments`); the official code fails.
    - Tokens of a clip that received no context anchor (only when ``K`` is tiny)
      are dropped: assigned for bookkeeping to their most similar output token,
      without changing it (``info["dropped"]`` counts them).

    All arithmetic is float32 (float64 kept); output tokens are cast back to the
    input dtype.
    """

    retention: float = 0.10
    c: int = 8
    tau: float = 0.9
    d: float = 0.4
    p: int = 4
    beta: float = 0.6
    k: int = 4

    name = "fastvid"
    description = "FastVID: dynamic clips, attention-salient tokens + density-peak anchors merging each clip"
    paper = "arXiv:2503.11187"

    def __post_init__(self) -> None:
        super().__post_init__()
        self.c = check_int("c", self.c, low=1)
        self.tau = check_number("tau", self.tau, low=-1.0, high=1.0)
        self.d = check_number("d", self.d, low=0.0, high=1.0)
        self.p = check_int("p", self.p, low=1)
        self.beta = check_number("beta", self.beta, low=0.0, high=1.0)
        self.k = check_int("k", self.k, low=1)

    def budget_split(self, K: int, num_frames: int, N: int,
                     segments: list[tuple[int, int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Salient and context counts per frame: the authors' rule on each frame's share of K.

        Each frame's share ``n_f`` is ``K`` split evenly (``K // F``, the remainder
        spread over the video). As in the official code, a frame keeps
        ``n_f - int(n_f * d)`` salient tokens, and a clip's context tokens,
        ``sum int(n_f * d)`` over its frames, go to its anchor frames in equal parts.
        The official code gives each anchor ``floor(total / anchors)`` and loses the
        remainder; here the remainder goes one each to the clip's earliest anchors.
        Context an anchor frame cannot hold (more than its non-salient tokens) becomes
        salient tokens of the clip's frames, spread evenly.

        Returns
        -------
        salient, context : torch.LongTensor, shape (F,)
            Counts summing to ``K``; context is zero off the anchor frames.
        """
        share = spread_counts(K, num_frames).tolist()
        ctx_per_frame = [int(n * self.d) for n in share]        # the official int(n_f * d)
        sal = torch.tensor([n - c for n, c in zip(share, ctx_per_frame)], dtype=torch.long)
        ctx = torch.zeros(num_frames, dtype=torch.long)
        for s, e in segments:                                   # per clip, not per token
            anc = torch.tensor(anchor_frames([(s, e)], self.p), dtype=torch.long)
            total = sum(ctx_per_frame[s:e])
            caps = N - sal[anc]
            put = min(total, int(caps.sum()))
            ctx[anc] = split_budget(put, torch.ones(len(anc)), caps)
            if total > put:                                     # overflow -> salient of the clip
                room = N - sal[s:e] - ctx[s:e]
                sal[s:e] += split_budget(total - put, torch.ones(e - s), room)
        return sal, ctx

    def reduce(self, video: VideoTokens, num_kept: int) -> ReducedVideo:
        t = video.tokens
        x = t if t.dtype in (torch.float32, torch.float64) else t.float()
        Fn, N, D = x.shape
        dev = x.device
        K = num_kept
        info: dict = {"frame_features": "mean token per frame"}

        frame_mean = x.mean(1)                                           # (F, D)
        if video.global_scores is not None:
            score = video.global_scores.to(x.dtype)
            info["scores"] = "global_scores"
        else:
            score = distinctiveness(x)                                   # (F, N)
            info["scores"] = "fallback: 1 - cos(token, frame mean token)"

        segments = dynamic_segments(frame_mean, tau=self.tau, c=self.c)
        info["segments"] = segments
        anchors = anchor_frames(segments, self.p)
        sal_f, ctx_f = self.budget_split(K, Fn, N, segments)
        info["num_salient"] = int(sal_f.sum())
        info["num_context"] = int(ctx_f.sum())
        ctx_counts = ctx_f[torch.tensor(anchors, dtype=torch.long)]

        # --- salient tokens: top global score per frame ----------------------------
        salient = rank_desc(score) < sal_f.to(dev).unsqueeze(1)          # (F, N)

        # --- density-peak anchors on anchor frames, among non-salient tokens -------
        anc_idx = torch.tensor(anchors, dtype=torch.long, device=dev)
        xa = x[anc_idx]                                                  # (A, N, D)
        valid = ~salient[anc_idx]
        dpc = dpc_knn_scores(pairwise_dist(xa), valid, self.k)
        ctx_sel = rank_desc(dpc) < ctx_counts.to(dev).unsqueeze(1)       # (A, N)
        ctx_sel &= valid
        ctx_mask = torch.zeros(Fn, N, dtype=torch.bool, device=dev)
        ctx_mask[anc_idx] = ctx_sel

        flat = x.reshape(Fn * N, D)
        keep = salient | ctx_mask
        src = keep.reshape(-1).nonzero().squeeze(1)                     # sorted flat positions
        row = torch.full((Fn * N,), -1, dtype=torch.long, device=dev)
        row[src] = torch.arange(src.numel(), device=dev)
        out = flat[src]
        assignment = row.clone()

        # --- merge each clip's non-salient tokens into its context anchors ---------
        # argmax_a cos(x_m, x_a) = argmax_a x_m . x_a/|x_a|: members need no normalization,
        # and each clip is a contiguous slice of x (no copy of the F x N x D tensor).
        beta = self.beta
        for (s, e) in segments:
            a_pos = ctx_mask[s:e].reshape(-1).nonzero().squeeze(1) + s * N
            if a_pos.numel() == 0:
                continue
            xs = x[s:e].reshape(-1, D)
            xa_pos = flat[a_pos]
            owner = (xs @ F.normalize(xa_pos, dim=-1).T).argmax(-1)          # (L*N,)
            na = a_pos.numel()
            owner[a_pos - s * N] = torch.arange(na, device=dev)               # an anchor joins itself
            owner = owner.masked_fill(salient[s:e].reshape(-1), na)           # salient: not merged
            counts = torch.bincount(owner, minlength=na + 1)[:na].to(x.dtype)
            sums = torch.zeros(na + 1, D, dtype=x.dtype, device=dev).index_add_(0, owner, xs)[:na]
            mean = sums / counts.clamp_min(1).unsqueeze(1)
            alpha = (1.0 / (counts + 1.0)).clamp_min(beta).unsqueeze(1)
            rows = row[a_pos]
            # a * anchor + (1 - a) * mean, written so that a lone anchor stays bit-exact
            out[rows] = xa_pos + (1.0 - alpha) * (mean - xa_pos)
            members = owner < na
            assignment[s * N:e * N][members] = rows[owner[members]]

        dropped = int((assignment < 0).sum())
        info["dropped"] = dropped
        assignment = attach_orphans(flat, assignment, out)
        return assemble(out.to(t.dtype), src, assignment, Fn, video.grid, info)
