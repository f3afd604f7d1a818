"""vLLM + plugin answers exactly as ``anchor_ot.generate`` does on the same weights and reducer.

Both engines load the same tiny checkpoint folder and run the same real processor on the
same frames; the reduced prompts must be the same tokens and greedy decoding must give the
same tokens.
"""

from __future__ import annotations

import pytest
import torch
from conftest import FRAMES, PIXELS, PROMPT_MEDIA, chat, close, make_llm

import tiny_models
import anchor_ot
import anchor_ot.adapters
from anchor_ot import methods

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
NEW = 6


def hf_inputs(path, family):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    processor = AutoProcessor.from_pretrained(path)
    model = AutoModelForImageTextToText.from_pretrained(path, dtype=torch.float32).eval()
    arr, meta = tiny_models.video(FRAMES, PIXELS[family], 0)
    metadata = {k: meta[k] for k in ("total_num_frames", "fps", "duration", "frames_indices")}
    inputs = processor(text=[chat("what is in the video ?", PROMPT_MEDIA[family])], videos=[arr],
                       video_metadata=[metadata], do_sample_frames=False, return_tensors="pt")
    return model, inputs


def hf_generate(path, family, reducer):
    model, inputs = hf_inputs(path, family)
    full_ids = inputs["input_ids"][0].tolist()
    with torch.no_grad():
        prepared = anchor_ot.adapters.prepare(model, inputs, reducer)
        out = anchor_ot.generate(model, inputs, reducer, max_new_tokens=NEW, do_sample=False)
    return full_ids, prepared.kwargs["input_ids"][0].tolist(), out[0, len(full_ids):].tolist()


def vllm_generate(llm, family):
    from vllm import SamplingParams

    req = {"prompt": chat("what is in the video ?", PROMPT_MEDIA[family]),
           "multi_modal_data": {"video": tiny_models.video(FRAMES, PIXELS[family], 0)}}
    out = llm.generate([req], SamplingParams(max_tokens=NEW, temperature=0.0), use_tqdm=False)[0]
    return list(out.prompt_token_ids), list(out.outputs[0].token_ids)


QWEN3_LOGITS = pytest.mark.xfail(strict=False, reason=(
    "vLLM's Qwen3-VL and transformers' differ in their logits on the same video even without reduction "
    "(first-token log-prob -1.93 vs -1.78 on this checkpoint; the control test agrees on tokens by margin only); "
    "with random at 0.25 transformers' second token wins by 0.055 and vLLM's pick flips. Positions agree "
    "(test_vllm_plugin_positions_equal_anchor_ot_generate)"))


@pytest.mark.parametrize("family", ["llava_onevision", "qwen2_5_vl", "qwen3_vl"])
@pytest.mark.parametrize("method", ["aot", "random"])
def test_vllm_plugin_greedy_equals_anchor_ot_generate(checkpoints, family, method, request):
    if (family, method) == ("qwen3_vl", "random"):
        request.applymarker(QWEN3_LOGITS)
    path = checkpoints[family]
    reducer = methods.get(method, retention=0.25)
    full_ids, hf_ids, hf_new = hf_generate(path, family, reducer)
    llm = make_llm(path, plugin=dict(method=method, retention=0.25))
    try:
        ids, new = vllm_generate(llm, family)
    finally:
        close(llm)
    assert len(ids) < len(full_ids)
    if family == "qwen3_vl":
        # vLLM reserves the run with every kept token in the first frame's group (as for EVS) and
        # rebuilds the embeddings frame by frame after the reducer ran: same tokens, same length
        assert sorted(ids) == sorted(hf_ids)
    else:
        assert ids == hf_ids  # the same reduced prompt, token for token
    assert new == hf_new


@pytest.mark.parametrize("family", ["llava_onevision", "qwen3_vl", "qwen2_5_vl"])
def test_engines_agree_without_reduction(checkpoints, family):
    """Control: vLLM without plugin and transformers' own generate give the same greedy tokens."""
    path = checkpoints[family]
    model, inputs = hf_inputs(path, family)
    with torch.no_grad():
        hf_new = model.generate(**inputs, max_new_tokens=NEW, do_sample=False)[0, inputs["input_ids"].shape[1]:]
    llm = make_llm(path)
    try:
        ids, new = vllm_generate(llm, family)
    finally:
        close(llm)
    assert ids == inputs["input_ids"][0].tolist()
    assert new == hf_new.tolist()


@pytest.mark.parametrize("family", ["qwen2_5_vl", "qwen3_vl"])
def test_vllm_plugin_positions_equal_anchor_ot_generate(checkpoints, family, monkeypatch):
    """vLLM's M-RoPE positions of the reduced prompt are ``anchor_ot.generate``'s, and decoding
    continues from the last prompt position + 1, as transformers' ``generate`` does.

    ``random`` keeps the same tokens in both engines whatever their features (AOT's choice
    follows ViT scores, which differ slightly between the engines), so every position must be
    equal: the kept tokens' own (t, h, w), the text and timestamps at their full-prompt
    positions (the prompt wraps the video in ``<|vision_start|> ... <|vision_end|>`` as the
    chat templates do). Catches vLLM's own rebuild: the whole video and the text after it
    ~50 positions too far (Qwen3-VL), decoding from max(position) + 1 (Qwen2.5-VL).
    """
    from anchor_ot.integrations.vllm import qwen_vl

    cls = {"qwen2_5_vl": qwen_vl.AnchorOTQwen2_5_VLForConditionalGeneration,
           "qwen3_vl": qwen_vl.AnchorOTQwen3VLForConditionalGeneration}[family]
    seen = []
    original = cls.recompute_mrope_positions

    def record(self, **kw):
        out = original(self, **kw)
        seen.append((out[1].clone(), out[2]))
        return out

    monkeypatch.setattr(cls, "recompute_mrope_positions", record)
    reducer = methods.get("random", retention=0.25)
    model, inputs = hf_inputs(checkpoints[family], family)
    with torch.no_grad():
        prepared = anchor_ot.adapters.prepare(model, inputs, reducer)
    hf = prepared.kwargs["position_ids"][1:, 0]  # (3, L'): rows t, h, w
    llm = make_llm(checkpoints[family], plugin=dict(method="random", retention=0.25))
    try:
        ids, _ = vllm_generate(llm, family)
    finally:
        close(llm)
    assert seen, "the runner never rebuilt the positions"
    positions, delta = seen[-1]
    n = len(ids)
    assert n == hf.shape[1]
    assert torch.equal(positions[:, :n].cpu(), hf)
    assert delta == int(hf[0, -1]) + 1 - n
    if family == "qwen2_5_vl":  # the case where last + 1 and max + 1 differ: temporal positions run past the text
        assert int(hf.max()) > int(hf[0, -1])
