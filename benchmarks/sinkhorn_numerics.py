"""Which Sinkhorn form to run: plain scaling, min-shifted scaling, or log domain.

Costs: 1 - cos between 34 anchors and 162 other tokens of 32 frames (random
Gaussian tokens, d=384), uniform marginals, fp32 and fp16 input, 1 torch thread,
tol 1e-3 (relative marginal L1), at most 2000 iterations. For each eps it prints,
per form: NaN in the plan, iterations, final marginal error, median ms. "plain" is
the textbook loop (K = exp(-C/eps), u = a/Kv, v = b/K^T u) written here only as the
reference point; the other two are `anchor_ot.sinkhorn(method=...)`.

Run: ``python benchmarks/sinkhorn_numerics.py``
"""

from __future__ import annotations

import statistics
import time
import warnings

import torch

from anchor_ot.ot import SinkhornNotConverged, cosine_cost, sinkhorn


def plain(C, eps, max_iter=2000, tol=1e-3):
    C = C.float()
    B, m, n = C.shape
    a, b = torch.full((B, m), 1 / m), torch.full((B, n), 1 / n)
    K = torch.exp(-C / eps)
    v = torch.ones(B, n)
    it = 0
    for it in range(1, max_iter + 1):
        u = a / (K @ v.unsqueeze(-1)).squeeze(-1)
        v = b / (u.unsqueeze(1) @ K).squeeze(1)
        P = u.unsqueeze(-1) * K * v.unsqueeze(-2)
        if not torch.isfinite(P).all() or float((P.sum(-1) - a).abs().sum(-1).max()) < tol:
            break
    P = u.unsqueeze(-1) * K * v.unsqueeze(-2)
    err = (P.sum(-1) - a).abs().sum(-1).max()
    return P, it, float(err)


def timed(fn, repeats=5):
    out = fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1e3)
    return out, statistics.median(times)


def main() -> None:
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    X = torch.randn(32, 196, 384, generator=g)
    C32 = cosine_cost(X[:, :34], X[:, 34:])
    print("| input | eps | form | NaN | iterations | marginal error | ms |")
    print("|---|---:|---|---|---:|---:|---:|")
    for dtype in (torch.float32, torch.float16):
        C = C32.to(dtype)
        for eps in (0.1, 0.05, 0.01, 0.005):
            (P, it, err), ms = timed(lambda: plain(C, eps))
            print(f"| {str(dtype)[6:]} | {eps} | plain scaling | {not bool(torch.isfinite(P).all())} | {it} | "
                  f"{err:.1e} | {ms:.1f} |")
            for form in ("scaling", "log"):
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", SinkhornNotConverged)
                    res, ms = timed(lambda: sinkhorn(C, eps=eps, max_iter=2000, tol=1e-3, method=form))
                print(f"| {str(dtype)[6:]} | {eps} | anchor_ot {form} | {not bool(torch.isfinite(res.plan).all())} | "
                      f"{res.n_iter} | {float(res.marginal_error.max()):.1e} | {ms:.1f} |")
            auto = sinkhorn(C, eps=eps, max_iter=2000, tol=1e-3, warn=False).method
            print(f"| {str(dtype)[6:]} | {eps} | auto picks | | | | {auto} |")


if __name__ == "__main__":
    main()
