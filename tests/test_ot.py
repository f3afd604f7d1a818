"""Batched Sinkhorn: agreement with POT, marginals, numerics, errors."""

import warnings

import numpy as np
import ot
import pytest
import torch

from anchor_ot.ot import SinkhornNotConverged, cosine_cost, sinkhorn


def _costs(B=6, m=7, n=19, d=16, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return cosine_cost(torch.randn(B, m, d, generator=g, dtype=dtype), torch.randn(B, n, d, generator=g, dtype=dtype))


@pytest.mark.parametrize("eps", [0.5, 0.1, 0.05, 0.01, 0.005])
def test_matches_pot_per_problem(eps):
    C = _costs()
    g = torch.Generator().manual_seed(1)
    a = torch.rand(6, 7, generator=g, dtype=torch.float64) + 0.1
    b = torch.rand(6, 19, generator=g, dtype=torch.float64) + 0.1
    a, b = a / a.sum(-1, keepdim=True), b / b.sum(-1, keepdim=True)
    res = sinkhorn(C, a, b, eps=eps, max_iter=20000, tol=1e-10)
    assert bool(res.converged.all())
    for i in range(C.shape[0]):
        ref = ot.sinkhorn(a[i].numpy(), b[i].numpy(), C[i].numpy(), reg=eps, method="sinkhorn_log",
                          numItermax=200000, stopThr=1e-13)
        np.testing.assert_allclose(res.plan[i].numpy(), ref, atol=1e-8)


def test_marginals_and_emd_lower_bound():
    C = _costs(dtype=torch.float32)
    res = sinkhorn(C, eps=0.1, tol=1e-6, max_iter=1000)
    plan = res.plan.double()
    torch.testing.assert_close(plan.sum(-1), torch.full((6, 7), 1 / 7, dtype=torch.float64), atol=1e-6, rtol=0)
    torch.testing.assert_close(plan.sum(-2), torch.full((6, 19), 1 / 19, dtype=torch.float64), atol=1e-6, rtol=0)
    for i in range(6):
        exact = ot.emd2(np.full(7, 1 / 7), np.full(19, 1 / 19), C[i].double().numpy())
        # entropic plan costs at least the exact OT cost
        assert float(res.transport_cost[i]) >= exact - 1e-6
        assert float(res.transport_cost[i]) <= exact + 0.5


def test_converges_to_emd_as_eps_shrinks():
    C = _costs(B=1)
    exact = ot.emd2(np.full(7, 1 / 7), np.full(19, 1 / 19), C[0].numpy())
    gaps = [float(sinkhorn(C, eps=e, max_iter=50000, tol=1e-9).transport_cost[0]) - exact for e in (0.1, 0.02, 0.005)]
    assert gaps[0] > gaps[1] > gaps[2] >= -1e-9


def test_zero_marginals_are_padding():
    C = _costs(B=2, dtype=torch.float32)
    a = torch.full((2, 7), 1 / 5)
    a[:, 5:] = 0
    b = torch.full((2, 19), 1 / 15)
    b[:, 15:] = 0
    res = sinkhorn(C, a, b, eps=0.05, tol=1e-6, max_iter=2000)
    assert float(res.plan[:, 5:].abs().max()) == 0.0
    assert float(res.plan[:, :, 15:].abs().max()) == 0.0
    small = sinkhorn(C[:, :5, :15].contiguous(), eps=0.05, tol=1e-6, max_iter=2000)
    torch.testing.assert_close(res.plan[:, :5, :15], small.plan, atol=1e-6, rtol=1e-4)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
@pytest.mark.parametrize("eps", [0.1, 0.01, 0.005])
def test_no_nan_small_eps_and_half_input(dtype, eps):
    C = _costs(B=4, m=30, n=150, d=64, dtype=torch.float32).to(dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SinkhornNotConverged)
        res = sinkhorn(C, eps=eps, max_iter=3000)
    assert res.plan.dtype == torch.float32
    assert bool(torch.isfinite(res.plan).all())
    assert float(res.marginal_error.max()) < 1e-2


def test_auto_keeps_scaling_when_it_works_and_stabilizes_it_on_wide_ranges():
    C = _costs(dtype=torch.float32)
    assert sinkhorn(C, eps=0.1).method == "scaling"
    # wide range but well-behaved: min-shifted scaling converges, and auto keeps it
    wide = sinkhorn(C, eps=0.005, max_iter=3000)
    assert wide.method == "scaling" and bool(wide.converged.all())
    # mass that must cross entries where exp(-C/eps) underflows: scaling stalls, log converges
    hard = torch.ones(1, 3, 3) - torch.eye(3)[None]
    a = torch.tensor([[0.8, 0.1, 0.1]])
    with pytest.warns(SinkhornNotConverged):
        stalled = sinkhorn(hard, a, eps=0.001, max_iter=500, method="scaling")
    assert not bool(stalled.converged.all())
    # auto absorbs the large scalings into potentials (stabilized scaling form) and converges
    # like the log domain, to the same plan
    res = sinkhorn(hard, a, eps=0.001, max_iter=500)
    assert res.method == "scaling" and bool(res.converged.all())
    torch.testing.assert_close(res.plan.sum(-1), a, atol=1e-4, rtol=0)
    lg = sinkhorn(hard, a, eps=0.001, max_iter=500, method="log")
    assert bool(lg.converged.all()) and lg.n_iter == res.n_iter
    torch.testing.assert_close(res.plan, lg.plan, atol=1e-6, rtol=1e-4)
    # both forms give the same plan where both are safe
    s = sinkhorn(C, eps=0.1, method="scaling", tol=1e-5, max_iter=1000).plan
    lg = sinkhorn(C, eps=0.1, method="log", tol=1e-5, max_iter=1000).plan
    torch.testing.assert_close(s, lg, atol=1e-6, rtol=1e-3)


def test_stops_on_marginal_error_and_warns():
    C = _costs(dtype=torch.float32)
    res = sinkhorn(C, eps=0.1, tol=1e-3)
    assert bool((res.marginal_error < 1e-3).all()) and res.n_iter < 100
    with pytest.warns(SinkhornNotConverged):
        bad = sinkhorn(C, eps=0.005, max_iter=2, tol=1e-9)
    assert not bool(bad.converged.all())


def test_batch_equals_single_problems():
    C = _costs(dtype=torch.float64)
    res = sinkhorn(C, eps=0.05, tol=1e-10, max_iter=5000)
    for i in range(C.shape[0]):
        one = sinkhorn(C[i:i + 1], eps=0.05, tol=1e-10, max_iter=5000)
        torch.testing.assert_close(res.plan[i], one.plan[0], atol=1e-10, rtol=0)


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        (dict(cost=torch.rand(3, 4)), ValueError, "shape"),
        (dict(cost=torch.ones(1, 3, 4, dtype=torch.long)), TypeError, "floating"),
        (dict(cost=torch.full((1, 3, 4), float("nan"))), ValueError, "NaN"),
        (dict(cost=torch.rand(1, 3, 4), eps=0.0), ValueError, "eps"),
        (dict(cost=torch.rand(1, 3, 4), a=torch.tensor([[0.5, 0.5, 0.5]])), ValueError, "same total"),
        (dict(cost=torch.rand(1, 3, 4), a=torch.tensor([[-1.0, 1.0, 1.0]])), ValueError, "non-negative"),
        (dict(cost=torch.rand(1, 3, 4), b=torch.ones(1, 5)), ValueError, "shape"),
        (dict(cost=torch.rand(1, 3, 4), method="newton"), ValueError, "method"),
    ],
)
def test_bad_input(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        sinkhorn(**kwargs)


def test_cosine_cost_zero_vector_is_finite():
    x = torch.zeros(1, 2, 4)
    x[0, 1, 0] = 1
    C = cosine_cost(x, x)
    assert bool(torch.isfinite(C).all())
    assert float(C[0, 0, 1]) == pytest.approx(1.0)
    assert float(C[0, 1, 1]) == pytest.approx(0.0)
