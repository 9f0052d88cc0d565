"""What the research manager tracks: :class:`ActiveResearch` entries, keyed by request id.

The manager reaches the set only through the small :class:`Registry` protocol, so that a
store shared by several processes can stand in for the in-memory one. A shared registry
(:class:`SharedRegistry`, such as :class:`fay_async.redis.RedisRegistry`) keeps the same
synchronous view of this process's researches, and runs its own tasks (heartbeat,
messages from other processes, the orphan sweep) among the manager's.
"""

from __future__ import annotations

import types
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import attrs

from ._jsonable import JSONValue
from ._models import ConversationInfo, ResearchStatus, StopResult

if TYPE_CHECKING:
    import anyio.abc

    from .exceptions import FayError

__all__ = ["ActiveResearch", "FleetHooks", "MemoryRegistry", "Registry", "SharedRegistry"]


@attrs.frozen(kw_only=True)
class ActiveResearch(JSONValue):
    """A research the manager tracks: its id, prompt, loop time started and last status."""

    request_id: str
    prompt: str | None
    started_at: float
    status: ResearchStatus | None


class Registry(Protocol):
    """The researches a manager tracks (the documented "active requests")."""

    def get(self, request_id: str) -> ActiveResearch | None:
        """The entry for ``request_id``, if tracked."""

    def add(self, entry: ActiveResearch) -> ActiveResearch:
        """Track ``entry`` unless its id is tracked already; return the tracked entry."""

    def set_status(self, request_id: str, status: ResearchStatus) -> None:
        """Record the last status seen of a tracked research (nothing if untracked)."""

    def discard(self, request_id: str) -> bool:
        """Untrack ``request_id``; False if it was not tracked."""

    def ids(self) -> list[str]:
        """The tracked request ids, oldest first (a copy)."""

    def view(self) -> Mapping[str, ActiveResearch]:
        """A read-only, live view of the entries by request id."""

    def __contains__(self, request_id: object) -> bool: ...

    def __len__(self) -> int: ...


@attrs.frozen
class FleetHooks:
    """What a shared registry may ask of its manager.

    ``learned(info)``: a status another process learnt (a stop it made) of a research
    this manager tracks; its waiters see it at once. ``stop(request_id)``: stop a
    research this manager does not track (an orphan, or a cancel asked here for a
    research another process owns), returning the stop's outcome. ``key`` is the
    fingerprint of the manager's API key (:attr:`FayClient.key_fingerprint`): researches
    exist per key, so the fleet's registry is per key too.
    """

    learned: Callable[[ConversationInfo], Awaitable[None]]
    stop: Callable[[str], Awaitable[StopResult | FayError]]
    key: str


@runtime_checkable
class SharedRegistry(Registry, Protocol):
    """A registry that several processes share: the manager starts and closes it."""

    async def start(self, task_group: anyio.abc.TaskGroup, hooks: FleetHooks) -> None:
        """Connect and start the registry's tasks in ``task_group`` (the manager's)."""

    async def close(self) -> None:
        """Write out what is pending, stop the tasks and leave the fleet."""

    async def owner(self, request_id: str) -> str | None:
        """The worker that tracks ``request_id`` anywhere in the fleet, if any."""

    async def fleet_ids(self) -> list[str]:
        """Every request id tracked anywhere in the fleet."""

    async def stopped(self, request_id: str, outcome: StopResult | FayError) -> None:
        """A stop of ``request_id`` is over: untrack it fleet-wide and tell its owner."""

    def orphan(self, request_id: str) -> None:
        """Untrack ``request_id`` here but leave it to the fleet: a stop of it failed.

        Any live worker's sweep stops it later (this one's too, while it lives).
        """


class MemoryRegistry:
    """The registry of one process: a dictionary."""

    __slots__ = ("_entries",)

    def __init__(self) -> None:
        self._entries: dict[str, ActiveResearch] = {}

    def __repr__(self) -> str:
        return f"<MemoryRegistry: {len(self._entries)} tracked>"

    def get(self, request_id: str) -> ActiveResearch | None:
        return self._entries.get(request_id)

    def add(self, entry: ActiveResearch) -> ActiveResearch:
        return self._entries.setdefault(entry.request_id, entry)

    def set_status(self, request_id: str, status: ResearchStatus) -> None:
        entry = self._entries.get(request_id)
        if entry is not None:
            self._entries[request_id] = attrs.evolve(entry, status=status)

    def discard(self, request_id: str) -> bool:
        return self._entries.pop(request_id, None) is not None

    def ids(self) -> list[str]:
        return list(self._entries)

    def view(self) -> Mapping[str, ActiveResearch]:
        return types.MappingProxyType(self._entries)

    def __contains__(self, request_id: object) -> bool:
        return request_id in self._entries

    def __len__(self) -> int:
        return len(self._entries)
