"""The values the API returns: frozen attrs classes, pure data, no JSON knowledge."""

from __future__ import annotations

import difflib
import enum
import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any, cast

import attrs

from ._jsonable import JSONValue

__all__ = [
    "ConversationInfo",
    "ConversationOutput",
    "CreateRequest",
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
        known = cls._value2member_map_.get(value)
        if known is not None:
            return cast("ResearchStatus", known)
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


def _unencodable(error: UnicodeEncodeError) -> str:
    char = error.object[error.start : error.start + 1]
    return (
        f"it contains the lone surrogate {char!r}, the trace of bytes that were not UTF-8 "
        "(read the text with its real encoding)"
    )


def _check_prompt(_instance: object, _attribute: object, prompt: Any) -> None:
    if not isinstance(prompt, str):
        raise TypeError(f"prompt must be a string, got {type(prompt).__name__}")
    if not prompt.strip():
        raise ValueError("prompt is empty; give the research question as text")
    try:
        prompt.encode("utf-8")
    except UnicodeEncodeError as error:
        raise ValueError(
            f"prompt is not valid Unicode text: {_unencodable(error)}, at position {error.start}"
        ) from None


def _check_structured(_instance: object, _attribute: object, value: Any) -> None:
    if not isinstance(value, bool):
        raise TypeError(f"structured_output must be True or False, got {type(value).__name__}")


def _plain_schema(schema: object, structured_output: bool) -> dict[str, Any]:
    """A private, JSON-plain copy of ``schema``: later changes to the caller's object
    cannot change what is sent."""
    if not isinstance(schema, Mapping):
        raise TypeError(
            f"output_schema must be a JSON-schema object (a mapping), got {type(schema).__name__}"
        )
    if not structured_output:
        raise ValueError("output_schema is only used with structured_output=True")
    try:
        text = json.dumps(schema, allow_nan=False, ensure_ascii=False)
    except (TypeError, ValueError) as error:
        raise TypeError(f"output_schema is not JSON-serialisable: {error}") from None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        raise ValueError(
            f"output_schema is not valid Unicode text: {_unencodable(error)}"
        ) from None
    plain: dict[str, Any] = json.loads(text)
    return plain


@attrs.frozen(kw_only=True)
class CreateRequest(JSONValue):
    """What a create sends: a prompt, and optionally a JSON schema for structured output.

    Checked once, when it is made: a prompt that is not a non-empty string of valid
    Unicode text, a ``structured_output`` that is not a bool, an ``output_schema`` that is
    not a JSON-serialisable mapping, or one given without ``structured_output=True``
    raise ``TypeError`` or ``ValueError`` naming the argument, before anything is sent.
    """

    prompt: str = attrs.field(validator=_check_prompt)
    structured_output: bool = attrs.field(default=False, validator=_check_structured)
    output_schema: Mapping[str, Any] | None = None

    def __attrs_post_init__(self) -> None:
        if self.output_schema is not None:
            plain = _plain_schema(self.output_schema, self.structured_output)
            object.__setattr__(self, "output_schema", plain)


@attrs.frozen(kw_only=True)
class CreatedConversation(JSONValue):
    """A research the service has accepted (the answer to Create Conversation)."""

    request_id: str
    status: ResearchStatus
    created_at: datetime


@attrs.frozen(kw_only=True)
class ConversationInfo(JSONValue):
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
class ConversationOutput(JSONValue):
    """The result of a completed research: Markdown text, or a JSON object."""

    conversation_id: str | None
    status: ResearchStatus
    output: str | dict[str, Any]

    @property
    def is_structured(self) -> bool:
        """True when the output is a JSON object (structured output was requested)."""
        return isinstance(self.output, dict)


@attrs.frozen(kw_only=True)
class StopResult(JSONValue):
    """The answer to Stop Conversation, or the real final status of an ended research."""

    request_id: str
    status: ResearchStatus
    message: str = ""


@attrs.frozen(kw_only=True)
class ResearchResult(JSONValue):
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
