"""The emulator's webhooks: events, signatures, retries, faults, drop rate, and serving.

In-process tests run on virtual time (asyncio and trio); the served ones under a real
uvicorn on 127.0.0.1, on the real clock.
"""

from __future__ import annotations

import json
from typing import Any

import anyio
import httpx
import pytest

from fay_async import ResearchStatus, WebhookVerificationError
from fay_async.testing import (
    FayEmulator,
    ManualClock,
    Scenario,
    WebhookDelivery,
    WebhookFault,
    serve,
)
from fay_async.webhooks import WebhookEvent, WebhookReceiver, parse_event

from ._served import eventually
from .test_webhooks_served import serve as serve_in_loop

pytestmark = pytest.mark.anyio

SECRET = "whsec_emulated_0123"
QUICK = Scenario(10, 5)


def scenario_for(prompt: str) -> Scenario:
    if "fail" in prompt:
        return Scenario(10, 5, outcome="FAILED", error_message="no sources")
    return QUICK


class Recorder:
    """An ASGI receiver that keeps each request and answers as told (then 200)."""

    def __init__(self, *answers: int | float) -> None:
        # An int is a status code; a float is seconds to wait before answering 200.
        self.answers = list(answers)
        self.requests: list[tuple[float, bytes, dict[str, str]]] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        assert scope["type"] == "http"
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode(): v.decode() for k, v in scope["headers"]}
        self.requests.append((anyio.current_time(), body, headers))
        answer = self.answers.pop(0) if self.answers else 200
        if isinstance(answer, float):
            await anyio.sleep(answer)
            answer = 200
        await send({"type": "http.response.start", "status": answer, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    def events(self) -> list[dict[str, Any]]:
        return [json.loads(body) for _, body, _ in self.requests]


def by_research(events: list[WebhookEvent]) -> dict[str | None, list[tuple[str, str]]]:
    result: dict[str | None, list[tuple[str, str]]] = {}
    for event in events:
        status = event.status.value if event.status else "?"
        result.setdefault(event.request_id, []).append((event.type, status))
    return result


def attempts(emulator: FayEmulator) -> list[tuple[int, float, int | None, str | None]]:
    return [(d.attempt, d.time, d.status_code, d.error) for d in emulator.deliveries()]


# --- the events ------------------------------------------------------------------------------


async def test_every_documented_event_in_order_verified_by_the_receiver() -> None:
    received: list[WebhookEvent] = []
    receiver = WebhookReceiver(secret=SECRET, on_event=received.append)
    emulator = FayEmulator(scenario=scenario_for, webhook_app=receiver, webhook_secret=SECRET)
    async with emulator.delivering(), emulator.client() as fay:
        done = await fay.create_conversation("a question")
        failed = await fay.create_conversation("fail this one")
        structured = await fay.create_conversation("as JSON", structured_output=True)
        await anyio.sleep(3)
        stopped = await fay.create_conversation("stop this one")
        await anyio.sleep(11)  # PROCESSING since 13 s
        await fay.stop_conversation(stopped.request_id)
        stopped_at = emulator.now()
        await anyio.sleep(0.01)
        assert received[-1].status is ResearchStatus.STOPPED  # at once
        assert emulator.deliveries()[-1].time == stopped_at
        await anyio.sleep(60)
    timeline = by_research(received)
    assert timeline[done.request_id] == [
        ("Status", "PENDING"),
        ("Status", "PROCESSING"),
        ("Status", "COMPLETED"),
        ("Output", "COMPLETED"),
    ]
    assert timeline[failed.request_id] == [
        ("Status", "PENDING"),
        ("Status", "PROCESSING"),
        ("Status", "FAILED"),
        ("Error", "FAILED"),
    ]
    assert timeline[stopped.request_id] == [
        ("Status", "PENDING"),
        ("Status", "PROCESSING"),
        ("Status", "STOPPED"),
    ]
    events = {(e.request_id, e.type, e.status): e for e in received}
    output = events[done.request_id, "Output", ResearchStatus.COMPLETED]
    assert isinstance(output.output, str)
    assert output.output.startswith("# Research report")
    assert output.info is not None
    assert output.info.conversation_id == emulator.research(done.request_id).conversation_id
    json_output = events[structured.request_id, "Output", ResearchStatus.COMPLETED]
    assert isinstance(json_output.output, dict)
    error = events[failed.request_id, "Error", ResearchStatus.FAILED]
    assert error.error_message == "no sources"
    final = events[stopped.request_id, "Status", ResearchStatus.STOPPED]
    assert final.info is not None
    assert final.info.started_at is not None
    assert final.info.completed_at is not None
    assert len({e.id for e in received}) == len(received)
    assert all(e.id.startswith("evt_") for e in received)
    # Each delivery succeeded at its first attempt, at the moment of its transition.
    assert {(d.attempt, d.status_code) for d in emulator.deliveries()} == {(1, 200)}
    times = [d.time for d in emulator.deliveries() if d.request_id == done.request_id]
    assert times == [0, 10, 15, 15]


async def test_bodies_are_signed_raw_and_carry_the_documented_fields() -> None:
    recorder = Recorder()
    emulator = FayEmulator(scenario=QUICK, webhook_app=recorder, webhook_secret=SECRET)
    async with emulator.delivering(), emulator.client() as fay:
        created = await fay.create_conversation("signed")
        await anyio.sleep(20)
    assert len(recorder.requests) == 4
    for _, body, headers in recorder.requests:
        assert headers["content-type"] == "application/json"
        assert headers["x-fay-signature"].startswith("sha256=")
        event = parse_event(body, headers["x-fay-signature"], secret=SECRET)
        assert event.request_id == created.request_id
        with pytest.raises(WebhookVerificationError):
            parse_event(body, headers["x-fay-signature"], secret="another")
    pending, processing, completed, output = recorder.events()
    assert set(pending) == {"id", "type", "created", "data"}
    assert isinstance(pending["created"], int)
    assert set(pending["data"]) == {
        "request_id",
        "status",
        "prompt",
        "conversation_id",
        "created_at",
        "started_at",
        "completed_at",
    }
    assert (pending["data"]["started_at"], pending["data"]["completed_at"]) == (None, None)
    assert processing["data"]["started_at"] is not None
    assert processing["data"]["completed_at"] is None
    assert completed["data"]["completed_at"] is not None
    assert set(output["data"]) == {
        "request_id",
        "conversation_id",
        "status",
        "output",
        "completed_at",
    }
    assert output["created"] - pending["created"] in (14, 15, 16)


async def test_researches_created_before_delivery_are_sent_when_it_starts() -> None:
    recorder = Recorder()
    emulator = FayEmulator(scenario=QUICK, webhook_app=recorder, webhook_secret=SECRET)
    async with emulator.client() as fay:
        await fay.create_conversation("early")
        await anyio.sleep(12)
        async with emulator.delivering():
            await anyio.sleep(0.1)
            assert [e["data"]["status"] for e in recorder.events()] == ["PENDING", "PROCESSING"]


async def test_zero_durations_still_send_pending_then_the_outcome() -> None:
    recorder = Recorder()
    emulator = FayEmulator(scenario=Scenario(0, 0), webhook_app=recorder, webhook_secret=SECRET)
    async with emulator.delivering(), emulator.client() as fay:
        await fay.create_conversation("instant")
        await anyio.sleep(1)
    assert [(e["type"], e["data"]["status"]) for e in recorder.events()] == [
        ("Status", "PENDING"),
        ("Status", "COMPLETED"),
        ("Output", "COMPLETED"),
    ]


async def test_an_injected_clock_is_looked_at_while_delivering() -> None:
    clock = ManualClock()
    recorder = Recorder()
    emulator = FayEmulator(clock=clock, scenario=QUICK, webhook_app=recorder, webhook_secret=SECRET)
    async with emulator.delivering(), emulator.client() as fay:
        await fay.create_conversation("manual")
        await anyio.sleep(1)
        assert len(recorder.requests) == 1
        clock.advance(10)
        await anyio.sleep(0.5)
        assert len(recorder.requests) == 2


# --- retries ---------------------------------------------------------------------------------


async def test_a_refused_delivery_is_retried_three_times_with_backoff() -> None:
    recorder = Recorder(500, 503, 500, 500)
    emulator = FayEmulator(scenario=Scenario(100, 5), webhook_app=recorder, webhook_secret=SECRET)
    async with emulator.delivering(), emulator.client() as fay:
        await fay.create_conversation("refused")
        await anyio.sleep(50)
    assert attempts(emulator) == [
        (1, 0, 500, None),
        (2, 1, 503, None),
        (3, 3, 500, None),
        (4, 7, 500, None),
    ]
    ids = {json.loads(body)["id"] for _, body, _ in recorder.requests}
    assert len(ids) == 1  # the same event each time


async def test_backoff_runs_on_the_emulators_clock() -> None:
    recorder = Recorder(500, 500)
    emulator = FayEmulator(
        scenario=Scenario(100, 5), speed=10, webhook_app=recorder, webhook_secret=SECRET
    )
    async with emulator.delivering(), emulator.client() as fay:
        start = anyio.current_time()
        await fay.create_conversation("fast")
        await anyio.sleep(1)
    assert [(a, round(t, 6)) for a, t, _, _ in attempts(emulator)] == [(1, 0), (2, 1), (3, 3)]
    assert [round(t - start, 6) for t, _, _ in recorder.requests] == [0, 0.1, 0.3]


async def test_a_slow_receiver_times_out_and_is_retried() -> None:
    recorder = Recorder(6.0)
    emulator = FayEmulator(scenario=Scenario(100, 5), webhook_app=recorder, webhook_secret=SECRET)
    async with emulator.delivering(), emulator.client() as fay:
        await fay.create_conversation("slow")
        await anyio.sleep(20)
    assert attempts(emulator) == [(1, 0, None, "timeout"), (2, 6, 200, None)]


async def test_an_unreachable_receiver_is_retried_then_given_up() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    emulator = FayEmulator(
        scenario=Scenario(100, 5), webhook_url="http://127.0.0.1:9/hook", webhook_secret=SECRET
    )
    async with emulator.delivering():
        run = emulator._webhooks._run  # type: ignore[union-attr]
        assert run is not None
        run.http._transport = httpx.MockTransport(refuse)
        async with emulator.client() as fay:
            await fay.create_conversation("nobody there")
            await anyio.sleep(20)
    assert [(a, t, s) for a, t, s, _ in attempts(emulator)] == [
        (1, 0, None),
        (2, 1, None),
        (3, 3, None),
        (4, 7, None),
    ]
    assert emulator.deliveries()[0].error == "ConnectError: connection refused"


async def test_nothing_runs_after_delivery_ends() -> None:
    recorder = Recorder(500, 500)
    emulator = FayEmulator(scenario=Scenario(100, 5), webhook_app=recorder, webhook_secret=SECRET)
    async with emulator.client() as fay:
        async with emulator.delivering():
            await fay.create_conversation("cut short")
            await anyio.sleep(2)  # the second attempt failed at 1 s; the third is due at 3 s
        await anyio.sleep(200)
    assert [a for a, _, _, _ in attempts(emulator)] == [1, 2]


# --- faults ----------------------------------------------------------------------------------


async def test_a_duplicate_is_handled_once_by_the_receiver() -> None:
    received: list[WebhookEvent] = []
    receiver = WebhookReceiver(secret=SECRET, on_event=received.append)
    emulator = FayEmulator(scenario=QUICK, webhook_app=receiver, webhook_secret=SECRET)
    emulator.inject_webhook_fault(WebhookFault.duplicate())
    assert emulator.pending_webhook_fault_count() == 1
    async with emulator.delivering(), emulator.client() as fay:
        await fay.create_conversation("twice")
        await anyio.sleep(1)
    first, again = emulator.deliveries()
    assert first.event_id == again.event_id
    assert (first.fault, again.fault) == ("duplicate", "duplicate")
    assert [e.status for e in received] == [ResearchStatus.PENDING]
    assert emulator.pending_webhook_fault_count() == 0


async def test_a_delayed_event_is_overtaken_by_the_next() -> None:
    received: list[WebhookEvent] = []
    receiver = WebhookReceiver(secret=SECRET, on_event=received.append)
    emulator = FayEmulator(scenario=QUICK, webhook_app=receiver, webhook_secret=SECRET)
    emulator.inject_webhook_fault(WebhookFault.delay(12))
    async with emulator.delivering(), emulator.client() as fay:
        await fay.create_conversation("late")
        await anyio.sleep(20)
    assert [e.status.value for e in received if e.status and e.type == "Status"] == [
        "PROCESSING",
        "PENDING",
        "COMPLETED",
    ]
    late = emulator.deliveries()[1]
    assert (late.status, late.time, late.fault) == ("PENDING", 12, "delay")


async def test_a_delayed_event_refused_is_retried() -> None:
    recorder = Recorder(500)
    emulator = FayEmulator(scenario=Scenario(100, 5), webhook_app=recorder, webhook_secret=SECRET)
    emulator.inject_webhook_fault(WebhookFault.delay(2))
    async with emulator.delivering(), emulator.client() as fay:
        await fay.create_conversation("late and refused")
        await anyio.sleep(10)
    assert attempts(emulator) == [(1, 2, 500, None), (2, 3, 200, None)]


async def test_a_dropped_event_is_never_sent() -> None:
    recorder = Recorder()
    emulator = FayEmulator(scenario=QUICK, webhook_app=recorder, webhook_secret=SECRET)
    emulator.inject_webhook_fault(WebhookFault.drop(), times=2)
    async with emulator.delivering(), emulator.client() as fay:
        await fay.create_conversation("lost")
        await anyio.sleep(20)
    assert [e["data"]["status"] for e in recorder.events()] == ["COMPLETED", "COMPLETED"]
    dropped = [d for d in emulator.deliveries() if d.fault == "drop"]
    assert [(d.status, d.status_code, d.error) for d in dropped] == [
        ("PENDING", None, "dropped"),
        ("PROCESSING", None, "dropped"),
    ]


async def test_a_bad_signature_is_refused_on_every_attempt() -> None:
    received: list[WebhookEvent] = []
    receiver = WebhookReceiver(secret=SECRET, on_event=received.append)
    emulator = FayEmulator(scenario=Scenario(100, 5), webhook_app=receiver, webhook_secret=SECRET)
    emulator.inject_webhook_fault(WebhookFault.bad_signature())
    async with emulator.delivering(), emulator.client() as fay:
        await fay.create_conversation("forged")
        await anyio.sleep(20)
    assert attempts(emulator) == [
        (1, 0, 401, None),
        (2, 1, 401, None),
        (3, 3, 401, None),
        (4, 7, 401, None),
    ]
    assert {d.fault for d in emulator.deliveries()} == {"bad_signature"}
    assert received == []


async def test_clear_faults_forgets_webhook_faults() -> None:
    emulator = FayEmulator(webhook_app=Recorder(), webhook_secret=SECRET)
    emulator.inject_webhook_fault(WebhookFault.drop(), times=3)
    emulator.clear_faults()
    assert emulator.pending_webhook_fault_count() == 0


async def drop_run(seed: int) -> list[bool]:
    emulator = FayEmulator(
        scenario=Scenario(0, 0),
        webhook_app=Recorder(),
        webhook_secret=SECRET,
        webhook_drop_rate=0.25,
        seed=seed,
    )
    async with emulator.delivering(), emulator.client() as fay:
        for n in range(100):
            await fay.create_conversation(f"prompt {n}")
        await anyio.sleep(1)
    return [d.fault == "drop" for d in emulator.deliveries()]


async def test_the_drop_rate_is_seeded() -> None:
    first = await drop_run(7)
    assert len(first) == 300
    assert 50 <= sum(first) <= 100
    assert await drop_run(7) == first
    assert await drop_run(8) != first


# --- lifecycle and options -------------------------------------------------------------------


async def test_delivering_needs_a_target_and_runs_once() -> None:
    with pytest.raises(RuntimeError, match="sends no webhooks"):
        FayEmulator().delivering()
    with pytest.raises(RuntimeError, match="sends no webhooks"):
        FayEmulator().inject_webhook_fault(WebhookFault.drop())
    emulator = FayEmulator(webhook_app=Recorder(), webhook_secret=SECRET)
    async with emulator.delivering():
        with pytest.raises(RuntimeError, match="delivering webhooks already"):
            async with emulator.delivering():
                pass  # pragma: no cover


async def test_an_error_in_the_block_comes_out_as_it_is() -> None:
    emulator = FayEmulator(webhook_app=Recorder(), webhook_secret=SECRET)
    with pytest.raises(KeyError, match="mine"):
        async with emulator.delivering():
            raise KeyError("mine")


def test_no_webhooks_by_default() -> None:
    emulator = FayEmulator()
    assert emulator.webhook_url is None
    assert emulator.deliveries() == []
    assert emulator.pending_webhook_fault_count() == 0
    assert FayEmulator(webhook_app=Recorder(), webhook_secret=SECRET).webhook_url == (
        "http://webhook.test/"
    )


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"webhook_url": "ftp://x/hook"}, ValueError, "http:// or https:// URL"),
        ({"webhook_url": "/hook"}, ValueError, "http:// or https:// URL"),
        ({"webhook_url": 8080}, TypeError, "webhook_url must be a str"),
        ({"webhook_app": "app"}, TypeError, "ASGI application"),
        ({"webhook_url": "http://h/", "webhook_secret": None}, ValueError, "webhook_secret"),
        ({"webhook_url": "http://h/", "webhook_secret": ""}, ValueError, "webhook_secret"),
        ({"webhook_secret": "s"}, ValueError, "needs webhook_url or webhook_app"),
        ({"webhook_drop_rate": 0.5, "webhook_secret": None}, ValueError, "needs webhook_url"),
        ({"webhook_url": "http://h/", "webhook_drop_rate": 2}, ValueError, "between 0 and 1"),
        ({"webhook_url": "http://h/", "webhook_drop_rate": True}, ValueError, "between 0 and 1"),
        ({"webhook_url": "http://h/", "webhook_timeout": 0}, ValueError, "positive number"),
        ({"webhook_url": "http://h/", "webhook_timeout": "5"}, ValueError, "positive number"),
    ],
)
def test_webhook_options_are_checked(
    options: dict[str, Any], error: type[Exception], message: str
) -> None:
    options = {"webhook_secret": SECRET, **options}
    if options["webhook_secret"] is None:
        del options["webhook_secret"]
    with pytest.raises(error, match=message):
        FayEmulator(**options)


def test_injected_faults_are_checked() -> None:
    emulator = FayEmulator(webhook_url="https://example.test/hook", webhook_secret=b"bytes")
    with pytest.raises(TypeError, match="must be a WebhookFault"):
        emulator.inject_webhook_fault("drop")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="whole number"):
        emulator.inject_webhook_fault(WebhookFault.drop(), times=0)
    with pytest.raises(ValueError, match="seconds"):
        WebhookFault.delay(-1)


def test_a_delivery_record_as_json() -> None:
    record = WebhookDelivery(
        event_id="evt_1",
        type="Status",
        request_id="r",
        status="PENDING",
        attempt=2,
        time=1.5,
        status_code=204,
    )
    assert record.ok
    assert not WebhookDelivery(**{**record.to_json(), "status_code": None}).ok
    assert record.to_json()["attempt"] == 2


async def test_the_lifespan_delivers_from_startup_to_shutdown() -> None:
    recorder = Recorder()
    emulator = FayEmulator(scenario=QUICK, webhook_app=recorder, webhook_secret=SECRET)
    to_app, app_inbox = anyio.create_memory_object_stream[dict[str, Any]](4)
    app_outbox, from_app = anyio.create_memory_object_stream[dict[str, Any]](4)
    async with to_app, app_inbox, app_outbox, from_app, anyio.create_task_group() as tg:
        tg.start_soon(emulator, {"type": "lifespan"}, app_inbox.receive, app_outbox.send)
        await to_app.send({"type": "lifespan.startup"})
        assert (await from_app.receive())["type"] == "lifespan.startup.complete"
        async with emulator.client() as fay:
            await fay.create_conversation("served")
            await anyio.sleep(1)
        await to_app.send({"type": "lifespan.shutdown"})
        assert (await from_app.receive())["type"] == "lifespan.shutdown.complete"
    assert len(recorder.requests) == 1
    assert emulator._webhooks is not None
    assert not emulator._webhooks.running


# --- served ----------------------------------------------------------------------------------


@pytest.mark.real_time
@pytest.mark.asyncio_only
async def test_a_served_emulator_delivers_to_a_receiver_under_uvicorn() -> None:
    received: list[WebhookEvent] = []
    receiver = WebhookReceiver(secret=SECRET, on_event=received.append)
    async with serve_in_loop(receiver, lifespan="on") as receiver_url:
        emulator = FayEmulator(
            scenario=Scenario(1, 1),
            speed=20,
            webhook_url=f"{receiver_url}/",
            webhook_secret=SECRET,
        )
        async with serve(emulator) as base_url:
            async with httpx.AsyncClient(base_url=base_url) as http:
                created = await http.post(
                    "/api/v1/conversations",
                    headers={"Authorization": "Bearer test-key"},
                    json={"prompt": "over the wire"},
                )
                request_id = created.json()["data"]["request_id"]
                await eventually(lambda: len(received) == 4)
                # The emulator records an attempt once it has the answer: maybe after
                # the receiver handled the event.
                await eventually(lambda: len(emulator.deliveries()) == 4)
                answer = await http.get("/_emulator/deliveries")
            assert emulator._webhooks is not None
            assert emulator._webhooks.running
        assert not emulator._webhooks.running  # stopped with the server
    assert by_research(received) == {
        request_id: [
            ("Status", "PENDING"),
            ("Status", "PROCESSING"),
            ("Status", "COMPLETED"),
            ("Output", "COMPLETED"),
        ]
    }
    records = answer.json()["deliveries"]
    assert [(r["status_code"], r["attempt"]) for r in records] == [(200, 1)] * 4
