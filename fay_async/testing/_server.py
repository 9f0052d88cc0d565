"""Serving a :class:`FayEmulator` over a real loopback socket with uvicorn."""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable
from types import ModuleType, TracebackType
from typing import Any, Final

import anyio.to_thread

from fay_async._config import is_loopback

from ._emulator import ConnectionDropped, FayEmulator

logger: Final = logging.getLogger("fay_async.testing")

__all__ = [
    "EmulatorServer",
    "base_url_for",
    "bind_socket",
    "require_uvicorn",
    "serve",
    "serve_forever",
]

UVICORN_MISSING: Final = 'the Fay emulator server needs uvicorn: pip install "fay-async[emulator]"'


def _warn_if_exposed(host: str) -> None:
    if not is_loopback(host):
        logger.warning(
            "the Fay emulator listens on %s, not only on this machine: anyone who can reach "
            "it can use it with its well-known key",
            host,
        )


def require_uvicorn() -> ModuleType:
    """Import uvicorn, or raise ``ModuleNotFoundError`` saying how to install it."""
    try:
        import uvicorn  # noqa: PLC0415 - an optional dependency, imported when needed
    except ImportError:
        raise ModuleNotFoundError(UVICORN_MISSING, name="uvicorn") from None
    return uvicorn


class _HideDrops(logging.Filter):
    """Keeps uvicorn from logging an injected connection drop as an application error."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, ConnectionDropped)


_HIDE_DROPS: Final = _HideDrops()


def hide_injected_drops() -> None:
    """Install (once) the log filter that hides injected drops from ``uvicorn.error``."""
    logger = logging.getLogger("uvicorn.error")
    if _HIDE_DROPS not in logger.filters:
        logger.addFilter(_HIDE_DROPS)


def bind_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port`` (port 0: any free port), ready for uvicorn."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # An explicit IPPROTO_TCP lets asyncio set TCP_NODELAY on accepted connections; without
    # it every answer (headers, then body) waits out the peer's delayed ACK (~40 ms).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def base_url_for(sock: socket.socket) -> str:
    """The ``http://host:port`` origin a bound socket serves."""
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}"


def uvicorn_config(emulator: FayEmulator, **options: Any) -> Any:
    """A ``uvicorn.Config`` for the emulator (h11, no websockets, lifespan on)."""
    uvicorn = require_uvicorn()
    hide_injected_drops()
    emulator.use_wall_clock()
    options.setdefault("http", "h11")
    options.setdefault("ws", "none")
    options.setdefault("lifespan", "on")
    options.setdefault("loop", "asyncio")
    return uvicorn.Config(emulator, **options)


class EmulatorServer:
    """A :class:`FayEmulator` served by uvicorn on a background thread.

    Use it as a context manager (sync or async) that yields the base URL, or call
    :meth:`start` and :meth:`stop`. It binds loopback (127.0.0.1) unless told otherwise.
    """

    def __init__(
        self,
        emulator: FayEmulator,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        startup_timeout: float = 10.0,
    ) -> None:
        self.emulator = emulator
        self._host = host
        self._port = port
        self._startup_timeout = startup_timeout
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self._base_url: str | None = None

    @property
    def base_url(self) -> str:
        """The origin the emulator answers on, such as ``http://127.0.0.1:8765``."""
        if self._base_url is None:
            raise RuntimeError("the emulator server is not running")
        return self._base_url

    def start(self) -> str:
        """Start serving; return the base URL once the server accepts connections."""
        if self._thread is not None:
            raise RuntimeError("the emulator server is already running")
        # The lifespan is what runs webhook delivery; without webhooks there is nothing to run.
        lifespan = "off" if self.emulator.webhook_url is None else "on"
        config = uvicorn_config(
            self.emulator, log_config=None, log_level="warning", access_log=False, lifespan=lifespan
        )
        server = require_uvicorn().Server(config)
        sock = bind_socket(self._host, self._port)
        base_url = base_url_for(sock)
        thread = threading.Thread(
            target=server.run, kwargs={"sockets": [sock]}, name="fay-emulator", daemon=True
        )
        thread.start()
        deadline = time.monotonic() + self._startup_timeout
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                server.should_exit = True
                thread.join(self._startup_timeout)
                sock.close()
                raise RuntimeError(f"the emulator server did not start on {base_url}")
            time.sleep(0.005)
        self._server, self._thread, self._base_url = server, thread, base_url
        return base_url

    def stop(self) -> None:
        """Shut the server down and wait for its thread (a no-op when not running)."""
        if self._thread is None:
            return
        # Webhook delivery ends first: a forced exit skips the lifespan's shutdown.
        self.emulator._stop_delivering(self._startup_timeout)
        # A test server does not wait for requests still in flight (an injected latency,
        # say): their clients are gone, and the test should not wait for them either.
        self._server.should_exit = True
        self._server.force_exit = True
        self._thread.join(self._startup_timeout)
        self._server = self._thread = self._base_url = None

    def __enter__(self) -> str:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    async def __aenter__(self) -> str:
        return await anyio.to_thread.run_sync(self.start)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await anyio.to_thread.run_sync(self.stop)

    def __repr__(self) -> str:
        where = self._base_url or "stopped"
        return f"EmulatorServer({where})"


def serve(emulator: FayEmulator, *, host: str = "127.0.0.1", port: int = 0) -> EmulatorServer:
    """Serve ``emulator`` over a loopback socket; ``with serve(emu) as base_url: ...``.

    The server runs uvicorn on a background thread and stops when the ``with`` (or
    ``async with``) block ends. Without an injected clock the emulator then runs on
    ``time.monotonic() * speed``. Needs uvicorn (``pip install "fay-async[emulator]"``).
    """
    return EmulatorServer(emulator, host=host, port=port)


def serve_forever(
    emulator: FayEmulator,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    log_level: str = "info",
    on_ready: Callable[[str], object] | None = None,
) -> None:
    """Serve ``emulator`` with uvicorn in this thread until it is stopped (Ctrl-C).

    The socket is bound first, then ``on_ready(base_url)`` is called (to print where it
    listens, say), then uvicorn serves with its own logging at ``log_level`` (``"info"``:
    one line per request). Raises ``ModuleNotFoundError`` without uvicorn
    (``pip install "fay-async[emulator]"``) and ``OSError`` when ``host:port`` cannot be
    bound; a Ctrl-C that uvicorn passes on comes out as ``KeyboardInterrupt``.
    """
    uvicorn = require_uvicorn()
    sock = bind_socket(host, port)
    _warn_if_exposed(host)
    try:
        if on_ready is not None:
            on_ready(base_url_for(sock))
        server = uvicorn.Server(uvicorn_config(emulator, log_level=log_level))
        server.run(sockets=[sock])
    finally:
        sock.close()
