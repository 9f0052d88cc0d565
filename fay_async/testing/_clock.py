"""Clocks for the emulator: a callable returning seconds, and a manual one for tests."""

from __future__ import annotations

import math
import threading
from collections.abc import Callable

__all__ = ["Clock", "ManualClock"]

#: A clock is any callable returning the current time in seconds (monotonic, any origin).
Clock = Callable[[], float]


class ManualClock:
    """A clock that moves only when told to: call it for the time, :meth:`advance` it.

    Made for synchronous tests: ``FayEmulator(clock=clock)`` then ``clock.advance(60)``
    lets a minute of research lifecycle or rate-limit window pass instantly.
    """

    def __init__(self, start: float = 0.0) -> None:
        if not _is_finite_number(start):
            raise ValueError(f"start must be a finite number of seconds, got {start!r}")
        self._now = float(start)
        self._lock = threading.Lock()

    def __call__(self) -> float:
        return self._now

    @property
    def now(self) -> float:
        """The current time in seconds."""
        return self._now

    def advance(self, seconds: float) -> float:
        """Move the clock forward by ``seconds`` (>= 0) and return the new time."""
        if not _is_finite_number(seconds) or seconds < 0:
            raise ValueError(f"a clock only moves forward: got {seconds!r} seconds")
        with self._lock:
            self._now += float(seconds)
            return self._now

    def __repr__(self) -> str:
        return f"ManualClock(now={self._now:g})"


def _is_finite_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
