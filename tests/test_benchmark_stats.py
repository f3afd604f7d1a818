"""benchmarks/_stats.py (paired ratios with a bootstrap interval) and the round order of
benchmarks/sinkhorn_speed.py, against values worked out by hand."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


st = _load("_stats")


def test_paired_ratio_is_the_median_of_the_round_ratios_not_the_ratio_of_medians():
    # rounds: the machine slows down 3x halfway; each round's ratio is 2 (num) / 1 (den)
    num = [2.0, 2.0, 2.0, 6.0, 6.0, 6.0, 6.0]
    den = [1.0, 1.0, 1.0, 3.0, 3.0, 3.0, 3.0]
    mid, lo, hi = st.paired_ratio(num, den)
    assert mid == 2.0 and lo == 2.0 and hi == 2.0  # every resample's median is 2
    # one round where only the denominator was slow: the ratio of medians mixes rounds
    # (median 2 / median 3 = 0.67), the median of the round ratios (2, 2, 0.67, 2, 2) does not
    mid2, _, _ = st.paired_ratio([2.0, 2.0, 2.0, 6.0, 6.0], [1.0, 1.0, 3.0, 3.0, 3.0])
    assert mid2 == 2.0


def test_paired_ratio_interval_brackets_the_median_and_is_reproducible():
    num = [1.0, 1.2, 1.4, 1.6, 1.8, 2.0, 2.2, 2.4, 2.6]
    den = [1.0] * 9
    mid, lo, hi = st.paired_ratio(num, den)
    assert mid == pytest.approx(1.8)
    assert 1.0 <= lo < mid < hi <= 2.6  # percentile bounds are medians of resamples: data values
    assert (lo, hi) == st.paired_ratio(num, den)[1:]  # fixed seed
    wider = st.paired_ratio(num, den, confidence=0.99)
    assert wider[1] <= lo and wider[2] >= hi


def test_paired_ratio_short_and_bad_input():
    mid, lo, hi = st.paired_ratio([3.0, 4.0], [1.0, 2.0])
    assert mid == pytest.approx(2.5) and math.isnan(lo) and math.isnan(hi)  # ratios 3 and 2
    assert st.fmt_ratio([3.0, 4.0], [1.0, 2.0]) == "2.50"
    assert st.fmt_ratio([2.0] * 3, [1.0] * 3) == "2.00 [2.00, 2.00]"
    with pytest.raises(ValueError, match="equal-length"):
        st.paired_ratio([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="equal-length"):
        st.paired_ratio([], [])
    with pytest.raises(ValueError, match="positive finite"):
        st.paired_ratio([1.0, 0.0, 1.0], [1.0, 1.0, 1.0])
    with pytest.raises(ValueError, match="positive finite"):
        st.paired_ratio([1.0, float("nan"), 1.0], [1.0, 1.0, 1.0])


def test_sinkhorn_speed_rounds_rotate_the_call_order():
    pytest.importorskip("ot")
    sk = _load("sinkhorn_speed")
    calls: list[str] = []
    fns = {k: (lambda k=k: calls.append(k)) for k in ("ours", "log", "scaling")}
    ticks = iter(range(100))
    ts = sk.timed_interleaved(fns, 4, lambda: next(ticks))
    assert calls == ["ours", "log", "scaling", "log", "scaling", "ours",
                     "scaling", "ours", "log", "ours", "log", "scaling"]
    # one time per round for each function, in its own list (each call takes one tick here)
    assert {k: len(v) for k, v in ts.items()} == {"ours": 4, "log": 4, "scaling": 4}
    assert all(t == 1 for v in ts.values() for t in v)
