"""Stop jobs: their outcome as a value, the log they leave, what stays unstoppable."""

from __future__ import annotations

import logging

import anyio
import anyio.lowlevel
import pytest

from fay_async import FayError, NotFoundError, ResearchManager, ResearchStatus, StopResult
from fay_async._stops import StopJob
from fay_async.testing import Fault, FayEmulator, Scenario

LONG = Scenario(pending_s=1000.0, processing_s=1000.0)
STOPPED = StopResult(request_id="r1", status=ResearchStatus.STOPPED, message="stopped")


@pytest.mark.anyio
async def test_the_outcome_of_a_job_as_a_value_and_as_a_raise() -> None:
    job = StopJob("r1")
    job.result = STOPPED
    assert job.report() is STOPPED
    assert job.outcome() is STOPPED

    refused = NotFoundError("gone", status_code=404)
    job = StopJob("r1", error=refused)
    assert job.report() is refused
    with pytest.raises(NotFoundError, match="gone"):
        job.outcome()

    broken = RuntimeError("boom")
    job = StopJob("r1", error=broken)
    reported = job.report()
    assert type(reported) is FayError
    assert str(reported) == "stopping research r1 failed: RuntimeError('boom')"
    assert reported.__cause__ is broken


@pytest.mark.anyio
async def test_each_ending_of_a_stop_is_logged_and_remembered(
    caplog: pytest.LogCaptureFixture,
) -> None:
    emulator = FayEmulator(scenario=LONG)
    async with emulator.client() as fay, ResearchManager(fay) as manager:
        stopped, failing, unknown = [await manager.start_research(f"q{n}") for n in range(3)]
        assert manager._running is not None
        stops = manager._running.stops
        with caplog.at_level(logging.INFO, logger="fay_async"):
            await manager.cancel_research(stopped)
            emulator.inject_fault("stop", Fault.error(400, "STOP_REFUSED", "No"))
            with pytest.raises(FayError, match="STOP_REFUSED"):
                await manager.cancel_research(failing)
            assert failing in stops.unstoppable
            assert failing in manager.active_requests
            emulator.inject_fault("stop", Fault.error(404, "REQUEST_NOT_FOUND", "Gone"))
            with pytest.raises(NotFoundError):
                await manager.cancel_research(unknown)
            assert unknown not in stops.unstoppable
            await manager.cancel_research(failing)  # a later try succeeds
            assert failing not in stops.unstoppable
            await anyio.lowlevel.checkpoint()
    messages = [r.getMessage() for r in caplog.records if r.name == "fay_async"]
    assert f"research {stopped} stopped (STOPPED)" in messages
    assert any(
        m.startswith(f"could not stop research {failing}: ") and "STOP_REFUSED" in m
        for m in messages
    )
    assert f"research {unknown} is not known to the service: nothing to stop" in messages
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert [r.getMessage().split(":")[0] for r in warnings] == [
        f"could not stop research {failing}"
    ]
