"""The anchor-ot lmms-eval plugin, end to end on the stock harness (lmms-eval 0.7.3).

What runs for real: lmms-eval's CLI and evaluator, its model registry (our entry point), its own
Hugging Face wrappers (which we subclass), decord / qwen-vl-utils video decoding of real clips,
the real processors and model classes of transformers on tiny random checkpoints, and the
exact-match metric of a local multiple-choice task. What the tests check:

- the entry point registers the three model ids, resolving to subclasses of lmms-eval's wrappers;
- at retention 1.0 every answer equals lmms-eval's built-in model on the same checkpoint
  (LLaVA-OneVision through the CLI; Qwen2.5-VL and Qwen3-VL through the evaluator, batched);
- at retention 0.1 the kept count in the per-sample log equals the reducer's ``num_kept`` for the
  logged shape, the prompt the LLM received holds exactly that many video placeholders, and the
  prompt shrank by exactly the removed tokens; for LLaVA-OneVision the shape itself is checked
  against the checkpoint (frames x pooled grid);
- every registered method runs through the harness with its exact count;
- bad model_args fail with one clear message before any sample runs.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import OFFLINE_ENV, TASK_DIR

from anchor_ot import methods

TASK = "anchor_ot_tiny"
N_DOCS = 4
FRAMES = 8  # frames sampled per video (Qwen: 4 temporal patches of 2 frames)
QWEN_PIXELS = "min_pixels=3136,max_pixels=12544"  # 2x2..4x4 merged tokens per temporal patch
ANCHOR_IDS = {"llava_onevision": "anchor_ot_llava_onevision", "qwen2_5_vl": "anchor_ot_qwen2_5_vl",
              "qwen3_vl": "anchor_ot_qwen3_vl"}
BUILTIN_IDS = {"llava_onevision": "llava_hf", "qwen2_5_vl": "qwen2_5_vl", "qwen3_vl": "qwen3_vl"}


def wrapper_args(family: str, path: Path) -> str:
    if family == "llava_onevision":
        return f"pretrained={path},max_frames_num={FRAMES},device_map=cpu"
    return f"pretrained={path},max_num_frames={FRAMES},device_map=cpu,{QWEN_PIXELS}"


def read_log(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def check_doc_ids(rows: list[dict]) -> None:
    """Each log row's doc_id is the document whose prompt it measured: with the one-character-per-token
    tokenizer, prompt minus video placeholders minus the question text is the same template length
    for every row (the questions differ in length), which fails if rows and documents are swapped."""
    spec = importlib.util.spec_from_file_location("anchor_ot_tiny_utils", TASK_DIR / "utils.py")
    task_utils = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(task_utils)
    doc_to_text = task_utils.doc_to_text
    docs = json.loads((TASK_DIR / "questions.json").read_text())
    assert len({len(doc_to_text(d)) for d in docs}) == len(docs)
    assert sorted(r["doc_id"] for r in rows) == list(range(len(docs)))
    template = {r["prompt_tokens_before"] - r["video_tokens_before"] - len(doc_to_text(docs[r["doc_id"]]))
                for r in rows}
    assert len(template) == 1, template


def answers(samples: list[dict]) -> dict[int, str]:
    return {s["doc_id"]: s["filtered_resps"] if isinstance(s["filtered_resps"], str) else s["filtered_resps"][0]
            for s in samples}


# -- running the harness --------------------------------------------------------------------


def run_cli(model: str, model_args: str, out: Path, *extra: str) -> tuple[str, Path | None]:
    """``python -m lmms_eval`` from the task folder; returns its output and the results folder."""
    cmd = [sys.executable, "-m", "lmms_eval", "--model", model, "--model_args", model_args, "--device", "cpu",
           "--tasks", TASK, "--include_path", str(TASK_DIR), "--batch_size", "1", "--output_path", str(out),
           "--log_samples", "--verbosity", "INFO", *extra]
    env = {**os.environ, **OFFLINE_ENV}
    proc = subprocess.run(cmd, cwd=TASK_DIR, env=env, capture_output=True, text=True, timeout=600)
    text = proc.stdout + proc.stderr
    results = sorted(out.glob("*/*_results.json"))
    return text, (results[0].parent if results else None)


def run_evaluator(model: str, model_args: str, *, batch_size: int = 1, force_simple: bool = False) -> list[dict]:
    """lmms-eval's ``simple_evaluate`` in this process; returns the logged samples of the task."""
    from lmms_eval import evaluator
    from lmms_eval.tasks import TaskManager

    cwd = os.getcwd()
    os.chdir(TASK_DIR)  # the task's data_files path is relative to the working directory
    try:
        results = evaluator.simple_evaluate(
            model=model, model_args=model_args, tasks=[TASK], batch_size=batch_size, device="cpu",
            log_samples=True, force_simple=force_simple,
            task_manager=TaskManager("WARNING", include_path=str(TASK_DIR), include_defaults=False))
    finally:
        os.chdir(cwd)
    assert results is not None
    return results["samples"][TASK]


# -- registration -------------------------------------------------------------------------------


def test_entry_point_registers_every_family():
    from lmms_eval.models import get_model
    from lmms_eval.models.chat.qwen2_5_vl import Qwen2_5_VL as Qwen25Chat
    from lmms_eval.models.chat.qwen3_vl import Qwen3_VL as Qwen3Chat
    from lmms_eval.models.simple.llava_hf import LlavaHf
    from lmms_eval.models.simple.qwen2_5_vl import Qwen2_5_VL as Qwen25Simple

    assert issubclass(get_model("anchor_ot_llava_onevision"), LlavaHf)
    assert issubclass(get_model("anchor_ot_qwen2_5_vl"), Qwen25Chat)
    assert issubclass(get_model("anchor_ot_qwen2_5_vl", force_simple=True), Qwen25Simple)
    assert issubclass(get_model("anchor_ot_qwen3_vl"), Qwen3Chat)


# -- LLaVA-OneVision through the CLI ------------------------------------------------------------------


def test_llava_onevision_cli_equals_builtin_at_full_retention(checkpoints, hf_home, tmp_path):
    ckpt = checkpoints["llava_onevision"]
    base = wrapper_args("llava_onevision", ckpt)
    text_b, res_b = run_cli("llava_hf", base, tmp_path / "builtin", "--force_simple")
    assert res_b is not None, text_b[-3000:]
    text_a, res_a = run_cli("anchor_ot_llava_onevision", f"{base},method=aot,retention=1.0", tmp_path / "aot")
    assert res_a is not None, text_a[-3000:]

    builtin = answers(read_log(next(res_b.glob("*_samples_*.jsonl"))))
    ours = answers(read_log(next(res_a.glob("*_samples_*.jsonl"))))
    assert len(builtin) == N_DOCS
    assert ours == builtin
    assert len(set(builtin.values())) > 1, "answers do not depend on the video: the checkpoint is degenerate"

    # the per-sample log sits beside lmms-eval's results, one row per document
    (log,) = res_a.glob("*_anchor_ot.jsonl")
    rows = read_log(log)
    check_doc_ids(rows)
    side = math.ceil((84 // 14) / 2)
    for r in rows:
        assert r["task"] == TASK and r["frames"] == [FRAMES] and r["grid"] == [[side, side]]
        assert r["kept"] == r["total"] == FRAMES * side * side
        assert r["video_tokens_before"] == r["video_tokens_after"] == FRAMES * side * side + 1
        assert r["prefill_s"] > 0 and r["reduce_s"] >= 0
    summary = json.loads(next(res_a.glob("*_anchor_ot_summary.json")).read_text())
    assert summary["samples"] == N_DOCS and summary["achieved_retention"] == 1.0


def test_llava_onevision_cli_logs_exact_count_at_retention_0_1(checkpoints, hf_home, tmp_path):
    ckpt = checkpoints["llava_onevision"]
    args = f"{wrapper_args('llava_onevision', ckpt)},method=aot,retention=0.1,param.aggregation=hard"
    text, res = run_cli("anchor_ot_llava_onevision", args, tmp_path / "aot")
    assert res is not None, text[-3000:]
    rows = read_log(next(res.glob("*_anchor_ot.jsonl")))
    side = math.ceil((84 // 14) / 2)
    expected = methods.get("aot", retention=0.1, aggregation="hard").num_kept(FRAMES, (side, side))
    assert expected < FRAMES * side * side
    assert len(rows) == N_DOCS
    for r in rows:
        assert r["params"] == {"aggregation": "hard"}
        assert r["kept"] == expected
        assert r["video_tokens_after"] == expected + 1  # + the image_newline row
        assert r["prompt_tokens_before"] - r["prompt_tokens_after"] == FRAMES * side * side - expected
    results = json.loads(next(res.glob("*_results.json")).read_text())
    assert results["results"][TASK]["exact_match,none"] is not None


def test_bad_model_args_fail_in_the_cli_before_any_sample(checkpoints, hf_home, tmp_path):
    args = f"{wrapper_args('llava_onevision', checkpoints['llava_onevision'])},method=nope,retention=0.1"
    text, res = run_cli("anchor_ot_llava_onevision", args, tmp_path / "bad")
    # lmms-eval's CLI logs the error and exits 0: what counts is the message and that nothing ran
    assert "anchor_ot_llava_onevision: unknown method 'nope'; available: " in text
    assert res is None
    assert "Model Responding" not in text


@pytest.mark.parametrize("bad, message", [
    ({"method": "aot", "retention": 1.5}, "retention is the fraction of tokens kept"),
    ({"method": "aot"}, "needs retention="),
    ({"method": "aot", "retention": 0.1, "param.no_such_knob": 3}, "no_such_knob"),
])
def test_bad_model_args_fail_before_the_model_loads(checkpoints, bad, message):
    from lmms_eval.models import get_model

    cls = get_model("anchor_ot_qwen3_vl")
    with pytest.raises(ValueError, match=message):
        cls(pretrained=str(checkpoints["qwen3_vl"]), device="cpu", device_map="cpu", **bad)


def test_unsupported_checkpoint_is_refused_before_loading(checkpoints, hf_home, tmp_path):
    from lmms_eval.models import get_model

    cls = get_model("anchor_ot_llava_onevision")
    with pytest.raises(ValueError, match="model_type 'qwen2_5_vl'"):
        cls(pretrained=str(checkpoints["qwen2_5_vl"]), device="cpu", device_map="cpu", method="aot", retention=0.1)


def test_budget_the_method_cannot_meet_is_refused_up_front(checkpoints):
    from lmms_eval.models import get_model

    cls = get_model("anchor_ot_llava_onevision")
    # VisionZip keeps at least one token per frame: 5% of 8 frames x 9 tokens is below that
    with pytest.raises(ValueError, match="visionzip cannot reduce 8 frames of 3x3 tokens"):
        cls(pretrained=str(checkpoints["llava_onevision"]), device="cpu", device_map="cpu", max_frames_num=FRAMES,
            method="visionzip", retention=0.05)


def test_llava_onevision_refuses_batches(checkpoints):
    from lmms_eval.models import get_model

    with pytest.raises(ValueError, match="one sample at a time"):
        get_model("anchor_ot_llava_onevision")(pretrained=str(checkpoints["llava_onevision"]), device="cpu",
                                                 device_map="cpu", method="aot", retention=0.1, batch_size=2)


# -- Qwen families through the evaluator (batched) ---------------------------------------------------


@pytest.mark.parametrize("family", ["qwen2_5_vl", "qwen3_vl"])
def test_qwen_equals_builtin_at_full_retention_batched(checkpoints, hf_home, tmp_path, family):
    base = wrapper_args(family, checkpoints[family])
    builtin = answers(run_evaluator(BUILTIN_IDS[family], base, batch_size=2))
    log = tmp_path / "log.jsonl"
    ours = answers(run_evaluator(ANCHOR_IDS[family], f"{base},method=aot,retention=1.0,anchor_ot_log={log}",
                                 batch_size=2))
    assert len(builtin) == N_DOCS
    assert ours == builtin
    assert len(set(builtin.values())) > 1
    rows = read_log(log)
    if family == "qwen2_5_vl":  # Qwen3-VL adds per-video timestamp text, so only the ids are checked there
        check_doc_ids(rows)
    assert sorted(r["doc_id"] for r in rows) == list(range(N_DOCS))
    assert {r["batch_size"] for r in rows} == {2}
    for r in rows:
        assert r["kept"] == r["total"] == r["video_tokens_before"] == r["video_tokens_after"]
        assert r["prefill_s"] > 0 and r["encode_s"] > 0 and 0 <= r["new_tokens"] <= 4  # max_new_tokens
        (frames,), ((h, w),) = r["frames"], r["grid"]
        assert frames == FRAMES // 2 and r["total"] == frames * h * w


def check_reduced_rows(rows: list[dict], reducer) -> None:
    """Kept count = num_kept for the logged shape; the prompt holds exactly that many placeholders."""
    assert len(rows) == N_DOCS
    for r in rows:
        (frames,), ((h, w),) = r["frames"], r["grid"]
        assert r["video_tokens_before"] == r["total"] == frames * h * w  # the processor's own count
        assert r["kept"] == reducer.num_kept(frames, (h, w)) < r["total"]
        assert r["video_tokens_after"] == r["kept"]
        assert r["prompt_tokens_before"] - r["prompt_tokens_after"] == r["total"] - r["kept"]


@pytest.mark.parametrize("family", ["qwen2_5_vl", "qwen3_vl"])
def test_qwen_logs_exact_count_at_retention_0_1(checkpoints, hf_home, tmp_path, family):
    log = tmp_path / "log.jsonl"
    run_evaluator(ANCHOR_IDS[family],
                  f"{wrapper_args(family, checkpoints[family])},method=aot,retention=0.1,anchor_ot_log={log}",
                  batch_size=2)
    check_reduced_rows(read_log(log), methods.get("aot", retention=0.1))


def test_qwen_simple_wrapper_reduces_too(checkpoints, hf_home, tmp_path):
    log = tmp_path / "log.jsonl"
    run_evaluator("anchor_ot_qwen2_5_vl",
                  f"{wrapper_args('qwen2_5_vl', checkpoints['qwen2_5_vl'])},method=aot,retention=0.1,"
                  f"anchor_ot_log={log}", force_simple=True)
    check_reduced_rows(read_log(log), methods.get("aot", retention=0.1))


# -- every registered method ------------------------------------------------------------------------


def method_retention(name: str) -> float:
    """0.1, or the lowest share the method can reach above it on these shapes (VisionZip keeps at
    least one token per frame: 8 of 72 on the LLaVA grid is above 10%)."""
    for r in (0.1, 0.3, 0.5, 0.7):
        try:
            methods.get(name, retention=r).num_kept(FRAMES, (3, 3))
            methods.get(name, retention=r).num_kept(FRAMES // 2, (2, 2))
            return r
        except ValueError:
            continue
    pytest.fail(f"{name} has no feasible retention on the test shapes")


@pytest.mark.parametrize("name", methods.available())
@pytest.mark.parametrize("family", ["llava_onevision", "qwen2_5_vl", "qwen3_vl"])
def test_every_method_runs_with_exact_count(checkpoints, hf_home, tmp_path, family, name):
    retention = method_retention(name)
    log = tmp_path / "log.jsonl"
    run_evaluator(ANCHOR_IDS[family],
                  f"{wrapper_args(family, checkpoints[family])},method={name},retention={retention},"
                  f"anchor_ot_log={log}", batch_size=1 if family == "llava_onevision" else 2)
    rows = read_log(log)
    reducer = methods.get(name, retention=retention)
    assert len(rows) == N_DOCS
    for r in rows:
        (frames,), ((h, w),) = r["frames"], r["grid"]
        assert r["kept"] == reducer.num_kept(frames, (h, w)) <= r["total"] == frames * h * w
        extra = 1 if family == "llava_onevision" else 0
        assert r["video_tokens_after"] == r["kept"] + extra
        assert r["prompt_tokens_before"] - r["prompt_tokens_after"] == r["total"] - r["kept"]
