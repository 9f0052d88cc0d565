"""Cancelling research() at each of its await points leaves nothing running and nothing stale.

research() awaits, in order: a create slot (client budget), the create itself, the status
wait, then either the output or (on timeout) the stop. Each test cancels at one of these
points and checks the emulator (no research PENDING or PROCESSING) and the registry (no
entry left). They run on asyncio and trio; the asyncio-only ones cancel with a bare
``task.cancel()``, which anyio's shields do not hold back.
"""

from __future__ import annotations

import asyncio

import anyio
import pytest

from fay_async import FayClient, RateLimits, ResearchStatus, ResearchTimeoutError
from fay_async._manager import ResearchManager
from fay_async.testing import Fault, FayEmulator, Scenario

from ._emulated import running

pytestmark = pytest.mark.anyio

S = ResearchStatus


@pytest.fixture
def emulator() -> FayEmulator:
    return FayEmulator(scenario=Scenario(pending_s=50.0, processing_s=12.0))


async def cancel_research_at(manager: ResearchManager, at: float, **kwargs: object) -> float:
    """Run research() and cancel it from outside after ``at`` s; return when it ended."""
    with anyio.move_on_after(at) as scope:
        await manager.research("q", **kwargs)  # type: ignore[arg-type]
    assert scope.cancelled_caught
    return anyio.current_time()


async def test_cancel_while_waiting_for_a_create_slot() -> None:
    emulator = FayEmulator(rate_limits={"create": 1})
    async with (
        emulator.client(rate_limits=RateLimits(create=1)) as fay,
        ResearchManager(fay) as manager,
    ):
        first = await manager.start_research("first")
        start = anyio.current_time()
        ended = await cancel_research_at(manager, 10.0)
        assert ended - start == pytest.approx(10.0)  # at once: nothing was sent
        assert list(manager.active_requests) == [first]
        assert emulator.created_prompts() == ["first"]
        assert emulator.call_counts()["stop"] == 0


async def test_cancel_is_prompt_when_another_caller_took_the_create_slot() -> None:
    # research() and a direct create on the same client compete for one create slot. If
    # the other caller gets it, research() waits for the next one (an hour later) and a
    # cancellation must end that wait at once, not after the hour.
    emulator = FayEmulator(scenario=Scenario(pending_s=50.0, processing_s=12.0))
    async with (
        emulator.client(rate_limits=RateLimits(create=1)) as fay,
        ResearchManager(fay) as manager,
    ):
        ended: list[float] = []

        async def via_manager() -> None:
            ended.append(await cancel_research_at(manager, 0.5, timeout=100))

        async with anyio.create_task_group() as tg:
            tg.start_soon(via_manager)
            tg.start_soon(fay.create_conversation, "another caller on the same client")
            await anyio.sleep(1.0)
            assert ended == [pytest.approx(0.5)]
            tg.cancel_scope.cancel()  # the other caller, if it is still waiting
        assert not manager.active_requests
    assert emulator.call_counts()["create"] == 1


async def test_a_create_slot_is_taken_once_per_create() -> None:
    # The manager takes the slot and the client sends the create without another one:
    # two creates on a budget of two go out at once.
    emulator = FayEmulator()
    async with (
        emulator.client(rate_limits=RateLimits(create=2)) as fay,
        ResearchManager(fay) as manager,
    ):
        start = anyio.current_time()
        await manager.start_research("first")
        await manager.start_research("second")
        assert anyio.current_time() == start
        limiter = fay.rate_limiter
        assert limiter is not None
        assert limiter.available("create") == 0


async def test_cancel_during_the_create(emulator: FayEmulator, manager: ResearchManager) -> None:
    emulator.inject_fault("create", Fault.latency(5.0))  # created on arrival, answered late
    ended = await cancel_research_at(manager, 1.0)
    # The create was let through (it was paid for), then the research stopped at once.
    assert ended == pytest.approx(5.0)
    assert [r.status for r in emulator.researches()] == [S.STOPPED]
    assert running(emulator) == []
    assert not manager.active_requests


async def test_cancel_while_polling(emulator: FayEmulator, manager: ResearchManager) -> None:
    ended = await cancel_research_at(manager, 20.0)
    assert ended == pytest.approx(20.0)
    assert [r.status for r in emulator.researches()] == [S.STOPPED]
    assert not manager.active_requests
    assert emulator.call_counts()["stop"] == 1


async def test_cancel_while_fetching_the_output(
    emulator: FayEmulator, manager: ResearchManager
) -> None:
    emulator.inject_fault("output", Fault.latency(30.0))
    await cancel_research_at(manager, 80.0)
    assert [r.status for r in emulator.researches()] == [S.COMPLETED]  # nothing to stop
    assert emulator.call_counts()["stop"] == 0
    assert not manager.active_requests


async def test_cancel_during_the_stop_after_a_timeout(
    emulator: FayEmulator, manager: ResearchManager
) -> None:
    emulator.inject_fault("stop", Fault.latency(3.0))
    with anyio.move_on_after(11.0), pytest.raises(ResearchTimeoutError) as info:
        await manager.research("q", timeout=10.0)
    assert info.value.stopped is True  # the stop finished despite the cancellation
    assert anyio.current_time() == pytest.approx(13.0)
    assert running(emulator) == []
    assert not manager.active_requests


async def test_cancel_during_the_stop_after_a_timeout_cancelled_twice(
    emulator: FayEmulator, manager: ResearchManager
) -> None:
    emulator.inject_fault("stop", Fault.latency(3.0))
    outcome: list[BaseException] = []

    async def victim(scope: anyio.CancelScope) -> None:
        with scope:
            try:
                await manager.research("q", timeout=10.0)
            except ResearchTimeoutError as error:
                outcome.append(error)

    scope = anyio.CancelScope()
    async with anyio.create_task_group() as tg:
        tg.start_soon(victim, scope)
        await anyio.sleep(11.0)
        scope.cancel()
        await anyio.sleep(1.0)
        scope.cancel()
        tg.cancel_scope.cancel()
    assert running(emulator) == []
    assert not manager.active_requests


@pytest.mark.parametrize("second", ["same scope", "enclosing scope"])
async def test_a_second_cancel_does_not_interrupt_the_stop(
    second: str, emulator: FayEmulator, manager: ResearchManager
) -> None:
    emulator.inject_fault("stop", Fault.latency(3.0))
    inner = anyio.CancelScope()
    async with anyio.create_task_group() as outer:

        async def victim() -> None:
            with inner:
                await manager.research("q")

        outer.start_soon(victim)
        await anyio.sleep(20.0)
        inner.cancel()
        await anyio.sleep(1.0)  # the stop is in flight
        if second == "same scope":
            inner.cancel()
        else:
            outer.cancel_scope.cancel()
    assert anyio.current_time() == pytest.approx(23.0)
    assert [r.status for r in emulator.researches()] == [S.STOPPED]
    assert not manager.active_requests


async def test_a_stop_never_outlasts_its_grace(emulator: FayEmulator, fay: FayClient) -> None:
    emulator.inject_fault("stop", Fault.latency(60.0))
    async with ResearchManager(fay, stop_grace=5.0) as manager:
        ended = await cancel_research_at(manager, 20.0)
        assert ended == pytest.approx(25.0)
        request_id = emulator.researches()[0].request_id
        # The stop was sent (the emulator handles it on arrival), but its answer never came
        # back in time: the id stays tracked, so the exit tries again.
        assert request_id in manager.active_requests
    assert not manager.active_requests
    assert running(emulator) == []


async def test_start_research_cancelled_during_the_create_returns_a_tracked_id(
    emulator: FayEmulator, fay: FayClient
) -> None:
    emulator.inject_fault("create", Fault.latency(5.0))
    async with ResearchManager(fay) as manager:
        with anyio.move_on_after(1.0) as scope:
            request_id = await manager.start_research("q")
        assert scope.cancel_called
        # The create completed under the shield: the id is known and tracked, and the
        # cancellation reaches the caller at its next await.
        assert request_id in manager.active_requests
        assert running(emulator) == [request_id]
    assert emulator.research(request_id).status is S.STOPPED


# --- cancellation from outside anyio (asyncio's task.cancel()) ------------------------------


@pytest.mark.asyncio_only
async def test_native_cancel_during_the_create(
    emulator: FayEmulator, manager: ResearchManager
) -> None:
    emulator.inject_fault("create", Fault.latency(5.0))
    task = asyncio.create_task(manager.research("q"))
    await anyio.sleep(1.0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert anyio.current_time() == pytest.approx(1.0)  # the caller left at once
    await anyio.sleep(5.0)  # the create lands; the manager stops what it created
    assert [r.status for r in emulator.researches()] == [S.STOPPED]
    assert not manager.active_requests


@pytest.mark.asyncio_only
async def test_native_cancel_twice_during_the_stop(
    emulator: FayEmulator, manager: ResearchManager
) -> None:
    emulator.inject_fault("stop", Fault.latency(3.0))
    task = asyncio.create_task(manager.research("q"))
    await anyio.sleep(20.0)
    task.cancel()
    await anyio.sleep(1.0)
    assert not task.done()  # the first cancel waits for the stop
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # The second cancel let the caller go; the stop itself ran on in the manager.
    await anyio.sleep(3.0)
    assert [r.status for r in emulator.researches()] == [S.STOPPED]
    assert not manager.active_requests


@pytest.mark.asyncio_only
async def test_native_cancel_of_wait_for(emulator: FayEmulator, manager: ResearchManager) -> None:
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(manager.research("q"), timeout=30.0)
    assert [r.status for r in emulator.researches()] == [S.STOPPED]
    assert not manager.active_requests


@pytest.mark.asyncio_only
async def test_native_cancel_during_a_create_that_then_fails(
    emulator: FayEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    emulator.inject_fault("create", Fault.latency(60.0))
    async with emulator.client(timeout=5.0) as fay, ResearchManager(fay) as manager:
        task = asyncio.create_task(manager.start_research("q"))
        await anyio.sleep(1.0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await anyio.sleep(10.0)
        assert not manager.active_requests
    assert "a create whose caller was cancelled failed" in caplog.text
