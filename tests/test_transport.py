"""Retries, Retry-After, deadlines, the mapping of every httpx failure, and logging."""

from __future__ import annotations

import email.utils
import itertools
import logging
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import anyio
import httpx
import pytest
import respx

from fay_async import FayClient, RateLimits, _config, exceptions
from fay_async._transport import RetryPolicy, parse_retry_after

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
    # check_create_arguments refuses such a prompt first; the transport still never lets a
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
