"""AOT reduce time vs the compute floor, and our Sinkhorn vs POT's batched solver.

Setting (issue 2): F=32 frames, N=196 tokens per frame (14x14), d=3584 (Qwen2-7B
hidden size), fp32, retention 0.1, CPU, a fixed thread count (``--threads``,
default 1). Random tokens and scores with a fixed seed.

The compute floor is the median time of the two batched products any OT merge
must do: anchors x all tokens (the cost matrix) and plan x tokens (the
aggregation), with AOT's own shapes (F x M x d times F x d x N, F x M x N times
F x N x d). The last line is ``ratio_to_floor=<x>``.

Run: ``python benchmarks/reduce_speed.py [--threads 1] [--repeats 15]``
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import torch

from anchor_ot import methods
from anchor_ot.ot import cosine_cost, sinkhorn
from anchor_ot.types import VideoTokens


def median_ms(fn, repeats: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--frames", type=int, default=32)
    ap.add_argument("--dim", type=int, default=3584)
    ap.add_argument("--retention", type=float, default=0.1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(0)
    F, h, w, d = args.frames, 14, 14, args.dim
    N = h * w
    X = torch.randn(F, N, d, generator=gen)
    video = VideoTokens(X, (h, w), global_scores=torch.rand(F, N, generator=gen),
                        local_scores=torch.rand(F, N, generator=gen))
    aot = methods.get("aot", retention=args.retention)
    out = aot(video)
    M = out.info["anchors_per_frame"][1]
    print(f"torch {torch.__version__}, threads={args.threads}, F={F}, N={N}, d={d}, fp32, "
          f"retention={args.retention}, anchors/frame={M}, K={out.num_tokens}")
    t_aot = median_ms(lambda: aot(video), args.repeats)

    Xa = X[:, :M]
    plan = torch.rand(F, M, N, generator=gen)

    def floor():
        torch.bmm(Xa, X.transpose(1, 2))
        torch.bmm(plan, X)

    t_floor = median_ms(floor, args.repeats)
    print(f"aot_reduce_ms={t_aot:.1f}")
    print(f"floor_ms={t_floor:.1f}  (anchors x tokens + plan x tokens, batched bmm)")

    # Sinkhorn: ours vs POT's batched solver on the intra-frame costs, same eps/tol/iterations
    cost = cosine_cost(Xa, X[:, M:])
    ours = sinkhorn(cost, eps=0.1, max_iter=100, tol=1e-3)
    t_ours = median_ms(lambda: sinkhorn(cost, eps=0.1, max_iter=100, tol=1e-3), args.repeats)
    print(f"sinkhorn_ours_ms={t_ours:.2f} iters={ours.n_iter} method={ours.method} "
          f"marginal_err={float(ours.marginal_error.max()):.1e}")
    try:
        import ot.batch

        def pot():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return ot.batch.solve_batch(M=cost, reg=0.1, max_iter=100, tol=1e-3, reg_type="entropy")

        res = pot()
        plan_pot = res.plan
        err = ((plan_pot.sum(-1) - 1 / M).abs().sum(-1) + (plan_pot.sum(-2) - 1 / (N - M)).abs().sum(-1)).max()
        t_pot = median_ms(pot, args.repeats)
        print(f"sinkhorn_pot_solve_batch_ms={t_pot:.2f} marginal_err={float(err):.1e} "
              f"(POT {ot.__version__}); ours/pot={t_ours / t_pot:.2f}")
    except ImportError:
        print("POT not installed: skipped the POT comparison (pip install pot)")
    print(f"ratio_to_floor={t_aot / t_floor:.2f}")


if __name__ == "__main__":
    main()
