"""The research lifecycle: what the emulator keeps of a research, and its answers.

A research's status is computed from its timestamps at the moment it is asked for.
"""

from __future__ import annotations

import json
import random
from collections import deque
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, Final

import attrs

from fay_async._models import ResearchStatus

from ._http import _Answer, _error, _ok, _reject_constant
from ._schema import default_structured_output, example_for_schema
from ._values import ENDPOINTS, RATE_LIMIT_TIERS, Endpoint, Fault, ResearchState, Scenario

HOUR: Final = 3600.0
#: Outputs are kept this long after completion, then the output call answers 404.
OUTPUT_RETENTION: Final = 30 * 24 * HOUR
#: Longest prompt accepted, in characters.
MAX_PROMPT_LENGTH: Final = 100_000

_DEFAULT_PENDING: Final = (45.0, 55.0)
_DEFAULT_PROCESSING: Final = (10.0, 15.0)
_DEFAULT_ERROR_MESSAGE: Final = "Research failed in the emulator"
_STOP_MESSAGE: Final = "Conversation stopped successfully"


@attrs.define
class Research:
    """One research as the emulator keeps it; its status follows from timestamps."""

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
class PendingFault:
    """An injected fault and how many more calls it answers."""

    fault: Fault
    remaining: int


def coerce_limits(rate_limits: str | Mapping[str, int] | None) -> dict[Endpoint, int]:
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


def check_endpoint(endpoint: str) -> Endpoint:
    if endpoint not in ENDPOINTS:
        raise ValueError(f"unknown endpoint {endpoint!r}; use one of {ENDPOINTS}")
    return endpoint


def error_message(research: Research, status: ResearchStatus) -> str | None:
    """The error message a FAILED research reports (None otherwise)."""
    if status is not ResearchStatus.FAILED:
        return None
    return research.scenario.error_message or _DEFAULT_ERROR_MESSAGE


def status_answer(
    research: Research, now: float, iso: Callable[[float | None], str | None]
) -> _Answer:
    """The Check Status answer for ``research`` at ``now``."""
    status, started, ended = research.timeline(now)
    finished = status in (ResearchStatus.COMPLETED, ResearchStatus.FAILED)
    data = {
        "request_id": research.request_id,
        "status": status.value,
        "prompt": research.prompt,
        "structured_output": research.structured_output,
        "output_schema": research.output_schema,
        "conversation_id": research.conversation_id,
        "created_at": iso(research.created),
        "started_at": iso(started),
        "completed_at": iso(ended),
        "error_message": error_message(research, status),
        "metadata": {"emulated": True} if finished else None,
    }
    return _ok(data, request_id=research.request_id)


def output_answer(research: Research, now: float) -> _Answer:
    """The Get Output answer for ``research`` at ``now``."""
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
        return _error(400, "RESEARCH_FAILED", "Research failed and has no output", request_id=rid)
    return _error(400, "RESEARCH_NOT_COMPLETED", "Research is not completed yet", request_id=rid)


def stop_answer(research: Research, now: float) -> _Answer:
    """The Stop Conversation answer for ``research`` at ``now`` (stopping it if running)."""
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


def output_for(
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


def parse_create(  # noqa: PLR0911 - one answer per refused body
    body: bytes | None,
) -> _Answer | tuple[str, bool, dict[str, Any] | None]:
    """A create body's prompt, structured_output and output_schema, or the error answer."""
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
    return prompt, structured, schema


def scenario_for(
    option: Scenario | Callable[[str], Scenario] | None, prompt: str, rng: random.Random
) -> Scenario:
    """The scenario of a new research: the emulator's option, or default durations."""
    if isinstance(option, Scenario):
        return option
    if option is not None:
        scenario = option(prompt)
        if not isinstance(scenario, Scenario):
            raise TypeError(f"the scenario callable returned {scenario!r}, not a Scenario")
        return scenario
    return Scenario(
        pending_s=round(rng.uniform(*_DEFAULT_PENDING), 3),
        processing_s=round(rng.uniform(*_DEFAULT_PROCESSING), 3),
    )


class RateBudgets:
    """The emulator's hourly budget per API key and endpoint (on its own clock)."""

    __slots__ = ("_limits", "_windows")

    def __init__(self, limits: Mapping[Endpoint, int]) -> None:
        self._limits = limits
        self._windows: dict[tuple[str, Endpoint], deque[float]] = {}

    def spend(self, key: str, endpoint: Endpoint, now: float) -> float | None:
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


def research_state(
    wall: Callable[[float | None], datetime | None], research: Research, now: float
) -> ResearchState:
    """What the emulator shows of ``research`` at ``now`` (``wall`` maps its clock to dates)."""
    status, started, ended = research.timeline(now)
    created_at = wall(research.created)
    assert created_at is not None  # noqa: S101 - a float always maps to a datetime
    return ResearchState(
        request_id=research.request_id,
        conversation_id=research.conversation_id,
        prompt=research.prompt,
        structured_output=research.structured_output,
        output_schema=research.output_schema,
        status=status,
        created_at=created_at,
        started_at=wall(started),
        completed_at=wall(ended),
        stopped=status is ResearchStatus.STOPPED,
        error_message=error_message(research, status),
        output=research.output if status is ResearchStatus.COMPLETED else None,
        scenario=research.scenario,
    )
