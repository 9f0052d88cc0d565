"""Client-side rate budgets: one sliding window per endpoint, on the event loop's clock.

Fay's limits are per API key and per endpoint (for example 100 status checks an hour on
the Free tier). A :class:`RateLimiter` lives with the :class:`~fay_async.FayClient`, so
every call made with one key draws on one budget, whoever makes it. The windows
themselves live in a :class:`BudgetStore`: this process's memory by default
(:class:`MemoryBudget`), or a store that several processes share
(:class:`fay_async.redis.RedisBudget`), so that a fleet of workers spends one key's
budget together.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Final, Literal, Protocol

import anyio
import attrs

from .exceptions import RateLimitError

if TYPE_CHECKING:
    from ._transport import AttemptHook

__all__ = [
    "ENDPOINTS",
    "BudgetStore",
    "Endpoint",
    "MemoryBudget",
    "RateLimiter",
    "RateLimits",
    "Slot",
    "coerce_limits",
]

Endpoint = Literal["create", "status", "output", "stop"]
ENDPOINTS: Final[tuple[Endpoint, ...]] = ("create", "status", "output", "stop")

HOUR: Final = 3600.0


def _check_limit(_instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is None:
        return
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(
            f"RateLimits.{attribute.name} must be a positive whole number or None, got {value!r}"
        )


@attrs.frozen(kw_only=True)
class RateLimits:
    """Requests allowed per ``window`` seconds, per endpoint (``None``: no limit).

    ``RateLimits.FREE`` and ``RateLimits.PRO`` are the published tiers; pass your own
    numbers for an Enterprise account. ``wait_for_create`` chooses what a create beyond
    budget does: wait for its slot (the default) or raise :class:`RateLimitError`.
    """

    create: int | None = attrs.field(default=None, validator=_check_limit)
    status: int | None = attrs.field(default=None, validator=_check_limit)
    output: int | None = attrs.field(default=None, validator=_check_limit)
    stop: int | None = attrs.field(default=None, validator=_check_limit)
    window: float = attrs.field(default=HOUR)
    wait_for_create: bool = True

    FREE: ClassVar[RateLimits]
    PRO: ClassVar[RateLimits]

    @window.validator
    def _check_window(self, _attribute: attrs.Attribute[Any], value: Any) -> None:
        if (
            not isinstance(value, (int, float))
            or isinstance(value, bool)
            or not math.isfinite(value)
            or value <= 0
        ):
            raise ValueError(
                f"RateLimits.window must be a positive number of seconds, got {value!r}"
            )

    def limit(self, endpoint: Endpoint) -> int | None:
        """The number of calls allowed per window for ``endpoint``."""
        value: int | None = getattr(self, endpoint)
        return value

    def interval(self, endpoint: Endpoint) -> float:
        """The mean number of seconds between two calls that the budget sustains."""
        limit = self.limit(endpoint)
        return 0.0 if limit is None else self.window / limit


RateLimits.FREE = RateLimits(create=10, status=100, output=50, stop=20)
RateLimits.PRO = RateLimits(create=100, status=1000, output=500, stop=200)


#: A wait for a window slot lasts this fraction of the window longer than the arithmetic
#: says (0.36 s an hour): the server counts a call when it arrives, a little later than the
#: client did, and a wake-up landing exactly on the boundary could be judged early.
SLACK: Final = 1e-4

#: Remaining waits shorter than this are no wait (they only come from float rounding).
_EPSILON: Final = 1e-9


@attrs.frozen
class Slot:
    """One call's place in the budget of ``endpoint``, counted at ``taken_at``."""

    endpoint: Endpoint
    taken_at: float


class BudgetStore(Protocol):
    """Where the call times of each budget window live: one process's memory, or shared.

    A window is named by the limiter (the API key's fingerprint and the endpoint), so one
    store may hold the budgets of several keys. :meth:`take` is the only decision, and it
    is atomic; the synchronous reads are estimates for scheduling (a shared store answers
    them from what its last :meth:`take` learnt).
    """

    async def take(self, name: str, limit: int, window: float) -> float:
        """Count one call now if the last ``window`` seconds hold fewer than ``limit``.

        0.0 when the call was counted; else the seconds until a call would be (nothing is
        counted then).
        """

    def available(self, name: str, limit: int, window: float) -> float:
        """Calls that could be counted now (an estimate; ``inf`` when unknown)."""

    def next_free(self, name: str, limit: int, window: float) -> float:
        """Seconds until a call could be counted (an estimate; 0.0: now)."""

    def sharers(self, name: str, local: int) -> int:
        """How many callers share the window, given ``local`` of them in this process."""


class _Window:
    """The times of the calls made in the last ``window`` seconds, oldest first."""

    __slots__ = ("limit", "sent", "window")

    def __init__(self, limit: int, window: float) -> None:
        self.limit = limit
        self.window = window
        self.sent: deque[float] = deque()

    def free_at(self, now: float) -> float:
        while self.sent and self.sent[0] <= now - self.window:
            self.sent.popleft()
        if len(self.sent) < self.limit:
            return now
        return self.sent[0] + self.window * (1.0 + SLACK)


class MemoryBudget:
    """The budget windows of one process, on the event loop's clock (the default store)."""

    __slots__ = ("_windows",)

    def __init__(self) -> None:
        self._windows: dict[str, _Window] = {}

    def __repr__(self) -> str:
        return f"<MemoryBudget: {len(self._windows)} windows>"

    def _window(self, name: str, limit: int, window: float) -> _Window:
        found = self._windows.get(name)
        if found is None or found.limit != limit or found.window != window:
            found = self._windows[name] = _Window(limit, window)
        return found

    async def take(self, name: str, limit: int, window: float) -> float:
        # No await before the decision: the check and the count are one step.
        return self.take_now(name, limit, window)

    def take_now(self, name: str, limit: int, window: float) -> float:
        """:meth:`take` without the coroutine (the in-memory store never waits)."""
        spent = self._window(name, limit, window)
        now = anyio.current_time()
        wait = spent.free_at(now) - now
        if wait > _EPSILON:
            return wait
        spent.sent.append(now)
        return 0.0

    def available(self, name: str, limit: int, window: float) -> float:
        spent = self._window(name, limit, window)
        spent.free_at(anyio.current_time())
        return float(spent.limit - len(spent.sent))

    def next_free(self, name: str, limit: int, window: float) -> float:
        now = anyio.current_time()
        wait = self._window(name, limit, window).free_at(now) - now
        return wait if wait > _EPSILON else 0.0

    def sharers(self, name: str, local: int) -> int:  # noqa: ARG002 - one process
        return local


class RateLimiter:
    """Hands out call slots under :class:`RateLimits`, waiting (fairly, FIFO) when spent.

    ``store`` holds the windows (a :class:`MemoryBudget` of its own by default); ``scope``
    names this budget in it (the client passes its API key's fingerprint, since limits
    are per key).
    """

    def __init__(
        self, limits: RateLimits, *, store: BudgetStore | None = None, scope: str = "default"
    ) -> None:
        self.limits = limits
        self.store: BudgetStore = MemoryBudget() if store is None else store
        self.scope = scope
        self._locks: dict[str, anyio.Lock] = {}
        for endpoint in ENDPOINTS:
            if limits.limit(endpoint) is not None:
                self._locks[endpoint] = anyio.Lock()
        self._blocked_until: dict[str, float] = {}

    def _name(self, endpoint: Endpoint) -> str:
        return f"{self.scope}:{endpoint}"

    def available(self, endpoint: Endpoint) -> float:
        """Calls that could be made now without waiting (``inf`` when unlimited, 0 when held)."""
        now = anyio.current_time()
        # (> and >= differ at one float value only: not mutated)
        if self._blocked_until.get(endpoint, now) > now + _EPSILON:  # pragma: no mutate
            return 0.0
        limit = self.limits.limit(endpoint)
        if limit is None:
            return math.inf
        return self.store.available(self._name(endpoint), limit, self.limits.window)

    def share_interval(self, endpoint: Endpoint, sharers: int) -> float:
        """Seconds each of ``sharers`` callers must leave between calls to share the budget.

        With a budget of ``L`` calls per window ``W``, ``N`` callers that each call at most
        every ``N * W / L`` seconds together stay within it (0.0 when unlimited). A shared
        store counts the callers of every process that shares it.
        """
        fleet = self.store.sharers(self._name(endpoint), sharers)
        return max(1, fleet) * self.limits.interval(endpoint)

    def next_free(self, endpoint: Endpoint) -> float:
        """Seconds until a call to ``endpoint`` would get a slot (0.0: now)."""
        now = anyio.current_time()
        limit = self.limits.limit(endpoint)
        wait = 0.0
        if limit is not None:
            wait = self.store.next_free(self._name(endpoint), limit, self.limits.window)
        wait = max(wait, self._blocked_until.get(endpoint, now) - now)
        # (a wait under _EPSILON is rounding, whichever way it is compared: not mutated)
        return wait if wait > _EPSILON else 0.0  # pragma: no mutate

    def block(self, endpoint: Endpoint, seconds: float) -> None:
        """Hold back every call to ``endpoint`` for ``seconds`` (after the server said 429)."""
        until = anyio.current_time() + seconds
        self._blocked_until[endpoint] = max(self._blocked_until.get(endpoint, 0.0), until)

    def _held(self, endpoint: Endpoint) -> float:
        wait = self._blocked_until.get(endpoint, -math.inf) - anyio.current_time()
        return wait if wait > _EPSILON else 0.0

    async def reserve(self, endpoint: Endpoint, *, wait: bool = True) -> Slot:
        """Take a slot for one call to ``endpoint``; wait for one, or raise when ``wait`` is off.

        Slots are handed out in the order they were asked for (within this process). The
        slot is counted as soon as it is returned: pass it to the call it was reserved for.
        """
        limit = self.limits.limit(endpoint)
        if limit is None:
            if endpoint in self._blocked_until:
                await self._wait_unblocked(endpoint, wait=wait)
            return Slot(endpoint, anyio.current_time())
        async with self._locks[endpoint]:  # FIFO: callers get slots in the order they asked
            while True:
                delay = self._held(endpoint)
                if delay <= 0:
                    delay = await self.store.take(self._name(endpoint), limit, self.limits.window)
                    if delay <= 0:
                        return Slot(endpoint, anyio.current_time())
                if not wait:
                    raise RateLimitError(
                        f"the client-side {endpoint} budget of {limit} calls per "
                        f"{self.limits.window:g} s is spent",
                        status_code=429,
                        code=None,
                        retry_after=delay,
                    )
                await anyio.sleep(delay)

    def attempt_hook(self, endpoint: Endpoint, slot: Slot | None = None) -> AttemptHook:
        """The budget's part in each HTTP attempt of one call to ``endpoint``.

        The first attempt uses ``slot`` when one was reserved for the call, else reserves
        one; every retry reserves its own. Creates wait for a slot only when
        ``limits.wait_for_create`` says so, other calls always do. A 429 with
        ``Retry-After`` holds back every call to the endpoint for that long.
        """
        if slot is not None and slot.endpoint != endpoint:
            raise ValueError(f"a slot reserved for {slot.endpoint} cannot pay for a {endpoint}")
        return _BudgetHook(self, endpoint, slot)

    async def _wait_unblocked(self, endpoint: Endpoint, *, wait: bool) -> None:
        delay = self.next_free(endpoint)
        if delay <= 0:
            return
        if not wait:
            raise RateLimitError(
                f"the {endpoint} endpoint asked to wait",
                status_code=429,
                code=None,
                retry_after=delay,
            )
        await anyio.sleep(delay)


class _BudgetHook:
    """:meth:`RateLimiter.attempt_hook`: the budget seen from one call's attempts."""

    __slots__ = ("_endpoint", "_limiter", "_slot")

    def __init__(self, limiter: RateLimiter, endpoint: Endpoint, slot: Slot | None) -> None:
        self._limiter = limiter
        self._endpoint = endpoint
        self._slot = slot

    async def before_attempt(self, attempt: int) -> None:
        if attempt == 1 and self._slot is not None:
            return
        wait = self._endpoint != "create" or self._limiter.limits.wait_for_create
        await self._limiter.reserve(self._endpoint, wait=wait)

    def after_refusal(self, retry_after: float | None) -> None:
        if retry_after is not None:
            self._limiter.block(self._endpoint, retry_after)


#: The spellings of the published tiers that ``rate_limits`` accepts.
TIERS: Final[Mapping[str, RateLimits]] = {"free": RateLimits.FREE, "pro": RateLimits.PRO}

_EXPECTED: Final = "RateLimits, a mapping such as {'status': 100}, or a tier name 'free'/'pro'"


def coerce_limits(value: RateLimits | Mapping[str, int] | str | None) -> RateLimits | None:
    """Accept ``RateLimits``, a mapping such as ``{"status": 100}`` or a tier name.

    Raises ``TypeError`` for a value of another type and ``ValueError`` for an unknown
    tier name or endpoint; both messages say what is expected.
    """
    if value is None or isinstance(value, RateLimits):
        return value
    if isinstance(value, str):
        tier = TIERS.get(value.strip().lower())
        if tier is None:
            raise ValueError(f"unknown tier {value!r}; expected {_EXPECTED}")
        return tier
    if not isinstance(value, Mapping):
        raise TypeError(f"expected {_EXPECTED}, got {type(value).__name__}")
    unknown = set(value) - set(ENDPOINTS)
    if unknown:
        raise ValueError(
            f"unknown rate-limit endpoints {sorted(unknown, key=repr)}; known: {list(ENDPOINTS)}"
        )
    return RateLimits(**value)  # type: ignore[arg-type]
