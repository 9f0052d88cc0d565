"""Webhooks across a fleet: an event received by one worker ends a wait on another.

The emulator delivers signed events to worker A's ``WebhookReceiver``, which hands them
to A's ``WebhookFanout``; worker B's fan-out passes them to B's manager, whose research
they are. asyncio only and in real time (a real redis-server on loopback).
"""

from __future__ import annotations

import hashlib
import hmac
import logging

import anyio
import httpx
import pytest
import redis.asyncio

from fay_async import ResearchManager, ResearchStatus, SharedStateError
from fay_async._webhook_events import decode_event
from fay_async.redis import WebhookFanout
from fay_async.testing import FayEmulator, Scenario
from fay_async.webhooks import WebhookEvent, WebhookReceiver

pytestmark = [pytest.mark.anyio, pytest.mark.real_time, pytest.mark.asyncio_only]

SECRET = "placeholder"


def sign(body: bytes) -> str:
    return "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()


class Sink:
    """A manager stand-in that tracks one id and keeps what it is handed."""

    def __init__(self, *request_ids: str) -> None:
        self.active_requests = dict.fromkeys(request_ids)
        self.events: list[object] = []
        self.got = anyio.Event()

    async def handle_webhook(self, event: object) -> None:
        self.events.append(event)
        self.got.set()


async def test_a_webhook_received_by_one_worker_ends_the_wait_on_another(
    redis_url: str, redis_prefix: str
) -> None:
    fanout_a, fanout_b = (WebhookFanout(redis_url, key_prefix=redis_prefix) for _ in range(2))
    receiver_a = WebhookReceiver(secret=SECRET, manager=fanout_a)
    emulator = FayEmulator(
        scenario=Scenario(0.2, 0.3), webhook_app=receiver_a, webhook_secret=SECRET
    )
    async with (
        emulator.delivering(),
        emulator.client() as fay_a,
        emulator.client() as fay_b,
        ResearchManager(fay_a) as worker_a,
        ResearchManager(fay_b) as worker_b,
        anyio.create_task_group() as tg,
    ):
        await tg.start(fanout_a.run, worker_a)
        await tg.start(fanout_b.run, worker_b)
        with anyio.fail_after(5):
            result = await worker_b.research("a question", timeout=60)
        tg.cancel_scope.cancel()
    await fanout_a.aclose()
    await fanout_b.aclose()
    assert result.info.status is ResearchStatus.COMPLETED
    assert result.output.output == emulator.research(result.info.request_id).output
    # B learnt the end and the output from the pushed events alone: its first status
    # check would have come after 3 s, and no output call was made.
    assert emulator.call_counts().get("status", 0) == 0
    assert emulator.call_counts().get("output", 0) == 0
    assert fanout_b.delivered >= 2  # Status COMPLETED and Output at least
    assert fanout_a.delivered == 0  # A does not track the research


async def test_a_webhook_event_crosses_as_the_same_event(redis_url: str, redis_prefix: str) -> None:
    body = (
        b'{"id": "evt_1", "type": "Status", "created": 1764547200,'
        b' "data": {"request_id": "r-1", "status": "PROCESSING", "prompt": "q"}}'
    )
    sent = decode_event(body)
    sink = Sink("r-1")
    publisher, listener = (WebhookFanout(redis_url, key_prefix=redis_prefix) for _ in range(2))
    async with anyio.create_task_group() as tg:
        await tg.start(listener.run, sink)
        await publisher.handle_webhook(sent)
        with anyio.fail_after(3):
            await sink.got.wait()
        tg.cancel_scope.cancel()
    await publisher.aclose()
    await listener.aclose()
    [received] = sink.events
    assert isinstance(received, WebhookEvent)
    assert received == sent
    assert received.status is ResearchStatus.PROCESSING


async def test_a_message_that_is_not_an_event_is_logged_and_skipped(
    redis_url: str, redis_prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    sink = Sink("r-2")
    listener = WebhookFanout(redis_url, key_prefix=redis_prefix)
    raw = redis.asyncio.Redis.from_url(redis_url)
    async with anyio.create_task_group() as tg:
        await tg.start(listener.run, sink)
        with caplog.at_level(logging.ERROR, logger="fay_async.redis"):
            await raw.publish(f"{redis_prefix}:webhooks", "not JSON")
            await raw.publish(
                f"{redis_prefix}:webhooks",
                '{"id": "evt_2", "type": "Status", "created": "yesterday", "data": {}}',
            )
            await raw.publish(f"{redis_prefix}:webhooks", '{"request_id": "r-2"}')
            with anyio.fail_after(3):
                await sink.got.wait()
        tg.cancel_scope.cancel()
    await raw.aclose()
    await listener.aclose()
    assert [getattr(e, "request_id", None) for e in sink.events] == ["r-2"]
    failures = [r for r in caplog.records if "is not a webhook event" in r.getMessage()]
    assert len(failures) == 2


async def test_an_event_no_worker_listens_to_is_an_error_the_receiver_logs(
    redis_url: str, redis_prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    body = (
        b'{"id": "evt_9", "type": "Status", "created": 1764547200,'
        b' "data": {"request_id": "r-9", "status": "COMPLETED", "prompt": "q"}}'
    )
    fanout = WebhookFanout(redis_url, key_prefix=redis_prefix)  # no run(): no one listens
    with pytest.raises(SharedStateError, match="no worker is listening") as caught:
        await fanout.handle_webhook(decode_event(body))
    assert "evt_9 for research r-9 reached no one" in str(caught.value)
    receiver = WebhookReceiver(secret=SECRET, manager=fanout)
    transport = httpx.ASGITransport(app=receiver)
    with caplog.at_level(logging.ERROR, logger="fay_async.webhooks"):
        async with httpx.AsyncClient(transport=transport, base_url="http://fay.test") as http:
            answer = await http.post("/", content=body, headers={"x-fay-signature": sign(body)})
    await fanout.aclose()
    assert answer.status_code == 200  # answered first, as every delivery is
    [record] = [r for r in caplog.records if r.name == "fay_async.webhooks"]
    assert record.levelno == logging.ERROR
    assert "the manager failed to handle Fay webhook event evt_9" in record.getMessage()
    assert record.exc_info is not None
    assert "no worker is listening" in str(record.exc_info[1])
