"""How every method's reduce time and peak extra memory grow with the number of frames.

Setting: F in {8, 16, 32, 64, 128, 256} frames, N = 196 tokens per frame (14 x 14),
d = 3584 (Qwen2-7B hidden size) and d = 1152 (SigLIP width), fp32, retention 0.1, random
tokens with positive random scores (fixed seed), CPU, one torch thread by default.

Time: CPU time of the calling thread (``time.thread_time``) with one torch thread, where
torch runs every op in that thread: on a quiet machine it equals the wall time, and on a
loaded one it leaves out the time the scheduler gave other processes, which wall time
does not (at load 15 on 2 cores a 50 ms call could finish in one slice while a 1 s call
could not, bending the slopes). With ``--threads`` > 1 the wall time is used. Both are in
the JSON (``cpu_ms``, ``wall_ms``; ``ms`` is the one the tables use). CPU time still grows
under load through shared caches and memory bandwidth.

Each: one warm-up call per F, then the fastest of ``--repeats`` calls (default 3), the F
values interleaved (round 1 calls F = 8, 16, ..., 256, round 2 again, ...), so that load
changes on a shared machine hit every F alike. Other jobs only ever add time, so the
minimum is the least noisy estimate; the median is kept in the JSON. A call slower than
``--slow`` seconds (default 20) is not repeated: its first (cold) call is the figure
(``"calls": 1`` in the JSON).

Peak extra memory: resident set size (``/proc/self/statm``) sampled every millisecond by a
background thread during the calls, maximum minus the RSS just before them (input tensor
already allocated), reported in MiB and as a multiple of the input tensor (F * N * d * 4
bytes). RSS includes allocator slack, and a spike shorter than a millisecond can be missed.

Allocator: with glibc's defaults a block over 32 MiB is mapped fresh on every call and the
kernel zero-fills its pages on first touch; that cost is linear in the block size but
appears only once a block crosses the threshold, so it adds to the large-F points.
``--malloc-reuse`` (with its own ``--out``) keeps freed memory in the heap to show how
much of a slope it makes; the memory columns of such a run are not meaningful.

Isolation: each (method, d) runs in its own process (all its F inputs held at once, the
warm-up calls F ascending), so memory kept by one method's allocator cannot hide
another's peak.

Slopes: the least-squares fit of log(time) against log(F) over all measured F, and the
large-F exponent log(t(256) / t(64)) / log(4), which fixed per-call overheads (dominant at
small F) do not flatten; memory: the large-F exponent only (at small F the peak is mostly
one-time allocator and library growth). DivPrune is quadratic by design (every
token's nearest neighbour over all F * N tokens); by default it is run up to ``--cap``
frames (128); ``--cap 256`` runs it at F = 256 (a single call of minutes). Where its
F = 256 time is missing the table gives a quadratic estimate from its largest measured F,
marked "est.".

Resumable: results go to ``<out>.json`` after every (method, d) (under a file lock, so
several runs with different ``--methods``/``--dims``/``--frames`` can share one file);
points already there are skipped unless ``--redo``. At the end (or with ``--report`` alone)
it prints the markdown tables from the whole JSON and writes ``<out>.png`` (log-log plot,
with matplotlib).

Run (about 30 min at load 10-17 on this 2-core machine, DivPrune to F = 128; F = 256 adds
3 + 8 min of DivPrune CPU; see docs/benchmarks.md)::

    nice -n 10 env PYTHONPATH=src python benchmarks/scaling.py --out docs/img/scaling
    # split: --methods aot aot-dyn --dims 3584 --frames 8 16 32 64 128 256
    # DivPrune at F = 256:  --methods divprune --cap 256 --frames 256
    # tables and plot only: --report
"""

from __future__ import annotations

import argparse
import fcntl
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
N_TOKENS, GRID, RETENTION = 196, (14, 14), 0.1
QUADRATIC = {"divprune": "all-pairs nearest neighbour over F*N tokens: (F*N)^2 * d"}
AOT_FAMILY = ("aot", "aot-dyn", "aot+")


def make_video(F: int, dim: int):
    import torch

    from anchor_ot.types import VideoTokens

    g = torch.Generator().manual_seed(0)
    x = torch.randn(F, N_TOKENS, dim, generator=g)
    return VideoTokens(x, GRID, global_scores=torch.rand(F, N_TOKENS, generator=g) + 1e-3,
                       local_scores=torch.rand(F, N_TOKENS, generator=g) + 1e-3)


def worker(method: str, dim: int, frames: list[int], threads: int, repeats: int, slow: float) -> None:
    """Measure one method at one width over ``frames``; print one JSON line per F.

    Pass 1, F ascending: one warm-up call per F (its peak extra RSS recorded). Pass 2:
    ``repeats`` rounds, each calling every F once in turn, so that a change of machine load
    during the run hits every F alike instead of bending the curve (the slope compares F
    values timed minutes apart otherwise). An F whose warm-up took over ``slow`` seconds is
    left out of pass 2 and its warm-up time is the figure.
    """
    import torch

    from anchor_ot import methods

    torch.set_num_threads(threads)
    red = methods.get(method, retention=RETENTION)
    videos, rows = {}, {}

    def emit(F: int) -> None:
        r = rows[F]
        times, cpu = r["times"], r["cpu"]
        print(json.dumps({"method": method, "dim": dim, "frames": F, "wall_ms": 1e3 * min(times),
                          "wall_median_ms": 1e3 * statistics.median(times),
                          "cpu_ms": 1e3 * min(cpu), "cpu_median_ms": 1e3 * statistics.median(cpu),
                          "ms": 1e3 * min(cpu if threads == 1 else times), "calls": len(times),
                          "warm_up": F in videos, "peak_extra_mib": r["peak"] / 2**20,
                          "input_mib": r["input_mib"], "threads": threads,
                          "load_avg": os.getloadavg()[0],
                          "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}), flush=True)

    for F in sorted(frames):
        video = make_video(F, dim)
        with PeakRSS(interval=0.001) as mem:
            t, c = time.perf_counter(), time.thread_time()
            red(video)  # warm-up
            cold, cold_cpu = time.perf_counter() - t, time.thread_time() - c
        rows[F] = {"peak": mem.extra, "times": [], "cpu": [], "input_mib": video.tokens.numel() * 4 / 2**20}
        if cold <= slow:
            videos[F] = video
        else:  # final now: saved before the next (longer) call
            rows[F]["times"], rows[F]["cpu"] = [cold], [cold_cpu]
            del video
            emit(F)
    for _ in range(repeats):
        for F, video in videos.items():
            with PeakRSS(interval=0.001) as mem:
                t, c = time.perf_counter(), time.thread_time()
                red(video)
                rows[F]["times"].append(time.perf_counter() - t)
                rows[F]["cpu"].append(time.thread_time() - c)
            rows[F]["peak"] = max(rows[F]["peak"], mem.extra)
    for F in videos:
        emit(F)


def load_rows(path: str) -> list[dict]:
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return json.load(f)


def save_row(path: str, row: dict) -> None:
    """Add or replace one (method, dim, frames) point in the JSON, atomically, under a lock."""
    with open(path + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        rows = [r for r in load_rows(path)
                if (r["method"], r["dim"], r["frames"]) != (row["method"], row["dim"], row["frames"])]
        rows.append(row)
        rows.sort(key=lambda r: (-r["dim"], r["method"], r["frames"]))
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(rows, f, indent=1)
        os.replace(tmp, path)


def fmt_ms(ms: float) -> str:
    return f"{ms:.1f}" if ms < 100 else f"{ms:.0f}"


def slope(xs, ys) -> float:
    """Least-squares slope of log(ys) against log(xs)."""
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
    fig, axes = plt.subplots(2, len(dims), figsize=(6.5 * len(dims), 10), squeeze=False)
    cmap = plt.get_cmap("tab20")
    for j, dim in enumerate(dims):
        for i, name in enumerate(names):
            pts = sorted((r["frames"], r["ms"], r["peak_extra_mib"])
                         for r in rows if r["method"] == name and r["dim"] == dim)
            if not pts:
                continue
            f = [p[0] for p in pts]
            style = "-" if name in AOT_FAMILY else "--"
            lw = 2.2 if name in AOT_FAMILY else 1.0
            axes[0][j].plot(f, [p[1] for p in pts], style, lw=lw, marker="o", ms=3, color=cmap(i % 20), label=name)
            axes[1][j].plot(f, [max(p[2], 1.0) for p in pts], style, lw=lw, marker="o", ms=3, color=cmap(i % 20),
                            label=name)
        ref = [8, 256]
        t0 = min((r["ms"] for r in rows if r["dim"] == dim and r["frames"] == 8), default=None)
        if t0:
            axes[0][j].plot(ref, [t0, t0 * 32], ":", color="gray", label="slope 1")
            axes[0][j].plot(ref, [t0, t0 * 32 ** 2], "-.", color="gray", label="slope 2")
        inp = [fr * N_TOKENS * dim * 4 / 2**20 for fr in ref]
        axes[1][j].plot(ref, inp, ":", color="k", label="input tensor (1x)")
        axes[1][j].plot(ref, [2 * v for v in inp], "-.", color="k", label="2x input")
        for k, what in enumerate(("reduce time (ms, fastest call)", "peak extra RSS (MiB)")):
            ax = axes[k][j]
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_xticks(list(FRAMES), [str(v) for v in FRAMES])
            ax.set_xlabel(f"frames F (N = {N_TOKENS})")
            ax.set_ylabel(what)
            ax.set_title(f"d = {dim}: {what}")
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    print(f"plot: {path}")


def report(rows: list[dict], dims: list[int]) -> None:
    """Print one markdown table per width from the measured rows."""
    for dim in dims:
        rd = [r for r in rows if r["dim"] == dim]
        if not rd:
            continue
        loads = [r.get("load_avg") for r in rd if r.get("load_avg") is not None]
        threads = sorted({r.get("threads", 1) for r in rd})
        print(f"\nd = {dim}, N = {N_TOKENS}, fp32, retention {RETENTION}, torch threads {threads}"
              + (f", load average {min(loads):.1f}-{max(loads):.1f} during the runs" if loads else "") + "\n")
        print("| method | " + " | ".join(f"F={f} ms" for f in FRAMES) + " | time slope (all F) | "
              "time slope F=64-256 | peak extra RSS at F=256 (x input) | memory slope F=64-256 |")
        print("|---|" + "---:|" * len(FRAMES) + "---:|---:|---:|---:|")
        for name in sorted({r["method"] for r in rd}):
            rs = sorted((r for r in rd if r["method"] == name), key=lambda r: r["frames"])
            by_f = {r["frames"]: r for r in rs}
            cells = []
            for f in FRAMES:
                r = by_f.get(f)
                if r is None:
                    cells.append("-")
                    continue
                notes = [n for n, on in (("1 call", r.get("calls", 2) == 1),
                                         ("wall", "cpu_ms" not in r and r.get("threads", 1) == 1)) if on]
                cells.append(fmt_ms(r["ms"]) + (f" ({', '.join(notes)})" if notes else ""))
            fs = [r["frames"] for r in rs]
            ts = f"{slope(fs, [r['ms'] for r in rs]):.2f}" if len(rs) > 1 else "-"
            late = (f"{math.log(by_f[256]['ms'] / by_f[64]['ms']) / math.log(4):.2f}"
                    if 64 in by_f and 256 in by_f else "-")
            if name in QUADRATIC and 256 not in by_f and rs:
                big = rs[-1]
                est = big["ms"] * (256 / big["frames"]) ** 2
                cells[-1] = f"~{est / 1e3:.0f} s (est.)"
            ms = (f"{math.log(max(by_f[256]['peak_extra_mib'], 1.0) / max(by_f[64]['peak_extra_mib'], 1.0)) / math.log(4):.2f}"
                  if 64 in by_f and 256 in by_f else "-")
            last = rs[-1]
            mem = (f"{last['peak_extra_mib']:.0f} MiB ({last['peak_extra_mib'] / last['input_mib']:.2f}x)"
                   + ("" if last["frames"] == 256 else f" at F={last['frames']}"))
            note = " (quadratic by design)" if name in QUADRATIC else ""
            print(f"| {name}{note} | " + " | ".join(cells) + f" | {ts} | {late} | {mem} | {ms} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="scaling", help="writes <out>.json (resumable) and <out>.png")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--methods", nargs="*", default=None, help="default: every registered method")
    ap.add_argument("--dims", type=int, nargs="*", default=list(DIMS))
    ap.add_argument("--frames", type=int, nargs="*", default=list(FRAMES))
    ap.add_argument("--repeats", type=int, default=3, help="timed calls after the warm-up (fastest kept)")
    ap.add_argument("--slow", type=float, default=20.0, help="seconds: a slower first call is not repeated")
    ap.add_argument("--cap", type=int, default=128, help="largest F for quadratic-by-design methods")
    ap.add_argument("--malloc-reuse", action="store_true",
                    help="workers keep freed memory in glibc's heap (MALLOC_MMAP_THRESHOLD_/MALLOC_TRIM_THRESHOLD_ "
                         "16 GiB): no fresh zero-filled pages per call; for the time A/B only (RSS then never drops)")
    ap.add_argument("--redo", action="store_true", help="re-measure points already in <out>.json")
    ap.add_argument("--report", action="store_true", help="only print the tables and plot from <out>.json")
    ap.add_argument("--worker", nargs=2, metavar=("METHOD", "DIM"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args.worker[0], int(args.worker[1]), args.frames, args.threads, args.repeats, args.slow)
        return
    path = args.out + ".json"
    if not args.report:
        from anchor_ot import methods

        names = args.methods or methods.available()
        env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
        if args.malloc_reuse:
            env.update(MALLOC_MMAP_THRESHOLD_=str(16 * 2**30), MALLOC_TRIM_THRESHOLD_=str(16 * 2**30))
        for dim in args.dims:
            for name in names:
                done = {(r["method"], r["dim"], r["frames"]) for r in load_rows(path)}
                frames = sorted(f for f in args.frames if (name not in QUADRATIC or f <= args.cap)
                                and (args.redo or (name, dim, f) not in done))
                if not frames:
                    continue
                cmd = [sys.executable, __file__, "--worker", name, str(dim), "--threads", str(args.threads),
                       "--repeats", str(args.repeats), "--slow", str(args.slow), "--frames", *map(str, frames)]
                t0 = time.perf_counter()
                proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
                for line in proc.stdout:
                    if not line.startswith("{"):
                        continue
                    r = json.loads(line)
                    save_row(path, r)
                    print(f"  {name} d={dim} F={r['frames']}: {r['ms']:.1f} ms ({r['calls']} calls), "
                          f"+{r['peak_extra_mib']:.0f} MiB, load {r['load_avg']:.1f}", flush=True)
                err = proc.stderr.read()
                if proc.wait() != 0:
                    print(f"{name} d={dim}: worker failed ({proc.returncode}): {err[-800:]}", file=sys.stderr)
                print(f"{name} d={dim}: {time.perf_counter() - t0:.0f} s", flush=True)
    rows = load_rows(path)
    plot(rows, args.out + ".png")
    report(rows, sorted({r["dim"] for r in rows}, reverse=True))


if __name__ == "__main__":
    main()
