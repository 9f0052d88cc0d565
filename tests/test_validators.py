"""The option checks: ranges below one, the names in the messages, the attrs validators."""

from __future__ import annotations

import math

import pytest

from fay_async._retries import RetryPolicy
from fay_async._validators import check_callable, check_timeout


def test_a_timeout_under_a_second_is_kept() -> None:
    assert check_timeout(0.5) == 0.5
    assert check_timeout(None) == math.inf


def test_a_callable_that_is_not_says_what_it_got() -> None:
    with pytest.raises(TypeError, match=r"^on_done must be callable, got int$"):
        check_callable(3, "on_done")
    assert check_callable(None, "on_done") is None


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"backoff_base": 0}, r"^RetryPolicy\.backoff_base must be a positive number of seconds"),
        ({"backoff_cap": math.inf}, r"^RetryPolicy\.backoff_cap must be a finite number"),
        ({"max_retry_after": "1"}, r"^RetryPolicy\.max_retry_after must be a number of seconds"),
        ({"max_retries": -1}, r"^RetryPolicy\.max_retries must be a whole number >= 0, got -1"),
        ({"max_retries": 1.0}, r"^RetryPolicy\.max_retries must be a whole number >= 0, got float"),
    ],
)
def test_the_attrs_validators_name_the_field(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises((TypeError, ValueError), match=message):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]


def test_the_attrs_validators_take_what_is_in_range() -> None:
    policy = RetryPolicy(max_retries=0, backoff_base=0.1, backoff_cap=0.2, max_retry_after=0.3)
    assert policy.max_retries == 0
