"""Webhook bodies: the signature over the raw bytes, and the event those bytes carry.

Fay signs the request body exactly as sent: ``X-Fay-Signature: sha256=<hex>`` is the
HMAC-SHA256 of those bytes with the webhook secret. Only those bytes can be checked: a
body decoded and serialised again (the documentation's Express example signs
``JSON.stringify(req.body)``) differs in spacing or key order and fails, so nothing here
accepts anything but ``bytes``.

The envelope (``id``, ``type``, ``created``, ``data``) is the webhook's own format and is
read here; the research fields inside ``data`` are Check Status fields, read by the wire
converter like the REST answers.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any, Final, Literal

import attrs

from . import _wire
from ._config import WEBHOOK_SECRET_ENV
from ._models import ConversationInfo, ResearchStatus
from .exceptions import ConfigurationError, WebhookPayloadError, WebhookVerificationError

__all__ = [
    "KNOWN_TYPES",
    "SIGNATURE_HEADER",
    "WebhookEvent",
    "check_digest",
    "decode_event",
    "raw_body",
    "resolve_secret",
    "secret_key",
    "signature_digest",
]

SIGNATURE_HEADER: Final = "X-Fay-Signature"
#: The event types the documentation describes; any other type is kept as it came.
KNOWN_TYPES: Final = ("Status", "Output", "Error")

_HEX_DIGEST: Final = re.compile(r"[0-9a-fA-F]{64}")
_HOW_TO_SET: Final = (
    f"pass secret=... or set {WEBHOOK_SECRET_ENV} to the secret the Fay dashboard showed "
    "when the webhook was registered"
)


@attrs.frozen(kw_only=True)
class WebhookEvent:
    """One event Fay pushed: a research's new status, its output, or its failure.

    ``type`` is ``"Status"``, ``"Output"``, ``"Error"``, or any other string as it came
    (the dashboard's test event): an unknown type is not an error. ``info`` holds the
    research fields of ``data`` (None when an event of an unknown type has none);
    ``data`` is the event's ``data`` object as received.
    """

    id: str
    type: str
    #: When Fay created the event (``created``, unix seconds), in UTC.
    created: datetime
    request_id: str | None = None
    status: ResearchStatus | None = None
    #: Output events: Markdown text, or a JSON object for structured output.
    output: str | dict[str, Any] | None = attrs.field(default=None, repr=False)
    #: Error events: why the research failed.
    error_message: str | None = None
    info: ConversationInfo | None = attrs.field(default=None, repr=False)
    data: Mapping[str, Any] = attrs.field(factory=dict, repr=False)

    @property
    def is_known_type(self) -> bool:
        """True for the documented types: Status, Output and Error."""
        return self.type in KNOWN_TYPES


def resolve_secret(secret: str | bytes | None) -> bytes:
    """The secret as bytes; None reads ``FAY_WEBHOOK_SECRET``. Never quoted in an error."""
    if secret is None:
        secret = os.environ.get(WEBHOOK_SECRET_ENV) or None
        if secret is None:
            raise ConfigurationError(f"no webhook secret: {_HOW_TO_SET}")
    return secret_key(secret)


def secret_key(secret: object) -> bytes:
    """``secret`` (str or bytes, not empty) as the HMAC key."""
    if isinstance(secret, str):
        key = secret.encode("utf-8")
    elif isinstance(secret, (bytes, bytearray)):
        key = bytes(secret)
    else:
        raise TypeError(f"the webhook secret must be str or bytes, got {type(secret).__name__}")
    if not key:
        raise ConfigurationError(f"the webhook secret is empty: {_HOW_TO_SET}")
    return key


def raw_body(payload: object) -> bytes:
    """``payload`` if it is the raw body (bytes-like); anything decoded is refused."""
    if isinstance(payload, (bytes, bytearray, memoryview)):
        return bytes(payload)
    raise TypeError(
        f"the webhook payload must be the raw request body as bytes, got "
        f"{type(payload).__name__}: the signature covers the bytes as received, and a "
        "decoded or re-serialised body does not match it"
    )


def _rejected(message: str, reason: Literal["missing", "malformed"]) -> WebhookVerificationError:
    return WebhookVerificationError(message, reason=reason)


def signature_digest(signature: str | None) -> bytes:
    """The 32 bytes an ``X-Fay-Signature`` value states; the ``sha256=`` prefix is optional.

    Only the form of the header is read here, never the secret, so these early answers
    tell an attacker nothing about it.
    """
    if signature is None:
        raise _rejected(f"no {SIGNATURE_HEADER} header: the request is not signed", "missing")
    if not isinstance(signature, str):
        raise TypeError(f"the signature must be a str or None, got {type(signature).__name__}")
    text = signature.strip()
    if not text:
        raise _rejected(f"the {SIGNATURE_HEADER} header is empty", "missing")
    scheme, equals, value = text.partition("=")
    if equals:
        if scheme.strip().lower() != "sha256":
            shown = scheme.strip()[:16]
            raise _rejected(
                f"{SIGNATURE_HEADER} has the prefix {shown + '='!r}, not 'sha256=': "
                "Fay signs with HMAC-SHA256",
                "malformed",
            )
        text = value.strip()
    if len(text) != 64:
        raise _rejected(
            f"{SIGNATURE_HEADER} must be 64 hex digits (an HMAC-SHA256), "
            f"got {len(text)} characters",
            "malformed",
        )
    if not _HEX_DIGEST.fullmatch(text):
        raise _rejected(f"{SIGNATURE_HEADER} is not hexadecimal", "malformed")
    return bytes.fromhex(text)


def check_digest(body: bytes, digest: bytes, key: bytes) -> None:
    """Raise unless ``digest`` is the HMAC-SHA256 of ``body`` with ``key``, in constant time."""
    expected = hmac.new(key, body, hashlib.sha256).digest()
    if not hmac.compare_digest(expected, digest):
        raise WebhookVerificationError(
            f"{SIGNATURE_HEADER} does not match the body: it was signed with another secret, "
            "or the body was changed (verify the raw bytes as received, not a re-serialised "
            "body)",
            reason="mismatch",
        )


def _unreadable(why: str) -> WebhookPayloadError:
    return WebhookPayloadError(f"the webhook body is not a Fay event: {why}")


def _text_field(body: Mapping[str, Any], name: str) -> str:
    if name not in body:
        raise _unreadable(f"it has no {name!r}")
    value = body[name]
    if not isinstance(value, str) or not value:
        raise _unreadable(f"{name!r} must be a non-empty string, got {value!r:.60}")
    return value


def _created(body: Mapping[str, Any]) -> datetime:
    if "created" not in body:
        raise _unreadable("it has no 'created'")
    value = body["created"]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _unreadable(f"'created' must be a number of unix seconds, got {value!r:.60}")
    try:
        return datetime.fromtimestamp(value, tz=timezone.utc)
    except (ValueError, OverflowError, OSError):  # NaN, infinite, or past year 9999
        raise _unreadable(f"'created' is not a usable unix time: {value!r:.60}") from None


def decode_event(payload: bytes) -> WebhookEvent:
    """The event in a (verified) body; :class:`WebhookPayloadError` says what is wrong."""
    try:
        body = json.loads(payload)
    except (ValueError, RecursionError) as error:
        raise _unreadable(f"it is not JSON ({_wire.snippet(payload)!r})") from error
    if not isinstance(body, dict):
        raise _unreadable(f"it is a JSON {type(body).__name__}, not an object")
    event_id = _text_field(body, "id")
    kind = _text_field(body, "type")
    created = _created(body)
    if "data" not in body:
        raise _unreadable("it has no 'data'")
    data = body["data"]
    if not isinstance(data, dict):
        raise _unreadable(f"'data' must be an object, got {type(data).__name__}")
    event = WebhookEvent(id=event_id, type=kind, created=created, data=data)
    if kind not in KNOWN_TYPES:
        return _loose(event, data)
    try:
        info = _wire.structure_event_info(data)
        output = _wire.structure_event_output(data) if kind == "Output" else None
    except ValueError as error:
        raise WebhookPayloadError(
            f"the {kind} event {event_id!r} does not carry the documented data: {error}"
        ) from error
    return attrs.evolve(
        event,
        request_id=info.request_id,
        status=info.status,
        output=output,
        error_message=info.error_message,
        info=info,
    )


def _loose(event: WebhookEvent, data: Mapping[str, Any]) -> WebhookEvent:
    """An event of a type this version does not know: whatever research fields it has."""
    try:
        info = _wire.structure_event_info(data)
    except ValueError:
        request_id, status = data.get("request_id"), data.get("status")
        return attrs.evolve(
            event,
            request_id=request_id if isinstance(request_id, str) else None,
            status=ResearchStatus.from_api(status) if isinstance(status, str) and status else None,
        )
    return attrs.evolve(
        event,
        request_id=info.request_id,
        status=info.status,
        error_message=info.error_message,
        info=info,
    )
