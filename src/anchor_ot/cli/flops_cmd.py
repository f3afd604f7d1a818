"""``anchor-ot flops``: LLM prefill/decode FLOPs of a video LLM at a retention ratio."""

from __future__ import annotations

import json

import typer

from anchor_ot import flops
from anchor_ot.cli._app import app


@app.command("flops")
def flops_command(
    model: str = typer.Option("llava-onevision-7b", help=f"One of: {', '.join(flops.available_models())}."),
    frames: int = typer.Option(32, help="Sampled frames."),
    retention: float = typer.Option(1.0, help="Fraction of visual tokens kept, in (0, 1]."),
    formula: str = typer.Option("exact", help="'exact' (2 FLOPs per multiply-add, SwiGLU, GQA, causal) "
                                "or 'paper' (AOT eq. 17-18)."),
    text_tokens: int = typer.Option(0, help="Prompt tokens added to the prefill."),
    generated_tokens: int = typer.Option(100, help="Generated tokens R for the decode count."),
    budget: str = typer.Option("total", help="'total': round(r*F*N) tokens (our reducers); "
                               "'per-frame': ceil(r*N) per frame (the paper's Table 1)."),
    tokens_per_frame: int = typer.Option(None, help="Override visual tokens per frame "
                                         "(per 2-frame group for Qwen)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """FLOPs of the language model for a video at a retention ratio, next to the full-token cost."""
    try:
        report = flops.flops_report(model, frames=frames, retention=retention, formula=formula,
                                    text_tokens=text_tokens, generated_tokens=generated_tokens,
                                    budget=budget, tokens_per_frame=tokens_per_frame)
    except (ValueError, TypeError) as exc:
        raise typer.BadParameter(str(exc)) from None
    if as_json:
        print(json.dumps(report))
        return
    r = report
    print(f"{r['model']}, {r['frames']} frames, retention {r['retention']:g} ({r['formula']} formula)")
    print(f"  visual tokens  {r['visual_tokens']} of {r['full_visual_tokens']}"
          + (f" (+{r['text_tokens']} text)" if r["text_tokens"] else ""))
    print(f"  prefill        {r['prefill_tflops']:.2f} TFLOPs  ({100 * r['prefill_ratio']:.1f}% of "
          f"{r['full_prefill_tflops']:.2f})")
    print(f"  decode (R={r['generated_tokens']}) {r['decode_tflops']:.2f} TFLOPs")
    print(f"  total          {r['total_tflops']:.2f} TFLOPs  ({100 * r['total_ratio']:.1f}% of "
          f"{r['full_total_tflops']:.2f})")
