"""Sinkhorn and the cosine cost by value where the mutation run found them unchecked (docs/testing.md).

Both forms run u = a / K v, v = b / K^T u from v = 1 (the log form with logs, on costs shifted by
row and column minima first) and stop at the first iteration whose plan has row error < tol.
The iterates written out in the test (``_hand_sinkhorn``), POT on padded problems, and cases with
a known iteration count pin the iteration bookkeeping, the padding masks and the stop rule.
"""

from __future__ import annotations

import numpy as np
import ot
import pytest
import torch

import anchor_ot.ot as ot_module
from anchor_ot.ot import SinkhornNotConverged, cosine_cost, sinkhorn


def _problem(B=3, m=5, n=8, seed=0, padded=False):
    g = torch.Generator().manual_seed(seed)
    C = cosine_cost(torch.randn(B, m, 6, generator=g, dtype=torch.float64),
                    torch.randn(B, n, 6, generator=g, dtype=torch.float64))
    a = torch.rand(B, m, generator=g, dtype=torch.float64) + 0.2
    b = torch.rand(B, n, generator=g, dtype=torch.float64) + 0.2
    if padded:  # problem i keeps m - i rows and n - 2 i columns
        for i in range(B):
            a[i, m - i:] = 0
            b[i, n - 2 * i:] = 0
    a, b = a / a.sum(-1, keepdim=True), b / b.sum(-1, keepdim=True)
    return C, a, b


def test_cosine_cost_by_numpy():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, 3, 4, generator=g, dtype=torch.float64)
    y = torch.randn(2, 5, 4, generator=g, dtype=torch.float64)
    X, Y = x.numpy(), y.numpy()
    ref = 1 - np.einsum("bid,bjd->bij", X / np.linalg.norm(X, axis=-1, keepdims=True),
                        Y / np.linalg.norm(Y, axis=-1, keepdims=True))
    np.testing.assert_allclose(cosine_cost(x, y).numpy(), ref, rtol=0, atol=1e-14)


def _hand_sinkhorn(C, a, b, eps, n, shift=False):
    """n u/v updates written out; returns the plan and the row error (relative L1) after each.

    ``shift``: first subtract row minima, then column minima over the active entries, as
    ``sinkhorn`` does before the log-domain form (the fixed point is the same; the iterates
    from v = 1 are not).
    """
    active = (a > 0)[:, :, None] & (b > 0)[:, None, :]
    if shift:
        inf = torch.tensor(float("inf"), dtype=C.dtype)
        C = C - torch.where(active, C, inf).amin(-1, keepdim=True).nan_to_num(posinf=0.0)
        C = C - torch.where(active, C, inf).amin(-2, keepdim=True).nan_to_num(posinf=0.0)
    K = torch.exp(-C / eps) * active
    v = (b > 0).to(C.dtype)
    errs = []
    for _ in range(n):
        u = torch.where(a > 0, a / (K @ v[..., None])[..., 0], torch.zeros_like(a))
        v = torch.where(b > 0, b / (K.transpose(1, 2) @ u[..., None])[..., 0], torch.zeros_like(b))
        errs.append(float(((u * (K @ v[..., None])[..., 0] - a).abs().sum(-1) / a.sum(-1)).max()))
    return u[..., None] * K * v[:, None, :], errs


@pytest.mark.parametrize("padded,mass", [(False, 1.0), (True, 1.0), (True, 3.0)], ids=["dense", "padded", "mass3"])
@pytest.mark.parametrize("eps", [0.5, 0.1, 0.05])
def test_both_forms_stop_at_the_first_iteration_below_tol(padded, mass, eps):
    # the stop rule: n_iter = the first number of updates whose plan has relative row error < tol
    # (columns are exact right after a v-update). tol is put between the hand errors after 5 and
    # 6 updates, so both forms must report exactly 6 and return the hand plan after 6 updates.
    C, a, b = _problem(padded=padded)
    a, b = a * mass, b * mass  # the error is relative to the total mass
    for method in ("scaling", "log"):
        plan6, errs = _hand_sinkhorn(C, a, b, eps, 6, shift=method == "log")
        assert errs[4] > 1.02 * errs[5] and all(e > errs[4] for e in errs[:4])
        tol = (errs[4] * errs[5]) ** 0.5
        res = sinkhorn(C, a, b, eps=eps, tol=tol, max_iter=1000, method=method)
        assert res.method == method
        assert res.n_iter == 6, method
        torch.testing.assert_close(res.plan, plan6, atol=1e-14, rtol=1e-10)
        # the reported error is the plan's relative marginal L1 error, recomputed here
        err = ((res.plan.sum(-1) - a).abs().sum(-1) + (res.plan.sum(-2) - b).abs().sum(-1)) / mass
        torch.testing.assert_close(res.marginal_error, err, atol=1e-15, rtol=1e-9)
        assert bool(res.converged.all())


@pytest.mark.parametrize("side", ["rows", "columns", "both"])
@pytest.mark.parametrize("far", [False, True], ids=["near", "far-inactive"])
def test_padding_on_one_side_runs_the_hand_iteration(side, far):
    # zero rows only, zero columns only (AOT's intra-frame problem: anchor columns), or both: the
    # inactive entries are masked before the shift (a broadcast mask where one side has zeros).
    # "far": inactive entries hold costs far above the active range (c_max / eps > 50), so the
    # bound c_max - min(active) fails the range test and the exact active range must be taken:
    # the one-shift scaling form (the hand iteration from v = 1) must still run, 6 updates.
    C, a, b = _problem(padded=True)
    C_hand = C.clone()
    if side == "rows":
        b = _problem()[2]
    elif side == "columns":
        a = _problem()[1]
    if far:
        C = C.clone()
        C[:, -1, :] += 1e3 * (a[:, -1] == 0)[:, None]
        C[:, :, -1] += 1e3 * (b[:, -1] == 0)[:, None]
    eps = 0.1
    plan6, errs = _hand_sinkhorn(C_hand, a, b, eps, 6)
    tol = (errs[4] * errs[5]) ** 0.5
    res = sinkhorn(C, a, b, eps=eps, tol=tol, max_iter=1000)
    assert res.method == "scaling" and res.n_iter == 6
    torch.testing.assert_close(res.plan, plan6, atol=1e-14, rtol=1e-10)
    assert float(res.plan[(a == 0)].abs().sum()) == 0.0
    assert float(res.plan.transpose(1, 2)[(b == 0)].abs().sum()) == 0.0
    # the row sums returned are the plan's (the same sum, bitwise)
    assert torch.equal(res.row_sums, res.plan.sum(-1))


def test_padded_log_domain_matches_pot_on_the_active_block():
    C, a, b = _problem(padded=True)
    res = sinkhorn(C, a, b, eps=0.1, tol=1e-12, max_iter=20000, method="log")
    for i in range(3):
        m, n = 5 - i, 8 - 2 * i
        ref = ot.sinkhorn(a[i, :m].numpy(), b[i, :n].numpy(), C[i, :m, :n].numpy(), reg=0.1,
                          method="sinkhorn_log", stopThr=1e-14, numItermax=100000)
        np.testing.assert_allclose(res.plan[i, :m, :n].numpy(), ref, atol=1e-10)
        assert float(res.plan[i, m:].abs().sum()) == 0.0
        assert float(res.plan[i, :, n:].abs().sum()) == 0.0
    assert bool(torch.isfinite(res.plan).all())


@pytest.mark.parametrize("method", ["scaling", "log"])
def test_constant_cost_solves_in_one_iteration(method):
    # K = const: one u- and one v-update give the product plan a b^T exactly; the check at the
    # start of iteration 2 stops it, so n_iter == 1
    _, a, b = _problem()
    C = torch.full((3, 5, 8), 0.7, dtype=torch.float64)
    res = sinkhorn(C, a, b, eps=0.1, tol=1e-9, method=method)
    assert res.n_iter == 1
    torch.testing.assert_close(res.plan, a[:, :, None] * b[:, None, :], atol=1e-15, rtol=1e-12)


@pytest.mark.parametrize("cap", [1, 2, 3])
def test_iteration_cap_is_exact_in_both_forms(cap):
    # a tolerance no plan reaches: both forms run exactly max_iter updates, giving equal plans,
    # equal to the updates written out here
    C, a, b = _problem(B=1)
    for method in ("scaling", "log"):
        expected, _ = _hand_sinkhorn(C, a, b, 0.05, cap, shift=method == "log")
        res = sinkhorn(C, a, b, eps=0.05, tol=1e-300, max_iter=cap, method=method, warn=False)
        assert res.n_iter == cap, method
        assert not bool(res.converged.any())
        torch.testing.assert_close(res.plan, expected, atol=1e-14, rtol=1e-10)


def test_one_dimensional_marginals_are_shared_by_the_batch():
    C, a, b = _problem()
    one = sinkhorn(C, a[0], b[0], eps=0.1, tol=1e-9, max_iter=1000)
    batch = sinkhorn(C, a[:1].expand(3, -1), b[:1].expand(3, -1), eps=0.1, tol=1e-9, max_iter=1000)
    torch.testing.assert_close(one.plan, batch.plan, atol=0, rtol=0)
    torch.testing.assert_close(one.plan.sum(-1), a[:1].expand(3, -1), atol=1e-9, rtol=0)


@pytest.mark.parametrize("kwargs, exc, match", [
    (dict(a=[0.5, 0.5, 0.0]), TypeError, r"a must be a torch.Tensor of shape \(1, 3\) or None"),
    (dict(a=torch.full((3, 3), 1 / 3)), ValueError, r"a must have shape \(B, m\) = \(1, 3\), got \(3, 3\)"),
    (dict(b=torch.full((1, 5), 0.2)), ValueError, r"b must have shape \(B, n\) = \(1, 4\), got \(1, 5\)"),
    (dict(a=torch.tensor([0.5, 0.5])), ValueError, r"a must have shape \(B, m\) = \(1, 3\), got \(2,\)"),
    (dict(a=torch.tensor([[float("inf"), 0.0, 0.0]])), ValueError, "marginal a must be finite and non-negative"),
    (dict(a=torch.zeros(1, 3), b=torch.zeros(1, 4)), ValueError, "positive total mass in a"),
])
def test_marginal_errors_name_the_argument_and_shape(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        sinkhorn(torch.rand(1, 3, 4), **kwargs)


def test_empty_problem_in_a_batch_is_refused():
    # the check is per problem: one empty problem among non-empty ones is an error
    a = torch.tensor([[1 / 3, 1 / 3, 1 / 3], [0.0, 0.0, 0.0]])
    b = torch.tensor([[0.25] * 4, [0.0] * 4])
    with pytest.raises(ValueError, match="positive total mass in a"):
        sinkhorn(torch.rand(2, 3, 4), a, b)


@pytest.mark.parametrize("method", ["scaling", "log"])
def test_rows_already_balanced_at_the_start_still_balances_columns(method):
    # K = exp(-C / eps) = [[1, 1], [1, e]] already has row sums a = (2, 1 + e); the columns
    # (2, 1 + e) are not b, so stopping before the first update would return a wrong plan
    e = float(torch.exp(torch.tensor(-1.0, dtype=torch.float64)))
    C = torch.tensor([[[0.0, 0.0], [0.0, 0.1]]], dtype=torch.float64)
    a = torch.tensor([[2.0, 1.0 + e]], dtype=torch.float64)
    b = torch.full((1, 2), (3.0 + e) / 2, dtype=torch.float64)
    res = sinkhorn(C, a, b, eps=0.1, tol=1e-10, max_iter=1000, method=method)
    assert bool(res.converged.all()) and res.n_iter > 1
    torch.testing.assert_close(res.plan.sum(-2), b, atol=1e-9, rtol=0)
    torch.testing.assert_close(res.plan.sum(-1), a, atol=1e-9, rtol=0)


def test_defaults_are_the_papers_eps_and_iteration_cap():
    C, a, b = _problem()
    torch.testing.assert_close(sinkhorn(C, a, b).plan, sinkhorn(C, a, b, eps=0.1, max_iter=100, tol=1e-3).plan,
                               atol=0, rtol=0)
    capped = sinkhorn(C, a, b, eps=0.005, tol=1e-300, warn=False)  # never converges: runs the cap
    assert capped.n_iter == 100


def test_single_target_column_moves_all_mass_there():
    C, a, _ = _problem(n=1)
    res = sinkhorn(C, a, torch.ones(3, 1, dtype=torch.float64), tol=1e-12)
    torch.testing.assert_close(res.plan[..., 0], a, atol=1e-12, rtol=0)


@pytest.mark.parametrize("shape", [(0, 3, 4), (1, 0, 4), (1, 3, 0)])
def test_empty_cost_is_refused_with_its_shape(shape):
    with pytest.raises(ValueError, match=r"cost must be non-empty, got shape \(" + ", ".join(map(str, shape))):
        sinkhorn(torch.rand(shape))


def test_non_float_cost_message():
    with pytest.raises(TypeError, match=r"^cost must be a floating torch\.Tensor of shape \(B, m, n\)$"):
        sinkhorn(torch.ones(1, 3, 4, dtype=torch.long))


def test_stabilized_scaling_on_a_wide_range_matches_pot_log_with_padding():
    """Cost range / eps far past fp32's exp range (2 / 0.005 = 400): auto keeps the scaling form
    and absorbs large scalings into potentials; the plan equals POT's log-domain solver's on the
    active block, padding stays at zero mass, and no entry is NaN."""
    C, a, b = _problem(padded=True)
    C32, a32, b32 = C.float(), a.float(), b.float()
    res = sinkhorn(C32, a32, b32, eps=0.005, tol=1e-5, max_iter=20000)
    assert res.method == "scaling" and bool(res.converged.all())
    lg = sinkhorn(C32, a32, b32, eps=0.005, tol=1e-5, max_iter=20000, method="log", warn=False)
    assert abs(lg.n_iter - res.n_iter) <= 2  # the same iteration in another form (fp32 rounding)
    for i in range(3):
        m, n = 5 - i, 8 - 2 * i
        ref = ot.sinkhorn(a[i, :m].numpy(), b[i, :n].numpy(), C[i, :m, :n].numpy(), reg=0.005,
                          method="sinkhorn_log", stopThr=1e-13, numItermax=200000)
        np.testing.assert_allclose(res.plan[i, :m, :n].double().numpy(), ref, atol=1e-5)
        assert float(res.plan[i, m:].abs().sum()) == 0.0
        assert float(res.plan[i, :, n:].abs().sum()) == 0.0
    assert bool(torch.isfinite(res.plan).all())


@pytest.mark.parametrize("eps", [0.1, 0.03])
def test_in_place_scaling_equals_the_autograd_path_bitwise(eps):
    """Without autograd the scaling form writes into preallocated buffers and builds the plan in
    the kernel's storage; with a cost that requires grad it runs out of place. Same iterates, same
    float operations: identical plans and iteration counts."""
    g = torch.Generator().manual_seed(5)
    x = torch.randn(6, 40, 16, generator=g)
    x[:, 20:] += 2 * x[:, :1]
    C = cosine_cost(x[:, :12], x[:, 12:])
    plain = sinkhorn(C, eps=eps, max_iter=500, tol=1e-5, warn=False)
    graph = sinkhorn(C.clone().requires_grad_(True), eps=eps, max_iter=500, tol=1e-5, warn=False)
    assert plain.n_iter == graph.n_iter > 3
    assert torch.equal(plain.plan, graph.plan.detach())
    graph.transport_cost.sum().backward()  # gradients still flow on that path


def test_unguarded_divisions_redo_the_solve_guarded_when_a_scaling_reaches_the_bound(monkeypatch):
    """Without padding the in-place loop divides by K v and K^T u without the max(., tiny) guard and
    checks, at each stopping test, every pending scaling against fl(min(a) / tiny) (reached whenever
    a denominator fell below tiny). Here K v underflows (mass must cross entries where the kernel
    is 0, plain scaling form): the check trips, the solve is redone guarded, and the plan and
    iteration count are bitwise the guarded out-of-place (autograd) loop's. A well-behaved
    problem runs once, unguarded, to the same plan as the guarded loop."""
    calls = []
    real = ot_module._scaling

    def spy(*args, **kwargs):
        out = real(*args, **kwargs)
        calls.append((kwargs["guard"], out is None))
        return out

    monkeypatch.setattr(ot_module, "_scaling", spy)
    hard = torch.ones(1, 3, 3) - torch.eye(3)[None]
    a = torch.tensor([[0.8, 0.1, 0.1]])
    with pytest.warns(SinkhornNotConverged):
        res = sinkhorn(hard, a, eps=0.001, max_iter=500, method="scaling")
    assert calls == [(False, True), (True, False)]
    with pytest.warns(SinkhornNotConverged):
        ref = sinkhorn(hard.clone().requires_grad_(True), a, eps=0.001, max_iter=500, method="scaling")
    assert res.n_iter == ref.n_iter == 500
    assert torch.equal(res.plan, ref.plan.detach())
    calls.clear()
    C, a, b = _problem(B=4, m=6, n=9, seed=2)
    C, a, b = C.float(), a.float(), b.float()
    res = sinkhorn(C, a, b, eps=0.02, max_iter=1000, tol=1e-5)
    ref = sinkhorn(C.clone().requires_grad_(True), a, b, eps=0.02, max_iter=1000, tol=1e-5)
    assert calls == [(False, False)] and res.n_iter == ref.n_iter > 10
    assert torch.equal(res.plan, ref.plan.detach())


# Found by mutation testing (docs/testing.md): the argument checks of sinkhorn() name the argument
# and its interval exactly, tol = 0 is refused (the stop rule err < tol could never hold), and a
# float64 cost with a NaN is refused even though float64 skips the overflow-safe sum check.
@pytest.mark.parametrize("kwargs, match", [
    (dict(eps=0.0), r"^eps must be in \(0\.0, inf\), got 0\.0$"),
    (dict(tol=0.0), r"^tol must be in \(0\.0, inf\), got 0\.0$"),
    (dict(max_iter=0), r"^max_iter must be in \[1, inf\], got 0$"),
    (dict(b=torch.full((1, 4), 0.5)), r"^marginals a and b must have the same total mass in every problem$"),
])
def test_argument_errors_name_the_argument_and_its_range(kwargs, match):
    with pytest.raises(ValueError, match=match):
        sinkhorn(torch.rand(1, 3, 4), **kwargs)


def test_float64_cost_with_a_nan_is_refused_and_huge_finite_costs_are_not():
    C = torch.rand(2, 3, 4, dtype=torch.float64)
    C[1, 2, 3] = float("nan")
    with pytest.raises(ValueError, match=r"^cost contains NaN or inf"):
        sinkhorn(C)
    # finite float64 entries whose sum overflows are valid costs (only their spread matters)
    big = torch.full((1, 3, 4), 1e308, dtype=torch.float64)
    big[0, 0, 0] = 1e308 - 1e293
    res = sinkhorn(big, eps=1e300, max_iter=5)
    assert bool(torch.isfinite(res.plan).all())
