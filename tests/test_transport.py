"""Retries, Retry-After, deadlines, the mapping of every httpx failure, and logging."""

from __future__ import annotations

import email.utils
import itertools
import logging
import math
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import anyio
import attrs
import httpx
import pytest
import respx

from fay_async import FayClient, RateLimits, _config, exceptions
from fay_async._retries import (
    AttemptState,
    Done,
    Fail,
    RawResponse,
    Retry,
    RetryPolicy,
    decide_failure,
    parse_retry_after,
)
from fay_async._transport import decide, may_have_arrived
from fay_async.testing import FayEmulator

from . import _docs as docs

pytestmark = pytest.mark.anyio

SECRET_KEY = "fake-key-DO-NOT-LEAK-1234"
STATUS_PATH = f"/conversation/{docs.REQUEST_ID}/status"


@pytest.fixture
def mock() -> Iterator[respx.MockRouter]:
    with respx.mock(base_url=docs.BASE, assert_all_called=False) as router:
        yield router


def client(**kwargs: Any) -> FayClient:
    return FayClient(SECRET_KEY, **kwargs)


def response(body: dict[str, Any], status: int = 200, **headers: str) -> httpx.Response:
    return httpx.Response(status, json=body, headers=headers)


@pytest.mark.parametrize("status", [500, 502, 503, 504, 429])
async def test_status_is_retried_after_transient_answers(
    mock: respx.MockRouter, status: int
) -> None:
    route = mock.get(STATUS_PATH).mock(
        side_effect=[httpx.Response(status, text="busy"), response(docs.STATUS_PENDING)]
    )
    async with client() as fay:
        info = await fay.get_status(docs.REQUEST_ID)
    assert info.request_id == docs.REQUEST_ID
    assert route.call_count == 2


async def test_retries_give_up_after_max_retries(mock: respx.MockRouter) -> None:
    route = mock.get(STATUS_PATH).mock(return_value=httpx.Response(503, text="<h1>down</h1>"))
    async with client(max_retries=3) as fay:
        with pytest.raises(exceptions.ServerError) as info:
            await fay.get_status(docs.REQUEST_ID)
    assert route.call_count == 4
    assert info.value.status_code == 503
    assert "<h1>down</h1>" in str(info.value)


async def test_no_retries_when_max_retries_is_zero(mock: respx.MockRouter) -> None:
    route = mock.get(STATUS_PATH).mock(return_value=httpx.Response(502))
    async with client(max_retries=0) as fay:
        with pytest.raises(exceptions.ServerError):
            await fay.get_status(docs.REQUEST_ID)
    assert route.call_count == 1


@pytest.mark.parametrize("status", [400, 401, 404])
async def test_client_errors_are_not_retried(mock: respx.MockRouter, status: int) -> None:
    body = {400: docs.VALIDATION, 401: docs.INVALID_KEY, 404: docs.NOT_FOUND}[status]
    route = mock.get(STATUS_PATH).mock(return_value=response(body, status))
    async with client() as fay:
        with pytest.raises(exceptions.APIError) as info:
            await fay.get_status(docs.REQUEST_ID)
    assert info.value.status_code == status
    assert route.call_count == 1


async def test_backoff_grows_exponentially_with_full_jitter(mock: respx.MockRouter) -> None:
    times: list[float] = []

    def record(request: httpx.Request) -> httpx.Response:
        times.append(anyio.current_time())
        return httpx.Response(503)

    mock.get(STATUS_PATH).mock(side_effect=record)
    async with client(max_retries=5, deadline=None) as fay:
        with pytest.raises(exceptions.ServerError):
            await fay.get_status(docs.REQUEST_ID)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert len(gaps) == 5
    base, cap = _config.DEFAULT_BACKOFF_BASE, _config.DEFAULT_BACKOFF_CAP
    for retry, gap in enumerate(gaps):
        assert 0 <= gap <= min(cap, base * 2**retry) + 0.01


def test_the_retry_defaults_come_from_the_config() -> None:
    assert RetryPolicy() == RetryPolicy(
        max_retries=_config.DEFAULT_MAX_RETRIES,
        backoff_base=_config.DEFAULT_BACKOFF_BASE,
        backoff_cap=_config.DEFAULT_BACKOFF_CAP,
        max_retry_after=_config.DEFAULT_MAX_RETRY_AFTER,
    )


async def test_retry_after_seconds_is_honoured(mock: respx.MockRouter) -> None:
    times: list[float] = []

    def record(request: httpx.Request) -> httpx.Response:
        times.append(anyio.current_time())
        if len(times) == 1:
            return response(docs.RATE_LIMITED, 429, **{"Retry-After": "30"})
        return response(docs.STATUS_PENDING)

    mock.get(STATUS_PATH).mock(side_effect=record)
    async with client() as fay:
        await fay.get_status(docs.REQUEST_ID)
    assert times[1] - times[0] == pytest.approx(30, abs=0.01)


async def test_retry_after_http_date_is_honoured(mock: respx.MockRouter) -> None:
    times: list[float] = []
    when = email.utils.format_datetime(
        datetime.now(timezone.utc) + timedelta(seconds=20), usegmt=True
    )

    def record(request: httpx.Request) -> httpx.Response:
        times.append(anyio.current_time())
        if len(times) == 1:
            return response(docs.RATE_LIMITED, 429, **{"Retry-After": when})
        return response(docs.STATUS_PENDING)

    mock.get(STATUS_PATH).mock(side_effect=record)
    async with client() as fay:
        await fay.get_status(docs.REQUEST_ID)
    assert 15 <= times[1] - times[0] <= 21


async def test_retry_after_above_the_cap_raises_instead_of_sleeping(
    mock: respx.MockRouter,
) -> None:
    route = mock.get(STATUS_PATH).mock(
        return_value=response(docs.RATE_LIMITED, 429, **{"Retry-After": "3600"})
    )
    started = anyio.current_time()
    async with client(max_retry_after=60) as fay:
        with pytest.raises(exceptions.RateLimitError) as info:
            await fay.get_status(docs.REQUEST_ID)
    assert route.call_count == 1
    assert info.value.retry_after == 3600
    assert "retry after 3600 s" in str(info.value)
    assert anyio.current_time() - started < 1


async def test_rate_limit_without_retry_after_uses_backoff(mock: respx.MockRouter) -> None:
    route = mock.get(STATUS_PATH).mock(return_value=response(docs.RATE_LIMITED, 429))
    async with client(max_retries=2) as fay:
        with pytest.raises(exceptions.RateLimitError) as info:
            await fay.get_status(docs.REQUEST_ID)
    assert route.call_count == 3
    assert info.value.retry_after is None
    assert "retry after" not in str(info.value)


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        (None, None),
        ("12", 12.0),
        (" 1.5 ", 1.5),
        ("-4", 0.0),
        ("soon", None),
        ("nan", None),
        ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0),
    ],
)
def test_parse_retry_after(header: str | None, seconds: float | None) -> None:
    assert parse_retry_after(header) == seconds


def test_parse_retry_after_date_without_zone() -> None:
    future = (datetime.now(timezone.utc) + timedelta(seconds=100)).strftime("%a, %d %b %Y %H:%M:%S")
    value = parse_retry_after(future)
    assert value is not None
    assert 90 < value <= 100


# --- create: never start a research twice -------------------------------------------------


@pytest.mark.parametrize(
    "failure",
    [
        httpx.Response(500),
        httpx.Response(502, text="<html>Bad Gateway</html>"),
        httpx.Response(503),
        httpx.Response(504),
        httpx.ReadTimeout("read timed out"),
        httpx.WriteTimeout("write timed out"),
        httpx.RemoteProtocolError("Server disconnected without sending a response."),
        httpx.ReadError("connection reset"),
    ],
    ids=lambda f: f"http-{f.status_code}" if isinstance(f, httpx.Response) else type(f).__name__,
)
async def test_create_is_never_resent_when_the_server_may_have_started_it(
    mock: respx.MockRouter, failure: httpx.Response | Exception
) -> None:
    route = mock.post("/conversations").mock(side_effect=[failure, response(docs.CREATED)])
    async with client(max_retries=5) as fay:
        with pytest.raises(exceptions.FayError):
            await fay.create_conversation("prompt")
    assert route.call_count == 1


@pytest.mark.parametrize(
    "failure",
    [
        httpx.ConnectError("connection refused"),
        httpx.ConnectTimeout("connect timed out"),
        httpx.PoolTimeout("no connection available"),
        response(docs.RATE_LIMITED, 429, **{"Retry-After": "2"}),
    ],
    ids=lambda f: "http-429" if isinstance(f, httpx.Response) else type(f).__name__,
)
async def test_create_is_retried_when_it_surely_never_arrived(
    mock: respx.MockRouter, failure: httpx.Response | Exception
) -> None:
    route = mock.post("/conversations").mock(side_effect=[failure, response(docs.CREATED)])
    async with client() as fay:
        created = await fay.create_conversation("prompt")
    assert created.request_id == docs.REQUEST_ID
    assert route.call_count == 2


@pytest.mark.parametrize(
    "failure",
    [
        httpx.ReadTimeout("read timed out"),
        httpx.RemoteProtocolError("Server disconnected"),
        httpx.ConnectError("refused"),
    ],
)
async def test_reads_and_stops_are_retried_after_any_transport_failure(
    mock: respx.MockRouter, failure: Exception
) -> None:
    status = mock.get(STATUS_PATH).mock(side_effect=[failure, response(docs.STATUS_PENDING)])
    stop = mock.post(f"/conversation/{docs.REQUEST_ID}/stop").mock(
        side_effect=[failure, response(docs.STOPPED)]
    )
    async with client() as fay:
        await fay.get_status(docs.REQUEST_ID)
        await fay.stop_conversation(docs.REQUEST_ID)
    assert status.call_count == 2
    assert stop.call_count == 2


# --- was it sent? ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("failure", "sent"),
    [
        (httpx.ConnectError("connection refused"), False),
        (httpx.ConnectTimeout("connect timed out"), False),
        (httpx.PoolTimeout("no connection available"), False),
        (httpx.ReadTimeout("read timed out"), True),
        (httpx.WriteTimeout("write timed out"), True),
        (httpx.RemoteProtocolError("Server disconnected without sending a response."), True),
        (httpx.ReadError("connection reset"), True),
    ],
    ids=lambda f: type(f).__name__ if isinstance(f, Exception) else str(f),
)
async def test_a_connection_error_says_whether_the_create_was_sent(
    mock: respx.MockRouter, failure: Exception, sent: bool
) -> None:
    route = mock.post("/conversations").mock(side_effect=failure)
    async with client(max_retries=2) as fay:
        with pytest.raises(exceptions.APIConnectionError) as info:
            await fay.create_conversation("prompt")
    assert info.value.sent is sent
    assert route.call_count == (1 if sent else 3)


@pytest.mark.parametrize(
    ("first", "sent"),
    [
        (httpx.ReadTimeout("read timed out"), True),
        (httpx.Response(503), True),
        (httpx.ConnectError("refused"), False),
        (response(docs.RATE_LIMITED, 429, **{"Retry-After": "1"}), False),
    ],
    ids=["ReadTimeout", "http-503", "ConnectError", "http-429"],
)
async def test_sent_counts_every_attempt_not_only_the_last(
    mock: respx.MockRouter, first: httpx.Response | Exception, sent: bool
) -> None:
    # A stop that timed out reading its answer may have stopped the research, even if
    # the retry then could not connect; an attempt refused with 429 had no effect.
    route = mock.post(f"/conversation/{docs.REQUEST_ID}/stop").mock(
        side_effect=[first, httpx.ConnectError("refused")]
    )
    async with client(max_retries=1) as fay:
        with pytest.raises(exceptions.APIConnectionError) as info:
            await fay.stop_conversation(docs.REQUEST_ID)
    assert route.call_count == 2
    assert info.value.sent is sent


def test_a_connection_error_is_taken_as_sent_unless_said_otherwise() -> None:
    assert exceptions.APIConnectionError("down").sent is True
    assert exceptions.APITimeoutError("slow").sent is True
    assert exceptions.APITimeoutError("slow", sent=False).sent is False


# --- the overall deadline ------------------------------------------------------------------


async def test_deadline_bounds_a_call_across_its_retries(mock: respx.MockRouter) -> None:
    attempts: list[float] = []

    async def slow(request: httpx.Request) -> httpx.Response:
        attempts.append(anyio.current_time())
        await anyio.sleep(40)
        return httpx.Response(503)

    mock.get(STATUS_PATH).mock(side_effect=slow)
    started = anyio.current_time()
    async with client(max_retries=10, deadline=100) as fay:
        with pytest.raises(exceptions.APITimeoutError, match="within 100 s") as info:
            await fay.get_status(docs.REQUEST_ID)
    assert anyio.current_time() - started == pytest.approx(100, abs=0.5)
    assert len(attempts) == 3
    assert isinstance(info.value, TimeoutError)
    assert info.value.sent is True  # the last attempt was on its way when time ran out


async def test_no_sleep_past_the_deadline(mock: respx.MockRouter) -> None:
    route = mock.get(STATUS_PATH).mock(
        return_value=response(docs.RATE_LIMITED, 429, **{"Retry-After": "50"})
    )
    started = anyio.current_time()
    async with client(deadline=30) as fay:
        with pytest.raises(exceptions.RateLimitError):
            await fay.get_status(docs.REQUEST_ID)
    assert route.call_count == 1
    assert anyio.current_time() - started < 1


async def test_connection_failures_stop_retrying_before_the_deadline(
    mock: respx.MockRouter,
) -> None:
    route = mock.get(STATUS_PATH).mock(side_effect=httpx.ConnectError("refused"))
    async with client(max_retries=50, deadline=5) as fay:
        with pytest.raises(exceptions.APIConnectionError) as info:
            await fay.get_status(docs.REQUEST_ID)
    assert not isinstance(info.value, exceptions.APITimeoutError)
    assert 2 <= route.call_count < 51


async def test_per_attempt_timeout_is_passed_to_httpx(mock: respx.MockRouter) -> None:
    seen: list[Any] = []

    def record(request: httpx.Request) -> httpx.Response:
        seen.append(request.extensions["timeout"])
        return response(docs.STATUS_PENDING)

    mock.get(STATUS_PATH).mock(side_effect=record)
    async with client(timeout=7.5) as fay:
        await fay.get_status(docs.REQUEST_ID)
    assert seen == [{"connect": 7.5, "read": 7.5, "write": 7.5, "pool": 7.5}]


# --- every httpx exception maps to a FayError ------------------------------------------------


def _httpx_exception_classes() -> list[type[Exception]]:
    classes = [
        value
        for value in vars(httpx).values()
        if isinstance(value, type) and issubclass(value, Exception)
    ]
    assert len(classes) >= 25
    return sorted(classes, key=lambda c: c.__name__)


def _instance(cls: type[Exception]) -> Exception:
    request = httpx.Request("GET", docs.BASE + STATUS_PATH)
    if cls is httpx.HTTPStatusError:
        return cls("status", request=request, response=httpx.Response(500, request=request))
    for args in (("boom",), ()):
        try:
            return cls(*args)
        except TypeError:
            continue
    raise AssertionError(f"cannot build {cls}")  # pragma: no cover


EXPECTED = {
    "ConnectTimeout": exceptions.APITimeoutError,
    "ReadTimeout": exceptions.APITimeoutError,
    "WriteTimeout": exceptions.APITimeoutError,
    "PoolTimeout": exceptions.APITimeoutError,
    "TimeoutException": exceptions.APITimeoutError,
    "DecodingError": exceptions.UnexpectedResponseError,
    "TooManyRedirects": exceptions.ConfigurationError,
    "UnsupportedProtocol": exceptions.ConfigurationError,
    "InvalidURL": exceptions.ConfigurationError,
}


@pytest.mark.parametrize("cls", _httpx_exception_classes(), ids=lambda c: c.__name__)
async def test_every_httpx_exception_becomes_a_fay_error(
    mock: respx.MockRouter, cls: type[Exception]
) -> None:
    error = _instance(cls)
    mock.get(STATUS_PATH).mock(side_effect=error)
    async with client(max_retries=1) as fay:
        with pytest.raises(exceptions.FayError) as info:
            await fay.get_status(docs.REQUEST_ID)
    expected = EXPECTED.get(cls.__name__, exceptions.APIConnectionError)
    assert type(info.value) is expected
    if isinstance(info.value, exceptions.APIConnectionError):
        not_sent = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
        assert info.value.sent is not isinstance(error, not_sent)
    assert info.value.__cause__ is error
    assert "GET /conversation/" in str(info.value)
    assert SECRET_KEY not in str(info.value)


async def test_a_header_that_is_not_ascii_is_a_configuration_error(
    mock: respx.MockRouter,
) -> None:
    route = mock.get(STATUS_PATH).mock(return_value=response(docs.STATUS_PENDING))
    async with client(default_headers={"X-Token": "s\u00e9cret-value"}) as fay:
        with pytest.raises(exceptions.ConfigurationError, match="could not be encoded") as info:
            await fay.get_status(docs.REQUEST_ID)
    assert "ascii" in str(info.value)
    assert "cret-value" not in str(info.value)
    assert info.value.__cause__ is None
    assert info.value.__suppress_context__
    assert not route.called


async def test_a_body_that_is_not_valid_unicode_is_a_configuration_error(
    mock: respx.MockRouter,
) -> None:
    # CreateRequest refuses such a prompt first; the transport still never lets a
    # UnicodeEncodeError out.
    route = mock.post("/conversations").mock(return_value=response(docs.CREATED))
    async with client() as fay:
        with pytest.raises(exceptions.ConfigurationError, match="as utf-8"):
            await fay._transport.request("POST", "/conversations", json={"prompt": "\ud800"})
    assert not route.called


# --- logging and secrecy -------------------------------------------------------------------


async def test_one_debug_record_per_attempt_without_secrets(
    mock: respx.MockRouter, caplog: pytest.LogCaptureFixture
) -> None:
    mock.get(STATUS_PATH).mock(
        side_effect=[
            httpx.ConnectError("refused"),
            httpx.Response(503),
            response(docs.STATUS_PENDING),
        ]
    )
    caplog.set_level(logging.DEBUG, logger="fay_async")
    async with client() as fay:
        await fay.get_status(docs.REQUEST_ID)
    records = [r for r in caplog.records if r.name == "fay_async"]
    assert len(records) == 3
    messages = [r.getMessage() for r in records]
    assert "(attempt 1)" in messages[0]
    assert "ConnectError" in messages[0]
    assert f"GET {STATUS_PATH} -> 503" in messages[1]
    assert "(attempt 2)" in messages[1]
    assert "-> 200" in messages[2]
    assert "(attempt 3)" in messages[2]
    text = caplog.text + "".join(str(r.args) for r in records)
    assert SECRET_KEY not in text
    assert "Bearer" not in text
    assert "EU battery" not in text  # no bodies


async def test_the_key_is_sent_as_a_bearer_header_with_a_user_agent(
    mock: respx.MockRouter,
) -> None:
    route = mock.get(STATUS_PATH).mock(return_value=response(docs.STATUS_PENDING))
    async with client(default_headers={"X-Team": "research"}) as fay:
        await fay.get_status(docs.REQUEST_ID)
    request = route.calls.last.request
    assert request.headers["Authorization"] == f"Bearer {SECRET_KEY}"
    assert request.headers["User-Agent"].startswith("fay-async/")
    assert request.headers["X-Team"] == "research"
    assert request.headers["Accept"] == "application/json"


async def test_the_key_never_appears_in_errors(mock: respx.MockRouter) -> None:
    mock.get(STATUS_PATH).mock(return_value=response(docs.INVALID_KEY, 401))
    fay = client()
    assert SECRET_KEY not in repr(fay)
    assert SECRET_KEY not in repr(vars(fay))
    with pytest.raises(exceptions.AuthenticationError) as info:
        await fay.get_status(docs.REQUEST_ID)
    assert SECRET_KEY not in str(info.value)
    assert SECRET_KEY not in repr(info.value)
    assert SECRET_KEY not in repr(info.value.body)
    await fay.aclose()


# --- the client-side budget --------------------------------------------------------------------


async def test_429_holds_back_the_client_budget(mock: respx.MockRouter) -> None:
    times: list[float] = []

    def record(request: httpx.Request) -> httpx.Response:
        times.append(anyio.current_time())
        if len(times) == 1:
            return response(docs.RATE_LIMITED, 429, **{"Retry-After": "10"})
        return response(docs.STATUS_PENDING)

    mock.get(STATUS_PATH).mock(side_effect=record)
    async with client(rate_limits=RateLimits(status=1000)) as fay:
        await fay.get_status(docs.REQUEST_ID)
        await fay.get_status(docs.REQUEST_ID)
    assert times[1] - times[0] == pytest.approx(10, abs=0.01)
    assert len(times) == 3


async def test_calls_wait_for_the_client_budget(mock: respx.MockRouter) -> None:
    times: list[float] = []

    def record(request: httpx.Request) -> httpx.Response:
        times.append(anyio.current_time())
        return response(docs.STATUS_PENDING)

    mock.get(STATUS_PATH).mock(side_effect=record)
    async with client(rate_limits={"status": 2}, deadline=None) as fay:
        for _ in range(5):
            await fay.get_status(docs.REQUEST_ID)
    start = times[0]
    assert [t - start for t in times] == pytest.approx([0, 0, 3600, 3600, 7200], abs=2)


async def test_create_beyond_budget_can_raise_instead_of_waiting(mock: respx.MockRouter) -> None:
    route = mock.post("/conversations").mock(return_value=response(docs.CREATED))
    limits = RateLimits(create=1, wait_for_create=False)
    async with client(rate_limits=limits) as fay:
        await fay.create_conversation("first")
        with pytest.raises(exceptions.RateLimitError, match="client-side create budget") as info:
            await fay.create_conversation("second")
    assert route.call_count == 1
    assert info.value.retry_after == pytest.approx(3600, abs=1)


async def test_waiting_for_the_budget_does_not_count_against_the_deadline(
    mock: respx.MockRouter,
) -> None:
    route = mock.get(STATUS_PATH).mock(return_value=response(docs.STATUS_PENDING))
    async with client(rate_limits={"status": 1}, deadline=30) as fay:
        await fay.get_status(docs.REQUEST_ID)
        started = anyio.current_time()
        await fay.get_status(docs.REQUEST_ID)  # waits an hour for its slot, then succeeds
    assert anyio.current_time() - started == pytest.approx(3600, abs=2)
    assert route.call_count == 2


# --- RetryPolicy -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "bad"),
    [
        ("max_retries", -1),
        ("max_retries", 1.5),
        ("max_retries", True),
        ("backoff_base", 0),
        ("backoff_base", math.nan),
        ("backoff_cap", math.inf),
        ("backoff_cap", -1.0),
        ("max_retry_after", math.nan),
        ("max_retry_after", math.inf),
        ("max_retry_after", "60"),
    ],
)
def test_retry_policy_refuses_bad_values(field: str, bad: object) -> None:
    with pytest.raises((TypeError, ValueError), match=rf"RetryPolicy\.{field} must be") as info:
        RetryPolicy(**{field: bad})
    shown = type(bad).__name__ if isinstance(info.value, TypeError) else repr(bad)
    assert shown in str(info.value)


def test_a_nan_max_retry_after_is_refused() -> None:
    with pytest.raises(ValueError, match="max_retry_after must be a positive number of seconds"):
        RetryPolicy(max_retry_after=float("nan"))
    with pytest.raises(exceptions.ConfigurationError, match="max_retry_after must be a positive"):
        client(max_retry_after=float("nan"))


def test_backoff_is_the_jitter_times_the_capped_exponential_step() -> None:
    policy = RetryPolicy(backoff_base=0.5, backoff_cap=3.0)
    assert policy.backoff(0, 0.5) == 0.25
    assert policy.backoff(2, 1.0) == 2.0
    assert policy.backoff(10, 0.5) == 1.5


# --- decide(): the table of what follows an attempt ------------------------------------------


def _state(**changes: Any) -> AttemptState:
    values: dict[str, Any] = {
        "method": "GET",
        "path": STATUS_PATH,
        "attempt": 1,
        "may_resend": True,
        "sent": True,
        "time_left": math.inf,
        "jitter": 0.5,
    }
    values.update(changes)
    return AttemptState(**values)


POLICY = RetryPolicy(max_retries=2, backoff_base=1.0, backoff_cap=8.0, max_retry_after=60.0)


def _answer(status: int, retry_after: str | None = None) -> httpx.Response:
    headers = {"Retry-After": retry_after} if retry_after is not None else {}
    if status == 429:
        return httpx.Response(status, json=docs.RATE_LIMITED, headers=headers)
    return httpx.Response(status, headers=headers)


@pytest.mark.parametrize(
    ("outcome", "changes", "expected"),
    [
        (_answer(503), {}, Retry(0.5)),
        (_answer(503), {"attempt": 2}, Retry(1.0)),
        (_answer(503), {"attempt": 3}, exceptions.ServerError),
        (_answer(503), {"may_resend": False}, exceptions.ServerError),
        (_answer(503), {"time_left": 0.5}, exceptions.ServerError),
        (_answer(503), {"time_left": 0.6}, Retry(0.5)),
        (_answer(429, "7"), {"may_resend": False}, Retry(7.0)),
        (_answer(429, "61"), {}, exceptions.RateLimitError),
        (_answer(429, "7"), {"time_left": 7.0}, exceptions.RateLimitError),
        (_answer(429), {}, Retry(0.5)),
        (_answer(503, "3"), {}, Retry(3.0)),
        (_answer(400), {}, exceptions.UnexpectedResponseError),
        (_answer(300), {}, exceptions.UnexpectedResponseError),
        (httpx.ConnectError("refused"), {"may_resend": False}, Retry(0.5)),
        (httpx.ReadTimeout("slow"), {"may_resend": False}, exceptions.APITimeoutError),
        (httpx.ReadTimeout("slow"), {}, Retry(0.5)),
        (httpx.ReadTimeout("slow"), {"attempt": 3}, exceptions.APITimeoutError),
        (httpx.ReadError("reset"), {"time_left": 0.1}, exceptions.APIConnectionError),
        (httpx.DecodingError("bad gzip"), {}, exceptions.UnexpectedResponseError),
    ],
    ids=lambda v: None if isinstance(v, dict) else repr(v)[:40],
)
def test_decide(
    outcome: httpx.Response | Exception,
    changes: dict[str, Any],
    expected: Retry | type[exceptions.FayError],
) -> None:
    decision = decide(outcome, _state(**changes), POLICY)
    if isinstance(expected, Retry):
        assert decision == expected
        return
    assert isinstance(decision, Fail)
    assert type(decision.error) is expected
    assert decision.cause is (outcome if isinstance(outcome, Exception) else None)


def test_decide_a_success() -> None:
    decision = decide(httpx.Response(201, content=b"{}"), _state(), POLICY)
    assert decision == Done(RawResponse(201, b"{}"))


def test_decide_keeps_the_retry_after_on_the_rate_limit_error() -> None:
    decision = decide(_answer(429, "90"), _state(), POLICY)
    assert isinstance(decision, Fail)
    assert isinstance(decision.error, exceptions.RateLimitError)
    assert decision.error.retry_after == 90.0


@pytest.mark.parametrize(
    ("outcome", "arrived"),
    [
        (httpx.Response(200), True),
        (httpx.Response(503), True),
        (httpx.Response(429), False),
        (httpx.ConnectError("refused"), False),
        (httpx.PoolTimeout("busy"), False),
        (httpx.ReadTimeout("slow"), True),
    ],
)
def test_may_have_arrived(outcome: httpx.Response | Exception, arrived: bool) -> None:
    assert may_have_arrived(outcome) is arrived


# --- answers that are not a success ---------------------------------------------------------


async def test_http_300_is_not_a_success(mock: respx.MockRouter) -> None:
    route = mock.get(STATUS_PATH).mock(return_value=response(docs.STATUS_PENDING, 300))
    async with client() as fay:
        with pytest.raises(exceptions.UnexpectedResponseError) as info:
            await fay.get_status(docs.REQUEST_ID)
    assert info.value.status_code == 300
    assert route.call_count == 1


async def test_plain_http_500_without_an_envelope_is_a_server_error(
    mock: respx.MockRouter,
) -> None:
    mock.get(STATUS_PATH).mock(return_value=httpx.Response(500, text="Internal Server Error"))
    async with client(max_retries=0) as fay:
        with pytest.raises(exceptions.ServerError) as info:
            await fay.get_status(docs.REQUEST_ID)
    assert info.value.status_code == 500
    assert "Internal Server Error" in str(info.value)


# --- what a create's connection error says ------------------------------------------------


async def _slow(request: httpx.Request) -> httpx.Response:
    await anyio.sleep(600)
    return response(docs.CREATED)  # pragma: no cover - cut off by the deadline


@pytest.mark.parametrize(
    ("failure", "kind", "sent"),
    [
        (httpx.ConnectError("refused"), exceptions.APIConnectionError, False),
        (httpx.ConnectTimeout("slow connect"), exceptions.APITimeoutError, False),
        (httpx.ReadTimeout("slow read"), exceptions.APITimeoutError, True),
        (httpx.RemoteProtocolError("dropped"), exceptions.APIConnectionError, True),
        (_slow, exceptions.APITimeoutError, True),
    ],
    ids=["ConnectError", "ConnectTimeout", "ReadTimeout", "RemoteProtocolError", "deadline"],
)
async def test_a_create_connection_error_names_the_call_and_whether_it_was_sent(
    mock: respx.MockRouter, failure: Any, kind: type[exceptions.APIConnectionError], sent: bool
) -> None:
    mock.post("/conversations").mock(side_effect=failure)
    async with client(max_retries=1, deadline=30) as fay:
        with pytest.raises(exceptions.APIConnectionError) as info:
            await fay.create_conversation("prompt")
    assert type(info.value) is kind
    assert info.value.method == "POST"
    assert info.value.path == "/conversations"
    assert info.value.sent is sent


async def test_an_attempt_cut_off_by_the_deadline_has_its_debug_record(
    mock: respx.MockRouter, caplog: pytest.LogCaptureFixture
) -> None:
    calls = 0

    async def first_fails_then_hangs(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        if calls == 1:
            return httpx.Response(503)
        return await _slow(request)

    mock.get(STATUS_PATH).mock(side_effect=first_fails_then_hangs)
    caplog.set_level(logging.DEBUG, logger="fay_async")
    async with client(deadline=10) as fay:
        with pytest.raises(exceptions.APITimeoutError, match="within 10 s"):
            await fay.get_status(docs.REQUEST_ID)
    messages = [r.getMessage() for r in caplog.records if r.name == "fay_async"]
    assert len(messages) == calls == 2
    assert "-> 503" in messages[0]
    assert f"GET {STATUS_PATH} cut off by the deadline after " in messages[1]
    assert messages[1].endswith("(attempt 2)")


async def test_a_deadline_between_attempts_adds_no_record(
    mock: respx.MockRouter, caplog: pytest.LogCaptureFixture
) -> None:
    # The second attempt waits an hour for its budget slot: the deadline ends the wait,
    # and no attempt was on the wire to report.
    mock.get(STATUS_PATH).mock(side_effect=[httpx.Response(503), response(docs.STATUS_PENDING)])
    caplog.set_level(logging.DEBUG, logger="fay_async")
    async with client(rate_limits={"status": 1}, deadline=30) as fay:
        with pytest.raises(exceptions.APITimeoutError):
            await fay.get_status(docs.REQUEST_ID)
    messages = [r.getMessage() for r in caplog.records if r.name == "fay_async"]
    assert len(messages) == 1


# --- the httpx client: borrowed, owned, or built on a given transport -----------------------


class RecordingTransport(httpx.AsyncBaseTransport):
    """Answers every request with a pending status and remembers requests and closing."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []
        self.closed = False

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return response(docs.STATUS_PENDING)

    async def aclose(self) -> None:
        self.closed = True


async def test_a_borrowed_http_client_is_used_with_the_call_headers() -> None:
    seen = RecordingTransport()
    async with httpx.AsyncClient(transport=seen, headers={"X-Team": "research"}) as http:
        async with client(http_client=http, timeout=4.0) as fay:
            assert fay._transport.http is http
            await fay.get_status(docs.REQUEST_ID)
        assert not seen.closed
    (request,) = seen.requests
    assert request.url == docs.BASE + STATUS_PATH
    assert request.headers["Authorization"] == f"Bearer {SECRET_KEY}"
    assert request.headers["User-Agent"].startswith("fay-async/")
    assert request.headers["X-Team"] == "research"
    assert request.extensions["timeout"]["read"] == 4.0


async def test_a_given_transport_is_owned_and_closed_with_the_client() -> None:
    seen = RecordingTransport()
    async with client(transport=seen, timeout=4.0, default_headers={"X-Team": "t"}) as fay:
        await fay.get_status(docs.REQUEST_ID)
        await fay.get_status(docs.REQUEST_ID)
        assert not seen.closed
    assert seen.closed
    assert len(seen.requests) == 2
    request = seen.requests[-1]
    assert request.headers["Authorization"] == f"Bearer {SECRET_KEY}"
    assert request.headers["User-Agent"].startswith("fay-async/")
    assert request.headers["Accept"] == "application/json"
    assert request.headers["X-Team"] == "t"
    assert request.extensions["timeout"] == {"connect": 4.0, "read": 4.0, "write": 4.0, "pool": 4.0}


async def test_a_given_transport_is_closed_even_if_never_used() -> None:
    seen = RecordingTransport()
    await client(transport=seen).aclose()
    assert seen.closed
    assert not seen.requests


async def test_the_emulator_client_is_a_plain_client_on_its_transport() -> None:
    emulator = FayEmulator()
    async with emulator.client() as fay:
        assert type(fay) is FayClient
        created = await fay.create_conversation("question")
        http = fay._transport.http
    assert created.request_id
    assert http.is_closed


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"http_client": "x"}, "http_client must be an httpx.AsyncClient, got str"),
        ({"transport": "x"}, "transport must be an httpx.AsyncBaseTransport"),
        ({"transport": httpx.BaseTransport()}, "transport must be an .* got BaseTransport"),
    ],
)
def test_a_wrong_http_client_or_transport_is_refused(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(exceptions.ConfigurationError, match=message):
        client(**kwargs)


async def test_a_transport_and_an_http_client_together_are_refused() -> None:
    seen = RecordingTransport()
    async with httpx.AsyncClient() as http:
        with pytest.raises(exceptions.ConfigurationError, match="transport or http_client"):
            client(http_client=http, transport=seen)


@pytest.mark.parametrize(
    ("failure", "kind", "text"),
    [
        (
            httpx.ConnectError("refused"),
            exceptions.APIConnectionError,
            f"GET {STATUS_PATH}: could not talk to the Fay API (ConnectError: refused)",
        ),
        (httpx.ConnectError(""), exceptions.APIConnectionError, "Fay API (ConnectError)"),
        (
            httpx.ReadTimeout("slow"),
            exceptions.APITimeoutError,
            f"GET {STATUS_PATH} timed out (ReadTimeout: slow)",
        ),
        (
            httpx.DecodingError("bad gzip"),
            exceptions.UnexpectedResponseError,
            "the response body could not be decoded (DecodingError: bad gzip)",
        ),
        (
            httpx.UnsupportedProtocol("ftp"),
            exceptions.ConfigurationError,
            f"GET {STATUS_PATH}: UnsupportedProtocol: ftp; check the base URL",
        ),
    ],
)
async def test_a_failure_names_the_call_and_the_httpx_error(
    mock: respx.MockRouter, failure: Exception, kind: type[Exception], text: str
) -> None:
    mock.get(STATUS_PATH).mock(side_effect=failure)
    async with client(max_retries=0) as fay:
        with pytest.raises(kind) as info:
            await fay.get_status(docs.REQUEST_ID)
    assert text in str(info.value)
    if isinstance(info.value, exceptions.APIError):
        assert info.value.status_code == 0


def test_backoff_doubles_with_each_retry_up_to_the_cap() -> None:
    policy = RetryPolicy(backoff_base=1.0, backoff_cap=100.0)
    assert [policy.backoff(retry, 0.5) for retry in (0, 1, 3, 10)] == [0.5, 1.0, 4.0, 50.0]


def test_a_retry_that_would_end_exactly_at_the_deadline_is_not_made() -> None:
    policy = RetryPolicy(backoff_base=1.0)
    state = AttemptState(
        method="GET", path="/p", attempt=1, may_resend=True, sent=True, time_left=0.5, jitter=0.5
    )
    error = exceptions.APIConnectionError("down")
    cause = httpx.ReadError("reset")
    decision = decide_failure(error, cause, retryable=True, state=state, policy=policy)
    assert decision == Fail(error, cause)
    state = attrs.evolve(state, time_left=0.51)
    assert decide_failure(error, cause, retryable=True, state=state, policy=policy) == Retry(0.5)


async def test_a_derived_client_keeps_its_own_deadline_and_closes_with_its_parent(
    mock: respx.MockRouter,
) -> None:
    async def slow(request: httpx.Request) -> httpx.Response:
        await anyio.sleep(600)
        return response(docs.STATUS_PENDING)

    mock.get(STATUS_PATH).mock(side_effect=slow)
    async with client(deadline=None, timeout=1000) as fay:
        quick = fay.with_options(deadline=5.0).with_options(max_retries=0)
        assert quick.is_closed is False
        started = anyio.current_time()
        with pytest.raises(exceptions.APITimeoutError):
            await quick.get_status(docs.REQUEST_ID)
        assert anyio.current_time() - started == pytest.approx(5.0)
    assert quick.is_closed is True


async def test_a_derived_client_keeps_its_longest_retry_after(mock: respx.MockRouter) -> None:
    refused = response(docs.RATE_LIMITED, 429, **{"Retry-After": "20"})
    route = mock.get(STATUS_PATH).mock(side_effect=[refused, response(docs.STATUS_PENDING)])
    async with client(max_retry_after=60) as fay:
        with pytest.raises(exceptions.RateLimitError):
            await fay.with_options(max_retry_after=10).get_status(docs.REQUEST_ID)
    assert route.call_count == 1


@pytest.mark.parametrize(("call", "method"), [("get_output", "GET"), ("stop_conversation", "POST")])
async def test_a_failure_names_the_method_as_sent(
    mock: respx.MockRouter, call: str, method: str
) -> None:
    mock.route().mock(side_effect=httpx.ConnectError("refused"))
    async with client(max_retries=0) as fay:
        with pytest.raises(exceptions.APIConnectionError) as info:
            await getattr(fay, call)(docs.REQUEST_ID)
    assert info.value.method == method
    assert str(info.value).startswith(f"{method} /conversation/")


@pytest.mark.parametrize("call", ["get_output", "stop_conversation"])
async def test_output_and_stop_draw_on_their_own_budgets(mock: respx.MockRouter, call: str) -> None:
    mock.route().mock(side_effect=httpx.ConnectError("refused"))
    async with client(max_retries=0, rate_limits={"output": 5, "stop": 5}) as fay:
        with pytest.raises(exceptions.APIConnectionError):
            await getattr(fay, call)(docs.REQUEST_ID)
        limiter = fay.rate_limiter
        assert limiter is not None
        endpoint = "output" if call == "get_output" else "stop"
        other = "stop" if call == "get_output" else "output"
        assert (limiter.available(endpoint), limiter.available(other)) == (4, 5)
