"""Speed of every registered method on one LLaVA-OneVision-sized video.

Setting: F = 32 frames, N = 196 tokens per frame (14x14), d = 3584 (Qwen2-7B hidden
size), fp32, retention 0.1, random tokens with positive random scores, CPU, a fixed
number of torch threads (``--threads``, default 1). Reports the median wall time of
``--repeats`` calls after one warm-up call, and the ratio to ``aot`` when it is
registered. Prints a markdown table.

Run: ``PYTHONPATH=src python benchmarks/methods_speed.py [--threads 1] [--repeats 5]``
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch

from anchor_ot import methods
from anchor_ot.types import VideoTokens

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _machine import describe  # noqa: E402  (benchmarks/_machine.py)


def make_video(frames: int, grid: tuple[int, int], dim: int, seed: int = 0) -> VideoTokens:
    g = torch.Generator().manual_seed(seed)
    n = grid[0] * grid[1]
    tokens = torch.randn(frames, n, dim, generator=g)
    scores = torch.rand(frames, n, generator=g) + 1e-3
    local = torch.rand(frames, n, generator=g) + 1e-3
    return VideoTokens(tokens, grid, global_scores=scores, local_scores=local)


def time_method(name: str, video: VideoTokens, retention: float, repeats: int) -> float:
    """Median milliseconds of ``repeats`` calls, after one warm-up call."""
    red = methods.get(name, retention=retention)
    red(video)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        red(video)
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=32)
    ap.add_argument("--grid", type=int, nargs=2, default=(14, 14))
    ap.add_argument("--dim", type=int, default=3584)
    ap.add_argument("--retention", type=float, default=0.1)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--methods", nargs="*", default=None, help="default: every registered method")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    video = make_video(args.frames, tuple(args.grid), args.dim)
    names = args.methods or methods.available()
    ms = {n: time_method(n, video, args.retention, args.repeats) for n in names}
    base = ms.get("aot")
    if base is None and "aot" in methods.available():
        base = time_method("aot", video, args.retention, args.repeats)
    print(describe())
    print(f"F={args.frames}, grid={args.grid[0]}x{args.grid[1]}, d={args.dim}, fp32, retention={args.retention}, "
          f"torch threads={args.threads}, median of {args.repeats} after 1 warm-up, torch {torch.__version__}\n")
    print("| method | median ms | x aot |")
    print("|---|---:|---:|")
    for n in names:
        ratio = f"{ms[n] / base:.2f}" if base else "-"
        print(f"| {n} | {ms[n]:.1f} | {ratio} |")


if __name__ == "__main__":
    main()
