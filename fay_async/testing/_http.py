"""The emulator's HTTP side: answers as bytes, routing, faults on the wire, ASGI helpers."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterable, Mapping, MutableMapping
from typing import Any, Final, NoReturn, Protocol, TypeAlias

import anyio
import attrs
import httpx

from ._values import API_VERSION, ENDPOINTS, Endpoint, Fault

API_PREFIX: Final = "/api/v1"
#: Largest request body read, in bytes; a larger one is answered 413.
MAX_BODY_BYTES: Final = 1_048_576

_JSON: Final = b"application/json"

Scope: TypeAlias = MutableMapping[str, Any]
Message: TypeAlias = MutableMapping[str, Any]
Receive: TypeAlias = Callable[[], Awaitable[Message]]
Send: TypeAlias = Callable[[Message], Awaitable[None]]
ASGIApp: TypeAlias = Callable[[Scope, Receive, Send], Awaitable[None]]


class ConnectionDropped(Exception):  # noqa: N818 - it names an event, not a failure
    """Raised by the ASGI app after a partial response, to make the server drop the link."""


@attrs.frozen
class _Answer:
    status_code: int
    body: bytes
    headers: tuple[tuple[bytes, bytes], ...] = ()
    error_code: str | None = None
    request_id: str | None = None


def _envelope_ok(data: Mapping[str, Any]) -> bytes:
    return _dump({"status": True, "version": API_VERSION, "data": dict(data)})


def _dump(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False).encode("utf-8")


def _ok(data: Mapping[str, Any], *, request_id: str | None = None) -> _Answer:
    return _Answer(200, _envelope_ok(data), request_id=request_id)


def _error(
    status_code: int,
    code: str,
    message: str,
    *,
    headers: tuple[tuple[bytes, bytes], ...] = (),
    request_id: str | None = None,
) -> _Answer:
    body = _dump(
        {"status": False, "version": API_VERSION, "error": {"message": message, "code": code}}
    )
    return _Answer(status_code, body, headers, code, request_id)


_HTML_PAGE: Final = (
    "<html>\r\n<head><title>{status} Bad Gateway</title></head>\r\n<body>\r\n"
    "<center><h1>{status} Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n"
    "</body>\r\n</html>\r\n"
)


def _bearer(headers: Iterable[tuple[bytes, bytes]]) -> str | None:
    for name, value in headers:
        if name.lower() == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            return token.strip() if scheme.lower() == "bearer" and token.strip() else None
    return None


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


# --- routing --------------------------------------------------------------------------------

_ACTIONS: Final[Mapping[str, tuple[Endpoint, str]]] = {
    "status": ("status", "GET"),
    "output": ("output", "GET"),
    "stop": ("stop", "POST"),
}
_INTROSPECTION: Final = frozenset(
    {"/_emulator/calls", "/_emulator/deliveries", "/_emulator/researches"}
)


def _route(path: str) -> tuple[str, str | None, str] | None:
    """(endpoint or introspection path, request id, allowed method) for a path."""
    if path == f"{API_PREFIX}/conversations":
        return "create", None, "POST"
    if path in _INTROSPECTION:
        return path, None, "GET"
    prefix = f"{API_PREFIX}/conversation/"
    if path.startswith(prefix):
        request_id, _, action = path[len(prefix) :].rpartition("/")
        if request_id and "/" not in request_id and action in _ACTIONS:
            endpoint, method = _ACTIONS[action]
            return endpoint, request_id, method
    return None


def _fault_answer(fault: Fault) -> _Answer:
    if fault.kind == "html":
        page = _HTML_PAGE.format(status=fault.status_code).encode()
        return _Answer(fault.status_code, page, ((b"content-type", b"text/html"),))
    if fault.kind == "empty":
        return _Answer(fault.status_code, b"", ((b"content-type", b"text/plain"),))
    code = fault.code or "INJECTED_FAULT"
    headers: tuple[tuple[bytes, bytes], ...] = ()
    if fault.retry_after is not None:
        headers = ((b"retry-after", format(fault.retry_after, "g").encode()),)
    return _error(fault.status_code, code, fault.message or "Injected fault", headers=headers)


async def _read_body(receive: Receive) -> bytes | None:
    """The request body; None when it is larger than ``MAX_BODY_BYTES`` (read to its end)."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":  # http.disconnect
            break
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size <= MAX_BODY_BYTES:
            chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks) if size <= MAX_BODY_BYTES else None


def _headers(answer: _Answer) -> list[tuple[bytes, bytes]]:
    headers = [
        (b"content-length", str(len(answer.body)).encode()),
        *answer.headers,
    ]
    if not any(name == b"content-type" for name, _ in answer.headers):
        headers.append((b"content-type", _JSON))
    return headers


async def _send(send: Send, answer: _Answer) -> None:
    await send(
        {"type": "http.response.start", "status": answer.status_code, "headers": _headers(answer)}
    )
    await send({"type": "http.response.body", "body": answer.body})


async def _drop(send: Send, answer: _Answer) -> NoReturn:
    """Start the answer, send part of it, then make the server drop the connection."""
    await send(
        {"type": "http.response.start", "status": answer.status_code, "headers": _headers(answer)}
    )
    await send(
        {
            "type": "http.response.body",
            "body": answer.body[: len(answer.body) // 2],
            "more_body": True,
        }
    )
    raise ConnectionDropped("the emulator dropped the connection (injected fault)")


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


class EmulatorApp(Protocol):
    """What :func:`serve_http` needs of the emulator."""

    def now(self) -> float: ...
    def _take_fault(self, endpoint: Endpoint) -> Fault | None: ...
    def _introspect(self, path: str) -> _Answer: ...
    def _record(
        self,
        endpoint: Endpoint | None,
        method: str,
        path: str,
        request_id: str | None,
        answer: _Answer | None,
        at: float | None = None,
        fault: Fault | None = None,
    ) -> None: ...
    def _handle(
        self,
        endpoint: Endpoint,
        request_id: str | None,
        headers: Iterable[tuple[bytes, bytes]],
        body: bytes | None,
        now: float,
    ) -> _Answer: ...


async def serve_http(app: EmulatorApp, scope: Scope, receive: Receive, send: Send) -> None:
    """Answer one HTTP request: route it, apply a queued fault, record the call."""
    method: str = scope["method"]
    path: str = scope["path"]
    route = _route(path)
    if route is None:
        answer = _error(404, "NOT_FOUND", "Not found")
        app._record(None, method, path, None, answer)
        await _send(send, answer)
        return
    name, request_id, allowed = route
    endpoint = name if name in ENDPOINTS else None
    if method != allowed:
        answer = _error(405, "METHOD_NOT_ALLOWED", "Method not allowed")
        answer = attrs.evolve(answer, headers=((b"allow", allowed.encode()),))
        app._record(endpoint, method, path, request_id, answer)
        await _send(send, answer)
        return
    if endpoint is None:
        await _send(send, app._introspect(name))
        return
    await _api_call(app, endpoint, method, path, request_id, scope, receive, send)


async def _api_call(
    app: EmulatorApp,
    endpoint: Endpoint,
    method: str,
    path: str,
    request_id: str | None,
    scope: Scope,
    receive: Receive,
    send: Send,
) -> None:
    arrival = app.now()
    fault = app._take_fault(endpoint)
    if fault is not None and not fault.processed:
        if fault.kind == "drop":
            app._record(endpoint, method, path, request_id, None, arrival, fault)
            await _drop(send, _Answer(200, _envelope_ok({"request_id": request_id})))
        answer = _fault_answer(fault)
        app._record(endpoint, method, path, request_id, answer, arrival, fault)
        await _send(send, answer)
        return
    body = await _read_body(receive) if endpoint == "create" else b""
    answer = app._handle(endpoint, request_id, scope["headers"], body, arrival)
    if fault is not None and fault.kind == "drop":
        app._record(endpoint, method, path, answer.request_id, None, arrival, fault)
        await _drop(send, answer)
    if fault is not None and fault.kind == "truncated_json":
        answer = attrs.evolve(answer, body=answer.body[: len(answer.body) // 2])
    app._record(endpoint, method, path, answer.request_id, answer, arrival, fault)
    if fault is not None and fault.kind == "latency":
        await anyio.sleep(fault.seconds)
    await _send(send, answer)


# --- in-process wiring, for httpx ------------------------------------------------------------


class InProcessTransport(httpx.AsyncBaseTransport):
    """``httpx.ASGITransport`` plus what a network adds: read timeouts and dropped links."""

    def __init__(self, app: ASGIApp) -> None:
        self._inner = httpx.ASGITransport(app=app)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Call the emulator; a drop becomes ``RemoteProtocolError``, a slow answer a timeout."""
        timeouts = request.extensions.get("timeout") or {}
        read_timeout = timeouts.get("read")
        try:
            with anyio.fail_after(read_timeout):
                return await self._inner.handle_async_request(request)
        except ConnectionDropped:
            raise httpx.RemoteProtocolError(
                "peer closed connection without sending complete message body", request=request
            ) from None
        except TimeoutError:
            raise httpx.ReadTimeout(
                "the emulator did not answer in time", request=request
            ) from None

    async def aclose(self) -> None:
        """Nothing to release: the emulator runs in this process."""
        await self._inner.aclose()
