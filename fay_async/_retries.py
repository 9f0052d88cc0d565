"""What follows one HTTP attempt: a pure table from its outcome to done, retry or fail.

No I/O and no httpx here: the transport turns what httpx gave it into a status code and
body, or into a :class:`~fay_async.exceptions.FayError` with a word on whether the attempt
may be repeated, and these functions say what comes next. Retries use exponential
backoff with full jitter, honour ``Retry-After`` up to a cap, and never send a create
again unless it certainly never arrived.
"""

from __future__ import annotations

import email.utils
import math
from datetime import datetime, timezone
from typing import Final

import attrs

from . import _wire
from . import exceptions as exc
from ._config import (
    DEFAULT_BACKOFF_BASE,
    DEFAULT_BACKOFF_CAP,
    DEFAULT_MAX_RETRIES,
    DEFAULT_MAX_RETRY_AFTER,
)
from ._validators import attrs_count, attrs_seconds

__all__ = [
    "RETRY_STATUSES",
    "AttemptState",
    "Decision",
    "Done",
    "Fail",
    "RawResponse",
    "Retry",
    "RetryPolicy",
    "decide_answer",
    "decide_failure",
    "parse_retry_after",
]

RETRY_STATUSES: Final = frozenset({429, 500, 502, 503, 504})


@attrs.frozen(kw_only=True)
class RetryPolicy:
    """How failed attempts are retried (the defaults are those of :mod:`fay_async._config`).

    The defaults are imported by name: attrs (26.1) runs the validators of a generated
    ``__init__`` under a global named ``_config``, which a module-level ``_config`` shadows.
    """

    max_retries: int = attrs.field(default=DEFAULT_MAX_RETRIES, validator=attrs_count(minimum=0))
    backoff_base: float = attrs.field(default=DEFAULT_BACKOFF_BASE, validator=attrs_seconds())
    backoff_cap: float = attrs.field(default=DEFAULT_BACKOFF_CAP, validator=attrs_seconds())
    #: A longer ``Retry-After`` is raised rather than slept through.
    max_retry_after: float = attrs.field(default=DEFAULT_MAX_RETRY_AFTER, validator=attrs_seconds())

    def backoff(self, retry: int, jitter: float) -> float:
        """Full jitter: ``jitter``, drawn uniformly in [0, 1), of this retry's exponential step.

        ``retry`` counts from 0.
        """
        return jitter * min(self.backoff_cap, self.backoff_base * 2.0**retry)


@attrs.frozen
class RawResponse:
    """A 2xx answer: its status and raw body."""

    status_code: int
    content: bytes


@attrs.frozen(kw_only=True)
class AttemptState:
    """Where a request stands once one of its attempts has ended."""

    method: str
    path: str
    #: The attempt that just ended, from 1.
    attempt: int
    #: Whether the request may be sent again after it may have reached the service.
    may_resend: bool
    #: Whether any attempt so far, this one included, may have reached the service.
    sent: bool
    #: Seconds until the request's deadline (``inf`` without one).
    time_left: float
    #: A uniform draw in [0, 1) for the backoff of a retry.
    jitter: float


@attrs.frozen
class Done:
    """The request succeeded with this answer."""

    response: RawResponse


@attrs.frozen
class Retry:
    """Send the request again in ``after`` seconds."""

    after: float


@attrs.frozen
class Fail:
    """Give up: raise ``error`` (from ``cause``, the httpx error, if any)."""

    error: exc.FayError
    cause: BaseException | None = None


Decision = Done | Retry | Fail


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta seconds or an HTTP date)."""
    if value is None:
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)
        seconds = (when - datetime.now(timezone.utc)).total_seconds()
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


def decide_answer(
    status: int,
    content: bytes,
    retry_after: float | None,
    state: AttemptState,
    policy: RetryPolicy,
) -> Decision:
    """After an attempt the service answered with HTTP ``status``."""
    if 200 <= status < 300:
        return Done(RawResponse(status, content))
    error = _wire.error_from_response(status, content)
    if isinstance(error, exc.RateLimitError):
        error.retry_after = retry_after
    # A create is sent again only after a 429: the service refused it, so it never started.
    retryable = status in RETRY_STATUSES and (state.may_resend or status == 429)
    if not retryable or state.attempt > policy.max_retries:
        return Fail(error)
    if retry_after is not None and retry_after > policy.max_retry_after:
        return Fail(error)
    delay = (
        retry_after if retry_after is not None else policy.backoff(state.attempt - 1, state.jitter)
    )
    return Fail(error) if delay >= state.time_left else Retry(delay)


def decide_failure(
    failure: exc.FayError,
    cause: Exception,
    *,
    retryable: bool,
    state: AttemptState,
    policy: RetryPolicy,
) -> Decision:
    """After an attempt that failed with ``cause`` (``failure`` is what the caller sees).

    ``retryable``: the failure is of the network, and the request may be sent again (it
    may be re-sent, or it certainly never arrived).
    """
    if not retryable or state.attempt > policy.max_retries:
        return Fail(failure, cause)
    delay = policy.backoff(state.attempt - 1, state.jitter)
    return Fail(failure, cause) if delay >= state.time_left else Retry(delay)
