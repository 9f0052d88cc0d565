"""Per-call deadlines that share one timer per asyncio event loop.

On asyncio, an anyio cancel scope with a deadline schedules a timer of its own and
cancels it when the scope ends: on a call that takes no time on the wire, that costs
more than the rest of the scope. Here the scope has no deadline of its own. The deadlines
of the calls in flight on one event loop are kept in a heap, and one timer, armed for the
earliest of them, cancels the scopes whose deadline has passed, as anyio's own timer
would. A call's deadline is nearly always later than those already in flight (the same
limit, counted from a later moment), so a call seldom touches the timer. On trio a
cancel scope's deadline costs next to nothing, and is used as it is.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
import weakref
from typing import Any, Final

import anyio

__all__ = ["Deadlines", "deadline_scope"]

#: Ties between equal deadlines are broken by arrival, never by comparing scopes.
_order: Final = itertools.count()

#: [deadline, arrival, scope]; the scope is None once its call has ended.
_Entry = list[Any]


class Deadlines:
    """The deadlines in flight on one asyncio event loop, and the one timer behind them."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        # Weakly: these deadlines are the value of the loop's entry in a weak mapping, and
        # a strong reference would keep every loop that ever made a call alive.
        self._loop = weakref.ref(loop)
        # anyio's scope class for asyncio: anyio.CancelScope() would ask sniffio which
        # library runs, and initialise the scope twice, on every call.
        self.scope_class: type[anyio.CancelScope] = type(anyio.CancelScope())
        self._heap: list[_Entry] = []
        self._live = 0
        # Weakly too: the loop holds its timer while it is scheduled, and the timer holds
        # the loop.
        self._timer: weakref.ref[asyncio.TimerHandle] | None = None
        self._armed = math.inf

    def __len__(self) -> int:
        """How many calls with a deadline are in flight."""
        return self._live

    def add(self, deadline: float, scope: anyio.CancelScope) -> _Entry:
        """Cancel ``scope`` at ``deadline`` (loop time) unless :meth:`remove` comes first."""
        entry: _Entry = [deadline, next(_order), scope]
        heapq.heappush(self._heap, entry)
        self._live += 1
        if deadline < self._armed:
            self._arm(deadline)
        return entry

    def remove(self, entry: _Entry) -> None:
        """The call of ``entry`` has ended: its scope is left alone from now on."""
        entry[2] = None
        self._live -= 1
        heap = self._heap
        while heap and heap[0][2] is None:
            heapq.heappop(heap)
        # Calls that end out of order leave ended entries below a live one: dropped once
        # they outnumber the live ones. (The timer stays armed: when it finds nothing due,
        # it arms itself for the earliest live deadline, or not at all.)
        if len(heap) > 2 * self._live + 64:
            self._heap = [kept for kept in heap if kept[2] is not None]
            heapq.heapify(self._heap)

    def _arm(self, deadline: float) -> None:
        loop = self._loop()
        if loop is None:  # pragma: no cover - the loop is gone, and its calls with it
            return
        timer = self._timer() if self._timer is not None else None
        if timer is not None:
            timer.cancel()
        self._armed = deadline
        self._timer = weakref.ref(loop.call_at(deadline, self._fire))

    def _fire(self) -> None:
        loop = self._loop()
        if loop is None:  # pragma: no cover - a loop runs its timers while it lives
            return
        self._timer = None
        self._armed = math.inf
        heap = self._heap
        now = loop.time()
        while heap and (heap[0][2] is None or heap[0][0] <= now):
            scope = heapq.heappop(heap)[2]
            if scope is not None:
                scope.cancel()  # its entry is removed when its call ends
        if heap:
            self._arm(heap[0][0])


_by_loop: Final[weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Deadlines]] = (
    weakref.WeakKeyDictionary()
)


def deadline_scope(
    seconds: float,
) -> tuple[anyio.CancelScope, float, Deadlines | None, _Entry | None]:
    """A cancel scope cancelled ``seconds`` from now, to be entered now, and its deadline.

    On asyncio the deadline is one of the loop's :class:`Deadlines`: pass the entry to
    ``Deadlines.remove`` once the scope has ended (both are None on trio).
    """
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:  # trio
        deadline = anyio.current_time() + seconds
        return anyio.CancelScope(deadline=deadline), deadline, None, None
    deadlines = _by_loop.get(loop)
    if deadlines is None:
        deadlines = _by_loop[loop] = Deadlines(loop)
    deadline = loop.time() + seconds  # anyio's clock on asyncio
    scope = deadlines.scope_class()
    return scope, deadline, deadlines, deadlines.add(deadline, scope)
