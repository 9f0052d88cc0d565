"""What the research manager tracks: :class:`ActiveResearch` entries, keyed by request id.

The manager reaches the set only through the small :class:`Registry` protocol, so that a
store shared by several processes can stand in for the in-memory one.
"""

from __future__ import annotations

import types
from collections.abc import Mapping
from typing import Protocol

import attrs

from ._jsonable import JSONValue
from ._models import ResearchStatus

__all__ = ["ActiveResearch", "MemoryRegistry", "Registry"]


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
