"""What reaches the wire (bodies, timeouts), what the log and the errors say word for word."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import httpx
import pytest

from fay_async import FayClient, exceptions

from . import _docs as docs

pytestmark = pytest.mark.anyio

KEY = "fake-key-for-transport-edges"
STATUS_PATH = f"/conversation/{docs.REQUEST_ID}/status"

Handler = Callable[[httpx.Request], Awaitable[httpx.Response]]


def _ok(body: dict[str, Any], status: int = 200, **headers: str) -> httpx.Response:
    return httpx.Response(status, json=body, headers=headers)


async def _answer(request: httpx.Request) -> httpx.Response:
    if request.method == "POST":
        return _ok(docs.CREATED)
    return _ok(docs.STATUS_PENDING)


class Recording(httpx.AsyncBaseTransport):
    """Remembers every request and answers with ``handler`` (by default, the happy path)."""

    def __init__(self, handler: Handler = _answer) -> None:
        self.requests: list[httpx.Request] = []
        self._handler = handler

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        await request.aread()
        return await self._handler(request)


def _fail_first(first: Exception | httpx.Response, then: Handler = _answer) -> Handler:
    calls = 0

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        if calls == 1:
            if isinstance(first, Exception):
                raise first
            return first
        return await then(request)

    return handler


def _sent_json(request: httpx.Request) -> Any:
    return json.loads(request.content)


# --- what reaches the wire -------------------------------------------------------------


async def test_the_body_of_a_create_reaches_the_service_through_a_borrowed_http_client() -> None:
    seen = Recording()
    async with (
        httpx.AsyncClient(transport=seen) as http,
        FayClient(KEY, http_client=http, timeout=4.0) as fay,
    ):
        await fay.create_conversation("prompt text")
        await fay.create_conversation("again", timeout=2.5)
    first, second = seen.requests
    assert _sent_json(first) == {"prompt": "prompt text", "structured_output": False}
    assert first.extensions["timeout"] == dict.fromkeys(("connect", "read", "write", "pool"), 4.0)
    assert _sent_json(second) == {"prompt": "again", "structured_output": False}
    assert second.extensions["timeout"]["read"] == 2.5


async def test_a_per_call_timeout_reaches_the_request_with_its_body() -> None:
    seen = Recording()
    async with FayClient(KEY, transport=seen, timeout=4.0) as fay:
        await fay.create_conversation("prompt text", timeout=2.5)
        await fay.get_status(docs.REQUEST_ID, timeout=1.5, deadline=math.inf)
        await fay.get_status(docs.REQUEST_ID, deadline=math.inf)
    create, status, plain = seen.requests
    assert _sent_json(create) == {"prompt": "prompt text", "structured_output": False}
    assert create.extensions["timeout"] == dict.fromkeys(("connect", "read", "write", "pool"), 2.5)
    assert status.extensions["timeout"] == dict.fromkeys(("connect", "read", "write", "pool"), 1.5)
    assert plain.extensions["timeout"] == dict.fromkeys(("connect", "read", "write", "pool"), 4.0)


async def test_the_client_timeout_reaches_the_request_without_a_deadline() -> None:
    seen = Recording()
    async with FayClient(KEY, transport=seen, timeout=3.0, deadline=None) as fay:
        await fay.create_conversation("prompt text")
    (request,) = seen.requests
    assert _sent_json(request) == {"prompt": "prompt text", "structured_output": False}
    assert request.extensions["timeout"] == dict.fromkeys(("connect", "read", "write", "pool"), 3.0)


class _Hook:
    """An attempt hook that records what the transport tells it."""

    def __init__(self) -> None:
        self.attempts: list[int] = []
        self.refusals: list[float | None] = []

    async def before_attempt(self, attempt: int) -> None:
        self.attempts.append(attempt)

    def after_refusal(self, retry_after: float | None) -> None:
        self.refusals.append(retry_after)


@pytest.mark.parametrize("deadline", [math.inf, 600.0])
async def test_the_hook_hears_of_every_attempt_and_refusal(deadline: float) -> None:
    answers = iter(
        [
            _ok({}, 429, **{"Retry-After": "3"}),
            _ok({}, 429),
            httpx.Response(503),
            _ok(docs.STATUS_PENDING),
        ]
    )

    async def handler(request: httpx.Request) -> httpx.Response:
        return next(answers)

    hook = _Hook()
    async with FayClient(KEY, transport=Recording(handler), max_retries=5) as fay:
        response = await fay._transport.request("GET", STATUS_PATH, hook=hook, deadline=deadline)
    assert response.status_code == 200
    assert hook.attempts == [1, 2, 3, 4]
    assert hook.refusals == [3.0, None]


async def test_a_request_may_be_sent_again_unless_told_otherwise() -> None:
    seen = Recording(_fail_first(httpx.ReadTimeout("slow")))
    async with FayClient(KEY, transport=seen) as fay:
        response = await fay._transport.request("GET", STATUS_PATH)
    assert response.status_code == 200
    assert len(seen.requests) == 2


# --- the log -----------------------------------------------------------------------------


def _messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "fay_async"]


async def test_each_attempt_is_logged_with_its_time(caplog: pytest.LogCaptureFixture) -> None:
    async def slow_answer(request: httpx.Request) -> httpx.Response:
        await anyio.sleep(1.5)
        return _ok(docs.STATUS_PENDING)

    async def connect_fails_later(request: httpx.Request) -> httpx.Response:
        await anyio.sleep(0.25)
        raise httpx.ConnectError("refused")

    seen = Recording(_fail_first(httpx.Response(503), slow_answer))
    caplog.set_level(logging.DEBUG, logger="fay_async")
    await anyio.sleep(100)  # the clock is well past zero: elapsed times are differences
    async with FayClient(KEY, transport=seen) as fay:
        await fay.get_status(docs.REQUEST_ID)
    async with FayClient(KEY, transport=Recording(connect_fails_later), max_retries=0) as fay:
        with pytest.raises(exceptions.APIConnectionError):
            await fay.get_status(docs.REQUEST_ID)
    assert _messages(caplog) == [
        f"GET {STATUS_PATH} -> 503 in 0.000s (attempt 1)",
        f"GET {STATUS_PATH} -> 200 in 1.500s (attempt 2)",
        f"GET {STATUS_PATH} failed after 0.250s (attempt 1): ConnectError",
    ]


async def test_the_attempt_cut_off_by_the_deadline_is_logged_with_its_time(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def hangs(request: httpx.Request) -> httpx.Response:
        await anyio.sleep(3600)
        return _ok(docs.STATUS_PENDING)  # pragma: no cover - cut off by the deadline

    caplog.set_level(logging.DEBUG, logger="fay_async")
    await anyio.sleep(100)
    async with FayClient(KEY, transport=Recording(hangs), deadline=10) as fay:
        with pytest.raises(exceptions.APITimeoutError) as info:
            await fay.get_status(docs.REQUEST_ID)
    assert str(info.value) == f"GET {STATUS_PATH} did not finish within 10 s (all retries included)"
    assert _messages(caplog) == [
        f"GET {STATUS_PATH} cut off by the deadline after 10.000s (attempt 1)"
    ]


# --- what the errors say -------------------------------------------------------------------


async def test_a_deadline_after_a_refusal_says_the_request_was_not_sent() -> None:
    # Refused with 429, the second attempt waits an hour for its budget slot: cut off by
    # the deadline, the request never took effect.
    seen = Recording(_fail_first(_ok({}, 429, **{"Retry-After": "1"})))
    async with FayClient(KEY, transport=seen, rate_limits={"status": 1}, deadline=30) as fay:
        with pytest.raises(exceptions.APITimeoutError) as info:
            await fay.get_status(docs.REQUEST_ID)
    assert len(seen.requests) == 1
    assert info.value.method == "GET"
    assert info.value.path == STATUS_PATH
    assert info.value.sent is False


async def test_a_header_that_is_not_ascii_is_named_in_the_error() -> None:
    seen = Recording()
    async with FayClient(KEY, transport=seen, default_headers={"X-Team": "\u00e9quipe"}) as fay:
        with pytest.raises(exceptions.ConfigurationError) as info:
            await fay.get_status(docs.REQUEST_ID)
    assert str(info.value) == (
        f"GET {STATUS_PATH}: the request could not be encoded as ascii (ordinal not in "
        "range(128)): a header value that is not ASCII (check default_headers and the "
        "http_client's headers) or text that is not valid Unicode"
    )
    assert not seen.requests


async def test_an_encoding_error_without_details_is_named_by_its_type() -> None:
    async def fails(request: httpx.Request) -> httpx.Response:
        raise UnicodeError

    async with FayClient(KEY, transport=Recording(fails)) as fay:
        with pytest.raises(exceptions.ConfigurationError) as info:
            await fay.create_conversation("prompt text")
    assert str(info.value) == (
        "POST /conversations: the request could not be encoded (UnicodeError): a header value "
        "that is not ASCII (check default_headers and the http_client's headers) or text that "
        "is not valid Unicode"
    )


async def test_a_closed_client_says_so() -> None:
    fay = FayClient(KEY, transport=Recording())
    await fay.aclose()
    with pytest.raises(exceptions.ConfigurationError) as info:
        await fay.get_status(docs.REQUEST_ID)
    assert str(info.value) == "this FayClient is closed; create a new one"


async def test_a_client_derived_from_an_open_one_is_open() -> None:
    seen = Recording()
    async with FayClient(KEY, transport=seen) as fay:
        faster = fay.with_options(timeout=1.0)
        assert faster.is_closed is False
        await faster.get_status(docs.REQUEST_ID)
    assert faster.is_closed is True
    assert len(seen.requests) == 1


def test_a_transport_of_another_kind_is_refused_word_for_word() -> None:
    with pytest.raises(exceptions.ConfigurationError) as info:
        FayClient(KEY, transport="x")  # type: ignore[arg-type]
    assert str(info.value) == (
        "transport must be an httpx.AsyncBaseTransport (such as httpx.AsyncHTTPTransport), got str"
    )


async def test_a_transport_with_an_http_client_is_refused_word_for_word() -> None:
    async with httpx.AsyncClient() as http:
        with pytest.raises(exceptions.ConfigurationError) as info:
            FayClient(KEY, transport=Recording(), http_client=http)
    assert str(info.value) == (
        "pass transport or http_client, not both: an http_client brings its own transport"
    )
