"""Paired speed ratios with a confidence interval, for benchmarks that time two things in turn.

On a shared VM the time of one call moves by 10-30 % from minute to minute (other tenants' memory
traffic, frequency, page-cache state), so two separate medians taken a few seconds apart can
put a ratio on either side of a target: at stop 18 the same Sinkhorn comparison read 1.17x and
1.54x in two runs ten minutes apart. A ratio taken *per round* (the two calls of a round run
back to back, so slow drifts cancel) and summarized by its median with a bootstrap interval says
how far the figure can be trusted. The bootstrap is SciPy's (:func:`scipy.stats.bootstrap`,
percentile method, resampling rounds with replacement).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def paired_ratio(num: Sequence[float], den: Sequence[float], confidence: float = 0.95,
                 resamples: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """Median of the per-round ratios ``num[i] / den[i]`` and its bootstrap confidence interval.

    Parameters
    ----------
    num, den : sequences of float, equal length n >= 1
        Times of the two sides, one entry per round (any unit, the same for both), all > 0.
    confidence : float, default 0.95
        Level of the percentile interval.
    resamples : int, default 2000
        Bootstrap resamples of the n rounds.
    seed : int, default 0
        Seed of the resampling (fixed, so that a table can be reproduced from its times).

    Returns
    -------
    (median, low, high) : tuple of float
        The median of the n ratios and the interval's bounds; with n < 3 both bounds are NaN
        (no interval from so few rounds).

    Raises
    ------
    ValueError
        If the lengths differ, are zero, or a time is not a positive finite number.
    """
    a, b = np.asarray(num, dtype=np.float64), np.asarray(den, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1 or a.size == 0:
        raise ValueError(f"paired_ratio needs two equal-length, non-empty 1-D sequences, got {a.shape} and {b.shape}")
    if not (np.isfinite(a).all() and np.isfinite(b).all() and (a > 0).all() and (b > 0).all()):
        raise ValueError("paired_ratio: every time must be a positive finite number")
    r = a / b
    mid = float(np.median(r))
    if r.size < 3:
        return mid, math.nan, math.nan
    from scipy.stats import bootstrap

    ci = bootstrap((r,), np.median, confidence_level=confidence, n_resamples=resamples, method="percentile",
                   random_state=np.random.default_rng(seed)).confidence_interval
    return mid, float(ci.low), float(ci.high)


def fmt_ratio(num: Sequence[float], den: Sequence[float]) -> str:
    """``"1.42 [1.37, 1.48]"``: :func:`paired_ratio` for a markdown cell (``"1.42"`` with < 3 rounds)."""
    mid, lo, hi = paired_ratio(num, den)
    return f"{mid:.2f}" if math.isnan(lo) else f"{mid:.2f} [{lo:.2f}, {hi:.2f}]"
