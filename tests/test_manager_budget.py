"""Many researches under the published budgets: the manager never provokes a 429."""

from __future__ import annotations

import itertools

import anyio
import pytest

from fay_async import RateLimits, ResearchResult, ResearchStatus
from fay_async._manager import ResearchManager
from fay_async.testing import FayEmulator

pytestmark = pytest.mark.anyio

HOUR = 3600.0


def most_in_an_hour(times: list[float]) -> int:
    times = sorted(times)
    best, lo = 0, 0
    for hi, t in enumerate(times):
        while times[lo] <= t - HOUR:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


# 20 on Free is twice the hourly create budget, 150 on Pro one and a half times.
@pytest.mark.parametrize(
    ("tier", "limits", "count"), [("free", RateLimits.FREE, 20), ("pro", RateLimits.PRO, 150)]
)
async def test_a_tier_of_concurrent_researches_gets_no_429(
    tier: str, limits: RateLimits, count: int
) -> None:
    emulator = FayEmulator(rate_limits=tier, seed=11)
    results: list[ResearchResult] = []
    async with emulator.client(rate_limits=limits) as fay, ResearchManager(fay) as manager:

        async def one(n: int) -> None:
            results.append(await manager.research(f"question {n}", timeout=None))

        async with anyio.create_task_group() as tg:
            for n in range(count):
                tg.start_soon(one, n)
        assert not manager.active_requests
    calls = emulator.calls()
    assert [c for c in calls if c.status_code == 429] == []
    assert len(results) == count
    assert {r.info.status for r in results} == {ResearchStatus.COMPLETED}
    assert {s.status for s in emulator.researches()} == {ResearchStatus.COMPLETED}
    by_endpoint = {
        endpoint: [c.time for c in group]
        for endpoint, group in itertools.groupby(
            sorted(calls, key=lambda c: str(c.endpoint)), key=lambda c: c.endpoint
        )
    }
    for endpoint, times in by_endpoint.items():
        assert endpoint is not None
        limit = limits.limit(endpoint)
        assert limit is not None
        assert most_in_an_hour(times) <= limit
    # The status budget is spread over the researches: about one check each is enough.
    assert len(by_endpoint["status"]) <= 2 * count
    assert anyio.current_time() < 2 * HOUR  # the creates beyond the first hour's slots wait
