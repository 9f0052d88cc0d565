"""An httpx transport that sends requests with aiohttp (asyncio only).

``FayClient(key, transport=AiohttpTransport())`` keeps everything FayClient does (retries,
budgets, errors) and hands the HTTP work to aiohttp, which costs less CPU per request than
httpx's own connection pool. The client owns the transport and closes it with itself.

Every aiohttp failure becomes the httpx exception that says what happened to the request,
because that decides whether a create may be sent again (see ``_transport``): only a
failure before the request could have left is a connect error.

- refused, DNS failure, TLS handshake failure (``ClientConnectorError`` and its
  subclasses, ``ServerFingerprintMismatch``): ``httpx.ConnectError``, not sent;
- connect timeout (``ConnectionTimeoutError``): ``httpx.ConnectTimeout``, not sent;
- no free connection within the pool timeout: ``httpx.PoolTimeout``, not sent;
- malformed or non-HTTP URL (``InvalidURL``): ``httpx.UnsupportedProtocol``, not sent;
- read timeout (``SocketTimeoutError``): ``httpx.ReadTimeout``, may have been sent;
- disconnect after the request was written (``ServerDisconnectedError``), truncated or
  malformed body (``ClientPayloadError``): ``httpx.RemoteProtocolError``, may have been
  sent;
- write to a connection being closed (``ClientConnectionResetError``):
  ``httpx.WriteError``, may have been sent;
- anything else (``ClientOSError`` once connected, a reset mid-request):
  ``httpx.ReadError``, may have been sent.

aiohttp's own resending of a GET whose connection dropped is turned off: FayClient's
retry policy decides what is sent again, as on its default transport.

httpx's per-request timeouts map onto aiohttp's: ``connect`` bounds name resolution and
the connection (``ClientTimeout.connect`` and ``sock_connect``), ``read`` each wait for
data (``sock_read``), ``pool`` the wait for one of ``max_connections`` (kept here, so that
it is told apart from a connect timeout). aiohttp has no write timeout: ``write`` is not
applied (request bodies here are small JSON documents).

Bodies are read whole before the response is returned: the Fay API answers with small
JSON documents, and a body read whole frees its connection at once.
"""

from __future__ import annotations

import asyncio
import functools
import ssl
from collections.abc import Mapping
from typing import Any, Final, NamedTuple

import httpx
import sniffio

try:
    import aiohttp
except ModuleNotFoundError as _missing:  # pragma: no cover - covered in a subprocess
    if _missing.name != "aiohttp":
        raise
    raise ImportError(
        "fay_async.aiohttp needs aiohttp: pip install 'fay-async[aiohttp]'"
    ) from _missing
import yarl

from .exceptions import ConfigurationError

__all__ = ["AiohttpTransport"]


def _asyncio_only(what: str) -> ConfigurationError:
    return ConfigurationError(
        f"AiohttpTransport runs on asyncio only, and {what}: aiohttp needs an asyncio "
        "event loop. On trio, use FayClient's default transport."
    )


@functools.lru_cache(maxsize=64)
def _client_timeout(connect: float | None, read: float | None) -> aiohttp.ClientTimeout:
    """aiohttp's timeouts for httpx's ``connect`` and ``read`` (few distinct values)."""
    return aiohttp.ClientTimeout(total=None, connect=connect, sock_connect=connect, sock_read=read)


@functools.lru_cache(maxsize=1024)
def _yarl_url(url: str) -> yarl.URL:
    """The URL as aiohttp takes it (already encoded); a path asked for again is reused."""
    return yarl.URL(url, encoded=True)


@functools.lru_cache(maxsize=64)
def _header_items(raw: tuple[tuple[bytes, bytes], ...]) -> tuple[tuple[str, str], ...]:
    """Request headers as aiohttp takes them (the same few sets on every request)."""
    return tuple(httpx.Headers(list(raw)).multi_items())


#: aiohttp's failures, most specific first (the connector errors are ClientOSErrors, the
#: timeouts ServerConnectionErrors), and the httpx exception each becomes. Anything else
#: (a ClientOSError once connected, any other error) becomes ReadError: it may have arrived.
_MAPPING: Final[tuple[tuple[tuple[type[BaseException], ...], type[httpx.TransportError]], ...]] = (
    ((aiohttp.ClientConnectorError, aiohttp.ServerFingerprintMismatch), httpx.ConnectError),
    ((aiohttp.ConnectionTimeoutError,), httpx.ConnectTimeout),
    ((asyncio.TimeoutError,), httpx.ReadTimeout),  # SocketTimeoutError, or a bare one
    ((aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError), httpx.RemoteProtocolError),
    ((aiohttp.ClientConnectionResetError,), httpx.WriteError),
    ((aiohttp.InvalidURL, aiohttp.NonHttpUrlClientError), httpx.UnsupportedProtocol),
)


def _translate(error: Exception, request: httpx.Request | None) -> httpx.TransportError:
    """The httpx exception for an aiohttp (or OS) failure of ``request``; see the module doc."""
    text = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
    for kinds, translated in _MAPPING:
        if isinstance(error, kinds):
            return translated(text, request=request)
    return httpx.ReadError(text, request=request)


class Answer(NamedTuple):
    """A response read whole, as aiohttp gave it."""

    status: int
    raw_headers: tuple[tuple[bytes, bytes], ...]
    content: bytes
    http_1_0: bool
    reason: str | None
    #: No Content-Encoding to decode and no cookie to keep: the body is the content.
    plain: bool

    def response(self, request: httpx.Request) -> httpx.Response:
        """This answer as the httpx.Response of ``request``."""
        # The body as a stream, read (and decoded) by whoever reads the response, as one
        # from httpx's own transport: httpx.Response(content=...) would read it through
        # the decoders at once, and add a Content-Length the server may not have sent.
        return httpx.Response(
            self.status,
            headers=self.raw_headers,
            stream=httpx.ByteStream(self.content),
            request=request,
            extensions={
                # aiohttp speaks HTTP/1.x only
                "http_version": b"HTTP/1.0" if self.http_1_0 else b"HTTP/1.1",
                "reason_phrase": (self.reason or "").encode("ascii", "replace"),
            },
        )


class AiohttpTransport(httpx.AsyncBaseTransport):
    """Sends httpx requests with one ``aiohttp.ClientSession``; asyncio only.

    ``max_connections`` bounds the requests (and so the connections) in flight at once;
    a request waits up to the pool timeout for its turn. Idle connections are kept for
    ``keepalive_expiry`` seconds. ``verify`` is an ``ssl.SSLContext``, or ``True`` for
    aiohttp's default checks (``False`` turns certificate checks off). The session is made
    on first use, on the running event loop, and closed by :meth:`aclose`.
    """

    def __init__(
        self,
        *,
        max_connections: int = 100,
        keepalive_expiry: float = 15.0,
        verify: ssl.SSLContext | bool = True,
        trust_env: bool = False,
    ) -> None:
        if max_connections < 1:
            raise ValueError(f"max_connections must be at least 1, got {max_connections}")
        try:
            library = sniffio.current_async_library()
        except sniffio.AsyncLibraryNotFoundError:
            library = None  # made outside any event loop: checked again on first use
        if library is not None and library != "asyncio":
            raise _asyncio_only(f"this is {library}")
        self._max_connections = max_connections
        self._keepalive_expiry = keepalive_expiry
        self._verify = verify
        self._trust_env = trust_env
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._slots: asyncio.Semaphore | None = None
        self._closed = False

    def __repr__(self) -> str:
        return f"AiohttpTransport(max_connections={self._max_connections})"

    def _open(self) -> tuple[aiohttp.ClientSession, asyncio.Semaphore]:
        """The session and the connection slots, made on first use; the loop checked."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            library = _current_library()
            raise _asyncio_only(f"this is {library}") from None
        if self._session is not None and self._slots is not None:
            if loop is not self._loop:
                raise ConfigurationError(
                    "this AiohttpTransport was first used on another event loop: an "
                    "aiohttp session belongs to the loop it was made on"
                )
            return self._session, self._slots
        if self._closed:
            raise ConfigurationError("this AiohttpTransport is closed")
        # The pool limit is kept by the slots, not the connector, so that a wait for a
        # free connection (PoolTimeout: not sent) is told apart from a slow connect.
        connector = aiohttp.TCPConnector(
            limit=0, keepalive_timeout=self._keepalive_expiry, ssl=self._verify
        )
        # auto_decompress off: httpx decodes the body by its Content-Encoding, as it does
        # with its own transport, and would otherwise decode it twice.
        self._session = aiohttp.ClientSession(
            connector=connector,
            auto_decompress=False,
            trust_env=self._trust_env,
            cookie_jar=aiohttp.DummyCookieJar(),
            timeout=aiohttp.ClientTimeout(total=None),
        )
        # aiohttp sends a GET again by itself when the connection drops; FayClient's retry
        # policy already decides that, and one policy keeps max_retries meaning what it says
        # (as on the default transport). The switch is private: set only where it exists.
        if hasattr(self._session, "_retry_connection"):
            self._session._retry_connection = False
        self._slots = asyncio.Semaphore(self._max_connections)
        self._loop = loop
        return self._session, self._slots

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send ``request`` and read its response whole; failures as httpx exceptions."""
        self._open()  # not on asyncio, or closed: said before the body is read
        try:
            body = request.content
        except httpx.RequestNotRead:
            body = await request.aread()
        try:
            answer = await self._exchange(
                request.method,
                str(request.url),
                _header_items(tuple(request.headers.raw)),
                body,
                request.extensions.get("timeout", {}),
            )
        except httpx.RequestError as error:
            error.request = request
            raise
        return answer.response(request)

    async def _exchange(
        self,
        method: str,
        url: str,
        headers: tuple[tuple[str, str], ...],
        body: bytes,
        timeouts: Mapping[str, Any],
    ) -> Answer:
        """One exchange from parts, the answer read whole; failures as httpx exceptions
        without their request (the caller gives them one).

        What :meth:`handle_async_request` does without an ``httpx.Request`` and
        ``httpx.Response`` around it: FayClient's own httpx client hands its requests over
        here (see ``_direct``). ``url`` is encoded, as ``str(httpx.URL)`` gives it;
        ``headers`` as :func:`_header_items` makes them.
        """
        session, slots = self._open()
        if slots.locked():
            await self._acquire(slots, timeouts.get("pool"))
        else:
            await slots.acquire()  # a free slot: taken without waiting
        try:
            try:
                async with session.request(
                    method,
                    _yarl_url(url),
                    headers=headers,
                    data=body or None,
                    allow_redirects=False,
                    timeout=_client_timeout(timeouts.get("connect"), timeouts.get("read")),
                ) as answer:
                    content = await answer.read()
            except (aiohttp.ClientError, OSError, asyncio.TimeoutError) as error:
                raise _translate(error, None) from error
        finally:
            slots.release()
        names = answer.headers
        return Answer(
            answer.status,
            answer.raw_headers,
            content,
            answer.version == (1, 0),
            answer.reason,
            "Content-Encoding" not in names and "Set-Cookie" not in names,
        )

    @staticmethod
    async def _acquire(slots: asyncio.Semaphore, timeout: float | None) -> None:
        """Wait up to ``timeout`` for a slot (none is free)."""
        try:
            await asyncio.wait_for(slots.acquire(), timeout)
        except asyncio.TimeoutError:
            raise httpx.PoolTimeout(f"no free connection within {timeout} s") from None

    async def aclose(self) -> None:
        """Close the aiohttp session and its connections; the transport cannot be reused."""
        self._closed = True
        session, self._session = self._session, None
        if session is not None:
            await session.close()


def _current_library() -> str:
    try:
        return sniffio.current_async_library()
    except sniffio.AsyncLibraryNotFoundError:
        return "not inside an event loop"
