"""The Free tier: 200 researches through ``RateLimits.FREE`` against an emulator that
enforces the Free tier's hourly limits, on virtual time.

Every research is a ``ResearchManager.research()`` call (create, wait, fetch the output),
all started at once; the client's budget admits 10 creates an hour, so the run spans about
20 hours of virtual time. The figure that matters is the number of 429 answers: zero
means the client-side budget kept every endpoint within the server's limits. The emulator
models the hourly limits, not the monthly cap of 100 requests.
"""

from __future__ import annotations

import statistics
import time

import anyio

from fay_async import RateLimits, ResearchManager
from fay_async.testing import FayEmulator

from ._common import API_KEY, Row, run_virtual

SEED = 7


async def _free(count: int) -> list[Row]:
    emulator = FayEmulator(api_keys={API_KEY}, rate_limits="free", seed=SEED)
    finished: dict[str, float] = {}
    wall = time.perf_counter()
    async with (
        emulator.client(rate_limits=RateLimits.FREE) as client,
        ResearchManager(client) as manager,
    ):

        async def one(n: int) -> None:
            result = await manager.research(f"question {n}", timeout=None)
            finished[result.request_id] = anyio.current_time()

        async with anyio.create_task_group() as group:
            for n in range(count):
                group.start_soon(one, n)
    wall = time.perf_counter() - wall
    calls = emulator.calls()
    rejected = sum(1 for call in calls if call.status_code == 429)
    created = {c.request_id: c.time for c in calls if c.endpoint == "create"}
    lags = []
    for request_id, at in finished.items():
        scenario = emulator.research(request_id).scenario
        lags.append(at - (created[request_id] + scenario.pending_s + scenario.processing_s))
    counts = emulator.call_counts()
    name = f"free tier n={count}"
    return [
        Row(
            benchmark=name,
            metric="429 answers",
            value=rejected,
            unit="calls",
            target="0",
            ok=rejected == 0,
            note=f"{len(calls):,} calls in all",
        ),
        Row(
            benchmark=name,
            metric="researches completed",
            value=len(finished),
            unit="",
            target=f"{count}",
            ok=len(finished) == count,
        ),
        Row(
            benchmark=name,
            metric="status calls per research",
            value=counts["status"] / count,
            unit="calls",
            note=f"output calls: {counts['output']}",
        ),
        Row(
            benchmark=name,
            metric="mean detection lag",
            value=statistics.mean(lags),
            unit="s",
            note="the status budget is shared: 100 checks an hour",
        ),
        Row(
            benchmark=name,
            metric="virtual time",
            value=anyio.current_time() / 3600,
            unit="h",
        ),
        Row(benchmark=name, metric="real run time", value=wall, unit="s"),
    ]


def run(*, quick: bool) -> list[Row]:
    """200 researches on the Free tier (20 with ``quick``)."""
    count = 20 if quick else 200
    return run_virtual(lambda: _free(count))
