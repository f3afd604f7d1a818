"""Serving figures with vLLM: prompt tokens, time to first token, requests/s, with and without reduction.

Runs a real vLLM engine (in this process, eager mode) on tiny random checkpoints of each
family (tests_vllm/tiny_models.py; real processor classes, fan-in weights) and, per
configuration, measures on the same synthetic videos:

* prompt tokens of one video request (what the LLM prefills);
* time to first token: wall time of ``generate`` with ``max_tokens=1`` for one request
  (processor + vision encoder + reduction + prefill), median of ``--repeats``;
* requests/s: ``--requests`` video requests (different videos) submitted together,
  ``max_tokens=8`` each, wall time of the whole batch.

Configurations: the engine without plugin; anchor-ot AOT at retention 0.25 and 0.1; vLLM's
own EVS (``video_pruning_rate`` 0.75 / 0.9, i.e. the same kept fractions) for the Qwen
families. Figures on tiny models are about the pipeline's overheads, not model quality.

    .venv-vllm/bin/python benchmarks/vllm_serving.py --families llava_onevision qwen3_vl --out bench-results/vllm.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests_vllm"))

import tiny_models  # noqa: E402

from anchor_ot.testing import close_llm as close  # noqa: E402

MEDIA = {"llava_onevision": "<video>", "qwen3_vl": "<|vision_start|><|video_pad|><|vision_end|>",
         "qwen2_5_vl": "<|vision_start|><|video_pad|><|vision_end|>"}


def requests(family, pixels, frames, n, seed0=0):
    prompt = f"<|im_start|> user {MEDIA[family]} what is in the video ? <|im_end|> <|im_start|> assistant"
    return [{"prompt": prompt, "multi_modal_data": {"video": tiny_models.video(frames, pixels, seed0 + i)}}
            for i in range(n)]


def measure(llm, family, pixels, frames, n_requests, repeats):
    from vllm import SamplingParams

    one = SamplingParams(max_tokens=1, temperature=0.0)
    eight = SamplingParams(max_tokens=8, temperature=0.0, ignore_eos=True)
    llm.generate(requests(family, pixels, frames, 1, 1000), one, use_tqdm=False)  # warm-up
    ttft, prompt_tokens = [], None
    for r in range(repeats):
        start = time.perf_counter()
        out = llm.generate(requests(family, pixels, frames, 1, 100 + r), one, use_tqdm=False)
        ttft.append(time.perf_counter() - start)
        prompt_tokens = len(out[0].prompt_token_ids)
    start = time.perf_counter()
    llm.generate(requests(family, pixels, frames, n_requests, 200), eight, use_tqdm=False)
    rps = n_requests / (time.perf_counter() - start)
    return {"prompt_tokens": prompt_tokens, "ttft_ms": 1000 * statistics.median(ttft), "requests_per_s": rps}


def engine(path, extra):
    from vllm import LLM

    return LLM(model=str(path), enforce_eager=True, max_model_len=8192, seed=0, dtype="float32",
               limit_mm_per_prompt={"video": 1}, enable_prefix_caching=False, mm_processor_cache_gb=0, **extra)



def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--families", nargs="+", default=["llava_onevision", "qwen3_vl", "qwen2_5_vl"])
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--requests", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--llava-pixels", type=int, default=112, help="384 gives LLaVA-OV's real 14 x 14 grid per frame")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()

    from anchor_ot.integrations.vllm import engine_args

    pixels = {"llava_onevision": args.llava_pixels, "qwen3_vl": 128, "qwen2_5_vl": 112}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for family in args.families:
            builder = tiny_models.BUILDERS[family]
            path = (builder(Path(tmp) / family, image_size=pixels[family]) if family == "llava_onevision"
                    else builder(Path(tmp) / family))
            configs = [("none", {})]
            configs += [(f"aot r={r}", engine_args("aot", retention=r, model=str(path))) for r in (0.25, 0.1)]
            if family != "llava_onevision":
                configs += [(f"evs r={r}", {"video_pruning_rate": round(1 - r, 6)}) for r in (0.25, 0.1)]
            for name, extra in configs:
                llm = engine(path, extra)
                try:
                    row = {"family": family, "config": name, "frames": args.frames,
                           **measure(llm, family, pixels[family], args.frames, args.requests, args.repeats)}
                finally:
                    close(llm)
                rows.append(row)
                print(f"{family:16s} {name:10s} prompt {row['prompt_tokens']:5d}  ttft {row['ttft_ms']:8.1f} ms  "
                      f"{row['requests_per_s']:6.2f} req/s", flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"rows": rows, "args": {k: str(v) for k, v in vars(args).items()}}, indent=1))


if __name__ == "__main__":
    main()
