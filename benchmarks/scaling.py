"""How every method's reduce time and peak extra memory grow with the number of frames.

Setting: F in {8, 16, 32, 64, 128, 256} frames, N = 196 tokens per frame (14 x 14),
d = 3584 (Qwen2-7B hidden size) and d = 1152 (SigLIP width), fp32, retention 0.1, random
tokens with positive random scores (fixed seed), CPU, one torch thread by default.

Time: the fastest of ``repeats`` calls after one warm-up call (3 calls up to F = 32, 2 above;
on a shared machine other jobs only ever add time, so the minimum is the least noisy
estimate; the median is kept in the JSON).
Peak extra memory: resident set size (``/proc/self/statm``) sampled every millisecond by a
background thread during the calls, maximum minus the RSS just before them, reported in
MiB and as a multiple of the input tensor (F * N * d * 4 bytes). Each (method, d) runs in
its own process, F ascending, so memory freed by one method cannot hide another's peak;
RSS includes allocator slack, and a spike shorter than a millisecond can be missed.

Slope: least-squares fit of log(time) and log(peak memory) against log(F) over the
measured F. DivPrune is quadratic by design (every token's nearest neighbour over all
F * N tokens); ``--cap`` limits the frames it is timed at (default 64).

Writes ``<out>.json`` and, with matplotlib installed, ``<out>.png`` (log-log plot), and
prints markdown tables.

Run (long: ~15-30 min on a shared 2-core machine)::

    nice -n 10 env PYTHONPATH=src python benchmarks/scaling.py --out docs/img/scaling
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _memory import PeakRSS  # noqa: E402  (benchmarks/_memory.py)

FRAMES = (8, 16, 32, 64, 128, 256)
DIMS = (3584, 1152)
QUADRATIC = {"divprune": "all-pairs nearest neighbour over F*N tokens: (F*N)^2 * d"}


def worker(method: str, dim: int, frames: list[int], threads: int) -> None:
    """Measure one method at one width over ``frames`` (ascending); print one JSON line per F."""
    import torch

    from anchor_ot import methods
    from anchor_ot.types import VideoTokens

    torch.set_num_threads(threads)
    red = methods.get(method, retention=0.1)
    for F in frames:
        g = torch.Generator().manual_seed(0)
        x = torch.randn(F, 196, dim, generator=g)
        video = VideoTokens(x, (14, 14), global_scores=torch.rand(F, 196, generator=g) + 1e-3,
                            local_scores=torch.rand(F, 196, generator=g) + 1e-3)
        repeats = 3 if F <= 32 else 2
        times = []
        with PeakRSS(interval=0.001) as mem:
            red(video)  # warm-up
            for _ in range(repeats):
                t = time.perf_counter()
                red(video)
                times.append(time.perf_counter() - t)
        print(json.dumps({"method": method, "dim": dim, "frames": F, "ms": 1e3 * min(times),
                          "median_ms": 1e3 * statistics.median(times),
                          "peak_extra_mib": mem.extra / 2**20, "input_mib": x.numel() * 4 / 2**20}), flush=True)
        del video, x


def slope(xs, ys) -> float:
    lx, ly = [math.log(v) for v in xs], [math.log(max(v, 1e-9)) for v in ys]
    mx, my = statistics.fmean(lx), statistics.fmean(ly)
    return sum((a - mx) * (b - my) for a, b in zip(lx, ly)) / sum((a - mx) ** 2 for a in lx)


def plot(rows: list[dict], path: str) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no plot")
        return
    names = sorted({r["method"] for r in rows})
    dims = sorted({r["dim"] for r in rows}, reverse=True)
    fig, axes = plt.subplots(2, len(dims), figsize=(6 * len(dims), 9), squeeze=False)
    cmap = plt.get_cmap("tab20")
    for j, dim in enumerate(dims):
        for i, name in enumerate(names):
            pts = sorted((r["frames"], r["ms"], r["peak_extra_mib"])
                         for r in rows if r["method"] == name and r["dim"] == dim)
            if not pts:
                continue
            f = [p[0] for p in pts]
            style = "-" if name.startswith("aot") else "--"
            axes[0][j].plot(f, [p[1] for p in pts], style, marker="o", color=cmap(i % 20), label=name)
            axes[1][j].plot(f, [max(p[2], 1.0) for p in pts], style, marker="o", color=cmap(i % 20), label=name)
        ref = [8, 256]
        inp = [fr * 196 * dim * 4 / 2**20 for fr in ref]
        axes[1][j].plot(ref, inp, ":", color="k", label="input tensor")
        for k, what in enumerate(("reduce time (ms)", "peak extra RSS (MiB)")):
            ax = axes[k][j]
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_xlabel("frames F (N = 196)")
            ax.set_ylabel(what)
            ax.set_title(f"d = {dim}: {what}")
            ax.grid(True, which="both", alpha=0.3)
        axes[0][j].legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"plot: {path}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="scaling")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--methods", nargs="*", default=None)
    ap.add_argument("--dims", type=int, nargs="*", default=list(DIMS))
    ap.add_argument("--frames", type=int, nargs="*", default=list(FRAMES))
    ap.add_argument("--cap", type=int, default=64, help="largest F for quadratic-by-design methods")
    ap.add_argument("--worker", nargs=2, metavar=("METHOD", "DIM"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args.worker[0], int(args.worker[1]), args.frames, args.threads)
        return
    from anchor_ot import methods

    names = args.methods or methods.available()
    rows = []
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    for dim in args.dims:
        for name in names:
            frames = [f for f in args.frames if name not in QUADRATIC or f <= args.cap]
            cmd = [sys.executable, __file__, "--worker", name, str(dim), "--threads", str(args.threads),
                   "--frames", *map(str, frames)]
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
            got = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
            if proc.returncode != 0:
                print(f"{name} d={dim}: worker failed ({proc.returncode}): {proc.stderr[-500:]}", file=sys.stderr)
            for r in got:
                print(f"  {name} d={dim} F={r['frames']}: {r['ms']:.1f} ms, +{r['peak_extra_mib']:.0f} MiB", flush=True)
            rows += got
    with open(args.out + ".json", "w") as f:
        json.dump(rows, f, indent=1)
    plot(rows, args.out + ".png")
    for dim in args.dims:
        print(f"\nd = {dim}, N = 196, fp32, retention 0.1, torch threads {args.threads}\n")
        fr = sorted({r["frames"] for r in rows if r["dim"] == dim})
        print("| method | " + " | ".join(f"F={f} ms" for f in fr) + " | time slope | peak extra at largest F "
              "(x input) | memory slope |")
        print("|---|" + "---:|" * len(fr) + "---:|---:|---:|")
        for name in names:
            rs = sorted((r for r in rows if r["method"] == name and r["dim"] == dim), key=lambda r: r["frames"])
            if not rs:
                continue
            cells = {r["frames"]: f"{r['ms']:.1f}" for r in rs}
            ts = slope([r["frames"] for r in rs], [r["ms"] for r in rs]) if len(rs) > 1 else float("nan")
            ms = slope([r["frames"] for r in rs], [max(r["peak_extra_mib"], 1.0) for r in rs]) if len(rs) > 1 else float("nan")
            last = rs[-1]
            note = f" (quadratic by design, timed to F={last['frames']})" if name in QUADRATIC else ""
            print(f"| {name}{note} | " + " | ".join(cells.get(f, "-") for f in fr) +
                  f" | {ts:.2f} | {last['peak_extra_mib']:.0f} MiB ({last['peak_extra_mib'] / last['input_mib']:.2f}x, "
                  f"F={last['frames']}) | {ms:.2f} |")


if __name__ == "__main__":
    main()
