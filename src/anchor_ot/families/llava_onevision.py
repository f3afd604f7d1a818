"""LLaVA-OneVision (and LLaVA-Video checkpoints in that class), engine-independent facts.

Video path (transformers 5.x ``LlavaOnevisionModel.get_video_features``, vLLM 0.32
``LlavaOnevisionForConditionalGeneration._video_pixels_to_features``): SigLIP on every
frame (27 x 27 patches at 384 px, no [CLS]) -> projector -> bilinear interpolation of the
grid to ceil(27/2) = 14 x 14 -> the frames' tokens in order, then one ``image_newline``
row per video. A video occupies F * 196 + 1 placeholders; reduced, K + 1 (the newline is
always kept, at the end of the run). Positions are 1-D: they follow the shorter prompt.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from anchor_ot import families
from anchor_ot.families.base import Family

__all__ = ["FAMILY", "patch_side", "llm_grid", "pool_scores"]

FAMILY = families.register(Family(
    name="llava_onevision",
    architectures=("LlavaOnevisionForConditionalGeneration",),
    default_local_layer=5,  # as the AOT authors' code
    default_global_layer=lambda vision_config: -2,  # the layer the features come from
    extra_tokens=1,  # image_newline
))


def patch_side(vision_config) -> int:
    """Patches per side of one frame (27 for SigLIP at 384 px, patch 14)."""
    return int(vision_config.image_size) // int(vision_config.patch_size)


def llm_grid(vision_config, stride: int = 2) -> tuple[int, int]:
    """Grid the LLM sees per frame after the 2 x 2 bilinear pooling: (ceil(27/2),) * 2 = (14, 14)."""
    side = math.ceil(patch_side(vision_config) / stride)
    return (side, side)


def pool_scores(scores: torch.Tensor, vision_config) -> torch.Tensor:
    """Pool per-patch scores onto the LLM grid as the features are pooled.

    Parameters
    ----------
    scores : torch.Tensor, shape (frames, side * side) or (frames, side * side + 1)
        One score per SigLIP patch (a leading [CLS]-style token, if any, is dropped as
        the features drop it).

    Returns
    -------
    torch.Tensor, shape (frames, h * w), float32
        Bilinear interpolation to :func:`llm_grid` (the same call the models use on the
        features).
    """
    side = patch_side(vision_config)
    if scores.shape[1] == side * side + 1:
        scores = scores[:, 1:]
    if scores.shape[1] != side * side:
        raise ValueError(f"expected {side * side} patch scores per frame, got {scores.shape[1]}")
    grid = llm_grid(vision_config)
    out = F.interpolate(scores.float().reshape(-1, 1, side, side), size=grid, mode="bilinear")
    return out.reshape(scores.shape[0], grid[0] * grid[1])
