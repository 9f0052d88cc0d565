"""Cancel-all under stop latency: is every stop sent, and is every outcome true?

1,000 tracked researches are cancelled at once with ``stop_grace=10`` while every stop
takes 100 ms, then 1 s, to be answered (virtual time: an emulator fault delays each
answer). Stops wait for their turn (``max_concurrent_stops=32``) and get their grace
from when they are sent, so all of them should end STOPPED. The rows count, on the
emulator's side, the researches left running, and the outcomes that say something the
emulator contradicts (a StopResult for a research that is not STOPPED, or "never sent"
for one that is).
"""

from __future__ import annotations

import functools
import time

import anyio

from fay_async import ResearchManager, ResearchStatus, StopResult, StopTimeoutError
from fay_async.testing import Fault, FayEmulator, Scenario

from ._common import Row, run_virtual

LONG = Scenario(pending_s=1e6, processing_s=1e6)


async def _cancel_all(count: int, latency: float) -> tuple[int, int, int, float, float]:
    emulator = FayEmulator(scenario=LONG)
    async with emulator.client() as fay, ResearchManager(fay, stop_grace=10.0) as manager:
        for n in range(count):
            await manager.start_research(f"q{n}")
        emulator.inject_fault("stop", Fault.latency(latency), times=count)
        loop = anyio.current_time()
        wall = time.perf_counter()
        outcomes = await manager.cancel_all_research()
        wall = time.perf_counter() - wall
        loop = anyio.current_time() - loop
    stopped = sum(
        isinstance(o, StopResult) and o.status is ResearchStatus.STOPPED for o in outcomes.values()
    )
    states = {r.request_id: r.status for r in emulator.researches()}
    running = sum(status.is_running for status in states.values())
    misreported = 0
    for request_id, outcome in outcomes.items():
        really_stopped = states[request_id] is ResearchStatus.STOPPED
        if isinstance(outcome, StopResult):
            misreported += outcome.status is ResearchStatus.STOPPED and not really_stopped
        elif isinstance(outcome, StopTimeoutError) and not outcome.sent:
            misreported += really_stopped
    return stopped, running, misreported, loop, wall


def run(*, quick: bool) -> list[Row]:
    """Cancel-all of 1,000 (quick: 40) at 100 ms and 1 s of stop latency."""
    count = 40 if quick else 1000
    rows: list[Row] = []
    for latency in (0.1, 1.0):
        stopped, running, misreported, loop, wall = run_virtual(
            functools.partial(_cancel_all, count, latency)
        )
        name = f"cancel-all {count} at {latency * 1000:g} ms"
        rows += [
            Row(
                benchmark=name,
                metric="researches STOPPED",
                value=stopped,
                unit="",
                target=f"= {count}",
                ok=stopped == count,
                note=f"{loop:.1f} s of loop time, {wall:.2f} s of wall time",
            ),
            Row(
                benchmark=name,
                metric="left running on the emulator",
                value=running,
                unit="",
                target="= 0",
                ok=running == 0,
            ),
            Row(
                benchmark=name,
                metric="outcomes the emulator contradicts",
                value=misreported,
                unit="",
                target="= 0",
                ok=misreported == 0,
            ),
        ]
    return rows
