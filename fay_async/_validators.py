"""The checks every option of the library goes through: seconds, counts, callables.

One rule each, so that ``FayClient(timeout=nan)``, ``PollPolicy(pending_first=nan)`` and
``manager.research(timeout=nan)`` are refused the same way, at the point where the value
is given, with a message that names the option. A wrong type raises ``TypeError``; a
value of the right type that is out of range (NaN included) raises ``ValueError``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, TypeGuard, TypeVar

import attrs

__all__ = [
    "attrs_count",
    "attrs_seconds",
    "check_callable",
    "check_count",
    "check_seconds",
    "check_timeout",
]

T = TypeVar("T")


def _is_number(value: object) -> TypeGuard[float]:
    # bool is an int in Python; True seconds is a mistake, not one second.
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_seconds(
    value: object,
    name: str,
    *,
    allow_zero: bool = False,
    allow_inf: bool = False,
) -> float:
    """``value`` as float seconds: a real number > 0 (or >= 0), finite unless allowed."""
    if not _is_number(value):
        raise TypeError(f"{name} must be a number of seconds, got {type(value).__name__}")
    seconds = float(value)
    floor = "a number of seconds >= 0" if allow_zero else "a positive number of seconds"
    if math.isnan(seconds) or seconds < 0 or (seconds == 0 and not allow_zero):
        raise ValueError(f"{name} must be {floor}, got {value!r}")
    if math.isinf(seconds) and not allow_inf:
        raise ValueError(f"{name} must be a finite number of seconds, got {value!r}")
    return seconds


def check_timeout(value: object, name: str = "timeout") -> float:
    """A timeout: positive seconds, or None (or ``inf``) for no limit, returned as ``inf``."""
    if value is None:
        return math.inf
    if not _is_number(value):
        raise TypeError(f"{name} must be a number of seconds or None, got {type(value).__name__}")
    seconds = float(value)
    if math.isnan(seconds) or seconds <= 0:
        raise ValueError(
            f"{name} must be a positive number of seconds (or None for no limit), got {value!r}"
        )
    return seconds


def check_count(value: object, name: str, *, minimum: int = 1) -> int:
    """A whole number of at least ``minimum`` (a float, even 2.0, is refused)."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name} must be a whole number >= {minimum}, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be a whole number >= {minimum}, got {value!r}")
    return value


def check_callable(value: T | None, name: str) -> T | None:
    """``value`` if it is None or callable."""
    if value is not None and not callable(value):
        raise TypeError(f"{name} must be callable, got {type(value).__name__}")
    return value


@attrs.frozen
class _SecondsField:
    """The attrs validator :func:`attrs_seconds` returns."""

    def __call__(self, instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        check_seconds(value, f"{type(instance).__name__}.{attribute.name}")


@attrs.frozen
class _CountField:
    """The attrs validator :func:`attrs_count` returns."""

    minimum: int

    def __call__(self, instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        check_count(value, f"{type(instance).__name__}.{attribute.name}", minimum=self.minimum)


# The two factories below run when a class is defined, at import, before a mutation test
# can switch a mutant of them on: the checks live in the validators' __call__ instead.


def attrs_seconds() -> Callable[[Any, attrs.Attribute[Any], Any], None]:
    """An attrs validator: positive, finite seconds (:func:`check_seconds`) in ``Class.field``."""
    return _SecondsField()


def attrs_count(*, minimum: int = 1) -> Callable[[Any, attrs.Attribute[Any], Any], None]:
    """An attrs validator running :func:`check_count` on the field, named ``Class.field``."""
    return _CountField(minimum)  # pragma: no mutate
