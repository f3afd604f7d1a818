r"""Batched entropic optimal transport (Sinkhorn-Knopp), the solver behind every OT method here.

All problems of a batch (e.g. one per frame) are solved together: no Python loop
over problems, one host sync per iteration for the stopping test.

The problem (Cuturi 2013, NeurIPS; AOT arXiv 2603.01400 eq. 4-5 and 23-24) is

.. math::

    T^\star = \arg\min_{T \ge 0,\; T\mathbf 1 = a,\; T^\top \mathbf 1 = b}
              \langle T, C\rangle - \varepsilon H(T),
    \qquad H(T) = -\sum_{ij} T_{ij} (\log T_{ij} - 1),

solved by alternating scalings :math:`u = a / (K v)`, :math:`v = b / (K^\top u)`
with :math:`K = \exp(-C/\varepsilon)` and :math:`T = \mathrm{diag}(u) K \mathrm{diag}(v)`.

Numerics (measured, see ``docs/benchmarks.md``): the scaling form is run on a cost
shifted by its minimum; when that leaves a range over ``eps`` above 50 the cost is
shifted by its row and column minima instead (the plan is unchanged), which keeps
every row and column of ``K`` holding an entry of 1; when the shifted cost range over
``eps`` exceeds ``_SCALING_MAX_EXPONENT`` the solver switches to the log domain
(``logsumexp`` updates), which is exact for any ``eps``. Half-precision input is
computed in float32. The stopping rule is the marginal L1 error relative to the
total mass, not the change of the scaling vector (the paper's Algorithm 1 line 9
stops on ``|v_t - v_{t-1}|``, which is scale-dependent and stops after ~2
iterations with uniform marginals: a deliberate deviation).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch

from anchor_ot._validation import check_choice, check_int, check_number

__all__ = ["SinkhornResult", "SinkhornNotConverged", "sinkhorn", "cosine_cost"]

# exp(-50) ~ 2e-22: comfortably inside float32's normal range (1e-38), so the
# scaling vectors cannot overflow before the marginals converge.
_SCALING_MAX_EXPONENT = 50.0


class SinkhornNotConverged(RuntimeWarning):
    """Warned when some problems of a batch miss ``tol`` within ``max_iter`` iterations."""


@dataclass(frozen=True)
class SinkhornResult:
    """Output of :func:`sinkhorn`.

    Attributes
    ----------
    plan : torch.Tensor, shape (B, m, n), float32 (float64 for float64 input)
        Transport plans; row sums approach ``a``, column sums equal ``b``.
    n_iter : int
        Scaling iterations run (one iteration = one ``u`` and one ``v`` update).
    converged : torch.BoolTensor, shape (B,)
        Whether each problem's relative marginal error is below ``tol``.
    marginal_error : torch.Tensor, shape (B,)
        ``(||T 1 - a||_1 + ||T^T 1 - b||_1) / sum(a)`` of the returned plan.
    transport_cost : torch.Tensor, shape (B,)
        ``<T, C>``, the transport part of the objective (no entropy term).
    method : str
        ``"scaling"`` or ``"log"``: which form ran.
    """

    plan: torch.Tensor
    n_iter: int
    converged: torch.Tensor
    marginal_error: torch.Tensor
    transport_cost: torch.Tensor
    method: str


def _marginal(name: str, x: torch.Tensor | None, B: int, size: int, like: torch.Tensor) -> torch.Tensor:
    if x is None:
        return torch.full((B, size), 1.0 / size, dtype=like.dtype, device=like.device)
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape ({B}, {size}) or None")
    if x.dim() == 1 and x.shape[0] == size:
        x = x.expand(B, size)
    if tuple(x.shape) != (B, size):
        raise ValueError(f"{name} must have shape (B, {'m' if name == 'a' else 'n'}) = ({B}, {size}), got {tuple(x.shape)}")
    x = x.to(device=like.device, dtype=like.dtype)
    if not torch.isfinite(x).all() or bool((x < 0).any()):
        raise ValueError(f"marginal {name} must be finite and non-negative")
    if bool((x.sum(-1) <= 0).any()):
        raise ValueError(f"every problem needs positive total mass in {name}; drop empty problems from the batch")
    return x


def sinkhorn(
    cost: torch.Tensor,
    a: torch.Tensor | None = None,
    b: torch.Tensor | None = None,
    eps: float = 0.1,
    max_iter: int = 100,
    tol: float = 1e-3,
    method: str = "auto",
    warn: bool = True,
) -> SinkhornResult:
    r"""Solve a batch of entropic OT problems with Sinkhorn-Knopp.

    Parameters
    ----------
    cost : torch.Tensor, shape (B, m, n), floating
        Cost matrices, finite. fp16/bf16 are computed in float32.
    a : torch.Tensor, shape (B, m) or (m,), optional
        Source marginals (rows), non-negative; zeros mark padding rows, which get
        an all-zero plan row. Default: uniform ``1/m``.
    b : torch.Tensor, shape (B, n) or (n,), optional
        Target marginals (columns); same rules. ``a`` and ``b`` must have equal
        totals per problem. Default: uniform ``1/n``.
    eps : float, default 0.1
        Entropic regularization :math:`\varepsilon > 0`, in cost units (the AOT
        paper's :math:`\lambda`, Sec. 7: 0.1).
    max_iter : int, default 100
        Iteration cap (AOT Sec. 7: 100).
    tol : float, default 1e-3
        Stop when every problem's marginal L1 error, relative to its total
        mass, is below ``tol``.
    method : {"auto", "scaling", "log"}, default "auto"
        ``"auto"`` runs the scaling form; when the min-shifted cost range over
        ``eps`` exceeds 50 (where fp32 scaling vectors can overflow) it checks the
        result and redoes the solve in the log domain if the plan is not finite
        or did not converge (``benchmarks/sinkhorn_numerics.py`` measures both).
    warn : bool, default True
        Warn :class:`SinkhornNotConverged` when some problem misses ``tol``.

    Returns
    -------
    SinkhornResult
        Plans, iterations, convergence flags and marginal errors.

    Raises
    ------
    TypeError
        If ``cost`` is not a floating tensor.
    ValueError
        If shapes disagree, values are NaN/inf or negative marginals, totals of
        ``a`` and ``b`` differ, or ``eps``/``max_iter``/``tol`` are out of range.

    Examples
    --------
    >>> import torch
    >>> res = sinkhorn(torch.rand(32, 20, 150), eps=0.1)
    >>> res.plan.shape
    torch.Size([32, 20, 150])
    >>> bool(res.converged.all())
    True
    """
    if not isinstance(cost, torch.Tensor) or not cost.is_floating_point():
        raise TypeError("cost must be a floating torch.Tensor of shape (B, m, n)")
    if cost.dim() != 3:
        raise ValueError(f"cost must have shape (B, m, n), got {tuple(cost.shape)}; add a batch axis with cost[None]")
    B, m, n = cost.shape
    if B == 0 or m == 0 or n == 0:
        raise ValueError(f"cost must be non-empty, got shape {tuple(cost.shape)}")
    eps = check_number("eps", eps, low=0.0, low_open=True)
    max_iter = check_int("max_iter", max_iter, low=1)
    tol = check_number("tol", tol, low=0.0, low_open=True)
    method = check_choice("method", method, ("auto", "scaling", "log"))
    work = torch.promote_types(cost.dtype, torch.float32)  # fp16/bf16 -> fp32; fp64 stays
    C = cost.to(work)
    # a float64 sum of finite fp16/bf16/fp32 values cannot overflow: finite iff every entry is
    if not bool(torch.isfinite(C.sum(dtype=torch.float64))) and not (
            work == torch.float64 and bool(torch.isfinite(C).all())):
        raise ValueError("cost contains NaN or inf; check the features the cost was built from")
    a = _marginal("a", a, B, m, C)
    b = _marginal("b", b, B, n, C)
    total = a.sum(-1)
    if not torch.allclose(total, b.sum(-1), rtol=1e-5, atol=0.0):
        raise ValueError("marginals a and b must have the same total mass in every problem")

    # Shifting C by per-problem, per-row or per-column constants leaves the plan unchanged.
    padded = bool((a == 0).any()) or bool((b == 0).any())
    active = ((a > 0)[:, :, None] & (b > 0)[:, None, :]) if padded else None
    lo = (torch.where(active, C, C.new_tensor(float("inf"))) if padded else C).amin(dim=(1, 2))
    hi = (torch.where(active, C, C.new_tensor(float("-inf"))) if padded else C).amax(dim=(1, 2))
    if method != "log" and float((hi - lo).max().detach()) / eps <= _SCALING_MAX_EXPONENT:
        # common case (cosine costs, eps >= 0.04): one shift per problem suffices
        Cs, method = C - lo[:, None, None], "scaling"
    else:
        # row then column minima over active entries: every row and column holds a zero
        inf = C.new_tensor(float("inf"))
        row_min = (torch.where(active, C, inf) if padded else C).amin(-1, keepdim=True)
        row_min = torch.where(torch.isfinite(row_min), row_min, torch.zeros_like(row_min))
        Cs = C - row_min
        col_min = (torch.where(active, Cs, inf) if padded else Cs).amin(-2, keepdim=True)
        col_min = torch.where(torch.isfinite(col_min), col_min, torch.zeros_like(col_min))
        Cs = Cs - col_min
        spread = (torch.where(active, Cs, torch.zeros_like(Cs)) if padded else Cs).amax(dim=(-2, -1))
        if method == "auto" and float(spread.max().detach()) / eps <= _SCALING_MAX_EXPONENT:
            method = "scaling"

    def marginal_error(plan):
        return (((plan.sum(-1) - a).abs().sum(-1) + (plan.sum(-2) - b).abs().sum(-1)) / total).detach()

    if method == "log":
        plan, n_iter = _log_domain(Cs, a, b, active, eps, max_iter, tol, total)
        err = marginal_error(plan)
    else:
        plan, n_iter = _scaling(Cs, a, b, active, eps, max_iter, tol, total)
        err = marginal_error(plan)
        if method == "auto":
            # wide cost range: the scaling form (5x faster, measured) usually still works on
            # min-shifted costs; keep it unless it overflowed or stalled, else redo in log domain
            if bool(torch.isfinite(err).all()) and bool((err < tol).all()):
                method = "scaling"
            else:
                plan, n_iter = _log_domain(Cs, a, b, active, eps, max_iter, tol, total)
                err, method = marginal_error(plan), "log"
    converged = err < tol
    if warn and not bool(converged.all()):
        warnings.warn(
            f"Sinkhorn stopped after {n_iter} iterations with relative marginal error up to "
            f"{float(err.max()):.2e} > tol={tol:g} in {int((~converged).sum())}/{B} problems; "
            "raise max_iter or eps",
            SinkhornNotConverged,
            stacklevel=2,
        )
    return SinkhornResult(
        plan=plan,
        n_iter=n_iter,
        converged=converged,
        marginal_error=err,
        transport_cost=torch.einsum("bij,bij->b", plan, C),
        method=method,
    )


def _check_due(n: int, last: int, max_iter: int) -> bool:
    """Whether iteration ``n`` tests the pending iterations since ``last`` (sparser as n grows)."""
    interval = 1 if n <= 8 else 2 if n <= 16 else 4 if n <= 64 else 8 if n <= 256 else 16
    return n - last >= interval or n == max_iter


def _scaling(Cs, a, b, active, eps, max_iter, tol, total):
    K = torch.exp(Cs * (-1.0 / eps))  # out of place: exp's backward reads its output
    if active is not None:
        K = K * active
    # Both matrix-vector products as batched row-vector products, (1 x n) @ K^T and (1 x m) @ K,
    # K^T as a transposed view: on CPU this form is 2-3x faster than broadcast multiply + sum
    # (which allocates a B x m x n temporary per product) and than bmm(K, v[..., None]) (a GEMV
    # per problem); a contiguous copy of K^T doubles the working set and was 3x slower at 256
    # problems of 34 x 162 (measured; benchmarks/sinkhorn_speed.py times the solver).
    KT = K.transpose(1, 2)
    tiny = torch.finfo(K.dtype).tiny
    a3, b3 = a.unsqueeze(1), b.unsqueeze(1)  # (B, 1, m), (B, 1, n): no reshapes inside the loop
    tot = total.view(1, -1, 1)
    v = (b3 > 0).to(Cs.dtype)
    u = torch.zeros_like(a3)
    # The stopping test of iteration t is the row error of (u_{t-1}, v_{t-1}) (after a v-update
    # the columns are exact). It is evaluated for several iterations at once, from the saved
    # iterates, with one host sync: every iteration up to 8, then every 2, 4, 8, 16. The first
    # iteration that passes decides, exactly as testing each one in turn would (same values, same
    # arithmetic); the few iterations run past it are discarded.
    pending: list[tuple[int, torch.Tensor, torch.Tensor, torch.Tensor]] = []  # (t, u_{t-1}, K v_{t-1}, v_{t-1})
    last = 1
    n_iter = max_iter
    for n in range(1, max_iter + 1):
        Kv = torch.bmm(v, KT)  # (B, 1, m)
        if n > 1:
            pending.append((n, u, Kv, v))
            if _check_due(n, last, max_iter):
                last = n
                us = torch.stack([p[1] for p in pending])
                kvs = torch.stack([p[2] for p in pending])
                err = (us * kvs - a3).abs().sum(-1) / tot  # (k, B, 1)
                ok = (err < tol).flatten(1).all(1)
                first = int(ok.to(torch.int8).argmax())
                if bool(ok[first]):
                    t, u, _, v = pending[first]
                    n_iter = t - 1
                    break
                pending.clear()
        # zero marginals give zero scalings: 0 / (a positive, finite denominator) = 0
        u = a3 / Kv.clamp_min(tiny)
        v = b3 / torch.bmm(u, K).clamp_min_(tiny)
    return u.transpose(1, 2) * K * v, max(n_iter, 1)


def _log_domain(Cs, a, b, active, eps, max_iter, tol, total):
    neg = torch.tensor(float("-inf"), dtype=Cs.dtype, device=Cs.device)
    logK = Cs.mul(-1.0 / eps)
    if active is not None:
        logK = torch.where(active, logK, neg)
    log_a = torch.where(a > 0, a.log(), neg)
    log_b = torch.where(b > 0, b.log(), neg)
    alpha = torch.zeros_like(a)
    beta = torch.where(b > 0, torch.zeros_like(b), neg)
    n_iter = 0
    for n_iter in range(1, max_iter + 1):
        lse_rows = torch.logsumexp(logK + beta.unsqueeze(-2), dim=-1)
        if n_iter > 1:
            err = torch.where(a > 0, (alpha + lse_rows).exp() - a, torch.zeros_like(a)).abs().sum(-1) / total
            if bool((err < tol).all()):
                n_iter -= 1
                break
        alpha = torch.where(a > 0, log_a - lse_rows, neg)
        lse_cols = torch.logsumexp(logK + alpha.unsqueeze(-1), dim=-2)
        beta = torch.where(b > 0, log_b - lse_cols, neg)
    return (logK + alpha.unsqueeze(-1) + beta.unsqueeze(-2)).exp(), max(n_iter, 1)


def cosine_cost(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    r"""Cosine cost :math:`C_{ij} = 1 - \cos(x_i, y_j)`, batched (AOT eq. 9).

    Parameters
    ----------
    x : torch.Tensor, shape (B, m, d)
    y : torch.Tensor, shape (B, n, d)

    Returns
    -------
    torch.Tensor, shape (B, m, n), in [0, 2]
        Zero vectors have cosine 0 with everything (cost 1), never NaN.
    """
    xn = torch.nn.functional.normalize(x, dim=-1)
    yn = torch.nn.functional.normalize(y, dim=-1)
    return 1.0 - torch.bmm(xn, yn.transpose(1, 2))
