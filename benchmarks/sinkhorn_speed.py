"""Our batched Sinkhorn vs POT's ``ot.batch.solve_batch`` on structured costs, at equal marginal error.

Costs (cosine, ``1 - cos``, uniform marginals), as AOT's intra-frame step builds them:
per frame, the 34 tokens with the highest global score are the anchors (rows), the
other 162 tokens the targets (columns).

* ``real``: DINOv2 ViT-S/14 tokens (d = 384) of the bundled clips, read from the bench
  cache (``anchor-ot bench`` writes it under ``~/.cache/anchor-ot/bench``); the intra
  batch is one clip's 32 frames, the long-video batch stacks the frames (and the
  in-between frames) of every cached clip and cycles them to 256 frames.
* ``clusters``: planted clusters, 8 cluster centres per frame drifting over time, each
  token a centre plus noise (d = 384, fixed seed); used when no cache exists, and always
  as a second case.

For each batch and eps in {0.05, 0.02, 0.01} (0.05 and 0.02 for the 256-frame batches): our ``sinkhorn`` (``method="auto"``) at
``tol`` (relative marginal L1) and POT's ``solve_batch`` (its default log-domain solver,
and its scaling solver ``method="sinkhorn"``). POT stops on the L2 norm of the row
error, checked every 10 iterations, so "the same tolerance" is set by error, not by
the number: POT's tol is the largest of ``tol * 2**-k`` (k = 0..8) whose final error,
measured as ours (relative marginal L1, rows + columns), is at most ours. Where both stop at the
2000-iteration cap, POT's error is accepted within 5% of ours and marked "(cap)"; "NaN" means
POT's plan was not finite (its scaling solver's kernel underflows at small eps). Times are
medians of ``--repeats`` rounds in one process, each round calling ours, POT log, POT scaling
and POT's loop once in turn, each round starting one further on; "POT best / ours" is POT's
faster solver's median time over ours (>= 1.5 is the target), "paired [95% CI]" the median of
the per-round ratios of the same two with a bootstrap interval (``benchmarks/_stats.py``): the
figure to trust on a shared machine, where separate medians move by ~+-25 % between runs.
``solve_batch`` also computes the plan's value (``<T, M>`` and its entropy, a ``T log T`` pass)
after the loop, which ours leaves out (its transport cost is computed on first
read); ours computes the marginal error of the plan (two sums), which POT does not return. The
last two columns time POT's scaling loop alone (``exp(-M / reg)`` and
``ot.batch.bregman_projection_batch``, the two steps ``solve_batch`` runs before the value) at
the same tol, in the same rounds. ``--clock cpu`` times this thread's CPU time instead of wall time (for a
loaded machine); ``--only`` picks batches by name; ``--skip-pot-log`` leaves out POT's slow
log-domain solver.

Run: ``PYTHONPATH=src python benchmarks/sinkhorn_speed.py [--threads 1] [--repeats 9] [--tol 1e-3]
[--clock wall|cpu] [--only "real intra" ...] [--skip-pot-log]``
"""

from __future__ import annotations

import argparse
import glob
import math
import os
import statistics
import sys
import time
import warnings

import torch

from anchor_ot.ot import cosine_cost, sinkhorn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _machine import describe  # noqa: E402  (benchmarks/_machine.py)
from _stats import fmt_ratio  # noqa: E402  (benchmarks/_stats.py)

ANCHORS = 34


def intra_cost(tokens: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
    """(F, 34, N - 34) cosine cost: top-scored tokens of each frame against the others."""
    order = torch.argsort(scores, dim=1, descending=True)
    F, N, d = tokens.shape
    picked = torch.gather(tokens, 1, order[:, :, None].expand(F, N, d))
    return cosine_cost(picked[:, :ANCHORS], picked[:, ANCHORS:]).contiguous()


def real_batches(frames_long: int) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    root = os.path.join(os.path.expanduser("~"), ".cache", "anchor-ot", "bench")
    files = sorted(glob.glob(os.path.join(root, "*.safetensors")))
    if not files:
        return {}
    clips = [load_file(f) for f in files]
    first = clips[0]
    out = {f"real intra ({os.path.basename(files[0]).split('-')[0]}, 32 frames)":
           intra_cost(first["tokens"], first["global_scores"])}
    toks, scores = [], []
    for c in clips:
        toks.append(c["tokens"])
        scores.append(c["global_scores"])
        if "between_tokens" in c:  # in-between frames carry no scores: rank by distinctiveness
            bt = c["between_tokens"]
            mean = torch.nn.functional.normalize(bt.mean(1, keepdim=True), dim=-1)
            toks.append(bt)
            scores.append(1 - (torch.nn.functional.normalize(bt, dim=-1) * mean).sum(-1))
    tokens, sc = torch.cat(toks), torch.cat(scores)
    reps = math.ceil(frames_long / tokens.shape[0])
    n_real = tokens.shape[0]
    tokens, sc = tokens.repeat(reps, 1, 1)[:frames_long], sc.repeat(reps, 1)[:frames_long]
    out[f"real long video ({n_real} distinct frames of {len(files)} clips, cycled to {frames_long})"] = \
        intra_cost(tokens, sc)
    return out


def cluster_tokens(frames: int, n: int = 196, d: int = 384, k: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(k, d, generator=g)
    drift = torch.randn(k, d, generator=g) * 0.02
    t = torch.arange(frames, dtype=torch.float32)[:, None, None]
    c = centres[None] + t * drift[None]  # (F, k, d)
    label = torch.randint(0, k, (frames, n), generator=g)
    x = torch.gather(c, 1, label[..., None].expand(frames, n, d)) + 0.6 * torch.randn(frames, n, d, generator=g)
    return x, torch.rand(frames, n, generator=g)


def marginal_error(plan: torch.Tensor) -> float:
    B, m, n = plan.shape
    return float(((plan.sum(-1) - 1 / m).abs().sum(-1) + (plan.sum(-2) - 1 / n).abs().sum(-1)).max())


def timed_interleaved(fns: dict, repeats: int, clock) -> dict[str, list[float]]:
    """Seconds of each function in each of ``repeats`` rounds; each round calls every function once,
    so that load changes hit all of them alike, starting one function further on each round (round
    r calls them in the order rotated by r): no function always runs right after the same other
    one (POT's log solver leaves the caches and the heap in another state than ours does)."""
    ts: dict[str, list[float]] = {k: [] for k in fns}
    names = list(fns)
    for r in range(repeats):
        for k in names[r % len(names):] + names[:r % len(names)]:
            t = clock()
            fns[k]()
            ts[k].append(clock() - t)
    return ts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--tol", type=float, default=1e-3)
    ap.add_argument("--long", type=int, default=256)
    ap.add_argument("--eps", type=float, nargs="*", default=[0.05, 0.02, 0.01])
    ap.add_argument("--only", nargs="*", default=[],
                    help="run only the batches whose name contains one of these strings (e.g. 'real intra')")
    ap.add_argument("--long-eps", type=float, nargs="*", default=[0.05, 0.02],
                    help="eps for batches of more than 64 problems (POT's log domain takes ~25 s per call "
                         "there at eps 0.01)")
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                    help="wall: time.perf_counter (default, for a quiet machine); cpu: time.thread_time, "
                         "this thread's CPU time, which leaves out the time the thread waits for a core "
                         "on a loaded machine (with --threads 1 only)")
    ap.add_argument("--skip-pot-log", action="store_true",
                    help="leave out POT's log-domain solver (4-25x slower than its scaling solver here; "
                         "~10 s per call on the 256-problem clusters at eps 0.05)")
    args = ap.parse_args()
    if args.clock == "cpu" and args.threads != 1:
        ap.error("--clock cpu measures one thread: use it with --threads 1")
    clock = time.perf_counter if args.clock == "wall" else time.thread_time
    torch.set_num_threads(args.threads)
    import ot
    import ot.batch

    batches = real_batches(args.long)
    for F in (32, args.long):
        x, s = cluster_tokens(F)
        batches[f"planted clusters ({F} frames)"] = intra_cost(x, s)
    print(describe())
    print(f"torch {torch.__version__}, POT {ot.__version__}, threads={args.threads}, tol={args.tol:g}, "
          f"median of {args.repeats} interleaved rounds, {args.clock} clock; OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '(unset)')}")
    print()
    print("| costs | B x m x n | eps | ours ms | iters | ours err | POT log ms | POT log err | "
          "POT scaling ms | POT scaling err | POT best / ours | paired [95% CI] | POT scaling loop only ms | "
          "loop only / ours |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, cost in batches.items():
        if args.only and not any(s in name for s in args.only):
            continue
        B, m, n = cost.shape
        for eps in (args.eps if B <= 64 else args.long_eps):
            def ours():
                return sinkhorn(cost, eps=eps, max_iter=2000, tol=args.tol, warn=False)

            res = ours()
            err = float(res.marginal_error.max())
            row = [f"{name}", f"{B} x {m} x {n}", f"{eps}", None, f"{res.n_iter}", f"{err:.1e}"]
            fns = {"ours": ours}
            for method in ("log_sinkhorn", "sinkhorn"):
                if method == "log_sinkhorn" and args.skip_pot_log:
                    row += ["skipped", "-"]
                    continue
                chosen, closest, same = None, None, 0
                for k in range(9):
                    tol_pot = args.tol * 2.0 ** -k
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        plan = ot.batch.solve_batch(M=cost, reg=eps, max_iter=2000, tol=tol_pot,
                                                    reg_type="entropy", method=method).plan
                    e = marginal_error(plan)
                    if math.isfinite(e) and e <= err:
                        chosen = (tol_pot, e)
                        break
                    same = same + 1 if closest is not None and e == closest[1] else 0
                    if same == 2:  # same plan at tol, tol/2 and tol/4: the iteration cap stopped POT
                        break
                    if math.isfinite(e) and (closest is None or e < closest[1]):
                        closest = (tol_pot, e)
                if chosen is None and (closest is None or closest[1] > 1.05 * err):
                    row += ["n/a", "NaN" if closest is None else f"{closest[1]:.1e}: did not reach ours"]
                    continue
                if chosen is None:  # both stopped at the iteration cap, POT's error within 5% of ours
                    chosen = (closest[0], closest[1])

                def pot(tol_pot=chosen[0], method=method):
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        return ot.batch.solve_batch(M=cost, reg=eps, max_iter=2000, tol=tol_pot,
                                                    reg_type="entropy", method=method)

                fns[method] = pot
                row += [method, f"{chosen[1]:.1e}" + ("" if chosen[1] <= err else " (cap)")]  # time below
                if method == "sinkhorn":
                    def pot_loop(tol_pot=chosen[0]):
                        with warnings.catch_warnings():
                            warnings.simplefilter("ignore")
                            return ot.batch.bregman_projection_batch(torch.exp(-cost / eps), max_iter=2000,
                                                                     tol=tol_pot, grad="detach")

                    fns["loop"] = pot_loop
            raw = timed_interleaved(fns, args.repeats, clock)
            t = {k: 1e3 * statistics.median(v) for k, v in raw.items()}
            row[3] = f"{t['ours']:.2f}"
            row = [f"{t[c]:.2f}" if c in t and c != "ours" else c for c in row]
            pots = [k for k in fns if k not in ("ours", "loop")]
            best = min(pots, key=t.__getitem__) if pots else None
            row.append(f"{t[best] / t['ours']:.2f}" if best else "-")
            row.append(fmt_ratio(raw[best], raw["ours"]) if best else "-")
            row += [f"{t['loop']:.2f}", f"{t['loop'] / t['ours']:.2f}"] if "loop" in t else ["-", "-"]
            print("| " + " | ".join(row) + " |", flush=True)

if __name__ == "__main__":
    main()
