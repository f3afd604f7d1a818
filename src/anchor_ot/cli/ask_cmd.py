"""``anchor-ot ask``: answer a question about a video with a Hugging Face video LLM, reduced."""

from __future__ import annotations

import os
import time
from pathlib import Path

import typer

from anchor_ot._validation import check_int, check_retention
from anchor_ot.cli._app import app

DTYPES = ("auto", "float32", "float16", "bfloat16")


def parse_params(items: list[str]) -> dict:
    """``["k=v", ...]`` -> dict; values become int, float, bool or stay str.

    Raises
    ------
    ValueError
        If an item has no ``=`` or an empty key.
    """
    out: dict = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ValueError(f"--param expects key=value, got {item!r}")
        raw = raw.strip()
        value: object = raw
        if raw.lower() in ("true", "false"):
            value = raw.lower() == "true"
        else:
            for cast in (int, float):
                try:
                    value = cast(raw)
                    break
                except ValueError:
                    continue
        out[key] = value
    return out


def load(model_id: str, device: str, dtype: str):
    """``AutoProcessor`` and ``AutoModelForImageTextToText`` from ``from_pretrained``.

    With ``HF_HUB_OFFLINE`` set, only the local cache is read (``local_files_only``).

    Raises
    ------
    RuntimeError
        If either cannot be loaded; the message says why and what to do.
    """
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    offline = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")
    torch_dtype = "auto" if dtype == "auto" else getattr(torch, dtype)
    try:
        processor = AutoProcessor.from_pretrained(model_id, local_files_only=offline)
        model = AutoModelForImageTextToText.from_pretrained(model_id, dtype=torch_dtype, local_files_only=offline)
    except (OSError, ValueError, ImportError) as exc:
        where = ("the local Hugging Face cache (HF_HUB_OFFLINE is set: download it first, e.g. "
                 f"`hf download {model_id}`, or unset HF_HUB_OFFLINE)" if offline
                 else "the Hugging Face Hub or a local folder (check the id, your network and access rights)")
        raise RuntimeError(f"could not load model {model_id!r} from {where}: {type(exc).__name__}: {exc}") from None
    return processor, model.to(device).eval()


class _PrefillTimer:
    """Times the first language-model forward of a generate call (the prefill)."""

    def __init__(self, model):
        self.lm = model.model.language_model
        self.length = None
        self.seconds = None

    def __enter__(self):
        self._t0 = None

        def pre(module, args, kwargs):
            if self.seconds is None and self._t0 is None:
                emb = kwargs.get("inputs_embeds")
                self.length = None if emb is None else int(emb.shape[1])
                self._t0 = time.perf_counter()

        def post(module, args, kwargs, output):
            if self.seconds is None and self._t0 is not None:
                self.seconds = time.perf_counter() - self._t0

        self._handles = [self.lm.register_forward_pre_hook(pre, with_kwargs=True),
                         self.lm.register_forward_hook(post, with_kwargs=True)]
        return self

    def __exit__(self, *exc):
        for h in self._handles:
            h.remove()


@app.command("ask")
def ask(
    video: Path = typer.Argument(..., help="Video file (anything FFmpeg reads)."),
    question: str = typer.Argument(..., help="The question about the video."),
    model: str = typer.Option(..., "--model", help="Hugging Face model id or local folder."),
    method: str = typer.Option("aot", help="Reduction method (see `anchor-ot methods`)."),
    retention: float = typer.Option(0.1, help="Fraction of video tokens kept, in (0, 1]."),
    frames: int = typer.Option(32, help="Frames sampled evenly over the video."),
    param: list[str] = typer.Option([], "--param", help="Method parameter key=value (repeatable)."),
    compare: bool = typer.Option(False, help="Also answer from all tokens; print both prefill times."),
    device: str = typer.Option("cpu", help="torch device, e.g. cpu, cuda, cuda:1."),
    dtype: str = typer.Option("auto", help="auto, float32, float16 or bfloat16."),
    max_new_tokens: int = typer.Option(128, help="Longest answer in tokens."),
) -> None:
    """Answer QUESTION about VIDEO from a fraction of its tokens (greedy decoding)."""
    import anchor_ot
    from anchor_ot import methods

    try:
        check_retention(retention)
        check_int("--frames", frames, low=1)
        check_int("--max-new-tokens", max_new_tokens, low=1)
        if dtype not in DTYPES:
            raise ValueError(f"--dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
        reducer = methods.get(method, retention=retention, **parse_params(param))
    except (TypeError, ValueError) as exc:
        raise typer.BadParameter(str(exc)) from None
    if not video.is_file():
        raise typer.BadParameter(f"video file not found: {video}")
    try:
        processor, hf_model = load(model, device, dtype)
    except RuntimeError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None

    from anchor_ot.video import load_video

    try:
        decoded = load_video(video, num_frames=frames)
    except (OSError, ValueError) as exc:
        raise typer.BadParameter(f"cannot read {video}: {exc}") from None
    clip, indices = decoded.frames, [int(i) for i in decoded.indices]
    fps = decoded.fps if decoded.fps == decoded.fps and decoded.fps > 0 else 1.0  # nan -> 1 frame per second
    conversation = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": question}]}]
    prompt = processor.apply_chat_template(conversation, add_generation_prompt=True)
    metadata = {"total_num_frames": len(indices), "fps": fps, "frames_indices": indices,
                "height": clip.shape[1], "width": clip.shape[2]}
    inputs = processor(text=[prompt], videos=[clip], video_metadata=[metadata], do_sample_frames=False,
                       return_tensors="pt").to(hf_model.device)
    if "pixel_values_videos" in inputs:
        inputs["pixel_values_videos"] = inputs["pixel_values_videos"].to(hf_model.dtype)
    prompt_len = inputs["input_ids"].shape[1]
    video_before = int((inputs["input_ids"] == hf_model.config.video_token_id).sum())
    gen = dict(max_new_tokens=max_new_tokens, do_sample=False)

    start = time.perf_counter()
    with _PrefillTimer(hf_model) as timer:
        out = anchor_ot.generate(hf_model, inputs, reducer, **gen)
    total = time.perf_counter() - start
    answer = processor.batch_decode(out[:, prompt_len:], skip_special_tokens=True)[0].strip()
    after = timer.length if timer.length is not None else prompt_len
    typer.echo(f"answer: {answer}")
    typer.echo(f"video tokens: {video_before} -> {video_before - (prompt_len - after)} "
               f"({method}, retention {retention}); prompt tokens: {prompt_len} -> {after}")
    typer.echo(f"prefill: {timer.seconds:.3f} s; whole call (encode + reduce + generate): {total:.2f} s")
    if compare:
        with _PrefillTimer(hf_model) as full_timer:
            full = hf_model.generate(**inputs, **gen)
        full_answer = processor.batch_decode(full[:, prompt_len:], skip_special_tokens=True)[0].strip()
        typer.echo(f"unreduced answer: {full_answer}")
        typer.echo(f"prefill, all tokens: {full_timer.seconds:.3f} s; reduced: {timer.seconds:.3f} s")
