r"""Batched entropic optimal transport (Sinkhorn-Knopp), the solver behind every OT method here.

All problems of a batch (e.g. one per frame) are solved together: no Python loop
over problems; the stopping test runs every few iterations, with one host sync.

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
``eps`` still exceeds ``_SCALING_MAX_EXPONENT`` (``method="auto"``), the scaling form
is stabilized: scalings that grow large are absorbed into dual potentials and the
kernel is recomputed from them (Schmitzer 2016), the same iteration as the log domain
(``logsumexp`` updates, exact for any ``eps``) at the cost of the scaling form; the log
domain remains the fallback if the plan is not finite. Half-precision input is
computed in float32. The stopping rule is the marginal L1 error relative to the
total mass, not the change of the scaling vector (the paper's Algorithm 1 line 9
stops on ``|v_t - v_{t-1}|``, which is scale-dependent and stops after ~2
iterations with uniform marginals: a deliberate deviation). Every iterate is tested;
the tests are batched (several iterates per host sync, planned from the observed rate
of decrease), which changes only how many iterations run past the first passing one
(discarded), never the iterate returned.
"""

from __future__ import annotations

import math
import struct
import warnings
from dataclasses import dataclass, field
from functools import cached_property

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
        ``<T, C>``, the transport part of the objective (no entropy term). Computed on
        first read (one pass over the plan that most callers never need), from ``plan``
        and the cost as passed: do not modify either in place before reading it.
    method : str
        ``"scaling"`` or ``"log"``: which form ran.
    row_sums : torch.Tensor, shape (B, m)
        ``T 1``, the plan's row sums (the transported mass of each source point), as the
        marginal error summed them: callers that need them (AOT eq. 10 and 15) need not
        make another pass over the plan.
    """

    plan: torch.Tensor
    n_iter: int
    converged: torch.Tensor
    marginal_error: torch.Tensor
    method: str
    row_sums: torch.Tensor = field(repr=False, compare=False)
    _cost: torch.Tensor = field(repr=False, compare=False)

    @cached_property  # writes the instance __dict__ directly, so a frozen dataclass can cache it
    def transport_cost(self) -> torch.Tensor:
        B = self.plan.shape[0]
        C = self._cost.to(self.plan.dtype)  # the working copy sinkhorn used (fp16/bf16 -> fp32)
        # a dot product per problem; einsum("bij,bij->b") became a (1 x mn) @ (mn x 1) bmm,
        # 5-10x slower here (measured)
        return torch.linalg.vecdot(self.plan.reshape(B, -1), C.reshape(B, -1))


def _marginal(name: str, x: torch.Tensor | None, B: int, size: int, like: torch.Tensor):
    """``x`` checked for shape and converted, and its smallest and largest value (0-d tensors; None
    when defaulted), which the caller reads in one host sync with the other marginal's
    (see :func:`_check_marginals`)."""
    if x is None:
        return torch.full((B, size), 1.0 / size, dtype=like.dtype, device=like.device), None
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape ({B}, {size}) or None")
    if x.dim() == 1 and x.shape[0] == size:
        x = x.expand(B, size)
    if tuple(x.shape) != (B, size):
        raise ValueError(f"{name} must have shape (B, {'m' if name == 'a' else 'n'}) = ({B}, {size}), got {tuple(x.shape)}")
    x = x.to(device=like.device, dtype=like.dtype)
    return x, torch.aminmax(x)


def _check_marginals(a_sum, b_sum, a_chk, b_chk) -> tuple[bool, bool]:
    """Raise on invalid marginals from ONE host sync, in the order the checks were once made one by
    one (``a``'s values, then ``b``'s, then the totals); return (a has zeros, b has zeros).

    From each given marginal's minimum and maximum (NaN propagates into both), its problems'
    smallest total (``a_sum``, ``b_sum``: the row sums of ``a`` and ``b``), and whether the totals
    agree (``allclose`` = ``isclose().all()``, rtol 1e-5). Once the values are finite and
    non-negative, a zero exists iff the minimum is 0.
    """
    vals, layout = [], []
    for name, chk, tot in (("a", a_chk, a_sum), ("b", b_chk, b_sum)):
        if chk is not None:
            vals += [chk[0], chk[1], tot.amin()]
            layout.append(name)
    if a_chk is not None or b_chk is not None:  # not both defaulted
        vals.append(torch.isclose(a_sum, b_sum, rtol=1e-5, atol=0.0).all().to(vals[0].dtype))
    host = torch.stack(vals).tolist() if vals else []
    zero = {"a": False, "b": False}
    for i, name in enumerate(layout):
        lo, hi, least = host[3 * i:3 * i + 3]
        if not (math.isfinite(lo) and math.isfinite(hi)) or lo < 0:
            raise ValueError(f"marginal {name} must be finite and non-negative")
        if least <= 0:
            raise ValueError(f"every problem needs positive total mass in {name}; drop empty problems from the batch")
        zero[name] = lo == 0
    if host and not host[-1]:
        raise ValueError("marginals a and b must have the same total mass in every problem")
    return zero["a"], zero["b"]


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
        ``"auto"`` runs the scaling form; when the cost range shifted by row and
        column minima, over ``eps``, exceeds 50 (where fp32 scalings can overflow
        and kernel entries underflow) it runs the stabilized scaling form:
        scalings above 1e10 (1e30 while no kernel entry is below float32's
        smallest normal) are absorbed into dual potentials, ``K`` is recomputed as
        ``exp((f_i + g_j - C_ij) / eps)`` with entries below 1.2e-38 set to zero,
        and the log domain is run instead only if the plan is not finite.
        ``result.method`` is then ``"scaling"``. Before issue 12 ``"auto"`` ran the
        plain scaling form there and redid the solve in the log domain when it had
        not converged; the stabilized form runs the same iteration (same
        iteration counts on the fingerprint costs, plans within 6.2e-6 of the plain
        form's where that one was accurate, and within 4e-6 of the log domain's on
        real tokens at eps 0.01, where the plain form's plan was off by 0.74
        relative). ``"scaling"`` forces the plain scaling form (no absorption,
        no fallback), ``"log"`` the log domain (``benchmarks/sinkhorn_numerics.py``
        measures the forms).
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
    # Each problem's minimum and maximum, one host sync for the finiteness test and
    # the range test below: NaN and inf propagate into the spread; a spread of finite entries can
    # overflow only for entries near the dtype's limit, which the exact test then clears.
    # (amin and amax over (1, 2): torch.aminmax along one flattened axis was 10x slower here)
    # The minimum through the row minima (exact, the same value): a wide range reuses them.
    row_lo = C.amin(-1, keepdim=True)
    c_lo, c_hi = row_lo.amin(dim=(1, 2)), C.amax(dim=(1, 2))
    c_range = float((c_hi - c_lo).max().detach())
    if not math.isfinite(c_range) and not bool(torch.isfinite(C).all()):
        raise ValueError("cost contains NaN or inf; check the features the cost was built from")
    uniform = a is None and b is None
    a, a_chk = _marginal("a", a, B, m, C)
    b, b_chk = _marginal("b", b, B, n, C)
    total = a.sum(-1)
    # the value checks of both marginals, their totals and whether either holds zeros (padding): one
    # host sync
    a_zero, b_zero = (False, False) if uniform else _check_marginals(total, b.sum(-1), a_chk, b_chk)
    # Without autograd the solver works in place (kernel, scalings and plan in preallocated
    # buffers); with it, the same iterations run out of place so that gradients flow.
    grad = torch.is_grad_enabled() and (C.requires_grad or a.requires_grad or b.requires_grad)

    # Shifting C by per-problem, per-row or per-column constants leaves the plan unchanged.
    padded = a_zero or b_zero
    active = None  # (B, m, n) bool: entries whose row and column both have mass (padded paths that need it)
    premasked = False  # Cs holds +inf on the inactive entries already: the scaling form need not mask them
    if padded:  # the range over active entries only
        # inactive entries: a mask broadcast from the side that has zeros (e.g. AOT's intra-frame problem:
        # zero-mass anchor columns, no F x M x N mask built), the full one only when both sides have zeros
        inactive = (~((a > 0)[:, :, None] & (b > 0)[:, None, :]) if a_zero and b_zero
                    else (a == 0)[:, :, None] if a_zero else (b == 0)[:, None, :])
        C_in = C.masked_fill(inactive, float("inf"))
        lo = C_in.amin(dim=(1, 2))  # min over active entries (exact: the same value as where() + amin)
        # C is finite here, so the active entries' range is at most c_hi - lo: when that bound passes the
        # range test below, so does the exact range (same branch), and the masked maximum is not needed
        c_range = float((c_hi - lo).max().detach())
        if method != "log" and c_range / eps > _SCALING_MAX_EXPONENT:
            hi = C.masked_fill(inactive, float("-inf")).amax(dim=(1, 2))
            c_range = float((hi - lo).max().detach())
    else:
        lo = c_lo
    wide = flush = False
    shifted = None
    if method != "log" and c_range / eps <= _SCALING_MAX_EXPONENT:
        # common case (cosine costs, eps >= 0.04): one shift per problem suffices
        if padded and not grad:
            # inf - lo = inf on the inactive entries (lo is finite): the masked copy, shifted in place, is
            # bitwise the shifted cost masked as _scaling would mask it
            Cs, method, premasked = C_in.sub_(lo[:, None, None]), "scaling", True
        else:
            Cs, method = C - lo[:, None, None], "scaling"

        def rebuild():  # Cs again, same arithmetic (for a guarded redo of _scaling)
            return C - lo[:, None, None]
    if padded and not premasked:
        active = (a > 0)[:, :, None] & (b > 0)[:, None, :]
    if method == "log" or not (c_range / eps <= _SCALING_MAX_EXPONENT):
        # row then column minima over active entries: every row and column holds a zero
        # (without padding C is finite, so are the minima: the where() guards only padding)
        inf = C.new_tensor(float("inf"))
        row_min = torch.where(active, C, inf).amin(-1, keepdim=True) if padded else row_lo
        if padded:  # a row without active entries has minimum inf: shift it by 0
            row_min = torch.where(torch.isfinite(row_min), row_min, torch.zeros_like(row_min))
        Cs = C - row_min
        col_min = (torch.where(active, Cs, inf) if padded else Cs).amin(-2, keepdim=True)
        if padded:
            col_min = torch.where(torch.isfinite(col_min), col_min, torch.zeros_like(col_min))
        # in place without autograd (a fresh B x m x n allocation costs page faults); amin's
        # backward reads Cs, so with autograd out of place
        Cs = Cs - col_min if grad else Cs.sub_(col_min)

        def rebuild():  # Cs again, same arithmetic (no padding here: a guarded redo needs none)
            return torch.sub(C, row_min).sub_(col_min)
        spread = (torch.where(active, Cs, torch.zeros_like(Cs)) if padded else Cs).amax(dim=(-2, -1))
        if method == "auto":
            ratio = float(spread.max().detach()) / eps
            wide = ratio > _SCALING_MAX_EXPONENT
            method = "scaling"
            # kernel entries below float32's smallest normal (exp(-87.3)) exist only past this
            flush = ratio > -math.log(torch.finfo(C.dtype).tiny)

            def shifted(out=None):  # Cs again, same arithmetic (the scaling form takes Cs's storage)
                return torch.sub(C, row_min, out=out).sub_(col_min)

    def marginal_error(plan):  # and the row sums, which SinkhornResult returns
        rows = plan.sum(-1)
        return (((rows - a).abs().sum(-1) + (plan.sum(-2) - b).abs().sum(-1)) / total).detach(), rows

    if method == "log":
        plan, n_iter = _log_domain(Cs, a, b, active, eps, max_iter, tol, total)
    elif grad:
        plan, n_iter = _scaling_autograd(Cs, a, b, active, eps, max_iter, tol, total)
    else:
        # uniform marginals: every problem's total is the same sum of the same values
        tot_host = float(total[0]) if uniform else None
        absorb = shifted if wide else None
        out = _scaling(Cs, a, b, active, eps, max_iter, tol, total, shifted=absorb, flush=flush,
                       guard=padded, tot_host=tot_host, uniform=(m, n) if uniform else None,
                       premasked=premasked)
        if out is None:  # a scaling reached the unguarded loop's bound: redo it guarded
            out = _scaling(rebuild(), a, b, active, eps, max_iter, tol, total, shifted=absorb, flush=flush,
                           guard=True, tot_host=tot_host)
        plan, n_iter = out
    err, rows = marginal_error(plan)
    # The largest error, one op and one host sync for both tests below: it is NaN or inf iff some
    # error is (max propagates NaN), and below tol iff every error is (err < tol compares in err's
    # dtype, so tol is rounded the same way; NaN fails both)
    tol_e = _as_float32(tol) if err.dtype == torch.float32 else tol
    worst = float(err.max()) if warn or (wide and not grad) else None
    if method == "scaling" and wide and not grad and not math.isfinite(worst):
        # safety net: the stabilized scaling form broke down; the log domain cannot overflow
        plan, n_iter = _log_domain(shifted(), a, b, active, eps, max_iter, tol, total)
        (err, rows), method = marginal_error(plan), "log"
        worst = float(err.max())
    elif grad and method == "scaling" and wide and not bool((err < tol).all()):
        # autograd path (no absorption): wide range, redo in the log domain if scaling stalled
        plan, n_iter = _log_domain(Cs, a, b, active, eps, max_iter, tol, total)
        (err, rows), method = marginal_error(plan), "log"
        worst = float(err.max())
    converged = err < tol
    if warn and not worst < tol_e:
        warnings.warn(
            f"Sinkhorn stopped after {n_iter} iterations with relative marginal error up to "
            f"{worst:.2e} > tol={tol:g} in {int((~converged).sum())}/{B} problems; "
            "raise max_iter or eps",
            SinkhornNotConverged,
            stacklevel=2,
        )
    result = SinkhornResult(plan=plan, n_iter=n_iter, converged=converged, marginal_error=err,
                            method=method, row_sums=rows, _cost=cost)
    if grad:  # computed now, under the caller's autograd mode, so that gradients flow through it
        result.transport_cost  # noqa: B018 (fills the cache)
    return result


def _check_due(n: int, last: int, max_iter: int) -> bool:
    """Whether iteration ``n`` tests the pending iterations since ``last`` (sparser as n grows)."""
    interval = 1 if n <= 8 else 2 if n <= 16 else 4 if n <= 64 else 8 if n <= 256 else 16
    return n - last >= interval or n == max_iter


def _next_test(n: int, errs: list, prev: tuple | None, tol: float, reach: float = 1.2) -> int:
    """Iteration of the next stopping test after a failed test at ``n`` (errors ``errs``).

    Sinkhorn's marginal error falls about geometrically, so the rate between the last two tests
    predicts the iteration where it crosses ``tol``. Its rate slows as it nears ``tol`` (on real
    tokens at eps 0.02 it falls 0.29 per iteration in log between iterations 16 and 32, 0.10
    after 37), so a secant through the last two tests predicts the crossing early: test at
    ``reach`` = 1.2 times the predicted distance (never more than 16 iterations on, the
    buffers' size, nor more than ``n`` on: early rates mislead; every iteration up to 4; the
    fixed schedule of ``_check_due`` when the error is not falling). A test costs about one
    iteration here (~10 small ops against two batched matrix-vector products); 0.9, used
    before, tested every iteration near the crossing (11 tests instead of 8 on that solve).
    Which iterate stops is unaffected: every iterate is tested; only the number of tests, and
    of iterations run past the first passing one, change (and, with 64-byte aligned slots,
    no plan's bits). The stabilized form absorbs scalings only where a test runs; where
    kernel entries are flushed (absorptions routine) it passes ``reach`` = 0.9, the spacing
    absorptions were timed by before, so that its plans stay bitwise the same.
    """
    e1 = errs[-1]
    if n < 4 or prev is None or not (0.0 < e1 < prev[1] < math.inf):
        return n + (1 if n <= 8 else 2 if n <= 16 else 4)
    n0, e0 = prev
    rate = math.log(e1 / e0) / (n - n0)  # < 0
    ahead = math.log(tol / e1) / rate  # iterations still needed, predicted
    return n + max(1, min(_SLOTS - 1, n, int(reach * ahead)))


# Slots for the iterates not yet tested: more than the largest gap between two tests (16).
_SLOTS = 17
# Absorb the scalings into the potentials when one exceeds this (tested where the stopping test
# runs). Just after an absorption the kernel is the current plan (entries <= 1), so scalings near
# 1e10 keep every product u_i K_ij v_j and matrix-vector product far inside float32's range, and
# entries flushed to zero (below float32's smallest normal, 1.2e-38) carry ~1e20 * 1.2e-38 of
# mass each. Measured on real-token costs at eps 0.01: plans within 4e-6 of the log domain's
# (1e20: 1e-5; 1e30: 1e-4), where the unstabilized scaling form was off by 0.74 relative.
_ABSORB_ABOVE = 1e10
# ... and while no kernel entry has been flushed (shifted range / eps <= 87, no absorption yet),
# only above this: scalings <= 1e30 times kernel entries <= 1, summed over < 1e6 terms, stay
# below float32's 3.4e38 (on real tokens at eps 0.02 this spares an absorption; same plan).
_OVERFLOW_GUARD = 1e30


def _as_float32(x: float) -> float:
    """``x`` rounded to float32 (inf past its range), as a comparison with a float32 tensor does."""
    try:
        return struct.unpack("f", struct.pack("f", x))[0]
    except OverflowError:
        return math.inf


def _slots(K: torch.Tensor, B: int, size: int) -> torch.Tensor:
    """``(_SLOTS, B, 1, size)`` buffer like ``K`` whose slots start 64 bytes apart or a multiple of it."""
    per = 64 // K.element_size()  # elements per 64 bytes (16 in float32)
    if B * size % per == 0:  # already aligned end to end: one op instead of three
        return K.new_empty(_SLOTS, B, 1, size)
    stride = -(-B * size // per) * per
    return K.new_empty(_SLOTS, stride)[:, :B * size].view(_SLOTS, B, 1, size)


class _Views(dict):
    """``buf[i]`` for slot ``i``, made on first use and kept: a short solve touches a few of
    the ``_SLOTS`` slots, and ``unbind`` made all of them (~1 us each, ~50 us per call)."""

    def __init__(self, buf: torch.Tensor):
        super().__init__()
        self.buf = buf

    def __missing__(self, i: int) -> torch.Tensor:
        view = self[i] = self.buf[i]
        return view


def _scaling(Cs, a, b, active, eps, max_iter, tol, total, shifted=None, flush=False, guard=True,
             tot_host=None, uniform=None, premasked=False):
    """Scaling iterations in preallocated buffers; the kernel's storage becomes the plan.

    The same iterates, stopping test and float operations as :func:`_scaling_autograd` (plans
    bitwise equal, checked in ``tests/test_ot_values.py``). ``Cs`` is overwritten (it becomes
    the kernel, then the plan). With ``shifted`` (wide cost range; a function that recomputes
    ``Cs``) scalings above ``_ABSORB_ABOVE`` are absorbed into dual potentials (Schmitzer 2016, SIAM J.
    Sci. Comput. 41(3), Sec. 3.1; POT's ``sinkhorn_stabilized``): ``f += eps log u``,
    ``g += eps log v``, ``K = exp((f_i + g_j - C_ij) / eps)``, ``u = v = 1``. The plan
    ``diag(u) K diag(v)`` and the iteration are unchanged in exact arithmetic; kernel entries
    below float32's smallest normal are flushed to zero (with ``flush``, also in the first
    kernel; denormals are ~60x slower here).

    The scalings' divisions are guarded, ``a / max(K v, tiny)``, against a zero or subnormal
    denominator (padding rows and columns have one at every iteration). With ``guard=False``
    (no padding) they run unguarded and each stopping test checks the largest pending
    scalings: ``u_i = a_i / (K v)_i`` reaches ``fl(min(a) / tiny)`` whenever ``(K v)_i < tiny``
    (division rounds monotonically; a zero gives inf, a NaN fails the check), likewise ``v``;
    below those bounds the guard was a no-op and every iterate is bitwise the guarded loop's.
    If a check fails, ``None`` is returned (``Cs`` has been overwritten) and the caller redoes
    the solve guarded (only seen here with ``method="scaling"`` forced on a range that
    underflows the kernel). Two of an iteration's six ops fewer, two more per test without
    absorption (one fewer with it): 1.05-1.07x on the real intra-frame batch at eps 0.02
    (``docs/benchmarks.md``, "Stop 16").
    """
    B, m, n = Cs.shape
    absorb = shifted is not None
    if active is not None:  # padding (``premasked``: the caller set the inactive entries to +inf already): exp(-inf) = 0 (exp of an inactive entry can overflow)
        Cs.masked_fill_(~active, float("inf"))
    K = Cs.mul_(-1.0 / eps).exp_()  # the kernel takes Cs's storage
    tiny = torch.finfo(K.dtype).tiny
    if flush:
        torch.nn.functional.threshold_(K, tiny, 0.0)  # in place, one pass: <= tiny -> 0
    # Both matrix-vector products as batched row-vector products, (1 x n) @ K^T and (1 x m) @ K,
    # K^T as a transposed view: on CPU this form is 2-3x faster than broadcast multiply + sum
    # (which allocates a B x m x n temporary per product) and than bmm(K, v[..., None]) (a GEMV
    # per problem); a contiguous copy of K^T doubles the working set (measured;
    # benchmarks/sinkhorn_speed.py times the solver).
    KT = K.transpose(1, 2)
    a3, b3 = a.unsqueeze(1), b.unsqueeze(1)  # (B, 1, m), (B, 1, n)
    tot = total.view(1, -1, 1)
    # With equal totals (uniform marginals) the k pending iterates' batch maxima are divided by the
    # total on the host (one op fewer per test): float32 quotients via float64, exact since double
    # rounding is innocuous for division when 53 >= 2 * 24 + 2 bits
    same_total = tot_host is not None
    # Buffers for the iterates not yet tested: slot (t - 1 - last) holds u_{t-1}, v_{t-1} and
    # K v_{t-1}, whose row error is the stopping test of iteration t (after a v-update the columns
    # are exact); `last` is the iteration of the previous test, so the pending slots are a prefix.
    # (u_0 is never read: iteration 1 is not tested; every other slot is written before it is read)
    # Each slot starts on a 64-byte boundary: the batched products' summation order (MKL) depends
    # on the alignment of their vectors, so with slots packed end to end (B m floats apart) an
    # iterate's last bits depended on which slot it sat in, i.e. on the test schedule.
    U, V, KV = _slots(K, B, m), _slots(K, B, n), _slots(K, B, m)
    Us, Vs, KVs = _Views(U), _Views(V), _Views(KV)
    if active is None and not premasked:  # no padding: every b_j > 0
        Vs[0].fill_(1.0)
    else:
        Vs[0].copy_(b3 > 0)
    tm, tn = K.new_empty(B, 1, m), K.new_empty(B, 1, n)
    if not guard and uniform is not None:  # bounds of the unguarded check (see above), on the host:
        # a = fl(1/m), b = fl(1/n) as _marginal fills them; float32 quotients via float64 are exact
        m_, n_ = uniform
        if K.dtype == torch.float32:
            bound_u = _as_float32(_as_float32(1.0 / m_) / tiny)
            bound_v = _as_float32(_as_float32(1.0 / n_) / tiny)
        else:
            bound_u, bound_v = (1.0 / m_) / tiny, (1.0 / n_) / tiny
    elif not guard:  # fl(min(a) / tiny), fl(min(b) / tiny)
        bound_u, bound_v = (torch.stack((a.amin(), b.amin())) / tiny).tolist()
    check = absorb or not guard  # per-slot largest scalings needed at each test
    f = g = None  # dual potentials in units of eps (log-scalings absorbed so far)

    # Without flushed entries (every kernel entry normal) the scalings need only stay clear of
    # overflow; once entries are flushed, the bound that keeps their mass negligible applies.
    absorb_above = _ABSORB_ABOVE if flush else _OVERFLOW_GUARD
    # tensor < tol compares in K's dtype: round tol the same way
    tol_k = _as_float32(tol) if K.dtype == torch.float32 else tol
    # test spacing (see _next_test): where kernel entries are flushed, absorptions are routine and
    # happen where tests run, so the spacing they had before issue 12's last pass is kept there
    reach = 0.9 if absorb and flush else 1.2
    last, n_iter, final, due, prev_err = 0, max_iter, None, 2, None
    for it in range(1, max_iter + 1):
        s = it - 1 - last
        torch.bmm(Vs[s], KT, out=KVs[s])  # K v_{it-1}
        if it > 1 and (it >= due or it == max_iter):
            # The pending iterations are tested at once with one host sync. The first one whose
            # every problem passes decides, exactly as testing each in turn would (same values, same
            # arithmetic: max(err) < tol iff all err < tol, NaN fails both); the iterations run past
            # it are discarded. The next test is planned from the observed rate of decrease.
            k0 = 1 if last == 0 else 0  # iteration 1 is never tested (u_0 = 0)
            errs = (U[k0:s + 1] * KV[k0:s + 1] - a3).abs().sum(-1)
            errs = (errs if same_total else errs / tot).amax(dim=(1, 2))
            u, v = Us[s], Vs[s]
            k = s + 1 - k0
            if check:  # each pending iterate's largest u and v, in the same host sync
                top_u, top_v = U[k0:s + 1].amax(dim=(1, 2, 3)), V[k0:s + 1].amax(dim=(1, 2, 3))
                errs = torch.cat((errs, top_u, top_v)).tolist()
                top_u, top_v, errs = errs[k:2 * k], errs[2 * k:], errs[:k]
                if not guard and not (all(x < bound_u for x in top_u) and all(x < bound_v for x in top_v)):
                    return None  # a guard would have acted (or a NaN): the caller redoes it guarded
                # as torch.maximum(u.amax(), v.amax()): NaN if either is
                tu, tv = top_u[-1], top_v[-1]
                top = math.nan if math.isnan(tu) or math.isnan(tv) else max(tu, tv)
            else:
                errs = errs.tolist()
            if same_total and tot_host != 1.0:  # fl(max(x) / t) = max(fl(x / t)): division is monotone
                errs = [e / tot_host if K.dtype == torch.float64 else _as_float32(e / tot_host) for e in errs]
            t = next((last + k0 + i + 1 for i, e in enumerate(errs) if e < tol_k), None)
            if t is not None:
                n_iter, final = t - 1, t - 1 - last
                break
            due = _next_test(it, errs, prev_err, tol, reach)
            prev_err = (it, errs[-1])
            # absorption is tested where the stopping test runs (every iteration up to 8, then
            # sparser): every iterate made with the old kernel has been tested by then
            if absorb and top > absorb_above:
                lu, lv = u.log().transpose(1, 2), v.log()  # log 0 = -inf: padding keeps zero mass
                f = lu if f is None else f.add_(lu)
                g = lv if g is None else g.add_(lv)
                shifted(out=K).mul_(-1.0 / eps)
                if active is not None:
                    K.masked_fill_(~active, float("-inf"))
                torch.nn.functional.threshold_(K.add_(f).add_(g).exp_(), tiny, 0.0)
                u.fill_(1.0)
                v.fill_(1.0)
                torch.bmm(v, KT, out=KVs[s])
                absorb_above = _ABSORB_ABOVE  # the kernel may now hold flushed entries
            last, s1 = it, 0
        else:
            s1 = s + 1
        if guard:  # zero marginals give zero scalings: 0 / (a positive, finite denominator) = 0
            torch.div(a3, torch.clamp_min(KVs[s], tiny, out=tm), out=Us[s1])
            torch.div(b3, torch.bmm(Us[s1], K, out=tn).clamp_min_(tiny), out=Vs[s1])
        else:
            torch.div(a3, KVs[s], out=Us[s1])
            torch.div(b3, torch.bmm(Us[s1], K, out=tn), out=Vs[s1])
    if final is None:
        final = max_iter - last
    u, v = Us[final], Vs[final]
    if final == 0 and not guard:  # no test passed: the last update (slot 0) is not checked yet
        tu, tv = torch.stack((u.amax(), v.amax())).tolist()
        if not (tu < bound_u and tv < bound_v):
            return None
    return K.mul_(u.transpose(1, 2)).mul_(v), max(n_iter, 1)


def _scaling_autograd(Cs, a, b, active, eps, max_iter, tol, total):
    """The iterations of :func:`_scaling` out of place (no absorption), for inputs that need gradients."""
    K = torch.exp(Cs * (-1.0 / eps))  # out of place: exp's backward reads its output
    if active is not None:
        K = K * active
    KT = K.transpose(1, 2)
    tiny = torch.finfo(K.dtype).tiny
    a3, b3 = a.unsqueeze(1), b.unsqueeze(1)
    tot = total.view(1, -1, 1)
    v = (b3 > 0).to(Cs.dtype)
    u = torch.zeros_like(a3)
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
