"""The manager's task group may be entered in one task and left in another."""

from __future__ import annotations

import asyncio

import anyio
import pytest

from fay_async import ResearchManager
from fay_async._tasks import HostedTaskGroup
from fay_async.testing import FayEmulator, Scenario

pytestmark = pytest.mark.anyio


async def test_tasks_run_and_close_waits_for_them() -> None:
    group = HostedTaskGroup()
    tg = await group.open()
    done: list[str] = []

    async def work() -> None:
        await anyio.sleep(5)
        done.append("work")

    tg.start_soon(work)
    await group.close()
    assert done == ["work"]


async def test_an_error_in_a_task_is_raised_by_close() -> None:
    group = HostedTaskGroup()
    tg = await group.open()

    async def fail() -> None:
        raise LookupError("boom")

    tg.start_soon(fail)
    with pytest.raises(Exception) as caught:
        await group.close()
    assert caught.group_contains(LookupError, match="boom")


@pytest.mark.asyncio_only
async def test_a_manager_entered_and_left_in_two_asyncio_tasks() -> None:
    # pytest-asyncio runs an async fixture's setup and teardown as two tasks.
    emulator = FayEmulator(scenario=Scenario(pending_s=10.0, processing_s=10.0))
    async with emulator.client() as fay:
        manager = ResearchManager(fay)
        await asyncio.get_running_loop().create_task(manager.__aenter__())
        request_id = await manager.start_research("q")
        await asyncio.get_running_loop().create_task(manager.__aexit__(None, None, None))
        assert emulator.research(request_id).status == "STOPPED"
        assert not manager.active_requests


@pytest.mark.asyncio_only
async def test_cancelled_while_opening_leaves_no_task_behind() -> None:
    group = HostedTaskGroup()
    task = asyncio.get_running_loop().create_task(group.open())
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    for _ in range(3):
        await asyncio.sleep(0)
    assert group._task is not None
    assert group._task.done()
