"""The ``@pytest.mark.fay(...)`` marker: what it accepts, and how marks on a module, a
class and a test combine (the closest one wins, key by key)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import attrs
import pytest

__all__ = ["MARKER", "MARKER_HELP", "FayOptions", "options_for"]

MARKER: Final = "fay"
MARKER_HELP: Final = (
    "fay(*, virtual_time=False, emulator={}, client={}, manager={}): options for the "
    "fay_emulator, fay_client and fay_manager fixtures (FayEmulator, FayClient and "
    "ResearchManager keyword arguments); virtual_time=True runs the test on a virtual clock"
)
_GROUPS: Final = ("emulator", "client", "manager")
_KNOWN: Final = ("virtual_time", *_GROUPS)

_KEY: Final = pytest.StashKey["FayOptions"]()


@attrs.frozen
class FayOptions:
    """The merged options of every ``fay`` mark that applies to one test."""

    virtual_time: bool = False
    emulator: Mapping[str, Any] = attrs.field(factory=dict)
    client: Mapping[str, Any] = attrs.field(factory=dict)
    manager: Mapping[str, Any] = attrs.field(factory=dict)


def options_for(node: pytest.Item) -> FayOptions:
    """The options of ``node`` (read once per test); a clear test error for a bad mark."""
    cached = node.stash.get(_KEY, None)
    if cached is None:
        cached = node.stash[_KEY] = _merge(node)
    return cached


def _merge(node: pytest.Item) -> FayOptions:
    merged: dict[str, Any] = {"virtual_time": False, **{group: {} for group in _GROUPS}}
    # iter_markers yields the closest mark first: apply the farthest first, so closer ones win.
    for mark in reversed(list(node.iter_markers(MARKER))):
        if mark.args:
            pytest.fail(
                f"@pytest.mark.fay takes keyword arguments only ({', '.join(_KNOWN)}), "
                f"got {mark.args!r}",
                pytrace=False,
            )
        for name, value in mark.kwargs.items():
            if name not in _KNOWN:
                pytest.fail(
                    f"@pytest.mark.fay got an unknown option {name!r}; "
                    f"the options are {', '.join(_KNOWN)}",
                    pytrace=False,
                )
            if name == "virtual_time":
                if not isinstance(value, bool):
                    pytest.fail(
                        f"@pytest.mark.fay(virtual_time=...) must be True or False, got {value!r}",
                        pytrace=False,
                    )
                merged[name] = value
                continue
            if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
                pytest.fail(
                    f"@pytest.mark.fay({name}=...) must be a dict of keyword arguments, "
                    f"got {value!r}",
                    pytrace=False,
                )
            merged[name] = {**merged[name], **value}
    return FayOptions(**merged)


def build(what: str, factory: Any, options: Mapping[str, Any], *args: Any) -> Any:
    """``factory(*args, **options)``; a wrong option fails the test naming the mark."""
    from fay_async.exceptions import ConfigurationError  # noqa: PLC0415 - cheap plugin load

    try:
        return factory(*args, **options)
    except (TypeError, ValueError, ConfigurationError) as exc:
        pytest.fail(f"@pytest.mark.fay({what}=...): {exc}", pytrace=False)
