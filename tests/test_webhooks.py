"""fay_async.webhooks: signatures and events as units, the receiver at the ASGI level.

The receiver under a real uvicorn and inside Starlette and FastAPI apps: test_webhooks_served.py.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from datetime import datetime, timezone
from typing import Any

import anyio
import anyio.lowlevel
import httpx
import pytest

from fay_async import (
    ConfigurationError,
    ConversationInfo,
    FayError,
    ResearchStatus,
    WebhookPayloadError,
    WebhookVerificationError,
)
from fay_async import _webhook_events as events_module
from fay_async.webhooks import WebhookEvent, WebhookReceiver, parse_event, verify_signature

from ._docs import CONVERSATION_ID, REQUEST_ID

SECRET = "whsec_test_a1b2c3d4e5f6"
CREATED = 1750682923  # 2025-06-23T12:48:43Z

# The three payloads as the Webhooks page documents them.
STATUS_EVENT: dict[str, Any] = {
    "id": "evt_1a2b3c",
    "type": "Status",
    "created": CREATED,
    "data": {
        "request_id": REQUEST_ID,
        "status": "PROCESSING",
        "prompt": "What changed in EU battery regulation in 2025?",
        "conversation_id": CONVERSATION_ID,
        "created_at": "2025-06-23T12:48:43.031000+00:00",
        "started_at": "2025-06-23T12:49:33.512000+00:00",
        "completed_at": None,
    },
}
OUTPUT_EVENT: dict[str, Any] = {
    "id": "evt_4d5e6f",
    "type": "Output",
    "created": CREATED + 63,
    "data": {
        "request_id": REQUEST_ID,
        "conversation_id": CONVERSATION_ID,
        "status": "COMPLETED",
        "output": "# EU battery regulation\n\nThree things changed ...",
        "completed_at": "2025-06-23T12:49:46.204000+00:00",
    },
}
ERROR_EVENT: dict[str, Any] = {
    "id": "evt_7a8b9c",
    "type": "Error",
    "created": CREATED + 57,
    "data": {
        "request_id": REQUEST_ID,
        "conversation_id": CONVERSATION_ID,
        "status": "FAILED",
        "error_message": "Research agent crashed",
        "completed_at": "2025-06-23T12:49:40.000000+00:00",
    },
}
# The dashboard's test event: its shape is not documented; this one is a guess.
TEST_EVENT: dict[str, Any] = {
    "id": "evt_test_0001",
    "type": "test",
    "created": CREATED,
    "data": {"message": "This is a test webhook from Fay"},
}


def body_of(event: dict[str, Any], **dumps: Any) -> bytes:
    return json.dumps(event, **dumps).encode()


def sign(body: bytes, secret: str = SECRET, *, prefix: str = "sha256=") -> str:
    return prefix + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


# --- signatures -------------------------------------------------------------------------------


def test_a_known_signature_verifies() -> None:
    # Computed apart from Python: printf 'hello' | openssl dgst -sha256 -hmac 'whsec_test'
    digest = "fa1f2843ca221403e67c335d22ed782f1f2b5a33261fbee70bd5ae4cbff02490"
    verify_signature(b"hello", f"sha256={digest}", "whsec_test")
    verify_signature(b"hello", digest, b"whsec_test")  # the prefix is optional
    verify_signature(b"hello", f"  SHA256={digest.upper()}  ", "whsec_test")
    with pytest.raises(WebhookVerificationError):
        verify_signature(b"hello ", f"sha256={digest}", "whsec_test")


@pytest.mark.parametrize("event", [STATUS_EVENT, OUTPUT_EVENT, ERROR_EVENT, TEST_EVENT])
def test_the_documented_payloads_verify_with_and_without_the_prefix(event: dict[str, Any]) -> None:
    body = body_of(event)
    verify_signature(body, sign(body), SECRET)
    verify_signature(body, sign(body, prefix=""), SECRET)
    verify_signature(bytearray(body), sign(body), SECRET.encode())
    verify_signature(memoryview(body), sign(body), SECRET)


def test_a_re_serialised_body_fails() -> None:
    """The documentation's Express example verifies JSON.stringify(req.body): never that."""
    raw = body_of(STATUS_EVENT, separators=(",", ":"))
    signature = sign(raw)
    verify_signature(raw, signature, SECRET)
    parsed = json.loads(raw)
    for other in (
        json.dumps(parsed).encode(),  # other spacing
        json.dumps(parsed, indent=2).encode(),
        json.dumps(parsed, sort_keys=True, separators=(",", ":")).encode(),  # other key order
        raw + b"\n",
    ):
        assert json.loads(other) == parsed
        with pytest.raises(WebhookVerificationError, match="does not match the body") as caught:
            verify_signature(other, signature, SECRET)
        assert caught.value.reason == "mismatch"


GOOD = sign(body_of(STATUS_EVENT))


@pytest.mark.parametrize(
    ("signature", "reason", "message"),
    [
        (None, "missing", "no X-Fay-Signature header: the request is not signed"),
        ("", "missing", "the X-Fay-Signature header is empty"),
        ("   ", "missing", "the X-Fay-Signature header is empty"),
        ("sha1=" + "ab" * 20, "malformed", "has the prefix 'sha1=', not 'sha256='"),
        ("md5=" + GOOD[7:], "malformed", "has the prefix 'md5=', not 'sha256='"),
        ("sha256=" + GOOD[7:-2], "malformed", "must be 64 hex digits .*, got 62 characters"),
        ("sha256=" + GOOD[7:] + "00", "malformed", "got 66 characters"),
        ("sha256=", "malformed", "got 0 characters"),
        ("sha256=" + "zz" * 32, "malformed", "X-Fay-Signature is not hexadecimal"),
        ("sha256=" + GOOD[7:39] + " " + GOOD[40:], "malformed", "not hexadecimal"),
        ("sha256=" + "0" * 64, "mismatch", "does not match the body"),
        (GOOD[:-1] + ("0" if GOOD[-1] != "0" else "1"), "mismatch", "does not match"),
        (sign(body_of(STATUS_EVENT), "another-secret"), "mismatch", "another secret"),
        (sign(body_of(OUTPUT_EVENT)), "mismatch", "does not match the body"),
    ],
)
def test_every_wrong_signature_fails(signature: str | None, reason: str, message: str) -> None:
    body = body_of(STATUS_EVENT)
    with pytest.raises(WebhookVerificationError, match=message) as caught:
        verify_signature(body, signature, SECRET)
    assert caught.value.reason == reason
    assert isinstance(caught.value, FayError)
    with pytest.raises(WebhookVerificationError, match=message):
        parse_event(body, signature, secret=SECRET)


def test_the_digests_are_compared_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every well-formed signature, right or wrong anywhere, goes through compare_digest."""
    compared: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(events_module.hmac, "compare_digest", spy)
    body = body_of(STATUS_EVENT)
    good = sign(body)[7:]
    wrong_first = ("0" if good[0] != "0" else "1") + good[1:]
    wrong_last = good[:-1] + ("0" if good[-1] != "0" else "1")
    verify_signature(body, good, SECRET)
    for wrong in (wrong_first, wrong_last):
        with pytest.raises(WebhookVerificationError):
            verify_signature(body, wrong, SECRET)
    assert len(compared) == 3
    assert all(isinstance(a, bytes) and len(a) == len(b) == 32 for a, b in compared)


@pytest.mark.parametrize("payload", ["{}", {"id": "evt"}, None, 42])
def test_a_payload_that_is_not_bytes_is_refused(payload: Any) -> None:
    with pytest.raises(TypeError, match="must be the raw request body as bytes, got") as caught:
        verify_signature(payload, GOOD, SECRET)
    assert "re-serialised body does not match" in str(caught.value)
    with pytest.raises(TypeError, match="raw request body"):
        parse_event(payload, GOOD, secret=SECRET)


def test_a_signature_that_is_not_a_string_is_refused() -> None:
    with pytest.raises(TypeError, match="the signature must be a str or None, got bytes"):
        verify_signature(b"{}", GOOD.encode(), SECRET)  # type: ignore[arg-type]


def test_the_secret_comes_from_the_argument_or_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    body = body_of(STATUS_EVENT)
    with pytest.raises(
        ConfigurationError, match=r"no webhook secret: pass secret=\.\.\. or set"
    ) as e:
        parse_event(body, sign(body))
    assert "FAY_WEBHOOK_SECRET" in str(e.value)
    assert "dashboard" in str(e.value)
    monkeypatch.setenv("FAY_WEBHOOK_SECRET", "")
    with pytest.raises(ConfigurationError, match="no webhook secret"):
        parse_event(body, sign(body))
    monkeypatch.setenv("FAY_WEBHOOK_SECRET", SECRET)
    assert parse_event(body, sign(body)).id == "evt_1a2b3c"
    with pytest.raises(WebhookVerificationError):
        parse_event(body, sign(body), secret="another-secret")  # the argument wins


@pytest.mark.parametrize(
    ("secret", "error", "message"),
    [
        ("", ConfigurationError, "the webhook secret is empty: pass secret="),
        (b"", ConfigurationError, "the webhook secret is empty"),
        (None, TypeError, "the webhook secret must be str or bytes, got NoneType"),
        (12345, TypeError, "got int"),
    ],
)
def test_an_unusable_secret_is_refused(secret: Any, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        verify_signature(b"{}", GOOD, secret)


# --- events -----------------------------------------------------------------------------------


def test_a_status_event() -> None:
    body = body_of(STATUS_EVENT)
    event = parse_event(body, sign(body), secret=SECRET)
    assert event.id == "evt_1a2b3c"
    assert event.type == "Status"
    assert event.is_known_type
    assert event.created == datetime(2025, 6, 23, 12, 48, 43, tzinfo=timezone.utc)
    assert event.request_id == REQUEST_ID
    assert event.status is ResearchStatus.PROCESSING
    assert event.output is None
    assert event.error_message is None
    assert event.data == STATUS_EVENT["data"]
    assert event.info == ConversationInfo(
        request_id=REQUEST_ID,
        status=ResearchStatus.PROCESSING,
        prompt="What changed in EU battery regulation in 2025?",
        conversation_id=CONVERSATION_ID,
        created_at=datetime(2025, 6, 23, 12, 48, 43, 31000, tzinfo=timezone.utc),
        started_at=datetime(2025, 6, 23, 12, 49, 33, 512000, tzinfo=timezone.utc),
    )
    assert repr(event) == (
        "WebhookEvent(id='evt_1a2b3c', type='Status', created=datetime.datetime(2025, 6, 23, "
        "12, 48, 43, tzinfo=datetime.timezone.utc), request_id='e0a05c59-a5d7-44f3-8d5e-"
        "9e535e4db957', status=<ResearchStatus.PROCESSING>, error_message=None)"
    )


def test_an_output_event_with_text_or_a_json_object() -> None:
    body = body_of(OUTPUT_EVENT)
    event = parse_event(body, sign(body), secret=SECRET)
    assert event.type == "Output"
    assert event.status is ResearchStatus.COMPLETED
    assert event.output == "# EU battery regulation\n\nThree things changed ..."
    assert event.info is not None
    assert event.info.completed_at == datetime(2025, 6, 23, 12, 49, 46, 204000, timezone.utc)
    structured = {**OUTPUT_EVENT, "data": {**OUTPUT_EVENT["data"], "output": {"changes": [1]}}}
    body = body_of(structured)
    assert parse_event(body, sign(body), secret=SECRET).output == {"changes": [1]}


def test_an_error_event() -> None:
    body = body_of(ERROR_EVENT)
    event = parse_event(body, sign(body), secret=SECRET)
    assert (event.type, event.status, event.error_message) == (
        "Error",
        ResearchStatus.FAILED,
        "Research agent crashed",
    )
    assert event.output is None


def test_an_unknown_type_passes_through() -> None:
    body = body_of(TEST_EVENT)
    event = parse_event(body, sign(body), secret=SECRET)
    assert (event.id, event.type, event.is_known_type) == ("evt_test_0001", "test", False)
    assert (event.request_id, event.status, event.info, event.output) == (None, None, None, None)
    assert event.data == {"message": "This is a test webhook from Fay"}
    # A future type with research fields keeps what it can, even a status nobody knows yet.
    future = {"id": "evt_f", "type": "Progress", "created": CREATED, "data": {}}
    future["data"] = {"request_id": REQUEST_ID, "status": "RESEARCHING", "percent": 40}
    body = body_of(future)
    event = parse_event(body, sign(body), secret=SECRET)
    assert event.type == "Progress"
    assert event.request_id == REQUEST_ID
    assert event.status == "RESEARCHING"
    assert event.status is not None
    assert not event.status.is_known
    assert event.info is not None
    # One whose fields have other types keeps the ones it can read.
    odd = {**future, "data": {"request_id": REQUEST_ID, "status": 3, "prompt": 4}}
    body = body_of(odd)
    event = parse_event(body, sign(body), secret=SECRET)
    assert (event.request_id, event.status, event.info) == (REQUEST_ID, None, None)


def test_a_status_the_library_does_not_know_is_kept() -> None:
    event = {**STATUS_EVENT, "data": {**STATUS_EVENT["data"], "status": "QUEUED_AGAIN"}}
    body = body_of(event)
    parsed = parse_event(body, sign(body), secret=SECRET)
    assert parsed.status == "QUEUED_AGAIN"
    assert parsed.status is not None
    assert not parsed.status.is_terminal


def _without(event: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in event.items() if k != key}


def _with_data(event: dict[str, Any], **changes: Any) -> dict[str, Any]:
    data = {k: v for k, v in {**event["data"], **changes}.items() if v is not ...}
    return {**event, "data": data}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", r"it is not JSON \(''\)"),
        (b"<html>502 Bad Gateway</html>", r"it is not JSON \('<html>502 Bad Gateway</html>'\)"),
        (b'{"id": "evt_1", "type":', "it is not JSON"),
        (b'{"id": "\xff\xfe"}', "it is not JSON"),
        (b"[" * 100_000 + b"]" * 100_000, "it is not JSON"),
        (b"[1, 2]", "it is a JSON list, not an object"),
        (b'"evt_1"', "it is a JSON str, not an object"),
        (body_of(_without(STATUS_EVENT, "id")), "it has no 'id'"),
        (body_of(_without(STATUS_EVENT, "type")), "it has no 'type'"),
        (body_of(_without(STATUS_EVENT, "created")), "it has no 'created'"),
        (body_of(_without(STATUS_EVENT, "data")), "it has no 'data'"),
        (body_of({**STATUS_EVENT, "id": 17}), "'id' must be a non-empty string, got 17"),
        (body_of({**STATUS_EVENT, "id": ""}), "'id' must be a non-empty string, got ''"),
        (body_of({**STATUS_EVENT, "type": None}), "'type' must be a non-empty string, got None"),
        (
            body_of({**STATUS_EVENT, "created": "2025-06-23"}),
            "'created' must be a number of unix seconds, got '2025-06-23'",
        ),
        (body_of({**STATUS_EVENT, "created": True}), "'created' must be a number"),
        (body_of({**STATUS_EVENT, "created": 1e300}), "'created' is not a usable unix time"),
        (b'{"id": "e", "type": "Status", "created": NaN, "data": {}}', "not a usable unix"),
        (body_of({**STATUS_EVENT, "data": [1]}), "'data' must be an object, got list"),
        (body_of({**STATUS_EVENT, "data": None}), "'data' must be an object, got NoneType"),
        (
            body_of(_with_data(STATUS_EVENT, request_id=...)),
            (
                "the Status event 'evt_1a2b3c' does not carry the documented data: "
                "required field missing @ data.request_id"
            ),
        ),
        (
            body_of(_with_data(STATUS_EVENT, status=...)),
            "required field missing @ data.status",
        ),
        (
            body_of(_with_data(STATUS_EVENT, request_id=42)),
            "invalid value for type, expected str @ data.request_id",
        ),
        (body_of(_with_data(STATUS_EVENT, status="")), "@ data.status"),
        (body_of(_with_data(STATUS_EVENT, started_at="yesterday")), "@ data.started_at"),
        (
            body_of(_with_data(OUTPUT_EVENT, output=...)),
            (
                "the Output event 'evt_4d5e6f' does not carry the documented data: "
                "required field missing @ data.output"
            ),
        ),
        (
            body_of(_with_data(OUTPUT_EVENT, output=None)),
            "expected a string or a JSON object, got NoneType @ data.output",
        ),
        (body_of(_with_data(ERROR_EVENT, error_message=7)), "@ data.error_message"),
    ],
)
def test_a_signed_body_that_is_not_an_event(body: bytes, message: str) -> None:
    with pytest.raises(WebhookPayloadError, match=message) as caught:
        parse_event(body, sign(body), secret=SECRET)
    assert isinstance(caught.value, FayError)
    assert str(caught.value).startswith(("the webhook body is not a Fay event: ", "the "))


def test_a_bad_signature_is_reported_before_a_bad_body() -> None:
    with pytest.raises(WebhookVerificationError):
        parse_event(b"not json", sign(b"other"), secret=SECRET)


# --- the receiver, at the ASGI level ---------------------------------------------------------


class Recorder:
    """An ``on_event`` handler and a manager-like sink that record what they were given."""

    def __init__(self) -> None:
        self.events: list[WebhookEvent] = []
        self.sunk: list[WebhookEvent] = []

    async def __call__(self, event: WebhookEvent) -> None:
        await anyio.lowlevel.checkpoint()  # a coroutine handler that awaits
        self.events.append(event)

    async def handle_webhook(self, event: WebhookEvent) -> None:
        self.sunk.append(event)


def client_for(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://fay.test")


async def deliver(
    http: httpx.AsyncClient, event: dict[str, Any] | bytes, path: str = "/", **headers: str
) -> httpx.Response:
    body = event if isinstance(event, bytes) else body_of(event)
    headers = {"X-Fay-Signature": sign(body), "Content-Type": "application/json", **headers}
    return await http.post(path, content=body, headers=headers)


@pytest.mark.anyio
async def test_a_good_delivery_is_answered_200_and_handled() -> None:
    recorder = Recorder()
    receiver = WebhookReceiver(secret=SECRET, on_event=recorder, manager=recorder)
    async with client_for(receiver) as http:
        for event in (STATUS_EVENT, OUTPUT_EVENT, ERROR_EVENT, TEST_EVENT):
            answer = await deliver(http, event)
            assert (answer.status_code, answer.text) == (200, "received\n")
    ids = [e["id"] for e in (STATUS_EVENT, OUTPUT_EVENT, ERROR_EVENT, TEST_EVENT)]
    assert [e.id for e in recorder.events] == ids
    assert [e.id for e in recorder.sunk] == ids
    assert recorder.events[1].output == OUTPUT_EVENT["data"]["output"]


@pytest.mark.anyio
async def test_each_refusal_by_status_code(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, "fay_async")
    recorder = Recorder()
    receiver = WebhookReceiver(secret=SECRET, on_event=recorder, max_body=4096)
    body = body_of(STATUS_EVENT)
    async with client_for(receiver) as http:
        missing = await http.post("/", content=body)
        assert (missing.status_code, missing.text) == (
            400,
            "no X-Fay-Signature header: the request is not signed\n",
        )
        empty = await http.post("/", content=body, headers={"X-Fay-Signature": ""})
        assert empty.status_code == 400
        wrong = await http.post("/", content=body, headers={"X-Fay-Signature": sign(b"x")})
        assert wrong.status_code == 401
        assert wrong.text.startswith("X-Fay-Signature does not match the body")
        other = await http.post("/", content=body, headers={"X-Fay-Signature": "sha1=" + "0" * 40})
        assert (other.status_code, other.text) == (
            401,
            "X-Fay-Signature has the prefix 'sha1=', not 'sha256=': Fay signs with HMAC-SHA256\n",
        )
        large = b'{"pad": "' + b"x" * 5000 + b'"}'
        too_large = await deliver(http, large)
        assert (too_large.status_code, too_large.text) == (413, "the body is over 4096 bytes\n")

        # No Content-Length: the size is found while reading, and reading stops there.
        streamed = ASGICall(b"x" * 10_000, signature=sign(b""), parts=10)
        await receiver(streamed.scope, streamed.receive, streamed.send)
        assert (streamed.status, len(streamed.incoming)) == (413, 5)
        unreadable = await deliver(http, b"[]")
        assert (unreadable.status_code, unreadable.text) == (
            400,
            "the webhook body is not a Fay event: it is a JSON list, not an object\n",
        )
        for method in ("GET", "PUT", "HEAD", "OPTIONS"):
            answer = await http.request(method, "/")
            assert answer.status_code == 405
            assert answer.headers["allow"] == "POST"
        good = await deliver(http, STATUS_EVENT)
        assert good.status_code == 200
    assert [e.id for e in recorder.events] == ["evt_1a2b3c"]
    logged = [(r.levelname, r.getMessage()) for r in caplog.records]
    assert ("INFO", "Fay webhook refused (400): " + missing.text.strip()) in logged
    assert ("WARNING", "Fay webhook refused (400): " + unreadable.text.strip()) in logged


@pytest.mark.anyio
async def test_a_redelivered_event_is_answered_200_and_handled_once() -> None:
    recorder = Recorder()
    receiver = WebhookReceiver(secret=SECRET, on_event=recorder, manager=recorder)
    async with client_for(receiver) as http:
        first = await deliver(http, STATUS_EVENT)
        again = await deliver(http, STATUS_EVENT)
        async with anyio.create_task_group() as tg:  # and racing copies of another one
            for _ in range(5):
                tg.start_soon(deliver, http, OUTPUT_EVENT)
        # Same research, same request_id, new event id: a new event, handled.
        later = {**STATUS_EVENT, "id": "evt_later", "data": {**STATUS_EVENT["data"]}}
        later["data"]["status"] = "COMPLETED"
        await deliver(http, later)
    assert (first.text, again.status_code, again.text) == ("received\n", 200, "already received\n")
    assert [e.id for e in recorder.events] == ["evt_1a2b3c", "evt_4d5e6f", "evt_later"]
    assert [e.id for e in recorder.sunk] == ["evt_1a2b3c", "evt_4d5e6f", "evt_later"]


@pytest.mark.anyio
async def test_the_memory_of_seen_ids_is_bounded_in_time_and_size() -> None:
    recorder = Recorder()
    receiver = WebhookReceiver(secret=SECRET, on_event=recorder, dedupe_size=3, dedupe_seconds=600)
    async with client_for(receiver) as http:
        await deliver(http, STATUS_EVENT)
        await anyio.sleep(599)  # virtual time
        await deliver(http, STATUS_EVENT)
        assert len(recorder.events) == 1
        await anyio.sleep(2)
        await deliver(http, STATUS_EVENT)  # forgotten after 600 s: handled again
        assert len(recorder.events) == 2
        for n in range(3):  # three newer ids push the oldest out
            await deliver(http, {**TEST_EVENT, "id": f"evt_{n}"})
        await deliver(http, STATUS_EVENT)
        await deliver(http, {**TEST_EVENT, "id": "evt_2"})  # still remembered
    assert [e.id for e in recorder.events] == [
        "evt_1a2b3c",
        "evt_1a2b3c",
        "evt_0",
        "evt_1",
        "evt_2",
        "evt_1a2b3c",
    ]


@pytest.mark.anyio
async def test_a_failing_handler_is_logged_never_answered_500(
    caplog: pytest.LogCaptureFixture,
) -> None:
    handled: list[str] = []

    class BrokenSink:
        async def handle_webhook(self, event: WebhookEvent) -> None:
            raise RuntimeError(f"the sink broke on {event.id}")

    def on_event(event: WebhookEvent) -> None:  # a plain function works too
        handled.append(event.id)
        if event.type == "Status":
            raise ValueError("the handler broke")

    receiver = WebhookReceiver(secret=SECRET, on_event=on_event, manager=BrokenSink())
    async with client_for(receiver) as http:
        for event in (STATUS_EVENT, STATUS_EVENT, OUTPUT_EVENT):
            assert (await deliver(http, event)).status_code == 200
    assert handled == ["evt_1a2b3c", "evt_4d5e6f"]  # the sink's failure did not stop on_event
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert [r.getMessage() for r in errors] == [
        "the manager failed to handle Fay webhook event evt_1a2b3c (Status)",
        "on_event failed to handle Fay webhook event evt_1a2b3c (Status)",
        "the manager failed to handle Fay webhook event evt_4d5e6f (Output)",
    ]
    assert all(r.exc_info for r in errors)


class ASGICall:
    """One request driven by hand: what the app sent, and when the handler ran."""

    def __init__(self, body: bytes, *, signature: str | None, parts: int = 1) -> None:
        size = -(-len(body) // parts) or 1
        self.incoming: list[dict[str, Any]] = [
            {"type": "http.request", "body": body[i : i + size], "more_body": True}
            for i in range(0, max(len(body), 1), size)
        ]
        self.incoming[-1]["more_body"] = False
        headers = [(b"x-fay-signature", signature.encode())] if signature else []
        self.scope = {"type": "http", "method": "POST", "path": "/", "headers": headers}
        self.sent: list[dict[str, Any]] = []

    async def receive(self) -> dict[str, Any]:
        if self.incoming:
            return self.incoming.pop(0)
        await anyio.sleep_forever()
        raise AssertionError  # pragma: no cover

    async def send(self, message: dict[str, Any]) -> None:
        self.sent.append(message)

    @property
    def status(self) -> int | None:
        return self.sent[0]["status"] if self.sent else None

    @property
    def complete(self) -> bool:
        return bool(self.sent) and self.sent[-1] == {
            "type": "http.response.body",
            "body": self.sent[-1]["body"],
            "more_body": False,
        }


@pytest.mark.anyio
async def test_without_a_lifespan_handlers_run_after_the_response_is_complete() -> None:
    body = body_of(STATUS_EVENT)
    call = ASGICall(body, signature=sign(body), parts=3)
    seen: list[tuple[int | None, bool]] = []

    async def on_event(event: WebhookEvent) -> None:
        seen.append((call.status, call.complete))

    await WebhookReceiver(secret=SECRET, on_event=on_event)(call.scope, call.receive, call.send)
    assert seen == [(200, True)]


@pytest.mark.anyio
async def test_a_client_that_leaves_mid_body_gets_nothing_and_nothing_is_handled() -> None:
    body = body_of(STATUS_EVENT)
    call = ASGICall(body, signature=sign(body), parts=2)
    call.incoming[-1] = {"type": "http.disconnect"}
    recorder = Recorder()
    await WebhookReceiver(secret=SECRET, on_event=recorder)(call.scope, call.receive, call.send)
    assert (call.sent, recorder.events) == ([], [])


@pytest.mark.anyio
async def test_an_answer_that_cannot_be_sent_leaves_the_event_to_its_redelivery() -> None:
    body = body_of(STATUS_EVENT)
    recorder = Recorder()
    receiver = WebhookReceiver(secret=SECRET, on_event=recorder)
    call = ASGICall(body, signature=sign(body))

    async def broken_send(message: dict[str, Any]) -> None:
        raise OSError("connection reset")

    with pytest.raises(OSError, match="connection reset"):
        await receiver(call.scope, call.receive, broken_send)
    assert recorder.events == []
    async with client_for(receiver) as http:
        assert (await deliver(http, STATUS_EVENT)).text == "received\n"
    assert [e.id for e in recorder.events] == ["evt_1a2b3c"]


class Lifespan:
    """The lifespan protocol driven as a server drives it."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.to_app, self._from_server = anyio.create_memory_object_stream[dict[str, Any]](4)
        self._to_server, self.from_app = anyio.create_memory_object_stream[dict[str, Any]](4)

    async def run(self) -> None:
        async with self._from_server, self._to_server:
            await self.app({"type": "lifespan"}, self._from_server.receive, self._to_server.send)

    async def __aenter__(self) -> Lifespan:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.to_app.aclose()
        await self.from_app.aclose()

    async def say(self, kind: str) -> str:
        await self.to_app.send({"type": kind})
        return str((await self.from_app.receive())["type"])


@pytest.mark.anyio
async def test_with_a_lifespan_handlers_run_in_its_task_group_and_are_drained() -> None:
    release = anyio.Event()
    done: list[str] = []

    async def slow(event: WebhookEvent) -> None:
        await release.wait()
        done.append(event.id)

    receiver = WebhookReceiver(secret=SECRET, on_event=slow, shutdown_grace=30)
    async with (
        Lifespan(receiver) as lifespan,
        anyio.create_task_group() as tg,
        client_for(receiver) as http,
    ):
        tg.start_soon(lifespan.run)
        assert await lifespan.say("lifespan.startup") == "lifespan.startup.complete"
        # httpx's ASGI transport waits for the app to return: the handler has not run yet.
        answer = await deliver(http, STATUS_EVENT)
        assert (answer.status_code, done) == (200, [])
        await anyio.sleep(5)
        assert done == []
        tg.start_soon(lifespan.say, "lifespan.shutdown")
        await anyio.sleep(1)
        release.set()
        await anyio.sleep(0.1)
    assert done == ["evt_1a2b3c"]


@pytest.mark.anyio
async def test_a_shutdown_cancels_handlers_still_running_after_the_grace(
    caplog: pytest.LogCaptureFixture,
) -> None:
    cancelled: list[str] = []

    async def stuck(event: WebhookEvent) -> None:
        try:
            await anyio.sleep_forever()
        except anyio.get_cancelled_exc_class():
            cancelled.append(event.id)
            raise

    receiver = WebhookReceiver(secret=SECRET, on_event=stuck, shutdown_grace=7)
    async with (
        Lifespan(receiver) as lifespan,
        anyio.create_task_group() as tg,
        client_for(receiver) as http,
    ):
        tg.start_soon(lifespan.run)
        await lifespan.say("lifespan.startup")
        assert (await deliver(http, STATUS_EVENT)).status_code == 200
        started = anyio.current_time()
        assert await lifespan.say("lifespan.shutdown") == "lifespan.shutdown.complete"
        assert anyio.current_time() - started == pytest.approx(7, abs=0.1)
        # After the shutdown, a late delivery runs its handler in its own task again.
        late = {**TEST_EVENT, "id": "evt_late"}
        with anyio.move_on_after(1):
            await deliver(http, late)
    assert cancelled == ["evt_1a2b3c", "evt_late"]
    assert "still running 7 s after shutdown began were cancelled" in caplog.text


@pytest.mark.anyio
async def test_a_lifespan_shutdown_without_startup_and_other_scopes() -> None:
    receiver = WebhookReceiver(secret=SECRET)
    async with Lifespan(receiver) as lifespan, anyio.create_task_group() as tg:
        tg.start_soon(lifespan.run)
        assert await lifespan.say("lifespan.shutdown") == "lifespan.shutdown.complete"
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def receive() -> dict[str, Any]:
        return {"type": "websocket.connect"}

    await receiver({"type": "websocket", "path": "/"}, receive, send)
    assert sent == [{"type": "websocket.close", "code": 1008}]
    with pytest.raises(ValueError, match="WebhookReceiver serves HTTP, not a 'other' scope"):
        await receiver({"type": "other"}, receive, send)


# --- construction and secrecy -----------------------------------------------------------------


def test_the_receiver_needs_a_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigurationError, match="set FAY_WEBHOOK_SECRET to the secret"):
        WebhookReceiver()
    monkeypatch.setenv("FAY_WEBHOOK_SECRET", SECRET)
    assert WebhookReceiver().max_body == 8 * 1024 * 1024


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"manager": object()}, TypeError, "manager must have an async handle_webhook"),
        ({"on_event": "print"}, TypeError, "on_event must be callable, got str"),
        ({"max_body": 0}, ValueError, "max_body must be a whole number >= 1, got 0"),
        ({"dedupe_size": 1.5}, TypeError, "dedupe_size must be a whole number"),
        ({"dedupe_seconds": -1}, ValueError, "dedupe_seconds must be a positive number"),
        ({"shutdown_grace": float("nan")}, ValueError, "shutdown_grace must be"),
        ({"secret": 42}, TypeError, "the webhook secret must be str or bytes, got int"),
    ],
)
def test_the_receiver_refuses_bad_options(
    options: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        WebhookReceiver(**{"secret": SECRET, **options})


@pytest.mark.anyio
async def test_the_secret_is_never_shown(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    recorder = Recorder()
    receiver = WebhookReceiver(secret=SECRET, manager=recorder, on_event=recorder)
    shown = [repr(receiver), str(receiver)]
    body = body_of(STATUS_EVENT)
    async with client_for(receiver) as http:
        for signature in (None, "sha256=" + "0" * 64, "sha1=x", sign(body, "other")):
            headers = {"X-Fay-Signature": signature} if signature else {}
            shown.append((await http.post("/", content=body, headers=headers)).text)
        shown.append((await deliver(http, b"{}")).text)
        await deliver(http, STATUS_EVENT)
        await deliver(http, STATUS_EVENT)
    for signature in (None, "", "sha1=x", "0" * 64):
        try:
            parse_event(body, signature, secret=SECRET)
        except FayError as error:
            shown.append(str(error))
            shown.append(repr(error))
    shown += [caplog.text, *(r.getMessage() for r in caplog.records)]
    assert repr(receiver).startswith("WebhookReceiver(manager=<")
    assert len(shown) > 12
    for text in shown:
        assert SECRET not in text
        assert sign(body)[7:] not in text  # nor the signature the body should have
