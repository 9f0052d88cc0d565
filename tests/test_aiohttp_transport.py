"""AiohttpTransport: FayClient on aiohttp against the emulator and misbehaving servers.

Every failure must come out as the httpx exception that tells whether the request may
have arrived: a create that may have arrived is never sent again.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import importlib
import json
import socket
import sys
import threading
import types
from collections.abc import Callable, Iterator
from typing import Any

import aiohttp
import httpx
import pytest
import trio

from fay_async import ConfigurationError, FayClient, ResearchStatus, exceptions
from fay_async.aiohttp import AiohttpTransport, _translate
from fay_async.testing import Fault, FayEmulator, ManualClock, Scenario, serve

pytestmark = [pytest.mark.anyio, pytest.mark.real_time, pytest.mark.asyncio_only]

KEY = "test-key"
CREATED = {
    "status": True,
    "version": "1.0.24",
    "data": {"request_id": "req_1", "status": "PENDING", "created_at": "2025-01-01T00:00:00Z"},
}


# --- servers that misbehave ----------------------------------------------------------------


class RawServer:
    """A one-thread HTTP/1.1 server on 127.0.0.1 that reads each request whole, records
    it, then does what ``answer`` does with the connection (answer, close, stall...)."""

    def __init__(self, answer: Callable[[socket.socket], None]) -> None:
        self.answer = answer
        self.requests: list[bytes] = []
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.1)
        self.base_url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.stopped = threading.Event()
        self.received = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        while not self.stopped.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(5)
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                data += chunk
            head, _, body = data.partition(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            while len(body) < length:
                body += conn.recv(65536)
            self.requests.append(head + b"\r\n\r\n" + body)
            self.received.set()
            self.answer(conn)

    def posts(self) -> int:
        return sum(request.startswith(b"POST ") for request in self.requests)

    def __enter__(self) -> RawServer:
        self.thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stopped.set()
        self.thread.join()
        self.sock.close()


def close_at_once(conn: socket.socket) -> None:
    """The request was read whole; the server goes away without a word."""


def stall(conn: socket.socket) -> None:
    """No answer until the client gives up."""
    with contextlib.suppress(OSError):
        conn.recv(1)


def truncated(conn: socket.socket) -> None:
    conn.sendall(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 200\r\n\r\n"
        b'{"status": true, "da'
    )


def answer_with(
    body: bytes, *, status: str = "200 OK", extra: bytes = b""
) -> Callable[[socket.socket], None]:
    def answer(conn: socket.socket) -> None:
        conn.sendall(
            f"HTTP/1.1 {status}\r\nContent-Length: {len(body)}\r\n".encode()
            + extra
            + b"Connection: close\r\n\r\n"
            + body
        )

    return answer


@pytest.fixture
def closed_port() -> int:
    """A loopback port nothing listens on: a connection to it is refused."""
    with socket.create_server(("127.0.0.1", 0)) as sock:
        return int(sock.getsockname()[1])


class CountingTransport(AiohttpTransport):
    """Counts the attempts, including those that never reach a server."""

    attempts = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.attempts += 1
        return await super().handle_async_request(request)


# --- end to end -----------------------------------------------------------------------------


@pytest.fixture
def served() -> Iterator[tuple[FayEmulator, ManualClock, str]]:
    clock = ManualClock()
    emulator = FayEmulator(api_keys=[KEY], clock=clock, scenario=Scenario(5, 5))
    with serve(emulator) as base_url:
        yield emulator, clock, base_url


async def test_fay_client_end_to_end_on_aiohttp(
    served: tuple[FayEmulator, ManualClock, str],
) -> None:
    emulator, clock, base_url = served
    async with FayClient(KEY, base_url=base_url, transport=AiohttpTransport()) as fay:
        created = await fay.create_conversation("EU battery rules in 2025?")
        assert created.status is ResearchStatus.PENDING
        info = await fay.get_status(created.request_id)
        assert info.prompt == "EU battery rules in 2025?"
        clock.advance(20)
        output = await fay.get_output(created.request_id)
        assert "EU battery rules" in str(output.output)
        other = await fay.create_conversation("second")
        stopped = await fay.stop_conversation(other.request_id)
        assert stopped.request_id == other.request_id
        # many calls at once share the pool
        many = await asyncio.gather(*(fay.get_status(created.request_id) for _ in range(20)))
        assert {i.status for i in many} == {ResearchStatus.COMPLETED}
        with pytest.raises(exceptions.NotFoundError):
            await fay.get_status("req_unknown")
    assert emulator.created_prompts() == ["EU battery rules in 2025?", "second"]


async def test_the_client_owns_and_closes_the_transport(
    served: tuple[FayEmulator, ManualClock, str],
) -> None:
    _emulator, _clock, base_url = served
    transport = AiohttpTransport()
    async with FayClient(KEY, base_url=base_url, transport=transport) as fay:
        await fay.create_conversation("prompt")
        session = transport._session
        assert session is not None
    assert session.closed
    with pytest.raises(ConfigurationError, match="closed"):
        await transport.handle_async_request(httpx.Request("GET", base_url))


async def test_a_dropped_answer_to_a_create_is_not_resent(
    served: tuple[FayEmulator, ManualClock, str],
) -> None:
    emulator, _clock, base_url = served
    emulator.inject_fault("create", Fault.drop(processed=True))
    async with FayClient(
        KEY, base_url=base_url, transport=AiohttpTransport(), max_retries=3
    ) as fay:
        with pytest.raises(exceptions.APIConnectionError) as info:
            await fay.create_conversation("paid once")
    assert info.value.sent is True
    assert emulator.created_prompts() == ["paid once"]


# --- faults on the wire ---------------------------------------------------------------------


async def test_refused_is_not_sent_and_a_create_is_retried(closed_port: int) -> None:
    transport = CountingTransport()
    async with FayClient(
        KEY, base_url=f"http://127.0.0.1:{closed_port}", transport=transport, max_retries=2
    ) as fay:
        with pytest.raises(exceptions.APIConnectionError) as info:
            await fay.create_conversation("prompt")
    assert info.value.sent is False
    assert isinstance(info.value.__cause__, httpx.ConnectError)
    assert not isinstance(info.value, exceptions.APITimeoutError)
    assert transport.attempts == 3


DISCONNECTED, TIMED_OUT = exceptions.APIConnectionError, exceptions.APITimeoutError
CUT_OFF = httpx.RemoteProtocolError


@pytest.mark.parametrize(
    ("answer", "error", "cause", "options"),
    [
        pytest.param(
            close_at_once, exceptions.APIConnectionError, httpx.RemoteProtocolError, {}, id="close"
        ),
        pytest.param(
            truncated, exceptions.APIConnectionError, httpx.RemoteProtocolError, {}, id="truncated"
        ),
        pytest.param(
            stall, exceptions.APITimeoutError, httpx.ReadTimeout, {"timeout": 0.3}, id="slow"
        ),
    ],
)
async def test_a_create_that_may_have_arrived_is_never_resent(
    answer: Any, error: type[Exception], cause: type[Exception], options: dict[str, Any]
) -> None:
    # A server that closes after reading the create, cuts its answer short, or answers
    # too late: the create may exist, so it is reported as sent and not sent again.
    with RawServer(answer) as server:
        async with FayClient(
            KEY, base_url=server.base_url, transport=AiohttpTransport(), max_retries=3, **options
        ) as fay:
            with pytest.raises(error) as info:
                await fay.create_conversation("prompt")
    assert info.value.sent is True  # type: ignore[attr-defined]
    assert isinstance(info.value.__cause__, cause)
    assert server.posts() == 1
    assert json.loads(server.requests[0].partition(b"\r\n\r\n")[2])["prompt"] == "prompt"


async def test_a_close_after_reading_a_status_call_is_retried() -> None:
    with RawServer(close_at_once) as server:
        async with FayClient(
            KEY, base_url=server.base_url, transport=AiohttpTransport(), max_retries=2
        ) as fay:
            with pytest.raises(exceptions.APIConnectionError) as info:
                await fay.get_status("req_1")
    assert info.value.sent is True
    assert len(server.requests) == 3


async def test_a_full_pool_is_a_pool_timeout() -> None:
    with RawServer(stall) as server:
        transport = AiohttpTransport(max_connections=1)
        timeout = httpx.Timeout(2.0, pool=0.1)
        async with httpx.AsyncClient(transport=transport, timeout=timeout) as http:
            first = asyncio.ensure_future(http.get(server.base_url))
            assert await asyncio.to_thread(server.received.wait, 5)
            with pytest.raises(httpx.PoolTimeout):
                await http.get(server.base_url)
            first.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await first


async def test_a_connect_that_hangs_is_a_connect_timeout() -> None:
    # A listening socket whose backlog is full: the kernel drops further SYNs, so a
    # connect neither succeeds nor is refused until it times out.
    with contextlib.ExitStack() as stack:
        listener = stack.enter_context(socket.socket())
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        address = listener.getsockname()
        for _ in range(4):
            filler = stack.enter_context(socket.socket())
            filler.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                filler.connect(address)
        transport = AiohttpTransport()
        async with httpx.AsyncClient(transport=transport, timeout=0.3) as http:
            with pytest.raises(httpx.ConnectTimeout):
                await http.get(f"http://127.0.0.1:{address[1]}/")


# --- the HTTP exchange ----------------------------------------------------------------------


async def test_headers_status_version_and_body_come_through() -> None:
    body = gzip.compress(json.dumps(CREATED).encode())
    extra = (
        b"Content-Type: application/json\r\nContent-Encoding: gzip\r\nX-Dup: one\r\nX-Dup: two\r\n"
    )
    with RawServer(answer_with(body, status="201 Made Here", extra=extra)) as server:
        async with httpx.AsyncClient(transport=AiohttpTransport()) as http:
            response = await http.post(
                f"{server.base_url}/api/v1/a%2Fb?q=1", json={"x": 1}, headers={"X-Me": "yes"}
            )
    assert response.status_code == 201
    assert response.reason_phrase == "Made Here"
    assert response.http_version == "HTTP/1.1"
    assert response.headers.get_list("x-dup") == ["one", "two"]
    assert response.json() == CREATED  # decoded once, by httpx
    (request,) = server.requests
    head, _, sent_body = request.partition(b"\r\n\r\n")
    assert head.startswith(b"POST /api/v1/a%2Fb?q=1 HTTP/1.1\r\n")
    assert b"\r\nx-me: yes" in head.lower()
    assert json.loads(sent_body) == {"x": 1}


async def test_a_non_http_url_is_refused_before_anything_is_sent() -> None:
    async with httpx.AsyncClient(transport=AiohttpTransport()) as http:
        with pytest.raises(httpx.UnsupportedProtocol):
            await http.send(httpx.Request("GET", "ftp://127.0.0.1/"))


def test_max_connections_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_connections"):
        AiohttpTransport(max_connections=0)
    assert repr(AiohttpTransport(max_connections=3)) == "AiohttpTransport(max_connections=3)"


# --- asyncio only ---------------------------------------------------------------------------


def test_made_on_trio_it_says_it_needs_asyncio() -> None:
    async def make() -> None:
        AiohttpTransport()

    with pytest.raises(ConfigurationError, match=r"asyncio only.*trio"):
        trio.run(make)


def test_used_on_trio_it_says_it_needs_asyncio() -> None:
    transport = AiohttpTransport()  # outside any event loop: allowed

    async def use() -> None:
        async with FayClient(KEY, base_url="http://127.0.0.1:9", transport=transport) as fay:
            await fay.get_status("req_1")

    with pytest.raises(ConfigurationError, match=r"asyncio only.*trio"):
        trio.run(use)


def test_outside_an_event_loop_it_says_so() -> None:
    request = httpx.Request("GET", "http://127.0.0.1:9/")
    with pytest.raises(ConfigurationError, match="not inside an event loop"):
        AiohttpTransport()._open()
    assert request.method == "GET"


def test_a_session_belongs_to_its_event_loop(closed_port: int) -> None:
    transport = AiohttpTransport()
    request = httpx.Request("GET", f"http://127.0.0.1:{closed_port}/")

    async def use() -> None:
        with contextlib.suppress(httpx.ConnectError):
            await transport.handle_async_request(request)

    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(use())
        with pytest.raises(ConfigurationError, match="another event loop"):
            asyncio.run(use())
        loop.run_until_complete(transport.aclose())
    finally:
        loop.close()


def test_without_aiohttp_the_import_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "aiohttp", None)
    monkeypatch.delitem(sys.modules, "fay_async.aiohttp")
    with pytest.raises(ImportError, match=r"pip install 'fay-async\[aiohttp\]'"):
        importlib.import_module("fay_async.aiohttp")


# --- the mapping, exception by exception -----------------------------------------------------


def _key() -> Any:
    return types.SimpleNamespace(host="api.example", port=443, ssl=True)


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (aiohttp.ClientConnectorError(_key(), OSError(111, "Connection refused")), "ConnectError"),
        (aiohttp.ClientConnectorDNSError(_key(), OSError(-2, "Name unknown")), "ConnectError"),
        (aiohttp.ServerFingerprintMismatch(b"a", b"b", "api.example", 443), "ConnectError"),
        (aiohttp.ConnectionTimeoutError("connect timed out"), "ConnectTimeout"),
        (aiohttp.SocketTimeoutError("read timed out"), "ReadTimeout"),
        (aiohttp.ServerTimeoutError("timed out"), "ReadTimeout"),
        (asyncio.TimeoutError(), "ReadTimeout"),
        (aiohttp.ServerDisconnectedError(), "RemoteProtocolError"),
        (aiohttp.ClientPayloadError("Response payload is not completed"), "RemoteProtocolError"),
        (aiohttp.ClientConnectionResetError("Cannot write to closing transport"), "WriteError"),
        (aiohttp.ClientOSError(104, "Connection reset by peer"), "ReadError"),
        (OSError(32, "Broken pipe"), "ReadError"),
        (aiohttp.InvalidURL("http://"), "UnsupportedProtocol"),
        (aiohttp.NonHttpUrlClientError("ftp://x"), "UnsupportedProtocol"),
    ],
    ids=lambda value: value if isinstance(value, str) else type(value).__name__,
)
def test_translate(error: Exception, expected: str) -> None:
    request = httpx.Request("POST", "http://127.0.0.1/api/v1/conversations")
    translated = _translate(error, request)
    assert type(translated).__name__ == expected
    assert translated.request is request  # type: ignore[attr-defined]
    assert type(error).__name__ in str(translated)
