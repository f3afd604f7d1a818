"""A/B of ``sinkhorn`` alone on the two problems ``aot`` gives it, across source trees, in one process.

Issue 12 (``aot`` at the compute floor): the Sinkhorn set-up and end checks are small ops that do
not scale with cores, too small to resolve inside a whole ``aot`` call on a loaded machine. This
times ``anchor_ot.ot.sinkhorn`` from each ``src`` tree given (old first), calls interleaved in
alternating order, thread CPU time, 1 thread, on ``aot``'s shapes (F=32, N=196, d=3584, 20 anchors
per frame of random tokens; ``aot`` at retention 0.1 has 34, the solve's shape is what matters):

- intra: cost (F, M, N) = 1 - cos(anchors, tokens), ``a`` uniform, ``b`` uniform over the
  unselected tokens and 0 on the anchor columns (the padded-marginal path);
- inter (a, b given): (F-1, M, M) anchors against the previous frame's, uniform marginals passed;
- inter (a, b None): the same with sinkhorn's default marginals (what ``aot`` passes since
  speed3 when every frame has all its anchors).

Plans are compared first (``torch.equal`` with the first tree). Example (about 30 s)::

    git archive main src | tar -x -C /tmp/old
    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/ab_sinkhorn_aot.py /tmp/old/src src --rounds 201
"""

from __future__ import annotations

import argparse
import os
import statistics as st
import sys
import time

import torch


def problems(F=32, N=196, M=20, d=3584, seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(F, N, d, generator=g)
    idx = torch.stack([torch.randperm(N, generator=g)[:M].sort().values for _ in range(F)])
    Xa = X.gather(1, idx[..., None].expand(F, M, d))
    nx, na = torch.nn.functional.normalize(X, dim=-1), torch.nn.functional.normalize(Xa, dim=-1)
    is_anchor = torch.zeros(F, N, dtype=torch.bool).scatter_(1, idx, True)
    cost, a, b = 1 - na @ nx.transpose(1, 2), torch.full((F, M), 1.0 / M), (~is_anchor).float() / (N - M)
    ci, ai = 1 - na[1:] @ na[:-1].transpose(1, 2), torch.full((F - 1, M), 1.0 / M)
    return {"intra (zero-mass anchor columns)": lambda m: m.sinkhorn(cost, a, b, warn=False),
            "inter (a, b given)": lambda m: m.sinkhorn(ci, ai, ai, warn=False),
            "inter (a, b None)": lambda m: m.sinkhorn(ci, warn=False)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("trees", nargs="+", help="src folders, the first is the reference")
    ap.add_argument("--rounds", type=int, default=201)
    args = ap.parse_args()
    torch.set_num_threads(1)
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from _trees import import_tree  # noqa: E402  (benchmarks/_trees.py)

    mods = [import_tree(t, "anchor_ot.ot")[0] for t in args.trees]
    print(f"torch {torch.__version__}, 1 thread, thread CPU time, median (fastest) of {args.rounds} "
          f"interleaved calls, load average {os.getloadavg()[0]:.1f} at start")
    print()
    print("| problem | iterations | plans | " + " | ".join(f"ms: {t}" for t in args.trees) + " | last / first |")
    print("|---|---:|---|" + "---:|" * (len(mods) + 1))
    for name, fn in problems().items():
        res = [fn(m) for m in mods]
        same = "identical" if all(torch.equal(res[0].plan, r.plan) for r in res) else "differ"
        ts = [[] for _ in mods]
        for i in range(args.rounds):
            for j in (range(len(mods)) if i % 2 == 0 else reversed(range(len(mods)))):
                c0 = time.thread_time()
                fn(mods[j])
                ts[j].append(time.thread_time() - c0)
        med = [1e3 * st.median(t) for t in ts]
        cells = " | ".join(f"{m:.3f} ({1e3 * min(t):.3f})" for m, t in zip(med, ts))
        print(f"| {name} | {'/'.join(str(r.n_iter) for r in res)} | {same} | {cells} | {med[-1] / med[0]:.3f} |")
    print(f"\nload average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
