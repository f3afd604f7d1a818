"""The compute floor of an OT merge at AOT's shapes, and method-vs-floor timing.

Shared by ``reduce_speed.py`` and ``flagship_sweep.py --speed`` (issues 2, 11, 12). The floor is
the two batched fp32 products any OT merge with these shapes must do: anchors x all tokens (the
cost, F x M x d times F x d x N) and plan x tokens (the aggregation, F x M x N times F x N x d),
with M = AOT's anchors per frame at the retention.
"""

from __future__ import annotations

import time
from typing import Callable

import torch

from anchor_ot import methods
from anchor_ot.types import VideoTokens


def floor_setting(frames: int = 32, grid: tuple[int, int] = (14, 14), dim: int = 3584,
                  retention: float = 0.1, seed: int = 0):
    """Random fp32 tokens (F, N, d), scores (F, N), the floor as a callable, and M.

    Draw order (fixed seed): tokens, global scores, local scores, then the plan (F, M, N)."""
    gen = torch.Generator().manual_seed(seed)
    F, N = frames, grid[0] * grid[1]
    X = torch.randn(F, N, dim, generator=gen)
    g_scores, l_scores = torch.rand(F, N, generator=gen), torch.rand(F, N, generator=gen)
    M = methods.get("aot", retention=retention)(
        VideoTokens(X, grid, global_scores=g_scores, local_scores=l_scores)).info["anchors_per_frame"][1]
    Xa, plan = X[:, :M].contiguous(), torch.rand(F, M, N, generator=gen)

    def floor() -> None:
        torch.bmm(Xa, X.transpose(1, 2))
        torch.bmm(plan, X)

    return X, g_scores, l_scores, floor, M


def alternate(reducers: dict[str, Callable], video: VideoTokens, floor: Callable[[], None],
              repeats: int, warmup: int = 2) -> tuple[dict[str, list[float]], list[float]]:
    """Each round calls every reducer, each call followed by a floor call; seconds per call.

    The first ``warmup`` rounds are dropped. Returns (reducer name -> times, floor times)."""
    times: dict[str, list[float]] = {k: [] for k in reducers}
    t_floor: list[float] = []
    for i in range(repeats + warmup):
        for k, red in reducers.items():
            t0 = time.perf_counter()
            red(video)
            t1 = time.perf_counter()
            floor()
            t2 = time.perf_counter()
            if i >= warmup:
                times[k].append(t1 - t0)
                t_floor.append(t2 - t1)
    return times, t_floor
