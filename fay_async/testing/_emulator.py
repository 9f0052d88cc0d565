"""``FayEmulator``: the Fay research API as a local ASGI 3 application.

The emulator is an independent reading of the API contract: it builds every JSON body
from the documentation, not from the client's converter, so a misreading on either side
shows up in integration tests instead of cancelling out.

Time. Every research moves PENDING -> PROCESSING -> COMPLETED (or FAILED) on the
emulator's clock, computed from timestamps whenever it is asked: there are no background
tasks. The emulator's time is ``clock() * speed``. With ``clock=None`` the clock is
``anyio.current_time`` when the emulator is called in-process (so under a virtual-time
event loop a research completes while the test sleeps) and ``time.monotonic`` once it is
served over a socket by :func:`fay_async.testing.serve` or the ``fay-async emulator``
command. The emulator's time never runs backwards: when the underlying clock restarts
(a new event loop), it carries on from where it was; read outside any event loop it stays
at the last time seen.
"""

from __future__ import annotations

import math
import random
import threading
import time
import types
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timedelta, timezone
from typing import Any

import anyio
import httpx

from fay_async._client import FayClient

from ._clock import Clock
from ._http import (
    ASGIApp,
    ConnectionDropped,
    InProcessTransport,
    Receive,
    Scope,
    Send,
    _Answer,
    _bearer,
    _dump,
    _error,
    _lifespan,
    _ok,
    serve_http,
)
from ._lifecycle import (
    PendingFault,
    RateBudgets,
    Research,
    check_endpoint,
    coerce_limits,
    output_answer,
    output_for,
    parse_create,
    research_state,
    scenario_for,
    status_answer,
    stop_answer,
)
from ._values import (
    DEFAULT_API_KEY,
    ENDPOINTS,
    CallRecord,
    Endpoint,
    Fault,
    ResearchState,
    Scenario,
    iso,
)
from ._webhooks import DEFAULT_TIMEOUT, WebhookMethods, webhooks_for

__all__ = ["ConnectionDropped", "FayEmulator"]

# --- the emulator ---------------------------------------------------------------------------


class FayEmulator(WebhookMethods):
    """A faithful local Fay API: an ASGI 3 app with research lifecycles on its own clock.

    ``api_keys`` are the bearer keys it accepts (the first one is what :meth:`client`
    uses). ``clock`` is a callable returning seconds, such as a :class:`ManualClock`; the
    emulator's time is ``clock() * speed``. Without a clock it reads
    ``anyio.current_time()`` in-process (virtual time in a virtual-time test) and
    ``time.monotonic()`` once served over a socket, so ``speed=50`` completes a default
    research in about 1.3 real seconds. Statuses are computed from timestamps when asked;
    only webhook delivery runs in the background.

    ``scenario`` is a :class:`Scenario`, or a callable ``prompt -> Scenario``; by default a
    research waits 45-55 s, runs 10-15 s and completes, with durations and ids drawn from a
    generator seeded with ``seed``. ``rate_limits`` is ``"free"``, ``"pro"``, a mapping
    ``endpoint -> calls per hour`` or None (no limit): a sliding one-hour window per key and
    endpoint on the emulator's clock; beyond budget the answer is 429
    ``RATE_LIMIT_EXCEEDED`` with ``Retry-After`` in real seconds (emulator seconds / speed).

    With ``webhook_url`` or ``webhook_app`` and ``webhook_secret`` it sends signed webhook
    events while :meth:`delivering` runs (see :meth:`delivering` for the options).
    """

    def __init__(
        self,
        *,
        api_keys: Iterable[str] = (DEFAULT_API_KEY,),
        clock: Clock | None = None,
        scenario: Scenario | Callable[[str], Scenario] | None = None,
        rate_limits: str | Mapping[str, int] | None = None,
        speed: float = 1.0,
        seed: int | None = None,
        webhook_url: str | None = None,
        webhook_app: ASGIApp | None = None,
        webhook_secret: str | bytes | None = None,
        webhook_drop_rate: float = 0.0,
        webhook_timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        if isinstance(api_keys, str):
            raise TypeError("api_keys must be an iterable of keys, not a single string")
        keys = tuple(dict.fromkeys(api_keys))
        if not keys or not all(isinstance(key, str) and key for key in keys):
            raise ValueError("api_keys must hold at least one non-empty string")
        if (
            not isinstance(speed, (int, float))
            or isinstance(speed, bool)
            or not math.isfinite(speed)
            or speed <= 0
        ):
            raise ValueError(f"speed must be a positive number, got {speed!r}")
        if clock is not None and not callable(clock):
            raise TypeError("clock must be a callable returning seconds")
        if scenario is not None and not isinstance(scenario, Scenario) and not callable(scenario):
            raise TypeError("scenario must be a Scenario or a callable prompt -> Scenario")
        self._keys = keys
        self._key_set = frozenset(keys)
        self._clock = clock
        self._scenario = scenario
        self._limits = coerce_limits(rate_limits)
        self._speed = float(speed)
        self._rng = random.Random(seed)  # noqa: S311 - ids and durations, not secrets
        self._lock = threading.RLock()
        self._served = False
        self._last_raw: float | None = None
        self._offset = 0.0
        self._last_time = 0.0
        self._origin: tuple[float, datetime] | None = None
        self._researches: dict[str, Research] = {}
        self._calls: list[CallRecord] = []
        self._faults: dict[Endpoint, deque[PendingFault]] = {e: deque() for e in ENDPOINTS}
        self._budgets = RateBudgets(self._limits)
        self._webhooks = webhooks_for(
            webhook_url, webhook_app, webhook_secret, webhook_drop_rate, webhook_timeout, seed
        )
        if self._webhooks is not None and clock is not None:
            self._webhooks.recheck = 0.1  # an injected clock moves without waking the loop

    def __repr__(self) -> str:
        return (
            f"FayEmulator(researches={len(self._researches)}, calls={len(self._calls)}, "
            f"speed={self._speed:g})"
        )

    # --- configuration ----------------------------------------------------------------------

    @property
    def api_keys(self) -> tuple[str, ...]:
        """The accepted API keys, in the order given."""
        return self._keys

    @property
    def speed(self) -> float:
        """How many emulator seconds pass per second of the underlying clock."""
        return self._speed

    @property
    def rate_limits(self) -> Mapping[Endpoint, int]:
        """Calls allowed per hour and per key, by endpoint (absent: unlimited)."""
        return types.MappingProxyType(self._limits)

    def use_wall_clock(self) -> None:
        """Without an injected clock, read ``time.monotonic`` from now on (for serving)."""
        self._served = True

    # --- time -------------------------------------------------------------------------------

    def _raw_time(self) -> float | None:
        if self._clock is not None:
            return float(self._clock())
        if self._served:
            return time.monotonic()
        try:
            return anyio.current_time()
        except RuntimeError:  # no event loop: keep the last time seen
            return None

    def now(self) -> float:
        """The emulator's current time in seconds (``clock() * speed``, never decreasing)."""
        with self._lock:
            raw = self._raw_time()
            if raw is not None:
                if self._last_raw is not None and raw < self._last_raw:
                    self._offset += self._last_raw - raw
                self._last_raw = raw
                self._last_time = (raw + self._offset) * self._speed
            if self._origin is None:
                self._origin = (self._last_time, datetime.now(timezone.utc))
            return self._last_time

    def _wall(self, moment: float | None) -> datetime | None:
        if moment is None:
            return None
        assert self._origin is not None  # noqa: S101 - set by now(), which every caller ran
        origin, wall = self._origin
        return wall + timedelta(seconds=moment - origin)

    # --- faults -----------------------------------------------------------------------------

    def inject_fault(self, endpoint: str, fault: Fault, *, times: int = 1) -> None:
        """Answer the next ``times`` calls of ``endpoint`` with ``fault`` (queued in order)."""
        checked = check_endpoint(endpoint)
        if not isinstance(fault, Fault):
            raise TypeError(f"fault must be a Fault (see Fault.error, ...), got {fault!r}")
        if not isinstance(times, int) or isinstance(times, bool) or times < 1:
            raise ValueError(f"times must be a whole number >= 1, got {times!r}")
        with self._lock:
            self._faults[checked].append(PendingFault(fault, times))

    def pending_fault_count(self, endpoint: str) -> int:
        """How many calls of ``endpoint`` will still get an injected fault."""
        checked = check_endpoint(endpoint)
        with self._lock:
            return sum(entry.remaining for entry in self._faults[checked])

    def clear_faults(self) -> None:
        """Forget every injected fault (webhook faults too) that has not fired yet."""
        with self._lock:
            for queue in self._faults.values():
                queue.clear()
            if self._webhooks is not None:
                self._webhooks.clear_faults()

    def _take_fault(self, endpoint: Endpoint) -> Fault | None:
        with self._lock:
            queue = self._faults[endpoint]
            if not queue:
                return None
            entry = queue[0]
            entry.remaining -= 1
            if entry.remaining == 0:
                queue.popleft()
            return entry.fault

    # --- introspection ----------------------------------------------------------------------
    # Methods, not properties: each answer is a snapshot taken at the emulator's current
    # time (a research's status depends on when it is asked) and a copy the caller may keep.

    def calls(self) -> list[CallRecord]:
        """Every API call answered so far, oldest first."""
        with self._lock:
            return list(self._calls)

    def call_counts(self) -> dict[Endpoint, int]:
        """How many calls each endpoint received (faults and errors included)."""
        result: dict[Endpoint, int] = dict.fromkeys(ENDPOINTS, 0)
        for call in self.calls():
            if call.endpoint is not None:
                result[call.endpoint] += 1
        return result

    def research(self, request_id: str) -> ResearchState:
        """The state of one research now; ``KeyError`` if the emulator never created it."""
        now = self.now()
        with self._lock:
            return research_state(self._wall, self._researches[request_id], now)

    def researches(self) -> list[ResearchState]:
        """The state of every research now, in creation order."""
        now = self.now()
        with self._lock:
            return [research_state(self._wall, r, now) for r in self._researches.values()]

    def created_prompts(self) -> list[str]:
        """The prompt of every research created, in order (a duplicate means a double create)."""
        with self._lock:
            return [r.prompt for r in self._researches.values()]

    # --- wiring -----------------------------------------------------------------------------

    def transport(self) -> httpx.AsyncBaseTransport:
        """An httpx transport that calls this emulator in-process (drops become errors)."""
        return InProcessTransport(self)

    def client(self, **kwargs: Any) -> FayClient:
        """A :class:`~fay_async.FayClient` talking to this emulator in-process.

        Keyword arguments go to ``FayClient``; ``api_key`` defaults to the first accepted
        key and ``base_url`` to ``http://emulator.test``. The client owns the in-process
        transport and closes it with itself.
        """
        kwargs.setdefault("api_key", self._keys[0])
        kwargs.setdefault("base_url", "http://emulator.test")
        kwargs.setdefault("allow_insecure_http", True)
        return FayClient(transport=self.transport(), **kwargs)

    # --- ASGI -------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The ASGI 3 entry point (``http`` and ``lifespan`` scopes)."""
        if scope["type"] == "lifespan":
            await (_lifespan if self._webhooks is None else self._deliver_while_served)(
                receive, send
            )
        elif scope["type"] == "http":
            await serve_http(self, scope, receive, send)

    def _record(
        self,
        endpoint: Endpoint | None,
        method: str,
        path: str,
        request_id: str | None,
        answer: _Answer | None,
        at: float | None = None,
        fault: Fault | None = None,
    ) -> None:
        record = CallRecord(
            endpoint=endpoint,
            method=method,
            path=path,
            request_id=request_id,
            time=self.now() if at is None else at,
            status_code=None if answer is None else answer.status_code,
            error_code=None if answer is None else answer.error_code,
            fault=None if fault is None else fault.kind,
        )
        with self._lock:
            self._calls.append(record)

    def _introspect(self, path: str) -> _Answer:
        if path == "/_emulator/calls":
            return _Answer(200, _dump({"calls": [c.to_json() for c in self.calls()]}))
        if path == "/_emulator/deliveries":
            return _Answer(200, _dump({"deliveries": [d.to_json() for d in self.deliveries()]}))
        return _Answer(200, _dump({"researches": [r.to_json() for r in self.researches()]}))

    # --- the four endpoints -----------------------------------------------------------------

    def _handle(  # noqa: PLR0911 - one answer per documented case
        self,
        endpoint: Endpoint,
        request_id: str | None,
        headers: Iterable[tuple[bytes, bytes]],
        body: bytes | None,
        now: float,
    ) -> _Answer:
        key = _bearer(headers)
        if key is None or key not in self._key_set:
            return _error(401, "INVALID_API_KEY", "Invalid or expired API key")
        with self._lock:
            wait = self._budgets.spend(key, endpoint, now)
            if wait is not None:
                seconds = max(1, math.ceil(wait / self._speed))
                return _error(
                    429,
                    "RATE_LIMIT_EXCEEDED",
                    "Rate limit exceeded",
                    headers=((b"retry-after", str(seconds).encode()),),
                )
            if endpoint == "create":
                return self._create(body, now)
            assert request_id is not None  # noqa: S101 - the router always sets one here
            research = self._researches.get(request_id)
            if research is None:
                return _error(404, "REQUEST_NOT_FOUND", "Request not found")
            if endpoint == "status":
                return status_answer(research, now, self._iso)
            if endpoint == "output":
                return output_answer(research, now)
            answer = stop_answer(research, now)
            if self._webhooks is not None:
                self._webhooks.wake()  # the STOPPED event goes out now
            return answer

    def _create(self, body: bytes | None, now: float) -> _Answer:
        request = parse_create(body)
        if isinstance(request, _Answer):
            return request
        prompt, structured, schema = request
        scenario = scenario_for(self._scenario, prompt, self._rng)
        request_id = str(uuid.UUID(int=self._rng.getrandbits(128), version=4))
        research = Research(
            request_id=request_id,
            conversation_id=f"{self._rng.getrandbits(96):024x}",
            prompt=prompt,
            structured_output=structured,
            output_schema=schema,
            created=now,
            scenario=scenario,
            output=output_for(scenario, prompt, structured=structured, schema=schema),
        )
        self._researches[request_id] = research
        if self._webhooks is not None:
            self._webhooks.track(request_id)
        data = {"request_id": request_id, "status": "PENDING", "created_at": self._iso(now)}
        return _ok(data, request_id=request_id)

    def _iso(self, moment: float | None) -> str | None:
        return iso(self._wall(moment))
