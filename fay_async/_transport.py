"""HTTP transport: the only module that uses httpx at run time.

It owns (or borrows) one ``httpx.AsyncClient``, sends the auth header, applies timeouts,
retries with exponential backoff and full jitter, honours ``Retry-After``, and turns every
httpx failure and every non-2xx answer into a :class:`~fay_async.exceptions.FayError`.
"""

from __future__ import annotations

import email.utils
import functools
import logging
import math
import random
import ssl
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any, Final

import anyio
import attrs
import httpx

from . import _config, _wire
from . import exceptions as exc
from ._ratelimit import Endpoint, RateLimiter

__all__ = ["RawResponse", "RetryPolicy", "Transport", "parse_retry_after"]

logger: Final = logging.getLogger("fay_async")

RETRY_STATUSES: Final = frozenset({429, 500, 502, 503, 504})

#: Failures after which the request certainly did not reach the service: the connection
#: was never made, or no pooled connection was ever handed out.
_NOT_SENT: Final = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


@attrs.frozen(kw_only=True)
class RetryPolicy:
    """How failed attempts are retried (the defaults are those of :mod:`fay_async._config`)."""

    max_retries: int = _config.DEFAULT_MAX_RETRIES
    backoff_base: float = _config.DEFAULT_BACKOFF_BASE
    backoff_cap: float = _config.DEFAULT_BACKOFF_CAP
    max_retry_after: float = _config.DEFAULT_MAX_RETRY_AFTER

    def backoff(self, retry: int, rng: random.Random) -> float:
        """Full jitter: a uniform draw below the exponential step of this retry."""
        return rng.uniform(0.0, min(self.backoff_cap, self.backoff_base * 2.0**retry))


@attrs.define
class _Progress:
    """What the attempts of one request have done so far."""

    #: An attempt may have reached the service and taken effect (not refused with 429).
    sent: bool = False


@attrs.frozen
class RawResponse:
    """A 2xx answer: its status and raw body."""

    status_code: int
    content: bytes


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


@functools.cache
def _ssl_context() -> ssl.SSLContext:
    """One TLS context for every client of the process: building one takes milliseconds."""
    return httpx.create_ssl_context()


def _describe(error: BaseException) -> str:
    text = str(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


class Transport:
    """Sends requests to ``{base_url}/api/v1`` with retries; see the module docstring."""

    def __init__(
        self,
        *,
        api_key: str,
        base_url: str,
        timeout: float,
        retry: RetryPolicy,
        deadline: float | None,
        http_client: httpx.AsyncClient | None,
        headers: Mapping[str, str],
        limiter: RateLimiter | None,
        rng: random.Random | None = None,
    ) -> None:
        self._base = base_url.rstrip("/")
        self._timeout = httpx.Timeout(timeout)
        self._retry = retry
        self._deadline = deadline
        self._borrowed = http_client
        self._owned: httpx.AsyncClient | None = None
        self._headers = {**headers, "Authorization": f"Bearer {api_key}"}
        self.limiter = limiter
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography
        self.closed = False

    async def aclose(self) -> None:
        """Close the httpx client if this transport created it."""
        self.closed = True
        if self._owned is not None:
            await self._owned.aclose()

    @property
    def http(self) -> httpx.AsyncClient:
        """The httpx client in use; one of its own is made on first use (it is costly)."""
        if self._borrowed is not None:
            return self._borrowed
        if self._owned is None:
            self._owned = httpx.AsyncClient(verify=_ssl_context())
        return self._owned

    async def request(
        self,
        method: str,
        path: str,
        *,
        endpoint: Endpoint,
        json: Mapping[str, Any] | None = None,
        may_resend: bool = True,
        slot_taken: bool = False,
    ) -> RawResponse:
        """Send one logical request; retry what is safe to retry; return a 2xx answer.

        ``may_resend=False`` (create) retries only when the request certainly never
        reached the service: the connection failed, or the service answered 429.
        ``slot_taken=True``: the caller has already taken the first attempt's slot in the
        client-side budget (a retry still takes one of its own).
        """
        if self.closed:
            raise exc.ConfigurationError("this FayClient is closed; create a new one")
        # The wait for a slot in the client-side budget comes before the deadline starts:
        # the deadline bounds the work on the wire, not the queue for the right to send.
        if not slot_taken:
            await self._take_slot(endpoint)
        progress = _Progress()
        if self._deadline is None:
            return await self._attempts(
                method, path, endpoint, json, may_resend, math.inf, progress
            )
        deadline = anyio.current_time() + self._deadline
        try:
            with anyio.fail_after(self._deadline):
                return await self._attempts(
                    method, path, endpoint, json, may_resend, deadline, progress
                )
        except TimeoutError as error:
            if isinstance(error, exc.FayError):
                raise
            raise exc.APITimeoutError(
                f"{method} {path} did not finish within {self._deadline:g} s "
                "(all retries included)",
                method=method,
                path=path,
                sent=progress.sent,
            ) from None

    async def _attempts(
        self,
        method: str,
        path: str,
        endpoint: Endpoint,
        json: Mapping[str, Any] | None,
        may_resend: bool,
        deadline: float,
        progress: _Progress,
    ) -> RawResponse:
        url = self._base + path
        retries = 0
        while True:
            if retries:
                await self._take_slot(endpoint)
            started = anyio.current_time()
            attempt = retries + 1
            sent_before = progress.sent
            progress.sent = True  # from here on this attempt may reach the service
            try:
                response = await self._send(method, path, url, json)
            except (
                httpx.HTTPError,
                httpx.InvalidURL,
                httpx.StreamError,
                httpx.CookieConflict,
            ) as error:
                elapsed = anyio.current_time() - started
                logger.debug(
                    "%s %s failed after %.3fs (attempt %d): %s",
                    method,
                    path,
                    elapsed,
                    attempt,
                    type(error).__name__,
                )
                progress.sent = sent_before if isinstance(error, _NOT_SENT) else True
                failure = self._connection_error(method, path, error, sent=progress.sent)
                retryable = isinstance(error, httpx.TransportError) and (
                    may_resend or isinstance(error, _NOT_SENT)
                )
                if not retryable or retries >= self._retry.max_retries:
                    raise failure from error
                delay = self._retry.backoff(retries, self._rng)
                if anyio.current_time() + delay >= deadline:
                    raise failure from error
            else:
                status = response.status_code
                logger.debug(
                    "%s %s -> %d in %.3fs (attempt %d)",
                    method,
                    path,
                    status,
                    anyio.current_time() - started,
                    attempt,
                )
                if 200 <= status < 300:
                    return RawResponse(status, response.content)
                # A 429 refused the request: this attempt had no effect.
                progress.sent = sent_before if status == 429 else True
                retry_after = parse_retry_after(response.headers.get("retry-after"))
                error_out = _wire.error_from_response(status, response.content)
                if isinstance(error_out, exc.RateLimitError):
                    error_out.retry_after = retry_after
                    if self.limiter is not None and retry_after is not None:
                        self.limiter.block(endpoint, retry_after)
                retryable = status in RETRY_STATUSES and (may_resend or status == 429)
                if not retryable or retries >= self._retry.max_retries:
                    raise error_out
                if retry_after is not None and retry_after > self._retry.max_retry_after:
                    raise error_out
                delay = (
                    retry_after
                    if retry_after is not None
                    else self._retry.backoff(retries, self._rng)
                )
                if anyio.current_time() + delay >= deadline:
                    raise error_out
            retries += 1
            await anyio.sleep(delay)

    async def _send(
        self, method: str, path: str, url: str, json: Mapping[str, Any] | None
    ) -> httpx.Response:
        try:
            return await self.http.request(
                method, url, json=json, headers=self._headers, timeout=self._timeout
            )
        except UnicodeError as error:
            # A header value (default_headers, or those of a borrowed http_client) that is
            # not ASCII, or text that is not valid Unicode. The cause is left out: its text
            # would show the header value, which may be a secret.
            encoding = getattr(error, "encoding", None)
            how = f" as {encoding}" if encoding else ""
            raise exc.ConfigurationError(
                f"{method} {path}: the request could not be encoded{how} "
                f"({getattr(error, 'reason', None) or type(error).__name__}): a header value "
                "that is not ASCII (check default_headers and the http_client's headers) or "
                "text that is not valid Unicode"
            ) from None

    async def _take_slot(self, endpoint: Endpoint) -> None:
        if self.limiter is not None:
            await self.limiter.acquire(
                endpoint, wait=endpoint != "create" or self.limiter.limits.wait_for_create
            )

    @staticmethod
    def _connection_error(method: str, path: str, error: Exception, *, sent: bool) -> exc.FayError:
        where = f"{method} {path}"
        if isinstance(error, httpx.TimeoutException):
            return exc.APITimeoutError(
                f"{where} timed out ({_describe(error)})", method=method, path=path, sent=sent
            )
        if isinstance(error, httpx.DecodingError):
            return exc.UnexpectedResponseError(
                f"{where}: the response body could not be decoded ({_describe(error)})",
                status_code=0,
            )
        if isinstance(error, httpx.TooManyRedirects | httpx.UnsupportedProtocol | httpx.InvalidURL):
            return exc.ConfigurationError(f"{where}: {_describe(error)}; check the base URL")
        return exc.APIConnectionError(
            f"{where}: could not talk to the Fay API ({_describe(error)})",
            method=method,
            path=path,
            sent=sent,
        )
