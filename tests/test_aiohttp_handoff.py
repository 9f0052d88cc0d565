"""FayClient's own httpx client hands requests without a body to AiohttpTransport directly.

No ``httpx.Request`` or ``httpx.Response`` is made for them, yet what goes on the wire,
what comes back, and every failure (with whether the request may have arrived, and the
request it carries) must be what ``handle_async_request`` gives. Each test here makes
``handle_async_request`` fail, so that it proves the hand-off was taken.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import logging
import socket

import httpx
import pytest

from fay_async import FayClient, exceptions
from fay_async.aiohttp import AiohttpTransport

from .test_aiohttp_transport import (
    KEY,
    RawServer,
    answer_with,
    close_at_once,
    stall,
    truncated,
)

pytestmark = [pytest.mark.anyio, pytest.mark.real_time, pytest.mark.asyncio_only]

STATUS = {
    "status": True,
    "version": "1.0.24",
    "data": {
        "request_id": "req_1",
        "status": "RUNNING",
        "prompt": "p",
        "created_at": "2025-01-01T00:00:00Z",
    },
}
STOPPED = {"status": True, "data": {"request_id": "req_1", "status": "STOPPED"}}


def handed_over(**options: object) -> AiohttpTransport:
    """An AiohttpTransport whose handle_async_request must not be used."""
    transport = AiohttpTransport(**options)  # type: ignore[arg-type]

    async def not_this_way(request: httpx.Request) -> httpx.Response:
        raise AssertionError(f"{request.method} {request.url} went through an httpx.Request")

    transport.handle_async_request = not_this_way  # type: ignore[method-assign]
    return transport


class Through(AiohttpTransport):
    """A subclass: always sent through handle_async_request, to compare with."""


def heads(server: RawServer) -> list[bytes]:
    return [request.partition(b"\r\n\r\n")[0] for request in server.requests]


@pytest.mark.parametrize("call", ["status", "stop"])
async def test_the_wire_is_what_handle_async_request_sends(call: str) -> None:
    body = json.dumps(STATUS if call == "status" else STOPPED).encode()
    with RawServer(answer_with(body)) as server:
        for transport in (handed_over(), Through()):
            async with FayClient(KEY, base_url=server.base_url, transport=transport) as fay:
                if call == "status":
                    info = await fay.get_status("req_1")
                    assert info.status.value == "RUNNING"
                else:
                    stopped = await fay.stop_conversation("req_1")
                    assert stopped.request_id == "req_1"
    direct, through = heads(server)
    assert direct == through
    head = direct
    if call == "stop":
        assert b"\r\ncontent-length: 0" in head.lower()
    assert f"\r\nauthorization: Bearer {KEY}".encode() in head


async def test_a_create_with_a_body_still_goes_through_an_httpx_request() -> None:
    created = {
        "status": True,
        "data": {"request_id": "req_1", "status": "PENDING", "created_at": "2025-01-01T00:00:00Z"},
    }
    calls: list[str] = []
    transport = AiohttpTransport()
    original = transport.handle_async_request

    async def counted(request: httpx.Request) -> httpx.Response:
        calls.append(request.method)
        return await original(request)

    transport.handle_async_request = counted  # type: ignore[method-assign]
    with RawServer(answer_with(json.dumps(created).encode())) as server:
        async with FayClient(KEY, base_url=server.base_url, transport=transport) as fay:
            await fay.create_conversation("prompt")
    assert calls == ["POST"]


async def test_a_call_is_logged_with_its_status(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="fay_async")
    with RawServer(answer_with(json.dumps(STATUS).encode())) as server:
        async with FayClient(KEY, base_url=server.base_url, transport=handed_over()) as fay:
            await fay.get_status("req_1")
    assert "GET /conversation/req_1/status -> 200 in " in caplog.text


async def test_a_gzipped_answer_is_decoded() -> None:
    body = gzip.compress(json.dumps(STATUS).encode())
    with RawServer(answer_with(body, extra=b"Content-Encoding: gzip\r\n")) as server:
        async with FayClient(KEY, base_url=server.base_url, transport=handed_over()) as fay:
            info = await fay.get_status("req_1")
    assert info.request_id == "req_1"


async def test_a_cookie_set_by_the_service_is_kept_and_sent_back() -> None:
    body = json.dumps(STATUS).encode()
    with RawServer(answer_with(body, extra=b"Set-Cookie: lb=node-7; Path=/\r\n")) as server:
        transport = AiohttpTransport()
        async with FayClient(KEY, base_url=server.base_url, transport=transport) as fay:
            await fay.get_status("req_1")
            await fay.get_status("req_1")
    first, second = heads(server)
    assert b"cookie:" not in first.lower()
    assert b"\r\ncookie: lb=node-7" in second.lower()


async def test_an_error_answer_is_the_api_error() -> None:
    body = json.dumps(
        {"status": False, "error": {"code": "REQUEST_NOT_FOUND", "message": "no such research"}}
    ).encode()
    with RawServer(answer_with(body, status="404 Not Found")) as server:
        async with FayClient(KEY, base_url=server.base_url, transport=handed_over()) as fay:
            with pytest.raises(exceptions.NotFoundError, match="no such research"):
                await fay.get_status("req_1")


async def test_a_server_error_is_retried() -> None:
    with RawServer(answer_with(b"oops", status="503 Busy")) as server:
        async with FayClient(
            KEY, base_url=server.base_url, transport=handed_over(), max_retries=1
        ) as fay:
            with pytest.raises(exceptions.ServerError):
                await fay.get_status("req_1")
    assert len(server.requests) == 2


# --- failures -------------------------------------------------------------------------------


@pytest.fixture
def closed_port() -> int:
    """A loopback port nothing listens on: a connection to it is refused."""
    with socket.create_server(("127.0.0.1", 0)) as sock:
        return int(sock.getsockname()[1])


def _url(base_url: str) -> str:
    return f"{base_url}/api/v1/conversation/req_1/status"


async def test_refused_is_not_sent(closed_port: int) -> None:
    base_url = f"http://127.0.0.1:{closed_port}"
    async with FayClient(KEY, base_url=base_url, transport=handed_over(), max_retries=0) as fay:
        with pytest.raises(exceptions.APIConnectionError) as info:
            await fay.get_status("req_1")
    assert info.value.sent is False
    assert not isinstance(info.value, exceptions.APITimeoutError)
    cause = info.value.__cause__
    assert isinstance(cause, httpx.ConnectError)
    assert cause.request.url == _url(base_url)
    assert cause.request.headers["Authorization"] == f"Bearer {KEY}"


@pytest.mark.parametrize(
    ("answer", "kind", "cause"),
    [
        (close_at_once, exceptions.APIConnectionError, httpx.RemoteProtocolError),
        (truncated, exceptions.APIConnectionError, httpx.RemoteProtocolError),
        (stall, exceptions.APITimeoutError, httpx.ReadTimeout),
    ],
)
async def test_a_failure_after_sending_may_have_arrived_and_is_retried(
    answer: object, kind: type[exceptions.APIConnectionError], cause: type[Exception]
) -> None:
    with RawServer(answer) as server:  # type: ignore[arg-type]
        async with FayClient(
            KEY, base_url=server.base_url, transport=handed_over(), max_retries=1, timeout=0.3
        ) as fay:
            with pytest.raises(kind) as info:
                await fay.get_status("req_1")
    assert type(info.value) is kind
    assert info.value.sent is True
    assert isinstance(info.value.__cause__, cause)
    assert info.value.__cause__.request.url == _url(server.base_url)
    assert len(server.requests) == 2


async def test_a_full_pool_is_a_pool_timeout_and_not_sent() -> None:
    with RawServer(stall) as server:
        async with FayClient(
            KEY,
            base_url=server.base_url,
            transport=handed_over(max_connections=1),
            max_retries=0,
            timeout=2.0,
        ) as fay:
            first = asyncio.ensure_future(fay.get_status("req_1"))
            assert await asyncio.to_thread(server.received.wait, 5)
            with pytest.raises(exceptions.APITimeoutError) as info:
                await fay.get_status("req_1", timeout=0.1)
            first.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await first
    assert info.value.sent is False
    cause = info.value.__cause__
    assert isinstance(cause, httpx.PoolTimeout)
    assert cause.request.url == _url(server.base_url)
    assert len(server.requests) == 1
