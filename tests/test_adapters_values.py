"""Value tests of the transformers adapters' less travelled paths (written against mutation survivors).

Same tiny real transformers models as ``test_adapters.py`` (built in memory, nothing downloaded);
each test names the bug it is there to catch.
"""

from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers")
from test_adapters import (  # noqa: E402
    KeepEveryKth,
    KeepTopScores,
    llava_inputs,
    llava_model,
    qwen25_model,
    qwen3_model,
    qwen_inputs,
)

import anchor_ot  # noqa: E402

torch.set_num_threads(1)


def _first_prefill_embeds(model, call):
    """Run ``call()`` and return (its output, the ``inputs_embeds`` of the first language-model forward)."""
    seen = []
    handle = model.model.language_model.register_forward_pre_hook(
        lambda m, a, kw: seen.append(kw["inputs_embeds"].clone()), with_kwargs=True)
    try:
        out = call()
    finally:
        handle.remove()
    return out, seen[0]


@pytest.mark.parametrize("build,make_inputs", [(llava_model, llava_inputs), (qwen25_model, qwen_inputs),
                                               (qwen3_model, qwen_inputs)],
                         ids=["llava_onevision", "qwen2_5_vl", "qwen3_vl"])
def test_expanded_generation_gives_every_row_its_own_video(build, make_inputs):
    """Beam search / ``num_return_sequences`` with a batch of two videos: generate repeats each prompt
    row, and transformers repeats the pre-encoded features per *item* of ``pooler_output``. At full
    retention the prefill embeddings must equal plain generate's row for row.

    Bug caught: packing all videos into one pooler item (LLaVA-OV before the fix) makes transformers
    repeat the group [A, B] -> [A, B, A, B] while the rows are [A, A, B, B]: rows 1 and 2 read the
    other video's features (the tiny model's tokens may still agree, so the embeddings are compared).
    """
    model = build()
    inputs = make_inputs(model, 2)
    gen = dict(max_new_tokens=2, do_sample=False, num_beams=2, num_return_sequences=2)
    plain, plain_emb = _first_prefill_embeds(model, lambda: model.generate(**inputs, **gen))
    ours, ours_emb = _first_prefill_embeds(
        model, lambda: anchor_ot.generate(model, inputs, KeepTopScores(retention=1.0), **gen))
    assert ours_emb.shape == plain_emb.shape and ours_emb.shape[0] == 4
    torch.testing.assert_close(ours_emb, plain_emb, atol=1e-6, rtol=0)
    # the prompt rows returned are the original ones, each repeated for its two sequences
    assert torch.equal(ours[:, :inputs["input_ids"].shape[1]], inputs["input_ids"].repeat_interleave(2, dim=0))
    assert torch.equal(ours, plain)


# -- received attention: the block paths no model-sized test reaches ------------------------------


def _oracle_received(q, k, scale):
    """mean over heads and queries of softmax(q k^T * scale), in float64."""
    p = torch.softmax(q.double() @ k.double().transpose(-1, -2) * scale, dim=-1)
    return p.mean(dim=(1, 2))


@pytest.mark.parametrize("C,H,L,hd", [(65, 4, 64, 8), (2, 2, 729, 8), (1, 2**19, 2, 1)],
                         ids=["sequence-chunks", "row-blocks", "single-rows"])
def test_received_attention_blocks_match_softmax(C, H, L, hd):
    """Bug caught: a wrong slice or step in the blocking. (65, 4, 64): 2**20 // (4 * 64**2) = 64 whole
    sequences per block, so the 65th is a block of its own; (2, 2, 729): a sequence has more than 2**20
    logits, so it goes in blocks of 2**20 // (2 * 729) = 719 query rows (719 + 10); (1, 2**19, 2): one
    query row of all heads is already 2**20 logits, so the blocks are single rows (a floor of 2 rows
    would double the block); the tiny models of the generate tests reach none of these paths; the
    largest allocation (torch.profiler) stays within the documented 2**20 logits (a block-size bug that
    only costs memory)."""
    from anchor_ot.adapters.base import received_attention

    from torch.profiler import ProfilerActivity, profile

    g = torch.Generator().manual_seed(0)
    q = torch.randn(C, H, L, hd, generator=g)
    k = torch.randn(C, H, L, hd, generator=g)
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        got = received_attention(q, k, 0.3)
    # the documented bound: at most 2**20 fp32 logits at once (a whole 2 x 729 x 729 sequence is above it)
    assert 0 < max(e.cpu_memory_usage for e in prof.events()) <= 4 << 20
    assert got.dtype == torch.float32 and got.shape == (C, L)
    torch.testing.assert_close(got.double(), _oracle_received(q, k, 0.3), atol=1e-9, rtol=1e-5)


def test_received_attention_follows_the_device_of_q():
    """The accumulator is made on q's device. Checked on the ``meta`` device (shapes only, no GPU needed):
    the scores come back on meta, (C, L) float32.

    Bug caught: the accumulator made on the default device (CPU), so GPU scores would come back on the
    CPU (or fail to mix)."""
    from anchor_ot.adapters.base import received_attention

    q = torch.empty(3, 2, 5, 4, device="meta")
    got = received_attention(q, torch.empty_like(q), 0.3)
    assert got.device.type == "meta" and got.shape == (3, 5) and got.dtype == torch.float32


def test_received_attention_stable_when_rows_differ_in_scale():
    """Bug caught: the softmax shift taken over the wrong axis (the block's global max instead of each
    query row's): a row whose logits are all far below another row's max underflows to 0 / 0 = NaN.
    Keys e_1, e_2, e_3; query 0 has logits (200, 0, 0), queries 1 and 2 all zeros:
    received = ((1 + 1/3 + 1/3) / 3, (2/3) / 3, (2/3) / 3) = (5/9, 2/9, 2/9)."""
    from anchor_ot.adapters.base import received_attention

    q = torch.zeros(1, 1, 3, 3)
    q[0, 0, 0, 0] = 200.0
    got = received_attention(q, torch.eye(3)[None, None], 1.0)
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got, torch.tensor([[5 / 9, 2 / 9, 2 / 9]]), atol=1e-6, rtol=0)


def test_received_attention_packed_skips_empty_sequences_and_keeps_order():
    """Bug caught: stopping at an empty sequence (Qwen2.5-VL's window bounds can repeat a value), or
    writing a length group's scores to the wrong tokens. Sequences of lengths 3, 0, 5, 3 in that order."""
    from anchor_ot.adapters.base import received_attention_packed

    g = torch.Generator().manual_seed(1)
    cu = torch.tensor([0, 3, 3, 8, 11], dtype=torch.int32)
    q = torch.randn(11, 2, 4, generator=g)
    k = torch.randn(11, 2, 4, generator=g)
    got = received_attention_packed(q, k, 0.5, cu)
    want = torch.cat([_oracle_received(q[a:b].transpose(0, 1)[None], k[a:b].transpose(0, 1)[None], 0.5)[0]
                      for a, b in ((0, 3), (3, 8), (8, 11))])
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.double(), want, atol=1e-9, rtol=1e-6)


# -- LLaVA-OneVision: _siglip_received and its fallback ------------------------------------------------


def _siglip_attention(heads: int):
    from transformers import SiglipVisionConfig
    from transformers.models.siglip.modeling_siglip import SiglipAttention

    cfg = SiglipVisionConfig(hidden_size=32, num_attention_heads=heads)
    cfg._attn_implementation = "eager"  # the oracle reads the module's own attention weights
    torch.manual_seed(0)
    return SiglipAttention(cfg).eval()


def _eager_received(module, x):
    """Independent oracle: the module's own eager attention weights (frames, H, L, L), averaged over
    heads and queries (``received_attention``'s definition), one frame at a time."""
    with torch.no_grad():
        return torch.cat([module(x[i:i + 1])[1].mean(dim=(1, 2)) for i in range(x.shape[0])])


def _q_proj_batches(module):
    sizes = []
    handle = module.q_proj.register_forward_hook(lambda m, a, out: sizes.append(a[0].shape[0]))
    return sizes, handle


@pytest.mark.parametrize("heads,frames,chunks", [(16, 4, [3, 1]), (32, 2, [1, 1])])
def test_siglip_fallback_projects_in_bounded_chunks_and_matches_eager_weights(heads, frames, chunks):
    """The fallback (no captured q/k) at SigLIP's real length L = 729: with 16 heads at most
    2**25 // (16 * 729**2) = 3 frames are projected at a time, so 4 frames go as 3 + 1; with 32 heads
    one frame alone is over the bound, and frames still go one at a time.

    Bugs caught: a broken chunk loop (``range(n, step)``, a wrong slice, ``torch.cat`` of the wrong
    list), q or k not split into heads (``transpose``), a wrong chunk size (the memory bound), and the
    row-block path of ``received_attention`` (more than 2**20 logits per frame)."""
    from anchor_ot.adapters.llava_onevision import _siglip_received

    module = _siglip_attention(heads)
    x = torch.randn(frames, 729, 32, generator=torch.Generator().manual_seed(2))
    sizes, handle = _q_proj_batches(module)
    try:
        with torch.no_grad():
            got = _siglip_received(module, (), {"hidden_states": x})
    finally:
        handle.remove()
    assert sizes == chunks
    want = _eager_received(module, x)
    assert got.shape == (frames, 729) and got.dtype == torch.float32
    torch.testing.assert_close(got, want, atol=1e-8, rtol=1e-5)


def test_siglip_received_input_forms_and_partial_captures():
    """Small frames (L = 36): positional ``hidden_states``; the layer's own q/k reused (q_proj not called
    again); only q captured, or captures of another input's shape -> projected again. Every form must
    give the eager oracle.

    Bugs caught: reading the wrong positional argument, using a capture whose shape does not match
    (e.g. from an earlier call), ``and``/``or`` mix-ups in the capture check (a missing k read as
    present), and recomputing projections the layer already computed."""
    from anchor_ot.adapters.llava_onevision import _siglip_received

    module = _siglip_attention(4)
    x = torch.randn(3, 36, 32, generator=torch.Generator().manual_seed(3))
    want = _eager_received(module, x)
    with torch.no_grad():
        q_out, k_out = module.q_proj(x), module.k_proj(x)
    other = torch.randn(2, 36, 32)
    cases = {
        "positional": ((x,), None, 1),
        "captured": ((), {"q_proj": q_out, "k_proj": k_out}, 0),
        "only q captured": ((), {"q_proj": q_out}, 1),
        "only k captured": ((), {"k_proj": k_out}, 1),
        "q of another input": ((), {"q_proj": module.q_proj(other).detach(), "k_proj": k_out}, 1),
        "k of another input": ((), {"q_proj": q_out, "k_proj": module.k_proj(other).detach()}, 1),
    }
    for name, (args, captured, calls) in cases.items():
        kwargs = {} if args else {"hidden_states": x}
        if captured is not None:
            module._anchor_ot_projections = captured
        sizes, handle = _q_proj_batches(module)
        try:
            with torch.no_grad():
                got = _siglip_received(module, args, kwargs)
        finally:
            handle.remove()
            if captured is not None:
                del module._anchor_ot_projections
        assert len(sizes) == calls, name
        torch.testing.assert_close(got, want, atol=1e-8, rtol=1e-5, msg=name)


def _eager_tower_scores(model, pixels, layers):
    tower = model.model.vision_tower
    old = tower.config._attn_implementation
    tower.config._attn_implementation = "eager"
    try:
        with torch.no_grad():
            att = tower(pixels, output_attentions=True).attentions
    finally:
        tower.config._attn_implementation = old
    return {name: att[i].mean(dim=(1, 2)) for name, i in layers.items()}


def test_llava_scores_through_the_fallback_match_eager_attention(monkeypatch):
    """End to end with ``ScoreHooks`` not capturing q/k (what happens when a transformers version
    computes them without calling ``q_proj``/``k_proj`` modules): the fallback runs (q_proj of each
    score layer is called a second time) and the raw per-frame scores equal the tower's eager
    attention weights averaged over heads and queries, to 1e-5.

    Bugs caught: every bug of the fallback path on the real model's call (kwargs form, 4 frames, the
    hook's bookkeeping), a fallback that silently falls back on stale or missing captures, and an
    explicit ``global_layer`` replaced by the default."""
    from anchor_ot.adapters import llava_onevision as lo
    from anchor_ot.adapters.base import ScoreHooks

    model = llava_model()
    inputs = llava_inputs(model, 2)
    layers = lo._layers(model)
    monkeypatch.setattr(lo._siglip_received, "projections", ())
    raw = {}
    real_result = ScoreHooks.result

    def keep_raw(self, name):
        raw[name] = real_result(self, name)
        return raw[name]

    monkeypatch.setattr(ScoreHooks, "result", keep_raw)
    calls = {"local": [], "global": []}
    handles = [layers[i].self_attn.q_proj.register_forward_hook(lambda m, a, o, n=n: calls[n].append(a[0].shape[0]))
               for n, i in (("local", 1), ("global", 0))]
    try:  # both layers away from the defaults (local 5 clipped to 2, global -2 = 1)
        prepared = anchor_ot.adapters.prepare(model, inputs, KeepTopScores(retention=0.5), local_layer=1,
                                              global_layer=0)
    finally:
        for h in handles:
            h.remove()
    # the layer's own projection of all 8 frames, then the fallback's (one chunk: 8 frames fit the bound)
    assert calls == {"local": [8, 8], "global": [8, 8]}
    pixels = inputs["pixel_values_videos"].flatten(0, 1)
    want = _eager_tower_scores(model, pixels, {"local": 1, "global": 0})
    for name in ("local", "global"):
        torch.testing.assert_close(raw[name], want[name], atol=1e-5, rtol=0)
        # and what reaches the reducer is the pooled form of exactly these
        side = 84 // 14
        pooled = torch.nn.functional.interpolate(want[name].view(8, 1, side, side), size=(3, 3), mode="bilinear")
        for b in range(2):
            torch.testing.assert_close(getattr(prepared.encoded[b].video, f"{name}_scores"),
                                       pooled.reshape(2, 4, 9)[b], atol=1e-5, rtol=0)


# -- Qwen ViTs: _vit_received's input forms and projection reuse --------------------------------------


def _grab_block_inputs(model, inputs, layer):
    """The (hidden_states, cu_seqlens, position_embeddings) a ViT block's attention receives."""
    captured = {}

    def grab(module, args, kwargs):
        captured.update(x=args[0] if args else kwargs["hidden_states"], cu=kwargs["cu_seqlens"],
                        pe=kwargs["position_embeddings"])

    attn = model.model.visual.blocks[layer].attn
    handle = attn.register_forward_pre_hook(grab, with_kwargs=True)
    try:
        with torch.no_grad():
            model.model.get_video_features(inputs["pixel_values_videos"], inputs["video_grid_thw"])
    finally:
        handle.remove()
    return attn, captured


@pytest.mark.parametrize("build", [qwen25_model, qwen3_model], ids=["qwen2_5_vl", "qwen3_vl"])
def test_vit_received_reads_every_call_form(build):
    """``hidden_states`` and ``cu_seqlens`` by keyword or by position (transformers has used both), and the
    layer's own qkv (reused, not recomputed) or a stale one of another shape (recomputed) all give the
    same scores as a naive per-sequence softmax.

    Bugs caught: reading the wrong positional argument or ignoring a keyword form, and trusting a
    capture whose shape does not match the input (also one that matches it on the first axis only)."""
    import sys

    from anchor_ot.adapters.qwen_vl import _vit_received

    model = build()
    inputs = qwen_inputs(model, 1)
    attn, c = _grab_block_inputs(model, inputs, 0)
    x, cu, pe = c["x"], c["cu"], c["pe"]
    S = x.shape[0]
    with torch.no_grad():
        qkv = attn.qkv(x)
        q, k, _ = qkv.reshape(S, 3, attn.num_heads, -1).permute(1, 0, 2, 3).unbind(0)
        q, k = sys.modules[type(attn).__module__].apply_rotary_pos_emb_vision(q, k, *pe)
    bounds = cu.tolist()
    want = torch.cat([_oracle_received(q[a:b].transpose(0, 1)[None], k[a:b].transpose(0, 1)[None],
                                       attn.scaling)[0] for a, b in zip(bounds[:-1], bounds[1:])])
    assert len(bounds) > 2
    forms = {
        "keywords": ((), {"hidden_states": x, "cu_seqlens": cu, "position_embeddings": pe}, None, 1),
        "x positional": ((x,), {"cu_seqlens": cu, "position_embeddings": pe}, None, 1),
        "x and cu positional": ((x, cu), {"position_embeddings": pe}, None, 1),
        "own qkv reused": ((x,), {"cu_seqlens": cu, "position_embeddings": pe}, qkv, 0),
        "stale qkv": ((x,), {"cu_seqlens": cu, "position_embeddings": pe}, qkv[:-4], 1),
        # same first axis, other rank (and other values): not the layer's (S, 3 d) output, so not usable
        "stale qkv of another rank": ((x,), {"cu_seqlens": cu, "position_embeddings": pe}, (qkv + 1)[:, None], 1),
    }
    for name, (args, kwargs, captured, calls) in forms.items():
        seen = []
        handle = attn.qkv.register_forward_hook(lambda m, a, o: seen.append(1))
        if captured is not None:
            attn._anchor_ot_projections = {"qkv": captured}
        try:
            with torch.no_grad():
                got = _vit_received(attn, args, kwargs)
        finally:
            handle.remove()
            if captured is not None:
                del attn._anchor_ot_projections
        assert len(seen) == calls, name
        torch.testing.assert_close(got.double(), want, atol=1e-9, rtol=1e-5, msg=name)


@pytest.mark.parametrize("build,make_inputs,proj", [(llava_model, llava_inputs, "q_proj"),
                                                    (qwen25_model, qwen_inputs, "qkv"),
                                                    (qwen3_model, qwen_inputs, "qkv")],
                         ids=["llava_onevision", "qwen2_5_vl", "qwen3_vl"])
def test_score_hooks_reuse_the_layers_own_projections(build, make_inputs, proj):
    """With scores on, each score layer's q projection runs exactly as often as in a plain encoder
    pass (``ScoreHooks`` hands the layer's own output to the score function).

    Bug caught: a capture check that never matches (shape compared on the wrong axes, the reuse
    branch disabled), which doubles the projection cost without changing any value."""
    model = build()
    inputs = make_inputs(model, 1)
    if hasattr(model.model, "visual"):
        layers = [b.attn for b in model.model.visual.blocks]
    else:
        from anchor_ot.adapters.llava_onevision import _layers
        layers = [layer.self_attn for layer in _layers(model)]
    counts = [0] * len(layers)
    handles = [getattr(m, proj).register_forward_hook(lambda mod, a, o, i=i: counts.__setitem__(i, counts[i] + 1))
               for i, m in enumerate(layers)]
    try:
        anchor_ot.adapters.prepare(model, inputs, KeepTopScores(retention=0.5), local_layer=0)
        prepare_counts, counts[:] = list(counts), [0] * len(layers)
        anchor_ot.adapters.prepare(model, inputs, KeepEveryKth(retention=0.5), scores="none")
    finally:
        for h in handles:
            h.remove()
    assert counts[0] >= 1 and prepare_counts == counts


# -- Qwen positions without mm_token_type_ids, pad ids, error messages --------------------------------


def _image_and_video_inputs(model):
    """A Qwen2.5-VL prompt with a 4 x 4-patch image before the video (processor layout), and the
    ``mm_token_type_ids`` the processor would return."""
    from test_adapters import VOCAB

    video = qwen_inputs(model, 1)
    vid_ids = video["input_ids"][0].tolist()
    start = vid_ids.index(VOCAB["<|vision_start|>"])
    image = [VOCAB["<|vision_start|>"]] + [VOCAB["<|image_pad|>"]] * 4 + [VOCAB["<|vision_end|>"]]
    ids = torch.tensor([vid_ids[:start] + image + vid_ids[start:]])
    types = torch.zeros_like(ids, dtype=torch.int32)
    types[ids == VOCAB["<|image_pad|>"]] = 1
    types[ids == VOCAB["<|video_pad|>"]] = 2
    return dict(video, input_ids=ids, attention_mask=torch.ones_like(ids), mm_token_type_ids=types,
                pixel_values=torch.randn(16, video["pixel_values_videos"].shape[1],
                                         generator=torch.Generator().manual_seed(4)),
                image_grid_thw=torch.tensor([[1, 4, 4]]))


def test_qwen_positions_without_token_types_match_the_processors():
    """``mm_token_type_ids`` missing (callers that build inputs by hand): the adapter derives them
    (text 0, image 1, video 2) and passes ``image_grid_thw``, so the full prompt's M-RoPE positions equal
    ``get_rope_index`` with the processor's types, image and video both present; the reduced prompt's
    positions are those at the kept tokens.

    Bugs caught: an image typed as video, the image grid left out of the position computation
    (both shift every position after the image), and the caller's own types ignored (key misspelt)."""
    from anchor_ot.adapters.qwen_vl import full_rope_index

    model = qwen25_model()
    inputs = _image_and_video_inputs(model)
    want, want_delta = model.model.get_rope_index(
        inputs["input_ids"], mm_token_type_ids=inputs["mm_token_type_ids"], attention_mask=inputs["attention_mask"],
        image_grid_thw=inputs["image_grid_thw"], video_grid_thw=inputs["video_grid_thw"],
        second_per_grid_ts=inputs["second_per_grid_ts"])
    untyped = {k: v for k, v in inputs.items() if k != "mm_token_type_ids"}
    got, got_delta = full_rope_index(model, untyped, inputs["attention_mask"])
    assert torch.equal(got, want) and torch.equal(got_delta, want_delta)
    # the image's types matter: read as text, its tokens would shift every later position
    as_text = inputs["mm_token_type_ids"].masked_fill(inputs["mm_token_type_ids"] == 1, 0)
    other, _ = model.model.get_rope_index(
        inputs["input_ids"], mm_token_type_ids=as_text, attention_mask=inputs["attention_mask"],
        video_grid_thw=inputs["video_grid_thw"], second_per_grid_ts=inputs["second_per_grid_ts"])
    assert not torch.equal(other, want)
    # types the caller passes are used as given, not derived again from the ids
    typed, _ = full_rope_index(model, dict(untyped, mm_token_type_ids=as_text), inputs["attention_mask"])
    assert torch.equal(typed, other)
    prepared = anchor_ot.adapters.prepare(model, untyped, KeepTopScores(retention=0.5))
    kept = torch.nonzero(prepared.keep[0]).squeeze(1)
    assert torch.equal(prepared.kwargs["position_ids"][1:, 0], want[:, 0, kept])


def test_pad_token_id_sources():
    """Generation config first, then the text config; a list gives its first id; none at all gives 0.

    Bugs caught: ignoring the generation config, inverting the ``None`` test (the tiny models'
    pad id is 0, the fallback value, so only other ids tell them apart), and an AttributeError on a
    config without the attribute."""
    from anchor_ot.adapters.base import pad_token_id

    model = llava_model()
    gen, text = model.generation_config, model.config.text_config
    old = gen.pad_token_id, text.pad_token_id
    try:
        gen.pad_token_id, text.pad_token_id = 7, 5
        assert pad_token_id(model) == 7
        gen.pad_token_id = None
        assert pad_token_id(model) == 5
        gen.pad_token_id = [3, 4]
        assert pad_token_id(model) == 3
        gen.pad_token_id, text.pad_token_id = None, None
        assert pad_token_id(model) == 0
        # configs that do not have the attribute at all: a generation config without it (deleted) falls
        # back to the text config; a text config class that does not declare it (transformers 5.x's
        # PretrainedConfig) gives 0
        text.pad_token_id = 5
        del gen.pad_token_id
        assert pad_token_id(model) == 5
        model.config.text_config = transformers.PretrainedConfig()
        assert not hasattr(model.config.text_config, "pad_token_id")
        assert pad_token_id(model) == 0
        model.config.text_config = text
        gen.pad_token_id = None
        # and the rebuilt prompt's left padding carries it
        gen.pad_token_id = 7
        inputs = llava_inputs(model, 2)
        prepared = anchor_ot.adapters.prepare(model, inputs, KeepTopScores(retention=0.25))
        ids, mask = prepared.kwargs["input_ids"], prepared.kwargs["attention_mask"]
        assert (mask == 0).any() and (ids[mask == 0] == 7).all()
    finally:
        gen.pad_token_id, text.pad_token_id = old


def test_error_messages_name_what_was_passed():
    """Bugs caught: messages that print something else than the offending value (the mask itself
    instead of its shape, ``NoneType`` instead of the reducer's type, the patch count of the wrong
    axis) or lose their text."""
    model = qwen25_model()
    inputs = qwen_inputs(model, 1)
    bad_mask = dict(inputs, attention_mask=inputs["attention_mask"][:, 1:])
    shape = tuple(inputs["input_ids"].shape)
    with pytest.raises(ValueError, match=rf"input_ids \({shape[0]}, {shape[1]}\), got torch.Size\(\[{shape[0]}, "
                                         rf"{shape[1] - 1}\]\)"):
        anchor_ot.generate(model, bad_mask, KeepTopScores(retention=0.5))
    with pytest.raises(ValueError, match="got mask$"):
        anchor_ot.generate(model, dict(inputs, attention_mask="mask"), KeepTopScores(retention=0.5))
    with pytest.raises(TypeError, match="got function"):
        anchor_ot.generate(model, inputs, lambda v: v)
    with pytest.raises(TypeError, match="got list"):
        anchor_ot.generate(model, [inputs], KeepTopScores(retention=0.5))
    no_grid = {k: v for k, v in inputs.items() if k != "video_grid_thw"}
    with pytest.raises(ValueError, match=r"^Qwen video inputs need video_grid_thw \(the processor returns it with "
                                         r"pixel_values_videos\)$"):
        anchor_ot.adapters.prepare(model, no_grid, KeepTopScores(retention=0.5))
    patches = inputs["pixel_values_videos"].shape[0]  # 2 temporal patches x 12 x 12
    assert patches == 288
    with pytest.raises(ValueError, match=r"^pixel_values_videos has 284 patches but video_grid_thw needs 288$"):
        anchor_ot.adapters.prepare(model, dict(inputs, pixel_values_videos=inputs["pixel_values_videos"][:-4]),
                                   KeepTopScores(retention=0.5))


def test_llava_encode_forwards_feature_options_converts_pixels_and_times_scores(monkeypatch):
    """``vision_feature_layer`` / ``vision_feature_select_strategy`` in the inputs reach the model's
    ``get_video_features`` (tokens equal the model's own features of that layer); fp32 pixels are cast
    to a bf16 tower's dtype; ``score_seconds`` records the hooks' time (0 without scores).

    Bugs caught: dropping or misspelling the forwarded options, feeding fp32 pixels to a bf16 tower
    (dtype error), and losing the timing."""
    model = llava_model()
    inputs = llava_inputs(model, 1)
    base = model.model
    seen = []
    real = base.get_video_features

    def spy(*args, **kwargs):
        seen.append(dict(kwargs))
        return real(*args, **kwargs)

    monkeypatch.setattr(base, "get_video_features", spy)
    opts = dict(vision_feature_layer=-2, vision_feature_select_strategy="full")
    prepared = anchor_ot.adapters.prepare(model, dict(inputs, **opts), KeepTopScores(retention=0.5))
    assert {k: seen[0].get(k) for k in opts} == opts
    with torch.no_grad():
        own = real(pixel_values_videos=inputs["pixel_values_videos"], **opts).pooler_output
        last = real(pixel_values_videos=inputs["pixel_values_videos"]).pooler_output
    tokens = prepared.encoded[0].video.tokens
    torch.testing.assert_close(tokens.reshape(-1, tokens.shape[-1]), own[0, :-1], atol=0, rtol=0)
    assert not torch.allclose(own, last)  # the layer matters
    assert prepared.encoded[0].score_seconds > 0
    monkeypatch.undo()

    half = llava_model().to(torch.bfloat16)
    prepared = anchor_ot.adapters.prepare(half, inputs, KeepTopScores(retention=0.5))
    with torch.no_grad():
        own = half.model.get_video_features(
            pixel_values_videos=inputs["pixel_values_videos"].to(torch.bfloat16)).pooler_output
    tokens = prepared.encoded[0].video.tokens
    assert tokens.dtype == torch.bfloat16
    torch.testing.assert_close(tokens.reshape(-1, tokens.shape[-1]), own[0, :-1], atol=0, rtol=0)


def test_llava_errors_and_timing_without_scores():
    """Bugs caught: a pixel-shape error that loses its message or names the wrong shape; scores='none'
    still reading score dicts (KeyError) or reporting hook time."""
    model = llava_model()
    inputs = llava_inputs(model, 1)
    four_d = dict(inputs, pixel_values_videos=inputs["pixel_values_videos"][0])
    with pytest.raises(ValueError, match=r"\(batch, frames, channels, height, width\), got \(4, 3, 84, 84\)$"):
        anchor_ot.adapters.prepare(model, four_d, KeepTopScores(retention=0.5))
    prepared = anchor_ot.adapters.prepare(model, inputs, KeepEveryKth(retention=0.5), scores="none")
    video = prepared.encoded[0].video
    assert video.global_scores is None and video.local_scores is None
    assert prepared.encoded[0].score_seconds == 0.0


@pytest.mark.parametrize("build,make_inputs", [(llava_model, llava_inputs), (qwen25_model, qwen_inputs)],
                         ids=["llava_onevision", "qwen2_5_vl"])
def test_encode_with_return_dict_off_in_the_config(build, make_inputs):
    """A model whose config has ``return_dict=False`` returns tuples unless asked: the adapters ask for
    a ModelOutput, so the encoded tokens are the same as with the default config.

    Bug caught: relying on the config's default (``return_dict`` dropped or ``None``), which makes
    ``get_video_features`` return a tuple and the adapter fail on ``.pooler_output``. Not Qwen3-VL: in
    transformers 5.24 its own ``generate`` fails with ``return_dict=False`` (the nested
    ``can_return_tuple`` of ``get_video_features`` / ``get_image_features`` drops the argument)."""
    model = build()
    inputs = make_inputs(model, 1)
    want = anchor_ot.adapters.prepare(model, inputs, KeepTopScores(retention=0.5))
    model.config.return_dict = False
    got = anchor_ot.adapters.prepare(model, inputs, KeepTopScores(retention=0.5))
    for w, g in zip(want.encoded, got.encoded):
        assert torch.equal(w.video.tokens, g.video.tokens)
        assert torch.equal(w.video.global_scores, g.video.global_scores)


# -- Qwen: a batch of videos of different sizes, the default global layer, no videos ------------------


def _qwen_rows_of_sizes(model, grids, seconds=None):
    """One prompt row per video, the videos of different (frames, h, w) patch grids: the rows left-padded
    to one length (processor layout), patches concatenated in batch order, one ``video_grid_thw`` row
    each. Also returns each row on its own (batch of one)."""
    from test_adapters import PAD

    rows = [qwen_inputs(model, 1, seed=i, grid=g) for i, g in enumerate(grids)]
    if seconds is not None:
        for r, s in zip(rows, seconds):
            r["second_per_grid_ts"] = torch.tensor([s])
    L = max(r["input_ids"].shape[1] for r in rows)

    def left_pad(t, value):
        return torch.cat([torch.full((1, L - t.shape[1]), value, dtype=t.dtype), t], dim=1)

    batch = dict(input_ids=torch.cat([left_pad(r["input_ids"], PAD) for r in rows]),
                 attention_mask=torch.cat([left_pad(r["attention_mask"], 0) for r in rows]),
                 mm_token_type_ids=torch.cat([left_pad(r["mm_token_type_ids"], 0) for r in rows]),
                 pixel_values_videos=torch.cat([r["pixel_values_videos"] for r in rows]),
                 video_grid_thw=torch.cat([r["video_grid_thw"] for r in rows]))
    if seconds is not None:
        batch["second_per_grid_ts"] = torch.tensor(seconds)
    return batch, rows


@pytest.mark.parametrize("build", [qwen25_model, qwen3_model], ids=["qwen2_5_vl", "qwen3_vl"])
def test_qwen_batch_of_videos_of_different_sizes(build):
    """Three videos of different, non-square grids in one batch (48, 24 and 16 LLM tokens; Qwen2.5-VL
    with a different ``second_per_grid_ts`` each): every video's tokens, scores and deepstack levels
    equal those of the video encoded alone (the ViT attends within windows / temporal patches, never
    across videos); the full prompt's positions are ``get_rope_index`` with the mask and the seconds;
    ``rope_deltas`` moves each reduced row's end to its full row's end; the text row of the reduced
    prompt is 0 at its pads (as transformers' ``_prepare_position_ids_for_generation``); a bool or float
    mask gives the same positions as the processor's int mask.

    Bugs caught: a score offset set to the last video's count instead of advanced by it (the third video
    reads the second's scores), tokens per frame from one side of the grid squared, the seconds per grid
    or the mask left out of the positions (padded rows shift), lengths or maxima over the whole batch in
    ``rope_deltas``, pads numbered 1, and positions turned float by a float mask."""
    model = build()
    qwen3 = build is qwen3_model
    grids = [(4, 12, 8), (2, 8, 12), (4, 4, 8)]
    seconds = None if qwen3 else [1.0, 2.0, 0.5]
    batch, rows = _qwen_rows_of_sizes(model, grids, seconds)
    reducer = KeepTopScores(retention=0.5)
    prepared = anchor_ot.adapters.prepare(model, batch, reducer)
    deltas = model.model.rope_deltas.clone()  # before the single-video calls below set their own
    assert [e.video.tokens.shape[:2] for e in prepared.encoded] == [(2, 24), (1, 24), (2, 8)]
    for e, row in zip(prepared.encoded, rows):
        alone = anchor_ot.adapters.prepare(model, row, reducer).encoded[0]
        torch.testing.assert_close(e.video.tokens, alone.video.tokens, atol=1e-5, rtol=1e-5)
        for name in ("global", "local"):
            torch.testing.assert_close(getattr(e.video, f"{name}_scores"), getattr(alone.video, f"{name}_scores"),
                                       atol=1e-6, rtol=1e-4)
        assert len(e.side_features) == len(alone.side_features) == (2 if qwen3 else 0)
        for got, want in zip(e.side_features, alone.side_features):
            torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
        # the hooks' time of the whole call, shared by the videos of the batch
        assert e.score_seconds > 0 and e.score_seconds == prepared.encoded[0].score_seconds

    ids, mask = batch["input_ids"], batch["attention_mask"]
    assert (mask == 0).any()
    extra = {} if qwen3 else {"second_per_grid_ts": batch["second_per_grid_ts"]}
    want, want_delta = model.model.get_rope_index(ids, mm_token_type_ids=batch["mm_token_type_ids"],
                                                  attention_mask=mask, video_grid_thw=batch["video_grid_thw"], **extra)
    assert torch.equal(prepared.full_position_ids, want)
    if not qwen3:  # the seconds matter: at 1 s per grid for every video the positions differ
        same, _ = model.model.get_rope_index(ids, mm_token_type_ids=batch["mm_token_type_ids"], attention_mask=mask,
                                             video_grid_thw=batch["video_grid_thw"])
        assert not torch.equal(same, want)
    new_mask = prepared.kwargs["attention_mask"]
    assert (new_mask == 0).any()
    assert deltas.shape == (3, 1)
    assert torch.equal(deltas[:, 0] + new_mask.sum(1), want_delta[:, 0] + mask.sum(1))
    assert len(set(want.amax(dim=(0, 2)).tolist())) > 1  # rows end at different positions
    pos = prepared.kwargs["position_ids"]
    assert pos.dtype == torch.long
    assert (pos[0][new_mask == 0] == 0).all()
    for b in range(3):
        assert torch.equal(pos[0, b][new_mask[b].bool()], torch.arange(int(new_mask[b].sum())))
    for other in (mask.bool(), mask.float()):
        again = anchor_ot.adapters.prepare(model, dict(batch, attention_mask=other), reducer, encoded=prepared.encoded)
        assert again.kwargs["position_ids"].dtype == torch.long
        assert torch.equal(again.kwargs["position_ids"], pos)


def test_qwen25_adapter_default_global_layer_reads_the_vision_config():
    """Qwen2.5-VL's default global scores come from the last of ``fullatt_block_indexes`` (block 3 of the
    tiny ViT), read from the model's vision config.

    Bug caught: the vision config not handed to the family (its fallback, -2, is block 2, windowed)."""
    model = qwen25_model()
    inputs = qwen_inputs(model, 1)
    reducer = KeepTopScores(retention=0.5)
    default = anchor_ot.adapters.prepare(model, inputs, reducer).encoded[0].video.global_scores
    last_full = anchor_ot.adapters.prepare(model, inputs, reducer, global_layer=3).encoded[0].video.global_scores
    fallback = anchor_ot.adapters.prepare(model, inputs, reducer, global_layer=-2).encoded[0].video.global_scores
    assert torch.equal(default, last_full)
    assert not torch.allclose(default, fallback)


def test_qwen3_encoder_output_of_no_videos():
    """``encoder_output`` of an empty batch of videos: no pooled items and no deepstack levels.

    Bugs caught: reading the first video's levels when there is none (IndexError), or one empty level."""
    from anchor_ot.adapters.qwen_vl import encoder_output

    out = encoder_output(qwen3_model(), [], [])
    assert out.pooler_output == () and out.deepstack_features == []


# -- adapters/base: input checks, registry, bookkeeping helpers, ScoreHooks ----------------------------


def test_input_and_choice_errors_say_what_is_expected():
    """Bugs caught: the input_ids check joined with ``and`` (a 1-D tensor passes, a list fails with
    AttributeError), messages lost or changed, the choice error naming another parameter."""
    model = llava_model()
    inputs = llava_inputs(model, 1)
    msg = r"^inputs must hold input_ids of shape \(batch, length\); pass the processor's output \(return_tensors='pt'\)$"
    for bad in (inputs["input_ids"][0], inputs["input_ids"].tolist()):
        with pytest.raises(ValueError, match=msg):
            anchor_ot.adapters.prepare(model, dict(inputs, input_ids=bad), KeepTopScores(retention=0.5))
    with pytest.raises(ValueError, match=r"^scores must be one of 'attention', 'none'; got 'magic'$"):
        anchor_ot.adapters.prepare(model, inputs, KeepTopScores(retention=0.5), scores="magic")


def test_family_without_adapter_and_register_adapter():
    """A registered family whose adapter is missing: TypeError naming the class and the family;
    ``register_adapter`` checks the family name and stores the module itself.

    Bugs caught: the message losing the class or family; registration looking up another name (every
    registration fails) or storing something else than the module. (The adapters register on import,
    before any mutant is active, so only a direct call reaches this code.)"""
    import sys

    from anchor_ot import families
    from anchor_ot.adapters import base
    from anchor_ot.families.base import Family

    class NoAdapterVLM(torch.nn.Module):
        pass

    families.register(Family(name="test-no-adapter", architectures=("NoAdapterVLM",), default_local_layer=0,
                             default_global_layer=lambda vision_config: -1))
    try:
        with pytest.raises(TypeError, match=r"^NoAdapterVLM \(test-no-adapter\) has no transformers adapter$"):
            anchor_ot.adapters.prepare(NoAdapterVLM(), {}, KeepTopScores(retention=0.5))
        me = sys.modules[__name__]
        base.register_adapter("test-no-adapter", me)
        assert base._adapter_for(NoAdapterVLM()) is me
        with pytest.raises(ValueError, match="unknown model family 'test-missing'"):
            base.register_adapter("test-missing", me)
        assert "test-missing" not in base._ADAPTERS
    finally:
        families._FAMILIES.pop("test-no-adapter", None)
        base._ADAPTERS.pop("test-no-adapter", None)


def test_keep_mask_and_compact_rows_edge_cases():
    """No videos: every token is kept when the prompt has no placeholder, and a prompt with one names
    the counts; an empty batch compacts to (0, 0); the rebuilt ids and mask keep the caller's dtypes.

    Bugs caught: ``torch.cat`` of no flags, flags of another dtype or size for no videos, the message's
    advice lost; the empty batch's width (max of nothing, or 1); new ids or mask in the default dtypes
    (int64 ids, a float mask)."""
    from anchor_ot.adapters.base import compact_rows, keep_mask

    assert keep_mask(torch.tensor([[5, 6, 7]]), 9, []).tolist() == [[True, True, True]]
    with pytest.raises(ValueError, match=r"^the prompt holds 1 video placeholder tokens but the video inputs need 0; "
                                         r"pass the processor's output unchanged \(input_ids and pixel_values_videos "
                                         r"of the same call\)$"):
        keep_mask(torch.tensor([[5, 9, 7]]), 9, [])
    empty = torch.zeros(0, 4, dtype=torch.long)
    new, mask, src = compact_rows(empty, empty, empty.bool(), 0)
    assert new.shape == mask.shape == src.shape == (0, 0)
    ids = torch.tensor([[0, 5, 6, 7], [1, 2, 3, 4]], dtype=torch.int32)
    keep = torch.tensor([[True, True, False, True], [True, False, True, True]])
    for m in (torch.tensor([[0, 1, 1, 1], [1, 1, 1, 1]]), torch.tensor([[0, 1, 1, 1], [1, 1, 1, 1]]).bool()):
        new, mask, src = compact_rows(ids, m, keep, 9)
        assert new.dtype == torch.int32 and mask.dtype == m.dtype and src.dtype == torch.long
        assert new.tolist() == [[9, 5, 7], [1, 3, 4]] and mask.long().tolist() == [[0, 1, 1], [1, 1, 1]]


def test_prepare_without_attention_mask_is_all_ones():
    """No ``attention_mask`` in the inputs: the same reduced prompt and positions as with a mask of ones.

    Bug caught: the default mask not built (``None`` reaching ``compact_rows``)."""
    model = qwen25_model()
    inputs = qwen_inputs(model, 1)
    assert bool(inputs["attention_mask"].all())
    reducer = KeepTopScores(retention=0.5)
    want = anchor_ot.adapters.prepare(model, inputs, reducer)
    got = anchor_ot.adapters.prepare(model, {k: v for k, v in inputs.items() if k != "attention_mask"}, reducer,
                                     encoded=want.encoded)
    for key in ("input_ids", "attention_mask", "position_ids"):
        assert torch.equal(got.kwargs[key], want.kwargs[key]), key
    assert torch.equal(got.full_position_ids, want.full_position_ids)


def test_generate_forwards_the_local_layer():
    """``generate(..., local_layer=0)`` scores with layer 0, like ``prepare(..., local_layer=0)``, not the
    default (LLaVA-OV's tiny tower: min(5, 3 - 1) = layer 2).

    Bug caught: ``generate`` not passing ``local_layer`` on (the default layer is used silently)."""
    seen = []

    class RecordingTop(KeepTopScores):
        def reduce(self, video, num_kept):
            seen.append(video.local_scores.clone())
            return super().reduce(video, num_kept)

    model = llava_model()
    inputs = llava_inputs(model, 1)
    anchor_ot.generate(model, inputs, RecordingTop(retention=0.5), local_layer=0, max_new_tokens=1, do_sample=False)
    layer0 = anchor_ot.adapters.prepare(model, inputs, KeepTopScores(retention=0.5), local_layer=0)
    default = anchor_ot.adapters.prepare(model, inputs, KeepTopScores(retention=0.5))
    assert len(seen) == 1
    assert torch.equal(seen[0], layer0.encoded[0].video.local_scores)
    assert not torch.allclose(seen[0], default.encoded[0].video.local_scores)


def test_score_hooks_plain_compute_missing_projections_time_and_silent_layer():
    """``ScoreHooks`` with a compute function that names no projections, or names ones the module does
    not have (or that are not modules), records one score per call; ``seconds`` is the sum of the time
    spent in every hook call (at least the compute's own time, at most the whole block's); a layer
    that never ran is named in the error.

    Bugs caught: iterating a missing ``projections`` attribute (None, AttributeError), ``getattr``
    without a default on the module, ``seconds`` keeping only the last call or adding the clock
    reading, the error's message lost."""
    import time

    from anchor_ot.adapters.base import ScoreHooks

    spent = []

    def plain(module, args, kwargs):
        t0 = time.perf_counter()
        out = torch.softmax(args[0] @ module.weight.T, dim=-1).mean(0)
        spent.append(time.perf_counter() - t0)
        return out

    def named(module, args, kwargs):
        return plain(module, args, kwargs)

    named.projections = ("missing", "weight")  # absent, and a Parameter (not a module): both recomputed
    lin, other = torch.nn.Linear(4, 4), torch.nn.Linear(4, 4)
    x = torch.randn(3, 4, generator=torch.Generator().manual_seed(0))
    want = torch.softmax(x @ lin.weight.T, dim=-1).mean(0)
    for compute in (plain, named):
        spent.clear()
        t0 = time.perf_counter()
        with ScoreHooks({"global": lin, "local": other}, compute) as hooks:
            with torch.no_grad():
                lin(x)
                lin(x)
        outer = time.perf_counter() - t0
        assert len(spent) == 2
        assert sum(spent) - 1e-9 <= hooks.seconds <= outer + 1e-9
        torch.testing.assert_close(hooks.result("global"), torch.cat([want, want]))
        with pytest.raises(RuntimeError, match=r"^the local score hook never ran: the chosen layer was not called "
                                               r"by the encoder$"):
            hooks.result("local")
