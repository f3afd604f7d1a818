"""Shared helpers of the density/cluster peers (FastVID, PruneVid, OTT-Vid).

- :func:`pairwise_dist`: batched Euclidean distances from one Gram product.
- :func:`dpc_knn_scores`: density-peak scores of DPC-kNN (Du et al. 2016, as used by
  PruneVid arXiv 2412.16117 and FastVID arXiv 2503.11187), batched with a validity mask.
- :func:`split_budget`: exact integer split of a budget by weights under caps.
- :func:`attach_orphans`: give dropped tokens an owner (most similar kept token).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["pairwise_dist", "dpc_knn_scores", "split_budget", "attach_orphans", "rank_desc"]


def pairwise_dist(x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
    """Euclidean distances ``||x_i - y_j|| / sqrt(d)`` for batches ``(B, n, d)``, ``(B, m, d)``.

    Scaled by ``1/sqrt(d)`` as PruneVid's and FastVID's ``cdist(x, x) / sqrt(C)``.
    Returns ``(B, n, m)`` in x's dtype; computed as ``|x|^2 + |y|^2 - 2 x.y`` (one baddbmm).
    Without ``y`` the diagonal is exactly 0, so density ties (e.g. DPC-kNN with ``k = 1``,
    where each point's only neighbour is itself) are real ties, broken by index.
    """
    y = x if y is None else y
    xx = torch.linalg.vector_norm(x, dim=-1).square_()
    yy = xx if y is x else torch.linalg.vector_norm(y, dim=-1).square_()
    d2 = torch.baddbmm(xx.unsqueeze(-1) + yy.unsqueeze(-2), x, y.transpose(1, 2), alpha=-2.0).clamp_min_(0.0)
    if y is x:  # a point's distance to itself is 0, not the expansion's rounding residue
        d2.diagonal(dim1=-2, dim2=-1).zero_()
    return d2.sqrt_().div_(x.shape[-1] ** 0.5)


def dpc_knn_scores(dist: torch.Tensor, valid: torch.Tensor, k: int | torch.Tensor) -> torch.Tensor:
    """Density-peak score ``rho * delta`` of every point (DPC-kNN).

    Parameters
    ----------
    dist : torch.Tensor, shape (B, n, n)
        Pairwise distances (self-distance 0).
    valid : torch.BoolTensor, shape (B, n)
        Points taking part; the others get score ``-inf`` and are ignored.
    k : int or torch.LongTensor of shape (B,)
        Neighbours for the local density ``rho_i = exp(-mean_{j in kNN(i)} d_ij^2)``
        (the point itself counts, as in the reference code); clipped to the
        number of valid points. A tensor gives each batch its own ``k`` (HoliTom
        uses ``min(7, clusters)`` per window).

    Returns
    -------
    torch.Tensor, shape (B, n)
        ``rho_i * delta_i`` with ``delta_i`` the distance to the nearest point of
        higher density (for the densest point: the largest distance in its batch).

    Notes
    -----
    The reference implementations break density ties with random noise; here
    ties go to the lower index, so the result is deterministic.
    """
    B, n, _ = dist.shape
    big = torch.finfo(dist.dtype).max / 4
    vcol = valid.unsqueeze(1)
    d = dist.masked_fill(~vcol, big)
    if isinstance(k, torch.Tensor):
        kb = k.to(device=dist.device, dtype=torch.long).clamp(1, n)
        kk = int(kb.max()) if B else 1
        near = torch.topk(d, kk, dim=-1, largest=False).values
        ok = (near < big) & (torch.arange(kk, device=dist.device).view(1, 1, kk) < kb.view(B, 1, 1))
    else:
        kk = max(1, min(k, n))
        near = torch.topk(d, kk, dim=-1, largest=False).values
        ok = near < big
    cnt = ok.sum(-1).clamp_min(1)
    rho = torch.exp(-(near.masked_fill(~ok, 0.0) ** 2).sum(-1) / cnt)
    idx = torch.arange(n, device=dist.device)
    higher = (rho.unsqueeze(1) > rho.unsqueeze(2)) | (
        (rho.unsqueeze(1) == rho.unsqueeze(2)) & (idx.view(1, 1, n) < idx.view(1, n, 1))
    )
    higher &= vcol
    dmax = dist.masked_fill(~(vcol & valid.unsqueeze(2)), 0.0).flatten(1).max(-1).values
    delta = torch.where(higher, dist, dmax.view(B, 1, 1).expand(B, n, n)).min(-1).values
    delta = torch.minimum(delta, dmax.view(B, 1))
    score = rho * delta
    return score.masked_fill(~valid, float("-inf"))


def rank_desc(score: torch.Tensor) -> torch.Tensor:
    """Rank of each entry along the last axis, 0 = largest; ties by index (stable)."""
    order = torch.sort(score, dim=-1, descending=True, stable=True).indices
    rank = torch.empty_like(order)
    rank.scatter_(-1, order, torch.arange(score.shape[-1], device=score.device).expand_as(order))
    return rank


def split_budget(total: int, weights: torch.Tensor, caps: torch.Tensor) -> torch.Tensor:
    """Split ``total`` into integers proportional to ``weights``, each at most its cap.

    Largest-remainder rounding (ties to the lower index); the share a capped
    group cannot take is redistributed over the others by their weights, round
    after round. Groups with zero weight get a share only once every group with
    positive weight is full (then equally).

    Parameters
    ----------
    total : int
        Amount to split, ``0 <= total <= caps.sum()``.
    weights : torch.Tensor, shape (G,)
        Non-negative weights.
    caps : torch.LongTensor, shape (G,)
        Upper bound of each share.

    Returns
    -------
    torch.LongTensor, shape (G,)
        Shares summing exactly to ``total``.

    Raises
    ------
    ValueError
        If ``total`` exceeds the summed caps (a bug in the caller).
    """
    caps = caps.to(torch.long).cpu()
    w = weights.detach().to(torch.float64).cpu().clamp_min(0.0)
    if total > int(caps.sum()):
        raise ValueError(f"cannot place {total} into groups holding {int(caps.sum())} in all")
    alloc = torch.zeros_like(caps)
    remaining = int(total)
    while remaining > 0:
        active = alloc < caps
        ww = torch.where(active, w, torch.zeros_like(w))
        if float(ww.sum()) <= 0.0:
            ww = active.to(torch.float64)
        share = ww / ww.sum() * remaining
        base = share.floor().to(torch.long)
        left = remaining - int(base.sum())
        if left > 0:
            frac = torch.where(active, share - base.to(torch.float64), torch.full_like(share, -1.0))
            top = torch.sort(frac, descending=True, stable=True).indices[:left]
            base[top] += 1
        add = torch.minimum(base, caps - alloc)
        alloc += add
        remaining -= int(add.sum())
    return alloc


def attach_orphans(x_flat: torch.Tensor, assignment: torch.Tensor, out_tokens: torch.Tensor) -> torch.Tensor:
    """Assign every input with ``assignment == -1`` to its most similar output (cosine).

    Parameters
    ----------
    x_flat : torch.Tensor, shape (T, d), float
        All input tokens.
    assignment : torch.LongTensor, shape (T,)
        Output row per input, ``-1`` for the unassigned ones (modified copy returned).
    out_tokens : torch.Tensor, shape (K, d)
        Output tokens.
    """
    orphan = (assignment < 0).nonzero().squeeze(1)
    if orphan.numel() == 0:
        return assignment
    sim = F.normalize(x_flat[orphan], dim=-1) @ F.normalize(out_tokens, dim=-1).T
    assignment = assignment.clone()
    assignment[orphan] = sim.argmax(-1)
    return assignment
