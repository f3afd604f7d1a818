"""Helpers for tests of integrations on tiny random models (no weights are downloaded).

Used by the test suites of the Hugging Face adapters, the vLLM plugin and the lmms-eval plugin,
and available to users who test their own integration the same way.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["fan_in_init"]


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
