"""Stops are never starved: their grace starts when they are sent; an overall bound says
which were never sent."""

from __future__ import annotations

import anyio
import pytest

from fay_async import (
    RateLimits,
    ResearchManager,
    ResearchStatus,
    StopResult,
    StopTimeoutError,
)
from fay_async.testing import Fault, FayEmulator, Scenario

from ._emulated import running

pytestmark = pytest.mark.anyio

S = ResearchStatus
LONG = Scenario(pending_s=1000.0, processing_s=1000.0)


async def test_a_stop_queued_behind_many_others_still_gets_its_grace() -> None:
    # 300 stops of one second each, 32 at a time: about 10 s in all, with a 2-s grace.
    emulator = FayEmulator(scenario=LONG)
    async with emulator.client() as fay, ResearchManager(fay, stop_grace=2.0) as manager:
        for n in range(300):
            await manager.start_research(f"q{n}")
        emulator.inject_fault("stop", Fault.latency(1.0), times=300)
        start = anyio.current_time()
        outcomes = await manager.cancel_all_research()
        assert anyio.current_time() - start == pytest.approx(10.0)  # ceil(300 / 32) s
    assert all(isinstance(o, StopResult) and o.status is S.STOPPED for o in outcomes.values())
    assert running(emulator) == []
    assert emulator.call_counts()["stop"] == 300


async def test_an_overall_bound_reports_the_stops_never_sent() -> None:
    emulator = FayEmulator(scenario=LONG)
    limits = RateLimits(stop=5)
    async with emulator.client(rate_limits=limits) as fay, ResearchManager(fay) as manager:
        ids = [await manager.start_research(f"q{n}") for n in range(8)]
        outcomes = await manager.cancel_all_research(timeout=60)
        assert not manager.active_requests
    stopped = [i for i in ids if isinstance(outcomes[i], StopResult)]
    never_sent = [i for i in ids if isinstance(outcomes[i], StopTimeoutError)]
    assert len(stopped) == 5
    assert len(never_sent) == 3
    for request_id in never_sent:
        error = outcomes[request_id]
        assert isinstance(error, StopTimeoutError)
        assert error.sent is False
        assert "given up before it was sent" in str(error)
    # What the outcome says is what the service saw: no stop was sent for those three.
    assert sorted(running(emulator)) == sorted(never_sent)
    assert emulator.call_counts()["stop"] == 5


async def test_without_a_bound_stops_wait_for_the_budget() -> None:
    emulator = FayEmulator(scenario=LONG)
    limits = RateLimits(stop=5, window=600.0)
    async with emulator.client(rate_limits=limits) as fay, ResearchManager(fay) as manager:
        for n in range(8):
            await manager.start_research(f"q{n}")
        start = anyio.current_time()
        outcomes = await manager.cancel_all_research()
        assert anyio.current_time() - start == pytest.approx(600.0, rel=0.01)
    assert all(isinstance(o, StopResult) for o in outcomes.values())
    assert running(emulator) == []


async def test_exit_timeout_bounds_the_stops_of_leaving() -> None:
    emulator = FayEmulator(scenario=LONG)
    async with (
        emulator.client(rate_limits=RateLimits(stop=2)) as fay,
        ResearchManager(fay, exit_timeout=30) as manager,
    ):
        for n in range(4):
            await manager.start_research(f"q{n}")
        start = anyio.current_time()
    assert anyio.current_time() - start == pytest.approx(30.0)
    assert len(running(emulator)) == 2
    assert emulator.call_counts()["stop"] == 2


async def test_a_stop_sent_but_unanswered_within_the_grace() -> None:
    emulator = FayEmulator(scenario=LONG)
    async with emulator.client() as fay, ResearchManager(fay, stop_grace=2.0) as manager:
        request_id = await manager.start_research("q")
        emulator.inject_fault("stop", Fault.latency(60.0))
        with pytest.raises(StopTimeoutError, match="after it was sent") as caught:
            await manager.cancel_research(request_id)
    assert caught.value.sent is True
    assert caught.value.request_id == request_id


@pytest.mark.parametrize(
    ("value", "error", "message"),
    [
        ("30", TypeError, "exit_timeout must be a number of seconds or None, got str"),
        (0, ValueError, "exit_timeout must be a positive number of seconds"),
    ],
)
def test_a_bad_exit_timeout_is_refused(value: object, error: type[Exception], message: str) -> None:
    fay = FayEmulator().client()
    with pytest.raises(error, match=message):
        ResearchManager(fay, exit_timeout=value)  # type: ignore[arg-type]
