"""Received-attention score hooks for vLLM's vision encoders.

vLLM's encoders run fused attention kernels that return no weights, so, as in the
transformers adapters, a forward hook on one attention module recomputes that layer's
``softmax(q k^T * scale)`` from the module's own projections and keeps only the attention
each token receives (:func:`anchor_ot.adapters.base.received_attention`). Only the module
layout differs from transformers: vLLM fuses q/k/v into one ``qkv_proj`` (SigLIP) or
``qkv`` (Qwen ViTs) and, with tensor parallelism, holds a shard of the heads per rank
(we score with the local heads: exact at TP=1, a head subset otherwise).
"""

from __future__ import annotations

import torch

from anchor_ot.adapters.base import received_attention, received_attention_packed

__all__ = ["siglip_received", "qwen_vit_received"]

_CHUNK = 2**25  # probabilities held at once, as in the transformers hooks


def siglip_received(module, args, kwargs) -> torch.Tensor:
    """vLLM ``SiglipAttention`` -> (frames, tokens) received attention (fp32)."""
    x = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]
    n, length, _ = x.shape
    heads, hd = module.num_heads_per_partition, module.head_dim
    out = []
    step = max(1, _CHUNK // max(1, heads * length * length))
    for s in range(0, n, step):
        qkv, _ = module.qkv_proj(x[s:s + step])
        q, k, _ = qkv.chunk(3, dim=-1)
        shape = (q.shape[0], length, heads, hd)
        out.append(received_attention(q.reshape(shape).transpose(1, 2), k.reshape(shape).transpose(1, 2),
                                      module.scale))
    return torch.cat(out, dim=0)


def qwen_vit_received(module, args, kwargs) -> torch.Tensor:
    """vLLM ``Qwen2_5_VisionAttention`` (Qwen2.5-VL and Qwen3-VL ViTs) -> (S,) received attention (fp32).

    Recomputes q and k as the module's forward does (fused ``qkv`` projection on the
    (S, 1, D) input, then the module's own vision rotary embedding) and scores within
    the sequences of ``cu_seqlens`` (windows or whole temporal patches).
    """
    x = kwargs["x"] if "x" in kwargs else args[0]
    cu = kwargs["cu_seqlens"] if "cu_seqlens" in kwargs else args[1]
    cos, sin = kwargs.get("rotary_pos_emb_cos"), kwargs.get("rotary_pos_emb_sin")
    qkv, _ = module.qkv(x)
    seq = qkv.shape[0]
    heads, hd = module.num_attention_heads_per_partition, module.hidden_size_per_attention_head
    qkv = qkv.reshape(seq, 3, heads, hd)  # (s, b=1, 3 * heads * hd), the layout of the forward
    if cos is not None and sin is not None:
        qk = module.apply_rotary_emb(qkv[:, :2].permute(1, 0, 2, 3).contiguous(), cos, sin)
        q, k = qk.reshape(2, seq, heads, hd).unbind(0)
    else:
        q, k = qkv[:, 0], qkv[:, 1]
    return received_attention_packed(q, k, hd ** -0.5, cu)
