"""Token reduction methods behind one interface, and their registry.

>>> from anchor_ot import methods
>>> "aot" in methods.available()
True
>>> reducer = methods.get("aot", retention=0.25)
"""

from __future__ import annotations

from anchor_ot.methods.base import Reducer

__all__ = ["Reducer", "available", "get", "register", "describe"]

_REGISTRY: dict[str, type[Reducer]] = {}


def register(cls: type[Reducer]) -> type[Reducer]:
    """Class decorator: make ``cls`` reachable as ``get(cls.name)``."""
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise ValueError(f"method name {cls.name!r} is already registered")
    _REGISTRY[cls.name] = cls
    return cls


def available() -> list[str]:
    """Names of every registered method, sorted."""
    return sorted(_REGISTRY)


def describe() -> list[tuple[str, str, str]]:
    """``(name, one-line description, paper id)`` for every method and variant."""
    rows = []
    for n in available():
        cls = _REGISTRY[n]
        rows.append((n, cls.description, cls.paper))
        for v, params in cls.variants.items():
            shown = ", ".join(f"{k}={val!r}" for k, val in params.items())
            rows.append((f"{n}:{v}", f"  variant: {shown}", cls.paper))
    return rows


def get(name: str, **params) -> Reducer:
    """Build the reducer registered as ``name`` with ``params``.

    ``name`` may carry a variant, ``"method:variant"`` (e.g. ``"aot:no-merging"``,
    a row of the AOT paper's ablations); explicit ``params`` override the preset.

    Raises
    ------
    ValueError
        If no method or variant has that name (the message lists the available
        ones) or a parameter is unknown or invalid.
    """
    base, _, variant = name.partition(":")
    if base not in _REGISTRY:
        raise ValueError(f"unknown method {base!r}; available: {', '.join(available())}")
    cls = _REGISTRY[base]
    if variant:
        if variant not in cls.variants:
            known = ", ".join(cls.variants) or "none"
            raise ValueError(f"{base} has no variant {variant!r}; variants: {known}")
        params = {**cls.variants[variant], **params}
    try:
        return cls(**params)
    except TypeError as exc:
        if "unexpected keyword" in str(exc):
            from dataclasses import fields

            known = ", ".join(f.name for f in fields(cls))
            raise ValueError(f"{base}: {exc}; known parameters: {known}") from None
        raise


# Method modules register themselves on import.
from anchor_ot.methods import aot  # noqa: E402,F401
from anchor_ot.methods import pool  # noqa: E402,F401
from anchor_ot.methods import random_keep  # noqa: E402,F401
from anchor_ot.methods import visionzip  # noqa: E402,F401
from anchor_ot.methods import divprune  # noqa: E402,F401
from anchor_ot.methods import dycoke  # noqa: E402,F401
from anchor_ot.methods import fastvid  # noqa: E402,F401
from anchor_ot.methods import prunevid  # noqa: E402,F401
from anchor_ot.methods import ottvid  # noqa: E402,F401
from anchor_ot.methods import aot_dyn  # noqa: E402,F401
from anchor_ot.methods import evs  # noqa: E402,F401
from anchor_ot.methods import vidcom2  # noqa: E402,F401
from anchor_ot.methods import holitom  # noqa: E402,F401
from anchor_ot.methods import aot_plus  # noqa: E402,F401
