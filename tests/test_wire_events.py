"""The wire format of webhook events' data, and the timestamp rules every model shares."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from fay_async import ConversationInfo, ResearchStatus
from fay_async import _wire as wire

UTC = timezone.utc


def test_event_info_reads_every_status_field() -> None:
    info = wire.structure_event_info(
        {
            "request_id": "req-1",
            "status": "COMPLETED",
            "conversation_id": "conv-1",
            "created_at": "2025-06-23T12:48:43Z",
            "started_at": "2025-06-23T12:48:44.5+00:00",
            "completed_at": "2025-06-23T12:50:00.123456+02:00",
            "error_message": "none",
            "unknown": [1, 2],
        }
    )
    assert info == ConversationInfo(
        request_id="req-1",
        status=ResearchStatus.COMPLETED,
        conversation_id="conv-1",
        created_at=datetime(2025, 6, 23, 12, 48, 43, tzinfo=UTC),
        started_at=datetime(2025, 6, 23, 12, 48, 44, 500000, tzinfo=UTC),
        completed_at=datetime(2025, 6, 23, 12, 50, 0, 123456, tzinfo=timezone(timedelta(hours=2))),
        error_message="none",
    )


def test_event_info_leaves_what_the_event_leaves_out_at_its_default() -> None:
    info = wire.structure_event_info({"request_id": "req-1", "status": "PENDING"})
    assert info == ConversationInfo(request_id="req-1", status=ResearchStatus.PENDING)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"status": "PENDING"}, "required field missing @ data.request_id"),
        ({"request_id": "req-1"}, "required field missing @ data.status"),
        ({"request_id": 7, "status": "PENDING"}, "@ data.request_id"),
        ({"request_id": "req-1", "status": ""}, "@ data.status"),
        ({"request_id": "req-1", "status": 3}, "@ data.status"),
        ({"request_id": "r", "status": "PENDING", "created_at": "soon"}, "@ data.created_at"),
        ({"request_id": "r", "status": "PENDING", "created_at": 1719146923}, "@ data.created_at"),
        ({"request_id": "r", "status": "PENDING", "metadata": [1]}, "@ data.metadata"),
        (
            {"request_id": "r", "status": "PENDING", "structured_output": 1},
            "@ data.structured_output",
        ),
    ],
)
def test_event_info_says_which_field_is_wrong(data: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match="@ data\\.") as info:
        wire.structure_event_info(data)
    assert message in str(info.value)
    assert isinstance(info.value.__cause__, Exception)


def test_event_info_names_the_field_of_a_wrong_type() -> None:
    with pytest.raises(ValueError) as info:
        wire.structure_event_info({"request_id": 7, "status": "PENDING"})
    assert str(info.value) == "invalid value for type, expected str @ data.request_id"


def test_event_info_of_data_that_is_not_an_object() -> None:
    with pytest.raises(ValueError) as info:
        wire.structure_event_info(["request_id"])  # type: ignore[arg-type]
    assert str(info.value)


def test_why_words_an_error_that_is_not_from_cattrs_by_its_text() -> None:
    assert wire._why(KeyError("x"), "data") == "'x'"
    assert wire._why(ValueError("bad value"), "data") == "bad value"


@pytest.mark.parametrize("output", ["# Report", "", {"answer": 42}, {}])
def test_event_output_is_the_text_or_object(output: object) -> None:
    assert wire.structure_event_output({"output": output, "status": "COMPLETED"}) == output


def test_event_output_missing() -> None:
    with pytest.raises(ValueError) as info:
        wire.structure_event_output({"status": "COMPLETED"})
    assert str(info.value) == "required field missing @ data.output"


@pytest.mark.parametrize(
    ("output", "kind"), [(None, "NoneType"), ([1], "list"), (3.5, "float"), (True, "bool")]
)
def test_event_output_of_another_type(output: object, kind: str) -> None:
    with pytest.raises(ValueError) as info:
        wire.structure_event_output({"output": output})
    assert str(info.value) == f"expected a string or a JSON object, got {kind} @ data.output"


# The timestamp hook, directly: the API's own forms and what is refused.


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2025-06-23T12:48:43Z", datetime(2025, 6, 23, 12, 48, 43, tzinfo=UTC)),
        ("2025-06-23T12:48:43z", datetime(2025, 6, 23, 12, 48, 43, tzinfo=UTC)),
        ("2025-06-23T12:48:43.25Z", datetime(2025, 6, 23, 12, 48, 43, 250000, tzinfo=UTC)),
        ("2025-06-23T12:48:43+00:00", datetime(2025, 6, 23, 12, 48, 43, tzinfo=UTC)),
        (
            "2025-06-23T12:48:43.1234567-05:30",
            datetime(2025, 6, 23, 12, 48, 43, 123456, tzinfo=timezone(-timedelta(hours=5.5))),
        ),
        (
            "2025-06-23T12:48:43.7",
            datetime(2025, 6, 23, 12, 48, 43, 700000, tzinfo=UTC).replace(tzinfo=None),
        ),
        ("2025-06-23T12:48:43", datetime(2025, 6, 23, 12, 48, 43, tzinfo=UTC).replace(tzinfo=None)),
        ("2025-06-23T12:48:43.000001Z", datetime(2025, 6, 23, 12, 48, 43, 1, tzinfo=UTC)),
    ],
)
def test_timestamps(text: str, expected: datetime) -> None:
    parsed = wire._structure_datetime(text, datetime)
    assert parsed == expected
    assert parsed.tzinfo == expected.tzinfo  # naive stays naive, aware keeps its offset


def test_only_the_first_fraction_is_padded() -> None:
    # A second fraction-like run would be a malformed time, and stays refused.
    with pytest.raises(ValueError):
        wire._structure_datetime("2025-06-23T12:48:43.1.2", datetime)


def test_a_z_only_at_the_end_means_utc() -> None:
    with pytest.raises(ValueError):
        wire._structure_datetime("Z2025-06-23T12:48:43", datetime)


@pytest.mark.parametrize("value", [1719146923, 1719146923.5, None, b"2025-06-23", ["x"]])
def test_timestamps_that_are_not_strings(value: object) -> None:
    with pytest.raises(TypeError):
        wire._structure_datetime(value, datetime)


@pytest.mark.parametrize("text", ["yesterday", "", "Z", "2025-13-01T00:00:00Z"])
def test_timestamps_that_are_not_iso(text: str) -> None:
    with pytest.raises(ValueError):
        wire._structure_datetime(text, datetime)


# The other hooks, directly.


@pytest.mark.parametrize(
    ("value", "kind"), [("a", str), ("", str), (True, bool), (False, bool), (0, int), (5, int)]
)
def test_strict_values_of_their_type_pass(value: object, kind: type[Any]) -> None:
    assert wire._structure_strict(value, kind) is value


@pytest.mark.parametrize(
    ("value", "kind"), [(1, bool), (0, bool), (True, int), (False, int), ("1", int), (1.0, int)]
)
def test_strict_values_of_another_type_fail(value: object, kind: type[Any]) -> None:
    with pytest.raises(TypeError):
        wire._structure_strict(value, kind)


def test_status_hook() -> None:
    assert wire._structure_status("PROCESSING", ResearchStatus) is ResearchStatus.PROCESSING
    for bad in ("", None, 1):
        with pytest.raises(TypeError):
            wire._structure_status(bad, ResearchStatus)


def test_object_and_output_hooks() -> None:
    assert wire._structure_object({"a": 1}, dict) == {"a": 1}
    with pytest.raises(TypeError):
        wire._structure_object([("a", 1)], dict)
    assert wire._structure_output("text", str) == "text"
    assert wire._structure_output({"a": 1}, dict) == {"a": 1}
    with pytest.raises(TypeError):
        wire._structure_output(None, str)


def test_event_info_names_every_wrong_field() -> None:
    with pytest.raises(ValueError) as info:
        wire.structure_event_info({"request_id": 7, "status": "PENDING", "prompt": 1})
    assert sorted(str(info.value).split("; ")) == [
        "invalid value for type, expected str @ data.request_id",
        "invalid value for type, expected str | None @ data.prompt",
    ]
