"""Fay webhooks: the signature check, the events, and an ASGI app that receives them.

Fay pushes ``Status``, ``Output`` and ``Error`` events to a registered HTTPS endpoint,
signed with ``X-Fay-Signature: sha256=<hex>`` (HMAC-SHA256 of the raw body with the
webhook secret, conventionally in ``FAY_WEBHOOK_SECRET``)::

    event = parse_event(body, request.headers.get("X-Fay-Signature"))   # bytes as received

    receiver = WebhookReceiver(on_event=handle)        # an ASGI app
    app.mount("/webhooks/fay", receiver)               # Starlette / FastAPI

The receiver answers at once (Fay gives a handler 5 s) and runs the handlers after the
answer; a delivery Fay repeats is answered 200 and handled once.
"""

from __future__ import annotations

import inspect
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Final, Protocol, TypeAlias

import anyio
import anyio.abc

from ._validators import check_callable, check_count, check_seconds
from ._webhook_events import (
    KNOWN_TYPES,
    SIGNATURE_HEADER,
    WebhookEvent,
    check_digest,
    decode_event,
    raw_body,
    resolve_secret,
    secret_key,
    signature_digest,
)
from .exceptions import WebhookPayloadError, WebhookVerificationError

__all__ = [
    "DEFAULT_DEDUPE_SECONDS",
    "DEFAULT_DEDUPE_SIZE",
    "DEFAULT_MAX_BODY",
    "DEFAULT_SHUTDOWN_GRACE",
    "KNOWN_TYPES",
    "SIGNATURE_HEADER",
    "WebhookEvent",
    "WebhookReceiver",
    "parse_event",
    "verify_signature",
]

logger = logging.getLogger("fay_async.webhooks")

Scope: TypeAlias = MutableMapping[str, Any]
Message: TypeAlias = MutableMapping[str, Any]
Receive: TypeAlias = Callable[[], Awaitable[Message]]
Send: TypeAlias = Callable[[Message], Awaitable[None]]
EventHandler: TypeAlias = Callable[[WebhookEvent], object]

#: An Output event carries the whole research output; 8 MiB leaves room for a long one.
DEFAULT_MAX_BODY: Final = 8 * 1024 * 1024
#: Fay sends at most 100 deliveries a minute to one endpoint: an hour of them at most.
DEFAULT_DEDUPE_SIZE: Final = 10_000
#: Repeats come from retries (3 at most, with exponential backoff): well within an hour.
DEFAULT_DEDUPE_SECONDS: Final = 3600.0
#: How long a shutdown waits for handlers still running before cancelling them.
DEFAULT_SHUTDOWN_GRACE: Final = 10.0


def verify_signature(payload: bytes, signature: str | None, secret: str | bytes) -> None:
    """Check that ``signature`` (an ``X-Fay-Signature`` value) signs ``payload`` with ``secret``.

    ``payload`` is the raw request body, exactly as received; the ``sha256=`` prefix is
    optional. The comparison takes constant time. Raises
    :class:`~fay_async.exceptions.WebhookVerificationError` for a missing, malformed or
    wrong signature (``.reason``: ``"missing"``, ``"malformed"``, ``"mismatch"``), and
    ``TypeError`` for a payload that is not bytes.
    """
    body = raw_body(payload)
    check_digest(body, signature_digest(signature), secret_key(secret))


def parse_event(
    payload: bytes, signature: str | None, *, secret: str | bytes | None = None
) -> WebhookEvent:
    """Verify ``payload`` (the raw body) against ``signature``, then decode its event.

    ``secret`` defaults to ``FAY_WEBHOOK_SECRET`` (``ConfigurationError`` without
    either). Raises :class:`~fay_async.exceptions.WebhookVerificationError` when the
    signature fails and :class:`~fay_async.exceptions.WebhookPayloadError` when a signed
    body is not an event (not JSON, or a missing or mistyped field). An event of an
    unknown ``type`` (the dashboard's test event) is returned as it came.
    """
    body = raw_body(payload)
    check_digest(body, signature_digest(signature), resolve_secret(secret))
    return decode_event(body)


class _EventSink(Protocol):
    """Where a :class:`WebhookReceiver` hands events (``ResearchManager``)."""

    async def handle_webhook(self, event: WebhookEvent) -> None: ...


class _SeenIds:
    """Event ids received lately: at most ``size`` of them, each for ``seconds``.

    Time is the event loop's, so that an hour of memory is tested on virtual time.
    """

    __slots__ = ("_ids", "seconds", "size")

    def __init__(self, size: int, seconds: float) -> None:
        self.size = size
        self.seconds = seconds
        self._ids: OrderedDict[str, float] = OrderedDict()  # oldest first

    def add(self, event_id: str) -> bool:
        """Remember ``event_id``; False if it was already remembered."""
        now = anyio.current_time()
        while self._ids and next(iter(self._ids.values())) <= now - self.seconds:
            self._ids.popitem(last=False)
        if event_id in self._ids:
            return False
        self._ids[event_id] = now
        if len(self._ids) > self.size:
            self._ids.popitem(last=False)
        return True

    def discard(self, event_id: str) -> None:
        self._ids.pop(event_id, None)


async def _respond(send: Send, status: int, text: str, *headers: tuple[bytes, bytes]) -> None:
    body = text.encode("utf-8")
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"content-length", b"%d" % len(body)),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body, "more_body": False})


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return None


class _Refused(Exception):  # noqa: N818 - a control-flow signal, not an error raised out
    """A request answered with an error status instead of an event."""

    def __init__(
        self, status: int, text: str, *headers: tuple[bytes, bytes], logged: bool = False
    ) -> None:
        super().__init__(text)
        self.status = status
        self.text = text
        self.headers = headers
        self.logged = logged


class WebhookReceiver:
    """An ASGI app that receives Fay webhooks: mount it, or serve it alone.

    ``POST`` only (405 otherwise). A request without ``X-Fay-Signature`` is answered 400,
    a malformed or wrong one 401, a body over ``max_body`` bytes 413, a signed body that
    is not an event 400; a good one 200 at once. Each new event then goes to
    ``await manager.handle_webhook(event)`` and to ``on_event(event)`` (a function or a
    coroutine function). A handler that raises is logged on ``fay_async.webhooks``; its
    delivery has been answered 200 already, so Fay does not send it again.

    Where handlers run: when the server sends the ASGI lifespan (uvicorn or hypercorn
    serving the receiver itself), in a task group opened at startup, which a shutdown
    waits for at most ``shutdown_grace`` seconds before cancelling what still runs.
    Otherwise (mounted in Starlette or FastAPI, which keep the lifespan to themselves)
    in the request's own task, after the response has been sent in full: Fay has its
    answer, and the server waits for the handler as it waits for any request.

    A delivery whose event ``id`` was received in the last ``dedupe_seconds`` is answered
    200 and not handled again; at most ``dedupe_size`` ids are remembered, oldest
    forgotten first. ``secret`` defaults to ``FAY_WEBHOOK_SECRET``; without either,
    ``ConfigurationError``. The secret is never logged or shown by ``repr()``.
    """

    def __init__(
        self,
        *,
        secret: str | bytes | None = None,
        manager: _EventSink | None = None,
        on_event: EventHandler | None = None,
        max_body: int = DEFAULT_MAX_BODY,
        dedupe_size: int = DEFAULT_DEDUPE_SIZE,
        dedupe_seconds: float = DEFAULT_DEDUPE_SECONDS,
        shutdown_grace: float = DEFAULT_SHUTDOWN_GRACE,
    ) -> None:
        self._key = resolve_secret(secret)
        if manager is not None and not callable(getattr(manager, "handle_webhook", None)):
            raise TypeError(
                f"manager must have an async handle_webhook(event) method, "
                f"got {type(manager).__name__}"
            )
        self.manager = manager
        self.on_event = check_callable(on_event, "on_event")
        self.max_body = check_count(max_body, "max_body")
        self.shutdown_grace = check_seconds(shutdown_grace, "shutdown_grace", allow_zero=True)
        self._seen = _SeenIds(
            check_count(dedupe_size, "dedupe_size"),
            check_seconds(dedupe_seconds, "dedupe_seconds", allow_inf=True),
        )
        self._handlers: anyio.abc.TaskGroup | None = None

    def __repr__(self) -> str:
        return (
            f"WebhookReceiver(manager={self.manager!r}, on_event={self.on_event!r}, "
            f"max_body={self.max_body}, dedupe_size={self._seen.size}, "
            f"dedupe_seconds={self._seen.seconds:g})"
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The ASGI 3 entry point."""
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)
        elif kind == "websocket":
            # Closing before accepting makes the server refuse the handshake (403).
            await send({"type": "websocket.close", "code": 1008})
        else:
            raise ValueError(f"WebhookReceiver serves HTTP, not a {kind!r} scope")

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        message = await receive()
        if message["type"] != "lifespan.startup":
            await send({"type": "lifespan.shutdown.complete"})
            return
        async with anyio.create_task_group() as handlers:
            self._handlers = handlers
            try:
                await send({"type": "lifespan.startup.complete"})
                await receive()  # lifespan.shutdown
            finally:
                # From here on, late requests run their handlers themselves.
                self._handlers = None
                handlers.cancel_scope.deadline = anyio.current_time() + self.shutdown_grace
        if handlers.cancel_scope.cancelled_caught:
            logger.warning(
                "Fay webhook handlers still running %g s after shutdown began were cancelled",
                self.shutdown_grace,
            )
        await send({"type": "lifespan.shutdown.complete"})

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            event = await self._read_event(scope, receive)
        except _Refused as refusal:
            if not refusal.logged:
                logger.info("Fay webhook refused (%d): %s", refusal.status, refusal.text)
            await _respond(send, refusal.status, f"{refusal.text}\n", *refusal.headers)
            return
        if event is not None:
            await self._accept(event, send)

    async def _read_event(self, scope: Scope, receive: Receive) -> WebhookEvent | None:
        """The request's event, None if its client left, or :class:`_Refused`."""
        if scope.get("method") != "POST":
            raise _Refused(405, "Fay webhooks are POSTed", (b"allow", b"POST"))
        try:
            # The header's form is checked before a body is read from a sender without one.
            digest = signature_digest(_header(scope, b"x-fay-signature"))
        except WebhookVerificationError as error:
            raise _Refused(400 if error.reason == "missing" else 401, str(error)) from None
        too_large = _Refused(413, f"the body is over {self.max_body} bytes")
        declared = _header(scope, b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body:
            raise too_large
        body = await self._read_body(receive)
        if body is None:
            return None
        if len(body) > self.max_body:
            raise too_large
        try:
            check_digest(body, digest, self._key)
        except WebhookVerificationError as error:
            raise _Refused(401, str(error)) from None
        try:
            return decode_event(body)
        except WebhookPayloadError as error:
            # Signed by Fay yet unreadable: a change on Fay's side that someone must see.
            logger.warning("Fay webhook refused (400): %s", error)
            raise _Refused(400, str(error), logged=True) from None

    async def _accept(self, event: WebhookEvent, send: Send) -> None:
        new = self._seen.add(event.id)
        if not new:
            logger.debug("Fay webhook event %s (%s) received again", event.id, event.type)
        try:
            await _respond(send, 200, "received\n" if new else "already received\n")
        except BaseException:
            # Fay may not have seen the answer and will send it again: handle that one.
            if new:
                self._seen.discard(event.id)
            raise
        if not new:
            return
        handlers = self._handlers
        if handlers is not None:
            handlers.start_soon(self._handle, event, name=f"fay webhook {event.id}")
        else:
            await self._handle(event)

    async def _read_body(self, receive: Receive) -> bytes | None:
        """The request body, or None if the client left; stops reading past ``max_body``."""
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return None
            chunk = message.get("body", b"")
            chunks.append(chunk)
            size += len(chunk)
            if size > self.max_body or not message.get("more_body", False):
                return b"".join(chunks)

    async def _handle(self, event: WebhookEvent) -> None:
        """Hand ``event`` to the manager and to ``on_event``; a failure is logged, not raised."""
        if self.manager is not None:
            try:
                await self.manager.handle_webhook(event)
            except Exception:
                logger.exception(
                    "the manager failed to handle Fay webhook event %s (%s)", event.id, event.type
                )
        if self.on_event is not None:
            try:
                result = self.on_event(event)
                if inspect.isawaitable(result):
                    await result
            except Exception:
                logger.exception(
                    "on_event failed to handle Fay webhook event %s (%s)", event.id, event.type
                )
