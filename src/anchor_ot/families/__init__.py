"""Model families: what every engine needs to know about a video LLM, in one place.

A family module (:mod:`.llava_onevision`, :mod:`.qwen_vl`) says, independently of the
engine that runs the model (transformers in :mod:`anchor_ot.adapters`, vLLM in
:mod:`anchor_ot.integrations.vllm`):

* which vision-encoder layers give the ``local`` / ``global`` scores by default;
* the grid the language model sees and how patch scores are pooled onto it;
* extra placeholder tokens that are always kept (LLaVA-OneVision's newline row);
* how many placeholders a reduced video occupies (``reducer.num_kept(frames, grid)`` + extra);
* Qwen: how M-RoPE positions and deepstack features follow the keep/merge map.

Families add themselves to this registry when imported; engines look them up by name,
by Hugging Face class name or by architecture name (``config.architectures``), so no
engine module imports a family module back to dispatch on it.

>>> from anchor_ot import families
>>> families.for_architecture("Qwen3VLForConditionalGeneration").name
'qwen3_vl'
"""

from __future__ import annotations

from anchor_ot.families.base import Family

__all__ = ["Family", "register", "available", "get", "for_architecture", "for_class"]

_FAMILIES: dict[str, Family] = {}


def register(family: Family) -> Family:
    """Add ``family`` to the registry (idempotent for the same object)."""
    if family.name in _FAMILIES and _FAMILIES[family.name] is not family:
        raise ValueError(f"model family {family.name!r} is already registered")
    _FAMILIES[family.name] = family
    return family


def available() -> list[str]:
    """Names of the registered families, sorted."""
    return sorted(_FAMILIES)


def get(name: str) -> Family:
    """The family registered as ``name``; ``ValueError`` listing the known ones otherwise."""
    if name not in _FAMILIES:
        raise ValueError(f"unknown model family {name!r}; available: {', '.join(available())}")
    return _FAMILIES[name]


def supported_architectures() -> list[str]:
    """Every architecture (``*ForConditionalGeneration`` class name) some family handles."""
    return [a for f in _FAMILIES.values() for a in f.architectures]


def for_architecture(architecture: str) -> Family:
    """The family of a ``config.architectures`` entry, or ``TypeError`` naming the supported ones."""
    for family in _FAMILIES.values():
        if architecture in family.architectures:
            return family
    raise TypeError(f"{architecture} is not supported; anchor-ot works with "
                    f"{', '.join(supported_architectures())}")


def for_class(cls: type) -> Family:
    """The family of a model class or any of its bases (matched by class name)."""
    for klass in cls.__mro__:
        for family in _FAMILIES.values():
            if klass.__name__ in family.architectures:
                return family
    raise TypeError(f"{cls.__name__} is not supported; anchor-ot works with "
                    f"{', '.join(supported_architectures())} (load the model with its *ForConditionalGeneration class)")


# Family modules register themselves on import.
from anchor_ot.families import llava_onevision  # noqa: E402,F401
from anchor_ot.families import qwen_vl  # noqa: E402,F401
