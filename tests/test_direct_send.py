"""Requests of a client's own httpx client go straight to its transport; borrowed ones don't.

The requests sent straight to the transport must be those ``httpx.AsyncClient`` would have
built (headers in order, body, timeouts), go through the proxy the environment names,
keep cookies the service sets, and fail as the client's would.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable
from typing import Any

import anyio
import httpx
import pytest

from fay_async import FayClient, _config, exceptions

from . import _docs as docs

pytestmark = pytest.mark.anyio

KEY = "fake-key-DO-NOT-LEAK-5678"
STATUS_URL = f"{docs.BASE}/conversation/{docs.REQUEST_ID}/status"
STOP_URL = f"{docs.BASE}/conversation/{docs.REQUEST_ID}/stop"
CREATE_URL = f"{docs.BASE}/conversations"


class Recording(httpx.AsyncBaseTransport):
    """Answers each request with ``answer(request)`` and keeps the requests."""

    def __init__(self, answer: Callable[[httpx.Request], httpx.Response] | None = None) -> None:
        self.requests: list[httpx.Request] = []
        self._answer = answer or _by_path

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self._answer(request)


def _by_path(request: httpx.Request) -> httpx.Response:
    path = request.url.path
    body = (
        docs.CREATED
        if path.endswith("/conversations")
        else docs.STOPPED
        if path.endswith("/stop")
        else docs.STATUS_PENDING
    )
    return httpx.Response(200, json=body)


def _as_httpx_builds(
    method: str, url: str, *, timeout: float, json_body: Any = None
) -> httpx.Request:
    """The request FayClient's own httpx client would build through ``AsyncClient``."""
    headers = {
        "User-Agent": f"fay-async/{_config.VERSION}",
        "Accept": "application/json",
        "X-Team": "research",
        "Authorization": f"Bearer {KEY}",
    }
    http = httpx.AsyncClient(headers=headers, timeout=timeout)
    return http.build_request(method, url, json=json_body)


def _same(sent: httpx.Request, expected: httpx.Request) -> None:
    assert sent.method == expected.method
    assert sent.url == expected.url
    assert sent.headers.raw == expected.headers.raw  # names, values and order
    assert sent.content == expected.content
    assert sent.extensions["timeout"] == expected.extensions["timeout"]


async def test_an_owned_client_bypasses_the_httpx_client_and_sends_what_it_would() -> None:
    seen = Recording()
    fay = FayClient(
        KEY, base_url="https://api.fay.work", transport=seen, default_headers={"X-Team": "research"}
    )
    async with fay:

        async def refuse(*args: object, **kwargs: object) -> None:
            raise AssertionError("sent through httpx.AsyncClient")

        fay._transport.http.send = refuse  # type: ignore[method-assign]
        await fay.get_status(docs.REQUEST_ID)
        await fay.create_conversation(
            "a question", structured_output=True, output_schema={"type": "object"}
        )
        await fay.stop_conversation(docs.REQUEST_ID, timeout=2.5)
    status, create, stop = seen.requests
    _same(status, _as_httpx_builds("GET", STATUS_URL, timeout=_config.DEFAULT_TIMEOUT))
    _same(
        create,
        _as_httpx_builds(
            "POST",
            CREATE_URL,
            timeout=_config.DEFAULT_TIMEOUT,
            json_body={
                "prompt": "a question",
                "structured_output": True,
                "output_schema": {"type": "object"},
            },
        ),
    )
    assert json.loads(create.content)["prompt"] == "a question"
    _same(stop, _as_httpx_builds("POST", STOP_URL, timeout=2.5))
    assert stop.headers["Content-Length"] == "0"


async def test_a_derived_client_sends_with_its_own_timeout_on_the_same_transport() -> None:
    seen = Recording()
    async with FayClient(KEY, timeout=30, transport=seen) as fay:
        quick = fay.with_options(timeout=3)
        await quick.get_status(docs.REQUEST_ID)
        await quick.aclose()
        await fay.get_status(docs.REQUEST_ID)
        assert quick._transport.http is fay._transport.http
    first, second = seen.requests
    assert first.extensions["timeout"] == dict.fromkeys(("connect", "read", "write", "pool"), 3.0)
    assert second.extensions["timeout"]["read"] == 30.0


async def test_a_cookie_set_by_the_service_is_sent_back() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        headers = {} if "cookie" in request.headers else {"Set-Cookie": "lb=node-7; Path=/"}
        return httpx.Response(200, json=docs.STATUS_PENDING, headers=headers)

    seen = Recording(answer)
    async with FayClient(KEY, transport=seen) as fay:
        await fay.get_status(docs.REQUEST_ID)
        await fay.get_status(docs.REQUEST_ID)
        await fay.get_status(docs.REQUEST_ID, timeout=2.0)
    first, second, third = seen.requests
    assert "cookie" not in first.headers
    assert second.headers["Cookie"] == "lb=node-7"
    assert second.extensions["timeout"]["read"] == _config.DEFAULT_TIMEOUT
    assert third.headers["Cookie"] == "lb=node-7"
    assert third.extensions["timeout"]["read"] == 2.0


async def test_a_borrowed_client_runs_its_hooks_and_auth() -> None:
    events: list[str] = []

    async def on_request(request: httpx.Request) -> None:
        events.append(f"request {request.url.path}")

    async def on_response(response: httpx.Response) -> None:
        events.append(f"response {response.status_code}")

    class Signed(httpx.Auth):
        def auth_flow(self, request: httpx.Request) -> Any:
            request.headers["X-Signed"] = "yes"
            yield request

    seen = Recording()
    http = httpx.AsyncClient(
        transport=seen,
        auth=Signed(),
        event_hooks={"request": [on_request], "response": [on_response]},
    )
    async with http, FayClient(KEY, http_client=http) as fay:
        await fay.get_status(docs.REQUEST_ID)
    assert events == [f"request /api/v1/conversation/{docs.REQUEST_ID}/status", "response 200"]
    (request,) = seen.requests
    assert request.headers["X-Signed"] == "yes"
    assert request.headers["Authorization"] == f"Bearer {KEY}"


class Failing(httpx.AsyncBaseTransport):
    """Fails each request with ``error`` (raised without its request, as httpcore's are)."""

    def __init__(self, error: httpx.RequestError) -> None:
        self.error = error

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:  # noqa: ARG002
        raise self.error


@pytest.mark.parametrize(
    ("error", "kind", "sent"),
    [
        (httpx.ConnectError("refused"), exceptions.APIConnectionError, False),
        (httpx.ReadTimeout("slow"), exceptions.APITimeoutError, True),
        (httpx.RemoteProtocolError("gone"), exceptions.APIConnectionError, True),
    ],
)
async def test_a_failure_is_mapped_as_before_and_carries_its_request(
    error: httpx.RequestError, kind: type[exceptions.APIConnectionError], sent: bool
) -> None:
    async with FayClient(KEY, transport=Failing(error), max_retries=0) as fay:
        with pytest.raises(kind) as caught:
            await fay.get_status(docs.REQUEST_ID)
    assert type(caught.value) is kind
    assert caught.value.sent is sent
    assert caught.value.__cause__ is error
    assert error.request.url == STATUS_URL


class BrokenBody(httpx.AsyncByteStream):
    """A body that fails half way, and remembers being closed."""

    def __init__(self) -> None:
        self.closed = False

    async def __aiter__(self) -> Any:
        yield b'{"status": tr'
        raise httpx.ReadError("connection reset")

    async def aclose(self) -> None:
        self.closed = True


async def test_a_body_that_fails_half_way_is_closed_and_is_a_connection_error() -> None:
    body = BrokenBody()
    seen = Recording(lambda _request: httpx.Response(200, stream=body))
    async with FayClient(KEY, transport=seen, max_retries=0) as fay:
        with pytest.raises(exceptions.APIConnectionError, match="ReadError") as caught:
            await fay.get_status(docs.REQUEST_ID)
    assert body.closed
    assert caught.value.sent is True
    cause = caught.value.__cause__
    assert isinstance(cause, httpx.ReadError)
    assert cause.request is seen.requests[0]


@pytest.mark.real_time
async def test_an_owned_client_goes_through_the_proxy_the_environment_names(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A loopback listener stands in for the proxy: it gets the absolute-form request."""
    body = json.dumps(docs.STATUS_PENDING).encode()
    heads: list[bytes] = []

    async def serve(stream: anyio.abc.SocketStream) -> None:
        async with stream:
            head = b""
            while b"\r\n\r\n" not in head:
                head += await stream.receive()
            heads.append(head)
            await stream.send(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body)
            )

    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(anyio.abc.SocketAttribute.local_port)  # noqa: S610 - not Django
    for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy", "HTTPS_PROXY", "https_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{port}")
    async with listener, anyio.create_task_group() as group:
        group.start_soon(listener.serve, serve)
        with anyio.fail_after(10):
            async with FayClient(
                KEY, base_url="http://fay.invalid", allow_insecure_http=True, max_retries=0
            ) as fay:
                info = await fay.get_status(docs.REQUEST_ID)
        group.cancel_scope.cancel()
    assert info.request_id == docs.REQUEST_ID
    (head,) = heads
    request_line = head.split(b"\r\n")[0].decode()
    assert request_line == (
        f"GET http://fay.invalid/api/v1/conversation/{docs.REQUEST_ID}/status HTTP/1.1"
    )
    assert f"Authorization: Bearer {KEY}".encode() in head


@pytest.mark.parametrize("encoding", [None, "gzip"])
async def test_a_body_handed_over_in_memory_is_read_and_decoded(encoding: str | None) -> None:
    """As AiohttpTransport hands it over: a stream of bytes, encoded as the server sent it."""
    body = json.dumps(docs.STATUS_PENDING).encode()
    headers = {"Content-Type": "application/json"}
    if encoding:
        body = gzip.compress(body)
        headers["Content-Encoding"] = encoding
    seen = Recording(
        lambda _request: httpx.Response(200, headers=headers, stream=httpx.ByteStream(body))
    )
    async with FayClient(KEY, transport=seen) as fay:
        info = await fay.get_status(docs.REQUEST_ID)
    assert info.request_id == docs.REQUEST_ID
