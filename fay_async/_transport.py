"""HTTP transport (with :mod:`._direct` and :mod:`._deadlines`, the only httpx user).

It owns (or borrows) one ``httpx.AsyncClient``, sends the auth header, applies timeouts,
retries with exponential backoff and full jitter, honours ``Retry-After``, and turns every
httpx failure and every non-2xx answer into a :class:`~fay_async.exceptions.FayError`.
What to do after each attempt is decided by :func:`decide`, a pure function of the
attempt's outcome (a response or an httpx error) and where the call stands, built on the
table in :mod:`fay_async._retries`; the loop in :meth:`Transport.request` only carries the
decisions out. The transport knows no endpoint names: whatever must happen around each
attempt (the client-side budget) comes in as an :class:`AttemptHook`.
"""

from __future__ import annotations

import copy
import logging
import math
import random
from collections.abc import Mapping
from typing import Any, Final, Protocol

import anyio
import attrs
import httpx

from . import exceptions as exc
from ._deadlines import deadline_scope
from ._direct import DirectSender, own_client
from ._retries import (
    AttemptState,
    Decision,
    Done,
    Fail,
    RawResponse,
    RetryPolicy,
    decide_answer,
    decide_failure,
    parse_retry_after,
)

__all__ = ["AttemptHook", "Transport", "decide", "may_have_arrived"]

logger: Final = logging.getLogger("fay_async")

#: Failures after which the request certainly did not reach the service: the connection
#: was never made, or no pooled connection was ever handed out.
_NOT_SENT: Final = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)

#: Header names (httpx reads them in any case).
_RETRY_AFTER: Final = "retry-after"
_AUTHORIZATION: Final = "Authorization"

#: Every exception httpx raises for a request (httpx.HTTPError does not cover them all).
_HTTPX_ERRORS: Final = (httpx.HTTPError, httpx.InvalidURL, httpx.StreamError, httpx.CookieConflict)


class AttemptHook(Protocol):
    """What runs around each HTTP attempt of one request (the client-side budget)."""

    async def before_attempt(self, attempt: int) -> None:
        """Wait until attempt number ``attempt`` (from 1) may be sent.

        The first attempt's wait comes before the request's deadline starts.
        """

    def after_refusal(self, retry_after: float | None) -> None:
        """The service answered 429, asking to wait ``retry_after`` seconds if it said."""


def may_have_arrived(outcome: httpx.Response | Exception) -> bool:
    """Whether an attempt with this outcome may have reached the service and taken effect.

    A 429 refused the request; a failure to connect never delivered it.
    """
    if isinstance(outcome, httpx.Response):
        return outcome.status_code != 429
    return not isinstance(outcome, _NOT_SENT)


def decide(
    outcome: httpx.Response | Exception, state: AttemptState, policy: RetryPolicy
) -> Decision:
    """What to do after an attempt that ended with ``outcome`` (a response or httpx error)."""
    if isinstance(outcome, httpx.Response):
        return decide_answer(
            outcome.status_code,
            outcome.content,
            parse_retry_after(outcome.headers.get(_RETRY_AFTER)),
            state,
            policy,
        )
    return _decide_failure(outcome, state, policy)


def _decide_failure(error: Exception, state: AttemptState, policy: RetryPolicy) -> Decision:
    failure = _connection_error(state.method, state.path, error, sent=state.sent)
    # A create is sent again only when it certainly never left: the connection failed.
    retryable = isinstance(error, httpx.TransportError) and (
        state.may_resend or isinstance(error, _NOT_SENT)
    )
    return decide_failure(failure, error, retryable=retryable, state=state, policy=policy)


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


def _log_attempt(
    method: str,
    path: str,
    attempt: int,
    elapsed: float,
    outcome: httpx.Response | RawResponse | Exception,
) -> None:
    if not isinstance(outcome, Exception):
        status = outcome.status_code
        logger.debug("%s %s -> %d in %.3fs (attempt %d)", method, path, status, elapsed, attempt)
    else:
        name = type(outcome).__name__
        how = "%s %s failed after %.3fs (attempt %d): %s"
        logger.debug(how, method, path, elapsed, attempt, name)


@attrs.define
class _Progress:
    """What the attempts of one request have done so far."""

    #: An attempt may have reached the service and taken effect (not refused with 429).
    sent: bool = False
    attempt: int = 0  # the attempt on the wire, if one is, and (when logging) its start
    started: float | None = None


def _describe(error: BaseException) -> str:
    text = str(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


class Transport:
    """Sends requests to ``{base_url}/api/v1`` with retries; see the module docstring.

    ``http_client`` is borrowed: used as it is and never closed. ``http_transport`` is
    wrapped in an ``httpx.AsyncClient`` of this transport's own, closed (with it) by
    :meth:`aclose`, as httpx does. Without either, an ``httpx.AsyncClient`` of its own is
    made on first use. An own client's requests go straight to its transport
    (:class:`DirectSender`). The names in errors are those of :class:`~fay_async.FayClient`.
    """

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
        http_transport: httpx.AsyncBaseTransport | None = None,
        rng: random.Random | None = None,
    ) -> None:
        if http_client is not None and not isinstance(http_client, httpx.AsyncClient):
            raise exc.ConfigurationError(
                f"http_client must be an httpx.AsyncClient, got {type(http_client).__name__}"
            )
        if http_transport is not None and not isinstance(http_transport, httpx.AsyncBaseTransport):
            raise exc.ConfigurationError(
                "transport must be an httpx.AsyncBaseTransport (such as "
                f"httpx.AsyncHTTPTransport), got {type(http_transport).__name__}"
            )
        if http_client is not None and http_transport is not None:
            raise exc.ConfigurationError(
                "pass transport or http_client, not both: an http_client brings its own transport"
            )
        self._base = base_url
        self._timeout = httpx.Timeout(timeout)
        self._retry = retry
        self._deadline = deadline
        self._borrowed = http_client
        self._http_transport = http_transport
        self._owned: httpx.AsyncClient | None = None
        self._direct: DirectSender | None = None
        self._headers = {**headers, _AUTHORIZATION: f"Bearer {api_key}"}
        #: ``_headers`` as httpx keeps them, made on the first request sent through a
        #: borrowed client (a value that is not ASCII is an error of that request).
        self._prepared_headers: httpx.Headers | None = None
        self._timeouts = self._timeout.as_dict()
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography
        self._closed = False  # pragma: no mutate - None would read as False in closed
        self._parent: Transport | None = None
        #: The transport whose httpx client this one sends through when none is borrowed.
        self._root: Transport = self

    @property
    def closed(self) -> bool:
        """True once this transport, or the one it was derived from, is closed."""
        return self._closed or (self._parent is not None and self._parent.closed)

    def derive(self, *, timeout: float, retry: RetryPolicy, deadline: float | None) -> Transport:
        """A transport with other timeouts and retries on this one's connection pool.

        Closing it leaves the pool open; closing this one closes the pool for both.
        """
        # The copy keeps ``_root``: without a borrowed client, it sends through the root's
        # own client (straight to its transport, as the root does) and never closes it.
        clone = copy.copy(self)
        clone._owned = None
        clone._http_transport = None
        clone._timeout = httpx.Timeout(timeout)
        clone._timeouts = clone._timeout.as_dict()
        clone._retry = retry
        clone._deadline = deadline
        clone._closed = False  # pragma: no mutate - None would read as False in closed
        clone._parent = self
        return clone

    async def aclose(self) -> None:
        """Close the httpx client (and transport) this transport owns, if any."""
        self._closed = True
        if self._owned is not None:
            await self._owned.aclose()
        elif self._http_transport is not None:
            await self._http_transport.aclose()

    @property
    def http(self) -> httpx.AsyncClient:
        """The httpx client in use; one of its own is made on first use (it is costly)."""
        if self._borrowed is not None:
            return self._borrowed
        return self._root._own()[0]

    def _own(self) -> tuple[httpx.AsyncClient, DirectSender]:
        """The httpx client this transport owns and its direct sender, made on first use."""
        if self._owned is None or self._direct is None:
            self._owned, self._direct = own_client(
                self._base, self._headers, self._timeout, self._http_transport
            )
        return self._owned, self._direct

    async def request(
        self,
        method: str,
        path: str,
        *,
        json: Mapping[str, Any] | None = None,
        may_resend: bool = True,
        hook: AttemptHook | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 - one attempt's, handed to httpx
        deadline: float | None = None,
    ) -> RawResponse:
        """Send one logical request; retry what is safe to retry; return a 2xx answer.

        ``may_resend=False`` (create) retries only when the request certainly never
        reached the service: the connection failed, or the service answered 429.
        ``hook`` is awaited before every attempt and told of every 429. ``timeout`` (one
        attempt) and ``deadline`` (the whole call; ``inf`` for none) replace the
        transport's own for this call.
        """
        if self.closed:
            raise exc.ConfigurationError("this FayClient is closed; create a new one")
        # The first attempt's wait (for a slot in the client-side budget) comes before the
        # deadline starts: the deadline bounds the work on the wire, not the queue for the
        # right to send.
        if hook is not None:
            await hook.before_attempt(1)
        progress = _Progress()
        per_attempt = self._timeout if timeout is None else httpx.Timeout(timeout)
        limit = self._deadline if deadline is None else deadline
        if limit is None or math.isinf(limit):
            return await self._attempts(
                method, path, json, may_resend, hook, math.inf, progress, per_attempt
            )
        # A bare cancel scope rather than anyio.fail_after, its deadline on a timer shared
        # with the other calls (see _deadlines): nothing else cancels it, so having caught
        # a cancellation means the deadline passed.
        scope, ends, deadlines, entry = deadline_scope(limit)
        try:
            with scope:
                return await self._attempts(
                    method, path, json, may_resend, hook, ends, progress, per_attempt
                )
        finally:
            if deadlines is not None and entry is not None:
                deadlines.remove(entry)
        if progress.started is not None:
            logger.debug(
                "%s %s cut off by the deadline after %.3fs (attempt %d)",
                method,
                path,
                anyio.current_time() - progress.started,
                progress.attempt,
            )
        raise exc.APITimeoutError(
            f"{method} {path} did not finish within {limit:g} s (all retries included)",
            method=method,
            path=path,
            sent=progress.sent,
        )

    async def _attempts(
        self,
        method: str,
        path: str,
        json: Mapping[str, Any] | None,
        may_resend: bool,
        hook: AttemptHook | None,
        deadline: float,
        progress: _Progress,
        per_attempt: httpx.Timeout,
    ) -> RawResponse:
        url = self._base + path
        attempt = 1
        # The clock is read for the log only: the deadline is the cancel scope's.
        timed = logger.isEnabledFor(logging.DEBUG)
        while True:
            if attempt > 1 and hook is not None:
                await hook.before_attempt(attempt)
            sent_before = progress.sent
            progress.sent = True  # from here on this attempt may reach the service
            progress.attempt = attempt
            progress.started = started = anyio.current_time() if timed else None
            outcome = await self._send(method, path, url, json, per_attempt)
            progress.started = None
            if started is not None:
                _log_attempt(method, path, attempt, anyio.current_time() - started, outcome)
            if isinstance(outcome, RawResponse):  # a 2xx answer read by the direct sender
                return outcome
            if isinstance(outcome, httpx.Response) and 200 <= outcome.status_code < 300:
                return RawResponse(outcome.status_code, outcome.content)  # as decide() would
            progress.sent = sent_before or may_have_arrived(outcome)
            if (
                hook is not None
                and isinstance(outcome, httpx.Response)
                and outcome.status_code == 429
            ):
                hook.after_refusal(parse_retry_after(outcome.headers.get(_RETRY_AFTER)))
            state = AttemptState(
                method=method,
                path=path,
                attempt=attempt,
                may_resend=may_resend,
                sent=progress.sent,
                time_left=deadline - anyio.current_time(),
                jitter=self._rng.random(),
            )
            decision = decide(outcome, state, self._retry)
            if isinstance(decision, Done):  # pragma: no cover - a 2xx answer returned above
                return decision.response
            if isinstance(decision, Fail):
                raise decision.error from decision.cause
            attempt += 1
            await anyio.sleep(decision.after)

    async def _send(
        self,
        method: str,
        path: str,
        url: str,
        json: Mapping[str, Any] | None,
        per_attempt: httpx.Timeout,
    ) -> httpx.Response | RawResponse | Exception:
        """One HTTP attempt: the response (a 2xx one may be raw), or the httpx error it
        ended with."""
        try:
            if self._borrowed is not None:
                if self._prepared_headers is None:
                    self._prepared_headers = httpx.Headers(self._headers)
                return await self._borrowed.request(
                    method, url, json=json, headers=self._prepared_headers, timeout=per_attempt
                )
            client, direct = self._root._own()
            if direct.usable:
                timeouts = self._timeouts if per_attempt is self._timeout else per_attempt.as_dict()
                return await direct.send(method, url, json, timeouts)
            if per_attempt is self._root._timeout:  # set on the owned client already
                return await client.request(method, url, json=json)
            return await client.request(method, url, json=json, timeout=per_attempt)
        except _HTTPX_ERRORS as error:
            return error
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
