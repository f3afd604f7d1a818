"""A/B of a reducer: an older source tree against this one, interleaved in one process, with the floor.

For speed work on a shared machine (issue 12): absolute times swing with other jobs, so the old
and the new code run in the same process, in alternating order, each call followed by the
compute floor of ``_floor.py`` (the two batched fp32 products at AOT's shapes). Same setting as
``reduce_speed.py``: F=32, N=196 (14x14), d=3584, retention 0.1, random tokens and scores with a
fixed seed, given in fp32/fp16/bf16.

The old code is imported from ``--old``, the ``src`` folder of another checkout, e.g. main's::

    git archive main src | tar -x -C /tmp/old
    PYTHONPATH=src python benchmarks/ab_reduce.py --old /tmp/old/src --threads 1 2

Before timing, the two outputs are compared on each input (tokens, source index, assignment,
mass: ``identical`` or the largest relative token difference). Columns: medians of ``--rounds``
rounds (after 2 warm-up rounds); at 1 thread also the thread CPU time ratios (time the process
was descheduled does not count: the steadier figure under load). ``--paired`` adds two columns
for a machine shared with other jobs: the median over rounds of each round's new / old (the two
calls of a round run back to back, so slow drifts of the load cancel) and the fastest new call /
fastest old call (the figures least touched by other jobs).
"""

from __future__ import annotations

import argparse
import os
import statistics as st
import sys
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--old", required=True, help="src folder of the old checkout")
    ap.add_argument("--new", default=os.path.join(os.path.dirname(HERE), "src"))
    ap.add_argument("--method", default="aot")
    ap.add_argument("--threads", type=int, nargs="*", default=[1, 2])
    ap.add_argument("--dtypes", nargs="*", default=["float32", "float16", "bfloat16"])
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--paired", action="store_true",
                    help="add the median of per-round new/old ratios and the fastest-call ratio")
    args = ap.parse_args()
    sys.path.insert(0, HERE)
    from _trees import import_tree  # noqa: E402  (benchmarks/_trees.py)

    om, ot_ = import_tree(args.old, "anchor_ot.methods", "anchor_ot.types")
    nm, nt_ = import_tree(args.new, "anchor_ot.methods", "anchor_ot.types")
    from _floor import floor_setting  # noqa: E402  (imports anchor_ot: the new tree, loaded last)

    X, g, l, floor, _ = floor_setting()
    print(f"torch {torch.__version__}, {args.method}, load average {os.getloadavg()[0]:.1f} at start, "
          f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '(unset)')}, median of {args.rounds} rounds")
    print()
    extra = " paired new / old | fastest new / old |" if args.paired else ""
    print("| threads | input | old ms | new ms | floor ms | old / floor | new / floor | new / old | "
          f"thread CPU new / old (1 thread) |{extra} outputs |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|" + ("---:|---:|" if args.paired else "") + "---|")
    for th in args.threads:
        torch.set_num_threads(th)
        for dt in args.dtypes:
            x = X.to(getattr(torch, dt))
            vo = ot_.VideoTokens(x, (14, 14), global_scores=g, local_scores=l)
            vn = nt_.VideoTokens(x, (14, 14), global_scores=g, local_scores=l)
            ro, rn = om.get(args.method, retention=0.1), nm.get(args.method, retention=0.1)
            a, b = ro(vo), rn(vn)
            if all(torch.equal(getattr(a, f), getattr(b, f)) for f in ("tokens", "source_index", "assignment", "mass")):
                same = "identical"
            else:
                ta, tb = a.tokens.double(), b.tokens.double()
                rel = float((ta - tb).abs().max() / ta.abs().max()) if ta.shape == tb.shape else float("nan")
                same = f"differ (tokens {rel:.1e} relative)"
            wall = {"old": [], "new": [], "floor": []}
            cpu = {"old": [], "new": []}
            for i in range(args.rounds + 2):
                pair = [("old", ro, vo), ("new", rn, vn)]
                for k, red, v in (pair if i % 2 == 0 else pair[::-1]):
                    c0, t0 = time.thread_time(), time.perf_counter()
                    red(v)
                    t1, c1 = time.perf_counter(), time.thread_time()
                    floor()
                    t2 = time.perf_counter()
                    if i >= 2:
                        wall[k].append(t1 - t0)
                        cpu[k].append(c1 - c0)
                        wall["floor"].append(t2 - t1)
            mo, mn, mf = (1e3 * st.median(wall[k]) for k in ("old", "new", "floor"))
            c = f"{st.median(cpu['new']) / st.median(cpu['old']):.3f}" if th == 1 else "-"
            pr = (f" {st.median(n / o for n, o in zip(wall['new'], wall['old'])):.3f} | "
                  f"{min(wall['new']) / min(wall['old']):.3f} |") if args.paired else ""
            print(f"| {th} | {dt} | {mo:.1f} | {mn:.1f} | {mf:.1f} | {mo / mf:.2f} | {mn / mf:.2f} | "
                  f"{mn / mo:.3f} | {c} |{pr} {same} |", flush=True)
    print(f"\nload average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
