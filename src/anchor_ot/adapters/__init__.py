"""Hugging Face transformers adapters: reduce video tokens inside ``model.generate``.

>>> import anchor_ot
>>> from anchor_ot import methods
>>> out = anchor_ot.generate(model, inputs, methods.get("aot", retention=0.1), max_new_tokens=64)  # doctest: +SKIP

Supported classes: ``LlavaOnevisionForConditionalGeneration``,
``Qwen2_5_VLForConditionalGeneration``, ``Qwen3VLForConditionalGeneration``.
See ``docs/adapters.md`` for what is reduced where.
"""

from anchor_ot.adapters.base import Prepared, generate, prepare
# Adapter modules register themselves for their families on import.
from anchor_ot.adapters import llava_onevision, qwen_vl  # noqa: E402,F401

SUPPORTED_CLASSES = (
    "LlavaOnevisionForConditionalGeneration",
    "Qwen2_5_VLForConditionalGeneration",
    "Qwen3VLForConditionalGeneration",
)

__all__ = ["generate", "prepare", "Prepared", "SUPPORTED_CLASSES"]
