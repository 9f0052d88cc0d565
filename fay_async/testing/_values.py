"""The emulator's values: scenarios, faults, call records and research snapshots."""

from __future__ import annotations

import math
import types
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Final, Literal, TypeAlias

import attrs

from fay_async._models import ResearchStatus

__all__ = [
    "API_VERSION",
    "DEFAULT_API_KEY",
    "ENDPOINTS",
    "RATE_LIMIT_TIERS",
    "CallRecord",
    "Endpoint",
    "Fault",
    "FaultKind",
    "ResearchState",
    "Scenario",
    "iso",
]

Endpoint: TypeAlias = Literal["create", "status", "output", "stop"]
ENDPOINTS: Final[tuple[Endpoint, ...]] = ("create", "status", "output", "stop")

#: The API version every response carries.
API_VERSION: Final = "1.0.24"

#: The key an emulator accepts unless told otherwise: an obvious fake, the same everywhere
#: (``FayEmulator()``, the pytest fixtures, and the emulators of the ``fay-async`` command).
DEFAULT_API_KEY: Final = "test-key"

#: The published per-hour limits, per API key and endpoint (the emulator's own copy).
RATE_LIMIT_TIERS: Final[Mapping[str, Mapping[Endpoint, int]]] = types.MappingProxyType(
    {
        "free": types.MappingProxyType({"create": 10, "status": 100, "output": 50, "stop": 20}),
        "pro": types.MappingProxyType({"create": 100, "status": 1000, "output": 500, "stop": 200}),
    }
)

_OUTCOMES: Final = frozenset({ResearchStatus.COMPLETED, ResearchStatus.FAILED})


def iso(moment: datetime | None) -> str | None:
    """ISO 8601 with microseconds and offset, as the API writes timestamps."""
    return None if moment is None else moment.isoformat(timespec="microseconds")


def _check_duration(_instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if (
        not isinstance(value, (int, float))
        or isinstance(value, bool)
        or not math.isfinite(value)
        or value < 0
    ):
        raise ValueError(f"{attribute.name} must be a number of seconds >= 0, got {value!r}")


def _to_outcome(value: Any) -> ResearchStatus:
    status = ResearchStatus(value)
    if status not in _OUTCOMES:
        raise ValueError(f"a research ends COMPLETED or FAILED, not {value!r}")
    return status


def _check_output(_instance: object, _attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None and not isinstance(value, (str, dict)):
        raise TypeError(f"output must be a str, a dict or None, got {type(value).__name__}")


@attrs.frozen
class Scenario:
    """How one research unfolds: seconds queued, seconds running, then its outcome.

    ``output`` replaces the generated output (Markdown quoting the prompt, or a JSON
    object fitting the ``output_schema``); ``error_message`` is reported when the outcome
    is FAILED (a generic message when None).
    """

    pending_s: float = attrs.field(validator=_check_duration)
    processing_s: float = attrs.field(validator=_check_duration)
    outcome: ResearchStatus = attrs.field(default=ResearchStatus.COMPLETED, converter=_to_outcome)
    output: str | dict[str, Any] | None = attrs.field(default=None, validator=_check_output)
    error_message: str | None = None


FaultKind: TypeAlias = Literal["error", "html", "empty", "truncated_json", "latency", "drop"]


def _check_status_code(status_code: object) -> int:
    if not isinstance(status_code, int) or isinstance(status_code, bool):
        raise TypeError(f"status_code must be an int, got {type(status_code).__name__}")
    if not 100 <= status_code <= 599:
        raise ValueError(f"status_code must be an HTTP status (100-599), got {status_code}")
    return status_code


def _check_seconds(name: str, value: object) -> float:
    if (
        not isinstance(value, (int, float))
        or isinstance(value, bool)
        or not math.isfinite(value)
        or value < 0
    ):
        raise ValueError(f"{name} must be a number of seconds >= 0, got {value!r}")
    return float(value)


@attrs.frozen(kw_only=True)
class Fault:
    """A failure to inject into the next calls of an endpoint; build one with a factory.

    ``error``, ``html`` and ``empty`` replace the answer and leave the emulator untouched;
    ``truncated_json``, ``latency`` and ``drop(processed=True)`` first handle the call
    normally (a create creates its research), then spoil or delay the answer.
    """

    kind: FaultKind
    status_code: int = 502
    code: str | None = None
    message: str | None = None
    retry_after: float | None = None
    seconds: float = 0.0
    processed: bool = False

    @classmethod
    def error(
        cls,
        status_code: int,
        code: str,
        message: str = "Injected fault",
        *,
        retry_after: float | None = None,
    ) -> Fault:
        """An error envelope with this HTTP status and code (and ``Retry-After`` if given)."""
        if retry_after is not None:
            retry_after = _check_seconds("retry_after", retry_after)
        return cls(
            kind="error",
            status_code=_check_status_code(status_code),
            code=code,
            message=message,
            retry_after=retry_after,
        )

    @classmethod
    def html(cls, status_code: int = 502) -> Fault:
        """A gateway's HTML error page instead of the JSON envelope."""
        return cls(kind="html", status_code=_check_status_code(status_code))

    @classmethod
    def empty(cls, status_code: int = 502) -> Fault:
        """An answer with an empty body."""
        return cls(kind="empty", status_code=_check_status_code(status_code))

    @classmethod
    def truncated_json(cls) -> Fault:
        """The call is handled, but only the first half of its JSON body is sent."""
        return cls(kind="truncated_json", processed=True)

    @classmethod
    def latency(cls, seconds: float) -> Fault:
        """The call is handled on arrival; its answer comes ``seconds`` later.

        The delay is an ``anyio.sleep`` on the event loop (virtual in a virtual-time
        test, real on a served emulator) and is not scaled by ``speed``. In-process,
        the client's read timeout applies to it as it would over a network.
        """
        return cls(kind="latency", seconds=_check_seconds("seconds", seconds), processed=True)

    @classmethod
    def drop(cls, *, processed: bool = False) -> Fault:
        """The connection is dropped in the middle of the answer.

        With ``processed=True`` the call is handled first (a create does create its
        research: the client cannot know); else it is dropped before it has any effect.
        In-process the client sees ``httpx.RemoteProtocolError``; over a socket the
        server declares a ``Content-Length``, sends part of the body and closes.
        """
        return cls(kind="drop", status_code=200, processed=bool(processed))


@attrs.frozen(kw_only=True)
class CallRecord:
    """One call the emulator answered (or dropped); ``status_code`` is None for a drop."""

    endpoint: Endpoint | None
    method: str
    path: str
    request_id: str | None
    time: float
    status_code: int | None
    error_code: str | None = None
    fault: FaultKind | None = None

    def to_json(self) -> dict[str, Any]:
        """This record as a JSON-ready dict."""
        return {
            "endpoint": self.endpoint,
            "method": self.method,
            "path": self.path,
            "request_id": self.request_id,
            "time": self.time,
            "status_code": self.status_code,
            "error_code": self.error_code,
            "fault": self.fault,
        }


@attrs.frozen(kw_only=True)
class ResearchState:
    """A research as the emulator sees it at one moment (status computed at that time)."""

    request_id: str
    conversation_id: str
    prompt: str
    structured_output: bool
    output_schema: dict[str, Any] | None
    status: ResearchStatus
    created_at: datetime
    started_at: datetime | None
    completed_at: datetime | None
    stopped: bool
    error_message: str | None
    output: str | dict[str, Any] | None
    scenario: Scenario

    def to_json(self) -> dict[str, Any]:
        """This state as a JSON-ready dict (timestamps in ISO 8601)."""
        return {
            "request_id": self.request_id,
            "conversation_id": self.conversation_id,
            "prompt": self.prompt,
            "structured_output": self.structured_output,
            "output_schema": self.output_schema,
            "status": self.status.value,
            "created_at": iso(self.created_at),
            "started_at": iso(self.started_at),
            "completed_at": iso(self.completed_at),
            "stopped": self.stopped,
            "error_message": self.error_message,
            "pending_s": self.scenario.pending_s,
            "processing_s": self.scenario.processing_s,
        }
