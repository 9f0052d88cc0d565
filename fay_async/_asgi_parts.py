"""The working parts of :mod:`fay_async.asgi`: the shared inbox, one request, the signal hook."""

from __future__ import annotations

import asyncio
import signal
import weakref
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from types import FrameType
from typing import Any, Final, Protocol, TypeAlias

import anyio
import anyio.abc

__all__ = [
    "READ_AHEAD",
    "UNAVAILABLE",
    "ASGIApp",
    "Inbox",
    "Message",
    "Receive",
    "Request",
    "Scope",
    "Send",
    "ShutdownListener",
    "hook_signal",
    "listeners",
    "running_asyncio_loop",
    "signals",
    "unavailable_start",
]

Scope: TypeAlias = MutableMapping[str, Any]
Message: TypeAlias = MutableMapping[str, Any]
Receive: TypeAlias = Callable[[], Awaitable[Message]]
Send: TypeAlias = Callable[[Message], Awaitable[None]]
ASGIApp: TypeAlias = Callable[[Scope, Receive, Send], Awaitable[None]]

#: Bytes of request body the watcher reads ahead of an app that has not read it yet.
#: Beyond this it waits for the app to take them, so a large upload keeps the server's
#: flow control instead of piling up in memory.
READ_AHEAD: Final = 1 << 16

#: What a client whose request was cancelled by a shutdown gets, if nothing was sent yet.
UNAVAILABLE: Final = b"The server is shutting down; try again.\n"


class Inbox:
    """The request's ``receive()``, shared by the app and a watcher without losing a message.

    Messages the watcher read go to ``buffer``; the app takes them first, in order. At
    most one of the two waits in the server's ``receive()`` (``reading``); the other
    waits for ``changed``, set whenever that read ends or the app takes a message.
    """

    __slots__ = ("_changed", "_receive", "buffer", "buffered", "complete", "reading")

    def __init__(self, receive: Receive) -> None:
        self._receive = receive
        self.buffer: deque[Message] = deque()
        self.buffered = 0  # body bytes in buffer
        self.reading = False
        self.complete = False  # the response has been sent in full
        self._changed: anyio.Event | None = None

    async def receive(self) -> Message:
        """The app's ``receive()``: the watcher's read-ahead first, then the server's."""
        while True:
            if self.buffer:
                message = self.buffer.popleft()
                self.buffered -= len(message.get("body", b""))
                self._notify()
                return message
            if not self.reading:
                return await self._read()
            await self._wait()

    async def _read(self) -> Message:
        self.reading = True
        try:
            return await self._receive()
        finally:
            self.reading = False
            self._notify()

    async def _wait(self) -> None:
        if self._changed is None:
            self._changed = anyio.Event()
        await self._changed.wait()

    def _notify(self) -> None:
        changed, self._changed = self._changed, None
        if changed is not None:
            changed.set()

    async def until_disconnect(self) -> bool:
        """Read ahead until ``http.disconnect``; True if it came before the response ended.

        A server that cannot be read from any more (it raised) is not watched further.
        """
        while True:
            if self.reading or self.buffered >= READ_AHEAD:
                await self._wait()
                continue
            try:
                message = await self._read()
            except Exception:  # noqa: BLE001 - the app's own receive() will raise it too
                return False
            self.buffer.append(message)
            if message.get("type") == "http.disconnect":
                return not self.complete
            self.buffered += len(message.get("body", b""))


class Request:
    """One HTTP request going through :class:`CancelOnDisconnect`."""

    __slots__ = ("_send", "cancel_scope", "inbox", "shut_down", "started", "watcher")

    def __init__(self, receive: Receive, send: Send, cancel_scope: anyio.CancelScope) -> None:
        self.inbox = Inbox(receive)
        self._send = send
        self.cancel_scope = cancel_scope
        self.watcher: asyncio.Task[None] | None = None
        self.started = False  # the response has begun
        self.shut_down = False  # cancelled because the server is shutting down

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.started = True
        elif message["type"] == "http.response.body" and not message.get("more_body", False):
            # Complete from here on: a disconnect the watcher sees now is the normal end
            # of the exchange (uvicorn answers receive() with it), not a client leaving.
            self.inbox.complete = True
        await self._send(message)

    def cancel_for_shutdown(self) -> None:
        if not self.inbox.complete:
            self.shut_down = True
            self.cancel_scope.cancel()

    async def end_for_shutdown(self) -> None:
        """Answer a client still waiting when its handler was cancelled by a shutdown."""
        if self.inbox.complete:
            return
        try:
            if not self.started:
                await self.send(unavailable_start())
                await self.send({"type": "http.response.body", "body": UNAVAILABLE})
            else:  # a stream (server-sent events, say) ends instead of breaking off
                await self.send({"type": "http.response.body", "body": b""})
        except Exception:  # noqa: BLE001 - the client is gone too: nobody to answer
            return

    async def watch(self) -> None:
        if await self.inbox.until_disconnect():
            self.cancel_scope.cancel()

    async def watch_after(self, delay: float) -> None:
        await anyio.sleep(delay)
        await self.watch()

    def start_watching(self, loop: asyncio.AbstractEventLoop) -> None:
        if not self.inbox.complete:
            self.watcher = loop.create_task(self.watch())


def unavailable_start() -> Message:
    headers = [
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", b"%d" % len(UNAVAILABLE)),
        (b"connection", b"close"),
    ]
    return {"type": "http.response.start", "status": 503, "headers": headers}


def running_asyncio_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:  # trio
        return None


class _ChainedHandler:
    """The process's handler of one shutdown signal: tell the middlewares, then the server.

    The server's own handler (uvicorn's ``handle_exit``, say) runs after, as before; the
    middlewares only schedule their :meth:`CancelOnDisconnect.shutdown` on their event
    loops, which is safe from a signal handler.
    """

    __slots__ = ("previous",)

    def __init__(self, previous: Callable[[int, FrameType | None], Any]) -> None:
        self.previous = previous

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        for listener in list(listeners):
            listener._signalled()
        self.previous(signum, frame)


class ShutdownListener(Protocol):
    """A middleware that wants to hear of a shutdown signal."""

    def _signalled(self) -> None: ...


#: The middlewares to tell of a shutdown signal (forgotten with them).
listeners: weakref.WeakSet[ShutdownListener] = weakref.WeakSet()


def hook_signal(signum: signal.Signals) -> None:
    """Put a :class:`_ChainedHandler` in front of the server's handler of ``signum``.

    Only where the server handles the signal itself (a Python callable is installed): a
    default or ignored signal is left alone, since nothing shuts down gracefully on it.
    Servers that restore their previous handlers when they stop (uvicorn does) remove it.
    """
    current = signal.getsignal(signum)
    if callable(current) and not isinstance(current, _ChainedHandler):
        signal.signal(signum, _ChainedHandler(current))


def signals(values: Iterable[int]) -> tuple[signal.Signals, ...]:
    try:
        return tuple(signal.Signals(value) for value in values)
    except (TypeError, ValueError):
        raise ValueError(
            f"shutdown_signals must be signal numbers (signal.SIGTERM, ...), got {values!r}"
        ) from None
