"""Helpers for tests of integrations on tiny random models (no weights are downloaded).

Used by the test suites of the Hugging Face adapters, the vLLM plugin and the lmms-eval plugin,
and available to users who test their own integration the same way.
"""

from __future__ import annotations

import gc
import math

import torch
from torch import nn

from anchor_ot.types import VideoTokens

__all__ = ["close_llm", "fan_in_init", "structured_video"]


def fan_in_init(model: nn.Module, seed: int) -> nn.Module:
    """Re-initialize a tiny random model so that greedy decoding depends on its input.

    transformers initializes weights with std 0.02, which makes a tiny model's greedy output
    one repeated token whatever the prompt or the video; tests that compare engines or
    reductions by their output then cannot fail. Here every ``Linear``/``Conv2d``/``Conv3d``
    weight is drawn from N(0, 1 / fan_in) (fan_in = inputs of one output unit), biases from
    N(0, 0.02^2), embeddings and LLaVA's ``image_newline`` from N(0, 1).

    Parameters
    ----------
    model : torch.nn.Module
        Modified in place.
    seed : int
        Seed of the generator; the same seed gives the same weights.

    Returns
    -------
    torch.nn.Module
        ``model``, in eval mode.
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, (nn.Linear, nn.Conv2d, nn.Conv3d)):
                fan_in = mod.weight[0].numel()
                mod.weight.copy_(torch.randn(mod.weight.shape, generator=g) * fan_in ** -0.5)
                if mod.bias is not None:
                    mod.bias.copy_(torch.randn(mod.bias.shape, generator=g) * 0.02)
            elif isinstance(mod, nn.Embedding):
                mod.weight.copy_(torch.randn(mod.weight.shape, generator=g))
        for name, p in model.named_parameters():
            if name.endswith("image_newline"):
                p.copy_(torch.randn(p.shape, generator=g))
    return model.eval()


def structured_video(num_frames: int, grid: tuple[int, int], dim: int,
                     dtype: torch.dtype = torch.float32, scores: bool = True,
                     seed: int = 0) -> VideoTokens:
    """Tokens with structure, for tests and benchmarks of reducers on fixed-seed input.

    Six smooth spatial sine fields drifting over time, mixed into ``dim`` channels by a random
    matrix, plus Gaussian noise of std 0.3; random positive global and local scores. Unlike
    i.i.d. random tokens, neighbouring tokens and frames are similar, so clustering, merging and
    Sinkhorn do real work on it.

    Parameters
    ----------
    num_frames : int
        F.
    grid : tuple of int
        (h, w); N = h * w tokens per frame.
    dim : int
        d, channels per token.
    dtype : torch.dtype, default torch.float32
        dtype of the tokens (drawn in float32, cast once).
    scores : bool, default True
        Attach ``global_scores`` and ``local_scores`` (F, N) float32, in (1e-3, 1 + 1e-3).
    seed : int, default 0
        Seed of the generator; the same arguments give the same tensors.

    Returns
    -------
    VideoTokens
        ``tokens`` of shape (F, N, d) and dtype ``dtype``.
    """
    g = torch.Generator().manual_seed(seed)
    h, w = grid
    yy, xx = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    t = torch.linspace(0, 1, num_frames)[:, None, None]
    fields = []
    for _ in range(6):
        fy, fx, ft, ph = (torch.rand(4, generator=g) * torch.tensor([3.0, 3.0, 2.0, 6.28])).tolist()
        fields.append(torch.sin(2 * math.pi * (fy * yy + fx * xx + ft * t) + ph))  # (F, h, w)
    basis = torch.stack(fields, -1).reshape(num_frames, h * w, -1)  # (F, N, 6)
    mix = torch.randn(basis.shape[-1], dim, generator=g)
    tokens = basis @ mix + 0.3 * torch.randn(num_frames, h * w, dim, generator=g)
    global_scores = torch.rand(num_frames, h * w, generator=g) + 1e-3
    local_scores = torch.rand(num_frames, h * w, generator=g) + 1e-3
    if not scores:
        global_scores = local_scores = None
    return VideoTokens(tokens.to(dtype), grid, global_scores=global_scores, local_scores=local_scores)


def close_llm(llm) -> None:
    """Shut down a ``vllm.LLM``'s engine core now, so the next engine in the same process starts clean.

    vLLM's engine core runs in a background process or thread that is released only when the
    ``LLM`` is garbage collected; tests and benchmarks that build several engines one after the
    other call this between them. Errors of an engine already shut down are ignored.

    Parameters
    ----------
    llm : vllm.LLM
        The engine; do not use it afterwards.
    """
    try:
        llm.llm_engine.engine_core.shutdown()
    except Exception:  # already shut down, or an engine without a separate core
        pass
    del llm
    gc.collect()
