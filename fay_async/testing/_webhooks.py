"""The emulator's webhooks: an event at each status change, signed and POSTed with retries.

Statuses are computed from timestamps, so nothing happens by itself when a research
changes status. A scheduler task sleeps until the next transition of any research (on
the emulator's clock), builds the events that are due and delivers them. It runs only
inside :meth:`FayEmulator.delivering` (which the emulator's ASGI lifespan enters when it
is served), and everything it started ends with it: a retry still waiting is abandoned.

Events of one research are sent in order (the first attempt of each); retries and
delayed deliveries go on beside the later ones, so they may arrive out of order, as
Fay's may.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import math
import random
import time
from collections import deque
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any, Final, Protocol

import anyio
import anyio.abc
import attrs
import httpx

from ._hook_events import DONE, Event, Source, collect
from ._http import ASGIApp, Receive, Send
from ._values import WebhookDelivery, WebhookFault, WebhookFaultKind

__all__ = ["DEFAULT_TIMEOUT", "RETRY_BACKOFF", "WebhookMethods", "Webhooks", "webhooks_for"]

#: The pauses before the three documented retries, in emulator seconds.
RETRY_BACKOFF: Final = (1.0, 2.0, 4.0)
#: How long a receiver has to answer, in seconds of the event loop (Fay gives 5 s).
DEFAULT_TIMEOUT: Final = 5.0
#: The URL an in-process receiver is called on when no ``webhook_url`` is given.
IN_PROCESS_URL: Final = "http://webhook.test/"
#: An injected clock moves without telling the event loop: look at it this often.
_CLOCK_RECHECK: Final = 0.1
#: How often a served emulator's lifespan looks whether the server is being stopped.
_CLOSE_CHECK: Final = 0.02


@attrs.define
class _Run:
    source: Source
    http: httpx.AsyncClient
    group: anyio.abc.TaskGroup
    wake: anyio.Event = attrs.field(factory=anyio.Event)


def _check_target(url: object, app: object) -> str | None:
    if app is not None and not callable(app):
        raise TypeError("webhook_app must be an ASGI application")
    if url is None:
        return IN_PROCESS_URL if app is not None else None
    if not isinstance(url, str):
        raise TypeError(f"webhook_url must be a str, got {type(url).__name__}")
    parsed = httpx.URL(url)
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise ValueError(f"webhook_url must be an http:// or https:// URL, got {url!r}")
    return url


class Webhooks:
    """Where and how an emulator delivers webhooks, what it sent, and its scheduler."""

    def __init__(
        self,
        *,
        url: str | None,
        app: ASGIApp | None,
        secret: str | bytes | None,
        drop_rate: float,
        timeout: float,
        seed: int | None,
    ) -> None:
        target = _check_target(url, app)
        if target is None:
            raise ValueError("webhook_secret needs webhook_url or webhook_app")
        if isinstance(secret, str):
            secret = secret.encode("utf-8")
        if not isinstance(secret, bytes) or not secret:
            raise ValueError("webhook_url and webhook_app need a non-empty webhook_secret")
        if (
            not isinstance(drop_rate, (int, float))
            or isinstance(drop_rate, bool)
            or not 0 <= drop_rate <= 1
        ):
            raise ValueError(f"webhook_drop_rate must be between 0 and 1, got {drop_rate!r}")
        if (
            not isinstance(timeout, (int, float))
            or isinstance(timeout, bool)
            or not math.isfinite(timeout)
            or timeout <= 0
        ):
            raise ValueError(f"webhook_timeout must be a positive number, got {timeout!r}")
        self.url = target
        self._app = app
        self._secret = secret
        self._drop_rate = float(drop_rate)
        self._timeout = float(timeout)
        # Its own generator: event ids and drops never shift the research ids and durations.
        self._rng = random.Random(None if seed is None else f"webhooks-{seed}")  # noqa: S311
        self._faults: deque[list[Any]] = deque()  # [fault, deliveries left]
        self._records: list[WebhookDelivery] = []
        self._emitted: dict[str, int] = {}  # request id -> transitions delivered so far
        self._lanes: dict[str, anyio.Lock] = {}
        self._run: _Run | None = None
        self._closing = False
        self.recheck: float | None = None

    # --- what the emulator calls ---------------------------------------------------------

    def track(self, request_id: str) -> None:
        """A research was created: deliver its events, starting with PENDING now."""
        self._emitted[request_id] = 0
        self.wake()

    def wake(self) -> None:
        """Something changed (a create, a stop): let the scheduler look again now."""
        run = self._run
        if run is not None:
            run.wake.set()

    def inject(self, fault: WebhookFault, times: int) -> None:
        self._faults.append([fault, times])

    def pending_faults(self) -> int:
        return sum(entry[1] for entry in self._faults)

    def clear_faults(self) -> None:
        self._faults.clear()

    def deliveries(self) -> list[WebhookDelivery]:
        return list(self._records)

    @property
    def running(self) -> bool:
        return self._run is not None

    # --- the scheduler's lifecycle ---------------------------------------------------------

    @contextlib.asynccontextmanager
    async def delivering(self, source: Source) -> AsyncIterator[None]:
        """Run the scheduler (and every delivery it starts) for the block's duration."""
        if self._run is not None:
            raise RuntimeError("this emulator is delivering webhooks already")
        transport = None
        if self._app is not None:
            transport = httpx.ASGITransport(app=self._app, raise_app_exceptions=False)
        headers = {"user-agent": "fay-async-emulator"}
        error: Exception | None = None
        async with (
            httpx.AsyncClient(transport=transport, headers=headers, timeout=self._timeout) as http,
            anyio.create_task_group() as group,
        ):
            self._run = _Run(source, http, group)
            group.start_soon(self._schedule, self._run, name="fay emulator webhooks")
            try:
                yield
            except Exception as exc:  # noqa: BLE001 - raised below, not as an ExceptionGroup
                error = exc
            finally:
                self._run = None
                group.cancel_scope.cancel()
        if error is not None:
            raise error

    async def lifespan(self, source: Source, receive: Receive, send: Send) -> None:
        """The ASGI lifespan of a served emulator: deliver from startup to shutdown."""
        await receive()  # lifespan.startup
        self._closing = False
        async with self.delivering(source), anyio.create_task_group() as group:
            await send({"type": "lifespan.startup.complete"})

            async def until_closed() -> None:
                # close() comes from another thread: a flag is what it can safely set.
                while not self._closing:  # noqa: ASYNC110
                    await anyio.sleep(_CLOSE_CHECK)
                group.cancel_scope.cancel()

            group.start_soon(until_closed)
            await receive()  # lifespan.shutdown
            group.cancel_scope.cancel()
        await send({"type": "lifespan.shutdown.complete"})

    def close(self, timeout: float) -> None:
        """From any thread: end a served emulator's deliveries; wait up to ``timeout``."""
        self._closing = True
        deadline = time.monotonic() + timeout
        while self._run is not None and time.monotonic() < deadline:
            time.sleep(0.005)

    # --- scheduling --------------------------------------------------------------------------

    async def _schedule(self, run: _Run) -> None:
        source = run.source
        while True:
            run.wake = anyio.Event()
            now = source.now()
            with source._lock:
                due, next_at = collect(source, self._emitted, now, self._rng)
            for request_id, events in due:
                run.group.start_soon(self._in_order, run, request_id, events)
            wait = math.inf if next_at is None else max(next_at - now, 0.0) / source.speed
            if self.recheck is not None:
                wait = min(wait, self.recheck)
            with anyio.move_on_after(wait):
                await run.wake.wait()

    # --- delivery ----------------------------------------------------------------------------

    def _take_fault(self) -> WebhookFault | None:
        if self._faults:
            entry = self._faults[0]
            entry[1] -= 1
            if entry[1] == 0:
                self._faults.popleft()
            fault: WebhookFault = entry[0]
            return fault
        if self._drop_rate and self._rng.random() < self._drop_rate:
            return WebhookFault.drop()
        return None

    async def _in_order(self, run: _Run, request_id: str, events: list[Event]) -> None:
        lane = self._lanes.setdefault(request_id, anyio.Lock())
        async with lane:
            for event in events:
                await self._first(run, event)
        if events[-1].status in DONE:
            self._lanes.pop(request_id, None)  # the last batch of this research

    async def _first(self, run: _Run, event: Event) -> None:
        fault = self._take_fault()
        kind = None if fault is None else fault.kind
        if fault is not None and fault.kind == "drop":
            self._record(event, 1, run.source.now(), None, "dropped", kind)
            return
        if fault is not None and fault.kind == "delay":
            run.group.start_soon(self._delayed, run, event, fault.seconds)
            return
        key = self._secret + b"-not" if kind == "bad_signature" else self._secret
        if not await self._attempt(run, event, 1, key, kind):
            run.group.start_soon(self._retry, run, event, key, kind)
        if kind == "duplicate":
            await self._attempt(run, event, 1, key, kind)

    async def _delayed(self, run: _Run, event: Event, seconds: float) -> None:
        await anyio.sleep(seconds / run.source.speed)
        if not await self._attempt(run, event, 1, self._secret, "delay"):
            await self._retry(run, event, self._secret, "delay")

    async def _retry(
        self, run: _Run, event: Event, key: bytes, fault: WebhookFaultKind | None
    ) -> None:
        for attempt, pause in enumerate(RETRY_BACKOFF, start=2):
            await anyio.sleep(pause / run.source.speed)
            if await self._attempt(run, event, attempt, key, fault):
                return

    async def _attempt(
        self, run: _Run, event: Event, attempt: int, key: bytes, fault: WebhookFaultKind | None
    ) -> bool:
        """POST ``event`` once; True when the receiver answered 2xx in time."""
        at = run.source.now()
        signature = hmac.new(key, event.body, hashlib.sha256).hexdigest()
        headers = {"content-type": "application/json", "x-fay-signature": f"sha256={signature}"}
        status_code: int | None = None
        error: str | None = "timeout"
        with anyio.move_on_after(self._timeout):
            try:
                response = await run.http.post(self.url, content=event.body, headers=headers)
            except httpx.HTTPError as exc:
                error = f"{type(exc).__name__}: {exc}".rstrip(": ")
            else:
                status_code, error = response.status_code, None
        self._record(event, attempt, at, status_code, error, fault)
        return status_code is not None and 200 <= status_code < 300

    def _record(
        self,
        event: Event,
        attempt: int,
        at: float,
        status_code: int | None,
        error: str | None,
        fault: WebhookFaultKind | None,
    ) -> None:
        self._records.append(
            WebhookDelivery(
                event_id=event.id,
                type=event.type,
                request_id=event.request_id,
                status=event.status.value,
                attempt=attempt,
                time=at,
                status_code=status_code,
                error=error,
                fault=fault,
            )
        )


def webhooks_for(
    url: str | None,
    app: ASGIApp | None,
    secret: str | bytes | None,
    drop_rate: float,
    timeout: float,
    seed: int | None,
) -> Webhooks | None:
    """The emulator's webhook settings, checked; None when it sends no webhooks."""
    if url is None and app is None and secret is None:
        if drop_rate:
            raise ValueError("webhook_drop_rate needs webhook_url or webhook_app")
        return None
    return Webhooks(
        url=url, app=app, secret=secret, drop_rate=drop_rate, timeout=timeout, seed=seed
    )


class _Emulator(Source, Protocol):
    _webhooks: Webhooks | None

    def _wall(self, moment: float | None) -> datetime | None: ...


class WebhookMethods:
    """The webhook side of :class:`FayEmulator`."""

    @property
    def webhook_url(self: _Emulator) -> str | None:
        """Where webhooks are POSTed (None: this emulator sends none)."""
        return None if self._webhooks is None else self._webhooks.url

    def delivering(self: _Emulator) -> contextlib.AbstractAsyncContextManager[None]:
        """``async with emulator.delivering():`` sends webhooks while the block runs.

        A scheduler task sleeps until the next status change of any research, on the
        emulator's clock (virtual time in a virtual-time test), and sends a ``Status``
        event for each (PENDING at creation, PROCESSING, then COMPLETED, FAILED or
        STOPPED), plus an ``Output`` event at completion and an ``Error`` event at failure,
        signed with ``webhook_secret``. Events of researches created before the block are
        sent when it starts. A delivery answered non-2xx, or not answered within
        ``webhook_timeout`` seconds of the event loop, is retried 3 times after 1, 2 and 4
        emulator seconds. Leaving the block ends the scheduler and every delivery or retry
        still under way. A served emulator delivers from its startup to its shutdown.
        """
        return _hooks(self).delivering(self)

    def inject_webhook_fault(self: _Emulator, fault: WebhookFault, *, times: int = 1) -> None:
        """Spoil the delivery of the next ``times`` events with ``fault`` (queued in order)."""
        hooks = _hooks(self)
        if not isinstance(fault, WebhookFault):
            raise TypeError(f"fault must be a WebhookFault, got {fault!r}")
        if not isinstance(times, int) or isinstance(times, bool) or times < 1:
            raise ValueError(f"times must be a whole number >= 1, got {times!r}")
        with self._lock:
            hooks.inject(fault, times)

    def pending_webhook_fault_count(self: _Emulator) -> int:
        """How many events' deliveries will still get an injected fault."""
        with self._lock:
            return 0 if self._webhooks is None else self._webhooks.pending_faults()

    def deliveries(self: _Emulator) -> list[WebhookDelivery]:
        """Every webhook delivery attempt so far (and each event a fault dropped), in order."""
        with self._lock:
            return [] if self._webhooks is None else self._webhooks.deliveries()

    def _wall_seconds(self: _Emulator, moment: float) -> int:
        wall = self._wall(moment)
        assert wall is not None  # noqa: S101 - a float always maps to a datetime
        return int(wall.timestamp())

    async def _deliver_while_served(self: _Emulator, receive: Receive, send: Send) -> None:
        await _hooks(self).lifespan(self, receive, send)

    def _stop_delivering(self: _Emulator, timeout: float) -> None:
        if self._webhooks is not None:
            self._webhooks.close(timeout)


def _hooks(emulator: _Emulator) -> Webhooks:
    if emulator._webhooks is None:
        raise RuntimeError(
            "this emulator sends no webhooks: give it webhook_url or webhook_app, "
            "and webhook_secret"
        )
    return emulator._webhooks
