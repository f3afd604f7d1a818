r"""``aot+``: AOT's anchors-plus-transport idea, with choices that cover the tokens.

Our method, built on AOT (arXiv 2603.01400) and chosen by a measured sweep
(``benchmarks/flagship_sweep.py``, ``docs/aot.md`` "aot+"). ``aot`` stays the
paper's method; this one keeps its structure (anchors per clip, tokens assigned
to anchors by a transport plan, merged into them) and changes the published
choices that lose on real tokens (NOTES section 9, issue 11). Defaults first,
the options the sweep compared in brackets:

1. **Clips** (AOT Sec. 3.3): uniform clips of ``round(0.4 / retention)`` frames
   [``clip_length``; FastVID's dynamic segmentation ``clips="dynamic"``].
2. **Static tokens merged over time first** is off [``static_tau``: as PruneVid
   arXiv 2412.16117 and HoliTom arXiv 2505.21334, a grid position whose consecutive
   same-position cosines in a clip all exceed ``static_tau`` becomes ONE point of
   mass L, the mean of its L tokens; ``static_span="run"``: runs of frames across
   clips instead (:func:`static_runs`); ``static_cos="sketch"``: the test on the
   sketch; ``static_place``: the point in the clip's first frame or in frame n mod L;
   ``mass_weight``: mass-weighted k-center. Off because every variant puts
   ``temporal`` below random's on the 13 tuning clips (``docs/aot.md``, "Static tokens")].
3. **Budget**: ``K`` split exactly over clips by their points (= tokens without
   static merging), then over the frames of a clip [``budget="tokens"``].
4. **Anchors for coverage**: farthest-point (k-center) selection in cosine
   distance, in rounds of one pick per frame (``init="kcenter-frame"``,
   :func:`kcenter_rounds`) [sequential k-center over the clip ``"kcenter"``,
   optionally weighted by attention ``score_weight``; ``"grid"``; AOT's attention
   top-k ``"attention"``; ``"random"``].
5. **Spatio-temporal cost** ``1 - cos + frame_penalty * |frame difference|``
   (``frame_penalty=0.01``, ``penalty_shape="linear"``) in the selection and the
   assignment [``penalty_shape="step"``: ``* [frames differ]``, the default before
   the held-out check: a far frame of the clip then costs no more than the next
   one, so a few frames' anchors absorb the background of the whole clip and
   between-frames are located at those frames (``docs/aot.md``, "Temporal on
   held-out clips"); ``cut_tau``: also cut uniform clips at scene cuts].
6. **Two alternations of assignment and barycentre** (``iters=2``; 5 gain ~1 sd
   at ~0.35x the compute floor more, ``docs/aot.md`` "Sketch"): every point
   goes to its cheapest anchor (``assign="nearest"``: the eps -> 0 limit of the
   transport plan with the anchors' own masses as marginal, where the nearest
   assignment is the exact plan), then every anchor moves to the mass-weighted mean
   of its points [``assign="ot"``: argmax of a Sinkhorn plan with the anchors'
   masses (``anchor_marginal="mass"``) or uniform ones (AOT's eq. 9) as marginal].
7. **Hard, mass-weighted aggregation**: each output token is the plain mean of
   the input tokens it stands for (``mass`` = how many), as NOTES 9 found for
   ``aot:hard`` [``output="medoid"``: the member nearest the mean, unchanged].
8. **Placement**: an output token sits at the member nearest its mean among the
   members of its anchor's home frame (the frame of its initial anchor), so every
   frame keeps the share of tokens step 3 gave it [``placement="medoid"``: the
   member nearest the mean in any frame].

Sketch (issue 12, ``sketch_dim=96``): steps 4-6 (anchors, assignments, placement)
run on a 96-dimensional PCA projection of the tokens (:func:`sketch_basis`, one
(F N, d) x (d, 96) product), and only the output means touch full d (one sparse
product, :func:`token_means`); tokens of width <= 96 are used as they are.
Similarity products run in bfloat16 where it is fast (``sim_dtype="auto"``: GPUs and CPUs
with bf16 GEMM kernels; float32 on other CPUs; with a sketch also the projection and the
sample's Gram matrix); means, medoids and output tokens in the working dtype (float32, or
float64 for float64 input).

Exact budget: ``num_kept = max(round(retention * F * N), clips)`` (``F`` clips in
the worst case for dynamic segmentation), stated from the shape alone. Every
anchor keeps at least one member (its current medoid is pinned to it), so no
cluster empties and the output always has exactly ``num_kept`` tokens.

No Python loop runs over tokens: the steps are batched over clips (padded to
the longest clip). Loops run over k-center rounds (frames of a clip plus the
largest per-frame count, one batched product each), over ``iters``, over clips
for the integer budget split, over Sinkhorn iterations (``assign="ot"``), on
CPU over blocks of ~512 tokens of the bf16 sketch projection (~256 of the fp32 projection of
fp16/bf16 tokens; :func:`project`), and over
blocks of ~16 MiB (``BLOCK_BYTES``: clips, frames or points) in the steps that touch every
token at full width (static means, unit points, token-to-anchor cosines), so that no
(F, N, d)-sized temporary is held beside the input (issue 12: peak extra memory at F = 256
~1x the input in full d, ~0.35x with the sketch). fp16/bf16 input on the CPU sketch path is
never copied whole to float32: the projection with the token norms, the PCA sample, the
static steps and the output means convert blocks of frames (into one reused buffer where the
step is hot), with the bits of a whole conversion first.
"""

from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass

import torch

from anchor_ot._validation import check_choice, check_int, check_number
from anchor_ot.methods import register
from anchor_ot.methods._density import split_budget
from anchor_ot.methods._frames import distinctiveness, unit_rows, work_dtype
from anchor_ot.methods.base import Reducer, assemble, default_budget
from anchor_ot.ot import sinkhorn
from anchor_ot.segment import dynamic_segments, transition_similarity, uniform_segments
from anchor_ot.types import ReducedVideo, VideoTokens

__all__ = ["AOTPlus", "kcenter_anchors", "kcenter_rounds", "static_positions", "static_runs", "adjacent_cosines",
           "group_budget", "sketch_basis",
           "project", "token_means", "lowp_matmul", "lowp_operand", "native_bf16_matmul"]

CLIP_MODES = ("uniform", "dynamic")
CLIP_RULES = ("round", "divisor")
BUDGETS = ("points", "tokens")
GROUPS = ("clip", "frame")
INITS = ("kcenter", "kcenter-frame", "grid", "attention", "random")
ASSIGNS = ("nearest", "ot")
MARGINALS = ("mass", "uniform")
OUTPUTS = ("mean", "medoid")
SKETCHES = ("pca", "random")


@functools.lru_cache(maxsize=None)
def native_bf16_matmul() -> bool:
    """Whether torch runs bfloat16 matrix products on this CPU with fast (oneDNN) kernels.

    torch routes CPU bf16 GEMMs to oneDNN only where oneDNN has bf16 kernels (x86 with AVX-512
    BW/VL/DQ, which includes AVX512-BF16 and AMX; Arm with BF16), the test torch itself makes
    (``torch.ops.mkldnn._is_mkldnn_bf16_supported``); elsewhere (x86 with AVX2 only: AMD Zen 1-3,
    Intel client CPUs) it falls back to a generic loop that was measured 20-40x slower than the
    fp32 GEMM of the same shape here (AMD EPYC Zen 3, torch 2.13: a (196, 3584) x (3584, 96)
    batch of 2 took 146 ms in bf16, 6 ms in fp32). False when the check is unavailable.
    Cached: the answer is fixed for the process.
    """
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # torch built without oneDNN, or the private op gone
        return False


def _emulated(t: torch.Tensor) -> bool:
    """Whether :func:`lowp_matmul` takes products of ``t`` as fp32 GEMMs rounded to bf16."""
    return t.dtype == torch.bfloat16 and t.device.type == "cpu" and not native_bf16_matmul()


def lowp_operand(t: torch.Tensor) -> torch.Tensor:
    """``t`` as :func:`lowp_matmul` multiplies it: its exact float32 values where bf16 products are
    emulated (same layout), else ``t`` itself.

    For an operand reused by many products (a basis over blocks, the points over k-center rounds):
    converted once instead of once per product. Shape unchanged; dtype float32 or ``t``'s.
    """
    return t.float() if _emulated(t) else t


def lowp_matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``torch.matmul(a, b)`` of low-precision operands, fast on every CPU.

    Parameters
    ----------
    a, b : torch.Tensor
        Operands in one dtype, shapes as :func:`torch.matmul` takes them (here (B, n, k) x
        (B, k, m) or (n, k) x (k, m)); ``b`` may be given as :func:`lowp_operand` made it.

    Returns
    -------
    torch.Tensor
        ``a @ b`` in the operands' dtype.

    Notes
    -----
    bfloat16 operands on a CPU without fast bf16 kernels (:func:`native_bf16_matmul` False):
    the product is taken in float32 from the operands' exact float32 values and rounded to
    bfloat16 once, i.e. the rounding model of a bf16 GEMM (bf16 operands, fp32 accumulation,
    bf16 result) at the fp32 GEMM's speed. It can differ from torch's generic bf16 loop on the
    same machine in the last bf16 bit of a few entries (its fp32 sums run in another order:
    15 of 37,632 entries of a (196, 3584) x (3584, 96) batch here), as two machines' bf16 GEMMs
    differ anyway. Every other case (fp32/fp64/fp16 operands, GPUs, CPUs with bf16 kernels) is
    one plain ``torch.matmul``.
    """
    if _emulated(a):
        return torch.matmul(a.float(), b.float()).to(torch.bfloat16)
    return torch.matmul(a, b)


def static_positions(x: torch.Tensor, clip_of: torch.Tensor, num_clips: int, tau: float) -> torch.Tensor:
    """Grid positions that stay put through each clip.

    Parameters
    ----------
    x : torch.Tensor, shape (F, N, d), float16, bfloat16, float32 or float64
        Tokens; fp16/bf16 converted to float32 a block of frames at a time.
    clip_of : torch.LongTensor, shape (F,)
        Clip index of every frame (non-decreasing, clips contiguous).
    num_clips : int
        C.
    tau : float
        Threshold on the cosine of the same position in consecutive frames.

    Returns
    -------
    torch.BoolTensor, shape (C, N)
        True where every consecutive same-position cosine inside the clip exceeds
        ``tau`` (HoliTom's rule, arXiv 2505.21334; PruneVid uses the mean pairwise
        cosine instead). A one-frame clip has no static position.
    """
    F, N, _ = x.shape
    dev = x.device
    if F < 2:
        return torch.zeros(num_clips, N, dtype=torch.bool, device=dev)
    work = work_dtype(x.dtype)
    adj = torch.empty(F - 1, N, dtype=work, device=dev)  # (F - 1, N)
    for b in _blocks(F - 1, N * x.shape[-1] * adj.element_size()):  # blocks of frames: no (F, N, d) temporary
        u = unit_rows(x[b.start:b.stop + 1].to(work))
        adj[b] = (u[1:] * u[:-1]).sum(-1)
    inside = clip_of[1:] == clip_of[:-1]
    adj = adj.masked_fill(~inside[:, None], float("inf"))
    low = torch.full((num_clips, N), float("inf"), dtype=adj.dtype, device=dev)
    low.scatter_reduce_(0, clip_of[:-1, None].expand(F - 1, N), adj, reduce="amin", include_self=True)
    return torch.isfinite(low) & (low > tau)


def adjacent_cosines(x: torch.Tensor) -> torch.Tensor:
    """Cosine of every token with the token at the same grid position in the next frame.

    Parameters
    ----------
    x : torch.Tensor, shape (F, N, d), float16, bfloat16, float32 or float64
        Tokens (need not be unit norm); fp16/bf16 converted a block of frames at a time.

    Returns
    -------
    torch.Tensor, shape (F - 1, N), working dtype of ``x``
        ``cos(x[f, n], x[f + 1, n])``. Built block by block of frames (no (F, N, d) temporary).
    """
    F, N, d = x.shape
    work = work_dtype(x.dtype)
    adj = torch.empty(max(F - 1, 0), N, dtype=work, device=x.device)
    for b in _blocks(F - 1, N * d * adj.element_size()):  # blocks of frames, not tokens
        u = unit_rows(x[b.start:b.stop + 1].to(work))
        adj[b] = (u[1:] * u[:-1]).sum(-1)
    return adj


def static_runs(adj: torch.Tensor, tau: float, window: int | None = None,
                min_points: int = 0) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Runs of consecutive frames in which a grid position stays put, each to become ONE point.

    A token continues the run of the token at its position in the previous frame when their
    cosine exceeds ``tau`` and the two frames lie in the same window of ``W`` frames (windows
    start at multiples of ``W``). Unlike :func:`static_positions` (a position is static through a
    whole clip or not at all; HoliTom's rule, arXiv 2505.21334), a run may start and end anywhere,
    so a background that a person crosses stays merged before and after the crossing, and a run
    may span several of :class:`AOTPlus`'s clips (our choice; PruneVid, arXiv 2412.16117, and
    HoliTom merge a position over a whole temporal window).

    Parameters
    ----------
    adj : torch.Tensor, shape (F - 1, N)
        Same-position cosines of consecutive frames (:func:`adjacent_cosines`).
    tau : float
        Threshold.
    window : int or None, default None
        Longest run W, in frames (None: the whole video, W = F).
    min_points : int, default 0
        Points (= runs) wanted at least, e.g. the budget K: while merging would leave fewer,
        W is halved (ceil), down to W = 1 (no merge).

    Returns
    -------
    rep : torch.LongTensor, shape (F, N)
        Flat index ``f0 * N + n`` of the first token of every token's run (its own index
        when it starts a run).
    length : torch.LongTensor, shape (F, N)
        At a run's first token, the run's length (its mass); 0 elsewhere.
    W : int
        The window used.
    """
    F = adj.shape[0] + 1
    N = adj.shape[1]
    dev = adj.device
    link = adj > tau  # (F - 1, N): frame f + 1 continues frame f's run
    f1 = torch.arange(1, F, device=dev)
    ws = [min(F, window or F)]
    while ws[-1] > 1:
        ws.append((ws[-1] + 1) // 2)
    wt = torch.tensor(ws, device=dev)
    cut = (f1[None, :] % wt[:, None]) == 0  # (M, F - 1): frame f starts a new window
    points = (F * N - (link[None] & ~cut[..., None]).sum((1, 2))).tolist()  # one host sync
    pick = next((i for i, n in enumerate(points) if n >= min_points), len(ws) - 1)
    W = ws[pick]
    start = torch.ones(F, N, dtype=torch.bool, device=dev)
    start[1:] = ~(link & ~cut[pick][:, None])
    fr = torch.arange(F, device=dev)[:, None].expand(F, N)
    first = torch.where(start, fr, torch.zeros_like(fr)).cummax(0).values  # frame of each run's first token
    rep = first * N + torch.arange(N, device=dev)
    length = torch.bincount(rep.reshape(-1), minlength=F * N).view(F, N)
    return rep, length, W


def group_budget(total: int, weights: torch.Tensor, caps: torch.Tensor) -> torch.Tensor:
    """Split ``total`` over groups: one per non-empty group first, the rest in proportion to ``weights``.

    Parameters
    ----------
    total : int
        K, with ``(caps > 0).sum() <= K <= caps.sum()``.
    weights : torch.Tensor, shape (G,)
        Non-negative weights (points or tokens of each group).
    caps : torch.LongTensor, shape (G,)
        Points of each group (at most that many anchors; 0 = empty group).

    Returns
    -------
    torch.LongTensor, shape (G,)
        Counts in ``[1, caps]`` for non-empty groups and 0 for empty ones, summing
        to ``total`` (largest remainders, :func:`anchor_ot.methods._density.split_budget`).
    """
    caps = caps.to(torch.long).cpu()
    base = (caps > 0).to(torch.long)
    w = weights.detach().cpu().to(torch.float64) * base
    return base + split_budget(total - int(base.sum()), w, caps - base)


#: Tokens sampled (evenly spaced, deterministic) for the ``sketch="pca"`` basis: this many, or 2 x the
#: sketch width if more (measured on the tuning clips: 2 x 128 loses nothing against 4 x 128, 1 x 128 does).
PCA_SAMPLE = 256
#: Tokens per block of the CPU bf16 projection (:func:`project`).
PROJECT_BLOCK = 512
#: Tokens per block of the CPU float32 projection of fp16/bf16 tokens (:func:`project`): each block
#: upcast into one reused buffer. One frame at N = 196: 88 ms against 94 ms for two frames and 170 ms
#: for a whole working copy at F=32, d=3584, k=96, 1 thread (AMD EPYC Zen 3, thread CPU time).
UPCAST_BLOCK = 256


def sketch_basis(x: torch.Tensor, width: int, kind: str = "pca", seed: int = 0,
                 gram_dtype: torch.dtype | None = None) -> torch.Tensor:
    """Orthonormal basis of a ``width``-dimensional sketch of the token space.

    Parameters
    ----------
    x : torch.Tensor, shape (T, d), float16, bfloat16, float32 or float64
        Tokens (rows; need not be unit norm). fp16/bf16: only the sampled rows are
        converted to float32 (the same values as converting all of ``x`` first).
    width : int
        k, the sketch width, ``1 <= k < d``.
    kind : {"pca", "random"}, default "pca"
        ``"pca"``: the top-k right singular vectors of an evenly spaced sample of
        ``m = min(T, max(PCA_SAMPLE, 2 k))`` unit-normalized rows, without centering
        (the subspace that keeps most of the sampled tokens' squared norm, so inner
        products of tokens near it change least: Eckart-Young), computed from the
        eigenvectors of the sample's (m, m) Gram matrix, ``V = S^T W diag(lambda)^(-1/2)``;
        at most ``m`` columns are meaningful, so ``k`` is clamped to ``m``.
        ``"random"``: a fixed-seed Gaussian (d, k) matrix orthonormalized by QR and
        scaled by ``sqrt(d / k)`` (Johnson-Lindenstrauss: inner products are preserved
        in expectation, with an error of order ``1 / sqrt(k)``); independent of ``x``.
    seed : int, default 0
        Seed of the random basis.
    gram_dtype : torch.dtype, optional
        Dtype of the Gram product (e.g. bfloat16, as the similarity products); the
        eigendecomposition and the basis are in the dtype of ``x``. Default: that dtype.

    Returns
    -------
    torch.Tensor, shape (d, min(k, m)) for "pca", (d, k) for "random"; device of ``x``, its working
    dtype (float32 for fp16/bf16/fp32 input, float64 for float64)
    """
    T, d = x.shape
    work = work_dtype(x.dtype)
    if kind == "random":
        return _random_basis(d, width, seed).to(x.device, work)
    m = min(T, max(PCA_SAMPLE, 2 * width))
    idx = torch.linspace(0, T - 1, m, device=x.device).round().long()
    s = unit_rows(x.index_select(0, idx).to(work))  # (m, d)
    sl = s if gram_dtype is None else s.to(gram_dtype)
    lam, w = torch.linalg.eigh(lowp_matmul(sl, sl.T).to(work))  # ascending eigenvalues of the (m, m) Gram matrix
    k = min(width, m)
    lam, w = lam[-k:].flip(0), w[:, -k:].flip(1)
    return (s.T @ w) / lam.clamp_min(lam[0] * 1e-6 + 1e-30).sqrt()


@functools.lru_cache(maxsize=8)
def _random_basis(d: int, width: int, seed: int) -> torch.Tensor:
    """Fixed-seed scaled orthonormal (d, k) basis, float64 on CPU; cached (a QR per call costs ~a projection)."""
    gen = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(d, width, generator=gen, dtype=torch.float64))
    return q * (d / width) ** 0.5


def project(x: torch.Tensor, basis: torch.Tensor, dtype: torch.dtype | None = None, with_norms: bool = False):
    """Sketch ``x @ basis`` of frame-batched tokens, (F, N, d) -> (F, N, k), in the dtype of ``basis``.

    One batched product over frames (on CPU ~1.7x faster than one (F N, d) x (d, k) product,
    whose (F N, d) operand does not stay in cache). ``dtype`` (e.g. bfloat16): the product's
    operands are rounded to it; on CPU block by block of ~``PROJECT_BLOCK`` tokens, so the
    rounded copy stays in cache (a whole-video copy costs more than the product it speeds up).
    ``x`` narrower than ``basis`` (fp16/bf16 tokens, fp32 work), on CPU: blocks of ~``PROJECT_BLOCK``
    tokens (whole frames) are converted into ONE reused buffer in the basis dtype and used from
    it while in cache, as AOT's ``_frames_bmm`` does: no working copy of the video, and the same
    values as converting it whole first; ``dtype=None`` (a product in the basis dtype) too, in
    blocks of ~``UPCAST_BLOCK`` tokens (torch's batched CPU product runs one GEMM per frame, so a
    block of frames gives the bits of all frames at once: checked at 1 and 2 threads for F in
    {2, 3, 8, 32}, N in {4, 16, 49, 196}, d in {8, 64, 384, 3584}, k in {4, 16, 96}); other
    devices convert the whole video first.
    ``with_norms``: also return the L2 norm of every token, (F, N), of the converted values
    (the same pass over the tokens)."""
    F, N, d = x.shape
    k = basis.shape[1]
    if x.dtype != basis.dtype:
        return _project_blocks(x, basis, dtype, with_norms)
    blocked = dtype is not None and dtype != x.dtype and x.device.type == "cpu"
    if with_norms and not blocked:
        return project(x, basis, dtype), torch.linalg.vector_norm(x, dim=-1)
    if dtype is None or dtype == x.dtype:
        return torch.bmm(x, basis.expand(F, d, k))
    b = basis.to(dtype)
    if not blocked:
        return lowp_matmul(x.to(dtype), b.expand(F, d, k)).to(x.dtype)
    out = torch.empty(F, N, k, dtype=x.dtype, device=x.device)
    # norms of each block while it is in cache, not a second pass over the video (a row's norm
    # is a reduction over its own d values: the same bits block by block as over the whole)
    norms = torch.empty(F, N, dtype=x.dtype, device=x.device) if with_norms else None
    step = max(1, PROJECT_BLOCK // N)
    bb = lowp_operand(_batched(b, min(step, F)))
    for i in range(0, F, step):  # blocks of frames (memory locality), not tokens
        xs = x[i:i + step]
        if norms is not None:
            torch.linalg.vector_norm(xs, dim=-1, out=norms[i:i + step])
        xb = xs.to(dtype)
        out[i:i + step] = lowp_matmul(xb, bb[:xb.shape[0]])  # bf16 product, widened into out
    return (out, norms) if with_norms else out


def _batched(b: torch.Tensor, n: int) -> torch.Tensor:
    """(n, d, k) contiguous copies of a (d, k) basis: the batched product's operand, made once per call
    (``bmm`` makes a stride-0 ``expand`` contiguous itself, i.e. one (n, d, k) copy per block)."""
    return b.expand(n, *b.shape).contiguous()


def _project_blocks(x: torch.Tensor, basis: torch.Tensor, dtype: torch.dtype | None, with_norms: bool):
    """:func:`project` of tokens narrower than ``basis``: frame blocks upcast into one reused buffer."""
    F, N, d = x.shape
    k = basis.shape[1]
    work = basis.dtype
    if x.device.type != "cpu":  # same bits as one product over converted x
        return project(x.to(work), basis, dtype, with_norms)
    wide = dtype in (None, work)  # the product in the basis dtype: from the upcast buffer itself
    b = basis if wide else basis.to(dtype)
    out = torch.empty(F, N, k, dtype=work, device=x.device)
    norms = torch.empty(F, N, dtype=work, device=x.device) if with_norms else None
    step = max(1, min(F, (UPCAST_BLOCK if wide else PROJECT_BLOCK) // N))
    buf = torch.empty(step, N, d, dtype=work, device=x.device)  # reused: no fresh pages per block
    # the low-precision operand: x itself when it already is in that dtype (bf16 -> fp32 -> bf16 is
    # exact), else a second reused buffer
    lbuf = None if wide or dtype == x.dtype else torch.empty(step, N, d, dtype=dtype, device=x.device)
    bb = lowp_operand(_batched(b, step))
    for i in range(0, F, step):  # blocks of frames (blocking), not a loop over tokens
        n = min(step, F - i)
        xc = buf[:n].copy_(x[i:i + n])
        if norms is not None:
            torch.linalg.vector_norm(xc, dim=-1, out=norms[i:i + n])
        if wide:
            torch.bmm(xc, bb[:n], out=out[i:i + n])
            continue
        if dtype == x.dtype:
            op = x[i:i + n]
        else:
            op = lbuf[:n].copy_(xc)
        out[i:i + n] = lowp_matmul(op, bb[:n])
    return (out, norms) if with_norms else out


def token_means(x: torch.Tensor, assignment: torch.Tensor, num_out: int,
                spans: list[tuple[int, int, int, int]] | None = None) -> torch.Tensor:
    """Plain mean of the tokens assigned to each output row, as one sparse (K, T) x (T, d) product.

    Parameters
    ----------
    x : torch.Tensor, shape (T, d), float16, bfloat16, float32 or float64
    assignment : torch.LongTensor, shape (T,)
        Output row of every token, in ``[0, num_out)``; every row has a token.
    num_out : int
        K.
    spans : list of (row_start, row_stop, token_start, token_stop), optional
        Diagonal blocks covering the plan: rows ``[row_start, row_stop)`` take tokens from
        ``[token_start, token_stop)`` only (clips: contiguous frames, rows in source order).
        With fp16/bf16 ``x`` on CPU the product runs block by block, each block of tokens
        converted to float32 into ONE reused buffer (no working copy of the video); every row
        sums the same terms in the same order as the one product over converted ``x``. Without
        them (or on another device), half ``x`` is converted whole first.

    Returns
    -------
    torch.Tensor, shape (K, d), the working dtype of ``x`` (float32 for fp16/bf16)
        Row k = mean of ``x[assignment == k]``: the hard merge as a CSR matrix with entries
        ``1 / mass`` (the "plan x tokens" product of the compute floor with a one-hot plan). On
        CPU ~1.5-2x faster than ``index_add_`` into a zeroed buffer and a division, which pass
        over a (K, d) buffer three times more; equal to it up to float summation order.
    """
    T, d = x.shape
    work = work_dtype(x.dtype)
    if x.dtype != work and (spans is None or x.device.type != "cpu"):
        x = x.to(work)
    order = torch.argsort(assignment, stable=True)
    mass = torch.bincount(assignment, minlength=num_out)
    crow = torch.zeros(num_out + 1, dtype=torch.long, device=x.device)
    crow[1:] = mass.cumsum(0)
    vals = (1.0 / mass.to(work)).index_select(0, assignment.index_select(0, order))
    with warnings.catch_warnings():  # CSR is "beta" in torch 2.x; this use (CSR @ dense) is long supported
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        # products written straight into ``out`` (beta=0: its contents are ignored): ``plan @ x``
        # zero-fills a fresh result and copies it, two passes over (K, d) as long as the product
        out = torch.empty(num_out, d, dtype=work, device=x.device)
        if x.dtype == work:
            plan = torch.sparse_csr_tensor(crow, order, vals, size=(num_out, T), check_invariants=False)
            return torch.addmm(out, plan, x, beta=0, out=out)
        nz = crow[[r for span in spans for r in span[:2]]].tolist()  # one host sync: nonzeros per block
        buf = torch.empty(max(t1 - t0 for _, _, t0, t1 in spans), d, dtype=work, device=x.device)
        for (r0, r1, t0, t1), n0, n1 in zip(spans, nz[::2], nz[1::2]):  # blocks of clips, not tokens
            xc = buf[:t1 - t0].copy_(x[t0:t1])
            plan = torch.sparse_csr_tensor(crow[r0:r1 + 1] - n0, order[n0:n1] - t0, vals[n0:n1],
                                           size=(r1 - r0, t1 - t0), check_invariants=False)
            torch.addmm(out[r0:r1], plan, xc, beta=0, out=out[r0:r1])
        return out


#: Bytes of one block of the full-width temporaries of :class:`AOTPlus` (static means, unit points,
#: token-to-anchor cosines): built block by block so that their peak stays ~this size, whatever F is.
BLOCK_BYTES = 16 * 2**20


def _blocks(n: int, row_bytes: int) -> list[slice]:
    """Slices covering ``range(n)`` in blocks of ``max(1, BLOCK_BYTES // row_bytes)`` rows."""
    step = max(1, BLOCK_BYTES // max(1, row_bytes))
    return [slice(i, min(n, i + step)) for i in range(0, n, step)]


def _cross(fa: torch.Tensor, fp: torch.Tensor, linear: bool = False) -> torch.Tensor:
    """Frame distance of anchor and point frames (-1 = any frame: 0), as float; broadcasts.

    ``linear=False``: 1 where the frames differ; ``linear=True``: ``|fa - fp|``."""
    both = (fa >= 0) & (fp >= 0)
    dist = (fa - fp).abs() if linear else (fa != fp)
    return (dist * both).to(torch.get_default_dtype())


def kcenter_anchors(u: torch.Tensor, valid: torch.Tensor, counts: torch.Tensor, score: torch.Tensor | None = None,
                    weight: float = 0.0, start: torch.Tensor | None = None, frame: torch.Tensor | None = None,
                    penalty: float = 0.0, linear: bool = False, boost: torch.Tensor | None = None) -> torch.Tensor:
    """Greedy farthest-point (k-center) selection in cosine distance, batched over groups.

    Parameters
    ----------
    u : torch.Tensor, shape (B, P, d)
        Unit-norm points.
    valid : torch.BoolTensor, shape (B, P)
        Points that may be chosen.
    counts : torch.LongTensor, shape (B,)
        Anchors wanted per group, each ``<= valid.sum(1)``.
    score : torch.Tensor, shape (B, P), optional
        Non-negative importance (negative values count as 0); with ``weight > 0``
        the next anchor maximizes ``(1 - max_cos_to_chosen) * (score / max score) ** weight``.
    weight : float, default 0.0
        0 = pure k-center (Gonzalez 1985: a 2-approximation of the min-max radius).
    start : torch.LongTensor, shape (B,), optional
        First anchor of each group. Default: the valid point most similar to the
        group's mean direction.
    frame : torch.LongTensor, shape (B, P), optional
        Frame of each point (-1: every frame, e.g. a static point); with
        ``penalty > 0`` the similarity of two points of different frames is
        lowered by ``penalty`` (the spatio-temporal cost of :class:`AOTPlus`).
    penalty : float, default 0.0
        Cross-frame penalty in cosine units.
    linear : bool, default False
        Penalty ``penalty * |frame difference|`` instead of ``penalty * [frames differ]``.
    boost : torch.Tensor, shape (B, P), optional
        Positive factor on every point's gain (e.g. its mass to a power: mass-weighted
        farthest-point); the next anchor maximizes ``(1 - max_cos_to_chosen) * boost``.

    Returns
    -------
    torch.LongTensor, shape (B, max(counts))
        Chosen point indices in selection order; entries at or beyond a group's
        count are padding (meaningless).
    """
    B, P, _ = u.shape
    dev = u.device
    kmax = int(counts.max())
    ar = torch.arange(B, device=dev)
    if start is None:
        mean = (u * valid[..., None]).sum(1)
        start = lowp_matmul(u, mean[..., None]).squeeze(-1).masked_fill(~valid, float("-inf")).argmax(1)
    if weight > 0 and score is not None:
        s = score.clamp_min(0).masked_fill(~valid, 0)
        s = (s / s.amax(1, keepdim=True).clamp_min(1e-30)).pow(weight)
    else:
        s = None
    blocked = ~valid
    ut = lowp_operand(u.transpose(1, 2))  # the right operand of every step's product
    acc = torch.float32 if u.dtype in (torch.float16, torch.bfloat16) else u.dtype
    best = torch.full((B, P), -2.0, dtype=acc, device=dev)
    picks = torch.empty(B, kmax, dtype=torch.long, device=dev)
    pick = start
    for t in range(kmax):  # selection steps, each one batched matrix-vector product
        if t > 0:
            gain = (1.0 - best).clamp_min(0)
            if s is not None:
                gain = gain * s
            if boost is not None:
                gain = gain * boost
            pick = gain.masked_fill(blocked, -1.0).argmax(1)
        picks[:, t] = pick
        blocked[ar, pick] = True
        # (B, 1, d) @ (B, d, P): ~4x faster than bmm(u, column) on CPU (a batched GEMV)
        sim = lowp_matmul(u[ar, pick][:, None, :], ut).squeeze(1).to(acc)
        if penalty > 0 and frame is not None:
            sim = sim - penalty * _cross(frame[ar, pick][:, None], frame, linear)
        best = torch.maximum(best, sim)
    return picks


def kcenter_rounds(u: torch.Tensor, valid: torch.Tensor, counts: torch.Tensor, frame: torch.Tensor | None = None,
                   penalty: float = 0.0, linear: bool = False, boost: torch.Tensor | None = None) -> torch.Tensor:
    """Farthest-point selection in rounds: one pick per subgroup (frame slot) per round.

    A cheaper relative of :func:`kcenter_anchors` for groups made of S subgroups of M
    points (a clip's frames): in round ``t`` every subgroup with ``counts > t`` adds
    its point farthest (in cosine) from all anchors chosen so far in the whole
    group, so the number of sequential steps is ``S + max(counts) - 1`` instead of
    ``counts.sum(1).max()``. Round 0 runs frame by frame (the first subgroup starts
    at the point nearest its mean, the next ones at their point farthest from the
    picks so far); the picks of a later round do not see each other.

    Parameters
    ----------
    u : torch.Tensor, shape (B, S, M, d)
        Unit-norm points, subgroup by subgroup.
    valid : torch.BoolTensor, shape (B, S, M)
    counts : torch.LongTensor, shape (B, S)
        Picks per subgroup, each ``<= valid.sum(-1)``.
    frame, penalty, linear, boost
        As :func:`kcenter_anchors`; ``frame`` and ``boost`` have shape (B, S * M).

    Returns
    -------
    torch.LongTensor, shape (B, max(counts.sum(1)))
        Point indices ``s * M + m`` in pick order (round by round); entries past
        a group's total are padding.
    """
    B, S, M, d = u.shape
    dev = u.device
    acc = torch.float32 if u.dtype in (torch.float16, torch.bfloat16) else u.dtype
    flat = u.reshape(B, S * M, d)
    ut = lowp_operand(flat.transpose(1, 2))  # the right operand of every round's product
    cl = counts.tolist()  # one host sync: which subgroups are still picking in each round, known up front
    rounds = max(max(r) for r in cl)
    low_round = min(min(r) for r in cl)  # rounds t < low_round: every subgroup picks (no masking needed)
    mean = (u * valid[..., None]).sum(2)  # (B, S, d): first pick = point nearest its subgroup's mean
    pick = lowp_matmul(u, mean[..., None]).squeeze(-1).to(acc).masked_fill(~valid, float("-inf")).argmax(2)
    best = torch.full((B, S * M), -2.0, dtype=acc, device=dev)
    blocked = ~valid.reshape(B, S * M)
    offs = torch.arange(S, device=dev) * M
    picks = torch.empty(B, rounds, S, dtype=torch.long, device=dev)
    ar = torch.arange(B, device=dev)[:, None]
    pen_sub = free = None
    if penalty > 0 and frame is not None:
        fv = frame.view(B, S, M)
        sub_frame = fv.amax(-1)  # (B, S)
        if bool(((fv == sub_frame[..., None]) | (fv < 0)).all()):
            # every point of a subgroup is in its frame or frame-agnostic (-1, a static point): a pick's
            # penalty row is its subgroup's, or zero for a frame-agnostic pick, so the rows are fixed
            pen_sub = _cross(sub_frame[..., None], frame[:, None, :], linear).to(acc).mul_(penalty)  # (B, S, S*M)
            if bool((frame < 0).any()):
                free = frame >= 0  # (B, S*M): picks that pay their row
    for s_ in range(S):  # round 0, frame by frame, so the first picks of the frames see each other
        if s_ > 0:
            gain = (1.0 - best).clamp_min(0)
            if boost is not None:
                gain = gain * boost
            gain = gain.masked_fill(blocked, -1.0).view(B, S, M)[:, s_]
            pick[:, s_] = gain.argmax(1)
        idx = offs[s_] + pick[:, s_]  # (B,)
        sim = lowp_matmul(flat[ar[:, 0], idx][:, None, :], ut).squeeze(1).to(acc)  # (B, S*M)
        if pen_sub is not None:
            sim = sim - (pen_sub[:, s_] if free is None else pen_sub[:, s_] * free.gather(1, idx[:, None]))
        elif penalty > 0 and frame is not None:
            sim = sim - penalty * _cross(frame.gather(1, idx[:, None]), frame, linear)
        if all(r[s_] > 0 for r in cl):  # every group picks in this frame (the usual case)
            best = torch.maximum(best, sim)
            blocked[ar[:, 0], idx] = True
        else:
            on = counts[:, s_] > 0
            best = torch.where(on[:, None], torch.maximum(best, sim), best)
            blocked[ar[:, 0], idx] |= on  # integer indices: no boolean-mask index (a nonzero each)
    picks[:, 0] = offs + pick
    for t in range(1, rounds):  # later rounds, each one batched (S x d) by (d x S*M) product
        every = t < low_round  # every subgroup picks: no masking of inactive ones (fewer small ops)
        active = None if every else counts > t  # (B, S)
        gain = torch.rsub(best, 1.0).clamp_min_(0)
        if boost is not None:
            gain = gain * boost
        gain = gain.masked_fill_(blocked, -1.0).view(B, S, M)
        pick = gain.argmax(2)
        idx = offs + pick  # (B, S)
        picks[:, t] = idx
        sim = lowp_matmul(flat[ar, idx], ut).to(acc)  # (B, S, S*M)
        if pen_sub is not None:
            sim.sub_(pen_sub if free is None else pen_sub * free.gather(1, idx)[..., None])
        elif penalty > 0 and frame is not None:
            sim = sim - penalty * _cross(frame.gather(1, idx)[..., None], frame[:, None, :], linear)
        if not every:
            sim.masked_fill_(~active[..., None], -2.0)
        best = torch.maximum(best, sim.amax(1))
        # idx holds one point per subgroup (distinct): a scatter of the flags, no boolean-mask index
        if every:
            blocked.scatter_(1, idx, True)
        else:
            blocked.scatter_(1, idx, blocked.gather(1, idx) | active)
    keep = (torch.arange(rounds, device=dev)[None, :, None] < counts[:, None, :]).reshape(B, rounds * S)
    order = torch.argsort((~keep).to(torch.int8), dim=1, stable=True)[:, : max(sum(r) for r in cl)]
    return picks.reshape(B, rounds * S).gather(1, order)


@register
@dataclass(repr=False)
class AOTPlus(Reducer):
    """``aot+``: k-center anchors per clip, nearest-anchor k-means with a cross-frame cost, hard means.

    See the module notes for the pipeline; ``docs/aot.md`` ("aot+") has the sweep
    that chose the defaults and what each option does on real tokens.

    Parameters
    ----------
    retention : float, default 0.1
        Fraction of tokens kept, in (0, 1]. Output size is exactly
        ``max(round(retention * F * N), min_clips(F))``.
    clips : {"uniform", "dynamic"}, default "uniform"
        Uniform clips of ``clip_length`` frames (AOT), or FastVID's DySeg on the
        frame-mean tokens with ``seg_tau`` and ``seg_c``.
    clip_length : int or None, default None
        Frames per uniform clip (AOT uses 4 for 32 frames). None: ``round(0.4 /
        retention)`` clamped to ``[1, F]`` (8 at 5 %, 4 at 10 %, 3 at 15 %, 2 at
        25 %), so a clip holds ~0.4 N anchors whatever the retention: low retention
        gets longer clips (more frames share anchors), and the cost of one
        assignment step, ~K x (clip tokens) x d, stays the same. 1 = frame by frame;
        ``>= F`` = the whole video as one clip.
    clip_rule : {"round", "divisor"}, default "round"
        How ``clip_length=None`` picks the length ``L0 = 0.4 / retention``:
        ``"round"``: ``round(L0)``; ``"divisor"``: the divisor of F nearest ``L0``
        among those in ``[L0 / 2, 2 L0]`` (ties: the shorter), else ``round(L0)``,
        so the clips are equal and need no padding (F = 32: 2 frames at 15 %
        instead of 3; the other retentions above are unchanged).
    cut_tau : float or None, default None
        Scene-cut split of uniform clips: a clip is also cut between adjacent
        frames whose frame-mean tokens have cosine below ``cut_tau``
        (:func:`anchor_ot.segment.transition_similarity`, the first rule of
        FastVID's DySeg, arXiv 2503.11187 eq. 2), so no anchor absorbs tokens
        across a cut. None = no split. With a split the worst case is F clips,
        so the output size is ``max(round(retention * F * N), F)``.
    seg_tau : float, default 0.8
        DySeg threshold (AOT release's call: 0.8).
    seg_c : int, default 8
        DySeg minimum number of clips.
    static_tau : float or None, default None
        Same-position cosine above which tokens count as static and are merged into
        one point (mass = how many, position = the first); None = no temporal merge.
    static_span : {"clip", "run"}, default "clip"
        What merges: ``"clip"``: a position static through a whole clip (every
        consecutive cosine > ``static_tau``, :func:`static_positions`) becomes one
        point of the clip; ``"run"``: every run of consecutive frames whose
        same-position cosines exceed ``static_tau`` becomes one point
        (:func:`static_runs`), also across clips (the point joins the clip of the
        run's first frame), so a background still for the whole video is one point,
        not one per clip. On the sketch path the consecutive cosines are taken in the
        sketch (cosine of the projections).
    static_window : int or None, default None
        ``static_span="run"``: longest run in frames (None: the whole video). Halved
        while the merge would leave fewer points than the budget K.
    static_cos : {"full", "sketch"}, default "full"
        With a sketch (``sketch_dim``): the same-position cosines of the static test
        in full d, or between the sketches (cosine of the projections: no extra pass
        over the tokens at full d); ``"sketch"`` also estimates the full-d norm of a
        static mean as ``|mean sketch| x mean token norm / mean sketch norm`` of its
        members instead of taking it in full d. ``static_span="run"`` always
        estimates the norms so.
    static_place : {"first", "spread", "frame"}, default "first"
        ``static_span="clip"``: where a static point sits. ``"first"``: in the clip's
        first frame, standing for every frame of the clip (no cross-frame cost to any
        anchor; an anchor seeded on it places its output in any frame). ``"spread"``:
        the point of position n sits in frame ``n mod L`` of its clip of L frames: the
        per-frame split of the clip's anchors (``init="kcenter-frame"``) counts it there,
        and an anchor seeded on it puts its output in that frame (the member nearest
        the mean among that frame's; any frame if none is left), while it still stands
        for every frame in the cross-frame cost; so every frame keeps an even share of
        the static background and with it its temporal evidence (``docs/aot.md``,
        "Static tokens"). ``"frame"``: as "spread", and it also counts as a token of
        that frame in the cross-frame cost.
    mass_weight : float, default 0.0
        Mass-weighted farthest-point selection: a point's k-center gain is multiplied
        by ``mass ** mass_weight`` (0 = every point alike; > 0 favours merged static
        points as anchors).
    frame_penalty : float, default 0.01
        Spatio-temporal cost: ``1 - cos + frame_penalty * |f_anchor - f_point|`` between
        an anchor (the frame of its medoid) and a point, in k-center selection and
        assignment. 0 = frames of a clip are interchangeable; large = every anchor
        keeps to its own frame.
    penalty_shape : {"step", "linear"}, default "linear"
        ``"step"``: the penalty is paid once for any other frame,
        ``frame_penalty * [f_anchor != f_token]``; ``"linear"``: it grows with the
        frame distance, ``frame_penalty * |f_anchor - f_token|`` (temporal
        locality; the AOT release scales its inter-frame cost by a time factor for
        the same reason). Linear keeps every frame's own share of a static
        background and so the frame's temporal evidence (``docs/aot.md``).
    group : {"clip", "frame"}, default "clip"
        Where anchors are chosen and tokens assigned: over all points of a clip
        (anchors may absorb tokens of any frame of their clip), or frame by frame
        (static points count for the clip's first frame).
    budget : {"points", "tokens"}, default "points"
        Split of K over clips: by points after the static merge, or by tokens.
    init : {"kcenter", "kcenter-frame", "grid", "attention", "random"}, default "kcenter-frame"
        Initial anchors per group: farthest-point over the clip, farthest-point in
        rounds of one pick per frame (:func:`kcenter_rounds`: the clip's count
        split over its frames, ~L times fewer sequential steps), evenly spaced in
        raster order (spatially uniform, as ``pool``), attention top-k, or seeded random.
    score_weight : float, default 0.0
        Attention weight in k-center selection (>= 0; 0 = pure coverage).
    iters : int, default 2
        Plan / barycentre alternations (>= 1; 1 = assign to the initial anchors
        once and merge). 5 raises every margin on the tuning clips by up to ~1.7 sd
        but costs ~0.35x the compute floor more at d = 3584 (``docs/aot.md``).
    assign : {"nearest", "ot"}, default "nearest"
        Assignment step: plan argmax of a Sinkhorn plan, or nearest anchor.
    anchor_marginal : {"mass", "uniform"}, default "mass"
        Anchor marginal of the plan: the anchors' masses under the nearest
        assignment, or uniform (AOT eq. 9: forces equal-sized clusters).
    eps : float, default 0.05
        Sinkhorn regularization, in cost units (``1 - cos``).
    max_iter : int, default 100
        Sinkhorn iteration cap.
    tol : float, default 1e-3
        Sinkhorn relative marginal L1 tolerance.
    output : {"mean", "medoid"}, default "mean"
        Output token = mean of its members (hard merge) or its medoid (selection).
    placement : {"home", "medoid"}, default "home"
        Where an output token sits (its ``source_index``): at the member nearest
        its mean among the members of its anchor's home frame (the frame of its
        initial anchor, so every frame keeps the share of tokens the initial split
        gave it), or at the member nearest its mean in any frame of the clip.
    sim_dtype : {"auto", "float32", "bfloat16"}, default "auto"
        Dtype of the anchor-token similarity products (k-center steps and
        assignments; with a sketch also the projection and the PCA sample's Gram matrix).
        ``"bfloat16"`` rounds cosines to ~3 digits (error <= 1e-3 measured on unit
        vectors, d = 384) and is ~6x faster than fp32 on CPUs with AVX512-BF16 and on
        GPUs; on CPUs without bf16 GEMM kernels (:func:`native_bf16_matmul` False, e.g.
        AVX2-only x86) it runs as fp32 GEMMs rounded to bf16 (:func:`lowp_matmul`: the
        same rounding, ~1.4x the fp32 path's time there, where torch's own bf16 GEMM
        is 20-40x slower). ``"auto"``: bfloat16 on GPUs and on CPUs with bf16 kernels,
        float32 on other CPUs (the faster of the two everywhere; ``info["sim_dtype"]``
        says which ran). Means, medoids and output tokens are always computed in the
        working dtype.
    sketch_dim : int or None, default 96
        Width k of the sketch the similarity steps run on (k-center selection,
        assignment/barycentre iterations, placement): the tokens are projected once
        onto a k-dimensional basis (:func:`sketch_basis`, :func:`project`: one
        (F N, d) x (d, k) product), and only the output means are taken in full d
        (one pass over the tokens). The sketch of a point is ``(x @ V) / |x|`` (the
        projection of its unit vector), an anchor is the sketch of its members' mean
        (linearity: exact), normalized in the sketch. None, or ``k >= d``: every step
        in full d. Our deviation for speed at LLM width (issue 12); the sweep in
        ``docs/aot.md`` ("Sketch") chose 96: the narrowest PCA sketch that keeps every
        goal margin on the 7 tuning clips (d = 384 there: coverage and readout within
        2 random-seed sd of full d); at d = 3584 it reduces in ~1.3x the compute floor
        instead of 8.3x.
    sketch : {"pca", "random"}, default "pca"
        Basis of the sketch (:func:`sketch_basis`): the uncentered PCA of a token
        sample of this video, or a fixed random orthonormal one (seed ``seed``).
    seed : int, default 0
        Seed for ``init="random"`` and ``sketch="random"``.

    Raises
    ------
    TypeError, ValueError
        On parameters of the wrong type or out of range.
    """

    clips: str = "uniform"
    clip_length: int | None = None
    clip_rule: str = "round"
    cut_tau: float | None = None
    seg_tau: float = 0.8
    seg_c: int = 8
    static_tau: float | None = None
    static_span: str = "clip"
    static_window: int | None = None
    static_cos: str = "full"
    static_place: str = "first"
    mass_weight: float = 0.0
    frame_penalty: float = 0.01
    penalty_shape: str = "linear"
    group: str = "clip"
    budget: str = "points"
    init: str = "kcenter-frame"
    score_weight: float = 0.0
    iters: int = 2
    assign: str = "nearest"
    anchor_marginal: str = "mass"
    eps: float = 0.05
    max_iter: int = 100
    tol: float = 1e-3
    output: str = "mean"
    placement: str = "home"
    sim_dtype: str = "auto"
    sketch_dim: int | None = 96
    sketch: str = "pca"
    seed: int = 0

    name = "aot+"
    description = "aot+ (ours, on AOT): k-center anchors per clip, k-means with a cross-frame cost, hard means"
    paper = "arXiv:2603.01400"  # builds on AOT; the changes are ours (docs/aot.md)
    #: Named points of the sweep (``docs/aot.md``), as ``methods.get("aot+:<variant>")``.
    variants = {
        "ot": {"assign": "ot"},                      # Sinkhorn plan argmax instead of nearest anchor
        "attention": {"init": "attention"},          # AOT's attention top-k anchors
        "static": {"static_tau": 0.9},               # merge static positions over each clip first
        "coverage": {"frame_penalty": 0.0},          # frames of a clip interchangeable: best coverage
        "per-frame": {"clip_length": 1},             # every frame its own clip
        "dynamic": {"clips": "dynamic"},             # DySeg clips
    }

    def __post_init__(self) -> None:
        super().__post_init__()
        self.clips = check_choice("clips", self.clips, CLIP_MODES)
        if self.clip_length is not None:
            self.clip_length = check_int("clip_length", self.clip_length, low=1)
        self.clip_rule = check_choice("clip_rule", self.clip_rule, CLIP_RULES)
        if self.cut_tau is not None:
            self.cut_tau = check_number("cut_tau", self.cut_tau, low=-1.0, high=1.0)
        self.seg_tau = check_number("seg_tau", self.seg_tau, low=-1.0, high=1.0)
        self.seg_c = check_int("seg_c", self.seg_c, low=1)
        if self.static_tau is not None:
            self.static_tau = check_number("static_tau", self.static_tau, low=-1.0, high=1.0)
        self.static_span = check_choice("static_span", self.static_span, ("clip", "run"))
        if self.static_window is not None:
            self.static_window = check_int("static_window", self.static_window, low=1)
        self.static_cos = check_choice("static_cos", self.static_cos, ("full", "sketch"))
        self.static_place = check_choice("static_place", self.static_place, ("first", "spread", "frame"))
        self.mass_weight = check_number("mass_weight", self.mass_weight, low=0.0)
        self.frame_penalty = check_number("frame_penalty", self.frame_penalty, low=0.0)
        self.penalty_shape = check_choice("penalty_shape", self.penalty_shape, ("step", "linear"))
        self.group = check_choice("group", self.group, GROUPS)
        self.budget = check_choice("budget", self.budget, BUDGETS)
        self.init = check_choice("init", self.init, INITS)
        self.score_weight = check_number("score_weight", self.score_weight, low=0.0)
        self.iters = check_int("iters", self.iters, low=1)
        self.assign = check_choice("assign", self.assign, ASSIGNS)
        self.anchor_marginal = check_choice("anchor_marginal", self.anchor_marginal, MARGINALS)
        self.eps = check_number("eps", self.eps, low=0.0, low_open=True)
        self.max_iter = check_int("max_iter", self.max_iter, low=1)
        self.tol = check_number("tol", self.tol, low=0.0, low_open=True)
        self.output = check_choice("output", self.output, OUTPUTS)
        self.placement = check_choice("placement", self.placement, ("home", "medoid"))
        self.sim_dtype = check_choice("sim_dtype", self.sim_dtype, ("auto", "float32", "bfloat16"))
        if self.sketch_dim is not None:
            self.sketch_dim = check_int("sketch_dim", self.sketch_dim, low=1)
        self.sketch = check_choice("sketch", self.sketch, SKETCHES)
        self.seed = check_int("seed", self.seed, low=0)

    def sketch_width(self, dim: int) -> int | None:
        """Sketch width used for tokens of width ``dim``: ``sketch_dim``, or None (full d) when it is
        None or ``>= dim`` (a sketch no narrower than the tokens saves nothing)."""
        if self.sketch_dim is None or self.sketch_dim >= dim:
            return None
        return self.sketch_dim

    # -- budget -----------------------------------------------------------------
    def min_clips(self, num_frames: int) -> int:
        """Most clips any input of this length can have (one output token each)."""
        if self.clips == "dynamic" or self.group == "frame" or self.cut_tau is not None:
            return num_frames
        return len(uniform_segments(num_frames, self.clip_frames(num_frames)))

    def clip_frames(self, num_frames: int) -> int:
        """Frames per uniform clip for a video of ``num_frames`` frames (see ``clip_length``)."""
        if self.clip_length is not None:
            return self.clip_length
        target = 0.4 / self.retention
        if self.clip_rule == "divisor":
            divs = [L for L in range(1, num_frames + 1) if num_frames % L == 0 and target / 2 <= L <= 2 * target]
            if divs:
                return min(divs, key=lambda L: (abs(L - target), L))
        return int(min(num_frames, max(1, round(target))))

    def num_kept(self, num_frames: int, grid: tuple[int, int]) -> int:
        """``max(round(retention * F * N), min_clips(F))``, from the shape alone."""
        self._check_shape(num_frames, grid)
        return default_budget(self.retention, num_frames, grid, minimum=self.min_clips(num_frames))

    def clips_for(self, video: VideoTokens) -> list[tuple[int, int]]:
        """The clips ``(start, end)`` used for this video."""
        if self.clips == "dynamic":
            return dynamic_segments(video.tokens.mean(1), tau=self.seg_tau, c=self.seg_c)
        clips = uniform_segments(video.num_frames, self.clip_frames(video.num_frames))
        if self.cut_tau is None or video.num_frames < 2:
            return clips
        sim = transition_similarity(video.tokens.mean(1))  # (F - 1,) cosine of frame f to f + 1
        cuts = ((sim < self.cut_tau).nonzero().flatten() + 1).tolist()  # one host sync per video
        bounds = sorted({s for s, _ in clips} | set(cuts))
        return list(zip(bounds, bounds[1:] + [video.num_frames]))

    def similarity_dtype(self, device: torch.device | str = "cpu") -> torch.dtype | None:
        """Dtype of the similarity products on ``device``: bfloat16, or None for the working dtype.

        ``sim_dtype="auto"`` resolves to bfloat16 on every device but a CPU without bf16 GEMM
        kernels (:func:`native_bf16_matmul`), where it resolves to None (float32 products, the
        faster there).
        """
        if self.sim_dtype == "float32":
            return None
        if self.sim_dtype == "auto" and torch.device(device).type == "cpu" and not native_bf16_matmul():
            return None
        return torch.bfloat16

    # -- reduction --------------------------------------------------------------
    def reduce(self, video: VideoTokens, num_kept: int) -> ReducedVideo:
        X_in = video.tokens
        F, N, d = X_in.shape
        if num_kept == F * N:  # nothing to merge: the identity reduction
            ids = torch.arange(F * N, device=X_in.device)
            return assemble(X_in.reshape(F * N, d), ids, ids, F, video.grid, {"identity": True})
        work = work_dtype(X_in.dtype)
        width = self.sketch_width(d)
        # fp16/bf16 input on the sketch path is not copied whole to the working dtype (that copy,
        # page faults included, cost ~0.9x the compute floor at F=32, N=196, d=3584): the steps that
        # read every token at full d convert blocks of frames (issue 12); full-d points need the copy
        grad = torch.is_grad_enabled() and X_in.requires_grad
        X = X_in if (width is not None and not grad) else X_in.to(work)
        esz = torch.finfo(work).bits // 8  # bytes of one working-dtype value, for block sizes
        dev = X.device
        clips = self.clips_for(video)
        C = len(clips)
        starts = torch.tensor([s for s, _ in clips], device=dev)
        lengths = torch.tensor([e - s for s, e in clips], device=dev)
        Lmax = int(lengths.max())
        P = Lmax * N
        clip_of = torch.repeat_interleave(torch.arange(C, device=dev), lengths)
        info: dict = {"clips": C, "clip_bounds": [list(c) for c in clips]}

        # points: every token of a clip, padded to the longest clip (C, P)
        ell = torch.arange(Lmax, device=dev)
        frame_ok = ell[None] < lengths[:, None]  # (C, Lmax)
        frame = (starts[:, None] + ell[None]).clamp_max(F - 1)
        pos = (frame[..., None] * N + torch.arange(N, device=dev)).reshape(C, P)  # flat input index
        valid_tok = frame_ok[..., None].expand(C, Lmax, N).reshape(C, P)
        Xf = X.reshape(F * N, d)
        uniform = bool((lengths == Lmax).all())

        def clip_tokens(b: slice = slice(None)) -> torch.Tensor:
            """(c, P, d) input tokens of clips ``b`` in the working dtype: a view when clips are uniform
            and the input is in that dtype, else a copy."""
            t = X.view(C, P, d)[b] if uniform else Xf[pos[b]]
            return t if t.dtype == work else t.to(work)

        low = self.similarity_dtype(dev)  # None: the working dtype
        info["sim_dtype"] = str(low or work).removeprefix("torch.")
        if width is not None:  # the sketch (used from step 2 on by static runs, from step 4 on otherwise)
            basis = sketch_basis(Xf, width, self.sketch, self.seed, gram_dtype=low)  # (d, k)
            width = basis.shape[1]
            Z, xnorm = project(X, basis, low, with_norms=True)  # (F, N, k), (F, N), working dtype

        # 2. static tokens -> one point each: per clip (a static position's first-frame slot, mass L)
        # or per run of frames (the run's first token, mass = run length; possibly in another clip)
        ar_c = torch.arange(C, device=dev)[:, None]
        static = torch.zeros(C, N, dtype=torch.bool, device=dev)
        runs = self.static_tau is not None and self.static_span == "run" and F > 1
        run_len = None
        if self.static_tau is not None and not runs and Lmax > 1:
            sk = width is not None and self.static_cos == "sketch"
            static = static_positions(Z if sk else X, clip_of, C, self.static_tau)
            n_points = int((lengths * N).sum() - ((lengths - 1)[:, None] * static).sum())
            if n_points < num_kept:
                static.zero_()
                info["static_note"] = f"static merge off: {n_points} points < K={num_kept}"
        if runs:
            if width is None or self.static_cos == "full":
                adj = adjacent_cosines(X)
            else:  # cosines of the sketches (F - 1, N): no full-d pass
                zn = unit_rows(Z)
                adj = (zn[1:] * zn[:-1]).sum(-1)
                del zn
            rep_flat, run_len, W = static_runs(adj, self.static_tau, self.static_window, num_kept)
            rep_flat, run_len = rep_flat.reshape(F * N), run_len.reshape(F * N)
            fr = torch.arange(F, device=dev)
            flat_cq = (clip_of[:, None] * P + (fr - starts[clip_of])[:, None] * N
                       + torch.arange(N, device=dev)[None]).reshape(F * N)  # clip-layout index of every token
            rep_cq = torch.where(valid_tok, flat_cq[rep_flat][pos], ar_c * P + torch.arange(P, device=dev))
            valid = valid_tok & (rep_flat[pos] == pos)
            weight = valid.to(work) * run_len[pos].to(work)
            spt = valid & (run_len[pos] > 1)  # (C, P) points that stand for several tokens
            has_static = bool(spt.any())
            info["static_window"] = W
            info["static_points"] = int(spt.sum())
            info["static_tokens"] = int(run_len[run_len > 1].sum())
        else:
            info["static_positions"] = int(static.sum())
            # frame slot of each static point: the clip's first frame, or position n in slot n mod L
            slot = torch.zeros(C, N, dtype=torch.long, device=dev)
            if self.static_place != "first":
                slot = torch.arange(N, device=dev)[None, :] % lengths[:, None]
            at = static[:, None, :] & (ell[None, :, None] == slot[:, None, :])  # (C, Lmax, N) static points
            follower = (static[:, None, :] & ~at).reshape(C, P) & valid_tok
            valid = valid_tok & ~follower
            weight = valid.to(work) * torch.where(static[:, None, :], lengths[:, None, None], 1).expand(
                C, Lmax, N).reshape(C, P).to(work)
            has_static = bool(static.any())
            spt = at.reshape(C, P)
            # representative point of every token: itself, or its position's slot in the clip when static
            rep = torch.arange(P, device=dev).expand(C, P)
            rep_cq = ar_c * P + torch.where(follower, (slot[:, None, :] * N + torch.arange(N, device=dev)).expand(
                C, Lmax, N).reshape(C, P), rep)

        # 3. budget over groups: a clip (group="clip") or one frame slot of a clip (group="frame")
        if self.group == "frame":
            G, Q = C * Lmax, N
            tok_w = frame_ok.reshape(-1).to(torch.float64) * N
        else:
            G, Q = C, P
            tok_w = (lengths * N).to(torch.float64)
        gvalid, gweight = valid.view(G, Q), weight.view(G, Q)
        caps = gvalid.sum(1)
        counts = group_budget(num_kept, caps.to(torch.float64) if self.budget == "points" else tok_w, caps).to(dev)
        kg = int(counts.max())
        gvalid_a = torch.arange(kg, device=dev)[None] < counts[:, None]  # (G, kg)
        info["anchors_per_group"] = (int(counts[caps > 0].min()), kg)

        # sketch: the similarity steps (4, 5, 6's placement) see k-dim projections of the points; the
        # output means (6) are taken in full d. Linear, so the sketch of a mean is the mean of sketches.
        # Memory: the steps that touch every token at full d build their temporaries block by block
        # (:func:`_blocks`), so no (F, N, d)-sized intermediate is held beside the input (issue 12).
        u32 = None  # unit points in the working dtype, when kept
        if width is None:  # points at full d: the clip tokens, a static position's first slot its mean
            pts = clip_tokens()
            if has_static and runs:  # the mean of every run of >= 2 tokens, into its first token's slot
                if uniform:
                    pts = pts.clone()
                rows = (run_len > 1).nonzero().squeeze(1)  # (R,) flat index of every merged run's first token
                row_of = torch.full((F * N,), -1, dtype=torch.long, device=dev)
                row_of[rows] = torch.arange(rows.numel(), device=dev)
                sums = torch.zeros(rows.numel(), d, dtype=work, device=dev)
                for b in _blocks(F, N * d * esz):  # blocks of frames, not tokens
                    r = row_of[rep_flat[b.start * N:b.stop * N]]
                    m = r >= 0
                    sums.index_add_(0, r[m], Xf[b.start * N:b.stop * N][m].to(work))
                pts.view(C * P, d)[flat_cq[rows]] = sums / run_len[rows][:, None].to(work)
                del sums
            elif has_static:
                if uniform:  # a view of the input: copy before writing the means
                    pts = pts.clone()
                for b in _blocks(C, P * d * esz):  # in place, one block of clips at a time
                    o = pts[b].view(-1, Lmax, N, d)
                    mean = (o * frame_ok[b][..., None, None].to(work)).sum(1) / lengths[b][:, None, None].to(work)
                    o.copy_(torch.where(at[b][..., None], mean[:, None], o))
                del mean, o
            gsim = pts.view(G, Q, d)
            if low is None:
                u32 = u = unit_rows(gsim)
            else:  # the bf16 similarity operand, normalized block by block (no fp32 unit copy)
                rows = gsim.reshape(G * Q, d)
                u = torch.empty(G * Q, d, dtype=low, device=dev)
                for b in _blocks(G * Q, d * esz):
                    u[b] = unit_rows(rows[b]).to(low)
                u = u.view(G, Q, d)
        else:
            Z, xnorm = Z.reshape(F * N, width), xnorm.view(F * N)
            zorig = Z.view(C, P, width) if uniform else Z[pos]
            xfl = xnorm
            xnorm = xnorm.view(C, P) if uniform else xnorm[pos]  # (C, P) norm of every clip token
            if has_static and runs:
                # a run's point: the mean of its sketches (the sketch of its mean token, exact); its norm
                # in full d estimated as |mean sketch| x (mean token norm / mean sketch norm) of its members
                # (no full-d pass; the sketch keeps the same share of a run's mean as of its members)
                lw = run_len.clamp_min(1).to(work)
                zm = torch.zeros(F * N, width, dtype=work, device=dev).index_add_(0, rep_flat, Z) / lw[:, None]
                ratio = (torch.zeros(F * N, dtype=work, device=dev).index_add_(0, rep_flat, xfl)
                         / torch.zeros(F * N, dtype=work, device=dev).index_add_(
                             0, rep_flat, torch.linalg.vector_norm(Z, dim=-1)).clamp_min(1e-30))
                nm = torch.linalg.vector_norm(zm, dim=-1) * ratio
                zpts = torch.where(spt[..., None], zm[pos], zorig)
                norms = torch.where(spt, nm[pos], xnorm)
                del zm
            elif has_static:
                zm = (zorig.view(C, Lmax, N, width) * frame_ok[..., None, None].to(work)).sum(1) / lengths[
                    :, None, None].to(work)
                zpts = torch.where(at[..., None], zm[:, None], zorig.view(C, Lmax, N, width)).view(C, P, width)
                norms = xnorm.clone()  # (C, P): static means have their own norm
                nv = norms.view(C, Lmax, N)
                if self.static_cos == "sketch":  # estimated as for runs (below): no full-d pass
                    fo = frame_ok[..., None].to(work)
                    zn = torch.linalg.vector_norm(zorig.view(C, Lmax, N, width), dim=-1)
                    ratio = (xnorm.view(C, Lmax, N) * fo).sum(1) / (zn * fo).sum(1).clamp_min(1e-30)
                    nv.copy_(torch.where(at, (torch.linalg.vector_norm(zm, dim=-1) * ratio)[:, None], nv))
                else:  # taken in full d, block by block of clips
                    for b in _blocks(C, P * d * esz):
                        o = clip_tokens(b).view(-1, Lmax, N, d)
                        mean = (o * frame_ok[b][..., None, None].to(work)).sum(1) / lengths[b][:, None, None].to(work)
                        nv[b] = torch.where(at[b], torch.linalg.vector_norm(mean, dim=-1)[:, None], nv[b])
                    del mean, o
            else:
                zpts = zorig
                norms = xnorm
            gsim = zpts.reshape(G, Q, width)
            u32 = u = gsim / norms.reshape(G, Q, 1).clamp_min(1e-12)  # sketch of the unit point
            if low is not None:  # similarities only; means and outputs stay in the working dtype
                u = u.to(low)
            info["sketch"] = (self.sketch, width)
        D = gsim.shape[-1]  # d, or the sketch width

        # 4. initial anchors
        # frame slot of every point (-1 for static points: they stand for every frame of their clip)
        # ("spread": a static point counts as a token of its slot's frame)
        agnostic = spt.view(C, Lmax, N) & (self.static_place != "frame")
        pframe = torch.where(agnostic, -1, ell[None, :, None]).reshape(G, Q)
        score = None
        if self.init == "attention" or (self.init == "kcenter" and self.score_weight > 0):
            g = video.global_scores if video.global_scores is not None else video.local_scores
            if g is None:
                g = distinctiveness(X.to(work))  # fp16/bf16 sketch path: a working copy (this fallback only)
                info["scores"] = "fallback: distinctiveness 1 - cos(token, frame mean)"
            gs = g.to(work).reshape(F * N)[pos]
            if runs and has_static:  # a run's point scores the mean over its run
                gm = torch.zeros(F * N, dtype=work, device=dev).index_add_(0, rep_flat, g.to(work).reshape(F * N))
                gs = torch.where(spt, (gm / run_len.clamp_min(1).to(work))[pos], gs)
            elif bool(static.any()):  # a static point scores the mean over its clip
                gm = (gs.view(C, Lmax, N) * frame_ok[..., None].to(work)).sum(1) / lengths[:, None].to(work)
                gs = gs.clone()
                gs = torch.where(at, gm[:, None], gs.view(C, Lmax, N)).reshape(C, P)
            score = gs.view(G, Q)
        boost = gweight.clamp_min(1).pow(self.mass_weight) if self.mass_weight > 0 and has_static else None
        if self.init == "kcenter-frame" and self.group == "clip" and Lmax > 1:
            fcaps = gvalid.view(C, Lmax, N).sum(-1)
            # the split is a function of (count, frame caps) alone: done once per distinct pair (uniform
            # clips without static points: 2 pairs for 8 clips), from two host syncs, not 2 per clip
            ck, fk = counts.tolist(), [tuple(r) for r in fcaps.tolist()]
            split: dict = {}
            for c, key in enumerate(zip(ck, fk)):  # a loop over clips, not tokens
                if key not in split:
                    n, fc = key[0], fcaps[c]
                    split[key] = (group_budget(n, fc.to(torch.float64), fc) if n >= sum(v > 0 for v in key[1])
                                  else split_budget(n, fc.to(torch.float64), fc))
            fcounts = torch.stack([split[key] for key in zip(ck, fk)]).to(dev)
            seeds = kcenter_rounds(u.view(C, Lmax, N, D), gvalid.view(C, Lmax, N), fcounts, frame=pframe,
                                   penalty=self.frame_penalty, linear=self.penalty_shape == "linear", boost=boost)
        elif self.init in ("kcenter", "kcenter-frame"):
            seeds = kcenter_anchors(u, gvalid, counts, score, self.score_weight, frame=pframe, penalty=self.frame_penalty,
                                    linear=self.penalty_shape == "linear", boost=boost)
        elif self.init == "grid":  # evenly spaced in raster order over each group's valid points
            order = torch.argsort((~gvalid).to(torch.int8), dim=1, stable=True)
            at = ((torch.arange(kg, device=dev)[None] + 0.5) * caps.to(dev)[:, None] / counts.clamp_min(1)[:, None]).long()
            seeds = order.gather(1, at.clamp_max(Q - 1))
        else:
            if self.init == "attention":
                key = score
            else:
                gen = torch.Generator().manual_seed(self.seed)
                key = torch.rand(G, Q, generator=gen).to(dev, work)
            seeds = torch.argsort(key.masked_fill(~gvalid, float("-inf")), dim=1, descending=True, stable=True)[:, :kg]
        pinned = torch.where(gvalid_a, seeds, seeds[:, :1])  # padding anchors repeat a real seed (never used)
        home = pframe.gather(1, pinned)  # (G, kg) frame slot of each initial anchor (-1: static point)
        place = home  # frame slot where each anchor's output sits (-1: any)
        if self.static_place == "spread" and has_static:  # an anchor seeded on a static point: its slot
            slot_pt = ell[None, :, None].expand(C, Lmax, N).reshape(G, Q)
            place = torch.where(home < 0, slot_pt.gather(1, pinned), home)
        A = gsim.reshape(G * Q, D).index_select(0, (torch.arange(G, device=dev)[:, None] * Q + pinned).reshape(-1)).view(
            G, kg, D)  # (G, kg, D); index_select: ~6x faster than gather here

        # 5. plan / barycentre alternations
        ar_g = torch.arange(G, device=dev)[:, None]
        anchor_ids = torch.arange(kg, device=dev)
        assign_g = None
        # static points weigh their frames; the points are our own copy then (the static means written
        # into it), and nothing reads them unweighted after A above: weight them in place
        wpts = gsim.mul_(gweight[..., None]).reshape(G * Q, D) if has_static else None
        penalize = self.frame_penalty > 0 and self.group == "clip" and Lmax > 1
        linear = self.penalty_shape == "linear"
        flat_ids = ar_g * kg  # (G, 1) offset of each group's anchors
        # (group, anchor) of every padding anchor: their columns of the cosines are set by index
        # (a broadcast masked_fill_ over all (G, Q, kg) cosines was ~9x slower on CPU)
        pad_cols = (~gvalid_a).nonzero(as_tuple=True)
        for _ in range(self.iters):
            cos = lowp_matmul(u, unit_rows(A).to(u.dtype).transpose(1, 2)).to(work)  # (G, Q, kg)
            if penalize:  # spatio-temporal cost: a point of another frame than the anchor's costs more
                fa = home if self.placement == "home" else pframe.gather(1, pinned)  # (G, kg) anchor frames
                if has_static:
                    # frame-major as below; rows of static points (frame -1) and columns of static-seeded
                    # anchors pay nothing (one (G, Lmax, N, kg) product instead of the general _cross)
                    fl = ell[None, :, None]
                    gap = (fl - fa[:, None, :]).abs() if linear else (fl != fa[:, None, :])
                    gap = (gap * (fa >= 0)[:, None, :]).to(work).mul_(self.frame_penalty)  # (G, Lmax, kg)
                    cos.view(G, Lmax, N, kg).sub_(gap[:, :, None, :] * (pframe >= 0).view(G, Lmax, N, 1))
                else:  # points are frame-major: one broadcast pass over (G, Lmax, N, kg)
                    gap = (ell[None, :, None] - fa[:, None, :]).abs() if linear else (ell[None, :, None] != fa[:, None, :])
                    cos.view(G, Lmax, N, kg).sub_(gap.to(work).mul_(self.frame_penalty)[:, :, None, :])
            cos.transpose(1, 2)[pad_cols] = -2.0  # (n_pad, Q) columns
            if assign_g is not None:  # re-pin each anchor to its medoid: the member nearest its new mean
                own = cos.gather(2, assign_g[..., None]).squeeze(2)  # (G, Q) (penalized) cosine to own anchor
                ok = gvalid
                if self.placement == "home":  # the pinned member stays in the anchor's home frame
                    h = home.gather(1, assign_g)
                    ok = ok & ((h < 0) | (h == pframe))
                ids = (flat_ids + assign_g)[ok]
                top = torch.full((G * kg,), -4.0, dtype=work, device=dev).scatter_reduce_(
                    0, ids, own[ok], reduce="amax", include_self=True)
                hit = own[ok] == top[ids]
                first = torch.full((G * kg,), Q, dtype=torch.long, device=dev).scatter_reduce_(
                    0, ids[hit], torch.arange(Q, device=dev).expand(G, Q)[ok][hit], reduce="amin", include_self=True)
                first = first.view(G, kg)
                pinned = torch.where(gvalid_a & (first < Q), first, pinned)
            assign_g = self._assign(cos, gvalid_a, gweight, info)
            assign_g[ar_g.expand(G, kg)[gvalid_a], pinned[gvalid_a]] = anchor_ids.expand(G, kg)[gvalid_a]
            A = self._means(gsim, gweight, assign_g, G, kg, wpts)
        # back to clips: anchor ids per clip
        kmax = kg * (G // C)
        A = A.reshape(C, kmax, D)
        valid_a = gvalid_a.reshape(C, kmax)
        if self.group == "frame":
            assign_pt = (ell[None, :, None] * kg + assign_g.view(C, Lmax, N)).reshape(C, P)
        else:
            assign_pt = assign_g

        # 6. output: one token per valid anchor, at its medoid input token
        # (C, P) global anchor id of every input token: the anchor of its point (possibly in another clip)
        flat_a = (ar_c * kmax + assign_pt).reshape(C * P)[rep_cq.reshape(C * P)].view(C, P)
        ua = unit_rows(A).reshape(C * kmax, D)

        def unit_tokens(b: slice) -> torch.Tensor:
            """(c, P, D) unit input tokens of clips ``b`` (their sketches in the sketch space)."""
            if not has_static and u32 is not None:  # the points are the tokens
                return u32.view(C, P, D)[b]
            if width is None:
                return unit_rows(clip_tokens(b))
            return zorig[b] / xnorm[b][..., None].clamp_min(1e-12)

        # cosine of every token to its anchor, block by block of clips (no (C, P, D) product at once)
        cos_tok = torch.empty(C, P, dtype=work, device=dev)
        for b in _blocks(C, P * D * esz):
            cos_tok[b] = (unit_tokens(b) * ua.index_select(0, flat_a[b].reshape(-1)).view(-1, P, D)).sum(-1)
        cos_tok = cos_tok.masked_fill(~valid_tok, -3.0)
        if self.placement == "home":  # the medoid among the members of the anchor's home frame
            h = place.reshape(C * kmax)[flat_a]
            hg = starts[flat_a // kmax] + h  # the home frame's index in the video
            away = (h >= 0) & (hg != frame.repeat_interleave(N, dim=1))
            if place is not home:  # a static-seeded anchor may have no member left in its slot: any frame
                best = torch.full((C * kmax,), -4.0, dtype=work, device=dev).scatter_reduce_(
                    0, flat_a.reshape(-1), cos_tok.masked_fill(away, -3.5).reshape(-1), reduce="amax",
                    include_self=True)
                away = away & (best > -2.0)[flat_a]
            cos_tok = cos_tok.masked_fill(away, -3.5)
        best = torch.full((C * kmax,), -4.0, dtype=work, device=dev)
        best.scatter_reduce_(0, flat_a.reshape(-1), cos_tok.reshape(-1), reduce="amax", include_self=True)
        is_best = (cos_tok.reshape(-1) == best[flat_a.reshape(-1)]) & valid_tok.reshape(-1)
        src = torch.full((C * kmax,), F * N, dtype=torch.long, device=dev)
        src.scatter_reduce_(0, flat_a.reshape(-1)[is_best], pos.reshape(-1)[is_best], reduce="amin", include_self=True)
        out_ids = valid_a.reshape(-1).nonzero().squeeze(1)
        row_of = torch.full((C * kmax,), -1, dtype=torch.long, device=dev)
        row_of[out_ids] = torch.arange(out_ids.numel(), device=dev)
        assignment = torch.empty(F * N, dtype=torch.long, device=dev)
        assignment[pos[valid_tok]] = row_of[flat_a[valid_tok]]
        source = src[out_ids]
        if self.output == "mean" and width is not None:  # the only full-d step: one pass over the tokens
            # rows in source order already, so assemble() need not copy the (K, d) output to sort it
            order = torch.argsort(source)
            rank = torch.empty_like(order)
            rank[order] = torch.arange(order.numel(), device=dev)
            source, assignment = source[order], rank[assignment]
            spans = None
            if X.dtype != work and not (runs and has_static):  # diagonal blocks of the plan: blocks of clips
                # (rows contiguous); a run across clips breaks that: then half x is converted whole
                row_at = [0] + valid_a.sum(1).cumsum(0).tolist()  # one host sync
                spans = [(row_at[b.start], row_at[b.stop], clips[b.start][0] * N, clips[b.stop - 1][1] * N)
                         for b in _blocks(C, P * d * esz)]
            tokens = token_means(Xf, assignment, out_ids.numel(), spans)
        elif self.output == "mean":
            tokens = A.reshape(C * kmax, d)[out_ids]
        else:
            tokens = Xf[source]
        info["iters"] = self.iters
        return assemble(tokens.to(X_in.dtype), source, assignment, F, video.grid, info)

    # -- steps --------------------------------------------------------------------
    def _assign(self, cos, valid_a, weight, info) -> torch.Tensor:
        """Anchor of every point: nearest anchor, or argmax over anchors of the transport plan.

        ``cos`` (G, Q, kg): similarity of every point to every anchor (padding anchors -2);
        ``valid_a`` (G, kg); ``weight`` (G, Q) point masses. Returns (G, Q) anchor indices."""
        nearest = cos.argmax(2)
        if self.assign == "nearest":
            return nearest
        G, Q, kg = cos.shape
        empty = ~valid_a.any(1, keepdim=True)  # groups without anchors: a dummy problem, result unused
        b = torch.where(empty, torch.ones_like(weight), weight)
        b = b / b.sum(1, keepdim=True)
        if self.anchor_marginal == "mass":
            a = torch.zeros(G, kg, dtype=cos.dtype, device=cos.device).scatter_add_(1, nearest, b)
            a = torch.where(valid_a, a + 1e-3 / kg, torch.zeros_like(a))  # no anchor starts at zero mass
        else:
            a = valid_a.to(cos.dtype)
        a = torch.where(empty, torch.ones_like(a), a)
        a = a / a.sum(1, keepdim=True)
        cost = (1.0 - cos.transpose(1, 2)).masked_fill(~valid_a[..., None], 3.0)  # (G, kg, Q)
        res = sinkhorn(cost, a, b, eps=self.eps, max_iter=self.max_iter, tol=self.tol, warn=False)
        info.update(sinkhorn_iters=res.n_iter, sinkhorn_marginal_error=float(res.marginal_error.max()),
                    sinkhorn_converged=bool(res.converged.all()))
        plan = res.plan.masked_fill(~valid_a[..., None], -1.0)
        return plan.argmax(1)

    @staticmethod
    def _means(pts, weight, assign_pt, C, kmax, wp=None):
        """Mass-weighted means of the points assigned to each anchor, (C, kmax, d).

        ``wp``: ``pts * weight`` flattened, when already computed (None: weights are 0/1 and
        the zero-weight points are padding, masked by routing them to a spare row)."""
        d = pts.shape[-1]
        ids = (torch.arange(C, device=pts.device)[:, None] * kmax + assign_pt).reshape(-1)
        if wp is None:
            ids = torch.where(weight.reshape(-1) > 0, ids, C * kmax)  # padding -> spare row
            sums = torch.zeros(C * kmax + 1, d, dtype=pts.dtype, device=pts.device).index_add_(
                0, ids, pts.reshape(-1, d))[:-1]
            wsum = torch.zeros(C * kmax + 1, dtype=pts.dtype, device=pts.device).index_add_(
                0, ids, weight.reshape(-1))[:-1]
            return (sums / wsum.clamp_min(1e-30)[:, None]).reshape(C, kmax, d)
        sums = torch.zeros(C * kmax, d, dtype=pts.dtype, device=pts.device).index_add_(0, ids, wp)
        wsum = torch.zeros(C * kmax, dtype=pts.dtype, device=pts.device).index_add_(0, ids, weight.reshape(-1))
        return (sums / wsum.clamp_min(1e-30)[:, None]).reshape(C, kmax, d)
