"""The envelope, the documented examples and every way a body can be wrong."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

import pytest

from fay_async import (
    ConversationInfo,
    ConversationOutput,
    CreatedConversation,
    CreateRequest,
    ResearchStatus,
    StopResult,
    exceptions,
)
from fay_async import _wire as wire

from . import _docs as docs


def parse(body: Any, model: type[Any], status: int = 200) -> Any:
    content = json.dumps(body).encode() if not isinstance(body, bytes) else body
    data = wire.decode_envelope(status, content)
    return wire.structure(status, data, model, content)


def test_created_example_parses() -> None:
    created = parse(docs.CREATED, CreatedConversation)
    assert created == CreatedConversation(
        request_id=docs.REQUEST_ID,
        status=ResearchStatus.PENDING,
        created_at=datetime(2025, 6, 23, 12, 48, 43, 31000, tzinfo=timezone.utc),
    )


def test_status_examples_parse_every_field() -> None:
    pending = parse(docs.STATUS_PENDING, ConversationInfo)
    assert pending.status is ResearchStatus.PENDING
    assert pending.prompt == "What changed in EU battery regulation in 2025?"
    assert pending.conversation_id == docs.CONVERSATION_ID
    assert pending.structured_output is False
    assert pending.started_at is None
    assert pending.completed_at is None
    assert pending.metadata is None
    done = parse(docs.STATUS_COMPLETED, ConversationInfo)
    assert done.status is ResearchStatus.COMPLETED
    assert done.started_at == datetime(2025, 6, 23, 12, 49, 33, 512000, tzinfo=timezone.utc)
    assert done.completed_at is not None
    assert done.completed_at.utcoffset() is not None
    assert done.metadata == {"sources": 12}
    failed = parse(docs.STATUS_FAILED, ConversationInfo)
    assert failed.error_message == "Research agent crashed"


def test_output_examples_parse() -> None:
    markdown = parse(docs.OUTPUT_MARKDOWN, ConversationOutput)
    assert isinstance(markdown.output, str)
    assert markdown.output.startswith("# EU battery regulation")
    structured = parse(docs.OUTPUT_STRUCTURED, ConversationOutput)
    assert structured.output == {"title": "EU battery regulation", "changes": ["a", "b", "c"]}


def test_stop_example_parses() -> None:
    stopped = parse(docs.STOPPED, StopResult)
    assert stopped == StopResult(
        request_id=docs.REQUEST_ID,
        status=ResearchStatus.STOPPED,
        message="Conversation stopped successfully",
    )


def test_unknown_keys_are_ignored_and_unknown_status_kept() -> None:
    body = docs.ok({**docs.STATUS_PENDING["data"], "status": "ARCHIVED", "new_field": [1, 2]})
    info = parse(body, ConversationInfo)
    assert info.status == "ARCHIVED"
    assert not info.status.is_terminal


@pytest.mark.parametrize(
    ("text", "micro"),
    [
        ("2025-06-23T12:48:43.03+00:00", 30000),
        ("2025-06-23T12:48:43.1Z", 100000),
        ("2025-06-23T12:48:43.123456789+00:00", 123456),
        ("2025-06-23T12:48:43.5", 500000),
    ],
)
def test_timestamps_with_any_fraction(text: str, micro: int) -> None:
    body = docs.ok({**docs.CREATED["data"], "created_at": text})
    assert parse(body, CreatedConversation).created_at.microsecond == micro


def test_timestamps_with_z_suffix() -> None:
    body = docs.ok({**docs.CREATED["data"], "created_at": "2025-06-23T12:48:43Z"})
    assert parse(body, CreatedConversation).created_at == datetime(
        2025, 6, 23, 12, 48, 43, tzinfo=timezone.utc
    )


@pytest.mark.parametrize(
    ("field", "value", "model", "base"),
    [
        ("request_id", 42, CreatedConversation, docs.CREATED),
        ("status", 1, CreatedConversation, docs.CREATED),
        ("status", "", CreatedConversation, docs.CREATED),
        ("created_at", "yesterday", CreatedConversation, docs.CREATED),
        ("created_at", 1719146923, CreatedConversation, docs.CREATED),
        ("structured_output", "no", ConversationInfo, docs.STATUS_PENDING),
        ("metadata", [1, 2], ConversationInfo, docs.STATUS_PENDING),
        ("prompt", True, ConversationInfo, docs.STATUS_PENDING),
        ("output", 3.5, ConversationOutput, docs.OUTPUT_MARKDOWN),
        ("output", None, ConversationOutput, docs.OUTPUT_MARKDOWN),
        ("message", None, StopResult, docs.STOPPED),
    ],
)
def test_a_documented_field_of_the_wrong_type(
    field: str, value: object, model: type[Any], base: dict[str, Any]
) -> None:
    body = docs.ok({**base["data"], field: value})
    with pytest.raises(exceptions.UnexpectedResponseError) as info:
        parse(body, model)
    assert info.value.status_code == 200
    assert model.__name__ in str(info.value)
    assert field in str(info.value)


def test_a_missing_required_field() -> None:
    body = docs.ok({"status": "PENDING", "created_at": "2025-06-23T12:48:43+00:00"})
    with pytest.raises(exceptions.UnexpectedResponseError, match="request_id"):
        parse(body, CreatedConversation)


@pytest.mark.parametrize(
    ("body", "cls", "code"),
    [
        (docs.VALIDATION, exceptions.RequestValidationError, "VALIDATION_ERROR"),
        (
            docs.ALREADY_COMPLETED,
            exceptions.ConversationAlreadyCompletedError,
            "CONVERSATION_ALREADY_COMPLETED",
        ),
        (docs.NOT_COMPLETED, exceptions.ResearchNotCompletedError, "RESEARCH_NOT_COMPLETED"),
        (docs.INVALID_KEY, exceptions.AuthenticationError, "INVALID_API_KEY"),
        (docs.NOT_FOUND, exceptions.NotFoundError, "REQUEST_NOT_FOUND"),
        (docs.RATE_LIMITED, exceptions.RateLimitError, "RATE_LIMIT_EXCEEDED"),
    ],
)
def test_documented_error_codes(body: dict[str, Any], cls: type[Exception], code: str) -> None:
    status = {"INVALID_API_KEY": 401, "REQUEST_NOT_FOUND": 404, "RATE_LIMIT_EXCEEDED": 429}
    http = status.get(code, 400)
    error = wire.error_from_response(http, json.dumps(body).encode())
    assert type(error) is cls
    assert error.code == code
    assert error.message == body["error"]["message"]
    assert error.api_version == "1.0.24"
    assert error.status_code == http
    assert error.body == body


@pytest.mark.parametrize(
    ("http", "cls"),
    [
        (400, exceptions.BadRequestError),
        (401, exceptions.AuthenticationError),
        (403, exceptions.AuthenticationError),
        (404, exceptions.NotFoundError),
        (409, exceptions.APIError),
        (429, exceptions.RateLimitError),
        (500, exceptions.ServerError),
        (503, exceptions.ServerError),
    ],
)
def test_unknown_codes_map_by_http_status(http: int, cls: type[Exception]) -> None:
    body = docs.err("SOMETHING_NEW", "A new kind of failure")
    error = wire.error_from_response(http, json.dumps(body).encode())
    assert type(error) is cls
    assert error.code == "SOMETHING_NEW"
    assert error.message == "A new kind of failure"


def test_error_envelope_without_code_or_message() -> None:
    body = {"status": False, "version": "1.0.24", "error": {}}
    error = wire.error_from_response(400, json.dumps(body).encode())
    assert type(error) is exceptions.BadRequestError
    assert error.code is None
    assert error.message == "no message given"


NOT_ENVELOPES = [
    pytest.param(b"<html><body><h1>502 Bad Gateway</h1></body></html>", id="html"),
    pytest.param(b"", id="empty"),
    pytest.param(b'{"status": true, "version": "1.0.24", "data": {"request', id="truncated"),
    pytest.param(b'{"status": true, "version": "1.0.24"}', id="no-data"),
    pytest.param(b'{"status": true, "data": []}', id="data-not-object"),
    pytest.param(b"[1, 2, 3]", id="list"),
    pytest.param(b'{"status": "ok", "data": {}}', id="status-not-bool"),
    pytest.param(b'{"status": false, "error": "boom"}', id="error-not-object"),
    pytest.param(b"\xff\xfe\x00garbage", id="not-utf8"),
    pytest.param(b"[" * 100_000 + b"]" * 100_000, id="deeply-nested"),
]


@pytest.mark.parametrize("content", NOT_ENVELOPES)
def test_bodies_that_are_not_the_envelope(content: bytes) -> None:
    with pytest.raises(exceptions.UnexpectedResponseError) as info:
        wire.decode_envelope(200, content)
    error = info.value
    assert error.status_code == 200
    assert "unexpected response from the Fay API" in str(error)
    assert len(str(error)) < 500


@pytest.mark.parametrize("content", NOT_ENVELOPES)
def test_error_statuses_with_bodies_that_are_not_the_envelope(content: bytes) -> None:
    error = wire.error_from_response(502, content)
    assert isinstance(error, exceptions.ServerError)
    assert error.status_code == 502
    assert len(str(error)) < 500
    error = wire.error_from_response(418, content)
    assert isinstance(error, exceptions.UnexpectedResponseError)
    assert error.status_code == 418


def test_snippet_shows_the_start_of_an_html_page() -> None:
    page = b"<html>\n<head><title>502 Bad Gateway</title></head>\n" + b"x" * 1000
    error = wire.error_from_response(502, page)
    assert "502 Bad Gateway" in str(error)
    assert str(error).endswith("...'")


def test_a_success_envelope_with_an_error_status() -> None:
    with pytest.raises(exceptions.UnexpectedResponseError, match="HTTP 500"):
        wire.decode_envelope(500, json.dumps(docs.CREATED).encode())


def test_an_error_envelope_with_a_200_status() -> None:
    with pytest.raises(exceptions.NotFoundError):
        wire.decode_envelope(200, json.dumps(docs.NOT_FOUND).encode())


def test_create_body() -> None:
    assert wire.create_body(CreateRequest(prompt="p")) == {
        "prompt": "p",
        "structured_output": False,
    }
    assert wire.create_body(
        CreateRequest(prompt="p", structured_output=True, output_schema={"type": "object"})
    ) == {
        "prompt": "p",
        "structured_output": True,
        "output_schema": {"type": "object"},
    }


def test_a_json_true_is_a_bool_field_and_never_a_number() -> None:
    info = parse(
        docs.ok({**docs.STATUS_PENDING["data"], "structured_output": True}), ConversationInfo
    )
    assert info.structured_output is True


def test_an_excerpt_of_an_unexpected_body_is_its_body_and_in_its_message() -> None:
    content = b'{"status": "ok",\n  "data": {}}'
    with pytest.raises(exceptions.UnexpectedResponseError) as info:
        wire.decode_envelope(200, content)
    assert info.value.body == '{"status": "ok", "data": {}}'
    assert str(info.value) == (
        "HTTP 200: unexpected response from the Fay API: the body is not the Fay envelope; "
        """body: '{"status": "ok", "data": {}}'"""
    )


def test_an_empty_unexpected_body_is_said_to_be_empty() -> None:
    error = wire.error_from_response(418, b"")
    assert error.body == ""
    assert str(error) == (
        "HTTP 418: unexpected response from the Fay API: HTTP 418 without an error envelope; "
        "the body is empty"
    )


def test_the_excerpt_is_cut_only_past_its_length() -> None:
    exact = "x" * wire.SNIPPET_LENGTH
    assert wire.snippet(exact.encode()) == exact
    assert wire.snippet(exact + "y") == exact + "..."


def test_bytes_that_are_not_utf8_are_replaced_in_the_excerpt() -> None:
    assert wire.snippet(b"caf\xc3\xa9 \xff!") == "caf\u00e9 \ufffd!"


def test_a_plain_http_500_is_a_server_error_with_the_body() -> None:
    error = wire.error_from_response(500, b"<h1>Internal\n Server Error</h1>")
    assert type(error) is exceptions.ServerError
    assert error.status_code == 500
    assert error.body == "<h1>Internal Server Error</h1>"
    assert str(error) == (
        "HTTP 500: the Fay API failed with HTTP 500; body: '<h1>Internal Server Error</h1>'"
    )


def test_an_error_envelope_without_an_error_object() -> None:
    content = json.dumps({"status": False, "version": "1.0.24"}).encode()
    with pytest.raises(exceptions.UnexpectedResponseError) as info:
        wire.decode_envelope(400, content)
    assert info.value.status_code == 400
    assert "an error envelope without an 'error' object" in str(info.value)
    assert info.value.body == content.decode()


def test_a_success_envelope_with_http_300_is_not_a_success() -> None:
    with pytest.raises(exceptions.UnexpectedResponseError, match="HTTP 300"):
        wire.decode_envelope(300, json.dumps(docs.CREATED).encode())
    assert wire.decode_envelope(299, json.dumps(docs.CREATED).encode()) == docs.CREATED["data"]


def test_a_true_status_that_carries_an_error_is_that_error() -> None:
    body = {**docs.NOT_FOUND, "status": True}
    with pytest.raises(exceptions.NotFoundError):
        wire.decode_envelope(200, json.dumps(body).encode())


@pytest.mark.parametrize("bad", [123, None, ["CODE"]])
def test_error_envelope_fields_that_are_not_strings_are_dropped(bad: object) -> None:
    body = {"status": False, "version": bad, "error": {"code": bad, "message": bad}}
    error = wire.error_from_response(404, json.dumps(body).encode())
    assert type(error) is exceptions.NotFoundError
    assert error.code is None
    assert error.message == "no message given"
    assert error.api_version is None


def test_timestamps_with_a_lower_case_z_suffix() -> None:
    body = docs.ok({**docs.CREATED["data"], "created_at": "2025-06-23T12:48:43.25z"})
    assert parse(body, CreatedConversation).created_at == datetime(
        2025, 6, 23, 12, 48, 43, 250000, tzinfo=timezone.utc
    )
