"""The values the API returns: frozen attrs classes, pure data, no JSON knowledge."""

from __future__ import annotations

import difflib
import enum
from datetime import datetime
from typing import Any

import attrs

__all__ = [
    "ConversationInfo",
    "ConversationOutput",
    "CreatedConversation",
    "ResearchResult",
    "ResearchStatus",
    "StopResult",
]


class ResearchStatus(str, enum.Enum):
    """The status of a research.

    A status string the service sends that this version does not know is kept as it came
    (``status.value``, through :meth:`from_api`), is not terminal, and compares equal to
    its raw string, so a new server-side status never crashes a client: it just keeps
    being polled until its deadline. In code, ``ResearchStatus("COMPLETE")`` (a typo) is
    refused with a ``ValueError`` that names the known statuses.
    """

    PENDING = "PENDING"
    PROCESSING = "PROCESSING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    STOPPED = "STOPPED"

    @classmethod
    def _missing_(cls, value: object) -> ResearchStatus | None:
        known = ", ".join(cls.__members__)
        hint = ""
        if isinstance(value, str):
            close = difflib.get_close_matches(value.upper(), cls.__members__, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(
            f"{value!r} is not a valid ResearchStatus{hint}; the known statuses are {known}. "
            "A status sent by the service that this version does not know is kept by "
            "ResearchStatus.from_api()"
        )

    @classmethod
    def from_api(cls, value: str) -> ResearchStatus:
        """The status for a string the service sent; one this version does not know is kept.

        Raises ``ValueError`` only for something that is not a non-empty string.
        """
        if not isinstance(value, str) or not value:
            raise ValueError(f"a research status is a non-empty string, got {value!r}")
        member = cls._value2member_map_.get(value)
        if member is not None:
            return member  # type: ignore[return-value] - the map holds members of cls
        member = str.__new__(cls, value)
        member._name_ = value
        member._value_ = value
        return member

    @property
    def is_terminal(self) -> bool:
        """True for COMPLETED, FAILED and STOPPED: the status will not change again."""
        return self in _TERMINAL

    @property
    def is_running(self) -> bool:
        """True for PENDING and PROCESSING: the research can still be stopped."""
        return self in _RUNNING

    @property
    def is_known(self) -> bool:
        """False for a status string this version of the library does not know."""
        return self._name_ in type(self).__members__

    def __str__(self) -> str:
        return self.value

    def __repr__(self) -> str:
        if self.is_known:
            return f"<ResearchStatus.{self._name_}>"
        return f"<ResearchStatus {self.value!r} (unknown)>"


_TERMINAL = frozenset({ResearchStatus.COMPLETED, ResearchStatus.FAILED, ResearchStatus.STOPPED})
_RUNNING = frozenset({ResearchStatus.PENDING, ResearchStatus.PROCESSING})


@attrs.frozen(kw_only=True)
class CreatedConversation:
    """A research the service has accepted (the answer to Create Conversation)."""

    request_id: str
    status: ResearchStatus
    created_at: datetime


@attrs.frozen(kw_only=True)
class ConversationInfo:
    """The state of a research (the answer to Check Status)."""

    request_id: str
    status: ResearchStatus
    prompt: str | None = None
    structured_output: bool = False
    output_schema: dict[str, Any] | None = None
    conversation_id: str | None = None
    created_at: datetime | None = None
    started_at: datetime | None = None
    completed_at: datetime | None = None
    error_message: str | None = None
    metadata: dict[str, Any] | None = None


@attrs.frozen(kw_only=True)
class ConversationOutput:
    """The result of a completed research: Markdown text, or a JSON object."""

    conversation_id: str | None
    status: ResearchStatus
    output: str | dict[str, Any]

    @property
    def is_structured(self) -> bool:
        """True when the output is a JSON object (structured output was requested)."""
        return isinstance(self.output, dict)


@attrs.frozen(kw_only=True)
class StopResult:
    """The answer to Stop Conversation, or the real final status of an ended research."""

    request_id: str
    status: ResearchStatus
    message: str = ""


@attrs.frozen(kw_only=True)
class ResearchResult:
    """A completed research: its final status and its output."""

    info: ConversationInfo
    output: ConversationOutput

    @property
    def request_id(self) -> str:
        """The request id of the research."""
        return self.info.request_id

    @property
    def text(self) -> str | dict[str, Any]:
        """The output: Markdown text (a ``str``), or a ``dict`` for structured output."""
        return self.output.output
