r"""AOT: local-global anchors + intra- and inter-frame optimal transport.

Li, Jiang, Zhang, Sebe, "Token Reduction via Local and Global Contexts
Optimization for Efficient Video Large Language Models", arXiv 2603.01400
(Sec. 3.2-3.3, Algorithms 1-2, Sec. 7).

Pipeline, all frames batched:

1. **Anchors per frame** (Sec. 3.2, eq. 6-8): local anchors = top-k of
   ``local_scores`` inside each window of a ``windows`` grid, global anchors =
   top-k of ``global_scores`` among the rest, half/half by default.
2. **Intra-frame OT** (eq. 9-12, Algorithm 1): cost ``1 - cos(anchor, unselected)``,
   uniform marginals, Sinkhorn plan, then each anchor absorbs its context
   (eq. 11): :math:`\tilde x_j = (x_j + \lambda_{intra}\sum_i T_{ij} x_i)/(1 + \lambda_{intra} m_j)`.
3. **Inter-frame OT** (eq. 13-16, Algorithm 2): frames are cut into clips; the
   first frame's anchors are the clip anchors; each token of a later frame gets
   :math:`q_i = \max_j p_{ij}` from the row-normalized plan to the clip anchors
   (eq. 15); low-q (high-change) tokens are kept, the rest are merged into the
   clip anchors with eq. 16.

Deviations from the paper (each deliberate, each an option where it matters):

- **Exact budget.** The paper keeps tokens with ``q < tau`` (a count that varies
  per video). Here the ``K - (clip anchors)`` lowest-q tokens over the whole video
  are kept, so the output has exactly ``num_kept`` tokens (vLLM-style processors
  need the count before the encoder runs).
- **q against the clip's first-frame anchors.** All later frames of all clips are
  scored in ONE batched Sinkhorn against the clip anchors after the intra-frame
  step (``A^(1)``), so the budget can be allotted over the whole video before
  merging; eq. 16 is then applied frame by frame in clip order, as Algorithm 2.
- **Anchors per frame** follow the paper's Sec. 7 schedule for LLaVA-OV (126 / 144
  / 196 / 205 of 729 at 10 / 15 / 20 / 25 %), interpolated linearly in the
  retention ratio through (0, 0) and (1, 1), unless ``anchor_fraction`` is set.
  Where that count cannot meet the budget (too few anchors to reach K, or more
  clip anchors than K), per-frame counts are adjusted as little as needed and
  the change is reported in ``info["anchor_adjustment"]``.
- **Sinkhorn stop rule** is the marginal error (see :mod:`anchor_ot.ot`).
- **Options** (measured in ``docs/benchmarks.md``; NOTES section 9):
  ``aggregation="ot"`` is eq. 11/16 as published; ``"ot-mass"`` scales the intra
  plan so each unselected token carries one unit (row-normalized, as eq. 16 does
  across frames); ``"hard"`` merges each token into the anchor of its plan argmax
  with mass-weighted means; ``"cosine"`` spreads each token over anchors by
  ``relu(cos)`` (the paper's "plain cosine-weighted merge" ablation); ``"none"`` is
  pure selection. ``inter_ranking="cosine"`` ranks by max cosine to the clip
  anchors instead of eq. 15's q.
- **Without scores** (no ``global_scores``/``local_scores``), the attention-free
  fallback score is distinctiveness, ``1 - cos(token, frame mean)``; the report
  says so (``info["scores"]``).

Sinkhorn convergence is reported in ``info`` (``intra_converged``,
``intra_marginal_error``, ``inter_...``) rather than warned, so long runs stay quiet.

Mass and assignment are hard: each input token is assigned to the output token
that takes the largest share of it (plan argmax; nearest anchor by cosine for
``"none"``), even when its features were spread softly.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from anchor_ot._validation import check_choice, check_int, check_number
from anchor_ot.methods import register
from anchor_ot.methods._frames import distinctiveness, spread_counts, work_dtype
from anchor_ot.methods.base import Reducer, assemble, default_budget
from anchor_ot.ot import sinkhorn
from anchor_ot.segment import uniform_segments
from anchor_ot.types import ReducedVideo, VideoTokens

__all__ = ["AOT", "paper_anchor_fraction", "allocate_anchors"]

# AOT Sec. 7 (LLaVA-OV-7B, 32 frames): anchors of 729 per frame at each retention.
_PAPER_SCHEDULE = ((0.0, 0.0), (0.10, 126 / 729), (0.15, 144 / 729), (0.20, 196 / 729), (0.25, 205 / 729), (1.0, 1.0))

AGGREGATIONS = ("ot", "ot-mass", "hard", "cosine", "none")
ANCHOR_MODES = ("local-global", "local", "global", "random")
RANKINGS = ("plan", "cosine")


def paper_anchor_fraction(retention: float) -> float:
    """Anchors per frame as a fraction of N, from the paper's Sec. 7 schedule.

    Piecewise-linear interpolation of (retention, anchors/729) through
    (0, 0), (0.10, 126/729), (0.15, 144/729), (0.20, 196/729), (0.25, 205/729), (1, 1).
    """
    pts = _PAPER_SCHEDULE
    for (r0, f0), (r1, f1) in zip(pts, pts[1:]):
        if retention <= r1:
            return f0 + (f1 - f0) * (retention - r0) / (r1 - r0)
    return 1.0


def allocate_anchors(budget: int, clips: list[tuple[int, int]], tokens_per_frame: int,
                     anchors: int, inter: bool = True) -> tuple[list[int], int, str]:
    """Anchors per frame and the inter-frame keep count that meet ``budget`` exactly.

    Parameters
    ----------
    budget : int
        K, total output tokens, ``len(clips) <= K <= F * N``.
    clips : list of (start, end)
        Frame clips covering ``range(F)`` in order.
    tokens_per_frame : int
        N.
    anchors : int
        Wanted anchors per frame, M in [1, N].
    inter : bool
        Whether inter-frame merging runs. Without it every frame is output whole
        (its anchors), so the anchors per frame split K evenly.

    Returns
    -------
    per_frame : list[int]
        Anchors of each frame (M_f).
    keep_later : int
        D, tokens of non-first clip frames kept as high-change tokens;
        ``sum(M_f over first frames) + D == K``.
    adjustment : str
        "" when every frame got ``anchors``, else what changed and why.
    """
    F = clips[-1][1]
    firsts = [s for s, _ in clips]
    n = len(clips)
    if not inter:
        per_frame = spread_counts(budget, F).tolist()
        note = "" if all(m == anchors for m in per_frame) else (
            f"inter-frame merging off: anchors per frame set to {min(per_frame)}-{max(per_frame)} to meet K={budget}")
        return per_frame, 0, note
    if n * anchors <= budget <= F * anchors:
        return [anchors] * F, budget - n * anchors, ""
    if budget > F * anchors:
        per_frame = spread_counts(budget, F).tolist()
        keep = budget - sum(per_frame[s] for s in firsts)
        return per_frame, keep, (f"{anchors} anchors per frame cannot reach K={budget}: raised to "
                                 f"{min(per_frame)}-{max(per_frame)}, every later-frame anchor kept")
    per_frame = [anchors] * F
    for s, m in zip(firsts, spread_counts(budget, n).tolist()):
        per_frame[s] = m
    return per_frame, 0, (f"{n} clips x {anchors} anchors exceed K={budget}: first-frame anchors lowered to "
                          f"{min(per_frame[s] for s in firsts)}-{max(per_frame[s] for s in firsts)}, later frames fully merged")


def _frames_bmm(A: torch.Tensor, X: torch.Tensor, transpose: bool = False, out: torch.Tensor | None = None,
                alpha: float = 1.0, with_norms: bool = False):
    """``bmm(A, X^T)`` (``transpose``) or ``out += alpha * bmm(A, X)`` in A's dtype, batched over frames.

    X in A's dtype: one batched call (``with_norms``: also return the L2 norm of every token,
    (F, N)). X in a narrower dtype (fp16/bf16 tokens, fp32 work), accumulate form only (``out``
    given; the anchors x tokens product of half tokens is :func:`_anchor_cos`): frames are
    converted a chunk at a time into ONE reused buffer of ~4 MiB per thread (one frame at 1 thread
    here) and multiplied from it while it is still in cache, so no fp32 copy of the video is
    allocated, no fresh pages are touched per chunk, and the tokens are read from memory once per
    product at their own (half) width; each frame's product is the same GEMM as in the one-call form.
    """
    F, N, d = X.shape
    if X.dtype == A.dtype:
        if out is None:
            res = torch.bmm(A, X.transpose(1, 2) if transpose else X)
            return (res, X.norm(dim=-1)) if with_norms else res
        return out.baddbmm_(A, X, alpha=alpha)
    if out is None or transpose or with_norms:
        raise TypeError("_frames_bmm: tokens narrower than A only in the accumulate form (out given); "
                        "use _anchor_cos for the anchors x tokens product")
    step = _chunk_frames(F, N, d)
    buf = torch.empty(min(step, F), N, d, dtype=A.dtype, device=A.device)
    for f in range(0, F, step):  # chunks of frames (blocking), not a loop over tokens
        out[f:f + step].baddbmm_(A[f:f + step], buf[:min(step, F - f)].copy_(X[f:f + step]), alpha=alpha)
    return out


def _chunk_frames(F: int, N: int, d: int) -> int:
    """Frames per chunk of :func:`_anchor_cos` and :func:`_frames_bmm`: ~4 MiB of fp32 per thread."""
    # Measured here (1 thread, F=32, N=196, d=3584, fp16): 14 MiB chunks converted into fresh
    # tensors took ~2.5x as long as 1-frame chunks into one reused buffer (page faults, cache misses).
    return max(1, min(F, (torch.get_num_threads() << 20) // max(1, N * d)))


def _anchor_cos(X: torch.Tensor, anchor_idx: torch.Tensor, work: torch.dtype):
    """Anchors, anchors x tokens products and token norms, frame chunk by frame chunk, in ``work``.

    One pass over the video: each chunk of frames (:func:`_chunk_frames`, ~4 MiB of ``work`` per
    thread) gives its anchors (gathered), its token norms and its anchors x tokens product while it
    is in cache, instead of three passes over the whole video from memory (gather, bmm, norm).
    fp16/bf16 tokens are converted a chunk at a time into ONE reused buffer (the same chunks as
    :func:`_frames_bmm`'s accumulate form; no fp32 copy of the video, and the anchors are gathered
    after the exact conversion, not at half width and converted in a second pass); tokens already
    in ``work`` are used in place. The values are those of the one-call form (gather, one ``bmm``,
    one norm): each frame's product is the same GEMM, each token's norm the same reduction.

    Parameters
    ----------
    X : torch.Tensor, shape (F, N, d)
        Tokens, in ``work`` or a narrower floating dtype.
    anchor_idx : torch.Tensor, shape (F, M), int64
        Token index of every anchor slot in its frame.
    work : torch.dtype
        Working dtype of the results.

    Returns
    -------
    anchors : torch.Tensor, shape (F, M, d), ``work``
        A fresh tensor (safe to update in place).
    products : torch.Tensor, shape (F, M, N), ``work``
        ``bmm(anchors, X^T)``.
    norms : torch.Tensor, shape (F, N), ``work``
        L2 norm of every token.
    """
    F, N, d = X.shape
    M = anchor_idx.shape[1]
    dev = X.device
    step = _chunk_frames(F, N, d)
    convert = X.dtype != work
    buf = torch.empty(min(step, F), N, d, dtype=work, device=dev) if convert else None
    Xa = torch.empty(F, M, d, dtype=work, device=dev)
    out = torch.empty(F, M, N, dtype=work, device=dev)
    norms = torch.empty(F, N, dtype=work, device=dev)
    # row of every anchor inside its chunk (chunks start at multiples of step)
    local = ((torch.arange(F, device=dev) % step)[:, None] * N + anchor_idx).reshape(-1)
    for f in range(0, F, step):  # chunks of frames (blocking), not a loop over tokens
        n = min(step, F - f)
        xc = buf[:n].copy_(X[f:f + n]) if convert else X[f:f + n]
        torch.index_select(xc.reshape(n * N, d), 0, local[f * M:(f + n) * M], out=Xa[f:f + n].view(n * M, d))
        torch.linalg.vector_norm(xc, dim=-1, out=norms[f:f + n])
        torch.bmm(Xa[f:f + n], xc.transpose(1, 2), out=out[f:f + n])
    return Xa, out, norms


def _nearest_anchor(cos: torch.Tensor, valid_a: torch.Tensor, is_anchor: torch.Tensor) -> torch.Tensor:
    """(F, N) most cosine-similar valid anchor slot of every token (first maximum on ties)."""
    cos_u = cos.masked_fill(~valid_a[..., None], -2.0).masked_fill_(is_anchor[:, None, :], -2.0)
    return cos_u.max(1).indices


def _clip_runs(clips: list[tuple[int, int]]) -> list[tuple[int, int, int]]:
    """Maximal runs of consecutive clips of one length >= 2, as (first frame, clips, length).

    Clips of one frame have no later frames and are left out. Uniform clips give at most two
    runs (the last clip may be shorter); dynamic clips give at most one run per clip.
    """
    runs: list[list[int]] = []
    for s, e in clips:
        ln = e - s
        if ln < 2:
            continue
        if runs and runs[-1][2] == ln and runs[-1][0] + runs[-1][1] * ln == s:
            runs[-1][1] += 1
        else:
            runs.append([s, 1, ln])
    return [tuple(r) for r in runs]


@register
@dataclass(repr=False)
class AOT(Reducer):
    """AOT token reduction (arXiv 2603.01400): anchors + intra/inter-frame optimal transport.

    Parameters
    ----------
    retention : float, default 0.1
        Fraction of tokens kept, in (0, 1]. Output size is exactly
        ``max(round(retention * F * N), number of clips)``.
    anchor_fraction : float or None, default None
        Anchors per frame as a fraction of N; None follows the paper's Sec. 7
        schedule (:func:`paper_anchor_fraction`).
    global_share : float, default 0.5
        Share of anchors chosen globally (eq. 7); the rest are local (eq. 8).
        The paper balances them: ``|x_g| = |x_l|``.
    windows : tuple[int, int], default (3, 3)
        Grid of local windows (rows, cols), capped at the token grid. The local
        budget is split evenly over windows (extra ones to the first windows in
        raster order); a window smaller than its share passes the rest to the
        global selection.
    anchors : {"local-global", "local", "global", "random"}, default "local-global"
        Anchor selection (paper Tables 4 and 8 ablations).
    seed : int, default 0
        Seed for ``anchors="random"``.
    intra : bool, default True
        Run the intra-frame OT aggregation (eq. 9-12). Off: unselected tokens are dropped.
    inter : bool, default True
        Run inter-frame OT (eq. 13-16). Off: every frame's anchors are output.
    clip_length : int, default 4
        Frames per clip (uniform clips; the last may be shorter). The paper uses
        4 for 32 frames.
    aggregation : {"ot", "ot-mass", "hard", "cosine", "none"}, default "ot"
        How unselected/stable tokens are merged (see module notes).
    inter_ranking : {"plan", "cosine"}, default "plan"
        Which tokens count as high-change: lowest eq.-15 q, or lowest max cosine
        to the clip anchors.
    eps : float, default 0.1
        Sinkhorn entropic regularization (Sec. 7: 0.1).
    max_iter : int, default 100
        Sinkhorn iteration cap (Sec. 7: 100).
    tol : float, default 1e-3
        Sinkhorn relative marginal L1 tolerance.
    lambda_intra : float, default 1.0
        Weight of the context in eq. 11 (Sec. 7: 1.0).
    lambda_inter : float, default 1.0
        Weight of merged tokens in eq. 16 (Sec. 7: 1.0).

    Raises
    ------
    TypeError, ValueError
        On parameters of the wrong type or out of range.
    """

    anchor_fraction: float | None = None
    global_share: float = 0.5
    windows: tuple[int, int] = (3, 3)
    anchors: str = "local-global"
    seed: int = 0
    intra: bool = True
    inter: bool = True
    clip_length: int = 4
    aggregation: str = "ot"
    inter_ranking: str = "plan"
    eps: float = 0.1
    max_iter: int = 100
    tol: float = 1e-3
    lambda_intra: float = 1.0
    lambda_inter: float = 1.0

    name = "aot"
    description = "AOT: local-global anchors, intra-frame OT aggregation, inter-frame OT clip merging"
    paper = "arXiv:2603.01400"
    #: The paper's ablation rows (Tables 4, 5 and 8), as ``methods.get("aot:<variant>")``.
    variants = {
        "no-merging": {"aggregation": "none"},              # Table 4 "No Merging" (= Table 5 "w/o OT")
        "cosine-merging": {"aggregation": "cosine"},        # Table 4 "Cosine Merging"
        "wo-local-anchors": {"anchors": "global"},          # Table 5 "w/o Local Anchors"
        "wo-global-anchors": {"anchors": "local"},          # Table 5 "w/o Global Anchors"
        "wo-ot": {"aggregation": "none"},                   # Table 5 "w/o OT"
        "ot-wo-intra-frame": {"intra": False},              # Table 5 "OT w/o Intra-frame"
        "ot-wo-inter-frame": {"inter": False},              # Table 5 "OT w/o Inter-frame"
        "random-anchors": {"anchors": "random"},            # Table 8 "w Random Anchors"
        # our options (NOTES section 9), measured in docs/benchmarks.md
        "ot-mass": {"aggregation": "ot-mass"},
        "hard": {"aggregation": "hard"},
        "cosine-ranking": {"inter_ranking": "cosine"},
        "hard-cosine": {"aggregation": "hard", "inter_ranking": "cosine"},
    }

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.anchor_fraction is not None:
            self.anchor_fraction = check_number("anchor_fraction", self.anchor_fraction, low=0.0, high=1.0, low_open=True)
        self.global_share = check_number("global_share", self.global_share, low=0.0, high=1.0)
        if (not isinstance(self.windows, (tuple, list)) or len(self.windows) != 2):
            raise TypeError(f"windows must be a pair of ints (rows, cols), got {self.windows!r}")
        self.windows = (check_int("windows[0]", self.windows[0], low=1), check_int("windows[1]", self.windows[1], low=1))
        self.anchors = check_choice("anchors", self.anchors, ANCHOR_MODES)
        self.seed = check_int("seed", self.seed)
        for flag in ("intra", "inter"):
            if not isinstance(getattr(self, flag), bool):
                raise TypeError(f"{flag} must be True or False, got {getattr(self, flag)!r}")
        self.clip_length = check_int("clip_length", self.clip_length, low=1)
        self.aggregation = check_choice("aggregation", self.aggregation, AGGREGATIONS)
        self.inter_ranking = check_choice("inter_ranking", self.inter_ranking, RANKINGS)
        self.eps = check_number("eps", self.eps, low=0.0, low_open=True)
        self.max_iter = check_int("max_iter", self.max_iter, low=1)
        self.tol = check_number("tol", self.tol, low=0.0, low_open=True)
        self.lambda_intra = check_number("lambda_intra", self.lambda_intra, low=0.0)
        self.lambda_inter = check_number("lambda_inter", self.lambda_inter, low=0.0)

    # -- budget -----------------------------------------------------------------
    def clips_for_shape(self, num_frames: int) -> list[tuple[int, int]]:
        """Clips used for a video of ``num_frames`` frames (uniform, ``clip_length``)."""
        return uniform_segments(num_frames, self.clip_length if self.inter else 1)

    def min_clips(self, num_frames: int) -> int:
        """Fewest tokens any input of this length can be reduced to (one per clip)."""
        return len(self.clips_for_shape(num_frames))

    def num_kept(self, num_frames: int, grid: tuple[int, int]) -> int:
        """``max(round(retention * F * N), clips)``: at least one token per clip."""
        self._check_shape(num_frames, grid)
        return default_budget(self.retention, num_frames, grid, minimum=self.min_clips(num_frames))

    def anchors_per_frame(self, tokens_per_frame: int) -> int:
        """Wanted anchors per frame M (before budget adjustment), in [1, N]."""
        frac = self.anchor_fraction if self.anchor_fraction is not None else paper_anchor_fraction(self.retention)
        return min(tokens_per_frame, max(1, round(frac * tokens_per_frame)))

    def clips_for(self, video: VideoTokens) -> list[tuple[int, int]]:
        """Clips for this video; subclasses (e.g. dynamic segmentation) override."""
        return self.clips_for_shape(video.num_frames)

    # -- reduction --------------------------------------------------------------
    def reduce(self, video: VideoTokens, num_kept: int) -> ReducedVideo:
        X_in = video.tokens
        F, N, d = X_in.shape
        work = work_dtype(X_in.dtype)
        # fp16/bf16 input is not copied whole to fp32 (a fresh F x N x d block, page faults
        # included, cost ~as much as the products): the two products convert it frame chunk by
        # frame chunk (_frames_bmm), the norms upcast element by element
        grad = torch.is_grad_enabled() and X_in.requires_grad
        X = X_in if (X_in.dtype != work and not grad) else X_in.to(work)
        dev = X.device
        clips = self.clips_for(video)
        per_frame, keep_later, note = allocate_anchors(
            num_kept, clips, N, self.anchors_per_frame(N), inter=self.inter)
        M_f = torch.tensor(per_frame, device=dev)
        info: dict = {"clips": len(clips), "clip_bounds": [list(c) for c in clips],
                      "anchors_per_frame": (min(per_frame), max(per_frame)),
                      "high_change_kept": keep_later}
        if note:
            info["anchor_adjustment"] = note

        # 1. anchors ------------------------------------------------------------
        is_anchor, score_note = self._select_anchors(video, M_f, work)
        info["scores"] = score_note
        Mmax = int(max(per_frame))
        # anchors first, then the other tokens, each in raster order: the position of every token in
        # that order comes from running counts (a counting sort; same result as a stable argsort of
        # the anchor flag, without a sort)
        ar = torch.arange(N, device=dev).expand(F, N)
        n_anchors_to = is_anchor.long().cumsum(1)  # anchors at or before each position
        anchor_rank = n_anchors_to - 1  # at an anchor: its rank among its frame's anchors = its slot
        pos = torch.where(is_anchor, anchor_rank, M_f[:, None] + ar - n_anchors_to)
        order = torch.empty_like(pos).scatter_(1, pos, ar)
        anchor_idx = order[:, :Mmax]  # (F, Mmax)
        valid_a = torch.arange(Mmax, device=dev)[None] < M_f[:, None]

        # similarities anchors x all tokens: one bmm (the compute floor)
        flat_anchor = (torch.arange(F, device=dev)[:, None] * N + anchor_idx).reshape(-1)
        # fp16/bf16 tokens: anchors taken from the converted chunks (no half gather + convert pass). fp32
        # tokens at 1 CPU thread: the same chunks, each frame in cache for its gather, norms and product
        # (AVX2 Zen3, F=32, N=196, d=3584: ~7 ms less than three passes over the video); at more
        # threads the one-call form, as chunked products and norms scale worse there
        if X.dtype != work or (not grad and X.device.type == "cpu" and torch.get_num_threads() == 1):
            Xa, cos, norms = _anchor_cos(X, anchor_idx, work)
        else:
            # row copy by index_select on the flat view: faster than 2-D advanced indexing or gather
            Xa = X.reshape(F * N, d).index_select(0, flat_anchor).reshape(F, Mmax, d)
            cos, norms = _frames_bmm(Xa, X, transpose=True, with_norms=True)  # and the token norms (F, N)
        norms = norms.clamp_min(1e-12)
        cos.div_(norms.gather(1, anchor_idx)[..., None] * norms[:, None, :])

        # 2. intra-frame OT (eq. 9-12) -------------------------------------------
        A = Xa  # a fresh tensor (advanced indexing copies), safe to update in place
        if self.intra and min(per_frame) < N:  # some frame has unselected tokens; whole frames inside
            A, A_mass, assign_u, it_info = self._intra(X, Xa, cos, is_anchor, valid_a, M_f, per_frame, work)
            info.update(it_info)
        else:
            assign_u = _nearest_anchor(cos, valid_a, is_anchor)
            # running mass of each anchor (input tokens it stands for)
            A_mass = valid_a.to(work) + torch.zeros(F, Mmax, dtype=work, device=dev).scatter_add_(
                1, assign_u, (~is_anchor).to(work))
        # slot of every input token in its frame's anchor list: anchors own theirs (anchors come first in
        # `order`, in raster order, so an anchor's slot is its rank among its frame's anchors)
        slot = torch.where(is_anchor, anchor_rank, assign_u)

        # 3. inter-frame OT (eq. 13-16) ------------------------------------------
        out_of_slot, keep_slot, A = self._inter(A, A_mass, valid_a, clips, per_frame, keep_later, info, work)

        # 4. output ----------------------------------------------------------------
        flat_slot = (torch.arange(F, device=dev)[:, None] * Mmax + slot).reshape(-1)
        src_all = flat_anchor  # flat input position of every anchor slot
        keep_flat = keep_slot.reshape(-1)
        out_rows = torch.nonzero(keep_flat).squeeze(1)
        row_of_slot = torch.full((F * Mmax,), -1, dtype=torch.long, device=dev)
        row_of_slot[out_rows] = torch.arange(out_rows.numel(), device=dev)
        assignment = row_of_slot[out_of_slot.reshape(-1)][flat_slot]
        tokens = A.reshape(F * Mmax, d).index_select(0, out_rows).to(X_in.dtype)
        # kept slots in slot order are in temporal-raster order (frames in order, a frame's anchors in raster
        # order): assemble need not check or sort
        return assemble(tokens, src_all[out_rows], assignment, F, video.grid, info, ordered=True)

    # -- stages -------------------------------------------------------------------
    def _scores(self, video: VideoTokens, work) -> tuple[torch.Tensor, torch.Tensor, str]:
        if video.global_scores is not None or video.local_scores is not None:
            g = video.global_scores if video.global_scores is not None else video.local_scores
            loc = video.local_scores if video.local_scores is not None else video.global_scores
            note = "given" if (video.global_scores is not None and video.local_scores is not None) else (
                "one score given, used for both local and global anchors")
            return g.to(work), loc.to(work), note
        dist = distinctiveness(video.tokens.to(work))
        return dist, dist, "fallback: no attention scores given; distinctiveness 1 - cos(token, frame mean)"

    def _select_anchors(self, video: VideoTokens, M_f: torch.Tensor, work) -> tuple[torch.Tensor, str]:
        """Boolean (F, N) anchor mask with exactly M_f[f] anchors in frame f (eq. 7-8)."""
        F, N = video.tokens.shape[:2]
        h, w = video.grid
        dev = video.tokens.device
        if self.anchors == "random":
            gen = torch.Generator().manual_seed(self.seed)
            g_score = torch.rand(F, N, generator=gen).to(dev)
            l_score, note = g_score, f"random anchors (seed {self.seed})"
            n_local = torch.zeros_like(M_f)
        else:
            g_score, l_score, note = self._scores(video, work)
            share = {"local-global": self.global_share, "local": 0.0, "global": 1.0}[self.anchors]
            n_local = M_f - torch.round(M_f.to(torch.float64) * share).long()
        is_local = torch.zeros(F, N, dtype=torch.bool, device=dev)
        if bool((n_local > 0).any()):
            wh, ww = min(self.windows[0], h), min(self.windows[1], w)
            rows = torch.arange(h, device=dev) * wh // h
            cols = torch.arange(w, device=dev) * ww // w
            win = (rows[:, None] * ww + cols[None, :]).reshape(N)  # window id of each token
            W = wh * ww
            size = torch.bincount(win, minlength=W)
            # rank of each token inside its window by local score (stable: ties -> raster order)
            by_score = torch.argsort(-l_score, dim=1, stable=True)
            # rank inside the window = earlier tokens (in score order) of the same window: running
            # per-window counts (a counting sort of the window ids; no second sort)
            win_sorted = win[by_score]  # (F, N) window of the k-th best token
            seen = (win_sorted[..., None] == torch.arange(W, device=dev)).cumsum(1)  # (F, N, W)
            rank = torch.empty_like(by_score)
            rank.scatter_(1, by_score, seen.gather(2, win_sorted[..., None]).squeeze(-1) - 1)
            quota = n_local[:, None] // W + (torch.arange(W, device=dev)[None] < (n_local % W)[:, None]).long()
            quota = torch.minimum(quota, size[None])
            is_local = rank < quota.gather(1, win.expand(F, N))
        n_global = M_f - is_local.sum(1)
        g = g_score.masked_fill(is_local, float("-inf"))
        by_g = torch.argsort(-g, dim=1, stable=True)
        g_rank = torch.empty_like(by_g)
        g_rank.scatter_(1, by_g, torch.arange(N, device=dev).expand(F, N))
        return is_local | (g_rank < n_global[:, None]), note

    def _intra(self, X, Xa, cos, is_anchor, valid_a, M_f, per_frame, work):
        F, N, d = X.shape
        U_f = N - M_f
        cost = 1.0 - cos  # (F, Mmax, N); anchor columns get zero marginal
        a_mass = valid_a.to(work)  # one unit of mass per anchor
        unit = (~is_anchor).to(work)  # one unit of mass per unselected token
        a = a_mass / M_f[:, None].to(work)
        b = unit / U_f.clamp_min(1)[:, None].to(work)
        empty = U_f == 0
        any_empty = max(per_frame) == N  # known on the host: no sync
        if any_empty:  # frames kept whole: give them a dummy target, zeroed below
            b = torch.where(empty[:, None], torch.full_like(b, 1.0 / N), b)
        agg = self.aggregation
        info = {}
        rows = None  # the plan's row sums, when P is the plan as sinkhorn returned it
        if agg in ("ot", "ot-mass", "hard"):
            res = sinkhorn(cost, a, b, eps=self.eps, max_iter=self.max_iter, tol=self.tol, warn=False)
            # The plan is exactly 0 in the columns of anchors (zero marginal: K and v vanish there) and in
            # padded rows; only a frame kept whole (its dummy uniform target) needs its plan zeroed.
            T = res.plan.masked_fill(is_anchor[:, None, :], 0.0) if any_empty else res.plan
            info.update(intra_sinkhorn_iters=res.n_iter, intra_marginal_error=float(res.marginal_error.max()),
                        intra_converged=bool(res.converged.all()), intra_method=res.method)
            # anchor that receives most of each token (max over a strided axis: first maximum, as argmax,
            # but a faster kernel here)
            assign = T.max(1).indices
        else:
            T = None
            assign = _nearest_anchor(cos, valid_a, is_anchor)
        # mass: anchors count themselves, plus the unselected tokens assigned to them (integer-valued sums)
        mass = a_mass + torch.zeros_like(a_mass).scatter_add_(1, assign, unit)
        if agg == "none":
            return Xa, mass, assign, info
        if agg == "ot":
            P, lam = T, self.lambda_intra  # eq. 11 as published
            if not any_empty:  # P is sinkhorn's plan: its row sums come with it (the same sum)
                rows = res.row_sums
        elif agg == "ot-mass":
            P, lam = T * U_f.to(work)[:, None, None], self.lambda_intra
        elif agg == "hard":
            P = torch.zeros_like(cos).scatter_(1, assign[:, None, :], unit[:, None, :])  # (F, Mmax, N)
            lam = self.lambda_intra
        else:  # cosine-weighted: each token spreads one unit by relu(cos)
            wgt = cos.clamp_min(0).masked_fill(~valid_a[..., None], 0) * unit[:, None, :]
            P, lam = wgt / wgt.sum(1, keepdim=True).clamp_min(1e-12), self.lambda_intra
        m = P.sum(-1, keepdim=True) if rows is None else rows[..., None]  # eq. 10
        if torch.is_grad_enabled() and (X.requires_grad or P.requires_grad or Xa.requires_grad):
            A = torch.baddbmm(Xa, P, X.to(Xa.dtype), alpha=lam)
        else:
            # in place: Xa is a fresh copy not needed after this step; no new F x M x d block and no
            # copy of Xa into a new result (same arithmetic as the out-of-place form)
            A = _frames_bmm(P, X, out=Xa, alpha=lam)
        return A.div_(1.0 + lam * m), mass, assign, info  # eq. 11

    def _inter(self, A, A_mass, valid_a, clips, per_frame, keep_later, info, work):
        """Clip merging (eq. 13-16). Returns (slot -> owning slot, kept-slot mask, anchors)."""
        A = A.contiguous()  # runs below are views of A
        F, Mmax, d = A.shape
        dev = A.device
        own = torch.arange(F * Mmax, device=dev).reshape(F, Mmax)
        # clip layout from the host-side clip list: no small device ops, no syncs
        later_l = [f for s, e in clips for f in range(s + 1, e)]
        n_cand = sum(per_frame[f] for f in later_l)
        if not later_l or keep_later >= n_cand:
            return own, valid_a.clone(), A
        firsts_l = [s for s, e in clips for _ in range(s + 1, e)]  # first frame of each later frame's clip
        later = torch.tensor(later_l, dtype=torch.long, device=dev)
        first_of_later = torch.tensor(firsts_l, dtype=torch.long, device=dev)
        keep = valid_a.clone()  # first frames keep their anchors; later frames' rows are set below
        va_s, va_a = valid_a[later], valid_a[first_of_later]
        full = min(per_frame) == Mmax  # every anchor slot is a real anchor: the masks below are all True
        norm = A.norm(dim=-1).clamp_min(1e-12)  # (F, Mmax)
        # Runs of consecutive clips of equal length (uniform clips: at most two runs) are strided
        # views of A, (clips, length, Mmax, d): no copy of the later frames or of their clip anchors.
        runs = _clip_runs(clips)
        # cosine to the clip anchors A^(1): per run one bmm of all later frames against the first frames'
        # anchors; the rows come out in the order of `later` (clip-major, then position in clip)
        parts = [torch.bmm(A[s0:s0 + nr * ln].view(nr, ln, Mmax, d)[:, 1:].reshape(nr, (ln - 1) * Mmax, d),
                           A[s0:s0 + nr * ln:ln].transpose(1, 2)).view(nr * (ln - 1), Mmax, Mmax)
                 for s0, nr, ln in runs]
        cos = parts[0] if len(parts) == 1 else torch.cat(parts)  # (L, Ms, Ma)
        cos = cos.div_(norm[later][..., None] * norm[first_of_later][:, None, :])
        if not full:
            cos = cos.masked_fill(~va_a[:, None, :], -2.0)
        if self.inter_ranking == "plan" or self.aggregation in ("ot", "ot-mass", "hard"):
            if full:  # every frame has Mmax anchors: uniform marginals, sinkhorn's default (fl(1 / Mmax), the
                # same values as the quotients below), which it need not check on the device
                a = b = None
            else:
                a = va_s.to(work) / va_s.sum(1, keepdim=True).to(work)
                b = va_a.to(work) / va_a.sum(1, keepdim=True).to(work)
            res = sinkhorn(1.0 - cos, a, b, eps=self.eps, max_iter=self.max_iter, tol=self.tol, warn=False)
            p = res.plan / res.row_sums[..., None].clamp_min(1e-30)  # eq. 15 row-normalized
            info.update(inter_sinkhorn_iters=res.n_iter, inter_marginal_error=float(res.marginal_error.max()),
                        inter_converged=bool(res.converged.all()))
        else:
            p = None
        change = p.amax(-1) if self.inter_ranking == "plan" else cos.amax(-1)  # q_i (eq. 15) or max cos
        if not full:
            change = change.masked_fill(~va_s, float("inf"))
        # keep the keep_later lowest over the whole video (stable: ties -> earlier frame, raster)
        flat = torch.argsort(change.reshape(-1), stable=True)[:keep_later]
        kept_later = torch.zeros(later.numel() * Mmax, dtype=torch.bool, device=dev)
        kept_later[flat] = True
        kept_later = kept_later.reshape(later.numel(), Mmax)
        keep[later] = kept_later
        stable = ~kept_later if full else va_s & ~kept_later  # tokens merged into the clip anchors
        # anchor each stable token joins: plan argmax, or nearest by cosine for cosine/none merging
        target = (cos if p is None or self.aggregation in ("cosine", "none") else p).argmax(-1)
        owner = own.clone()
        owner[later] = torch.where(stable, own[first_of_later].gather(1, target), own[later])

        agg = self.aggregation
        if agg != "none":
            if agg in ("ot", "ot-mass"):
                Wt, base = p, None  # eq. 16
            elif agg == "hard":
                Wt = torch.zeros_like(cos).scatter_(2, target[..., None], 1.0) * A_mass[later][..., None]
                base = A_mass
            else:
                Wt = cos.clamp_min(0)
                Wt, base = Wt / Wt.sum(-1, keepdim=True).clamp_min(1e-12), None
            Wt = Wt * stable[..., None].to(work)
            lam = self.lambda_inter
            grad = A.requires_grad  # autograd saved views of A: write the merged anchors out of place
            new_rows: list[tuple[int, int, torch.Tensor]] = []
            weight = base.clone() if base is not None else torch.ones(F, Mmax, dtype=work, device=dev)
            wsum_all = Wt.sum(1)  # (L, Ma)
            row = 0  # first row of the run in `later` order
            for s0, nr, ln in runs:  # a handful of runs
                # Algorithm 2 merges the later frames into the clip anchors one by one, in clip order:
                # A <- g_l A + h_l c_l with c_l = Wt_l^T S_l, g_l = w/(w + lam s_l), h_l = lam/(w + lam s_l)
                # (w grows by lam s_l for "hard", stays 1 otherwise). Unrolled, the result is
                # A_0 prod(g) + sum_l h_l prod_{k>l}(g_k) c_l: the coefficients are (clips, Ma) vectors,
                # so the whole sequence is ONE bmm of coefficient-scaled plans against the run's later
                # frames (a view of A), equal to the step-by-step form up to float summation order.
                view = A[s0:s0 + nr * ln].view(nr, ln, Mmax, d)
                w_run = Wt[row:row + nr * (ln - 1)].view(nr, ln - 1, Mmax, Mmax)
                s_run = wsum_all[row:row + nr * (ln - 1)].view(nr, ln - 1, Mmax)
                wgt = weight[s0:s0 + nr * ln].view(nr, ln, Mmax)
                wa = wgt[:, 0].clone()  # (nr, Ma)
                g, h = [], []
                for ell in range(ln - 1):
                    denom = wa + lam * s_run[:, ell]
                    g.append(wa / denom)
                    h.append(lam / denom)
                    if base is not None:
                        wa = denom
                if base is not None:
                    wgt[:, 0] = wa
                after = torch.ones_like(wa)  # prod_{k>l} g_k, built from the last step backwards
                coef = [None] * (ln - 1)
                for ell in range(ln - 2, -1, -1):
                    coef[ell] = h[ell] * after
                    after = after * g[ell]
                coef = torch.stack(coef, 1)  # (nr, ln-1, Ma)
                w_comb = (w_run * coef[:, :, None, :]).reshape(nr, (ln - 1) * Mmax, Mmax)
                merged = torch.bmm(w_comb.transpose(1, 2), view[:, 1:].reshape(nr, (ln - 1) * Mmax, d))
                if grad:
                    new_rows.append((s0, ln, view[:, 0] * after[..., None] + merged))
                else:
                    view[:, 0].mul_(after[..., None]).add_(merged)
                row += nr * (ln - 1)
            if new_rows:
                idx = torch.cat([torch.arange(s0, s0 + r.shape[0] * ln, ln, device=dev) for s0, ln, r in new_rows])
                A = A.index_copy(0, idx, torch.cat([r for _, _, r in new_rows]))
        return owner, keep, A
