"""Shared state through a real redis-server: what a budget check, a cross-worker cancel
and the orphan sweep cost.

- **budget check per call**: ``RateLimiter.reserve`` with room in the window, in memory
  and through :class:`RedisBudget` (one script round trip on loopback); median over
  blocks of calls.
- **cross-worker cancel**: two managers with their own :class:`RedisRegistry` on one
  emulator; the second cancels the first's research, and the time is from that call to
  the owner's waiter raising ``ResearchStoppedError`` (median over researches).
- **orphan sweep**: a manager whose tasks are cut off as a kill would (no goodbye), and
  the time until a survivor has stopped its researches, for a lease of 1 s and a sweep
  every 0.25 s.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import time
from pathlib import Path

from fay_async import RateLimits, ResearchManager, ResearchStatus, ResearchStoppedError
from fay_async._ratelimit import RateLimiter
from fay_async.redis import RedisBudget, RedisRegistry
from fay_async.testing import FayEmulator, Scenario
from tests._redis_server import redis_server

from ._common import Row, median

LEASE = 1.0


async def _budget_cost(url: str, calls: int, blocks: int) -> tuple[float, float]:
    limits = RateLimits(status=10**9, window=3600.0)
    memory = RateLimiter(limits)
    async with RedisBudget(url, key_prefix="bench") as budget:
        shared = RateLimiter(limits, store=budget)
        times: dict[str, list[float]] = {"memory": [], "redis": []}
        for _ in range(blocks):
            for name, limiter in (("memory", memory), ("redis", shared)):
                start = time.perf_counter()
                for _ in range(calls):
                    await limiter.reserve("status")
                times[name].append((time.perf_counter() - start) / calls)
    return median(times["memory"]), median(times["redis"])


async def _cancel_latency(url: str, count: int) -> float:
    emulator = FayEmulator(scenario=Scenario(pending_s=600.0, processing_s=60.0))
    latencies = []
    async with (
        emulator.client() as one,
        emulator.client() as two,
        ResearchManager(one, registry=RedisRegistry(url, key_prefix="cancel")) as owner,
        ResearchManager(two, registry=RedisRegistry(url, key_prefix="cancel")) as other,
    ):
        for _ in range(count):
            request_id = await owner.start_research("q")
            await asyncio.sleep(0.02)
            raised = asyncio.Event()

            async def wait(request_id: str = request_id, raised: asyncio.Event = raised) -> None:
                with contextlib.suppress(ResearchStoppedError):
                    await owner.wait_for_completion(request_id)
                raised.set()

            waiter = asyncio.create_task(wait())
            await asyncio.sleep(0.01)
            start = time.perf_counter()
            await other.cancel_research(request_id)
            await raised.wait()
            latencies.append(time.perf_counter() - start)
            await waiter
    return median(latencies)


async def _sweep_time(url: str, count: int) -> float:
    emulator = FayEmulator(scenario=Scenario(pending_s=600.0, processing_s=60.0))
    doomed = RedisRegistry(url, key_prefix="sweep", lease=LEASE)
    async with emulator.client() as client:
        manager = ResearchManager(client, registry=doomed, cancel_on_exit=False)
        await manager.__aenter__()
        ids = [await manager.start_research("q") for _ in range(count)]
        await asyncio.sleep(0.1)
        assert doomed._scope is not None
        doomed._scope.cancel()  # as a kill: no heartbeat, no goodbye
        killed = time.perf_counter()
        survivor = RedisRegistry(url, key_prefix="sweep", lease=LEASE, sweep_every=LEASE / 4)
        async with emulator.client() as other, ResearchManager(other, registry=survivor):
            while not all(emulator.research(i).status is ResearchStatus.STOPPED for i in ids):  # noqa: ASYNC110
                await asyncio.sleep(0.01)
            swept = time.perf_counter() - killed
        await manager.__aexit__(None, None, None)
    return swept


def run(*, quick: bool) -> list[Row]:
    """Budget checks (quick: a few), cancels and one sweep against a redis-server."""
    calls, blocks, cancels, orphans = (50, 3, 3, 3) if quick else (2000, 15, 50, 20)
    with tempfile.TemporaryDirectory() as folder, redis_server(Path(folder)) as url:
        memory, redis = asyncio.run(_budget_cost(url, calls, blocks))
        cancel = asyncio.run(_cancel_latency(url, cancels))
        sweep = asyncio.run(_sweep_time(url, orphans))
    return [
        Row(
            benchmark="fleet budget",
            metric="budget check per call, in memory",
            value=memory * 1e6,
            unit="µs",
        ),
        Row(
            benchmark="fleet budget",
            metric="budget check per call, RedisBudget (loopback)",
            value=redis * 1e6,
            unit="µs",
            note="one Lua script round trip per slot",
        ),
        Row(
            benchmark="fleet registry",
            metric="cross-worker cancel to the owner's ResearchStoppedError",
            value=cancel * 1000,
            unit="ms",
            note=f"median of {cancels}",
        ),
        Row(
            benchmark="fleet registry",
            metric=f"orphan sweep of {orphans} researches after a kill",
            value=sweep,
            unit="s",
            target=f"< lease + sweep_every + 1 s = {LEASE * 1.25 + 1:g} s",
            ok=sweep < LEASE * 1.25 + 1,
            note=f"lease {LEASE:g} s, sweep every {LEASE / 4:g} s",
        ),
    ]
