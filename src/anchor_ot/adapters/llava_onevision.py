"""LLaVA-OneVision (and LLaVA-Video checkpoints in that class) for :func:`anchor_ot.generate`.

Video path in transformers 5.x (``LlavaOnevisionModel.get_video_features``): SigLIP on
every frame -> hidden state of ``vision_feature_layer`` -> projector -> bilinear
interpolation of the 27 x 27 grid to ceil(27/2) = 14 x 14 -> the frames' tokens in
order, then one ``image_newline`` row per video. The prompt holds F * 196 + 1 video
placeholders. We reduce the F x 196 grid tokens and always keep the newline row, so the
run becomes K + 1. Positions are 1-D and are renumbered by the shorter prompt, as in
every LLaVA token-pruning method (the newline keeps its place at the end of the run).
"""

from __future__ import annotations

import sys

import torch
from transformers.modeling_outputs import BaseModelOutputWithPooling

from anchor_ot.adapters.base import (  # noqa: F401  (pad/video token ids: the family interface)
    EncodedVideo, ScoreHooks, pad_token_id, received_attention, register_adapter, video_token_id)
from anchor_ot.families import llava_onevision as family
from anchor_ot.types import VideoTokens

CLASS_NAMES = list(family.FAMILY.architectures)
# inputs consumed by the video path (everything else, e.g. images, goes to generate untouched)
CONSUMED_KEYS = {"input_ids", "attention_mask", "pixel_values_videos", "image_sizes_videos", "position_ids"}

DEFAULT_LOCAL_LAYER = family.FAMILY.default_local_layer
DEFAULT_GLOBAL_LAYER = -2


def _layers(model):
    tower = model.model.vision_tower
    tower = getattr(tower, "vision_model", tower)  # transformers 5.x: SiglipVisionModel holds the encoder itself
    return tower.encoder.layers


def _siglip_received(module, args, kwargs) -> torch.Tensor:
    """Received attention of one SigLIP attention module, (frames, tokens) float32.

    Called by :class:`ScoreHooks` after the module ran on ``hidden_states`` (frames, L, D), by
    keyword or as the first positional argument. Uses the layer's own q and k projections when
    the hooks captured them for this input (``module._anchor_ot_projections``, shapes checked);
    otherwise (a transformers version that does not call ``q_proj``/``k_proj`` as modules, or a
    capture of another input) projects them again, ``max(1, 2**25 // (H * L**2))`` frames at a
    time, so no second full (frames, L, D) copy of q and k is made. Either way the result is
    :func:`received_attention` of the frames: the mean over heads and queries of the softmax
    attention each token receives.
    """
    x = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]
    n, length, _ = x.shape
    shape = (n, length, module.num_heads, module.head_dim)
    done = getattr(module, "_anchor_ot_projections", None) or {}  # the layer's own q and k (ScoreHooks)
    q_out, k_out = done.get("q_proj"), done.get("k_proj")
    if (q_out is not None and k_out is not None and q_out.shape[:-1] == x.shape[:-1]
            and k_out.shape[:-1] == x.shape[:-1]):
        return received_attention(q_out.view(shape).transpose(1, 2), k_out.view(shape).transpose(1, 2), module.scale)
    out = []
    # project a bounded number of frames at a time: never a second full (frames, L, D) copy of q and k
    step = max(1, (2**25) // max(1, module.num_heads * length * length))
    for s in range(0, n, step):
        xs = x[s:s + step]
        shape = (xs.shape[0], length, module.num_heads, module.head_dim)
        q = module.q_proj(xs).view(shape).transpose(1, 2)
        k = module.k_proj(xs).view(shape).transpose(1, 2)
        out.append(received_attention(q, k, module.scale))
    return torch.cat(out, dim=0)


_siglip_received.projections = ("q_proj", "k_proj")  # reused from the layer's forward by ScoreHooks


def encode(model, inputs: dict, *, scores: str, local_layer: int | None, global_layer: int | None) -> list[EncodedVideo]:
    """Run the model's video path once, with score hooks; split per video.

    Returns one :class:`EncodedVideo` per video: tokens (F, 196, d) on the pooled 14 x 14
    grid, scores pooled to the same grid with the same bilinear interpolation as the
    features, and the ``image_newline`` row as ``extra``.
    """
    pixels = inputs["pixel_values_videos"]
    if pixels.dim() != 5:
        raise ValueError(f"pixel_values_videos must be (batch, frames, channels, height, width), "
                         f"got {tuple(pixels.shape)}")
    base = model.model
    vcfg = model.config.vision_config
    pooled = family.llm_grid(vcfg)
    B, Fr = pixels.shape[:2]

    layers = _layers(model)
    modules = {}
    if scores == "attention":
        idx = family.FAMILY.score_layers(vcfg, len(layers), local_layer, global_layer)
        modules = {name: layers[i].self_attn for name, i in idx.items()}
    extra = {k: inputs[k] for k in ("vision_feature_layer", "vision_feature_select_strategy") if k in inputs}
    with ScoreHooks(modules, _siglip_received) as hooks:
        out = base.get_video_features(pixel_values_videos=pixels.to(base.vision_tower.dtype), return_dict=True,
                                      **extra)
    feats = out.pooler_output  # (B, F * 196 + 1, d)
    n = pooled[0] * pooled[1]
    if feats.shape[1] != Fr * n + 1:
        raise ValueError(f"unexpected video feature count {feats.shape[1]} for {Fr} frames of {pooled} tokens + 1; "
                         "only the 'full' feature strategy of LLaVA-OneVision is supported")
    tokens = feats[:, :-1].reshape(B, Fr, n, feats.shape[-1])
    newline = feats[:, -1:]

    pooled_scores = {name: family.pool_scores(hooks.result(name), vcfg).reshape(B, Fr, n) for name in modules}

    videos = []
    for b in range(B):
        videos.append(EncodedVideo(
            video=VideoTokens(tokens[b], pooled,
                              global_scores=pooled_scores["global"][b] if pooled_scores else None,
                              local_scores=pooled_scores["local"][b] if pooled_scores else None),
            extra=newline[b],
            score_seconds=hooks.seconds,
        ))
    return videos


def encoder_output(model, encoded, reduced) -> BaseModelOutputWithPooling:
    """Reduced features in the form ``LlavaOnevisionModel.forward`` reads from ``mm_encoder_outputs``.

    ``pooler_output`` is (V, K + 1, d), one item per video as ``get_video_features`` returns it
    (every video of a batch has the same frame count, so the same K). The model flattens it over
    its first two axes; ``generate`` (beam search, ``num_return_sequences``) repeats it per item
    to follow the repeated prompt rows, which needs one item per video: a single
    (1, sum(K + 1), d) item would be repeated as a group and give rows the wrong video.
    """
    rows = [torch.cat([r.tokens, e.extra.to(r.tokens.dtype)], dim=0) for e, r in zip(encoded, reduced)]
    return BaseModelOutputWithPooling(pooler_output=torch.stack(rows, dim=0))


def position_ids(model, inputs, mask, keep, new_mask, source, kwargs):
    """1-D positions: left to ``generate`` (renumbered from the reduced attention mask)."""
    return None


register_adapter(family.FAMILY.name, sys.modules[__name__])
