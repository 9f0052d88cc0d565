"""FayClient: configuration, request ids, the four endpoints and check-then-stop."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import respx

from fay_async import (
    ConversationInfo,
    FayClient,
    ResearchStatus,
    StopResult,
    exceptions,
    validate_request_id,
)

from . import _docs as docs

KEY = "fake-key"
STOP_PATH = f"/conversation/{docs.REQUEST_ID}/stop"
STATUS_PATH = f"/conversation/{docs.REQUEST_ID}/status"


@pytest.fixture
def mock() -> Iterator[respx.MockRouter]:
    with respx.mock(base_url=docs.BASE, assert_all_called=False) as router:
        yield router


def ok(body: dict[str, Any], status: int = 200) -> httpx.Response:
    return httpx.Response(status, json=body)


# --- configuration --------------------------------------------------------------------------


def test_missing_key_says_how_to_set_it() -> None:
    with pytest.raises(exceptions.ConfigurationError) as info:
        FayClient()
    assert "FAY_API_KEY" in str(info.value)
    assert "api_key=" in str(info.value)


@pytest.mark.parametrize("key", ["", "   "])
def test_empty_key_is_refused(key: str) -> None:
    with pytest.raises(exceptions.ConfigurationError, match="no Fay API key"):
        FayClient(key)


@pytest.mark.parametrize("key", ["fake key", "fake-key\n", "fake\x00key"])
def test_key_with_white_space_is_refused_without_echoing_it(key: str) -> None:
    with pytest.raises(exceptions.ConfigurationError, match="white space") as info:
        FayClient(key)
    assert key.strip() not in str(info.value)


@pytest.mark.parametrize("key", ["\u201cfake-key\u201d", "fake\u2013key", "fake-k\u00e9y"])
def test_key_that_is_not_ascii_is_refused_without_echoing_it(key: str) -> None:
    # A typographic quote or dash pasted with the key cannot go in an HTTP header.
    with pytest.raises(exceptions.ConfigurationError, match="not ASCII") as info:
        FayClient(key)
    assert "fake" not in str(info.value)
    assert "key" not in str(info.value).replace("API key", "")


def test_key_must_be_a_string() -> None:
    with pytest.raises(exceptions.ConfigurationError, match="must be a string"):
        FayClient(12345)  # type: ignore[arg-type]


def test_key_and_base_url_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAY_API_KEY", "env-fake-key")
    monkeypatch.setenv("FAY_BASE_URL", "https://research.example.test/")
    fay = FayClient()
    assert fay.base_url == "https://research.example.test"
    assert "env-fake-key" not in repr(fay)
    assert repr(fay) == "FayClient(base_url='https://research.example.test', api_key='***')"


def test_explicit_arguments_win_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAY_BASE_URL", "https://env.example.test")
    assert FayClient(KEY, base_url="https://arg.example.test").base_url == (
        "https://arg.example.test"
    )


def test_default_base_url() -> None:
    assert FayClient(KEY).base_url == "https://api.fay.work"


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("https://api.fay.work/api/v1", "https://api.fay.work"),
        ("https://api.fay.work/api/v1/", "https://api.fay.work"),
        ("https://gateway.example.test/fay/", "https://gateway.example.test/fay"),
        ("http://127.0.0.1:8765", "http://127.0.0.1:8765"),
        ("http://127.5.0.9", "http://127.5.0.9"),
        ("http://localhost:9000", "http://localhost:9000"),
        ("http://[::1]:8080", "http://[::1]:8080"),
        ("   ", "https://api.fay.work"),
    ],
)
def test_base_url_forms(given: str, expected: str) -> None:
    assert FayClient(KEY, base_url=given).base_url == expected


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ("http://api.fay.work", "plain http to a remote host"),
        ("http://10.0.0.5:8000", "plain http to a remote host"),
        ("ftp://api.fay.work", "must be an http"),
        ("api.fay.work", "must be an http"),
        ("https://", "must be an http"),
        ("https://api.fay.work/?x=1", "query"),
        ("https://user:pw@api.fay.work", "credentials"),
        ("https://api.fay.work:99999", "not a valid URL"),
    ],
)
def test_unusable_base_urls(given: str, message: str) -> None:
    with pytest.raises(exceptions.ConfigurationError, match=message):
        FayClient(KEY, base_url=given)


def test_unusable_base_url_from_the_environment_names_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FAY_BASE_URL", "http://api.fay.work")
    with pytest.raises(exceptions.ConfigurationError, match="FAY_BASE_URL"):
        FayClient(KEY)


def test_plain_http_to_a_remote_host_with_explicit_opt_in() -> None:
    fay = FayClient(KEY, base_url="http://fay.internal.test", allow_insecure_http=True)
    assert fay.base_url == "http://fay.internal.test"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_retries": -1}, "max_retries"),
        ({"max_retries": 1.5}, "max_retries"),
        ({"max_retries": True}, "max_retries"),
        ({"timeout": 0}, "timeout"),
        ({"timeout": "30"}, "timeout"),
        ({"max_retry_after": -1}, "max_retry_after"),
        ({"deadline": 0}, "deadline"),
        ({"deadline": "soon"}, "deadline"),
        ({"timeout": float("nan")}, "timeout must be a positive number of seconds, got nan"),
        ({"timeout": float("inf")}, "timeout must be a finite number of seconds, got inf"),
        ({"deadline": float("nan")}, "deadline must be a positive number of seconds, got nan"),
        (
            {"max_retry_after": float("nan")},
            "max_retry_after must be a positive number of seconds, got nan",
        ),
        ({"base_url": 123}, "base_url must be a string such as 'https://api.fay.work', got int"),
        ({"rate_limits": {"status": 0}}, "rate_limits"),
        ({"rate_limits": {"statuss": 10}}, "unknown rate-limit endpoints"),
        ({"default_headers": {"authorization": "Bearer other"}}, "Authorization"),
    ],
)
def test_bad_options(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(exceptions.ConfigurationError, match=message):
        FayClient(KEY, **kwargs)


def test_an_infinite_deadline_means_none() -> None:
    assert repr(FayClient(KEY, deadline=float("inf"))) == (
        "FayClient(base_url='https://api.fay.work', api_key='***')"
    )


# --- request ids ----------------------------------------------------------------------------


BAD_IDS = [
    ("", "empty"),
    ("x" * 129, "129 characters"),
    ("../admin", "'/'"),
    ("abc/def", "'/'"),
    ("abc\\def", "'\\\\\\\\'"),
    ("a..b", "'..'"),
    ("id?x=1", "'\\?'"),
    ("id#frag", "'#'"),
    ("id%2F", "'%'"),
    ("id with space", "white space"),
    ("id\ttab", "white space"),
    ("id\n", "white space"),
    ("id\x00nul", "control character"),
    ("id\u200bzero-width", "control character"),
    (".", "is a dot segment, which a URL would collapse"),
]


@pytest.mark.anyio
@pytest.mark.parametrize(("request_id", "message"), BAD_IDS)
@pytest.mark.parametrize(
    "method", ["get_status", "get_output", "stop_conversation", "stop_if_running"]
)
async def test_unsafe_request_ids_are_refused_before_sending(
    mock: respx.MockRouter, request_id: str, message: str, method: str
) -> None:
    async with FayClient(KEY) as fay:
        with pytest.raises(exceptions.InvalidRequestIdError, match=message) as info:
            await getattr(fay, method)(request_id)
    assert info.value.request_id == request_id
    assert isinstance(info.value, ValueError)
    assert not mock.calls


@pytest.mark.parametrize("value", [None, 42, b"bytes"])
def test_request_id_must_be_a_string(value: object) -> None:
    with pytest.raises(exceptions.InvalidRequestIdError, match="must be a string"):
        validate_request_id(value)


@pytest.mark.parametrize("value", [docs.REQUEST_ID, "x" * 128, "req_01HZX-abc.def"])
def test_safe_request_ids(value: str) -> None:
    assert validate_request_id(value) == value


# --- the endpoints ----------------------------------------------------------------------------


@pytest.mark.anyio
async def test_create_sends_the_documented_body(mock: respx.MockRouter) -> None:
    route = mock.post("/conversations").mock(return_value=ok(docs.CREATED))
    async with FayClient(KEY) as fay:
        created = await fay.create_conversation("What changed?")
        await fay.create_conversation(
            "Summarise", structured_output=True, output_schema={"type": "object"}
        )
    assert created.request_id == docs.REQUEST_ID
    assert created.status is ResearchStatus.PENDING
    first, second = (json.loads(call.request.content) for call in route.calls)
    assert first == {"prompt": "What changed?", "structured_output": False}
    assert second == {
        "prompt": "Summarise",
        "structured_output": True,
        "output_schema": {"type": "object"},
    }
    assert route.calls.last.request.headers["Content-Type"] == "application/json"


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("args", "kwargs", "error", "message"),
    [
        ((None,), {}, TypeError, "prompt must be a string"),
        (("",), {}, ValueError, "prompt is empty"),
        ((" \n",), {}, ValueError, "prompt is empty"),
        (
            ("p",),
            {"structured_output": "yes"},
            TypeError,
            "structured_output must be True or False",
        ),
        (("p",), {"structured_output": True, "output_schema": "{}"}, TypeError, "a mapping"),
        (("p",), {"output_schema": {"type": "object"}}, ValueError, "structured_output=True"),
        (
            ("p",),
            {"structured_output": True, "output_schema": {"x": {1, 2}}},
            TypeError,
            "not JSON-serialisable",
        ),
        (
            ("p",),
            {"structured_output": True, "output_schema": {"x": float("nan")}},
            TypeError,
            "not JSON-serialisable",
        ),
        (("caf\udce9",), {}, ValueError, r"prompt is not valid Unicode text: .*'\\udce9'"),
        (("\ud800 q",), {}, ValueError, "prompt is not valid Unicode text: .* position 0"),
        (
            ("p",),
            {"structured_output": True, "output_schema": {"title": "x\ud800"}},
            ValueError,
            "output_schema is not valid Unicode text",
        ),
        (
            ("p",),
            {"structured_output": True, "output_schema": {"\udcff": 1}},
            ValueError,
            "output_schema is not valid Unicode text",
        ),
    ],
)
async def test_create_refuses_bad_arguments_before_sending(
    mock: respx.MockRouter,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    error: type[Exception],
    message: str,
) -> None:
    async with FayClient(KEY) as fay:
        with pytest.raises(error, match=message):
            await fay.create_conversation(*args, **kwargs)
    assert not mock.calls


@pytest.mark.anyio
async def test_validation_error_from_the_service(mock: respx.MockRouter) -> None:
    mock.post("/conversations").mock(return_value=ok(docs.VALIDATION, 400))
    async with FayClient(KEY) as fay:
        with pytest.raises(exceptions.RequestValidationError, match="Invalid prompt format"):
            await fay.create_conversation("p")


@pytest.mark.anyio
async def test_status_output_and_stop(mock: respx.MockRouter) -> None:
    mock.get(STATUS_PATH).mock(return_value=ok(docs.STATUS_COMPLETED))
    mock.get(f"/conversation/{docs.REQUEST_ID}/output").mock(
        return_value=ok(docs.OUTPUT_STRUCTURED)
    )
    stop = mock.post(STOP_PATH).mock(return_value=ok(docs.STOPPED))
    async with FayClient(KEY) as fay:
        info = await fay.get_status(docs.REQUEST_ID)
        output = await fay.get_output(docs.REQUEST_ID)
        stopped = await fay.stop_conversation(docs.REQUEST_ID)
    assert info.status is ResearchStatus.COMPLETED
    assert output.output == {"title": "EU battery regulation", "changes": ["a", "b", "c"]}
    assert stopped.status is ResearchStatus.STOPPED
    assert stopped.message == "Conversation stopped successfully"
    assert stop.calls.last.request.content == b""


@pytest.mark.anyio
async def test_output_before_completion(mock: respx.MockRouter) -> None:
    mock.get(f"/conversation/{docs.REQUEST_ID}/output").mock(
        return_value=ok(docs.NOT_COMPLETED, 400)
    )
    async with FayClient(KEY) as fay:
        with pytest.raises(exceptions.ResearchNotCompletedError):
            await fay.get_output(docs.REQUEST_ID)


@pytest.mark.anyio
async def test_a_proxy_prefix_is_kept_in_the_path(mock: respx.MockRouter) -> None:
    with respx.mock(base_url="https://gateway.example.test/fay/api/v1") as proxied:
        route = proxied.get(STATUS_PATH).mock(return_value=ok(docs.STATUS_PENDING))
        async with FayClient(KEY, base_url="https://gateway.example.test/fay") as fay:
            await fay.get_status(docs.REQUEST_ID)
    assert route.called


# --- check-then-stop ------------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("status", ["PENDING", "PROCESSING"])
async def test_stop_if_running_stops_a_running_research(
    mock: respx.MockRouter, status: str
) -> None:
    mock.get(STATUS_PATH).mock(
        return_value=ok(docs.ok({**docs.STATUS_PENDING["data"], "status": status}))
    )
    stop = mock.post(STOP_PATH).mock(return_value=ok(docs.STOPPED))
    async with FayClient(KEY) as fay:
        result = await fay.stop_if_running(docs.REQUEST_ID)
    assert isinstance(result, StopResult)
    assert result.status is ResearchStatus.STOPPED
    assert stop.call_count == 1


@pytest.mark.anyio
@pytest.mark.parametrize("body", [docs.STATUS_COMPLETED, docs.STATUS_FAILED])
async def test_stop_if_running_reports_an_ended_research(
    mock: respx.MockRouter, body: dict[str, Any]
) -> None:
    mock.get(STATUS_PATH).mock(return_value=ok(body))
    stop = mock.post(STOP_PATH).mock(return_value=ok(docs.STOPPED))
    async with FayClient(KEY) as fay:
        result = await fay.stop_if_running(docs.REQUEST_ID)
    assert isinstance(result, ConversationInfo)
    assert result.status == body["data"]["status"]
    assert not stop.called


@pytest.mark.anyio
@pytest.mark.parametrize(
    "stop_answer",
    [
        ok(docs.ALREADY_COMPLETED, 400),
        ok(docs.err("CONVERSATION_ALREADY_STOPPED", "Already stopped"), 400),
        ok(docs.err("SOMETHING_ELSE", "Gone"), 409),
    ],
)
async def test_stop_if_running_when_the_research_ends_in_between(
    mock: respx.MockRouter, stop_answer: httpx.Response
) -> None:
    status = mock.get(STATUS_PATH).mock(
        side_effect=[ok(docs.STATUS_PENDING), ok(docs.STATUS_COMPLETED)]
    )
    mock.post(STOP_PATH).mock(return_value=stop_answer)
    async with FayClient(KEY) as fay:
        result = await fay.stop_if_running(docs.REQUEST_ID)
    assert isinstance(result, ConversationInfo)
    assert result.status is ResearchStatus.COMPLETED
    assert status.call_count == 2


@pytest.mark.anyio
async def test_stop_if_running_raises_a_refusal_of_a_running_research(
    mock: respx.MockRouter,
) -> None:
    mock.get(STATUS_PATH).mock(return_value=ok(docs.STATUS_PENDING))
    mock.post(STOP_PATH).mock(return_value=ok(docs.err("STOP_REFUSED", "No"), 400))
    async with FayClient(KEY) as fay:
        with pytest.raises(exceptions.BadRequestError, match="STOP_REFUSED"):
            await fay.stop_if_running(docs.REQUEST_ID)


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("answer", "error"),
    [
        (ok(docs.NOT_FOUND, 404), exceptions.NotFoundError),
        (ok(docs.INVALID_KEY, 401), exceptions.AuthenticationError),
    ],
)
async def test_stop_if_running_never_reads_auth_or_not_found_as_finished(
    mock: respx.MockRouter, answer: httpx.Response, error: type[Exception]
) -> None:
    status = mock.get(STATUS_PATH).mock(return_value=ok(docs.STATUS_PENDING))
    mock.post(STOP_PATH).mock(return_value=answer)
    async with FayClient(KEY) as fay:
        with pytest.raises(error):
            await fay.stop_if_running(docs.REQUEST_ID)
    assert status.call_count == 1


@pytest.mark.anyio
async def test_stop_first_takes_the_documented_already_completed_at_its_word(
    mock: respx.MockRouter,
) -> None:
    # check_first=False is the manager's way: no status call before the stop, and none
    # after a refusal whose documented code says the research had completed.
    status = mock.get(STATUS_PATH).mock(return_value=ok(docs.STATUS_COMPLETED))
    mock.post(STOP_PATH).mock(return_value=ok(docs.ALREADY_COMPLETED, 400))
    async with FayClient(KEY) as fay:
        outcome = await fay.stop_if_running(docs.REQUEST_ID, check_first=False)
    assert outcome == StopResult(
        request_id=docs.REQUEST_ID,
        status=ResearchStatus.COMPLETED,
        message="the research had already completed",
    )
    assert not status.called


@pytest.mark.anyio
async def test_stop_first_settles_another_refusal_with_a_status_check(
    mock: respx.MockRouter,
) -> None:
    status = mock.get(STATUS_PATH).mock(return_value=ok(docs.STATUS_FAILED))
    stop = mock.post(STOP_PATH).mock(
        return_value=ok(docs.err("CONVERSATION_ALREADY_FAILED", "Failed"), 400)
    )
    async with FayClient(KEY) as fay:
        outcome = await fay.stop_if_running(docs.REQUEST_ID, check_first=False)
    assert isinstance(outcome, ConversationInfo)
    assert outcome.status is ResearchStatus.FAILED
    assert (stop.call_count, status.call_count) == (1, 1)


# --- lifetime ----------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_a_closed_client_says_so(mock: respx.MockRouter) -> None:
    fay = FayClient(KEY)
    assert not fay.is_closed
    await fay.aclose()
    assert fay.is_closed
    with pytest.raises(exceptions.ConfigurationError, match="closed"):
        await fay.get_status(docs.REQUEST_ID)
    assert not mock.calls


@pytest.mark.anyio
async def test_a_borrowed_http_client_is_left_open(mock: respx.MockRouter) -> None:
    mock.get(STATUS_PATH).mock(return_value=ok(docs.STATUS_PENDING))
    async with httpx.AsyncClient() as http:
        async with FayClient(KEY, http_client=http) as fay:
            await fay.get_status(docs.REQUEST_ID)
        assert not http.is_closed
        assert fay.is_closed
    assert http.is_closed


@pytest.mark.anyio
async def test_an_owned_http_client_is_closed() -> None:
    fay = FayClient(KEY)
    async with fay:
        http = fay._transport.http
    assert http.is_closed


def test_rate_limits_are_kept_on_the_client() -> None:
    from fay_async import RateLimits

    fay = FayClient(KEY, rate_limits=RateLimits.FREE)
    assert fay.rate_limits is RateLimits.FREE
    assert fay.rate_limiter is not None
    assert FayClient(KEY).rate_limiter is None
    coerced = FayClient(KEY, rate_limits={"status": 5}).rate_limits
    assert coerced == RateLimits(status=5)


@pytest.mark.anyio
async def test_stop_if_running_stops_a_research_in_an_unknown_status(
    mock: respx.MockRouter,
) -> None:
    mock.get(STATUS_PATH).mock(
        return_value=ok(docs.ok({**docs.STATUS_PENDING["data"], "status": "PAUSED"}))
    )
    stop = mock.post(STOP_PATH).mock(return_value=ok(docs.STOPPED))
    async with FayClient(KEY) as fay:
        result = await fay.stop_if_running(docs.REQUEST_ID)
    assert isinstance(result, StopResult)
    assert stop.call_count == 1


def test_a_localhost_subdomain_in_capitals_is_loopback() -> None:
    from fay_async._config import is_loopback

    assert is_loopback("FAY.LOCALHOST")
    assert is_loopback("fay.localhost")
    assert not is_loopback("localhost.example")


@pytest.mark.anyio
async def test_create_refuses_a_prompt_in_place_of_a_request() -> None:
    async with FayClient("k") as fay:
        with pytest.raises(
            TypeError,
            match=r"^request must be a CreateRequest, got str; create_conversation\(\) takes a ",
        ):
            await fay.create("a prompt")  # type: ignore[arg-type]


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("status", "kind"), [(403, "AuthenticationError"), (429, "RateLimitError")]
)
async def test_a_stop_refused_for_access_or_rate_is_never_taken_for_already_ended(
    status: int, kind: str
) -> None:
    from fay_async import exceptions

    from . import _docs as docs

    with respx.mock(base_url=docs.BASE, assert_all_called=False) as router:
        stop = router.post(f"/conversation/{docs.REQUEST_ID}/stop").mock(
            return_value=httpx.Response(status, json=docs.err("SOMETHING", "no"))
        )
        status_route = router.get(f"/conversation/{docs.REQUEST_ID}/status")
        async with FayClient("k", max_retries=0) as fay:
            with pytest.raises(getattr(exceptions, kind)):
                await fay.stop_if_running(docs.REQUEST_ID, check_first=False)
    assert stop.call_count == 1
    assert status_route.call_count == 0
