"""The in-memory registry of tracked researches."""

from __future__ import annotations

import pytest

from fay_async import ActiveResearch, ResearchStatus
from fay_async._registry import MemoryRegistry, Registry


def entry(request_id: str, status: ResearchStatus | None = None) -> ActiveResearch:
    return ActiveResearch(request_id=request_id, prompt="q", started_at=1.0, status=status)


def test_add_keeps_the_first_entry_of_an_id() -> None:
    registry: Registry = MemoryRegistry()
    first = registry.add(entry("a"))
    assert registry.add(entry("a", ResearchStatus.PROCESSING)) is first
    assert registry.get("a") is first
    assert len(registry) == 1
    assert "a" in registry
    assert "b" not in registry


def test_status_discard_ids_and_the_read_only_view() -> None:
    registry = MemoryRegistry()
    registry.add(entry("a"))
    registry.add(entry("b"))
    view = registry.view()
    registry.set_status("a", ResearchStatus.PROCESSING)
    registry.set_status("unknown", ResearchStatus.PROCESSING)
    assert view["a"].status is ResearchStatus.PROCESSING
    assert registry.ids() == ["a", "b"]
    assert registry.discard("a")
    assert not registry.discard("a")
    assert list(view) == ["b"]
    assert repr(registry) == "<MemoryRegistry: 1 tracked>"
    with pytest.raises(TypeError):
        view["c"] = entry("c")  # type: ignore[index]
