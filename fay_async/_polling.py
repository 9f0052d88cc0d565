"""Status polling: one scheduler for every research being waited on.

:class:`StatusPoller` polls every watched research from one scheduler task, earliest due
first, never faster than the client's status budget allows: with ``N`` researches watched
and a budget of ``L`` checks per window ``W``, each one is checked at most every
``N * W / L`` seconds, so nobody is starved and no 429 is provoked. Several waiters on one
research share its polls.
"""

from __future__ import annotations

import heapq
import logging
import math
import random
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Final

import anyio
import anyio.abc
import attrs

from ._client import FayClient
from ._models import ConversationInfo, ResearchStatus
from ._policy import SAFETY_NET, PollPolicy
from .exceptions import (
    APIConnectionError,
    FayError,
    RateLimitError,
    ServerError,
    SharedStateError,
    UnexpectedResponseError,
)

__all__ = ["PUSH_WINDOW", "StatusPoller", "Watch", "is_transient"]

logger: Final = logging.getLogger("fay_async")

#: Terminal statuses remembered per poller, so a late waiter does not spend a status call.
_FINISHED_CACHE: Final = 1024

#: Webhooks are "flowing" for this many seconds after the last one arrived: meanwhile the
#: poller keeps to its safety-net schedule.
PUSH_WINDOW: Final = 900.0


def is_transient(error: BaseException) -> bool:
    """Whether a failed status check is worth retrying (5xx, network, timeout, bad body).

    A shared budget whose store is away is too: no check was sent, and it may come back.
    """
    return isinstance(
        error, (ServerError, APIConnectionError, UnexpectedResponseError, SharedStateError)
    )


StatusCallback = Callable[[ConversationInfo, "ResearchStatus | None"], Awaitable[None]]


@attrs.define(eq=False)
class Watch:
    """The polling state of one research, shared by everyone waiting on it."""

    request_id: str
    status: ResearchStatus | None = None
    info: ConversationInfo | None = None
    error: BaseException | None = None
    interest: int = 0
    checks: int = 0
    failures: int = 0
    due: float = 0.0
    seq: int = 0
    in_flight: bool = False
    changed: anyio.Event = attrs.field(factory=anyio.Event)

    @property
    def settled(self) -> bool:
        """True once the research is seen terminal, or polling it failed for good."""
        return self.error is not None or (self.info is not None and self.info.status.is_terminal)

    def notify(self) -> None:
        """Wake everyone waiting for a change."""
        self.changed.set()
        self.changed = anyio.Event()

    async def wait_settled(self) -> ConversationInfo:
        """Wait until the research is terminal; return its info or raise the poll error."""
        while True:
            changed = self.changed
            if self.error is not None:
                raise self.error
            if self.info is not None and self.info.status.is_terminal:
                return self.info
            await changed.wait()


class StatusPoller:
    """Polls every watched research from one scheduler, within the client's status budget."""

    def __init__(
        self,
        client: FayClient,
        policy: PollPolicy,
        *,
        on_change: StatusCallback | None = None,
        push_policy: PollPolicy = SAFETY_NET,
        max_in_flight: int = 32,
        finished_cache: int = _FINISHED_CACHE,
        rng: random.Random | None = None,
    ) -> None:
        self._client = client
        self._poll_policy = policy
        self._push_policy = push_policy
        self._pushed_at: float | None = None
        self._on_change = on_change
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography
        self._watches: dict[str, Watch] = {}
        self._finished: OrderedDict[str, ConversationInfo] = OrderedDict()
        self._finished_cache = finished_cache
        self._heap: list[tuple[float, int, str]] = []
        self._seq = 0
        self._wake = anyio.Event()
        self._in_flight = 0
        self._max_in_flight = max_in_flight
        self._closed: BaseException | None = None
        self.checks = 0

    @property
    def _policy(self) -> PollPolicy:
        """The schedule in force: the safety net while webhooks are flowing."""
        return self._push_policy if self.pushes_flowing else self._poll_policy

    @property
    def pushes_flowing(self) -> bool:
        """Whether a webhook arrived in the last :data:`PUSH_WINDOW` seconds."""
        return self._pushed_at is not None and anyio.current_time() - self._pushed_at < PUSH_WINDOW

    def pushed(self) -> None:
        """A webhook arrived: keep to the safety-net schedule from now on, for a while.

        When pushes start to flow, every check already scheduled is put off to where the
        safety net would have it (never earlier than it was).
        """
        flowing = self.pushes_flowing
        self._pushed_at = anyio.current_time()
        if flowing:
            return
        for watch in list(self._watches.values()):
            if watch.settled or watch.in_flight:
                continue
            later = anyio.current_time() + self._policy.interval(
                watch.status, watch.checks, self._rng
            )
            if later > watch.due:
                watch.due = later
                self._schedule(watch)

    def last_info(self, request_id: str) -> ConversationInfo | None:
        """The latest info of a research this poller watches or has seen end."""
        watch = self._watches.get(request_id)
        if watch is not None and watch.info is not None:
            return watch.info
        return self._finished.get(request_id)

    @property
    def polled(self) -> int:
        """How many researches are being polled now."""
        return len(self._watches)

    def subscribe(
        self,
        request_id: str,
        *,
        known: ResearchStatus | None = None,
        since: float | None = None,
    ) -> Watch:
        """Register interest in ``request_id``; polling starts (or is shared) at once.

        ``known`` is a status already known (PENDING right after a create) and ``since`` the
        loop time it was learnt: the first check then waits as the policy and the shared
        budget say. Without one, the first check is due at once.
        """
        if self._closed is not None:
            raise RuntimeError("the ResearchManager is closed; open a new one")
        watch = self._watches.get(request_id)
        if watch is None:
            watch = Watch(request_id)
            finished = self._finished.get(request_id)
            now = anyio.current_time()
            if finished is not None:
                watch.status, watch.info = finished.status, finished
            elif known is None:
                watch.due = now
            else:
                watch.status = known
                wait = max(
                    self._policy.interval(known, 0, self._rng),
                    self._share(len(self._watches) + 1),
                )
                watch.due = (now if since is None else since) + wait
            self._watches[request_id] = watch
            if not watch.settled:
                self._schedule(watch)
        watch.interest += 1
        return watch

    def unsubscribe(self, watch: Watch) -> None:
        """Drop one interest; a research nobody waits on any more is no longer polled."""
        watch.interest -= 1
        if watch.interest <= 0 and not watch.in_flight:
            self._forget(watch)

    async def observe(self, info: ConversationInfo) -> bool:
        """Record a status learnt without a check of this poller's own.

        The app's own status call, a webhook or a stop the service confirmed: waiters,
        watchers and observers see it as if a check had returned it, and the next check
        is scheduled from it. A terminal status is remembered for late waiters. False
        when nobody watches the research, or it had already settled.
        """
        if info.status.is_terminal:
            self._remember(info)
        watch = self._watches.get(info.request_id)
        if watch is None or watch.settled:
            return False
        previous = watch.status
        if info.status != previous:
            watch.status = info.status
            watch.checks = 0
            if self._on_change is not None:
                await self._on_change(info, previous)
        watch.info = info
        watch.notify()
        if watch.in_flight:
            return True  # the check's end reschedules or forgets it
        if info.status.is_terminal:
            self._forget(watch)
        elif self._closed is None and watch.interest > 0:
            self._next_due(watch, self._policy.interval(info.status, watch.checks, self._rng))
        return True

    async def settle(self, request_id: str, status: ResearchStatus) -> bool:
        """Record a terminal status learnt without a check (a stop the service confirmed).

        The info keeps the fields of the last check, with the new status; see
        :meth:`observe`.
        """
        watch = self._watches.get(request_id)
        if watch is None or watch.settled:
            return False
        base = watch.info or ConversationInfo(request_id=request_id, status=status)
        return await self.observe(attrs.evolve(base, status=status))

    def poll_soon(self, request_id: str) -> None:
        """Check ``request_id`` again as soon as the budget allows (if anyone is watching)."""
        watch = self._watches.get(request_id)
        if watch is None or watch.settled or watch.in_flight:
            return
        watch.due = anyio.current_time()
        self._schedule(watch)

    def close(self) -> None:
        """Fail every wait in progress: the poller is going away."""
        self._closed = RuntimeError(
            "the ResearchManager was closed while this research was being waited on"
        )
        for watch in list(self._watches.values()):
            if not watch.settled:
                watch.error = self._closed
                watch.notify()
        self._watches.clear()
        self._heap.clear()
        self._wake.set()

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """The scheduler: runs until cancelled; each check runs in a task of its own."""
        async with anyio.create_task_group() as tg:
            task_status.started()
            while True:
                if self._wake.is_set():
                    self._wake = anyio.Event()
                watch = self._peek()
                if watch is None:
                    await self._wake.wait()
                    continue
                delay = max(watch.due - anyio.current_time(), self._budget_delay())
                if delay > 0:
                    with anyio.move_on_after(delay):
                        await self._wake.wait()
                    continue
                heapq.heappop(self._heap)
                watch.in_flight = True
                self._in_flight += 1
                tg.start_soon(self._check, watch)

    def _schedule(self, watch: Watch) -> None:
        self._seq += 1
        watch.seq = self._seq
        heapq.heappush(self._heap, (watch.due, watch.seq, watch.request_id))
        self._wake.set()

    def _peek(self) -> Watch | None:
        while self._heap:
            _, seq, request_id = self._heap[0]
            watch = self._watches.get(request_id)
            if watch is not None and watch.seq == seq and not watch.in_flight:
                return watch
            heapq.heappop(self._heap)  # stale: rescheduled, settled or forgotten
        return None

    def _budget_delay(self) -> float:
        if self._in_flight >= self._max_in_flight:
            return math.inf  # the end of a check in flight wakes the scheduler
        limiter = self._client.rate_limiter
        if limiter is None:
            return 0.0
        wait = limiter.next_free("status")
        if wait > 0:
            return wait
        if limiter.available("status") - self._in_flight < 1:
            return math.inf  # a check in flight holds the last slot; its end wakes us
        return 0.0

    def _forget(self, watch: Watch) -> None:
        if self._watches.get(watch.request_id) is watch:
            del self._watches[watch.request_id]

    def _share(self, polled: int) -> float:
        """The shortest interval per research that keeps ``polled`` of them within budget."""
        limiter = self._client.rate_limiter
        return 0.0 if limiter is None else limiter.share_interval("status", polled)

    def _next_due(self, watch: Watch, delay: float) -> None:
        watch.due = anyio.current_time() + max(delay, self._share(self.polled))
        self._schedule(watch)

    async def _check(self, watch: Watch) -> None:
        try:
            await self._check_once(watch)
        finally:
            watch.in_flight = False
            self._in_flight -= 1
            if watch.interest <= 0 or watch.settled:
                self._forget(watch)
            self._wake.set()

    async def _check_once(self, watch: Watch) -> None:
        request_id = watch.request_id
        self.checks += 1
        try:
            info = await self._client.get_status(request_id)
        except Exception as error:  # noqa: BLE001 - each kind is handled below
            if not watch.settled:  # else the end came meanwhile, through observe()
                self._check_failed(watch, error)
            return
        if watch.settled:
            return
        watch.failures = 0
        previous = watch.status
        if info.status != previous:
            watch.status = info.status
            watch.checks = 0
            if self._on_change is not None:  # the registry and observers first, then waiters
                await self._on_change(info, previous)
        else:
            watch.checks += 1
        if info.status.is_terminal:
            self._remember(info)
        watch.info = info
        watch.notify()
        if self._closed is None and not watch.settled and watch.interest > 0:
            self._next_due(watch, self._policy.interval(info.status, watch.checks, self._rng))

    def _check_failed(self, watch: Watch, error: Exception) -> None:
        request_id = watch.request_id
        if isinstance(error, FayError) and (
            isinstance(error, RateLimitError) or is_transient(error)
        ):
            watch.failures += 1
            wait = error.retry_after if isinstance(error, RateLimitError) else None
            if wait is None:
                wait = self._poll_policy.retry_delay(watch.failures, self._rng)
            logger.info("status check of %s failed (%s); retry in %.1fs", request_id, error, wait)
            self._next_due(watch, wait)
            return
        if isinstance(error, FayError):
            logger.warning("status check of %s failed: %s", request_id, error)
        else:  # fail only the waiters of this research
            logger.error("status check of %s failed unexpectedly", request_id, exc_info=error)
        watch.error = error
        watch.notify()

    def _remember(self, info: ConversationInfo) -> None:
        self._finished[info.request_id] = info
        self._finished.move_to_end(info.request_id)
        while len(self._finished) > self._finished_cache:
            self._finished.popitem(last=False)
