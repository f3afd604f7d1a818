"""PruneVid's pre-LLM stage: temporal windows, static-token averaging, DPC-kNN clustering."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from anchor_ot._validation import check_int, check_number
from anchor_ot.methods import register
from anchor_ot.methods._density import (
    attach_orphans, dpc_knn_scores, pairwise_dist, rank_desc, split_budget,
)
from anchor_ot.methods.base import Reducer, assemble
from anchor_ot.types import ReducedVideo, VideoTokens

__all__ = ["PruneVid", "temporal_windows", "UNCLUSTERED_MAX"]

#: Groups (a window's static tokens, a frame's dynamic tokens) of at most this many tokens
#: are kept whole, not clustered (the authors' ``if feat.shape[1] > 14`` in ``merge_frames_dynamic``).
UNCLUSTERED_MAX = 14


def _contiguous(labels: list[int]) -> list[int]:
    """Make cluster labels contiguous in time (PruneVid's cluster refinement).

    Each label keeps only its longest run (the first on ties); labels whose
    runs all have length 1, and the shorter runs of the others, are released and
    each released stretch joins the neighbouring run that is longer (left on ties).
    """
    n = len(labels)
    runs = []  # (label, start, end)
    s = 0
    for i in range(1, n + 1):
        if i == n or labels[i] != labels[s]:
            runs.append((labels[s], s, i))
            s = i
    best: dict[int, tuple[int, int]] = {}
    for lab, a, b in runs:
        if lab not in best or b - a > best[lab][1] - best[lab][0]:
            best[lab] = (a, b)
    out = [-1] * n
    for lab, (a, b) in best.items():
        if b - a > 1:
            out[a:b] = [lab] * (b - a)
    i = 0
    while i < n:
        if out[i] != -1:
            i += 1
            continue
        j = i
        while j < n and out[j] == -1:
            j += 1
        left_len = right_len = 0
        left = right = None
        if i > 0:
            left = out[i - 1]
            a = i - 1
            while a >= 0 and out[a] == left:
                a -= 1
            left_len = i - 1 - a
        if j < n:
            right = out[j]
            b = j
            while b < n and out[b] == right:
                b += 1
            right_len = b - j
        lab = right if right_len > left_len else left
        if lab is None:
            lab = right if right is not None else 0
        out[i:j] = [lab] * (j - i)
        i = j
    return out


def temporal_windows(frame_means: torch.Tensor, ratio: float = 0.25, k: int = 7) -> list[tuple[int, int]]:
    """PruneVid's temporal windows: DPC-kNN clusters of frame means, made contiguous.

    Parameters
    ----------
    frame_means : torch.Tensor, shape (F, d), float
        Mean token of each frame.
    ratio : float, default 0.25
        Clusters = ``max(1, int(F * ratio))`` (``temporal_segment_ratio``).
    k : int, default 7
        DPC-kNN neighbours (clipped to F).

    Returns
    -------
    list[tuple[int, int]]
        Windows ``(start, end)``, ``end`` exclusive, tiling ``range(F)``.
    """
    Fn = frame_means.shape[0]
    n_clusters = max(1, int(Fn * ratio))
    if Fn == 1 or n_clusters == 1:
        return [(0, Fn)]
    x = frame_means.unsqueeze(0)
    dist = pairwise_dist(x)
    score = dpc_knn_scores(dist, torch.ones(1, Fn, dtype=torch.bool, device=x.device), k)
    centers = rank_desc(score)[0] < n_clusters
    c_idx = centers.nonzero().squeeze(1)
    labels = dist[0][:, c_idx].argmin(-1)
    labels[c_idx] = torch.arange(c_idx.numel(), device=x.device)
    lab = _contiguous(labels.tolist())
    out, s = [], 0
    for i in range(1, Fn + 1):
        if i == Fn or lab[i] != lab[s]:
            out.append((s, i))
            s = i
    return out


@register
@dataclass
class PruneVid(Reducer):
    """PruneVid stage 1 (Huang et al., ACL Findings 2025, arXiv 2412.16117), exact budget.

    1. **Temporal windows** (Sec. 3.2): frame means are clustered with DPC-kNN into
       ``int(F * temporal_segment_ratio)`` clusters, made contiguous in time.
    2. **Static / dynamic split**: in a window of L frames, a grid position is
       *static* when the mean pairwise cosine of its L tokens (over frame pairs
       i != j) exceeds ``tau``; its L tokens are averaged into one token
       (mass L). The other tokens are *dynamic*, frame by frame.
    3. **Spatial clustering** (Sec. 3.3): each window's static tokens, and each
       frame's dynamic tokens, are clustered with DPC-kNN (``k`` neighbours);
       each cluster becomes the mean of the input tokens it covers, placed at its
       centre token's position (a static centre sits on its window's first frame).
       A group of at most 14 tokens is kept as it is, as in the authors' code.

    Parameters
    ----------
    retention : float, default 0.10
        Fraction of tokens kept, in (0, 1].
    tau : float, default 0.8
        Static threshold on the mean same-position cosine, in [-1, 1].
    temporal_segment_ratio : float, default 0.25
        Windows = ``max(1, int(F * ratio))`` clusters of frames, in (0, 1].
    k : int, default 7
        DPC-kNN neighbours (>= 1).

    Notes
    -----
    Out of scope: PruneVid's second stage (question-guided pruning of visual
    tokens inside the LLM, with KV-cache compression) is not part of a pre-LLM
    reducer.

    Exact-budget extension (the official kept count is data-dependent, 23-50%):
    the official code clusters every group (a window's static tokens, a frame's
    dynamic tokens) to ``cluster_ratio = 0.5`` of its size when it has more than 14
    tokens, and keeps a group of 14 or fewer as it is. Here ``K = round(r * F * N)``
    is split over the groups instead. As in the official code, groups of at most
    :data:`UNCLUSTERED_MAX` (14) tokens are kept whole; each larger group gets one
    cluster, and the rest of ``K`` goes to the larger groups in proportion to their
    size minus one, capped by their size (largest-remainder rounding), so the
    ``cluster_ratio`` parameter is replaced by the budget. Only when ``K`` cannot
    hold the small groups whole plus one cluster per larger group
    (``info["small_groups_whole"]`` is then False) are all groups treated alike:
    one cluster per non-empty group first (the largest groups first if ``K`` is
    smaller than the number of groups), the rest in proportion to size minus one. When ``K`` exceeds the
    number of tokens left after static averaging, the least static positions
    (lowest mean cosine first) are turned back into dynamic ones until it fits;
    at retention 1.0 the output equals the input. Groups left without a cluster
    (only when ``K`` is below the number of groups) are dropped: their tokens are
    assigned for bookkeeping to their most similar output token, which is not
    changed (``info["dropped"]``).

    Other deviations: a 1-frame window has no static tokens (the official code
    divides 0 by 0 there); DPC-kNN density ties are broken by index, not by
    random noise (deterministic); the frame-mean clustering uses the same ``k``
    (the official code also uses 7). Static/dynamic tokens are returned in
    temporal-raster order, not grouped per window.
    """

    retention: float = 0.10
    tau: float = 0.8
    temporal_segment_ratio: float = 0.25
    k: int = 7

    name = "prunevid"
    description = "PruneVid stage 1: static tokens averaged over temporal windows, DPC-kNN clustering"
    paper = "arXiv:2412.16117"

    def __post_init__(self) -> None:
        super().__post_init__()
        self.tau = check_number("tau", self.tau, low=-1.0, high=1.0)
        self.temporal_segment_ratio = check_number(
            "temporal_segment_ratio", self.temporal_segment_ratio, low=0.0, high=1.0, low_open=True)
        self.k = check_int("k", self.k, low=1)

    def reduce(self, video: VideoTokens, num_kept: int) -> ReducedVideo:
        t = video.tokens
        x = t if t.dtype in (torch.float32, torch.float64) else t.float()
        Fn, N, D = x.shape
        dev = x.device
        K = num_kept

        windows = temporal_windows(x.mean(1), self.temporal_segment_ratio, self.k)
        W = len(windows)
        win_of = torch.empty(Fn, dtype=torch.long, device=dev)
        starts = torch.tensor([s for s, _ in windows], dtype=torch.long, device=dev)
        L = torch.tensor([e - s for s, e in windows], dtype=torch.long, device=dev)
        for wi, (s, e) in enumerate(windows):
            win_of[s:e] = wi

        # Per position and window, one matmul over frames (no F x N x D temporary):
        # rows 0..W-1 sum the unit-normalized tokens, rows W..2W-1 average the raw ones.
        member = (win_of.unsqueeze(0) == torch.arange(W, device=dev).unsqueeze(1)).to(x.dtype)  # (W, F)
        Lf = L.to(x.dtype).view(W, 1)
        inv = torch.linalg.vector_norm(x, dim=-1).clamp_min(1e-12).reciprocal()              # (F, N)
        wts = torch.cat([member.unsqueeze(0) * inv.T.unsqueeze(1),
                         (member / Lf).unsqueeze(0).expand(N, W, Fn)], 1)                     # (N, 2W, F)
        sums = torch.matmul(wts, x.transpose(0, 1))                                           # (N, 2W, D)
        xs = sums[:, :W]
        x_static = sums[:, W:].transpose(0, 1)                                                # (W, N, D)
        # mean pairwise same-position cosine over i != j: (|sum x_hat|^2 - L) / (L (L - 1))
        pair_sim = ((torch.linalg.vector_norm(xs, dim=-1).square().T - Lf)
                    / (Lf * (Lf - 1)).clamp_min(1))                                           # (W, N)
        static = ((pair_sim > self.tau) & (Lf > 1)).contiguous()           # (W, N)

        # demote the least static positions while the budget exceeds the token count
        n_pre = Fn * N - int((static.sum(1) * (L - 1)).sum())
        if K > n_pre:
            cand = static.reshape(-1).nonzero().squeeze(1)
            order = torch.sort(pair_sim.reshape(-1)[cand], stable=True).indices
            cand = cand[order]
            gain = (L[cand // N] - 1).cumsum(0)
            n_dem = int((gain < K - n_pre).sum()) + 1
            static.view(-1)[cand[:n_dem]] = False
            n_pre += int(gain[n_dem - 1])
        info: dict = {"windows": windows, "num_static_positions": int(static.sum())}

        # groups: W static groups (window-averaged tokens), F dynamic groups
        dyn = ~static[win_of]                                             # (F, N)
        valid = torch.cat([static, dyn], 0)                               # (W + F, N)
        sizes = valid.sum(1).cpu()
        G = W + Fn
        nonempty = sizes > 0
        n_groups = int(nonempty.sum())
        small = nonempty & (sizes <= UNCLUSTERED_MAX)
        large = sizes > UNCLUSTERED_MAX
        need = int(sizes[small].sum()) + int(large.sum())
        info["small_groups_whole"] = K >= need
        if K >= need:      # the authors' rule: groups of <= 14 tokens are not clustered
            counts = torch.where(small, sizes, large.to(torch.long))
            spare = torch.where(large, sizes - 1, torch.zeros_like(sizes))
            counts += split_budget(K - need, spare.double(), spare)
        elif K >= n_groups:
            counts = nonempty.to(torch.long)
            counts += split_budget(K - n_groups, (sizes - 1).clamp_min(0).double(), (sizes - 1).clamp_min(0))
        else:
            counts = (rank_desc(sizes.double()) < K).to(torch.long)
        dist = torch.cat([pairwise_dist(x_static.contiguous()), pairwise_dist(x)], 0)  # (G, N, N)
        score = dpc_knn_scores(dist, valid, self.k)
        center = (rank_desc(score) < counts.to(dev).unsqueeze(1)) & valid
        # nearest centre of each member
        cd = dist.masked_fill(~center.unsqueeze(1), float("inf"))
        near = cd.argmin(-1)                                               # (G, N)
        near = torch.where(center, torch.arange(N, device=dev).expand(G, N), near)
        has = counts.to(dev) > 0
        # output rows: one per centre; source position of a static centre = window start
        gpos = torch.cat([starts, torch.arange(Fn, device=dev)])           # frame of each group
        c_g, c_n = center.nonzero(as_tuple=True)
        src = gpos[c_g] * N + c_n
        row = torch.full((G, N), -1, dtype=torch.long, device=dev)
        row[c_g, c_n] = torch.arange(c_g.numel(), device=dev)
        member_row = torch.gather(row, 1, near)
        member_row = torch.where(has.unsqueeze(1) & valid, member_row, torch.full_like(member_row, -1))
        # input token (f, n) -> static group of its window or its frame's dynamic group
        st_f = static[win_of]
        assignment = torch.where(st_f, member_row[:W][win_of], member_row[W:]).reshape(-1)

        flat = x.reshape(Fn * N, D)
        kept = assignment >= 0
        Kc = c_g.numel()
        target = torch.where(kept, assignment, Kc)          # dropped tokens go to a spare row
        sums = torch.zeros(Kc + 1, D, dtype=x.dtype, device=dev).index_add_(0, target, flat)[:Kc]
        cnt = torch.bincount(target, minlength=Kc + 1)[:Kc].to(x.dtype)
        out = sums / cnt.clamp_min(1).unsqueeze(1)
        info["dropped"] = int((~kept).sum())
        assignment = attach_orphans(flat, assignment, out)
        return assemble(out.to(t.dtype), src, assignment, Fn, video.grid, info)
