"""The webhook events of a research: one per status change, as the documentation shows.

Built here from the contract (``Status``, ``Output`` and ``Error`` with their ``data``),
not with the client's converter: the emulator is a second, independent reading of it.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Mapping
from typing import Any, Final, Protocol

import attrs

from fay_async._models import ResearchStatus

from ._http import _dump
from ._lifecycle import Research, error_message

__all__ = ["DONE", "EPSILON", "Event", "Source", "collect"]

#: Transitions this close to now are due (emulator seconds): sleeping exactly until a
#: transition may wake a rounding error before it.
EPSILON: Final = 1e-6
DONE: Final = frozenset({ResearchStatus.COMPLETED, ResearchStatus.FAILED, ResearchStatus.STOPPED})


class Source(Protocol):
    """What the scheduler needs of the emulator."""

    _lock: threading.RLock
    _researches: dict[str, Research]

    @property
    def speed(self) -> float: ...
    def now(self) -> float: ...
    def _iso(self, moment: float | None) -> str | None: ...
    def _wall_seconds(self, moment: float) -> int: ...


@attrs.frozen
class Event:
    """One event, its body as it will be signed and sent."""

    id: str
    type: str
    request_id: str
    status: ResearchStatus
    body: bytes


def transitions(research: Research) -> list[tuple[float, ResearchStatus]]:
    """Each status a research takes, with its time, as far as it is known now."""
    start = research.created + research.scenario.pending_s
    end = start + research.scenario.processing_s
    stopped = research.stopped
    steps = [(research.created, ResearchStatus.PENDING)]  # what the create answered
    if start < end and (stopped is None or start < stopped):
        steps.append((start, ResearchStatus.PROCESSING))
    if stopped is not None:
        steps.append((stopped, ResearchStatus.STOPPED))
    else:
        steps.append((end, research.scenario.outcome))
    return steps


def collect(
    source: Source, emitted: dict[str, int], now: float, rng: random.Random
) -> tuple[list[tuple[str, list[Event]]], float | None]:
    """The events due at ``now``, by research, and when the next transition comes.

    ``emitted`` counts, per research still changing, the transitions already sent; it is
    updated, and a research leaves it once its last transition is out.
    """
    due: list[tuple[str, list[Event]]] = []
    next_at: float | None = None
    for request_id, sent in list(emitted.items()):
        done = sent
        research = source._researches[request_id]
        steps = transitions(research)
        events: list[Event] = []
        for moment, status in steps[done:]:
            if moment > now + EPSILON:
                next_at = moment if next_at is None else min(next_at, moment)
                break
            events.extend(_events(source, research, moment, status, rng))
            done += 1
        if events:
            due.append((request_id, events))
        if done == len(steps):
            del emitted[request_id]
        else:
            emitted[request_id] = done
    return due, next_at


def _events(
    source: Source,
    research: Research,
    moment: float,
    status: ResearchStatus,
    rng: random.Random,
) -> list[Event]:
    started = ended = None
    if status is not ResearchStatus.PENDING:
        _, started, ended = research.timeline(moment)
    ids = {"request_id": research.request_id, "conversation_id": research.conversation_id}
    state = {
        "request_id": research.request_id,
        "status": status.value,
        "prompt": research.prompt,
        "conversation_id": research.conversation_id,
        "created_at": source._iso(research.created),
        "started_at": source._iso(started),
        "completed_at": source._iso(ended),
    }
    events = [_event(source, "Status", moment, status, state, rng)]
    if status is ResearchStatus.COMPLETED:
        output = {**ids, "status": status.value, "output": research.output}
        output["completed_at"] = source._iso(ended)
        events.append(_event(source, "Output", moment, status, output, rng))
    elif status is ResearchStatus.FAILED:
        error = {**ids, "status": status.value, "error_message": error_message(research, status)}
        error["completed_at"] = source._iso(ended)
        events.append(_event(source, "Error", moment, status, error, rng))
    return events


def _event(
    source: Source,
    kind: str,
    moment: float,
    status: ResearchStatus,
    data: Mapping[str, Any],
    rng: random.Random,
) -> Event:
    event_id = f"evt_{rng.getrandbits(96):024x}"
    created = source._wall_seconds(moment)
    payload = {"id": event_id, "type": kind, "created": created, "data": dict(data)}
    return Event(event_id, kind, str(data["request_id"]), status, _dump(payload))
