"""AOT reduce time vs the compute floor, per input dtype, in one process.

Setting (issues 2 and 12): F=32 frames, N=196 tokens per frame (14x14), d=3584
(Qwen2-7B hidden size), retention 0.1, CPU, at each torch thread count of ``--threads``
(default: 1 and 2, set in turn in one process). Random tokens and scores with a fixed
seed; the tokens are given in each of ``--dtypes`` (fp32, fp16, bf16; the methods compute
in fp32).

The compute floor is the time of the two batched products any OT merge must do:
anchors x all tokens (the cost) and plan x tokens (the aggregation), with AOT's own
shapes (F x M x d times F x d x N, F x M x N times F x N x d), in fp32, the working
dtype. Method and floor calls alternate, ``--repeats`` times after 2 warm-up rounds;
the ratio is median(method) / median(floor); "paired [95% CI]" is the median of the per-call
ratios (each method call over the floor call right after it, so slow drifts of the machine's
speed cancel) with a bootstrap interval (``benchmarks/_stats.py``), the figure to trust on a
shared VM; the last column is the ratio of the fastest calls (other jobs on a shared machine
only add time). Every registered AOT-family method given
by ``--methods`` is measured (default: ``aot``, and ``aot+`` when registered). One
markdown table for all thread counts, methods and dtypes; the last line is
``ratio_to_floor=<x>`` for ``aot`` on fp32 input at the first thread count.

On a machine shared with other jobs, OpenMP's default active wait makes threads spin
for the CPU a descheduled partner needs: with 2 threads every small parallel op can
wait a full scheduler slice. ``OMP_WAIT_POLICY=PASSIVE`` (set before Python starts)
avoids it; the header prints the setting in force.

Sinkhorn against POT on structured costs: ``benchmarks/sinkhorn_speed.py``.

Run: ``PYTHONPATH=src python benchmarks/reduce_speed.py [--threads 1 2] [--repeats 15]``
(about 3 minutes on a quiet 2-core machine with ``aot`` and ``aot+`` at 2 thread counts and 3 dtypes).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys

import torch

from anchor_ot import methods
from anchor_ot.types import VideoTokens

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _floor import alternate, floor_setting  # noqa: E402  (benchmarks/_floor.py)
from _machine import describe  # noqa: E402  (benchmarks/_machine.py)
from _stats import fmt_ratio  # noqa: E402  (benchmarks/_stats.py)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, nargs="*", default=[1, 2])
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--frames", type=int, default=32)
    ap.add_argument("--dim", type=int, default=3584)
    ap.add_argument("--retention", type=float, default=0.1)
    ap.add_argument("--dtypes", nargs="*", default=["float32", "float16", "bfloat16"])
    ap.add_argument("--methods", nargs="*", default=None)
    args = ap.parse_args()
    names = args.methods or [n for n in ("aot", "aot+") if n in methods.available()]
    F, (h, w), d = args.frames, (14, 14), args.dim
    N = h * w
    X, g_scores, l_scores, floor, M = floor_setting(F, (h, w), d, args.retention)

    print(describe())
    print(f"torch {torch.__version__}, threads={args.threads}, F={F}, N={N}, d={d}, retention={args.retention}, "
          f"anchors/frame={M}, OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '(unset)')}, "
          f"load average {os.getloadavg()[0]:.1f} at start; floor in fp32, median of {args.repeats}")
    print()
    print("| threads | method | input dtype | reduce ms | floor ms | ratio to floor | paired [95% CI] | "
          "ratio of the fastest calls |")
    print("|---:|---|---|---:|---:|---:|---:|---:|")
    last = None
    videos = {dtype: VideoTokens(X.to(getattr(torch, dtype)), (h, w), global_scores=g_scores, local_scores=l_scores)
              for dtype in args.dtypes}
    for threads in args.threads:
        torch.set_num_threads(threads)
        for dtype, video in videos.items():
            for name in names:
                red = methods.get(name, retention=args.retention)
                t_red, t_floor = alternate({name: red}, video, floor, args.repeats)
                t_red = t_red[name]
                r, f = 1e3 * statistics.median(t_red), 1e3 * statistics.median(t_floor)
                print(f"| {threads} | {name} | {dtype} | {r:.1f} | {f:.1f} | {r / f:.2f} | "
                      f"{fmt_ratio(t_red, t_floor)} | {min(t_red) / min(t_floor):.2f} |", flush=True)
                if name == "aot" and dtype == "float32" and last is None:
                    last = r / f
    print(f"\nload average {os.getloadavg()[0]:.1f} at the end")
    if last is not None:
        print(f"\nratio_to_floor={last:.2f}")


if __name__ == "__main__":
    main()
