"""One line naming the CPU a benchmark ran on, for the header of its output.

Speed ratios depend on the CPU, not only on the core count: on x86 without AVX-512 torch has no
fast bf16 GEMM (``aot+`` then takes fp32 similarity products) and MKL's kernels differ, so every
figure in docs/benchmarks.md should say which CPU produced it.
"""

from __future__ import annotations

import os
import platform

import torch


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (Linux), else :func:`platform.processor`."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def describe() -> str:
    """E.g. ``AMD EPYC, 2 cores, x86_64, torch CPU capability AVX2, bf16 GEMM kernels: no``."""
    from anchor_ot.methods.aot_plus import native_bf16_matmul

    return (f"{cpu_model()}, {os.cpu_count()} cores, {platform.machine()}, torch CPU capability "
            f"{torch.backends.cpu.get_cpu_capability()}, bf16 GEMM kernels: {'yes' if native_bf16_matmul() else 'no'}")
