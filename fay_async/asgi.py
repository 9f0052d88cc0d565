"""Web apps: a research never outlives the request that wanted it.

ASGI servers (uvicorn, hypercorn) do not cancel a handler when its HTTP client goes away:
they only answer the handler's next ``receive()`` with ``http.disconnect``. A handler
busy in ``await manager.research(...)`` never asks, so the research runs (and is paid
for) to its end. :class:`CancelOnDisconnect` is an ASGI middleware that cancels the
request's handler when its client disconnects before the response is complete, so the
manager's shielded stop runs; :func:`cancel_on_disconnect` does the same for one block of
one handler::

    app = CancelOnDisconnect(app)                 # any ASGI 3 app
    app.add_middleware(CancelOnDisconnect)        # Starlette / FastAPI

    async with cancel_on_disconnect(request) as watch:   # in one handler
        result = await manager.research(prompt)
    if watch.disconnected:
        ...                                       # nobody is left to answer

Only ``receive()`` can tell that the client left, so a watcher calls it while the
handler works. It never takes a message from the app: whatever it reads before the
disconnect (the request body, when the app has not read it yet) is kept and handed to
the app's own ``receive()`` calls in order, and only one of the two ever waits in the
server's ``receive()`` at a time.

A server that shuts down waits for the requests in flight before it runs the app's
lifespan shutdown (uvicorn: for ``--timeout-graceful-shutdown`` seconds, by default for
ever), so a handler awaiting a research would hold the shutdown until the research ends.
:class:`CancelOnDisconnect` therefore also cancels every request in flight as soon as the
process gets a shutdown signal (``SIGTERM``, ``SIGINT``): their researches stop, their
clients get ``503 Service Unavailable`` (or the end of a response already streaming), and
the server goes on to close the manager in its lifespan shutdown.
"""

from __future__ import annotations

import asyncio
import math
import signal
import threading
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Final, Protocol

import anyio
import anyio.abc

from ._asgi_parts import (
    READ_AHEAD,
    UNAVAILABLE,
    ASGIApp,
    Inbox,
    Message,
    Receive,
    Request,
    Scope,
    Send,
    hook_signal,
    listeners,
    running_asyncio_loop,
    signals,
    unavailable_start,
)

__all__ = [
    "READ_AHEAD",
    "SHUTDOWN_SIGNALS",
    "CancelOnDisconnect",
    "DisconnectWatch",
    "cancel_on_disconnect",
]


#: The signals with which servers (uvicorn, gunicorn's workers, hypercorn) are told to stop.
SHUTDOWN_SIGNALS: Final = (signal.SIGTERM, signal.SIGINT)


class HasReceive(Protocol):
    """Anything with the request's ASGI ``receive`` (a Starlette or FastAPI ``Request``)."""

    @property
    def receive(self) -> Receive: ...


class CancelOnDisconnect:
    """ASGI middleware: cancel a request's handler when its client disconnects early.

    ``app = CancelOnDisconnect(app)``, or ``app.add_middleware(CancelOnDisconnect)`` in
    Starlette and FastAPI. When the HTTP client goes away before the response is complete
    (``more_body`` false on the last ``http.response.body``), the handler is cancelled as
    an enclosing anyio scope would cancel it: ``ResearchManager.research`` then stops its
    research, a streaming response (server-sent events of ``manager.watch``) ends. The
    middleware swallows that cancellation and returns normally, so the server logs no
    error. After the response is complete nothing is cancelled any more.

    The app's ``receive()`` calls get exactly the messages they would get without the
    middleware, in order. WebSocket and lifespan scopes pass through untouched.

    A request that ends within ``watch_after`` seconds costs a cancel scope and a timer:
    its connection is not watched at all. A longer one gets a watcher task, so its
    client's disconnect is noticed at once, or ``watch_after`` seconds after the request
    began if it came sooner.

    Shutdown: when the process gets one of ``shutdown_signals`` (and the server handles
    that signal: uvicorn, gunicorn's uvicorn workers and hypercorn do), every request in
    flight is cancelled the same way, at once, instead of holding the server's shutdown
    until its research ends. A client still waiting gets ``503 Service Unavailable``
    (``Connection: close``), a streaming response ends; requests that arrive later get the
    503 straight away. :meth:`shutdown` does the same without a signal. The signal
    handler is installed, in front of the server's own, when the app starts (its lifespan
    startup, or its first request), from the main thread only; ``shutdown_signals=()``
    installs none.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        watch_after: float = 0.05,
        shutdown_signals: Iterable[int] = SHUTDOWN_SIGNALS,
    ) -> None:
        if (
            isinstance(watch_after, bool)
            or not isinstance(watch_after, (int, float))
            or not math.isfinite(watch_after)
            or watch_after < 0
        ):
            raise ValueError(f"watch_after must be a number of seconds >= 0, got {watch_after!r}")
        self.app = app
        self.watch_after = float(watch_after)
        self.shutdown_signals = signals(shutdown_signals)
        #: True once :meth:`shutdown` ran (a shutdown signal came): new requests get a 503.
        self.shutting_down = False
        self._requests: set[Request] = set()
        self._listening = False
        self._call_soon: Callable[[Callable[[], object]], object] | None = None

    def shutdown(self) -> None:
        """Cancel every request in flight, as a shutdown signal does; refuse new ones (503).

        Call it from the app's event loop (a shutdown signal schedules it there).
        """
        self.shutting_down = True
        for request in list(self._requests):
            request.cancel_for_shutdown()

    def _signalled(self) -> None:
        """In a signal handler: run :meth:`shutdown` on the app's event loop, soon."""
        call_soon = self._call_soon
        if call_soon is None:
            return
        try:
            call_soon(self.shutdown)
        except RuntimeError:  # that event loop has ended: nothing is in flight there
            self._call_soon = None

    def _listen(self) -> None:
        """Start listening for the shutdown signals, on behalf of this event loop."""
        self._listening = True
        if not self.shutdown_signals or threading.current_thread() is not threading.main_thread():
            return
        loop = running_asyncio_loop()
        if loop is not None:
            self._call_soon = loop.call_soon_threadsafe
        else:
            import trio  # noqa: PLC0415 - not asyncio: anyio's other backend

            self._call_soon = trio.lowlevel.current_trio_token().run_sync_soon
        listeners.add(self)
        for signum in self.shutdown_signals:
            hook_signal(signum)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The ASGI 3 entry point."""
        if scope["type"] != "http":
            if scope["type"] == "lifespan":
                self._listen()  # each startup: the server may have installed new handlers
            await self.app(scope, receive, send)
            return
        if not self._listening:
            self._listen()
        if self.shutting_down:
            await send(unavailable_start())
            await send({"type": "http.response.body", "body": UNAVAILABLE})
            return
        loop = running_asyncio_loop()
        if loop is None:
            await self._with_task_group(scope, receive, send)
            return
        # asyncio: a timer instead of a task per request; most requests end before it
        # fires, and a task group with a sleeping task would cost more than they do.
        cancel_scope = anyio.CancelScope()
        request = Request(receive, send, cancel_scope)
        self._requests.add(request)
        timer = loop.call_later(self.watch_after, request.start_watching, loop)
        try:
            with cancel_scope:
                await self.app(scope, request.inbox.receive, request.send)
        finally:
            self._requests.discard(request)
            timer.cancel()
            watcher = request.watcher
            if watcher is not None and not watcher.done():
                watcher.cancel()
                with anyio.CancelScope(shield=True):
                    await asyncio.wait({watcher})
        if request.shut_down:
            await request.end_for_shutdown()

    async def _with_task_group(self, scope: Scope, receive: Receive, send: Send) -> None:
        error: Exception | None = None
        async with anyio.create_task_group() as tg:
            request = Request(receive, send, tg.cancel_scope)
            self._requests.add(request)
            try:
                tg.start_soon(request.watch_after, self.watch_after)
                try:
                    await self.app(scope, request.inbox.receive, request.send)
                except Exception as exc:  # noqa: BLE001 - raised below, not as an ExceptionGroup
                    error = exc
                tg.cancel_scope.cancel()
            finally:
                self._requests.discard(request)
        if error is not None:
            raise error
        if request.shut_down:
            await request.end_for_shutdown()


class DisconnectWatch:
    """The block of :func:`cancel_on_disconnect`: ``disconnected`` and ``receive``.

    ``disconnected`` becomes true when the client went away and the block was cancelled.
    ``receive`` is the request's ``receive()`` for after the block: messages the watcher
    read (body the handler had not read yet, the disconnect) come first.
    """

    def __init__(self, receive: Receive | HasReceive) -> None:
        # A Request (anything with .receive), or the receive callable itself.
        server_receive: Receive = getattr(receive, "receive", receive)  # type: ignore[arg-type]
        if not callable(server_receive):
            raise TypeError("cancel_on_disconnect() needs a Request or an ASGI receive callable")
        self._inbox = Inbox(server_receive)
        self.disconnected = False
        self._tg: anyio.abc.TaskGroup | None = None

    async def receive(self) -> Message:
        """The request's next ASGI message (what the watcher read ahead comes first)."""
        return await self._inbox.receive()

    async def _watch(self, tg: anyio.abc.TaskGroup) -> None:
        if await self._inbox.until_disconnect():
            self.disconnected = True
            tg.cancel_scope.cancel()

    async def __aenter__(self) -> DisconnectWatch:
        if self._tg is not None:
            raise RuntimeError("a DisconnectWatch can be entered only once")
        tg = anyio.create_task_group()
        await tg.__aenter__()
        self._tg = tg
        tg.start_soon(self._watch, tg)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> bool:
        tg = self._tg
        assert tg is not None  # noqa: S101 - entered
        self._inbox.complete = True
        tg.cancel_scope.cancel()  # the watcher ends with the block
        if isinstance(exc_value, Exception):
            # The block's own error propagates as it is, not inside an ExceptionGroup.
            await tg.__aexit__(None, None, None)
            return False
        return await tg.__aexit__(exc_type, exc_value, traceback)


def cancel_on_disconnect(request: HasReceive | Receive) -> DisconnectWatch:
    """Cancel the ``async with`` block when the HTTP client of ``request`` disconnects.

    ``request`` is a Starlette or FastAPI ``Request`` (or a raw ASGI ``receive``). The
    block runs as usual; if the client goes away meanwhile it is cancelled (a
    ``ResearchManager.research`` in it stops its research), the block ends without an
    error and ``watch.disconnected`` is true::

        @app.get("/research")
        async def research(request: Request, q: str) -> Response:
            async with cancel_on_disconnect(request) as watch:
                result = await manager.research(q)
            if watch.disconnected:
                return Response(status_code=499)  # nobody reads it
            return JSONResponse({"output": result.text})

    Read the request body before the block (FastAPI does for body parameters): a body
    the watcher reads in the block is kept for ``watch.receive()``, not for ``request``.
    """
    return DisconnectWatch(request)
