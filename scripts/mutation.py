#!/usr/bin/env python
"""Mutation testing of the core with mutmut 3.x, one module at a time, within a time budget.

Not part of CI's required run. For each module it:

1. copies ``src/``, ``tests/`` and ``pyproject.toml`` into a scratch directory (the worktree
   stays clean: mutmut writes its ``mutants/`` tree and cache there);
2. appends a ``[tool.mutmut]`` section that mutates only that module and runs only the test
   files that exercise it (mutmut then runs, for each mutant, only the tests that called the
   mutated function, found in its stats run);
3. runs ``nice -n 15 mutmut run --max-children N`` under a wall-clock ``timeout``;
4. writes ``<out>/<module>.json`` (counts per status) and ``<out>/<module>-survivors.txt``
   (the diff of every surviving mutant, for review) and prints a summary table.

Usage::

    python scripts/mutation.py                      # every module in MODULES
    python scripts/mutation.py ot methods/_frames   # some modules
    python scripts/mutation.py --budget 900 --children 1 --out benchmarks/mutation

Requires ``pip install "mutmut>=3,<4"`` in the environment that runs the tests.
Equivalent survivors are explained in docs/testing.md.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# module (relative to src/anchor_ot, no .py) -> test files that exercise it. The big contract
# matrix (tests/test_methods_matrix.py) is left out: it covers every function of every method and
# would run ~70 cases per mutant; the value tests below are what should kill mutants.
MODULES: dict[str, list[str]] = {
    "ot": ["tests/test_ot.py", "tests/test_ot_values.py", "tests/test_values.py"],
    "methods/_frames": ["tests/test_frames_values.py", "tests/test_values.py", "tests/test_half_precision.py",
                        "tests/test_peers.py"],
    "methods/pool": ["tests/test_peers.py", "tests/test_values.py", "tests/test_half_precision.py"],
    "methods/visionzip": ["tests/test_peers.py", "tests/test_values.py", "tests/test_half_precision.py"],
    "methods/random_keep": ["tests/test_peers.py", "tests/test_values.py", "tests/test_half_precision.py"],
    "methods/dycoke": ["tests/test_peers.py", "tests/test_half_precision.py"],
    "methods/divprune": ["tests/test_peers.py", "tests/test_half_precision.py"],
    "methods/aot": ["tests/test_aot.py", "tests/test_values.py", "tests/test_half_precision.py"],
    "methods/base": ["tests/test_peers.py", "tests/test_values.py", "tests/test_aot.py"],
    "metrics": ["tests/test_metrics.py"],
}

_CLEAR_CACHES = """


import functools as _functools  # added by scripts/mutation.py (scratch copy only)
import sys as _sys

import pytest as _pytest


@_pytest.fixture(autouse=True)
def _clear_anchor_ot_caches():
    for name, mod in list(_sys.modules.items()):
        if name.startswith("anchor_ot"):
            for obj in list(vars(mod).values()):
                if isinstance(obj, _functools._lru_cache_wrapper):
                    obj.cache_clear()
    yield
"""

STATUSES = ("killed", "survived", "timeout", "suspicious", "no tests", "skipped", "not checked",
            "segfault", "check was interrupted by user", "caught by type check")


def run_module(module: str, tests: list[str], budget: int, children: int, out: Path,
               timeout_multiplier: float = 1.5, keep: bool = False, mutants: list[str] | None = None) -> dict:
    target = f"src/anchor_ot/{module}.py"
    work = Path(tempfile.mkdtemp(prefix="anchor-ot-mutation-"))
    try:
        for item in ("src", "tests"):
            shutil.copytree(ROOT / item, work / item, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        # mutmut forks every mutant run from a process that already ran the tests: results memoized
        # by functools caches (pool's grid partitions) would hide mutants of the cached functions,
        # so the scratch copy clears every anchor_ot lru_cache before each test
        with open(work / "tests" / "conftest.py", "a") as fh:
            fh.write(_CLEAR_CACHES)
        cfg = (ROOT / "pyproject.toml").read_text()
        cfg += ("\n[tool.mutmut]\n"
                f"only_mutate = [{target!r}]\n"
                f"source_paths = ['src']\n"
                f"pytest_add_cli_args_test_selection = {tests!r}\n"
                "pytest_add_cli_args = ['-p', 'no:cacheprovider', '-q', '-x']\n"
                "use_git_change_detection = false\n"
                # a mutant that breaks convergence runs Sinkhorn to max_iter: call it a timeout at
                # 3x the tests' clean time (+5 s) instead of mutmut's default 30x
                f"timeout_multiplier = {timeout_multiplier}\n"
                "timeout_constant = 5.0\n")
        (work / "pyproject.toml").write_text(cfg)  # Python reprs are TOML literal strings
        env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONDONTWRITEBYTECODE="1")
        cmd = ["nice", "-n", "15", "timeout", str(budget), sys.executable, "-m", "mutmut", "run",
               "--max-children", str(children), *(mutants or [])]
        t0 = time.time()
        proc = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True)
        elapsed = time.time() - t0
        res = subprocess.run([sys.executable, "-m", "mutmut", "results", "--all", "true"], cwd=work, env=env,
                             capture_output=True, text=True)
        listing = res.stdout if res.returncode == 0 else ""
        if not listing:
            res = subprocess.run([sys.executable, "-m", "mutmut", "results"], cwd=work, env=env,
                                 capture_output=True, text=True)
            listing = res.stdout
        status: dict[str, str] = {}
        for line in listing.splitlines():
            m = re.match(r"\s*([\w.]+__mutmut_\d+): (.+)$", line)
            if m:
                status[m.group(1)] = m.group(2).strip()
        counts: dict[str, int] = {}
        for s in status.values():
            counts[s] = counts.get(s, 0) + 1
        survivors = [name for name, s in status.items() if s in ("survived", "no tests")]
        if mutants:  # a re-check: report only the mutants asked for
            status = {k: v for k, v in status.items() if k in set(mutants)}
            counts = {}
            for s in status.values():
                counts[s] = counts.get(s, 0) + 1
            survivors = [name for name in survivors if name in status]
        safe = module.replace("/", ".") + ("-recheck" if mutants else "")
        with open(out / f"{safe}-survivors.txt", "w") as fh:
            for name in survivors:
                diff = subprocess.run([sys.executable, "-m", "mutmut", "show", name], cwd=work, env=env,
                                      capture_output=True, text=True).stdout
                fh.write(f"### {name}: {status[name]}\n{diff}\n")
        summary = {"module": module, "tests": tests, "budget_s": budget, "elapsed_s": round(elapsed, 1),
                   "finished": proc.returncode == 0, "returncode": proc.returncode, "counts": counts,
                   "mutants": len(status)}
        (out / f"{safe}.json").write_text(json.dumps(summary, indent=2) + "\n")
        if proc.returncode != 0:
            (out / f"{safe}-log.txt").write_text(proc.stdout[-20000:] + "\n" + proc.stderr[-20000:])
        return summary
    finally:
        if keep:
            print(f"kept scratch directory {work}", flush=True)
        else:
            shutil.rmtree(work, ignore_errors=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("modules", nargs="*", help=f"modules to mutate (default: all of {', '.join(MODULES)})")
    ap.add_argument("--budget", type=int, default=1200, help="wall-clock seconds per module (default 1200)")
    ap.add_argument("--children", type=int, default=1, help="parallel mutant runs (default 1: shared machine)")
    ap.add_argument("--mutants", type=Path, help="file of mutant names (e.g. a survivors list) to re-check "
                    "with the current tests; needs exactly one module")
    ap.add_argument("--keep", action="store_true", help="keep the scratch directory (to rerun survivors)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "mutation", help="report directory")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    mods = args.modules or list(MODULES)
    names = None
    if args.mutants:
        if len(mods) != 1:
            ap.error("--mutants needs exactly one module")
        names = re.findall(r"[\w.]+__mutmut_\d+", args.mutants.read_text())
    for m in mods:
        if m not in MODULES:
            ap.error(f"unknown module {m!r}; known: {', '.join(MODULES)}")
    print(f"{'module':22s} {'mutants':>7s} {'killed':>6s} {'survived':>8s} {'timeout':>7s} {'other':>5s} {'time':>6s}")
    for m in mods:
        s = run_module(m, MODULES[m], args.budget, args.children, args.out, keep=args.keep, mutants=names)
        c = s["counts"]
        other = s["mutants"] - c.get("killed", 0) - c.get("survived", 0) - c.get("timeout", 0)
        print(f"{m:22s} {s['mutants']:7d} {c.get('killed', 0):6d} {c.get('survived', 0):8d} "
              f"{c.get('timeout', 0):7d} {other:5d} {s['elapsed_s']:5.0f}s"
              + ("" if s["finished"] else f"  (stopped: rc {s['returncode']})"), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
