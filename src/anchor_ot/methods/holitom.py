"""``holitom``: HoliTom's outer-LLM stage (temporal windows by DP, static merging, attention top-k)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch

from anchor_ot._validation import check_int, check_number
from anchor_ot.methods import register
from anchor_ot.methods._density import attach_orphans, dpc_knn_scores, pairwise_dist, rank_desc
from anchor_ot.methods._frames import consecutive_cosine, distinctiveness, unit_rows, work_dtype
from anchor_ot.methods.base import Reducer, assemble
from anchor_ot.types import ReducedVideo, VideoTokens

__all__ = ["HoliTom", "static_runs", "window_gains", "select_windows", "official_counts", "fit_counts"]

_GOLDEN = 0.6180339887498949


def static_runs(similar: torch.Tensor) -> torch.Tensor:
    """How many consecutive frame transitions each position stays similar, from each frame on.

    Parameters
    ----------
    similar : torch.BoolTensor, shape (F - 1, N)
        ``similar[f, n]``: the token at position n of frame f and of frame f + 1 have
        cosine above ``tau``.

    Returns
    -------
    torch.LongTensor, shape (F, N)
        ``run[s, n]`` = largest L with ``similar[s:s+L, n]`` all true, so the
        position is static in the window of frames ``s..e`` iff ``run[s, n] >= e - s``
        (HoliTom's "every consecutive cosine in the window exceeds tau"). A reverse
        running minimum of the next dissimilar transition; no loop.
    """
    T1, N = similar.shape
    Fr = T1 + 1
    f = torch.arange(T1, device=similar.device).unsqueeze(1).expand(T1, N)
    nxt = torch.where(similar, torch.full_like(f, T1), f)          # next break at or after f
    nxt = torch.flip(torch.cummin(torch.flip(nxt, [0]), 0).values, [0])
    run = torch.zeros(Fr, N, dtype=torch.long, device=similar.device)
    run[:T1] = nxt - f
    return run


def window_gains(run: torch.Tensor) -> torch.Tensor:
    """Tokens saved by making frames ``s..e`` one window: ``(e - s) * #static positions``.

    Parameters
    ----------
    run : torch.LongTensor, shape (F, N)
        From :func:`static_runs`.

    Returns
    -------
    torch.LongTensor, shape (F, F)
        ``gain[s, e]`` for ``e >= s`` (0 on and below the diagonal): averaging the
        window's static positions over its ``e - s + 1`` frames saves ``e - s`` tokens
        each (HoliTom's ``pruned_static_count``).
    """
    Fr, N = run.shape
    dev = run.device
    hist = torch.zeros(Fr, Fr + 1, dtype=torch.long, device=dev)
    hist.scatter_add_(1, run, torch.ones_like(run))
    at_least = torch.flip(torch.cumsum(torch.flip(hist, [1]), 1), [1])[:, :Fr]   # (F, L): #{n: run >= L}
    length = torch.arange(Fr, device=dev)
    span = length.view(1, Fr) - length.view(Fr, 1)                   # e - s
    ok = span > 0
    gathered = torch.gather(at_least, 1, span.clamp(0, Fr - 1))
    return torch.where(ok, span * gathered, torch.zeros_like(span))


def select_windows(gain: torch.Tensor, max_window: int = 1024) -> tuple[list[tuple[int, int]], int]:
    """HoliTom's dynamic programme: the segmentation into windows that saves the most tokens.

    ``dp[i] = max(dp[i-1], max_{2 <= L <= min(i+1, max_window)} dp[i-L] + gain[i-L+1, i])``
    with ``dp[-1] = 0``; on ties the earlier candidate wins (a lone frame first, then
    the shortest window), as in the authors' loop.

    Parameters
    ----------
    gain : torch.LongTensor, shape (F, F)
        From :func:`window_gains`.
    max_window : int, default 1024
        Longest window, in frames.

    Returns
    -------
    windows : list[tuple[int, int]]
        ``(start, end)``, ``end`` exclusive, tiling ``range(F)`` in order.
    saved : int
        ``dp[F-1]``, the tokens saved by static averaging.

    Notes
    -----
    Sequential over frames by nature (each ``dp[i]`` needs the earlier ones);
    O(F * min(F, max_window)) integer steps on a small Python table.
    """
    g = gain.tolist()
    Fr = len(g)
    dp = [0] * Fr
    prev = [0] * Fr
    for i in range(Fr):
        best = dp[i - 1] if i > 0 else 0
        start = i
        for L in range(2, min(i + 1, max_window) + 1):
            j = i - L
            val = (dp[j] if j >= 0 else 0) + g[j + 1][i]
            if val > best:
                best, start = val, j + 1
        dp[i], prev[i] = best, start
    windows = []
    i = Fr - 1
    while i >= 0:
        windows.append((prev[i], i + 1))
        i = prev[i] - 1
    return windows[::-1], (dp[-1] if Fr else 0)


def official_counts(sizes: torch.Tensor, is_static: torch.Tensor, ratio: float) -> torch.Tensor:
    """HoliTom's per-group kept counts: ``round(n r')`` for static groups, ``ceil(n r')`` for frames.

    Python float arithmetic, as in the authors' code (``round`` half to even;
    ``ceil`` of the float product, so ``ceil(20 * 0.15) = 4``).
    """
    out = [round(n * ratio) if s else math.ceil(n * ratio) for n, s in zip(sizes.tolist(), is_static.tolist())]
    return torch.tensor(out, dtype=torch.long)


def fit_counts(counts: torch.Tensor, ideal: torch.Tensor, caps: torch.Tensor, total: int) -> torch.Tensor:
    """Move integer counts by one at a time until they sum to ``total``.

    Too many: take one from the groups that rounding favoured most
    (``counts - ideal`` largest); too few: give one to those it short-changed most
    (``ideal - counts`` largest, below their cap). Equal keys are ordered by a
    golden-ratio sequence of the group index, which spreads the changes over the
    video instead of piling them on its start. Each group moves by at most one per
    round; rounds repeat only when there are fewer eligible groups than the gap.

    Parameters
    ----------
    counts, caps : torch.LongTensor, shape (G,)
    ideal : torch.Tensor, shape (G,), float64
    total : int
        ``0 <= total <= caps.sum()``.
    """
    counts = counts.clone()
    G = counts.numel()
    spread = torch.remainder((torch.arange(G, dtype=torch.float64) + 1) * _GOLDEN, 1.0)
    tie = torch.argsort(spread, stable=True)
    while (gap := total - int(counts.sum())) != 0:
        if gap < 0:
            eligible, key = counts > 0, counts - ideal
        else:
            eligible, key = counts < caps, ideal - counts
        key = torch.where(eligible, key, torch.full_like(key, -math.inf))
        order = tie[torch.argsort(key[tie], descending=True, stable=True)]
        n = min(abs(gap), int(eligible.sum()))
        if n == 0:
            raise ValueError(f"cannot fit counts to {total}: the groups hold {int(caps.sum())} in all")
        counts[order[:n]] += 1 if gap > 0 else -1
    return counts


@register
@dataclass(repr=False)
class HoliTom(Reducer):
    """HoliTom's outer-LLM stage (Shao et al., arXiv 2505.21334), after the authors' code.

    1. **Temporal windows** (:func:`select_windows`): a position is static in a window
       of frames ``s..e`` when every consecutive same-position cosine there exceeds
       ``tau``; a dynamic programme over all segmentations picks the windows that
       save the most tokens (averaging a static position over an L-frame window
       saves L - 1 tokens).
    2. **Retention rescaled**: with ``S`` tokens saved of ``T = F * N``, the rest is
       reduced at ``r' = min(r * T / (T - S), 1)``.
    3. **Static tokens**: each window's static positions are averaged over the
       window, then clustered with DPC-kNN (``min(k, clusters)`` neighbours) into
       ``round(n r')`` clusters; every other static token joins the nearest centre
       (Euclidean), and a centre with members becomes
       ``beta * centre + (1 - beta) * mean(members)``.
    4. **Dynamic tokens**: each frame keeps its ``ceil(n r')`` dynamic tokens of
       highest attention score, unchanged; the others are dropped.

    Parameters
    ----------
    retention : float, default 0.1
        Fraction of tokens kept, in (0, 1]. ``K = round(retention * F * N)``.
    tau : float or None, default None
        Static threshold on the consecutive cosine, in [-1, 1]. ``None``: the
        authors' scripts, 0.65 at retention <= 0.10 and 0.80 above.
    beta : float or None, default 0.6
        Weight of a cluster centre in its merge, in [0, 1]. ``None``: the plain mean
        of centre and members (the authors' ``NO_BETA=1`` switch).
    k : int, default 7
        DPC-kNN neighbours (>= 1), used as ``min(k, clusters)``.
    max_window : int, default 1024
        Longest window in frames (>= 1; 1 disables static merging).

    Notes
    -----
    Defaults: the authors' LLaVA-OneVision settings (cokeshao/HoliTom,
    ``holitom/llava_arch.py`` and ``scripts/eval_ov-7b_holitom.sh``: RETAIN_RATIO,
    T = 0.65 / 0.80, BETA = 0.6, K = 7, MAX_WINDOW_SIZE = 1024, D = 0).

    Out of scope: the in-LLM merge (HoliTom's "M", inner-LLM token merging in the
    Qwen2 decoder) is not a pre-LLM reduction. The ``D > 0`` option (a share of
    each frame's budget to density-merged context tokens) is not offered: with D = 0,
    the default, the code keeps attention top-k only, and D > 0 fails as released.

    Deviations, each for the exact budget or for inputs the code does not see:

    - **Exact budget.** The authors' count, ``sum round(n_w r') + sum ceil(n_f r')``,
      depends on the data. Here ``K = round(r F N)`` is fixed up front; the authors'
      per-group counts are computed first and then moved by one token at a time
      until they sum to K (:func:`fit_counts`: the groups that rounding favoured
      most lose one first). ``info["official_counts"]`` keeps the authors' total (after any
      demotion, below).
    - **Budget above what static averaging leaves** (``K > T - S``; the code then
      keeps every remaining token, ``r' = 1``, and returns fewer than K): the least
      static positions (lowest minimum consecutive cosine in their window) are
      turned back into per-frame dynamic tokens until ``K`` fits
      (``info["demoted"]``). At retention 1.0 the output equals the input.
    - **Scores**: ``video.global_scores`` (the authors use the attention each
      token receives at SigLIP's last kept layer, mean over heads and queries,
      pooled to the 14x14 grid). Without scores, the least typical tokens of their
      frame (``1 - cos`` to the frame mean) stand in; ``info["scores"]`` says which.
    - Deterministic: DPC-kNN density ties go to the lower index (the code adds
      random noise); top-k ties go to the lower index.
    - Dropped dynamic tokens (and static tokens of a window that keeps no static
      cluster) are assigned, for ``mass`` only, to the most cosine-similar output
      token of their frame (its kept tokens and its window's static clusters);
      outputs are not changed by this.
    - A static cluster sits at its centre's position in the window's first frame
      (where the authors' grid-newline layout puts it); outputs are in
      temporal-raster order, not grouped per window.

    All arithmetic is float32 (float64 kept); output tokens are cast back to the
    input dtype (kept dynamic tokens are the input rows, bit for bit).
    """

    tau: float | None = None
    beta: float | None = 0.6
    k: int = 7
    max_window: int = 1024

    name: ClassVar[str] = "holitom"
    description: ClassVar[str] = ("HoliTom outer-LLM stage: DP temporal windows, static tokens averaged and "
                                  "density-clustered, attention top-k per frame")
    paper: ClassVar[str] = "arXiv:2505.21334"
    variants: ClassVar[dict[str, dict]] = {"no-beta": {"beta": None}}

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.tau is not None:
            self.tau = check_number("tau", self.tau, low=-1.0, high=1.0)
        if self.beta is not None:
            self.beta = check_number("beta", self.beta, low=0.0, high=1.0)
        self.k = check_int("k", self.k, low=1)
        self.max_window = check_int("max_window", self.max_window, low=1)

    @property
    def threshold(self) -> float:
        """The static threshold in use (``tau``, or the scripts' choice by retention)."""
        if self.tau is not None:
            return self.tau
        return 0.65 if self.retention <= 0.10 else 0.80

    def reduce(self, video: VideoTokens, num_kept: int) -> ReducedVideo:
        """Windows, static averaging and clustering, attention top-k; see the class notes."""
        t = video.tokens
        x = t.to(work_dtype(t.dtype))
        Fr, N, D = x.shape
        dev = x.device
        T = Fr * N
        K = num_kept
        info: dict = {"tau": self.threshold}

        # --- 1. windows --------------------------------------------------------------
        sim = consecutive_cosine(x.detach())                                   # (F-1, N)
        run = static_runs(sim > self.threshold)
        windows, saved = select_windows(window_gains(run), self.max_window)
        W = len(windows)
        starts = torch.tensor([s for s, _ in windows], dtype=torch.long, device=dev)
        L = torch.tensor([e - s for s, e in windows], dtype=torch.long, device=dev)
        win_of = torch.repeat_interleave(torch.arange(W, device=dev), L)       # (F,)
        static = (run[starts] >= (L - 1).unsqueeze(1)) & (L > 1).unsqueeze(1)  # (W, N)
        info.update(windows=windows, saved_by_dp=int(saved))

        # --- budget above what averaging leaves: demote the least static positions ----
        left = T - int(((L - 1).unsqueeze(1) * static).sum())
        demoted = 0
        if K > left:
            min_cos = torch.full((W, N), math.inf, dtype=x.dtype, device=dev)
            for wi, (s, e) in enumerate(windows):                              # per window, not per token
                if e - s > 1:
                    min_cos[wi] = sim[s:e - 1].min(0).values
            cand = static.reshape(-1).nonzero().squeeze(1)
            cand = cand[torch.argsort(min_cos.reshape(-1)[cand], stable=True)]
            gain = (L[cand // N] - 1).cumsum(0)
            demoted = int((gain < K - left).sum()) + 1
            static.view(-1)[cand[:demoted]] = False
            left += int(gain[demoted - 1])
        info["demoted"] = demoted
        saved = T - left
        ratio = min(self.retention / ((T - saved) / T), 1.0)                 # the authors' expression
        info["retention_after_static"] = ratio

        # --- 2. counts: W static groups, then F dynamic groups -------------------------
        n_static = static.sum(1)
        sizes = torch.cat([n_static, N - n_static[win_of]]).cpu()
        is_static = torch.cat([torch.ones(W, dtype=torch.bool), torch.zeros(Fr, dtype=torch.bool)])
        official = official_counts(sizes, is_static, ratio)
        info["official_counts"] = int(official.sum())
        counts = fit_counts(official.clamp(max=sizes), sizes.double() * ratio, sizes, K)
        c_static, c_dyn = counts[:W].to(dev), counts[W:].to(dev)

        # --- 3. static tokens: window means, DPC-kNN centres, beta merge ---------------
        flat = x.reshape(T, D)
        out_parts, src_parts = [], []
        assignment = torch.full((T,), -1, dtype=torch.long, device=dev)
        pos = torch.arange(N, device=dev).expand(W, N)
        center = torch.zeros(W, N, dtype=torch.bool, device=dev)
        near = pos.clone()                                                      # nearest centre
        sel = (c_static > 0).nonzero().squeeze(1)                               # windows with clusters
        local = torch.full((W,), -1, dtype=torch.long, device=dev)
        local[sel] = torch.arange(sel.numel(), device=dev)
        if sel.numel():
            # window means only where clusters are kept (no W x N x d buffer for the rest)
            Ws = sel.numel()
            slot_of = torch.where(local[win_of] >= 0, local[win_of], torch.full_like(win_of, Ws))  # spare slot
            win_mean = torch.zeros(Ws + 1, N, D, dtype=x.dtype, device=dev).index_add(0, slot_of, x)[:Ws]
            win_mean = win_mean / L[sel].to(x.dtype).view(-1, 1, 1)              # (W', N, d)
            dist = pairwise_dist(win_mean.detach())                            # (W', N, N)
            kw = torch.minimum(torch.full_like(c_static[sel], self.k), c_static[sel])
            score = dpc_knn_scores(dist, static[sel], kw)
            cen = (rank_desc(score) < c_static[sel].unsqueeze(1)) & static[sel]
            nr = dist.masked_fill(~cen.unsqueeze(1), math.inf).argmin(-1)
            center[sel] = cen
            near[sel] = torch.where(cen, pos[sel], nr)
        member = static & (c_static > 0).unsqueeze(1)                          # (W, N) merged positions
        c_w, c_n = center.nonzero(as_tuple=True)
        Ks = c_w.numel()
        slot = torch.full((W, N), -1, dtype=torch.long, device=dev)
        slot[c_w, c_n] = torch.arange(Ks, device=dev)
        owner = torch.where(member, torch.gather(slot, 1, near), torch.full_like(slot, -1))   # (W, N)
        if Ks:
            m_w, m_n = (member & ~center).nonzero(as_tuple=True)
            o = owner[m_w, m_n]
            cnt = torch.bincount(o, minlength=Ks).to(x.dtype)
            msum = torch.zeros(Ks, D, dtype=x.dtype, device=dev).index_add(0, o, win_mean[local[m_w], m_n])
            cvec = win_mean[local[c_w], c_n]
            if self.beta is None:      # plain mean of centre and members
                merged = (cvec + msum) / (cnt + 1).unsqueeze(1)
            else:
                mean = msum / cnt.clamp_min(1).unsqueeze(1)
                merged = torch.where((cnt > 0).unsqueeze(1), self.beta * cvec + (1 - self.beta) * mean, cvec)
            out_parts.append(merged.to(t.dtype))
            src_parts.append(starts[c_w] * N + c_n)

        # --- 4. dynamic tokens: attention top-k per frame ------------------------------
        if video.global_scores is not None:
            s = video.global_scores.to(dev, x.dtype)
            info["scores"] = "global_scores"
        else:
            s = distinctiveness(x.detach())
            info["scores"] = "fallback: 1 - cos(token, frame mean token)"
        dyn = ~static[win_of]                                                   # (F, N)
        s = s.masked_fill(~dyn, -math.inf)
        keep = (rank_desc(s) < c_dyn.unsqueeze(1)) & dyn
        d_src = keep.reshape(-1).nonzero().squeeze(1)
        out_parts.insert(0, t.reshape(T, D)[d_src])
        src_parts.insert(0, d_src)
        Kd = d_src.numel()
        assignment[d_src] = torch.arange(Kd, device=dev)
        st_owner = owner[win_of]                                                # (F, N)
        st_flat = torch.where(st_owner >= 0, st_owner + Kd, torch.full_like(st_owner, -1)).reshape(-1)
        assignment = torch.where(st_flat >= 0, st_flat, assignment)

        out = torch.cat(out_parts, 0)
        src = torch.cat(src_parts, 0)
        # --- bookkeeping: dropped tokens to the nearest output of their frame -------------
        orphan = assignment < 0
        info["dropped"] = int(orphan.sum())
        if bool(orphan.any()):
            frame_of_row = torch.cat([d_src // N, starts[c_w]])
            cand = torch.cat([(frame_of_row[:Kd].unsqueeze(0) == torch.arange(Fr, device=dev).unsqueeze(1)),
                              (win_of.unsqueeze(1) == c_w.unsqueeze(0))], 1)   # (F, K): rows serving frame f
            assignment = _nearest_candidate(x.detach(), out.detach().to(x.dtype), cand, assignment)
            assignment = attach_orphans(flat.detach(), assignment, out.detach().to(x.dtype))
        return assemble(out, src, assignment, Fr, video.grid, info)


def _nearest_candidate(x: torch.Tensor, out: torch.Tensor, cand: torch.Tensor, assignment: torch.Tensor) -> torch.Tensor:
    # every unassigned token -> most cosine-similar output row among its frame's candidates.
    # Two equivalent layouts, the cheaper one is used: one padded bmm of all tokens (F, N, d)
    # by each frame's candidates (F, d, c_max); or the unassigned tokens alone against all
    # outputs (O, d) x (d, K), masked to their frame's candidates.
    Fr, N, D = x.shape
    counts = cand.sum(1)
    cmax = int(counts.max()) if Fr else 0
    if cmax == 0:
        return assignment
    orphan = (assignment < 0).nonzero().squeeze(1)
    unit = unit_rows(out)
    if orphan.numel() * out.shape[0] < Fr * N * cmax:
        sim = x.reshape(Fr * N, D)[orphan] @ unit.T                                 # (O, K)
        ok = cand[orphan // N]
        sim = sim.masked_fill_(~ok, -math.inf)
        best = sim.argmax(1)
        take = ok.any(1)
        assignment = assignment.clone()
        assignment[orphan[take]] = best[take]
        return assignment
    order = torch.argsort((~cand).to(torch.int8), dim=1, stable=True)[:, :cmax]    # (F, c_max)
    valid = torch.arange(cmax, device=x.device).unsqueeze(0) < counts.unsqueeze(1)
    vecs = unit[order]                                                             # (F, c_max, d)
    sim = torch.bmm(x, vecs.transpose(1, 2)).masked_fill_(~valid.unsqueeze(1), -math.inf)
    best = torch.gather(order, 1, sim.argmax(2)).reshape(-1)
    has = (counts > 0).unsqueeze(1).expand(Fr, N).reshape(-1)
    take = (assignment < 0) & has
    return torch.where(take, best, assignment)
