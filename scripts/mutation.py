#!/usr/bin/env python
"""Mutation testing of the core with mutmut 3.x, in full or on a random sample, within a time budget.

Not part of CI's required run. For the modules asked for it:

1. copies ``src/``, ``tests/`` and ``pyproject.toml`` into one scratch directory (the worktree
   stays clean: mutmut writes its ``mutants/`` tree and cache there);
2. appends a ``[tool.mutmut]`` section that mutates only those modules and runs only the test
   files that exercise them (mutmut then runs, for each mutant, only the tests that called the
   mutated function, found in its stats run);
3. generates the mutants and runs the stats pass once, lists every mutant, and picks the ones to
   check per module: all of them, or a uniform random sample (``--sample N`` mutants per module
   or ``--fraction F`` of each module, drawn with ``random.Random(--seed)`` from the sorted names;
   ``--only`` narrows the population first);
4. runs ``nice -n 19 mutmut run --max-children N NAME...`` per module under a wall-clock
   ``timeout`` (``--budget`` seconds per module);
5. writes ``<out>/<module>[-<tag>].json`` (counts per status, the names checked, and the killed
   share with a 95% Wilson interval over the non-equivalent mutants) and
   ``<out>/<module>[-<tag>]-survivors.txt`` (the diff of every surviving mutant, for review),
   and prints a markdown table.

Mutants judged equivalent (they cannot change behaviour) are listed, with the reason, in
``benchmarks/mutation/equivalent.txt`` (one ``NAME  # reason`` per line); the score leaves them
out: score = (killed + timeout) / (checked - equivalent). docs/testing.md explains each one.

Usage::

    python scripts/mutation.py                                   # every module, every mutant
    python scripts/mutation.py ot methods/_frames --budget 1800  # some modules, in full
    python scripts/mutation.py methods/pool --sample 40 --seed 1 --tag s1
    python scripts/mutation.py ot --only '*x_sinkhorn__mutmut_*' --sample 60 --seed 1 --tag s1
    python scripts/mutation.py methods/aot --mutants benchmarks/mutation/methods.aot-survivors.txt
    python scripts/mutation.py --score benchmarks/mutation/*-s1.json   # re-score after review

Requires ``pip install "mutmut>=3,<4"`` (tested with 3.8.1) in the environment that runs the tests.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import math
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EQUIVALENT = ROOT / "benchmarks" / "mutation" / "equivalent.txt"

# module (relative to src/anchor_ot, no .py) -> test files that exercise it. The big contract
# matrix (tests/test_methods_matrix.py) is left out: it covers every function of every method and
# would run ~70 cases per mutant; the value tests below are what should kill mutants.
_PEER_TESTS = ["tests/test_peers.py", "tests/test_values.py", "tests/test_half_precision.py"]
_PEER_TESTS_BC = ["tests/test_peers_b.py", "tests/test_peers_c.py", "tests/test_half_precision.py"]
MODULES: dict[str, list[str]] = {
    "ot": ["tests/test_ot.py", "tests/test_ot_values.py", "tests/test_values.py"],
    "methods/_frames": ["tests/test_frames_values.py", "tests/test_values.py", "tests/test_half_precision.py",
                        "tests/test_peers.py"],
    "methods/pool": _PEER_TESTS + ["tests/test_pool_values.py"],
    "methods/visionzip": _PEER_TESTS + ["tests/test_frames_values.py"],
    "methods/random_keep": _PEER_TESTS,
    "methods/dycoke": _PEER_TESTS,
    "methods/divprune": _PEER_TESTS,
    "methods/aot": ["tests/test_aot.py", "tests/test_values.py", "tests/test_half_precision.py",
                    "tests/test_speed_paths.py"],
    "methods/aot_plus": ["tests/test_aot_plus.py", "tests/test_half_precision.py"],
    "methods/aot_dyn": ["tests/test_aot_dyn.py", "tests/test_half_precision.py", "tests/test_speed_paths.py"],
    "methods/base": ["tests/test_peers.py", "tests/test_values.py", "tests/test_aot.py"],
    "methods/_density": _PEER_TESTS_BC,
    "methods/fastvid": _PEER_TESTS_BC,
    "methods/prunevid": _PEER_TESTS_BC,
    "methods/ottvid": _PEER_TESTS_BC,
    "methods/holitom": _PEER_TESTS_BC,
    "methods/evs": _PEER_TESTS_BC,
    "methods/vidcom2": _PEER_TESTS_BC,
    "metrics": ["tests/test_metrics.py", "tests/test_metrics_values.py"],
    "adapters/base": ["tests/test_adapters.py", "tests/test_adapters_values.py"],
    "adapters/qwen_vl": ["tests/test_adapters.py", "tests/test_adapters_values.py"],
    "adapters/llava_onevision": ["tests/test_adapters.py", "tests/test_adapters_values.py"],
    # what a model family is (score layers, LLM grid, score pooling, side features), shared by the
    # transformers adapters and the vLLM plugin; the main suite reaches it through the adapters
    "families/base": ["tests/test_adapters.py", "tests/test_adapters_values.py", "tests/test_families_values.py"],
    "families/llava_onevision": ["tests/test_adapters.py", "tests/test_adapters_values.py", "tests/test_families_values.py"],
    "families/qwen_vl": ["tests/test_adapters.py", "tests/test_adapters_values.py", "tests/test_families_values.py"],
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

DETECTED = ("killed", "timeout", "segfault")  # the tests noticed the mutant (segfault: the process died)
UNDETECTED = ("survived", "no tests")  # "no tests": no selected test calls the mutated function
NAME_RE = re.compile(r"[\w.]+__mutmut_\d+")


def wilson(k: int, n: int, conf: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion k/n (scipy's if present, else the formula).

    ``(p + z^2/2n -+ z sqrt(p(1-p)/n + z^2/4n^2)) / (1 + z^2/n)`` with ``p = k/n`` and ``z`` the
    standard normal quantile at ``(1 + conf)/2`` (Wilson 1927). It ignores the finite-population
    correction of sampling without replacement, so it is slightly conservative.
    """
    if n == 0:
        return (0.0, 1.0)
    try:
        from scipy.stats import binomtest
        ci = binomtest(k, n).proportion_ci(confidence_level=conf, method="wilson")
        return (float(ci.low), float(ci.high))
    except ImportError:
        z = 1.959963984540054 if conf == 0.95 else _normal_quantile((1 + conf) / 2)
        p = k / n
        mid = p + z * z / (2 * n)
        half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
        den = 1 + z * z / n
        return (max(0.0, (mid - half) / den), min(1.0, (mid + half) / den))


def _normal_quantile(q: float) -> float:
    lo, hi = -10.0, 10.0
    for _ in range(200):  # bisection on the normal CDF
        mid = (lo + hi) / 2
        if 0.5 * math.erfc(-mid / math.sqrt(2)) < q:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def load_equivalent(path: Path = EQUIVALENT) -> set[str]:
    if not path.exists():
        return set()
    return {m.group(0) for line in path.read_text().splitlines()
            if (m := NAME_RE.match(line.strip()))}


def score(status: dict[str, str], equivalent: set[str]) -> dict:
    """Counts per status and the killed share over the non-equivalent checked mutants."""
    counts: dict[str, int] = {}
    for s in status.values():
        counts[s] = counts.get(s, 0) + 1
    checked = [n for n, s in status.items() if s in DETECTED + UNDETECTED]
    eq = [n for n in checked if n in equivalent]
    # an equivalent mutant the run happened to "detect" (a timeout under load) is left out of
    # both counts, as it is out of the denominator
    detected = [n for n in checked if status[n] in DETECTED and n not in equivalent]
    non_eq = len(checked) - len(eq)
    lo, hi = wilson(len(detected), non_eq)
    return {"counts": counts, "checked": len(checked), "detected": len(detected), "equivalent": len(eq),
            "survived_non_equivalent": non_eq - len(detected),
            "score": (len(detected) / non_eq) if non_eq else None, "ci95_wilson": [lo, hi]}


def pooled_score(strata: list[tuple[int, dict[str, str]]], equivalent: set[str]) -> dict:
    """Killed share over several modules sampled at different rates (a stratified sample).

    Each checked mutant of a module with population N_h and n_h checked mutants stands for
    w_h = N_h / n_h mutants; the share is sum(w * detected) / sum(w) over the non-equivalent ones,
    and its interval is Wilson's at Kish's effective sample size n_eff = (sum w)^2 / sum(w^2).
    With equal sampling rates this is the plain pooled share and interval.
    """
    num = den = den2 = 0.0
    tot = {"population": 0, "checked": 0, "detected": 0, "equivalent": 0}
    for pop, status in strata:
        s = score(status, equivalent)
        tot["population"] += pop
        for k in ("checked", "detected", "equivalent"):
            tot[k] += s[k]
        if not s["checked"]:
            continue
        w = pop / s["checked"]
        non_eq = s["checked"] - s["equivalent"]
        num += w * s["detected"]
        den += w * non_eq
        den2 += w * w * non_eq
    p = num / den if den else None
    n_eff = den * den / den2 if den2 else 0.0
    lo, hi = wilson_share(p, n_eff) if p is not None else (0.0, 1.0)
    return {**tot, "survived_non_equivalent": tot["checked"] - tot["equivalent"] - tot["detected"],
            "score": p, "n_eff": n_eff, "ci95_wilson": [lo, hi]}


def wilson_share(p: float, n: float, z: float = 1.959963984540054) -> tuple[float, float]:
    """Wilson's 95% interval written out for a share p at a (possibly fractional) sample size n."""
    mid = p + z * z / (2 * n)
    half = z * math.sqrt(max(p * (1 - p), 0.0) / n + z * z / (4 * n * n))
    den = 1 + z * z / n
    return (max(0.0, (mid - half) / den), min(1.0, (mid + half) / den))


def module_of(name: str) -> str:
    """``anchor_ot.methods.aot.xǁAOTǁ_intra__mutmut_3`` -> ``methods/aot``."""
    dotted = name.split(".x", 1)[0] if ".x" in name else name.rsplit(".", 1)[0]
    return dotted.removeprefix("anchor_ot.").replace(".", "/")


def _seconds_until(hhmm: str) -> int:
    """Seconds from now to the next HH:MM UTC (today, or tomorrow if it has passed by over 12 h)."""
    h, m = (int(x) for x in hhmm.split(":"))
    now = time.time()
    day = now - now % 86400
    t = day + 3600 * h + 60 * m
    if t < now - 43200:
        t += 86400
    return int(t - now)


def _mutmut(work: Path, env: dict, *args: str, timeout: int | None = None, nice: bool = False):
    cmd = [sys.executable, "-m", "mutmut", *args]
    if timeout:
        cmd = ["timeout", str(timeout), *cmd]
    if nice:
        cmd = ["nice", "-n", "19", *cmd]
    return subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True)


def _statuses(work: Path, env: dict) -> dict[str, str]:
    res = _mutmut(work, env, "results", "--all", "true")
    status: dict[str, str] = {}
    for line in res.stdout.splitlines():
        m = re.match(r"\s*([\w.]+__mutmut_\d+): (.+)$", line)
        if m:
            status[m.group(1)] = m.group(2).strip()
    return status


def sync(work: Path) -> None:
    """Copy ``src/`` and ``tests/`` into the scratch directory (modification times kept, so mutmut
    regenerates the mutants only of sources changed since, and finds new tests by itself)."""
    for item in ("src", "tests"):
        shutil.copytree(ROOT / item, work / item, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
                        dirs_exist_ok=True)
    # mutmut forks every mutant run from a process that already ran the tests: results memoized
    # by functools caches (pool's grid partitions) would hide mutants of the cached functions,
    # so the scratch copy clears every anchor_ot lru_cache before each test
    with open(work / "tests" / "conftest.py", "a") as fh:
        fh.write(_CLEAR_CACHES)


def prepare(modules: list[str], timeout_multiplier: float = 1.5) -> Path:
    targets = [f"src/anchor_ot/{m}.py" for m in modules]
    tests = sorted({t for m in modules for t in MODULES[m]})
    work = Path(tempfile.mkdtemp(prefix="anchor-ot-mutation-"))
    sync(work)
    cfg = (ROOT / "pyproject.toml").read_text()
    cfg += ("\n[tool.mutmut]\n"
            f"only_mutate = {targets!r}\n"
            "source_paths = ['src']\n"
            f"pytest_add_cli_args_test_selection = {tests!r}\n"
            "pytest_add_cli_args = ['-p', 'no:cacheprovider', '-q', '-x']\n"
            "use_git_change_detection = false\n"
            # a mutant that breaks convergence runs Sinkhorn to max_iter: call it a timeout at
            # 3x the tests' clean time (+5 s) instead of mutmut's default 30x
            f"timeout_multiplier = {timeout_multiplier}\n"
            "timeout_constant = 5.0\n")
    (work / "pyproject.toml").write_text(cfg)  # Python reprs are TOML literal strings
    return work


def narrow(names: list[str], only: list[str] | None) -> list[str]:
    """The names matching ``only``; a module none of whose names match keeps all of them."""
    if not only:
        return sorted(names)
    hit = [n for n in names if any(fnmatch.fnmatch(n, p) for p in only)]
    return sorted(hit or names)


_VERIFY_DRIVER = r"""
import json, os, sys, time
spec = json.loads(sys.argv[1])
for mod in spec["preload"]:  # heavy imports once, in the parent: every forked run starts warm
    try:
        __import__(mod)
    except Exception:
        pass
import pytest

def run(name, timeout):
    pid = os.fork()
    if pid == 0:  # child: select the mutant (mutmut's trampolines read it at call time), run the tests
        os.environ["MUTANT_UNDER_TEST"] = name
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, 1)
        os.dup2(null, 2)
        os._exit(int(pytest.main(spec["tests"])))
    t0 = time.time()
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status), time.time() - t0
        if timeout is not None and time.time() - t0 > timeout:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            return None, time.time() - t0
        time.sleep(0.05)

code, clean = run("", None)
print(json.dumps({"clean": code, "seconds": clean}), flush=True)
if code != 0:
    sys.exit(1)
limit = 3 * clean + 5
for name in spec["names"]:
    code, _ = run(name, limit)
    print(json.dumps({"name": name, "status": "timeout" if code is None else "killed" if code else "survived"}),
          flush=True)
"""

# modules the forked verify runs import up front (the tests' heavy dependencies)
_PRELOAD = ["torch", "numpy", "scipy", "transformers", "anchor_ot", "anchor_ot.adapters", "anchor_ot.methods",
            "transformers.models.llava_onevision.modeling_llava_onevision",
            "transformers.models.qwen2_5_vl.modeling_qwen2_5_vl", "transformers.models.qwen3_vl.modeling_qwen3_vl",
            "transformers.models.siglip.modeling_siglip"]


def verify(work: Path, env: dict, names: list[str], tests: list[str] | None, equivalent: set[str],
           out: Path, tag: str) -> int:
    """Run the tests under each named mutant in ``work/mutants`` (trampolines select the mutant by
    ``MUTANT_UNDER_TEST``); a failing run kills it. A clean run must pass first.

    Like mutmut itself, one process imports the heavy dependencies once and forks a child per
    mutant (a fresh interpreter per mutant spent most of its time importing torch and transformers).
    """
    shutil.copytree(work / "tests", work / "mutants" / "tests", dirs_exist_ok=True)
    venv = dict(env, PYTHONPATH=str(work / "mutants" / "src"), MUTANT_UNDER_TEST="")
    by_module: dict[str, list[str]] = {}
    for n in names:
        if n in equivalent:
            continue
        by_module.setdefault(module_of(n), []).append(n)
    for m, todo in by_module.items():
        sel = tests or MODULES[m]
        spec = {"tests": ["-q", "-x", "-p", "no:cacheprovider", *sel], "names": todo, "preload": _PRELOAD}
        cmd = ["nice", "-n", "19", sys.executable, "-c", _VERIFY_DRIVER, json.dumps(spec)]
        # a mutant that loops forever (e.g. in code the sampled run never reached) is a timeout,
        # counted as detected, at 3x the clean run (+5 s) as in the mutmut runs
        proc = subprocess.Popen(cmd, cwd=work / "mutants", env=venv, stdout=subprocess.PIPE, text=True)
        status = {}
        for line in proc.stdout:
            rec = json.loads(line)
            if "clean" in rec:
                if rec["clean"] != 0:
                    raise SystemExit(f"clean run of {sel} fails in {work / 'mutants'}")
                print(f"{m}: clean run {rec['seconds']:.1f}s", flush=True)
                continue
            status[rec["name"]] = rec["status"]
            print(f"{m}: {rec['name']}: {rec['status']}", flush=True)
        proc.wait()
        rep = {"module": m, "tag": tag, "tests": sel, "population": len(todo), **score(status, equivalent),
               "status": status}
        (out / f"{m.replace('/', '.')}-{tag}.json").write_text(json.dumps(rep, indent=2, ensure_ascii=False) + "\n")
    return 0


def choose(names: list[str], sample: int | None, fraction: float | None, seed: int,
           only: list[str] | None) -> list[str]:
    """The mutants to check: every name, or a uniform random sample without replacement."""
    pop = narrow(names, only)
    k = len(pop)
    if sample is not None:
        k = min(sample, len(pop))
    elif fraction is not None:
        k = min(len(pop), math.ceil(fraction * len(pop)))
    return sorted(random.Random(seed).sample(pop, k)) if k < len(pop) else pop


def fmt_score(s: dict) -> str:
    if s["score"] is None:
        return "n/a"
    lo, hi = s["ci95_wilson"]
    non_eq = s["checked"] - s["equivalent"]
    return f"{s['detected']}/{non_eq} = {100 * s['score']:.1f}% [{100 * lo:.1f}, {100 * hi:.1f}]"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("modules", nargs="*", help=f"modules to mutate (default: all of {', '.join(MODULES)})")
    ap.add_argument("--budget", type=int, default=1200, help="wall-clock seconds per module (default 1200)")
    ap.add_argument("--deadline", help="UTC time HH:MM: start no module after it and cut each module's "
                    "budget to end by it")
    ap.add_argument("--children", type=int, default=1, help="parallel mutant runs (default 1: shared machine)")
    ap.add_argument("--sample", type=int, help="check a uniform random sample of N mutants per module")
    ap.add_argument("--fraction", type=float, help="check a uniform random sample of this share of each "
                    "module's mutants (a self-weighting sample when modules are pooled)")
    ap.add_argument("--size", action="append", default=[], metavar="MODULE=N",
                    help="sample size for one module, overriding --sample/--fraction (repeatable)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the sample (default 0)")
    ap.add_argument("--only", action="append", help="fnmatch pattern on mutant names: the population to "
                    "check or sample from (repeatable), e.g. '*x_sinkhorn__mutmut_*'; a module none of whose "
                    "mutants match keeps all of them")
    ap.add_argument("--mutants", type=Path, help="file of mutant names (e.g. a survivors list) to re-check "
                    "with the current tests")
    ap.add_argument("--tag", help="suffix of the report files (default: sample<N>-seed<S>, recheck or none)")
    ap.add_argument("--equivalent", type=Path, default=EQUIVALENT, help="mutants judged equivalent")
    ap.add_argument("--score", nargs="+", type=Path, metavar="JSON", help="only re-score these reports "
                    "with the current equivalent list (no mutmut run)")
    ap.add_argument("--workdir", type=Path, help="reuse a scratch directory kept by an earlier run (--keep, "
                    "or a run that was killed) over the same modules: copies src/ and tests/ again, and mutmut "
                    "reuses its mutants and stats, redoing only changed sources and new tests; implies --keep")
    ap.add_argument("--verify", type=Path, metavar="FILE", help="with --workdir: re-check the mutants named "
                    "in FILE (a survivors list) by running the tests directly under each mutant (mutmut's "
                    "trampoline, MUTANT_UNDER_TEST), without mutmut's stats pass; writes <module>-verify.json")
    ap.add_argument("--verify-tests", nargs="+", metavar="TEST", help="tests for --verify (default: the "
                    "module's test files in MODULES); pytest node ids or files")
    ap.add_argument("--verified", nargs="+", type=Path, metavar="JSON", help="with --score: re-check "
                    "reports (--verify, --mutants) whose verdicts replace those of the sampled run")
    ap.add_argument("--keep", action="store_true", help="keep the scratch directory (to rerun survivors)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "mutation", help="report directory")
    args = ap.parse_args(argv)
    equivalent = load_equivalent(args.equivalent)
    header = ("| Module | Population | Checked | Killed+timeout | Equivalent | Survived (non-eq.) | "
              "Score [95% Wilson CI] |\n|---|---|---|---|---|---|---|")

    if args.score:
        print(header)
        strata: list[tuple[int, dict[str, str]]] = []
        later: dict[str, str] = {}  # re-checks after new tests: their verdicts replace the run's
        for path in args.verified or []:
            later.update(json.loads(path.read_text())["status"])
        for path in args.score:
            rep = json.loads(path.read_text())
            rep["status_at_run"] = rep.get("status_at_run", rep["status"])
            rep["status"] = {n: later.get(n, st) for n, st in rep["status_at_run"].items()}
            s = score(rep["status"], equivalent)
            rep.update(s)
            path.write_text(json.dumps(rep, indent=2, ensure_ascii=False) + "\n")
            print(f"| `{rep['module']}` {rep.get('tag') or ''} | {rep['population']} | {s['checked']} | "
                  f"{s['detected']} | {s['equivalent']} | {s['survived_non_equivalent']} | {fmt_score(s)} |")
            strata.append((rep["population"], rep["status"]))
        if len(strata) > 1:
            s = pooled_score(strata, equivalent)
            print(f"| pooled | {s['population']} | {s['checked']} | {s['detected']} | {s['equivalent']} | "
                  f"{s['survived_non_equivalent']} | {100 * s['score']:.1f}% [{100 * s['ci95_wilson'][0]:.1f}, "
                  f"{100 * s['ci95_wilson'][1]:.1f}] (weighted, n_eff {s['n_eff']:.0f}) |")
        return 0

    if args.sample is not None and args.fraction is not None:
        ap.error("--sample and --fraction exclude each other")
    mods = args.modules or list(MODULES)
    for m in mods:
        if m not in MODULES:
            ap.error(f"unknown module {m!r}; known: {', '.join(MODULES)}")
    sizes = {}
    for item in args.size:
        mod, _, n = item.partition("=")
        if mod not in MODULES or not n.isdigit():
            ap.error(f"--size wants MODULE=N with a known module, got {item!r}")
        sizes[mod] = int(n)
    asked = set(NAME_RE.findall(args.mutants.read_text())) if args.mutants else None
    tag = args.tag or (f"sample{args.sample}-seed{args.seed}" if args.sample is not None else
                       f"frac{args.fraction:g}-seed{args.seed}" if args.fraction is not None else
                       "recheck" if asked else "")
    args.out.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONDONTWRITEBYTECODE="1")

    if args.workdir:
        work, args.keep = args.workdir.resolve(), True
        sync(work)
    else:
        work = prepare(mods)
    print(f"scratch directory {work}", flush=True)
    if args.verify:
        if not args.workdir:
            ap.error("--verify needs --workdir (a scratch directory with generated mutants)")
        return verify(work, env, sorted(set(NAME_RE.findall(args.verify.read_text()))), args.verify_tests,
                      equivalent, args.out, tag or "verify")
    try:
        # generate the mutants and run the stats pass once; a name that matches nothing makes
        # mutmut stop right after (it asserts), leaving every mutant "not checked"
        t0 = time.time()
        gen = _mutmut(work, env, "run", "--max-children", str(args.children), "no_such_mutant__mutmut_0",
                      nice=True)
        population = _statuses(work, env)
        if not population:
            print(gen.stdout[-5000:], gen.stderr[-5000:], sep="\n")
            raise SystemExit("mutmut generated no mutants (see its output above)")
        print(f"generated {len(population)} mutants and ran the stats pass in {time.time() - t0:.0f}s",
              flush=True)
        print(header, flush=True)
        for m in mods:
            names = [n for n in population if module_of(n) == m]
            if asked is not None:
                names = [n for n in names if n in asked]
            if m in sizes:
                todo = choose(names, sizes[m], None, args.seed, args.only)
            else:
                todo = choose(names, args.sample, args.fraction, args.seed, args.only)
            if not todo:
                print(f"| `{m}` | {len(names)} | 0 | | | | nothing to check |", flush=True)
                continue
            budget = args.budget
            if args.deadline:
                left = _seconds_until(args.deadline)
                if left < 60:
                    print(f"| `{m}` | {len(names)} | 0 | | | | not run: deadline {args.deadline} UTC |", flush=True)
                    continue
                budget = min(budget, left)
            t0 = time.time()
            proc = _mutmut(work, env, "run", "--max-children", str(args.children), *todo,
                           timeout=budget, nice=True)
            elapsed = time.time() - t0
            allst = _statuses(work, env)
            status = {n: allst.get(n, "not checked") for n in todo}
            s = score(status, equivalent)
            safe = m.replace("/", ".") + (f"-{tag}" if tag else "")
            survivors = [n for n in todo if status[n] in UNDETECTED]
            with open(args.out / f"{safe}-survivors.txt", "w") as fh:
                for name in survivors:
                    diff = _mutmut(work, env, "show", name).stdout
                    fh.write(f"### {name}: {status[name]}\n{diff}\n")
            pop = len(narrow(names, args.only))
            rep = {"module": m, "tag": tag, "tests": MODULES[m], "population": pop,
                   "sample": sizes.get(m, args.sample), "fraction": None if m in sizes else args.fraction,
                   "seed": args.seed, "only": args.only,
                   "budget_s": budget, "elapsed_s": round(elapsed, 1),
                   "finished": proc.returncode == 0, "returncode": proc.returncode, **s, "status": status}
            (args.out / f"{safe}.json").write_text(json.dumps(rep, indent=2, ensure_ascii=False) + "\n")
            if proc.returncode != 0:
                (args.out / f"{safe}-log.txt").write_text(proc.stdout[-20000:] + "\n" + proc.stderr[-20000:])
            print(f"| `{m}` | {pop} | {s['checked']} | {s['detected']} | {s['equivalent']} | "
                  f"{s['survived_non_equivalent']} | {fmt_score(s)} |"
                  + ("" if proc.returncode == 0 else f" (stopped: rc {proc.returncode}, {elapsed:.0f}s)"),
                  flush=True)
    finally:
        if args.keep:
            print(f"kept scratch directory {work}", flush=True)
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
