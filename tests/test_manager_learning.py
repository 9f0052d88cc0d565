"""The manager learns what the app learns: status read through it, untrack, stop if needed."""

from __future__ import annotations

import anyio
import pytest

from fay_async import FayClient, PollPolicy, ResearchManager, ResearchStatus, StopResult
from fay_async.testing import FayEmulator, Scenario

from ._emulated import running

pytestmark = pytest.mark.anyio

S = ResearchStatus
TEN_SECONDS = Scenario(pending_s=5.0, processing_s=5.0)
SLOW_POLLS = PollPolicy(pending_first=1000.0, pending_max=1000.0, jitter=0.0)


@pytest.fixture
def emulator() -> FayEmulator:
    return FayEmulator(scenario=TEN_SECONDS)


async def test_status_read_through_the_manager_untracks_an_ended_research(
    emulator: FayEmulator, fay: FayClient
) -> None:
    async with ResearchManager(fay, poll_policy=SLOW_POLLS) as manager:
        request_id = await manager.start_research("q")
        info = await manager.get_status(request_id)
        assert info.status is S.PENDING
        assert manager.active_requests[request_id].status is S.PENDING
        await anyio.sleep(7)
        assert (await manager.get_status(request_id)).status is S.PROCESSING
        assert manager.active_requests[request_id].status is S.PROCESSING
        await anyio.sleep(5)
        assert (await manager.get_status(request_id)).status is S.COMPLETED
        assert request_id not in manager.active_requests
    # Leaving spent no stop call on the research known to have ended.
    assert emulator.call_counts()["stop"] == 0


async def test_a_status_read_through_the_manager_wakes_its_waiters(
    emulator: FayEmulator, fay: FayClient
) -> None:
    seen: list[S] = []
    async with ResearchManager(
        fay, poll_policy=SLOW_POLLS, on_status_change=lambda info: seen.append(info.status)
    ) as manager:
        request_id = await manager.start_research("q")
        ended_at: list[float] = []

        async def wait() -> None:
            await manager.wait_for_completion(request_id)
            ended_at.append(anyio.current_time())

        async with anyio.create_task_group() as tg:
            tg.start_soon(wait)
            await anyio.sleep(20)
            await manager.get_status(request_id)
            now = anyio.current_time()
        assert ended_at == [now]  # at once: the poller's own check is 1000 s away
    assert seen == [S.COMPLETED]
    assert emulator.call_counts()["status"] == 1


async def test_status_of_an_untracked_research_does_not_track_it(
    emulator: FayEmulator, fay: FayClient, manager: ResearchManager
) -> None:
    created = await fay.create_conversation("made elsewhere")
    assert (await manager.get_status(created.request_id)).status is S.PENDING
    assert created.request_id not in manager.active_requests


async def test_untrack_leaves_the_research_running(emulator: FayEmulator, fay: FayClient) -> None:
    async with ResearchManager(fay) as manager:
        request_id = await manager.start_research("q")
        entry = manager.untrack(request_id)
        assert entry is not None
        assert entry.request_id == request_id
        assert manager.untrack(request_id) is None
        assert not manager.active_requests
        assert await manager.cancel_all_research() == {}
    assert running(emulator) == [request_id]
    assert emulator.call_counts()["stop"] == 0


async def test_a_research_tracked_by_id_is_checked_before_it_is_stopped(
    emulator: FayEmulator, fay: FayClient
) -> None:
    done = await fay.create_conversation("ended already")
    await anyio.sleep(12)  # the first has completed
    live = await fay.create_conversation("still going")
    async with ResearchManager(fay) as manager:
        manager.track(done.request_id)
        manager.track(live.request_id)
        outcomes = await manager.cancel_all_research()
    assert outcomes[done.request_id] == StopResult(
        request_id=done.request_id,
        status=S.COMPLETED,
        message="the research had already ended (COMPLETED)",
    )
    result = outcomes[live.request_id]
    assert isinstance(result, StopResult)
    assert result.status is S.STOPPED
    assert emulator.call_counts()["stop"] == 1  # no stop call for the one that had ended
