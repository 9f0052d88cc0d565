"""The exact wording of the errors the wire format raises, and Python 3.10's timestamps."""

from __future__ import annotations

import json

import pytest

from fay_async import CreatedConversation, exceptions
from fay_async import _wire as wire

from . import _docs as docs


def _decode_error(status: int, content: bytes) -> exceptions.UnexpectedResponseError:
    with pytest.raises(exceptions.UnexpectedResponseError) as info:
        wire.decode_envelope(status, content)
    assert info.value.status_code == status
    return info.value


def test_a_body_that_is_not_json() -> None:
    error = _decode_error(200, b"<html>")
    assert str(error) == (
        "HTTP 200: unexpected response from the Fay API: the body is not JSON; body: '<html>'"
    )
    assert error.__cause__ is None


def test_an_envelope_without_data() -> None:
    error = _decode_error(200, b'{"status": true, "data": [1]}')
    assert str(error) == (
        "HTTP 200: unexpected response from the Fay API: the envelope has no 'data' object; "
        """body: '{"status": true, "data": [1]}'"""
    )


def test_a_success_envelope_with_another_status() -> None:
    error = _decode_error(302, b'{"status": true, "data": {}}')
    assert str(error) == (
        "HTTP 302: unexpected response from the Fay API: a success envelope came with HTTP 302; "
        """body: '{"status": true, "data": {}}'"""
    )


def test_an_error_envelope_without_an_error_object_word_for_word() -> None:
    content = b'{"status": false}'
    error = wire.error_from_envelope(409, {"status": False}, content)
    assert type(error) is exceptions.UnexpectedResponseError
    assert error.status_code == 409
    assert str(error) == (
        "HTTP 409: unexpected response from the Fay API: an error envelope without an 'error' "
        """object; body: '{"status": false}'"""
    )


@pytest.mark.parametrize("status", [200, 404, 418])
def test_an_error_envelope_keeps_the_http_status(status: int) -> None:
    error = wire.error_from_envelope(status, docs.NOT_FOUND, json.dumps(docs.NOT_FOUND).encode())
    assert isinstance(error, exceptions.NotFoundError)
    assert error.status_code == status
    with pytest.raises(exceptions.NotFoundError) as info:
        wire.decode_envelope(status, json.dumps(docs.NOT_FOUND).encode())
    assert info.value.status_code == status


def test_every_wrong_field_is_named_with_the_model() -> None:
    data = {**docs.CREATED["data"], "request_id": 42, "created_at": "yesterday"}
    content = json.dumps(docs.ok(data)).encode()
    with pytest.raises(exceptions.UnexpectedResponseError) as info:
        wire.structure(200, data, CreatedConversation, content)
    message = str(info.value)
    prefix = (
        "HTTP 200: unexpected response from the Fay API: the CreatedConversation data does not "
        "match the documented fields: "
    )
    assert message.startswith(prefix)
    why = message.removeprefix(prefix).split("; body: ")[0]
    assert sorted(why.split("; ")) == [
        "invalid value for type, expected datetime @ CreatedConversation.created_at",
        "invalid value for type, expected str @ CreatedConversation.request_id",
    ]


@pytest.mark.parametrize(
    ("text", "iso"),
    [
        ("2025-06-23T12:48:43Z", "2025-06-23T12:48:43+00:00"),
        ("2025-06-23T12:48:43z", "2025-06-23T12:48:43+00:00"),
        ("2025-06-23T12:48:43.1Z", "2025-06-23T12:48:43.100000+00:00"),
        ("2025-06-23T12:48:43.1234567Z", "2025-06-23T12:48:43.123456+00:00"),
        ("2025-06-23T12:48:43.123456789-0530", "2025-06-23T12:48:43.123456-0530"),
        ("2025-06-23T12:48:43.12+02:00", "2025-06-23T12:48:43.120000+02:00"),
        ("2025-06-23T12:48:43.123456", "2025-06-23T12:48:43.123456"),
        ("2025-06-23T12:48:43", "2025-06-23T12:48:43"),
        ("2025-06-23T12:48:43+00:00", "2025-06-23T12:48:43+00:00"),
        # Only a fraction at the end (or before the offset there) is one.
        ("2025-06-23T12:48:43.1.2", "2025-06-23T12:48:43.1.200000"),
    ],
)
def test_timestamps_in_the_form_python_3_10_reads(text: str, iso: str) -> None:
    assert wire._iso_text(text) == iso
