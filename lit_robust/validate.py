"""The argument checks of every configurable class (methods, attacks, nets, datamodules, callbacks,
optimisers): each returns the value, normalised, or raises a :class:`~lit_robust.errors.ConfigError` that
names the field, e.g. ``model.beta must be a finite number >= 0, got -1``.

``name`` is the field as the user writes it: ``model.eps``, ``data.batch_size``, ``PGD.steps``,
``ConfidenceGap.radii``. Booleans are never numbers here (``True`` is not a step count).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

from lit_robust.errors import ConfigError


def _interval(low: float, high: float, low_open: bool, high_open: bool) -> str:
    if math.isinf(high):
        return f"{'>' if low_open else '>='} {low:g}"
    if math.isinf(low):
        return f"{'<' if high_open else '<='} {high:g}"
    return f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"


def number(
    name: str,
    value: Any,
    low: float = -math.inf,
    high: float = math.inf,
    low_open: bool = False,
    high_open: bool = False,
    optional: bool = False,
) -> float | None:
    """``float(value)`` for a finite real number in the interval from ``low`` to ``high`` (each end
    closed unless ``*_open``); None passes when ``optional``."""
    if optional and value is None:
        return None
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    if ok:
        ok = (value > low if low_open else value >= low) and (value < high if high_open else value <= high)
    if not ok:
        bound = _interval(low, high, low_open, high_open)
        raise ConfigError(
            f"{name} must be a finite number {bound}{' or null' if optional else ''}, got {value!r}"
        )
    return float(value)


def positive(name: str, value: Any, optional: bool = False) -> float | None:
    """A finite number > 0 (step sizes, temperatures, radii of a certificate)."""
    return number(name, value, 0.0, low_open=True, optional=optional)


def non_negative(name: str, value: Any, optional: bool = False) -> float | None:
    """A finite number >= 0 (loss weights, noise scales)."""
    return number(name, value, 0.0, optional=optional)


def radius(name: str, value: Any) -> float:
    """A threat-model radius eps: a finite number >= 0 (0: no attack)."""
    return number(name, value, 0.0)


def probability(name: str, value: Any) -> float:
    """A number in [0, 1] (label-noise rates, momenta, accuracy thresholds)."""
    return number(name, value, 0.0, 1.0)


def integer(name: str, value: Any, minimum: int | None = 1, optional: bool = False) -> int | None:
    """``int(value)`` for an integer >= ``minimum`` (any integer when None); None passes when ``optional``."""
    if optional and value is None:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Integral)
        or (minimum is not None and value < minimum)
    ):
        bound = "an integer" if minimum is None else f"an integer >= {minimum}"
        raise ConfigError(f"{name} must be {bound}{' or null' if optional else ''}, got {value!r}")
    return int(value)


def _sequence(name: str, values: Any, allow_empty: bool, what: str) -> list:
    if isinstance(values, str | bytes) or not isinstance(values, Sequence) or not (values or allow_empty):
        kind = "a list" if allow_empty else "a non-empty list"
        raise ConfigError(f"{name} must be {kind} of {what}, got {values!r}")
    return list(values)


def integers(name: str, values: Any, minimum: int | None = 1, allow_empty: bool = False) -> list[int]:
    """A list of integers >= ``minimum`` (non-empty unless ``allow_empty``)."""
    return [
        integer(f"{name}[{i}]", v, minimum)
        for i, v in enumerate(_sequence(name, values, allow_empty, "integers"))
    ]


def floats(
    name: str,
    values: Any,
    low: float = 0.0,
    low_open: bool = True,
    allow_empty: bool = False,
    increasing: bool = False,
) -> list[float]:
    """A list of finite numbers > ``low`` (>= when not ``low_open``), non-empty unless ``allow_empty``,
    sorted ascending when ``increasing``."""
    out = [
        number(f"{name}[{i}]", v, low, low_open=low_open)
        for i, v in enumerate(_sequence(name, values, allow_empty, "numbers"))
    ]
    if increasing and out != sorted(out):
        raise ConfigError(f"{name} must be increasing, got {list(values)}")
    return out


def choice(name: str, value: Any, choices: Sequence) -> Any:
    """``value`` if it is one of ``choices``."""
    if value not in choices:
        raise ConfigError(f"{name} must be one of {list(choices)}, got {value!r}")
    return value


def flag(name: str, value: Any) -> bool:
    """``value`` if it is a bool (``1`` or ``"yes"`` are refused: a typo should not switch a feature)."""
    if not isinstance(value, bool):
        raise ConfigError(f"{name} must be true or false, got {value!r}")
    return value
