"""Each option check at its boundaries, with the exact message it gives."""

from __future__ import annotations

import math
import re
from typing import Any

import attrs
import pytest

from fay_async import InvalidRequestIdError
from fay_async._validators import (
    attrs_count,
    attrs_seconds,
    check_callable,
    check_count,
    check_seconds,
    check_timeout,
    validate_request_id,
)


def _exactly(message: str) -> str:
    return "^" + re.escape(message) + "$"


# check_seconds


@pytest.mark.parametrize("value", [1, 0.001, 2.5, 10**9])
def test_seconds_in_range_come_back_as_float(value: float) -> None:
    result = check_seconds(value, "wait")
    assert result == value
    assert type(result) is float


@pytest.mark.parametrize("value", [True, False, "1", None, [1], 1j])
def test_seconds_of_another_type(value: object) -> None:
    kind = type(value).__name__
    with pytest.raises(TypeError, match=_exactly(f"wait must be a number of seconds, got {kind}")):
        check_seconds(value, "wait")


@pytest.mark.parametrize("value", [0, 0.0, -0.0, -1, -0.001, math.nan, -math.inf])
def test_seconds_that_are_not_positive(value: float) -> None:
    message = f"wait must be a positive number of seconds, got {value!r}"
    with pytest.raises(ValueError, match=_exactly(message)):
        check_seconds(value, "wait")


def test_zero_seconds_when_allowed() -> None:
    assert check_seconds(0, "wait", allow_zero=True) == 0.0
    assert check_seconds(0.5, "wait", allow_zero=True) == 0.5


@pytest.mark.parametrize("value", [-1, -0.001, math.nan])
def test_below_zero_seconds_when_zero_is_allowed(value: float) -> None:
    message = f"wait must be a number of seconds >= 0, got {value!r}"
    with pytest.raises(ValueError, match=_exactly(message)):
        check_seconds(value, "wait", allow_zero=True)


def test_infinite_seconds() -> None:
    message = "wait must be a finite number of seconds, got inf"
    with pytest.raises(ValueError, match=_exactly(message)):
        check_seconds(math.inf, "wait")
    with pytest.raises(ValueError, match=_exactly(message)):
        check_seconds(math.inf, "wait", allow_zero=True)
    assert check_seconds(math.inf, "wait", allow_inf=True) == math.inf


def test_nan_is_refused_even_when_inf_and_zero_are_allowed() -> None:
    with pytest.raises(ValueError, match=r"^wait must be a number of seconds >= 0, got nan$"):
        check_seconds(math.nan, "wait", allow_zero=True, allow_inf=True)


# check_timeout


@pytest.mark.parametrize("value", [1, 0.001, 30.5])
def test_timeouts_in_range(value: float) -> None:
    result = check_timeout(value)
    assert result == value
    assert type(result) is float


def test_no_timeout() -> None:
    assert check_timeout(None) == math.inf
    assert check_timeout(math.inf) == math.inf


@pytest.mark.parametrize("value", [0, 0.0, -1, -0.5, math.nan, -math.inf])
def test_timeouts_out_of_range(value: float) -> None:
    message = f"limit must be a positive number of seconds (or None for no limit), got {value!r}"
    with pytest.raises(ValueError, match=_exactly(message)):
        check_timeout(value, "limit")


@pytest.mark.parametrize("value", [True, "5", [5]])
def test_timeouts_of_another_type(value: object) -> None:
    kind = type(value).__name__
    message = f"limit must be a number of seconds or None, got {kind}"
    with pytest.raises(TypeError, match=_exactly(message)):
        check_timeout(value, "limit")


def test_the_timeout_is_named_timeout_by_default() -> None:
    with pytest.raises(ValueError, match=r"^timeout must be"):
        check_timeout(0)
    with pytest.raises(TypeError, match=r"^timeout must be"):
        check_timeout("1")


# check_count


def test_counts_at_and_above_the_minimum() -> None:
    assert check_count(1, "workers") == 1
    assert check_count(7, "workers") == 7
    assert check_count(0, "retries", minimum=0) == 0
    assert check_count(3, "batch", minimum=3) == 3


@pytest.mark.parametrize(("value", "minimum"), [(0, 1), (-1, 1), (-1, 0), (2, 3)])
def test_counts_below_the_minimum(value: int, minimum: int) -> None:
    message = f"n must be a whole number >= {minimum}, got {value!r}"
    with pytest.raises(ValueError, match=_exactly(message)):
        check_count(value, "n", minimum=minimum)


@pytest.mark.parametrize("value", [2.0, True, False, "2", None])
def test_counts_of_another_type(value: object) -> None:
    kind = type(value).__name__
    with pytest.raises(TypeError, match=_exactly(f"n must be a whole number >= 1, got {kind}")):
        check_count(value, "n")


# check_callable


def test_callables() -> None:
    assert check_callable(len, "f") is len
    assert check_callable(None, "f") is None
    with pytest.raises(TypeError, match=_exactly("f must be callable, got str")):
        check_callable("len", "f")


# the attrs validators


@attrs.define
class _Options:
    wait: float = attrs.field(default=1.0, validator=attrs_seconds())
    workers: int = attrs.field(default=1, validator=attrs_count())
    retries: int = attrs.field(default=0, validator=attrs_count(minimum=0))


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"wait": 0}, ValueError, "_Options.wait must be a positive number of seconds, got 0"),
        ({"wait": "1"}, TypeError, "_Options.wait must be a number of seconds, got str"),
        (
            {"wait": math.inf},
            ValueError,
            "_Options.wait must be a finite number of seconds, got inf",
        ),
        ({"workers": 0}, ValueError, "_Options.workers must be a whole number >= 1, got 0"),
        ({"retries": -1}, ValueError, "_Options.retries must be a whole number >= 0, got -1"),
        ({"retries": 0.0}, TypeError, "_Options.retries must be a whole number >= 0, got float"),
    ],
)
def test_attrs_validators(kwargs: dict[str, Any], error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=_exactly(message)):
        _Options(**kwargs)


def test_attrs_count_asks_for_one_at_least_by_default() -> None:
    # The class is made here, not at import, so that the validator is made by this test.
    @attrs.define
    class Batch:
        size: int = attrs.field(validator=attrs_count())

    assert Batch(1).size == 1
    with pytest.raises(ValueError, match=_exactly("Batch.size must be a whole number >= 1, got 0")):
        Batch(0)


def test_attrs_validators_take_the_boundaries() -> None:
    options = _Options(wait=0.001, workers=1, retries=0)
    assert (options.wait, options.workers, options.retries) == (0.001, 1, 0)


# validate_request_id


@pytest.mark.parametrize(
    "request_id",
    [
        "a",
        "A-z_0-9",
        "x" * 128,
        "X.X",
        "XX.XX.",
        "3f2c1e9a-1b2c-4d5e-8f90-a1b2c3d4e5f6",
        "é",
        "a.b",
        ".a",
        "a~b",
    ],
)
def test_request_ids_that_are_safe(request_id: str) -> None:
    assert validate_request_id(request_id) is request_id


def test_a_str_subclass_is_checked_in_full() -> None:
    class Id(str):
        pass

    assert validate_request_id(Id("abc")) == "abc"
    with pytest.raises(InvalidRequestIdError, match="contains '/'"):
        validate_request_id(Id("a/b"))


def _refused(request_id: object) -> InvalidRequestIdError:
    with pytest.raises(InvalidRequestIdError) as info:
        validate_request_id(request_id)
    assert info.value.request_id is request_id
    assert isinstance(info.value, ValueError)
    return info.value


@pytest.mark.parametrize(("value", "kind"), [(None, "NoneType"), (42, "int"), (b"ab", "bytes")])
def test_request_ids_that_are_not_strings(value: object, kind: str) -> None:
    assert str(_refused(value)) == f"a request id must be a string, got {kind}"


def test_an_empty_request_id() -> None:
    assert str(_refused("")) == "the request id is empty"


@pytest.mark.parametrize("request_id", ["x" * 129, "é" * 129, "a/" * 100])
def test_request_ids_that_are_too_long(request_id: str) -> None:
    assert str(_refused(request_id)) == (
        f"the request id is {len(request_id)} characters long; at most 128 are accepted"
    )


def test_a_non_ascii_request_id_of_the_longest_length() -> None:
    assert validate_request_id("é" * 128) == "é" * 128


@pytest.mark.parametrize(
    ("request_id", "bad"),
    [
        ("a/b", "/"),
        ("a\\b", "\\"),
        ("a..b", ".."),
        ("..", ".."),
        ("a?b", "?"),
        ("a#b", "#"),
        ("a%2Fb", "%"),
        ("/..", "/"),
    ],
)
def test_request_ids_with_a_forbidden_part(request_id: str, bad: str) -> None:
    assert str(_refused(request_id)) == (
        f"the request id {request_id!r} contains {bad!r}, which is not allowed in a request id"
    )


def test_a_dot_segment() -> None:
    assert str(_refused(".")) == "the request id '.' is a dot segment, which a URL would collapse"


@pytest.mark.parametrize("request_id", ["a b", "a\tb", " ", "a\nb", "a\x00b", "a\u200bb", "a\x7f"])
def test_request_ids_with_white_space_or_control_characters(request_id: str) -> None:
    assert str(_refused(request_id)) == (
        f"the request id {request_id!r} contains white space or a control character"
    )
