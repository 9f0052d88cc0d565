"""A fleet's workers leaving: nothing is forgotten, nothing holds the exit, keys stay apart.

asyncio only and in real time, against a real redis-server on loopback.
"""

from __future__ import annotations

import json
import logging
import time

import anyio
import pytest
import redis.asyncio

from fay_async import NotTrackedError, RateLimits, ResearchManager, ResearchStatus
from fay_async.redis import RedisRegistry
from fay_async.testing import Fault, FayEmulator, Scenario

pytestmark = [pytest.mark.anyio, pytest.mark.real_time, pytest.mark.asyncio_only]


@pytest.fixture
def emulator() -> FayEmulator:
    return FayEmulator(scenario=Scenario(pending_s=50.0, processing_s=10.0))


def registry(url: str, prefix: str, **kwargs: float) -> RedisRegistry:
    return RedisRegistry(url, key_prefix=prefix, lease=1.0, **kwargs)


async def until(condition: object, within: float = 3.0) -> None:
    with anyio.fail_after(within):
        while not condition():  # type: ignore[operator]  # noqa: ASYNC110 - other tasks' state
            await anyio.sleep(0.01)


async def test_a_research_whose_stop_failed_on_exit_is_left_to_the_fleet(
    redis_url: str, redis_prefix: str, emulator: FayEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    survivor = registry(redis_url, redis_prefix, sweep_every=0.1)
    async with (
        emulator.client() as one,
        emulator.client() as two,
        ResearchManager(two, registry=survivor),
    ):
        with caplog.at_level(logging.WARNING, logger="fay_async"):
            async with ResearchManager(one, registry=registry(redis_url, redis_prefix)) as leaving:
                request_id = await leaving.start_research("q")
                emulator.inject_fault("stop", Fault.error(400, "BAD_REQUEST"))
        assert "1 of 1 researches could not be stopped on exit" in caplog.text
        assert emulator.research(request_id).status is not ResearchStatus.STOPPED
        # Its entry stayed in Redis, owned by nobody: the survivor's sweep stops it.
        await until(lambda: emulator.research(request_id).status is ResearchStatus.STOPPED)
        await until(lambda: survivor.swept == 1)
    assert [c.status_code for c in emulator.calls() if c.endpoint == "stop"] == [400, 200]


async def test_an_orphan_stop_waiting_for_its_turn_does_not_hold_the_exit(
    redis_url: str, redis_prefix: str, emulator: FayEmulator
) -> None:
    raw = redis.asyncio.Redis.from_url(redis_url, decode_responses=True)
    # One stop an hour, spent: the sweep's stop of the orphan would wait an hour for it.
    limits = RateLimits(stop=1)
    async with emulator.client(rate_limits=limits) as client:
        orphan = (await client.create_conversation("left behind")).request_id
        spent = (await client.create_conversation("stopped")).request_id
        await client.stop_conversation(spent)
        entries = f"{redis_prefix}:{client.key_fingerprint}:registry"
        entry = {"owner": "dead-worker", "prompt": "left behind", "status": "PENDING"}
        await raw.hset(entries, orphan, json.dumps(entry))
        shared = registry(redis_url, redis_prefix, sweep_every=0.05)
        manager = ResearchManager(client, registry=shared, exit_timeout=0.5)
        async with manager:
            await until(lambda: orphan in manager._running.stops)  # type: ignore[union-attr]
            left = time.monotonic()
        assert time.monotonic() - left < 2.0
    # Never sent, so left for the fleet: still running, still in the registry.
    assert emulator.research(orphan).status is not ResearchStatus.STOPPED
    assert json.loads(await raw.hget(entries, orphan))["owner"] == "dead-worker"
    await raw.aclose()


async def test_the_fleets_of_two_api_keys_never_meet(redis_url: str, redis_prefix: str) -> None:
    emulator = FayEmulator(api_keys=["key-a", "key-b"], scenario=Scenario(50.0, 10.0))
    async with (
        emulator.client(api_key="key-a") as a,
        emulator.client(api_key="key-b") as b,
        ResearchManager(a, registry=registry(redis_url, redis_prefix)) as first,
        ResearchManager(b, registry=registry(redis_url, redis_prefix, sweep_every=0.05)) as other,
    ):
        request_id = await first.start_research("q")
        await anyio.sleep(0.2)  # written through, and swept at least twice by the other
        assert await other._registry.fleet_ids() == []  # type: ignore[attr-defined]
        with pytest.raises(NotTrackedError):
            await other.cancel_research(request_id)
        results = await other.cancel_all_research(fleet=True)
        assert results == {}
        assert emulator.research(request_id).status is not ResearchStatus.STOPPED
        assert request_id in first.active_requests
