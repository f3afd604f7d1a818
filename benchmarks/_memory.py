"""Peak resident memory of a block of code, shared by the benchmark scripts.

Linux only (reads ``/proc/self/statm``). A background thread polls the RSS, so a peak shorter
than the poll interval can be missed; the benchmarks state the interval with their figures.
"""

from __future__ import annotations

import os
import threading
import time


def rss_bytes() -> int:
    """Resident set size of this process now, in bytes."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakRSS:
    """Peak RSS above the starting level while the block runs.

    After the block: ``extra`` (bytes above the start), ``peak`` and ``base`` (bytes) and
    ``seconds`` (wall time of the block).
    """

    def __init__(self, interval: float = 0.002):
        self.interval = interval

    def __enter__(self):
        self.base = rss_bytes()
        self.peak = self.base
        self._stop = threading.Event()

        def poll():
            while not self._stop.is_set():
                self.peak = max(self.peak, rss_bytes())
                time.sleep(self.interval)

        self._thread = threading.Thread(target=poll, daemon=True)
        self._thread.start()
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.t0
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_bytes())
        self.extra = self.peak - self.base
