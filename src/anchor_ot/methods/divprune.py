"""``divprune``: greedy max-min diversity selection over all tokens of the video."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from anchor_ot.methods import register
from anchor_ot.methods._frames import unit_rows, work_dtype
from anchor_ot.methods.base import Reducer, assemble
from anchor_ot.types import ReducedVideo, VideoTokens

__all__ = ["DivPrune", "max_min_select"]

#: Above this many tokens the (M, M) similarity matrix is not stored (8192 tokens = 256 MiB
#: in fp32); rows are recomputed per step instead. Both paths pick the same tokens up to
#: floating-point ties.
GRAM_MAX_TOKENS = 8192
_BLOCK = 2048


def _symmetric_gram(xn: torch.Tensor) -> torch.Tensor:
    # xn @ xn.T computing only the blocks on and above the diagonal (half the multiply-adds)
    # and mirroring them; the mirror is a transpose, so the matrix is exactly symmetric.
    M = xn.shape[0]
    gram = torch.empty((M, M), dtype=xn.dtype, device=xn.device)
    for i in range(0, M, _BLOCK):
        blk = xn[i:i + _BLOCK] @ xn[i:].T  # (b, M - i)
        gram[i:i + _BLOCK, i:] = blk
        gram[i + _BLOCK:, i:i + _BLOCK] = blk[:, _BLOCK:].T
    return gram


def max_min_select(xn: torch.Tensor, k: int, gram_max_tokens: int = GRAM_MAX_TOKENS) -> tuple[torch.Tensor, torch.Tensor]:
    """Greedy max-min diversity selection (DivPrune, arXiv 2503.02175: the greedy max-min diversity solver).

    Distance is ``1 - cos``. The first pick is the token whose nearest neighbour is
    farthest; each next pick is the unselected token whose nearest selected token
    is farthest. Working with similarities, that is ``argmin`` of the largest
    similarity.

    Parameters
    ----------
    xn : torch.Tensor, shape (M, d), float32 or float64
        Unit-norm tokens.
    k : int
        Number to select, ``1 <= k <= M``.
    gram_max_tokens : int, default :data:`GRAM_MAX_TOKENS`
        Store the (M, M) similarity matrix when ``M <=`` this; otherwise compute
        one row per step (``M * d`` work) and the first pick in row blocks.

    Returns
    -------
    picks : torch.LongTensor, shape (k,)
        Selected indices in pick order (distinct).
    owner : torch.LongTensor, shape (M,)
        For every token, the pick step (index into ``picks``) of its most similar
        selected token (first such step on ties); ``owner[picks] = arange(k)``.

    Notes
    -----
    Precision: similarities are computed in float32 (float64 for float64
    input); output tokens are the input tokens, in their dtype, bit for bit.

    Each step is ``argmin`` plus one in-place ``maximum`` of the running "largest
    similarity to the selected set" with the new pick's row (O(M); the official
    code takes the minimum over all selected rows again, O(k * M) per step, same
    result). The similarity matrix's diagonal is set to +inf after the
    nearest-neighbour pass, so a selected token is never selected again, even
    when tokens repeat (the official ``argmax`` can pick a duplicate again when
    all remaining distances are 0).
    """
    M = xn.shape[0]
    dev = xn.device
    gram = _symmetric_gram(xn) if M <= gram_max_tokens else None
    # nearest-neighbour similarity of every token (self excluded)
    nn_sim = torch.zeros(M, dtype=xn.dtype, device=dev)
    if M > 1:
        for s in range(0, M, _BLOCK):
            blk = gram[s:s + _BLOCK].clone() if gram is not None else xn[s:s + _BLOCK] @ xn.T
            ar = torch.arange(blk.shape[0], device=dev)
            blk[ar, ar + s] = float("-inf")
            nn_sim[s:s + _BLOCK] = blk.max(1).values
    if gram is not None:
        gram.fill_diagonal_(float("inf"))  # a pick's own entry: never picked again, owns itself

    def row(i: torch.Tensor) -> torch.Tensor:
        if gram is not None:
            return gram[i]
        r = xn @ xn[i]
        r[i] = float("inf")
        return r

    picks = torch.empty(k, dtype=torch.long, device=dev)
    picks[0] = torch.argmin(nn_sim)
    best = row(picks[0]).clone()  # largest similarity to the selected set (+inf at picks)
    for i in range(1, k):
        picks[i] = torch.argmin(best)
        torch.maximum(best, row(picks[i]), out=best)
    # owner: most similar pick (first on ties); a pick's own entry is +inf, so it owns itself
    if gram is not None:
        owner = gram[:, picks].argmax(1)
    else:
        # in row blocks: the (M, k) similarity to the picks is never held whole (at F = 256,
        # N = 196, k = 5018 it would be 1 GB in fp32); each row's argmax is unchanged
        kept = xn[picks]  # (k, d)
        step_of = torch.full((M,), -1, dtype=torch.long, device=dev)
        step_of[picks] = torch.arange(k, device=dev)
        owner = torch.empty(M, dtype=torch.long, device=dev)
        for s in range(0, M, _BLOCK):
            blk = xn[s:s + _BLOCK] @ kept.T  # (b, k)
            own_step = step_of[s:s + _BLOCK]
            is_pick = torch.nonzero(own_step >= 0).squeeze(1)
            blk[is_pick, own_step[is_pick]] = float("inf")  # a pick owns itself
            owner[s:s + _BLOCK] = blk.argmax(1)
    return picks, owner


@register
@dataclass(repr=False)
class DivPrune(Reducer):
    """DivPrune (Alvar et al., CVPR 2025, arXiv 2503.02175) over all F*N tokens.

    Token pruning as a max-min diversity problem, solved greedily
    (:func:`max_min_select`): one selection over the whole video, distance
    ``1 - cos``, as the official code does for video input.

    Parameters
    ----------
    retention : float, default 0.1
        Fraction of tokens kept, in (0, 1]. ``K = round(retention * F * N)``
        (the official ``int(round(ratio * length))``).

    Notes
    -----
    Output tokens are the selected input tokens, unchanged, in temporal-raster
    order (the official code also sorts them). Frames may keep different counts,
    including none.

    Assignment (our addition; DivPrune drops the rest): every token is assigned to
    its most cosine-similar selected token, in any frame, so ``mass`` says how many
    tokens each kept token stands for.

    Deviations: selected tokens are excluded from later picks (the official
    ``argmax`` may pick a duplicate again when all remaining distances are 0, which
    would return fewer distinct tokens); at ``K = F*N`` every token is returned
    without running the greedy loop (same set).

    Cost: the similarity matrix, ``(F*N)^2 * d / 2`` multiply-adds (symmetric;
    the first pick needs every nearest neighbour, so this is unavoidable for the
    exact algorithm), then ``K`` steps of two O(F*N) tensor ops. Above
    :data:`GRAM_MAX_TOKENS` tokens the matrix is not stored: the nearest
    neighbours are found in row blocks (``(F*N)^2 * d``) and each step computes
    its row, O(F*N*d). At F = 32, N = 196, d = 3584 this takes 3-4 s on one CPU
    thread, where the other methods take tens to hundreds of ms
    (``benchmarks/methods_speed.py``).
    """

    name: ClassVar[str] = "divprune"
    description: ClassVar[str] = "greedy max-min diversity selection over all tokens (distance 1 - cos)"
    paper: ClassVar[str] = "arXiv:2503.02175"

    def reduce(self, video: VideoTokens, num_kept: int) -> ReducedVideo:
        """Select ``num_kept`` diverse tokens and assign the rest; see the class notes."""
        x = video.tokens
        Fr, N, d = x.shape
        M = Fr * N
        flat = x.reshape(M, d)
        if num_kept == M:
            ar = torch.arange(M, device=x.device)
            return assemble(flat, ar, ar, Fr, video.grid, {"shortcut": "all tokens kept"})
        with torch.no_grad():  # a selection: gradients flow through the kept tokens only
            picks, owner = max_min_select(unit_rows(flat.to(work_dtype(x.dtype))), num_kept)
        return assemble(flat[picks], picks, owner, Fr, video.grid, {})
