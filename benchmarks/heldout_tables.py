"""Issue 11's tables for a clip set from ``anchor-ot bench`` output folders: means, seed noise, margins, verdict.

Reads ``results.csv`` of one ``anchor-ot bench --methods all`` run (seed 0), of the
``--methods random --seed s`` runs for the other seeds, and optionally of later runs
whose rows replace the first run's rows of the same (video, method, retention)
(e.g. ``aot+`` re-run after its defaults changed). Prints markdown:

- per metric, the mean over the clips of every method at every retention, then
  ``random``'s mean over the seeds, the seed sd (sample standard deviation of the
  seeds' clip means), and ``aot+``'s margins ``(aot+ - x) / sd`` over that mean and
  over the best peer (best of :data:`PEERS` for that metric and retention);
- per clip, ``aot+`` next to random (mean of the seeds) and the clip's best peer;
- the verdict against issue 11's goal: margins ``>= 3`` sd over random and over the
  best peer on ``coverage`` and ``readout`` at 0.10 and 0.05, and ``temporal`` not
  below random's seed mean.

Run::

    python benchmarks/heldout_tables.py --final R/fresh-final --seeds R/fresh-seed1 R/fresh-seed2 \\
        R/fresh-seed3 R/fresh-seed4 [--override R/fresh-aotplus] > tables.md
"""

from __future__ import annotations

import argparse
import csv
import math
import statistics
from pathlib import Path

#: Peers of ``aot+`` (every registered method that is not ours and not ``random``); as in flagship_sweep.py.
PEERS = ("prunevid", "holitom", "fastvid", "divprune", "ottvid", "vidcom2", "evs", "dycoke", "visionzip", "pool")
ORDER = ("aot+", "random", "prunevid", "fastvid", "holitom", "divprune", "ottvid", "pool", "dycoke", "visionzip",
         "evs", "vidcom2", "aot", "aot-dyn", "aot:ot-mass", "aot:hard", "aot:cosine-ranking", "aot:hard-cosine",
         "aot:no-merging", "aot:random-anchors")
METRICS = ("coverage", "readout", "temporal", "readout_cls")
DIGITS = {"temporal": 3, "reduce_ms": 1}
GOAL_RETENTIONS = (0.1, 0.05)


def read(folder: str | Path) -> list[dict]:
    """Rows of ``folder/results.csv`` with numeric fields as floats; raises if a row failed."""
    rows = []
    with open(Path(folder) / "results.csv", newline="") as fh:
        for row in csv.DictReader(fh):
            if row["error"]:
                raise ValueError(f"{folder}: {row['video']} {row['method']} {row['retention']} failed: {row['error']}")
            for k in (*METRICS, "reconstruction", "reduce_ms", "retention"):
                row[k] = float(row[k])
            rows.append(row)
    return rows


def merge(base: list[dict], overrides: list[list[dict]]) -> list[dict]:
    """``base`` with each (video, method, retention) row replaced by the last override that has it."""
    key = lambda r: (r["video"], r["method"], r["retention"])  # noqa: E731
    table = {key(r): r for r in base}
    for rows in overrides:
        for r in rows:
            if key(r) not in table:
                raise ValueError(f"override row {key(r)} has no counterpart in the first run")
            table[key(r)] = r
    return list(table.values())


def z(x: float, ref: float, sd: float) -> float:
    """``(x - ref) / sd``; NaN where the seed sd is 0 or undefined (one seed)."""
    return (x - ref) / sd if sd and not math.isnan(sd) else math.nan


def fmt(x: float, metric: str) -> str:
    return f"{x:.{DIGITS.get(metric, 4)}f}"


def tables(rows: list[dict], seed_runs: list[list[dict]]) -> str:
    videos = list(dict.fromkeys(r["video"] for r in rows))
    rets = sorted({r["retention"] for r in rows}, reverse=True)
    methods = [m for m in ORDER if any(r["method"] == m for r in rows)]
    methods += sorted({r["method"] for r in rows} - set(methods))
    val = {(r["video"], r["method"], r["retention"]): r for r in rows}
    seeds = [{(r["video"], r["retention"]): r for r in rows if r["method"] == "random"}]
    seeds += [{(r["video"], r["retention"]): r for r in run if r["method"] == "random"} for run in seed_runs]

    def mean(method, metric, ret, vids=videos):
        return statistics.mean(val[(v, method, ret)][metric] for v in vids)

    def seed_stats(metric, ret, vids=videos):
        means = [statistics.mean(s[(v, ret)][metric] for v in vids) for s in seeds]
        return statistics.mean(means), (statistics.stdev(means) if len(means) > 1 else math.nan)

    def best_peer(metric, ret, vids=videos):
        present = [p for p in PEERS if p in methods]
        p = max(present, key=lambda p: mean(p, metric, ret, vids))
        return p, mean(p, metric, ret, vids)

    out = [f"Clips: {', '.join(videos)}; random seeds: {len(seeds)}.", ""]
    margins = {}
    for metric in (*METRICS, "reduce_ms"):
        out += [f"**{metric}**", "", "| method | " + " | ".join(f"{r:g}" for r in rets) + " |",
                "|---|" + "---|" * len(rets)]
        for m in methods:
            name = f"**{m}**" if m == "aot+" else m
            out.append(f"| {name} | " + " | ".join(fmt(mean(m, metric, r), metric) for r in rets) + " |")
        if metric != "reduce_ms":
            stats = {r: seed_stats(metric, r) for r in rets}
            peers = {r: best_peer(metric, r) for r in rets}
            vs_rand = {r: z(mean("aot+", metric, r), stats[r][0], stats[r][1]) for r in rets}
            vs_peer = {r: z(mean("aot+", metric, r), peers[r][1], stats[r][1]) for r in rets}
            margins[metric] = {r: (mean("aot+", metric, r), stats[r], peers[r], vs_rand[r], vs_peer[r]) for r in rets}
            out += [f"| random, mean of seeds 0-{len(seeds) - 1} | "
                    + " | ".join(fmt(stats[r][0], metric) for r in rets) + " |",
                    "| random, seed sd | " + " | ".join(f"{stats[r][1]:.5f}" for r in rets) + " |",
                    "| aot+ vs random (sd) | " + " | ".join(f"{vs_rand[r]:+.1f}" for r in rets) + " |",
                    "| aot+ vs best peer (sd) | "
                    + " | ".join(f"{vs_peer[r]:+.1f} ({peers[r][0]})" for r in rets) + " |"]
        out.append("")

    out += ["Per clip: `aot+`, random (mean of the seeds, and its seed sd on that clip), the clip's best peer; "
            "margins in that clip's random-seed sd.", "",
            "| clip | retention | aot+ coverage | random (sd) | best peer | vs random / peer (sd) "
            "| aot+ readout | random (sd) | best peer | vs random / peer (sd) | aot+ temporal | random |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for v in videos:
        for r in rets:
            cells = [v, f"{r:g}"]
            for metric in ("coverage", "readout"):
                a = val[(v, "aot+", r)][metric]
                mu, sd = seed_stats(metric, r, [v])
                p, pv = best_peer(metric, r, [v])
                cells += [fmt(a, metric), f"{fmt(mu, metric)} ({sd:.5f})", f"{fmt(pv, metric)} ({p})",
                          f"{z(a, mu, sd):+.1f} / {z(a, pv, sd):+.1f}"]
            cells += [fmt(val[(v, "aot+", r)]["temporal"], "temporal"), fmt(seed_stats("temporal", r, [v])[0], "temporal")]
            out.append("| " + " | ".join(cells) + " |")
    out.append("")

    out += ["Verdict (goal: >= 3 sd over random and over the best peer on coverage and readout at 0.10 and 0.05; "
            "temporal not below random):", ""]
    met_all = True
    for r in GOAL_RETENTIONS:
        if r not in rets:
            continue
        for metric in ("coverage", "readout"):
            a, (mu, sd), (p, pv), zr, zp = margins[metric][r]
            ok = zr >= 3 and zp >= 3
            met_all &= ok
            out.append(f"- {metric} at {r:g}: aot+ {fmt(a, metric)}, random {fmt(mu, metric)} (sd {sd:.5f}) -> "
                       f"{zr:+.1f} sd; best peer {p} {fmt(pv, metric)} -> {zp:+.1f} sd: {'MET' if ok else 'NOT MET'}")
        a, (mu, sd), _, zr, _ = margins["temporal"][r]
        ok = a >= mu
        met_all &= ok
        out.append(f"- temporal at {r:g}: aot+ {fmt(a, 'temporal')}, random {fmt(mu, 'temporal')} (sd {sd:.3f}) "
                   f"-> {zr:+.1f} sd: {'MET' if ok else 'NOT MET'}")
    out += ["", f"Goal on these clips: {'MET' if met_all else 'NOT MET'}.", ""]
    return "\n".join(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--final", required=True, help="folder of the --methods all run (seed 0)")
    p.add_argument("--seeds", nargs="*", default=[], help="folders of the --methods random --seed s runs")
    p.add_argument("--override", nargs="*", default=[], help="folders of later runs whose rows replace --final's")
    a = p.parse_args()
    rows = merge(read(a.final), [read(f) for f in a.override])
    print(tables(rows, [read(f) for f in a.seeds]))


if __name__ == "__main__":
    main()
