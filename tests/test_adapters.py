"""anchor_ot.generate on real transformers models (tiny random configs built in memory).

Nothing is downloaded. The tokenizer is a real ``tokenizers`` WordLevel tokenizer built in
memory. transformers' video processors (and therefore the processor classes, which check
their video processor's class on construction) need torchvision, which does not import on
this CPU-only machine, so the tests build the processor's output themselves, following
``processing_llava_onevision.py`` / ``processing_qwen2_5_vl.py`` / ``processing_qwen3_vl.py``
of transformers 5.23: the text goes through the tokenizer with the placeholder runs
expanded exactly as the processor expands them (LLaVA-OV F*n+1; Qwen2.5-VL one run of
t*h*w/4; Qwen3-VL one "<t seconds>" + vision start/pads/end group per temporal patch),
``mm_token_type_ids`` as the processor computes them, and pixels of the processor's shapes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import pytest
import torch
from torch import nn

transformers = pytest.importorskip("transformers")
from tokenizers import Tokenizer, models, pre_tokenizers  # noqa: E402
from transformers import (  # noqa: E402
    LlavaOnevisionConfig,
    LlavaOnevisionForConditionalGeneration,
    PreTrainedTokenizerFast,
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen3VLConfig,
    Qwen3VLForConditionalGeneration,
)

import anchor_ot  # noqa: E402
from anchor_ot import methods  # noqa: E402
from anchor_ot.adapters import prepare  # noqa: E402
from anchor_ot.adapters.base import compact_rows, reduce_side_features  # noqa: E402
from anchor_ot.methods.base import Reducer, assemble  # noqa: E402
from anchor_ot.types import VideoTokens  # noqa: E402
from anchor_ot.testing import fan_in_init  # noqa: E402

torch.set_num_threads(1)

# -- tokenizer ----------------------------------------------------------------------------

SPECIAL = ["<pad>", "<|im_start|>", "<|im_end|>", "<image>", "<video>", "<|vision_start|>", "<|vision_end|>",
           "<|image_pad|>", "<|video_pad|>"]
WORDS = SPECIAL + ["user", "assistant", "what", "is", "in", "the", "video", "?", "happens", "next", "describe",
                   "<", ">", "seconds", "0.5", "1.5", "2.5", "3.5"] + [f"w{i}" for i in range(70)]
VOCAB = {w: i for i, w in enumerate(WORDS)}
V = len(VOCAB)
PAD, EOS = VOCAB["<pad>"], VOCAB["<|im_end|>"]


def make_tokenizer() -> PreTrainedTokenizerFast:
    tk = Tokenizer(models.WordLevel(VOCAB, unk_token="w0"))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="<pad>", eos_token="<|im_end|>",
                                   additional_special_tokens=SPECIAL[1:], padding_side="left")


TOKENIZER = make_tokenizer()
QUESTIONS = ["what is in the video ?", "describe the video what happens next ?"]


def chat(question: str, media: str) -> str:
    return f"<|im_start|> user {media} {question} <|im_end|> <|im_start|> assistant"


def tokenize(texts):
    return TOKENIZER(texts, return_tensors="pt", padding=True)


# -- models -------------------------------------------------------------------------------


TEXT = dict(vocab_size=V, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=4096, pad_token_id=PAD, eos_token_id=EOS, bos_token_id=None,
            tie_word_embeddings=False)


def llava_model():
    cfg = LlavaOnevisionConfig(
        text_config=dict(model_type="qwen2", **TEXT),
        vision_config=dict(model_type="siglip_vision_model", hidden_size=32, intermediate_size=64,
                           num_hidden_layers=3, num_attention_heads=4, image_size=84, patch_size=14),
        image_token_id=VOCAB["<image>"], video_token_id=VOCAB["<video>"], vision_feature_layer=-1,
        vision_feature_select_strategy="full", image_grid_pinpoints=[[84, 84]], tie_word_embeddings=False)
    cfg._attn_implementation = "sdpa"
    return fan_in_init(LlavaOnevisionForConditionalGeneration(cfg), 0)


def qwen25_model():
    cfg = Qwen2_5_VLConfig(
        text_config=dict(**TEXT, rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                                  "mrope_section": [2, 3, 3]}),
        vision_config=dict(depth=4, hidden_size=32, intermediate_size=64, num_heads=4, out_hidden_size=64,
                           patch_size=14, window_size=112, fullatt_block_indexes=[1, 3], tokens_per_second=2),
        image_token_id=VOCAB["<|image_pad|>"], video_token_id=VOCAB["<|video_pad|>"],
        vision_start_token_id=VOCAB["<|vision_start|>"], vision_end_token_id=VOCAB["<|vision_end|>"],
        tie_word_embeddings=False)
    return fan_in_init(Qwen2_5_VLForConditionalGeneration(cfg), 1)


def qwen3_model():
    cfg = Qwen3VLConfig(
        text_config=dict(**TEXT, head_dim=16, rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                                               "mrope_section": [2, 3, 3], "mrope_interleaved": True}),
        vision_config=dict(depth=3, hidden_size=32, intermediate_size=64, num_heads=4, out_hidden_size=64,
                           patch_size=16, spatial_merge_size=2, temporal_patch_size=2, num_position_embeddings=64,
                           deepstack_visual_indexes=[0, 1]),
        image_token_id=VOCAB["<|image_pad|>"], video_token_id=VOCAB["<|video_pad|>"],
        vision_start_token_id=VOCAB["<|vision_start|>"], vision_end_token_id=VOCAB["<|vision_end|>"],
        tie_word_embeddings=False)
    return fan_in_init(Qwen3VLForConditionalGeneration(cfg), 2)


# -- processor-shaped inputs ----------------------------------------------------------------

FRAMES = 4


def llava_inputs(model, batch: int, seed: int = 0) -> dict:
    """LlavaOnevisionProcessor: F * n + 1 ``<video>`` per video; pixels (B, F, 3, 84, 84)."""
    g = torch.Generator().manual_seed(seed)
    side = -(-(84 // 14) // 2)
    run = " ".join(["<video>"] * (FRAMES * side * side + 1))
    enc = tokenize([chat(q, run) for q in QUESTIONS[:batch]])
    enc["pixel_values_videos"] = torch.randn(batch, FRAMES, 3, 84, 84, generator=g)
    return dict(enc)


def qwen_inputs(model, batch: int, seed: int = 0, grid=(FRAMES, 12, 12)) -> dict:
    """Qwen2.5-VL / Qwen3-VL processors: placeholder runs, grid_thw, mm_token_type_ids, patches."""
    g = torch.Generator().manual_seed(seed)
    vc = model.config.vision_config
    t, h, w = grid
    lt = t // vc.temporal_patch_size
    per_frame = (h // 2) * (w // 2)
    qwen3 = isinstance(model, Qwen3VLForConditionalGeneration)
    if qwen3:  # one group per temporal patch, preceded by its timestamp (processing_qwen3_vl.py)
        stamps = ["0.5", "1.5", "2.5", "3.5"]
        media = " ".join(f"< {stamps[i]} seconds > <|vision_start|> " + " ".join(["<|video_pad|>"] * per_frame)
                         + " <|vision_end|>" for i in range(lt))
    else:
        media = "<|vision_start|> " + " ".join(["<|video_pad|>"] * (lt * per_frame)) + " <|vision_end|>"
    enc = dict(tokenize([chat(q, media) for q in QUESTIONS[:batch]]))
    ids = enc["input_ids"]
    types = torch.zeros_like(ids, dtype=torch.int32)
    types[ids == VOCAB["<|image_pad|>"]] = 1
    types[ids == VOCAB["<|video_pad|>"]] = 2
    enc["mm_token_type_ids"] = types
    dim = 3 * vc.temporal_patch_size * vc.patch_size ** 2
    enc["pixel_values_videos"] = torch.randn(batch * lt * h * w, dim, generator=g)
    enc["video_grid_thw"] = torch.tensor([[lt, h, w]] * batch)
    if not qwen3:
        enc["second_per_grid_ts"] = torch.tensor([1.0] * batch)
    return enc


FAMILIES = {
    "llava_onevision": (llava_model, llava_inputs),
    "qwen2_5_vl": (qwen25_model, qwen_inputs),
    "qwen3_vl": (qwen3_model, qwen_inputs),
}


@pytest.fixture(scope="module", params=list(FAMILIES))
def family(request):
    build, make_inputs = FAMILIES[request.param]
    return request.param, build(), make_inputs


# -- reducers defined here (real Reducers, registered nowhere) ---------------------------------


@dataclass
class KeepTopScores(Reducer):
    """Keeps the K tokens with the highest global score (pure selection)."""

    name: ClassVar[str] = "test-top-scores"

    def reduce(self, video: VideoTokens, num_kept: int):
        F, N, d = video.tokens.shape
        scores = video.global_scores.reshape(-1)
        idx = torch.topk(scores, num_kept).indices.sort().values
        pos = torch.arange(F * N)
        assignment = (torch.searchsorted(idx, pos, right=True) - 1).clamp(min=0)
        return assemble(video.tokens.reshape(-1, d)[idx], idx, assignment, F, video.grid)


@dataclass
class KeepEveryKth(Reducer):
    """Keeps evenly spaced tokens; each absorbs the following dropped ones (tokens averaged)."""

    name: ClassVar[str] = "test-every-kth"

    def reduce(self, video: VideoTokens, num_kept: int):
        F, N, d = video.tokens.shape
        idx = torch.linspace(0, F * N - 1, num_kept).round().long().unique()
        assignment = (torch.searchsorted(idx, torch.arange(F * N), right=True) - 1).clamp(min=0)
        flat = video.tokens.reshape(-1, d).float()
        merged = torch.zeros(num_kept, d).index_add_(0, assignment, flat)
        merged /= torch.bincount(assignment, minlength=num_kept)[:, None]
        return assemble(merged.to(video.tokens.dtype), idx, assignment, F, video.grid)


def count_hooks(model) -> int:
    """Forward hooks on the model, except transformers' own output-capturing hooks (installed on
    the first forward and kept for the model's life by design)."""
    return sum(1 for m in model.modules() for h in (*m._forward_hooks.values(), *m._forward_pre_hooks.values())
               if getattr(h, "__name__", "") != "output_capturing_hook")


GEN = dict(max_new_tokens=6, do_sample=False)


# -- tests ------------------------------------------------------------------------------------


def make(method: str, retention: float) -> Reducer:
    return KeepTopScores(retention=retention) if method == "top" else methods.get(method, retention=retention)


@pytest.mark.parametrize("method,batch", [("top", 1), ("top", 2), ("aot", 2)])
def test_full_retention_matches_plain_generate(family, method, batch):
    name, model, make_inputs = family
    inputs = make_inputs(model, batch)
    plain = model.generate(**inputs, **GEN)
    ours = anchor_ot.generate(model, inputs, make(method, 1.0), **GEN)
    assert ours.shape == plain.shape
    assert torch.equal(ours, plain)
    # not a degenerate model: greedy output is not one repeated token
    assert len(set(plain[0, inputs["input_ids"].shape[1]:].tolist())) > 1


@pytest.mark.parametrize("method", ["top", "aot"])
def test_reduced_prefill_length_positions_and_output(family, method):
    name, model, make_inputs = family
    inputs = make_inputs(model, 2)
    reducer = make(method, 0.25)
    seen = []
    lm = model.model.language_model
    handle = lm.register_forward_pre_hook(lambda m, a, kw: seen.append(kw["inputs_embeds"].shape[1]),
                                          with_kwargs=True)
    try:
        hooks_before = count_hooks(model)
        out = anchor_ot.generate(model, inputs, reducer, **GEN)
        assert count_hooks(model) == hooks_before
    finally:
        handle.remove()
    ids = inputs["input_ids"]
    vid = model.config.video_token_id
    # prefill: the longest row's text tokens + K (+ newline for LLaVA-OV)
    text = (inputs["attention_mask"].bool() & (ids != vid)).sum(dim=1)
    grid, frames = _llm_grid(name, model, inputs)
    k = reducer.num_kept(frames, grid)
    extra = 1 if name == "llava_onevision" else 0
    assert seen[0] == int(text.max()) + k + extra
    assert all(s == 1 for s in seen[1:])  # then one token per step
    # returns the original prompt followed by the new tokens
    assert out.shape == (2, ids.shape[1] + GEN["max_new_tokens"])
    assert torch.equal(out[:, :ids.shape[1]], ids)

    prepared = prepare(model, inputs, reducer)
    for r in prepared.reduced:
        r.validate()
        assert r.num_tokens == k
    if name != "llava_onevision":
        pos = prepared.kwargs["position_ids"]
        full = prepared.full_position_ids
        mask = prepared.kwargs["attention_mask"].bool()
        for b in range(2):
            kept_cols = torch.nonzero(prepared.keep[b] & inputs["attention_mask"][b].bool()).squeeze(1)
            assert torch.equal(pos[1:, b][:, mask[b]], full[:, b, kept_cols])
            assert torch.equal(pos[0, b][mask[b]], torch.arange(int(mask[b].sum())))


def _llm_grid(name, model, inputs):
    if name == "llava_onevision":
        side = -(-(model.config.vision_config.image_size // model.config.vision_config.patch_size) // 2)
        return (side, side), inputs["pixel_values_videos"].shape[1]
    t, h, w = inputs["video_grid_thw"][0].tolist()
    m = model.config.vision_config.spatial_merge_size
    return (h // m, w // m), t


def test_dropping_with_positions_equals_masking_keys(family):
    """Reduced prompt with kept positions == full prompt with the dropped keys masked out."""
    name, model, make_inputs = family
    inputs = make_inputs(model, 2)
    prepared = prepare(model, inputs, KeepTopScores(retention=0.25))
    kw = prepared.kwargs
    with torch.no_grad():
        reduced = model(**kw).logits
        full_kw = {k: v for k, v in inputs.items()}
        full_kw["attention_mask"] = inputs["attention_mask"] * prepared.keep
        if name != "llava_onevision":
            text = (inputs["attention_mask"].cumsum(-1) - 1).clamp(min=0)
            full_kw["position_ids"] = torch.cat([text[None], prepared.full_position_ids], dim=0)
        else:  # LLaVA-OV renumbers: give the full prompt the renumbered positions of the kept tokens
            ren = (full_kw["attention_mask"].cumsum(-1) - 1).clamp(min=0)
            full_kw["position_ids"] = ren
        full = model(**full_kw).logits
    mask = kw["attention_mask"].bool()
    for b in range(2):
        cols = prepared.source[b][mask[b]]
        torch.testing.assert_close(reduced[b][mask[b]], full[b, cols], atol=1e-4, rtol=0)


def test_merging_reducer_runs_and_qwen3_deepstack_follows_assignment():
    model = qwen3_model()
    inputs = qwen_inputs(model, 1)
    reducer = KeepEveryKth(retention=0.3)
    prepared = prepare(model, inputs, reducer, scores="none")
    r, e = prepared.reduced[0], prepared.encoded[0]
    ds = prepared.kwargs["mm_encoder_outputs"]["video"].deepstack_features
    assert len(ds) == 2
    for level, feats in zip(ds, e.side_features):
        manual = torch.stack([feats[r.assignment == j].mean(0) for j in range(r.num_tokens)])
        torch.testing.assert_close(level[0], manual)
    out = anchor_ot.generate(model, inputs, reducer, scores="none", **GEN)
    assert out.shape[1] == inputs["input_ids"].shape[1] + GEN["max_new_tokens"]


def test_reduce_side_features_selected_rows_exact_merged_rows_mean():
    tokens = torch.randn(2, 6, 3)
    idx = torch.tensor([1, 4, 7, 11])
    assignment = (torch.searchsorted(idx, torch.arange(12), right=True) - 1).clamp(min=0)
    r = assemble(tokens.reshape(-1, 3)[idx], idx, assignment, 2, (2, 3))
    feats = torch.randn(12, 5)
    # rows copied from the input: exact gather at source_index
    assert torch.equal(reduce_side_features(r, feats, tokens), feats[idx])
    # without the input tokens every row counts as merged: mean over the assignment
    torch.testing.assert_close(reduce_side_features(r, feats)[1], feats[4:7].mean(0))
    # a merged row (changed token) gets the mean, a copied row its own features
    merged_tokens = r.tokens.clone()
    merged_tokens[1] = tokens.reshape(-1, 3)[4:7].mean(0)
    r2 = assemble(merged_tokens, idx, assignment, 2, (2, 3))
    out = reduce_side_features(r2, feats, tokens)
    torch.testing.assert_close(out[1], feats[4:7].mean(0))
    assert torch.equal(out[[0, 2, 3]], feats[idx[[0, 2, 3]]])


def test_compact_rows_left_pads():
    ids = torch.tensor([[0, 0, 5, 6, 7], [1, 2, 3, 4, 5]])
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    keep = torch.tensor([[True, True, True, False, True], [False, True, False, True, True]])
    new, m, src = compact_rows(ids, mask, keep, pad_token_id=9)
    assert new.tolist() == [[9, 5, 7], [2, 4, 5]]
    assert m.tolist() == [[0, 1, 1], [1, 1, 1]]
    assert src.tolist() == [[0, 2, 4], [1, 3, 4]]


def test_text_only_and_image_prompts_pass_through():
    model = llava_model()
    enc = dict(tokenize([chat(QUESTIONS[0], "")]))
    plain = model.generate(**enc, **GEN)
    assert torch.equal(anchor_ot.generate(model, enc, KeepTopScores(retention=0.1), **GEN), plain)
    qmodel = qwen25_model()
    img = dict(tokenize([chat(QUESTIONS[0], "<|vision_start|> " + " ".join(["<|image_pad|>"] * 4)
                              + " <|vision_end|>")]))
    types = torch.zeros_like(img["input_ids"], dtype=torch.int32)
    types[img["input_ids"] == VOCAB["<|image_pad|>"]] = 1
    img["mm_token_type_ids"] = types
    img["pixel_values"] = torch.randn(16, 3 * 2 * 14 * 14, generator=torch.Generator().manual_seed(3))
    img["image_grid_thw"] = torch.tensor([[1, 4, 4]])
    plain = qmodel.generate(**img, **GEN)
    assert torch.equal(anchor_ot.generate(qmodel, img, KeepTopScores(retention=0.1), **GEN), plain)


def test_errors():
    model = qwen25_model()
    inputs = qwen_inputs(model, 1)
    with pytest.raises(TypeError, match="Qwen3VLForConditionalGeneration"):
        anchor_ot.generate(nn.Linear(2, 2), inputs, KeepTopScores(retention=0.5))
    with pytest.raises(TypeError, match="Reducer"):
        anchor_ot.generate(model, inputs, lambda v: v)
    for bad in (0.0, 1.5, -0.1):
        with pytest.raises(ValueError, match="retention"):
            KeepTopScores(retention=bad)
    short = dict(inputs)
    short["input_ids"] = inputs["input_ids"][:, 5:]
    short["attention_mask"] = inputs["attention_mask"][:, 5:]
    short["mm_token_type_ids"] = inputs["mm_token_type_ids"][:, 5:]
    with pytest.raises(ValueError, match="placeholder"):
        anchor_ot.generate(model, short, KeepTopScores(retention=0.5))
    no_grid = {k: v for k, v in inputs.items() if k != "video_grid_thw"}
    with pytest.raises(ValueError, match="video_grid_thw"):
        anchor_ot.generate(model, no_grid, KeepTopScores(retention=0.5))
    bad_mask = dict(inputs, attention_mask=inputs["attention_mask"][:, 1:])
    with pytest.raises(ValueError, match="attention_mask"):
        anchor_ot.generate(model, bad_mask, KeepTopScores(retention=0.5))
    with pytest.raises(ValueError, match="global_layer"):
        anchor_ot.generate(model, inputs, KeepTopScores(retention=0.5), global_layer=99)
    with pytest.raises(ValueError, match="scores"):
        anchor_ot.generate(model, inputs, KeepTopScores(retention=0.5), scores="magic")
    # hooks are removed also when the call fails after registering them
    before = count_hooks(model)
    with pytest.raises(ValueError):
        anchor_ot.generate(model, short, KeepTopScores(retention=0.5))
    assert count_hooks(model) == before


def test_scores_are_received_attention_of_the_chosen_layer():
    """Hook scores equal an eager ``output_attentions`` oracle of the same SigLIP layer, pooled."""
    model = llava_model()
    inputs = llava_inputs(model, 1)
    prepared = prepare(model, inputs, KeepTopScores(retention=0.5), local_layer=0, global_layer=-2)
    tower = model.model.vision_tower
    old = tower.config._attn_implementation
    tower.config._attn_implementation = "eager"
    try:
        with torch.no_grad():
            att = tower(inputs["pixel_values_videos"][0], output_attentions=True).attentions
    finally:
        tower.config._attn_implementation = old
    side = 84 // 14
    for name, layer in (("global", 1), ("local", 0)):
        s = att[layer].mean(dim=(1, 2)).view(FRAMES, 1, side, side)
        s = torch.nn.functional.interpolate(s, size=(3, 3), mode="bilinear").reshape(FRAMES, 9)
        got = getattr(prepared.encoded[0].video, f"{name}_scores")
        torch.testing.assert_close(got, s, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("build", [qwen25_model, qwen3_model])
def test_qwen_scores_match_naive_per_window_oracle(build):
    """Packed, window-permuted scores == a naive loop over the sequences the block attends within."""
    from transformers.vision_utils import get_vision_window_index

    model = build()
    inputs = qwen_inputs(model, 1)
    visual = model.model.visual
    layer = 0  # Qwen2.5-VL: a windowed block (fullatt_block_indexes = [1, 3])
    captured = {}

    def grab(module, args, kwargs):
        captured.update(x=args[0], cu=kwargs["cu_seqlens"], pe=kwargs["position_embeddings"])

    h = visual.blocks[layer].attn.register_forward_pre_hook(grab, with_kwargs=True)
    try:
        prepared = prepare(model, inputs, KeepTopScores(retention=0.5), local_layer=layer, global_layer=-1)
    finally:
        h.remove()
    attn = visual.blocks[layer].attn
    import sys

    rot = sys.modules[type(attn).__module__].apply_rotary_pos_emb_vision
    x, cu = captured["x"], captured["cu"].tolist()
    S = x.shape[0]
    with torch.no_grad():
        q, k, _ = attn.qkv(x).reshape(S, 3, attn.num_heads, -1).permute(1, 0, 2, 3).unbind(0)
        q, k = rot(q, k, *captured["pe"])
        naive = torch.zeros(S)
        for a, b in zip(cu[:-1], cu[1:]):  # one sequence (window or frame) at a time
            for head in range(attn.num_heads):
                p = torch.softmax(q[a:b, head] @ k[a:b, head].T * attn.scaling, dim=-1)
                naive[a:b] += p.mean(0) / attn.num_heads
    m = model.config.vision_config.spatial_merge_size
    if hasattr(visual, "window_size"):
        window_index, _ = get_vision_window_index(inputs["video_grid_thw"], m, visual.window_size, visual.patch_size)
        order = torch.argsort(window_index)
    else:
        order = torch.arange(S // (m * m))
    merged = naive.view(-1, m * m).mean(1)[order]
    got = prepared.encoded[0].video.local_scores.reshape(-1)
    torch.testing.assert_close(got, merged, atol=1e-6, rtol=1e-5)
    assert len(cu) > 2  # several sequences (windows / temporal patches) were attended within


def test_hooks_removed_when_the_encoder_fails():
    model = llava_model()
    inputs = llava_inputs(model, 1)
    inputs["pixel_values_videos"] = torch.randn(1, FRAMES, 3, 70, 70)  # wrong size: SigLIP fails mid-encode
    # a probe on the vision embeddings (the failing module) records how many hooks were in place
    # when the encoder ran, so the test fails if generate raised before registering its hooks
    during = []
    probe = model.model.vision_tower.embeddings.register_forward_pre_hook(
        lambda m, a: during.append(count_hooks(model)))
    try:
        before = count_hooks(model)
        with pytest.raises(RuntimeError, match="must match the size"):
            anchor_ot.generate(model, inputs, KeepTopScores(retention=0.5))
    finally:
        probe.remove()
    assert during and during[0] > before  # the adapter's hooks were registered when it failed
    assert count_hooks(model) == before - 1  # ... and removed (the probe itself is gone too)


@pytest.fixture(scope="module")
def qwen3():
    return qwen3_model()


@pytest.mark.parametrize("method", methods.available())
def test_every_registered_method_runs_through_generate(qwen3, method):
    """Any registered reducer plugs in: exact prefill length, prompt + new tokens returned."""
    model = qwen3
    inputs = qwen_inputs(model, 1, grid=(8, 12, 12))  # 4 temporal patches of 6 x 6
    reducer = methods.get(method, retention=0.25)
    k = reducer.num_kept(4, (6, 6))
    seen = []
    handle = model.model.language_model.register_forward_pre_hook(
        lambda m, a, kw: seen.append(kw["inputs_embeds"].shape[1]), with_kwargs=True)
    try:
        out = anchor_ot.generate(model, inputs, reducer, max_new_tokens=2, do_sample=False)
    finally:
        handle.remove()
    text = int((inputs["input_ids"] != model.config.video_token_id).sum())
    assert seen[0] == text + k
    assert torch.equal(out[:, :inputs["input_ids"].shape[1]], inputs["input_ids"])



@pytest.mark.parametrize("build", [qwen25_model, qwen3_model], ids=["qwen2_5_vl", "qwen3_vl"])
def test_cached_continuation_without_positions_uses_rope_deltas(build):
    """After a reduced prefill, a cached forward WITHOUT position_ids (what ``rope_deltas`` is for)
    continues at the unreduced prompt's next M-RoPE position: the full prompt's largest position
    (transformers' own ``get_rope_index``) + 1. Batch of one, so the continuation needs no mask."""
    model = build()
    inputs = qwen_inputs(model, 1)
    prepared = prepare(model, inputs, KeepTopScores(retention=0.25))
    kw = prepared.kwargs
    full, full_delta = model.model.get_rope_index(
        inputs["input_ids"], mm_token_type_ids=inputs["mm_token_type_ids"], attention_mask=inputs["attention_mask"],
        **{k: inputs[k] for k in ("video_grid_thw", "second_per_grid_ts") if k in inputs})
    length, full_length = kw["input_ids"].shape[1], inputs["input_ids"].shape[1]
    assert length < full_length
    # the stored delta moves the reduced prompt's end to the full prompt's end
    assert int(model.model.rope_deltas) + length == int(full_delta) + full_length == int(full.max()) + 1
    step = torch.tensor([[VOCAB["w5"]]])

    def continue_with(**extra):
        with torch.no_grad():
            pre = model(**kw, use_cache=True)
            name = "cache" if "cache" in pre.keys() else "past_key_values"  # renamed in transformers 5.2x
            return model(input_ids=step, use_cache=True, **{name: pre[name]}, **extra).logits[0, -1]

    def at(pos):
        return torch.tensor([length, pos, pos, pos]).reshape(4, 1, 1)

    implicit = continue_with()  # positions from model.model.rope_deltas
    expected = continue_with(position_ids=at(int(full.max()) + 1))
    torch.testing.assert_close(implicit, expected, atol=0, rtol=0)
    # the position matters: one further gives other logits
    assert not torch.allclose(continue_with(position_ids=at(int(full.max()) + 2)), expected, atol=1e-4)
