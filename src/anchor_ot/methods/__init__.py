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
    """``(name, one-line description, paper id)`` for every method."""
    return [(n, _REGISTRY[n].description, _REGISTRY[n].paper) for n in available()]


def get(name: str, **params) -> Reducer:
    """Build the reducer registered as ``name`` with ``params``.

    Raises
    ------
    ValueError
        If no method has that name (the message lists the available ones) or a
        parameter is unknown or invalid.
    """
    if name not in _REGISTRY:
        raise ValueError(f"unknown method {name!r}; available: {', '.join(available())}")
    cls = _REGISTRY[name]
    try:
        return cls(**params)
    except TypeError as exc:
        if "unexpected keyword" in str(exc):
            from dataclasses import fields

            known = ", ".join(f.name for f in fields(cls))
            raise ValueError(f"{name}: {exc}; known parameters: {known}") from None
        raise


# Method modules register themselves on import.
from anchor_ot.methods import aot  # noqa: E402,F401
from anchor_ot.methods import pool  # noqa: E402,F401
from anchor_ot.methods import random_keep  # noqa: E402,F401
from anchor_ot.methods import visionzip  # noqa: E402,F401
from anchor_ot.methods import divprune  # noqa: E402,F401
from anchor_ot.methods import dycoke  # noqa: E402,F401
