"""Waits that end on a push: ResearchManager.handle_webhook and the safety-net schedule."""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
from typing import Any

import anyio
import pytest

from fay_async import (
    FayClient,
    PollPolicy,
    ResearchFailedError,
    ResearchManager,
    ResearchStatus,
)
from fay_async.testing import FayEmulator, Scenario
from fay_async.webhooks import WebhookEvent, parse_event

pytestmark = pytest.mark.anyio

S = ResearchStatus
SECRET = "placeholder"
LONG = Scenario(pending_s=1000.0, processing_s=1000.0)
_ids = itertools.count()


def event(type_: str, request_id: str, **data: Any) -> WebhookEvent:
    """A signed event, read back the way the receiver reads one."""
    body = json.dumps(
        {
            "id": f"evt_{next(_ids)}",
            "type": type_,
            "created": 1750682923,
            "data": {"request_id": request_id, "conversation_id": "c" * 24, **data},
        }
    ).encode()
    signature = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    return parse_event(body, signature, secret=SECRET)


def completed(request_id: str) -> WebhookEvent:
    return event(
        "Status",
        request_id,
        status="COMPLETED",
        prompt="q",
        created_at="2025-06-23T12:48:43.031000+00:00",
        started_at="2025-06-23T12:48:53.031000+00:00",
        completed_at="2025-06-23T12:49:03.031000+00:00",
    )


def output(request_id: str, text: str) -> WebhookEvent:
    return event(
        "Output",
        request_id,
        status="COMPLETED",
        output=text,
        completed_at="2025-06-23T12:49:03.031000+00:00",
    )


@pytest.fixture
def emulator() -> FayEmulator:
    return FayEmulator(scenario=LONG)


async def test_a_push_ends_the_wait_at_once_with_no_status_or_output_call(
    emulator: FayEmulator, fay: FayClient
) -> None:
    async with ResearchManager(fay) as manager:
        results = []

        async def research() -> None:
            results.append(await manager.research("q", on_created=created.append))

        created: list[str] = []
        async with anyio.create_task_group() as tg:
            tg.start_soon(research)
            await anyio.sleep(1)
            [request_id] = created
            await manager.handle_webhook(completed(request_id))
            await manager.handle_webhook(output(request_id, "# pushed"))
            pushed_at = anyio.current_time()
        assert anyio.current_time() == pushed_at  # no wait after the push
    [result] = results
    assert result.text == "# pushed"
    assert result.info.prompt == "q"  # kept from the Status event
    assert emulator.call_counts()["output"] == 0
    assert emulator.call_counts()["status"] <= 1  # at most the first scheduled check


async def test_an_error_event_fails_the_wait_with_its_message(
    emulator: FayEmulator, fay: FayClient, manager: ResearchManager
) -> None:
    request_id = await manager.start_research("q")

    async def push() -> None:
        await anyio.sleep(5)
        failed = event("Error", request_id, status="FAILED", error_message="model overloaded")
        await manager.handle_webhook(failed)

    async with anyio.create_task_group() as tg:
        tg.start_soon(push)
        with pytest.raises(ResearchFailedError, match="model overloaded") as caught:
            await manager.wait_for_completion(request_id)
    assert caught.value.error_message == "model overloaded"
    assert request_id not in manager.active_requests


async def test_watch_yields_what_is_pushed(fay: FayClient, manager: ResearchManager) -> None:
    request_id = await manager.start_research("q")
    seen: list[S] = []

    async def follow() -> None:
        seen.extend([info.status async for info in manager.watch(request_id)])

    async with anyio.create_task_group() as tg:
        tg.start_soon(follow)
        await anyio.sleep(1)
        await manager.handle_webhook(event("Status", request_id, status="PROCESSING"))
        await anyio.sleep(1)
        await manager.handle_webhook(completed(request_id))
    assert seen[-2:] == [S.PROCESSING, S.COMPLETED]


async def test_while_pushes_flow_polling_is_a_safety_net(
    emulator: FayEmulator, fay: FayClient
) -> None:
    # A research whose every event is lost still ends: the safety net checks it.
    quick = FayEmulator(scenario=Scenario(pending_s=30.0, processing_s=30.0))
    async with quick.client() as client, ResearchManager(client) as manager:
        other = await manager.start_research("pushed")
        lost = await manager.start_research("lost")
        await manager.handle_webhook(event("Status", other, status="PENDING"))
        start = anyio.current_time()
        info = await manager.wait_for_completion(lost)
        waited = anyio.current_time() - start
    assert info.status is S.COMPLETED
    # The safety net's first check comes after about two minutes (not 3 s), and it is
    # the only status call: the default schedule would have made about eight.
    assert 90.0 <= waited <= 150.0
    assert quick.call_counts()["status"] == 1


async def test_pushes_stop_flowing_after_a_quiet_while(fay: FayClient) -> None:
    quick = FayEmulator(scenario=Scenario(pending_s=5000.0, processing_s=10.0))
    policy = PollPolicy(pending_first=10.0, pending_max=10.0, jitter=0.0)
    net = PollPolicy(pending_first=120.0, pending_growth=2.0, pending_max=600.0, jitter=0.0)
    async with (
        quick.client() as client,
        ResearchManager(client, poll_policy=policy, push_poll_policy=net) as manager,
    ):
        request_id = await manager.start_research("q")
        await manager.handle_webhook(event("Status", request_id, status="PENDING"))
        async with anyio.create_task_group() as tg:
            tg.start_soon(manager.wait_for_completion, request_id)
            await anyio.sleep(100)
            assert quick.call_counts()["status"] == 0  # the safety net waits 2 minutes
            # Checks at 120, 360 and 840 s on the safety net; the window ends at 900 s, so
            # the check at 1440 s is the last one it schedules; then every 10 s.
            await anyio.sleep(1500)
            before = quick.call_counts()["status"]
            await anyio.sleep(100)
            during_quiet = quick.call_counts()["status"] - before
            tg.cancel_scope.cancel()
    assert during_quiet == 10


async def test_events_that_say_nothing_of_a_research_are_ignored(
    emulator: FayEmulator, fay: FayClient
) -> None:
    manager = ResearchManager(fay)
    test_event = event("TestEvent", "r1")
    test_event = WebhookEvent(id="evt_test", type="Test", created=test_event.created)
    await manager.handle_webhook(test_event)  # not open yet: nothing happens
    async with manager:
        await manager.handle_webhook(test_event)
        request_id = await manager.start_research("q")
    await manager.handle_webhook(completed(request_id))  # closed: nothing happens
    assert emulator.research(request_id).status is S.STOPPED


async def test_without_its_output_event_the_output_is_fetched_after_a_short_wait(
    emulator: FayEmulator, fay: FayClient
) -> None:
    quick = FayEmulator(scenario=Scenario(pending_s=5.0, processing_s=5.0))
    slow = PollPolicy(pending_first=1000.0, pending_max=1000.0)  # only the push ends it
    async with quick.client() as client, ResearchManager(client, poll_policy=slow) as manager:
        created: list[str] = []
        results = []

        async def research() -> None:
            results.append(await manager.research("q", on_created=created.append))

        async with anyio.create_task_group() as tg:
            tg.start_soon(research)
            await anyio.sleep(11)  # the research has completed on the emulator
            await manager.handle_webhook(completed(created[0]))  # its Output event is lost
            pushed_at = anyio.current_time()
        waited = anyio.current_time() - pushed_at
    assert waited == pytest.approx(2.0)  # OUTPUT_PUSH_WAIT, then the output call
    assert results[0].info.status is S.COMPLETED
    assert quick.call_counts()["output"] == 1
