from __future__ import annotations

import pytest

from fay_async import (
    ConversationInfo,
    ConversationOutput,
    ResearchResult,
    ResearchStatus,
)


@pytest.mark.parametrize(
    ("status", "terminal", "running"),
    [
        (ResearchStatus.PENDING, False, True),
        (ResearchStatus.PROCESSING, False, True),
        (ResearchStatus.COMPLETED, True, False),
        (ResearchStatus.FAILED, True, False),
        (ResearchStatus.STOPPED, True, False),
    ],
)
def test_known_statuses(status: ResearchStatus, terminal: bool, running: bool) -> None:
    assert status.is_terminal is terminal
    assert status.is_running is running
    assert status.is_known
    assert str(status) == status.value
    assert repr(status) == f"<ResearchStatus.{status.value}>"
    assert ResearchStatus(status.value) is status


def test_unknown_status_is_kept_raw_and_not_terminal() -> None:
    status = ResearchStatus.from_api("QUEUED_FOR_REVIEW")
    assert status == "QUEUED_FOR_REVIEW"
    assert status.value == "QUEUED_FOR_REVIEW"
    assert not status.is_terminal
    assert not status.is_running
    assert not status.is_known
    assert "unknown" in repr(status)
    assert hash(status) == hash(ResearchStatus.from_api("QUEUED_FOR_REVIEW"))
    assert ResearchStatus.from_api("COMPLETED") is ResearchStatus.COMPLETED


@pytest.mark.parametrize("value", ["", 3, None])
def test_status_refuses_non_strings(value: object) -> None:
    with pytest.raises(ValueError, match="is not a valid ResearchStatus"):
        ResearchStatus(value)
    with pytest.raises(ValueError, match="a research status is a non-empty string"):
        ResearchStatus.from_api(value)  # type: ignore[arg-type]


def test_a_typo_in_code_is_refused_with_the_known_statuses() -> None:
    with pytest.raises(ValueError, match="is not a valid ResearchStatus") as caught:
        ResearchStatus("COMPLETE")
    message = str(caught.value)
    assert "did you mean 'COMPLETED'?" in message
    assert "PENDING, PROCESSING, COMPLETED, FAILED, STOPPED" in message
    assert "from_api" in message
    with pytest.raises(ValueError, match="did you mean 'FAILED'"):
        ResearchStatus("failed")


def test_research_result_shortcuts() -> None:
    info = ConversationInfo(request_id="r1", status=ResearchStatus.COMPLETED)
    output = ConversationOutput(
        conversation_id="c" * 24, status=ResearchStatus.COMPLETED, output={"a": 1}
    )
    result = ResearchResult(info=info, output=output)
    assert result.request_id == "r1"
    assert result.text == {"a": 1}
    assert output.is_structured
    assert not ConversationOutput(
        conversation_id=None, status=ResearchStatus.COMPLETED, output="# hi"
    ).is_structured


def test_models_are_frozen() -> None:
    info = ConversationInfo(request_id="r1", status=ResearchStatus.PENDING)
    with pytest.raises(AttributeError):
        info.status = ResearchStatus.COMPLETED  # type: ignore[misc]
