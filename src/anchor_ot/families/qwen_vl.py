"""Qwen2.5-VL and Qwen3-VL, engine-independent facts.

Video path: the ViT reads patches of 2 frames x 14 x 14 px (Qwen2.5-VL) or 16 x 16 px
(Qwen3-VL); the patch merger turns every ``m x m`` block (m = ``spatial_merge_size`` = 2)
into one LLM token. Tokens come out in (t, h/m, w/m) raster order. Frames for the
reducer are temporal patches, the grid is (h/m, w/m).

Scores: the received attention of one ViT block over the sequences it attends within,
averaged over each merge block; Qwen2.5-VL's ViT works in a window-permuted order that
:func:`merge_scores` undoes. Positions: M-RoPE (t, h, w); kept tokens keep their own
positions, merged tokens their anchor's. Qwen3-VL deepstack levels follow the same
keep/merge map (:func:`anchor_ot.families.base.reduce_side_features`).
"""

from __future__ import annotations

import torch

from anchor_ot import families
from anchor_ot.families.base import Family

__all__ = ["QWEN2_5_VL", "QWEN3_VL", "llm_grid", "merge_scores"]


def _qwen25_global(vision_config) -> int:
    full = getattr(vision_config, "fullatt_block_indexes", None)
    if full:  # the last block that attends across the whole temporal patch
        return int(list(full)[-1])
    return -2


QWEN2_5_VL = families.register(Family(
    name="qwen2_5_vl",
    architectures=("Qwen2_5_VLForConditionalGeneration",),
    default_local_layer=5,  # a windowed block
    default_global_layer=_qwen25_global,
))

QWEN3_VL = families.register(Family(
    name="qwen3_vl",
    architectures=("Qwen3VLForConditionalGeneration",),
    default_local_layer=5,
    default_global_layer=lambda vision_config: -2,
    deepstack=True,
))


def llm_grid(grid_thw, merge: int) -> tuple[int, tuple[int, int]]:
    """``(frames, (h, w))`` the reducer sees for one video's ``video_grid_thw`` row (t, H, W) in patches."""
    t, h, w = (int(v) for v in grid_thw)
    if h % merge or w % merge:
        raise ValueError(f"video grid {(t, h, w)} is not divisible by the merge size {merge}")
    return t, (h // merge, w // merge)


def merge_scores(scores: torch.Tensor, merge: int, window_index: torch.Tensor | None = None) -> torch.Tensor:
    """Per-patch ViT scores -> one score per LLM token.

    Parameters
    ----------
    scores : torch.Tensor, shape (S,)
        Scores in the ViT's token order (S = patches of all videos of the call).
    merge : int
        ``spatial_merge_size``; the ViT keeps the ``merge ** 2`` patches of one LLM token
        adjacent.
    window_index : torch.LongTensor, shape (S / merge**2,), optional
        Qwen2.5-VL's window permutation of merged tokens (transformers'
        ``get_vision_window_index``); undone here.

    Returns
    -------
    torch.Tensor, shape (S / merge**2,)
        Mean over each merge block, in (t, h/m, w/m) raster order.
    """
    s = scores.reshape(-1, merge * merge).mean(dim=1)
    if window_index is not None:
        s = s[torch.argsort(window_index.to(s.device))]
    return s
