"""The checks every option of the library goes through: seconds, counts, callables.

One rule each, so that ``FayClient(timeout=nan)``, ``PollPolicy(pending_first=nan)`` and
``manager.research(timeout=nan)`` are refused the same way, at the point where the value
is given, with a message that names the option. A wrong type raises ``TypeError``; a
value of the right type that is out of range (NaN included) raises ``ValueError``.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Callable
from typing import Any, Final, TypeGuard, TypeVar

import attrs

from ._config import MAX_REQUEST_ID_LENGTH
from .exceptions import InvalidRequestIdError

__all__ = [
    "attrs_count",
    "attrs_seconds",
    "check_callable",
    "check_count",
    "check_seconds",
    "check_timeout",
    "validate_request_id",
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


_FORBIDDEN_IN_ID: Final = ("/", "\\", "..", "?", "#", "%")

#: What request ids look like (UUIDs): such an id needs no closer look.
_PLAIN_ID: Final = re.compile(rf"[A-Za-z0-9_-]{{1,{MAX_REQUEST_ID_LENGTH}}}")


def validate_request_id(request_id: object) -> str:
    """Return ``request_id`` if it is safe to put in a URL path; else raise.

    Raises :class:`InvalidRequestIdError` (a ``ValueError``) for anything but a non-empty
    string of at most 128 characters without ``/``, ``\\``, ``..``, ``?``, ``#``, ``%``,
    white space or control characters, that is not a dot segment (``.``).
    """
    if type(request_id) is str and _PLAIN_ID.fullmatch(request_id):
        return request_id
    if not isinstance(request_id, str):
        raise InvalidRequestIdError(
            f"a request id must be a string, got {type(request_id).__name__}",
            request_id=request_id,
        )
    if not request_id:
        raise InvalidRequestIdError("the request id is empty", request_id=request_id)
    if len(request_id) > MAX_REQUEST_ID_LENGTH:
        raise InvalidRequestIdError(
            f"the request id is {len(request_id)} characters long; "
            f"at most {MAX_REQUEST_ID_LENGTH} are accepted",
            request_id=request_id,
        )
    for bad in _FORBIDDEN_IN_ID:
        if bad in request_id:
            raise InvalidRequestIdError(
                f"the request id {request_id!r} contains {bad!r}, which is not allowed in a "
                "request id",
                request_id=request_id,
            )
    if not request_id.strip("."):
        # A URL path segment of dots is collapsed by URL normalisation: "." would turn
        # /conversation/./status into /conversation/status.
        raise InvalidRequestIdError(
            f"the request id {request_id!r} is a dot segment, which a URL would collapse",
            request_id=request_id,
        )
    for char in request_id:
        if char.isspace() or unicodedata.category(char).startswith("C"):
            raise InvalidRequestIdError(
                f"the request id {request_id!r} contains white space or a control character",
                request_id=request_id,
            )
    return request_id
