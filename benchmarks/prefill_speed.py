"""Prefill time and score-hook memory of anchor_ot.generate on LLaVA-OneVision-0.5B shapes, on CPU.

A randomly initialized ``LlavaOnevisionForConditionalGeneration`` with the real shapes of
llava-onevision-qwen2-0.5b (SigLIP so400m: hidden 1152, 26 layers, 16 heads, MLP 4304,
384 px, patch 14 -> 27 x 27 tokens; Qwen2-0.5B: 24 layers, hidden 896, 14 heads, 2 KV
heads, MLP 4864, vocab 151936), built in memory (nothing downloaded), fp32, sdpa
attention, one video of 8 frames (8 x 196 + 1 = 1569 video tokens) plus a short prompt.

Measured, each once (the whole script takes ~5-8 min with one torch thread):

* vision encoding with and without the two score hooks (time, time inside the hooks, peak
  extra memory);
* the SigLIP tower with ``output_attentions=True`` in eager mode (peak extra memory): the
  alternative way to get attention scores;
* reduce + prompt rebuild time and LLM prefill time (one forward over the prompt with a
  KV cache, as ``generate`` runs it) at retention 1.0 (all tokens), 0.25 and 0.1.

Memory method: resident set size (RSS, ``/proc/self/statm``) sampled every 2 ms by a
background thread; we report the peak during the call minus the RSS just before it. The
torch CPU allocator returns large blocks to the OS, so successive measurements do not
hide each other; RSS includes allocator slack, so figures are upper bounds.

Usage::

    PYTHONPATH=src python benchmarks/prefill_speed.py [--method NAME] [--threads 1] [--frames 8] [--encode-only]

``--method``: a registered method (default: ``aot`` when registered, else a top-score
selection reducer defined here, which keeps the K tokens with the highest global score).
Overhead share = (time inside the score hooks + reduce + rebuild) / (vision encoding with
hooks + reduce + rebuild + prefill). Score-hook share = time inside the two hooks / vision
encoding without hooks (issue 12 target: at most 1%); ``--encode-only`` stops after it.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass
from typing import ClassVar

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _memory import PeakRSS  # noqa: E402  (benchmarks/_memory.py)


def build_model():
    from transformers import LlavaOnevisionConfig, LlavaOnevisionForConditionalGeneration

    cfg = LlavaOnevisionConfig(
        text_config=dict(model_type="qwen2", vocab_size=151936, hidden_size=896, intermediate_size=4864,
                         num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2,
                         max_position_embeddings=32768, rope_parameters={"rope_type": "default",
                                                                         "rope_theta": 1000000.0},
                         tie_word_embeddings=True),
        vision_config=dict(model_type="siglip_vision_model", hidden_size=1152, intermediate_size=4304,
                           num_hidden_layers=26, num_attention_heads=16, image_size=384, patch_size=14),
        image_token_id=151646, video_token_id=151647, vision_feature_layer=-1,
        vision_feature_select_strategy="full", tie_word_embeddings=True)
    cfg._attn_implementation = "sdpa"
    return LlavaOnevisionForConditionalGeneration(cfg).eval()


def make_reducer(method: str | None, retention: float):
    from anchor_ot import methods
    from anchor_ot.methods.base import Reducer, assemble

    if method:
        return methods.get(method, retention=retention)
    if "aot" in methods.available():
        return methods.get("aot", retention=retention)

    @dataclass
    class TopScores(Reducer):
        name: ClassVar[str] = "bench-top-scores"

        def reduce(self, video, num_kept):
            F, N, d = video.tokens.shape
            idx = torch.topk(video.global_scores.reshape(-1), num_kept).indices.sort().values
            assignment = (torch.searchsorted(idx, torch.arange(F * N), right=True) - 1).clamp(min=0)
            return assemble(video.tokens.reshape(-1, d)[idx], idx, assignment, F, video.grid)

    return TopScores(retention=retention)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--method", default=None)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--encode-only", action="store_true",
                        help="only the two vision encodings (without and with the score hooks) and the hooks' share")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    from anchor_ot.adapters import llava_onevision, prepare

    t0 = time.perf_counter()
    model = build_model()
    print(f"model built in {time.perf_counter() - t0:.1f} s; torch threads = {torch.get_num_threads()}", flush=True)
    F = args.frames
    n_video = F * 196 + 1
    text_before, text_after = list(range(1000, 1014)), list(range(2000, 2030))  # 14 + 30 text tokens
    ids = torch.tensor([text_before + [151647] * n_video + text_after])
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids),
              "pixel_values_videos": torch.randn(1, F, 3, 384, 384)}
    text_tokens = len(text_before) + len(text_after)

    with torch.no_grad():
        # warm-up on one frame (allocator, kernels), so the first measurement is not penalized
        warm = dict(inputs, pixel_values_videos=inputs["pixel_values_videos"][:, :1],
                    input_ids=torch.tensor([[151647] * 197]), attention_mask=torch.ones(1, 197, dtype=torch.long))
        llava_onevision.encode(model, warm, scores="attention", local_layer=None, global_layer=None)
        with PeakRSS() as enc_plain:
            llava_onevision.encode(model, inputs, scores="none", local_layer=None, global_layer=None)
        print(f"encode, no hooks: {enc_plain.seconds:.2f} s, +{enc_plain.extra / 2**20:.0f} MiB", flush=True)
        with PeakRSS() as enc_hooks:
            encoded = llava_onevision.encode(model, inputs, scores="attention", local_layer=None, global_layer=None)
        print(f"encode, 2 score hooks: {enc_hooks.seconds:.2f} s, +{enc_hooks.extra / 2**20:.0f} MiB", flush=True)
        hook_s = encoded[0].score_seconds
        print(f"score hooks: {hook_s:.3f} s inside the two hooks = {100 * hook_s / enc_plain.seconds:.2f}% of the "
              f"vision encoding without hooks ({enc_plain.seconds:.2f} s); encoding with hooks took "
              f"{100 * (enc_hooks.seconds / enc_plain.seconds - 1):+.1f}% (run-to-run noise included)", flush=True)
        if args.encode_only:
            return
        tower = model.model.vision_tower
        tower.config._attn_implementation = "eager"
        with PeakRSS() as eager:
            att = tower(inputs["pixel_values_videos"][0], output_attentions=True).attentions
            held = sum(a.numel() * a.element_size() for a in att)
        del att
        tower.config._attn_implementation = "sdpa"
        print(f"eager output_attentions: {eager.seconds:.2f} s, +{eager.extra / 2**20:.0f} MiB "
              f"(attention maps returned: {held / 2**20:.0f} MiB)", flush=True)

        rows = []
        for retention in (1.0, 0.25, 0.1):
            reducer = make_reducer(args.method, retention)
            t = time.perf_counter()
            prepared = prepare(model, inputs, reducer, encoded=encoded)
            reduce_s = time.perf_counter() - t
            kw = prepared.kwargs
            t = time.perf_counter()
            model(**kw, use_cache=True, logits_to_keep=1)
            prefill_s = time.perf_counter() - t
            rows.append((retention, kw["input_ids"].shape[1], reduce_s, prefill_s))
            print(f"retention {retention}: prompt {kw['input_ids'].shape[1]} tokens, reduce+rebuild "
                  f"{reduce_s * 1e3:.1f} ms, prefill {prefill_s:.2f} s", flush=True)

    hook_s = encoded[0].score_seconds  # time spent inside the two score hooks
    print()
    print(f"Setting: random LLaVA-OV-0.5B shapes, fp32, CPU, torch threads {torch.get_num_threads()}, "
          f"{F} frames ({n_video} video + {text_tokens} text tokens), reducer {reducer.name}")
    print()
    print("| retention | prompt tokens | prefill (s) | speed-up | reduce + rebuild (ms) | overhead share |")
    print("|---|---|---|---|---|---|")
    full_prefill = rows[0][3]
    for retention, length, reduce_s, prefill_s in rows:
        total = enc_hooks.seconds + reduce_s + prefill_s
        share = (hook_s + reduce_s) / total
        print(f"| {retention} | {length} | {prefill_s:.2f} | {full_prefill / prefill_s:.1f}x | "
              f"{reduce_s * 1e3:.1f} | {100 * share:.1f}% |")
    print()
    print(f"Vision encoding: {enc_plain.seconds:.1f} s without hooks, {enc_hooks.seconds:.1f} s with the two "
          f"score hooks, of which {hook_s:.2f} s inside the hooks.")
    print(f"Peak extra RSS: encode without hooks {enc_plain.extra / 2**20:.0f} MiB, with hooks "
          f"{enc_hooks.extra / 2**20:.0f} MiB; eager output_attentions=True {eager.extra / 2**20:.0f} MiB "
          f"({held / 2**20:.0f} MiB of attention maps returned).")


if __name__ == "__main__":
    main()
