"""Small checks for user-facing parameters: clear messages, never ``assert``."""

from __future__ import annotations

import math
from collections.abc import Iterable

__all__ = ["check_retention", "check_number", "check_int", "check_choice"]


def check_retention(retention: object) -> float:
    """Return ``retention`` as a float in (0, 1] or raise.

    Raises
    ------
    TypeError
        If it is not a real number.
    ValueError
        If it is outside (0, 1] or not finite.
    """
    if isinstance(retention, bool) or not isinstance(retention, (int, float)):
        raise TypeError(f"retention must be a number in (0, 1], got {type(retention).__name__}")
    r = float(retention)
    if not math.isfinite(r) or not 0.0 < r <= 1.0:
        raise ValueError(
            f"retention is the fraction of tokens kept and must be in (0, 1], got {retention!r}"
            " (e.g. 0.1 keeps 10% of the tokens)"
        )
    return r


def check_number(name: str, value: object, *, low: float | None = None, high: float | None = None,
                 low_open: bool = False, high_open: bool = False) -> float:
    """Return ``value`` as a finite float within the given bounds or raise ``TypeError``/``ValueError``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    v = float(value)
    bad = not math.isfinite(v)
    if low is not None:
        bad |= v <= low if low_open else v < low
    if high is not None:
        bad |= v >= high if high_open else v > high
    if bad:
        lo = "-inf" if low is None else f"{low}"
        hi = "inf" if high is None else f"{high}"
        interval = f"{'(' if low_open or low is None else '['}{lo}, {hi}{')' if high_open or high is None else ']'}"
        raise ValueError(f"{name} must be in {interval}, got {value!r}")
    return v


def check_int(name: str, value: object, *, low: int | None = None, high: int | None = None) -> int:
    """Return ``value`` as an int within [low, high] or raise ``TypeError``/``ValueError``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if (low is not None and value < low) or (high is not None and value > high):
        raise ValueError(f"{name} must be in [{low}, {high if high is not None else 'inf'}], got {value}")
    return int(value)


def check_choice(name: str, value: object, choices: Iterable[str]) -> str:
    """Return ``value`` if it is one of ``choices`` or raise ``ValueError``."""
    choices = tuple(choices)
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}; got {value!r}")
    return str(value)
