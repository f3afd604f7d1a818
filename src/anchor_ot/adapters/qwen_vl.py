"""Qwen2.5-VL and Qwen3-VL for :func:`anchor_ot.generate`.

Video path in transformers 5.x (``get_video_features`` of the base model): the ViT reads
the processor's patches (2 frames x 14 x 14 px or 16 x 16 px each), the patch merger turns
every 2 x 2 block into one LLM token, and the tokens come out in (t, h/2, w/2) raster
order, one ``<|video_pad|>`` placeholder each. Frames for the reducer are temporal
patches, the grid is (h/2, w/2). Qwen3-VL splits the run per temporal patch with a
timestamp and vision start/end tokens between them; the keep map works on the
placeholders wherever they sit, so a frame whose tokens are all dropped leaves its
timestamp and start/end tokens in place.

Positions: M-RoPE (t, h, w) from ``get_rope_index`` of the *full* prompt, gathered at
the kept tokens (never renumbered), passed as ``position_ids`` of shape (4, B, L') whose
first row is the 1-D text position of the reduced prompt (what transformers 5.x builds
itself in ``_prepare_position_ids_for_generation``). ``generate`` then advances every row
by one per new token (``_update_model_kwargs_for_generation``), which continues from the
last prompt position exactly as the unreduced prompt would.

Scores: the received attention of one ViT block, recomputed by a hook from the block's
own q/k projection and vision rotary embedding, over the sequences the block attends
within (``cu_seqlens``: windows in Qwen2.5-VL's windowed blocks, whole temporal patches in
its full-attention blocks and in every Qwen3-VL block). Patch scores are averaged over
each 2 x 2 merge block; Qwen2.5-VL's window permutation is undone.

Qwen3-VL deepstack features (added to early LLM layers at visual positions) get the same
keep/merge map as the tokens (:func:`anchor_ot.adapters.base.reduce_side_features`).
"""

from __future__ import annotations

import sys

import torch
from transformers.modeling_outputs import BaseModelOutputWithPooling

from anchor_ot import families
from anchor_ot.adapters.base import (  # noqa: F401  (pad/video token ids: the family interface)
    EncodedVideo,
    ScoreHooks,
    pad_token_id,
    received_attention_packed,
    reduce_side_features,
    register_adapter,
    video_token_id,
)
from anchor_ot.families import qwen_vl as fam
from anchor_ot.types import VideoTokens

CLASS_NAMES = [a for f in (fam.QWEN2_5_VL, fam.QWEN3_VL) for a in f.architectures]
CONSUMED_KEYS = {"input_ids", "attention_mask", "pixel_values_videos", "video_grid_thw", "second_per_grid_ts",
                 "mm_token_type_ids", "position_ids"}

DEFAULT_LOCAL_LAYER = fam.QWEN3_VL.default_local_layer


def _family(model) -> str:
    return families.for_class(type(model)).name


def _vit_received(module, args, kwargs) -> torch.Tensor:
    """Received attention of one Qwen ViT attention module, (S,) in the ViT's token order."""
    x = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]
    cu = kwargs["cu_seqlens"] if "cu_seqlens" in kwargs else args[1]
    cos, sin = kwargs["position_embeddings"]
    S = x.shape[0]
    done = (getattr(module, "_anchor_ot_projections", None) or {}).get("qkv")  # the layer's own (ScoreHooks)
    qkv = done if done is not None and done.shape[:-1] == x.shape[:-1] else module.qkv(x)
    q, k, _ = qkv.reshape(S, 3, module.num_heads, -1).permute(1, 0, 2, 3).unbind(0)
    rotary = sys.modules[type(module).__module__].apply_rotary_pos_emb_vision
    q, k = rotary(q, k, cos, sin)
    return received_attention_packed(q, k, module.scaling, cu)


_vit_received.projections = ("qkv",)  # reused from the layer's forward by ScoreHooks


def encode(model, inputs: dict, *, scores: str, local_layer: int | None, global_layer: int | None) -> list[EncodedVideo]:
    """Run the model's video path once, with score hooks; split per video.

    Returns one :class:`EncodedVideo` per video: tokens (t, (h/2) * (w/2), d) on the
    merged grid, merge-block-averaged scores, and (Qwen3-VL) the deepstack levels as
    side features, each (t * h/2 * w/2, d).
    """
    grid_thw = inputs.get("video_grid_thw")
    if grid_thw is None:
        raise ValueError("Qwen video inputs need video_grid_thw (the processor returns it with pixel_values_videos)")
    base = model.model
    visual = base.visual
    m = int(model.config.vision_config.spatial_merge_size)
    pixels = inputs["pixel_values_videos"]
    expected = int(grid_thw.prod(-1).sum())
    if pixels.shape[0] != expected:
        raise ValueError(f"pixel_values_videos has {pixels.shape[0]} patches but video_grid_thw needs {expected}")

    blocks = visual.blocks
    modules = {}
    if scores == "attention":
        idx = families.get(_family(model)).score_layers(model.config.vision_config, len(blocks),
                                                        local_layer, global_layer)
        modules = {name: blocks[i].attn for name, i in idx.items()}
    with ScoreHooks(modules, _vit_received) as hooks:
        out = base.get_video_features(pixels, grid_thw, return_dict=True)
    feats = out.pooler_output  # tuple of (t * h/2 * w/2, d) per video
    deepstack = getattr(out, "deepstack_features", None) or []

    window_index = None
    if modules and _family(model) == "qwen2_5_vl":
        from transformers.vision_utils import get_vision_window_index

        window_index, _ = get_vision_window_index(grid_thw, spatial_merge_size=m, window_size=visual.window_size,
                                                  patch_size=visual.patch_size)
    merged_scores = {name: fam.merge_scores(hooks.result(name), m, window_index) for name in modules}

    videos = []
    offset = 0
    for v, thw in enumerate(grid_thw.tolist()):
        t, grid = fam.llm_grid(thw, m)
        n = grid[0] * grid[1]
        count = t * n
        tok = feats[v].reshape(t, n, -1)
        sc = {k: s[offset:offset + count].reshape(t, n) for k, s in merged_scores.items()}
        videos.append(EncodedVideo(
            video=VideoTokens(tok, grid, global_scores=sc.get("global"), local_scores=sc.get("local")),
            side_features=[level[v] for level in deepstack],
            score_seconds=hooks.seconds,
        ))
        offset += count
    return videos


def encoder_output(model, encoded, reduced):
    """Reduced features in the form the Qwen base model reads from ``mm_encoder_outputs``."""
    pooled = tuple(r.tokens for r in reduced)
    if _family(model) == "qwen3_vl":
        cls = sys.modules[type(model.model).__module__].BaseModelOutputWithDeepstackFeatures
        levels = len(encoded[0].side_features) if encoded else 0
        deepstack = [tuple(reduce_side_features(r, e.side_features[i], e.video.tokens) for e, r in zip(encoded, reduced))
                     for i in range(levels)]
        return cls(pooler_output=pooled, deepstack_features=deepstack)
    return BaseModelOutputWithPooling(pooler_output=pooled)


def full_rope_index(model, inputs: dict, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``get_rope_index`` of the full prompt, as ``generate`` would compute it: (3, B, L), deltas (B, 1)."""
    ids = inputs["input_ids"]
    types = inputs.get("mm_token_type_ids")
    if types is None:  # what the processor returns: text 0, image 1, video 2
        types = torch.zeros_like(ids, dtype=torch.int32)
        types[ids == model.config.image_token_id] = 1
        types[ids == model.config.video_token_id] = 2
    kw = {k: inputs[k] for k in ("image_grid_thw", "video_grid_thw", "second_per_grid_ts") if inputs.get(k) is not None}
    return model.model.get_rope_index(ids, mm_token_type_ids=types, attention_mask=mask, **kw)


def position_ids(model, inputs, mask, keep, new_mask, source, kwargs):
    """Add ``position_ids`` (4, B, L') to ``kwargs``; return the full positions (3, B, L).

    Rows 1-3 are the full prompt's M-RoPE positions at the kept tokens; row 0 is the
    1-D text position of the reduced prompt. Also sets ``model.model.rope_deltas`` to the
    reduced prompt's offsets, so that a later cached forward without positions continues
    correctly.
    """
    full, _ = full_rope_index(model, inputs, mask)
    B = full.shape[1]
    gathered = torch.gather(full, 2, source[None].expand(3, B, -1).to(full.device))
    gathered = gathered * new_mask[None].to(gathered.dtype)
    text = (new_mask.long().cumsum(-1) - 1).masked_fill(new_mask == 0, 0)
    kwargs["position_ids"] = torch.cat([text[None].to(gathered), gathered], dim=0)
    lengths = new_mask.sum(dim=1)
    model.model.rope_deltas = (gathered.amax(dim=(0, 2)) + 1 - lengths)[:, None]
    return full


for _f in (fam.QWEN2_5_VL, fam.QWEN3_VL):
    register_adapter(_f.name, sys.modules[__name__])
