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

import json
import math
import random
import threading
import time
import types
import uuid
import warnings
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping, MutableMapping
from datetime import datetime, timedelta, timezone
from typing import Any, Final, NoReturn, TypeAlias

import anyio
import attrs
import httpx

from fay_async._client import FayClient
from fay_async._models import ResearchStatus

from ._clock import Clock
from ._schema import default_structured_output, example_for_schema
from ._values import (
    API_VERSION,
    ENDPOINTS,
    RATE_LIMIT_TIERS,
    DEFAULT_API_KEY,
    CallRecord,
    Endpoint,
    Fault,
    ResearchState,
    Scenario,
    iso,
)

__all__ = ["ConnectionDropped", "FayEmulator"]

API_PREFIX: Final = "/api/v1"

HOUR: Final = 3600.0
#: Outputs are kept this long after completion, then the output call answers 404.
OUTPUT_RETENTION: Final = 30 * 24 * HOUR
#: Longest prompt accepted, in characters.
MAX_PROMPT_LENGTH: Final = 100_000
#: Largest request body read, in bytes; a larger one is answered 413.
MAX_BODY_BYTES: Final = 1_048_576

_DEFAULT_PENDING: Final = (45.0, 55.0)
_DEFAULT_PROCESSING: Final = (10.0, 15.0)
_DEFAULT_ERROR_MESSAGE: Final = "Research failed in the emulator"
_STOP_MESSAGE: Final = "Conversation stopped successfully"

_JSON: Final = b"application/json"

Scope: TypeAlias = MutableMapping[str, Any]
Message: TypeAlias = MutableMapping[str, Any]
Receive: TypeAlias = Callable[[], Awaitable[Message]]
Send: TypeAlias = Callable[[Message], Awaitable[None]]


class ConnectionDropped(Exception):  # noqa: N818 - it names an event, not a failure
    """Raised by the ASGI app after a partial response, to make the server drop the link."""


@attrs.define
class _Research:
    request_id: str
    conversation_id: str
    prompt: str
    structured_output: bool
    output_schema: dict[str, Any] | None
    created: float
    scenario: Scenario
    output: str | dict[str, Any] | None
    stopped: float | None = None

    def timeline(self, now: float) -> tuple[ResearchStatus, float | None, float | None]:
        """Status, start time and end time at ``now``."""
        start = self.created + self.scenario.pending_s
        end = start + self.scenario.processing_s
        if self.stopped is not None and self.stopped <= now:
            return ResearchStatus.STOPPED, (start if start <= self.stopped else None), self.stopped
        if now < start:
            return ResearchStatus.PENDING, None, None
        if now < end:
            return ResearchStatus.PROCESSING, start, None
        return self.scenario.outcome, start, end


@attrs.define
class _PendingFault:
    fault: Fault
    remaining: int


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


def _coerce_limits(rate_limits: str | Mapping[str, int] | None) -> dict[Endpoint, int]:
    if rate_limits is None:
        return {}
    if isinstance(rate_limits, str):
        try:
            return dict(RATE_LIMIT_TIERS[rate_limits.lower()])
        except KeyError:
            raise ValueError(
                f"unknown rate-limit tier {rate_limits!r}; use 'free', 'pro' or a mapping"
            ) from None
    limits: dict[Endpoint, int] = {}
    for name, value in rate_limits.items():
        if name not in ENDPOINTS:
            raise ValueError(f"unknown endpoint {name!r} in rate_limits; use one of {ENDPOINTS}")
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"rate_limits[{name!r}] must be a whole number >= 1, got {value!r}")
        limits[name] = value
    return limits


def _check_endpoint(endpoint: str) -> Endpoint:
    if endpoint not in ENDPOINTS:
        raise ValueError(f"unknown endpoint {endpoint!r}; use one of {ENDPOINTS}")
    return endpoint


# --- routing --------------------------------------------------------------------------------

_ACTIONS: Final[Mapping[str, tuple[Endpoint, str]]] = {
    "status": ("status", "GET"),
    "output": ("output", "GET"),
    "stop": ("stop", "POST"),
}
_INTROSPECTION: Final = frozenset({"/_emulator/calls", "/_emulator/researches"})


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


# --- the emulator ---------------------------------------------------------------------------


class FayEmulator:
    """A faithful local Fay API: an ASGI 3 app with research lifecycles on its own clock.

    ``api_keys`` are the bearer keys it accepts (the first one is what :meth:`client`
    uses). ``clock`` is a callable returning seconds, such as a :class:`ManualClock`; the
    emulator's time is ``clock() * speed``. Without a clock it reads
    ``anyio.current_time()`` in-process (virtual time in a virtual-time test) and
    ``time.monotonic()`` once served over a socket, so ``speed=50`` completes a default
    research in about 1.3 real seconds. Statuses are computed from timestamps when asked;
    nothing runs in the background.

    ``scenario`` is a :class:`Scenario`, or a callable ``prompt -> Scenario``; by default a
    research waits 45-55 s, runs 10-15 s and completes, with durations and ids drawn from a
    generator seeded with ``seed``. ``rate_limits`` is ``"free"``, ``"pro"``, a mapping
    ``endpoint -> calls per hour`` or None (no limit): a sliding one-hour window per key and
    endpoint on the emulator's clock; beyond budget the answer is 429
    ``RATE_LIMIT_EXCEEDED`` with ``Retry-After`` in real seconds (emulator seconds / speed).
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
        self._limits = _coerce_limits(rate_limits)
        self._speed = float(speed)
        self._rng = random.Random(seed)  # noqa: S311 - ids and durations, not secrets
        self._lock = threading.RLock()
        self._served = False
        self._last_raw: float | None = None
        self._offset = 0.0
        self._last_time = 0.0
        self._origin: tuple[float, datetime] | None = None
        self._researches: dict[str, _Research] = {}
        self._calls: list[CallRecord] = []
        self._faults: dict[Endpoint, deque[_PendingFault]] = {e: deque() for e in ENDPOINTS}
        self._windows: dict[tuple[str, Endpoint], deque[float]] = {}

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
        checked = _check_endpoint(endpoint)
        if not isinstance(fault, Fault):
            raise TypeError(f"fault must be a Fault (see Fault.error, ...), got {fault!r}")
        if not isinstance(times, int) or isinstance(times, bool) or times < 1:
            raise ValueError(f"times must be a whole number >= 1, got {times!r}")
        with self._lock:
            self._faults[checked].append(_PendingFault(fault, times))

    def pending_fault_count(self, endpoint: str) -> int:
        """How many calls of ``endpoint`` will still get an injected fault."""
        checked = _check_endpoint(endpoint)
        with self._lock:
            return sum(entry.remaining for entry in self._faults[checked])

    def pending_faults(self, endpoint: str) -> int:
        """Deprecated name of :meth:`pending_fault_count`."""
        warnings.warn(
            "FayEmulator.pending_faults() is deprecated; use pending_fault_count()",
            DeprecationWarning,
            stacklevel=2,
        )
        return self.pending_fault_count(endpoint)

    def clear_faults(self) -> None:
        """Forget every injected fault that has not fired yet."""
        with self._lock:
            for queue in self._faults.values():
                queue.clear()

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

    def counts(self) -> dict[Endpoint, int]:
        """Deprecated name of :meth:`call_counts`."""
        warnings.warn(
            "FayEmulator.counts() is deprecated; use call_counts()",
            DeprecationWarning,
            stacklevel=2,
        )
        return self.call_counts()

    def research(self, request_id: str) -> ResearchState:
        """The state of one research now; ``KeyError`` if the emulator never created it."""
        now = self.now()
        with self._lock:
            return self._state(self._researches[request_id], now)

    def researches(self) -> list[ResearchState]:
        """The state of every research now, in creation order."""
        now = self.now()
        with self._lock:
            return [self._state(r, now) for r in self._researches.values()]

    def created_prompts(self) -> list[str]:
        """The prompt of every research created, in order (a duplicate means a double create)."""
        with self._lock:
            return [r.prompt for r in self._researches.values()]

    def _state(self, research: _Research, now: float) -> ResearchState:
        status, started, ended = research.timeline(now)
        created_at = self._wall(research.created)
        assert created_at is not None  # noqa: S101 - a float always maps to a datetime
        return ResearchState(
            request_id=research.request_id,
            conversation_id=research.conversation_id,
            prompt=research.prompt,
            structured_output=research.structured_output,
            output_schema=research.output_schema,
            status=status,
            created_at=created_at,
            started_at=self._wall(started),
            completed_at=self._wall(ended),
            stopped=status is ResearchStatus.STOPPED,
            error_message=self._error_message(research, status),
            output=research.output if status is ResearchStatus.COMPLETED else None,
            scenario=research.scenario,
        )

    @staticmethod
    def _error_message(research: _Research, status: ResearchStatus) -> str | None:
        if status is not ResearchStatus.FAILED:
            return None
        return research.scenario.error_message or _DEFAULT_ERROR_MESSAGE

    # --- wiring -----------------------------------------------------------------------------

    def transport(self) -> httpx.AsyncBaseTransport:
        """An httpx transport that calls this emulator in-process (drops become errors)."""
        return _InProcessTransport(self)

    def client(self, **kwargs: Any) -> FayClient:
        """A :class:`~fay_async.FayClient` talking to this emulator in-process.

        Keyword arguments go to ``FayClient``; ``api_key`` defaults to the first accepted
        key and ``base_url`` to ``http://emulator.test``. Closing the client also closes
        the httpx client it was built with.
        """
        if "http_client" in kwargs:
            raise TypeError("client() builds its own http_client; do not pass one")
        kwargs.setdefault("api_key", self._keys[0])
        kwargs.setdefault("base_url", "http://emulator.test")
        kwargs.setdefault("allow_insecure_http", True)
        http = httpx.AsyncClient(transport=self.transport())
        return _EmulatorFayClient(http, **kwargs)

    # --- ASGI -------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The ASGI 3 entry point (``http`` and ``lifespan`` scopes)."""
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
        elif scope["type"] == "http":
            await self._http(scope, receive, send)

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        method: str = scope["method"]
        path: str = scope["path"]
        route = _route(path)
        if route is None:
            answer = _error(404, "NOT_FOUND", "Not found")
            self._record(None, method, path, None, answer)
            await _send(send, answer)
            return
        name, request_id, allowed = route
        endpoint = name if name in ENDPOINTS else None
        if method != allowed:
            answer = _error(405, "METHOD_NOT_ALLOWED", "Method not allowed")
            answer = attrs.evolve(answer, headers=((b"allow", allowed.encode()),))
            self._record(endpoint, method, path, request_id, answer)
            await _send(send, answer)
            return
        if endpoint is None:
            await _send(send, self._introspect(name))
            return
        await self._api_call(endpoint, method, path, request_id, scope, receive, send)

    async def _api_call(
        self,
        endpoint: Endpoint,
        method: str,
        path: str,
        request_id: str | None,
        scope: Scope,
        receive: Receive,
        send: Send,
    ) -> None:
        arrival = self.now()
        fault = self._take_fault(endpoint)
        if fault is not None and not fault.processed:
            if fault.kind == "drop":
                self._record(endpoint, method, path, request_id, None, arrival, fault)
                await _drop(send, _Answer(200, _envelope_ok({"request_id": request_id})))
            answer = _fault_answer(fault)
            self._record(endpoint, method, path, request_id, answer, arrival, fault)
            await _send(send, answer)
            return
        body = await _read_body(receive) if endpoint == "create" else b""
        answer = self._handle(endpoint, request_id, scope["headers"], body, arrival)
        if fault is not None and fault.kind == "drop":
            self._record(endpoint, method, path, answer.request_id, None, arrival, fault)
            await _drop(send, answer)
        if fault is not None and fault.kind == "truncated_json":
            answer = attrs.evolve(answer, body=answer.body[: len(answer.body) // 2])
        self._record(endpoint, method, path, answer.request_id, answer, arrival, fault)
        if fault is not None and fault.kind == "latency":
            await anyio.sleep(fault.seconds)
        await _send(send, answer)

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
            wait = self._spend(key, endpoint, now)
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
                return self._status(research, now)
            if endpoint == "output":
                return self._output(research, now)
            return self._stop(research, now)

    def _spend(self, key: str, endpoint: Endpoint, now: float) -> float | None:
        """Draw one call from the budget; else the emulator seconds until a slot frees."""
        limit = self._limits.get(endpoint)
        if limit is None:
            return None
        window = self._windows.setdefault((key, endpoint), deque())
        while window and window[0] <= now - HOUR:
            window.popleft()
        if len(window) >= limit:
            return window[0] + HOUR - now
        window.append(now)
        return None

    def _create(self, body: bytes | None, now: float) -> _Answer:  # noqa: PLR0911
        if body is None:
            return _error(413, "PAYLOAD_TOO_LARGE", "Request body too large")
        try:
            payload = json.loads(body, parse_constant=_reject_constant)
        except (ValueError, RecursionError):
            return _error(400, "VALIDATION_ERROR", "Request body must be valid JSON")
        if not isinstance(payload, dict):
            return _error(400, "VALIDATION_ERROR", "Request body must be a JSON object")
        prompt = payload.get("prompt")
        if not isinstance(prompt, str) or not prompt.strip() or len(prompt) > MAX_PROMPT_LENGTH:
            return _error(400, "VALIDATION_ERROR", "Invalid prompt format")
        structured = payload.get("structured_output", False)
        if not isinstance(structured, bool):
            return _error(400, "VALIDATION_ERROR", "structured_output must be a boolean")
        schema = payload.get("output_schema")
        if schema is not None and not isinstance(schema, dict):
            return _error(400, "VALIDATION_ERROR", "output_schema must be a JSON object")
        scenario = self._scenario_for(prompt)
        request_id = str(uuid.UUID(int=self._rng.getrandbits(128), version=4))
        research = _Research(
            request_id=request_id,
            conversation_id=f"{self._rng.getrandbits(96):024x}",
            prompt=prompt,
            structured_output=structured,
            output_schema=schema,
            created=now,
            scenario=scenario,
            output=_output_for(scenario, prompt, structured=structured, schema=schema),
        )
        self._researches[request_id] = research
        data = {"request_id": request_id, "status": "PENDING", "created_at": self._iso(now)}
        return _ok(data, request_id=request_id)

    def _scenario_for(self, prompt: str) -> Scenario:
        if isinstance(self._scenario, Scenario):
            return self._scenario
        if self._scenario is not None:
            scenario = self._scenario(prompt)
            if not isinstance(scenario, Scenario):
                raise TypeError(f"the scenario callable returned {scenario!r}, not a Scenario")
            return scenario
        return Scenario(
            pending_s=round(self._rng.uniform(*_DEFAULT_PENDING), 3),
            processing_s=round(self._rng.uniform(*_DEFAULT_PROCESSING), 3),
        )

    def _iso(self, moment: float | None) -> str | None:
        return iso(self._wall(moment))

    def _status(self, research: _Research, now: float) -> _Answer:
        status, started, ended = research.timeline(now)
        finished = status in (ResearchStatus.COMPLETED, ResearchStatus.FAILED)
        data = {
            "request_id": research.request_id,
            "status": status.value,
            "prompt": research.prompt,
            "structured_output": research.structured_output,
            "output_schema": research.output_schema,
            "conversation_id": research.conversation_id,
            "created_at": self._iso(research.created),
            "started_at": self._iso(started),
            "completed_at": self._iso(ended),
            "error_message": self._error_message(research, status),
            "metadata": {"emulated": True} if finished else None,
        }
        return _ok(data, request_id=research.request_id)

    def _output(self, research: _Research, now: float) -> _Answer:
        status, _, ended = research.timeline(now)
        rid = research.request_id
        if status is ResearchStatus.COMPLETED:
            assert ended is not None  # noqa: S101 - a completed research has an end
            if now - ended > OUTPUT_RETENTION:
                return _error(404, "REQUEST_NOT_FOUND", "Request not found", request_id=rid)
            data = {
                "conversation_id": research.conversation_id,
                "status": status.value,
                "output": research.output,
            }
            return _ok(data, request_id=rid)
        if status is ResearchStatus.STOPPED:
            return _error(
                400, "RESEARCH_STOPPED", "Research was stopped and has no output", request_id=rid
            )
        if status is ResearchStatus.FAILED:
            return _error(
                400, "RESEARCH_FAILED", "Research failed and has no output", request_id=rid
            )
        return _error(
            400, "RESEARCH_NOT_COMPLETED", "Research is not completed yet", request_id=rid
        )

    def _stop(self, research: _Research, now: float) -> _Answer:
        status, _, _ = research.timeline(now)
        rid = research.request_id
        if status is ResearchStatus.COMPLETED:
            return _error(
                400,
                "CONVERSATION_ALREADY_COMPLETED",
                "Cannot stop completed conversation",
                request_id=rid,
            )
        if status is ResearchStatus.FAILED:
            return _error(
                400, "RESEARCH_ALREADY_FAILED", "Cannot stop failed conversation", request_id=rid
            )
        if status is ResearchStatus.STOPPED:
            return _error(
                400,
                "CONVERSATION_ALREADY_STOPPED",
                "Conversation already stopped",
                request_id=rid,
            )
        research.stopped = now
        data = {"request_id": rid, "status": "STOPPED", "message": _STOP_MESSAGE}
        return _ok(data, request_id=rid)


def _output_for(
    scenario: Scenario, prompt: str, *, structured: bool, schema: dict[str, Any] | None
) -> str | dict[str, Any] | None:
    if scenario.outcome is not ResearchStatus.COMPLETED:
        return None
    if scenario.output is not None:
        return scenario.output
    if structured:
        if schema is None:
            return default_structured_output(prompt)
        value = example_for_schema(schema, prompt=prompt)
        return value if isinstance(value, dict) else {"result": value}
    return _markdown(prompt)


def _markdown(prompt: str) -> str:
    quoted = "\n".join(f"> {line}".rstrip() for line in prompt.strip().splitlines())
    return (
        "# Research report\n\n"
        "## Question\n\n"
        f"{quoted}\n\n"
        "## Summary\n\n"
        "This report comes from the fay-async emulator: the findings below are placeholders "
        "for the question quoted above.\n\n"
        "## Findings\n\n"
        "1. First emulated finding.\n"
        "2. Second emulated finding.\n\n"
        "## Sources\n\n"
        "- https://example.com/source-1\n"
        "- https://example.com/source-2\n"
    )


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


# --- in-process wiring ----------------------------------------------------------------------


class _InProcessTransport(httpx.AsyncBaseTransport):
    """``httpx.ASGITransport`` plus what a network adds: read timeouts and dropped links."""

    def __init__(self, app: FayEmulator) -> None:
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


class _EmulatorFayClient(FayClient):
    """A FayClient that closes the in-process httpx client it was built with."""

    def __init__(self, http_client: httpx.AsyncClient, **kwargs: Any) -> None:
        self._emulator_http = http_client
        super().__init__(http_client=http_client, **kwargs)

    async def aclose(self) -> None:
        """Close the client, then the in-process httpx client under it."""
        try:
            await super().aclose()
        finally:
            await self._emulator_http.aclose()
