"""fay_async.redis against a real redis-server on loopback: budget, registry, fan-out.

These run on asyncio only (redis-py's asyncio client) and in real time (real sockets);
the trio tests check that every Redis store refuses trio at construction, clearly.
"""

from __future__ import annotations

import json
import logging
import time
import types
from collections.abc import Callable
from typing import Any

import anyio
import pytest
import redis.asyncio

from fay_async import (
    ConfigurationError,
    FayClient,
    MemoryBudget,
    RateLimitError,
    RateLimits,
    ResearchManager,
    ResearchStatus,
    ResearchStoppedError,
    SharedStateError,
)
from fay_async._ratelimit import RateLimiter
from fay_async.redis import RedisBudget, RedisRegistry, WebhookFanout, redact
from fay_async.testing import FayEmulator, Scenario

pytestmark = [pytest.mark.anyio, pytest.mark.real_time, pytest.mark.asyncio_only]

DEAD_URL = "redis://:hunter2@127.0.0.1:1/0"  # nothing listens on port 1


@pytest.fixture
def emulator() -> FayEmulator:
    return FayEmulator(scenario=Scenario(pending_s=50.0, processing_s=10.0))


async def until(condition: Callable[[], bool], within: float = 3.0) -> None:
    """Wait (polling: the condition lives in another thread or process) until it holds."""
    with anyio.fail_after(within):
        while not condition():  # noqa: ASYNC110 - nothing to wait on but the condition
            await anyio.sleep(0.01)


# --- the budget --------------------------------------------------------------------------

_budgets: list[RedisBudget] = []


def budget(url: str, prefix: str) -> RedisBudget:
    made = RedisBudget(url, key_prefix=prefix)
    _budgets.append(made)
    return made


@pytest.fixture
async def _close_budgets() -> Any:
    yield
    while _budgets:
        await _budgets.pop().aclose()


@pytest.mark.usefixtures("_close_budgets")
async def test_two_budgets_share_one_window(redis_url: str, redis_prefix: str) -> None:
    limits = RateLimits(create=3, window=0.4)
    first = RateLimiter(limits, store=budget(redis_url, redis_prefix))
    second = RateLimiter(limits, store=budget(redis_url, redis_prefix))
    start = time.monotonic()
    for limiter in (first, second, first):
        await limiter.reserve("create")
    assert time.monotonic() - start < 0.3
    with pytest.raises(Exception, match=r"budget of 3 calls per 0\.4 s is spent") as caught:
        await second.reserve("create", wait=False)
    assert 0 < caught.value.retry_after <= 0.45  # type: ignore[attr-defined]
    assert second.next_free("create") > 0
    assert second.available("create") == 0
    await second.reserve("create")  # waits for the oldest call to leave the window
    assert time.monotonic() - start >= 0.4
    assert first.available("create") == float("inf")  # unknown here: the take decides


async def test_the_budget_is_per_api_key(redis_url: str, redis_prefix: str) -> None:
    limits = RateLimits(create=1, window=60.0, wait_for_create=False)
    budget = RedisBudget(redis_url, key_prefix=redis_prefix)
    emulator = FayEmulator()
    async with (
        emulator.client() as base,
        FayClient("key-one", base_url="https://a.example", rate_limits=limits, budget=budget) as a,
        FayClient("key-two", base_url="https://a.example", rate_limits=limits, budget=budget) as b,
    ):
        assert base.rate_limiter is None
        assert a.rate_limiter is not None and b.rate_limiter is not None
        assert a.rate_limiter.scope != b.rate_limiter.scope
        assert "key-one" not in a.rate_limiter.scope
        await a.rate_limiter.reserve("create", wait=False)
        await b.rate_limiter.reserve("create", wait=False)  # another key: its own window
    await budget.aclose()


@pytest.mark.usefixtures("_close_budgets")
async def test_the_fair_share_counts_the_whole_fleet(redis_url: str, redis_prefix: str) -> None:
    limits = RateLimits(status=100, window=100.0)
    first = RateLimiter(limits, store=budget(redis_url, redis_prefix))
    second = RateLimiter(limits, store=budget(redis_url, redis_prefix))
    assert first.share_interval("status", 3) == 3.0  # nothing known of the others yet
    await first.reserve("status")  # reports this process's 3 watched researches
    assert second.share_interval("status", 2) == 2.0
    await second.reserve("status")  # learns of the first one's 3, reports its own 2
    assert second.share_interval("status", 2) == 5.0
    await first.reserve("status")
    assert first.share_interval("status", 3) == 5.0
    assert first.share_interval("status", 0) == 2.0  # this one stopped polling


async def test_a_client_with_a_shared_budget_never_exceeds_it(
    redis_url: str, redis_prefix: str, emulator: FayEmulator
) -> None:
    limits = RateLimits(create=4, window=30.0, wait_for_create=False)
    budget = RedisBudget(redis_url, key_prefix=redis_prefix)
    async with (
        emulator.client(rate_limits=limits, budget=budget) as one,
        emulator.client(rate_limits=limits, budget=budget) as two,
    ):
        made, refused = 0, []
        for client in (one, two, one, two, one, two):
            try:
                await client.create_conversation("q")
                made += 1
            except RateLimitError as error:
                refused.append(str(error))
    assert made == 4
    assert all("budget of 4 calls" in message for message in refused)
    assert emulator.call_counts()["create"] == 4
    await budget.aclose()


async def test_redis_away_is_a_clear_error_and_nothing_is_sent(emulator: FayEmulator) -> None:
    budget = RedisBudget(DEAD_URL)
    async with emulator.client(rate_limits="free", budget=budget) as client:
        with pytest.raises(SharedStateError, match=r"Redis at redis://:\*\*\*@127\.0\.0\.1:1/0"):
            await client.create_conversation("q")
        assert "hunter2" not in repr(budget)
    assert emulator.call_counts()["create"] == 0
    await budget.aclose()


def test_budget_and_registry_arguments_are_checked() -> None:
    with pytest.raises(ConfigurationError, match="a Redis URL or a client"):
        RedisBudget()
    with pytest.raises(ConfigurationError, match="must be a string"):
        RedisBudget(42)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="budget must be a BudgetStore"):
        FayClient("k", rate_limits="free", budget=object())  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="needs rate_limits"):
        FayClient("k", budget=MemoryBudget())
    with pytest.raises(TypeError, match="registry must be a Registry"):
        ResearchManager(FayClient("k"), registry=object())  # type: ignore[arg-type]
    assert redact("redis://user:pw@host:6379/1") == "redis://user:***@host:6379/1"
    assert redact("redis://:pw@host/0") == "redis://:***@host/0"
    assert redact("redis://host:6379") == "redis://host:6379"
    assert "pw" not in repr(RedisRegistry("redis://:pw@host/0"))
    assert "pw" not in repr(WebhookFanout("redis://:pw@host/0"))
    assert repr(MemoryBudget()) == "<MemoryBudget: 0 windows>"


@pytest.mark.parametrize("anyio_backend", ["trio"])
@pytest.mark.parametrize("store", [RedisBudget, RedisRegistry, WebhookFanout])
async def test_trio_is_refused_at_construction(anyio_backend: str, store: Any) -> None:
    with pytest.raises(ConfigurationError, match="needs asyncio: redis-py's asyncio client"):
        store("redis://127.0.0.1:6379/0")


async def test_a_borrowed_client_is_left_open(redis_url: str, redis_prefix: str) -> None:
    client = redis.asyncio.Redis.from_url(redis_url, decode_responses=True)
    async with RedisBudget(client=client, key_prefix=redis_prefix) as budget:
        assert await budget.take("x", 1, 10.0) == 0.0
        assert "given Redis client" in repr(budget)
    assert await client.ping()
    await client.aclose()


# --- the registry ------------------------------------------------------------------------


def registry(url: str, prefix: str, **kwargs: Any) -> RedisRegistry:
    return RedisRegistry(url, key_prefix=prefix, lease=1.0, **kwargs)


async def entries_key(prefix: str, emulator: FayEmulator) -> str:
    """The Redis hash of the fleet's researches made with the emulator's API key."""
    async with emulator.client() as client:
        return f"{prefix}:{client.key_fingerprint}:registry"


async def test_cancel_from_another_worker_reaches_the_owners_waiters(
    redis_url: str, redis_prefix: str, emulator: FayEmulator
) -> None:
    async with (
        emulator.client() as one,
        emulator.client() as two,
        ResearchManager(one, registry=registry(redis_url, redis_prefix)) as owner,
        ResearchManager(two, registry=registry(redis_url, redis_prefix)) as other,
    ):
        request_id = await owner.start_research("q")
        assert request_id not in other.active_requests
        await anyio.sleep(0.1)  # the write-through reaches Redis
        raised: list[float] = []

        async def wait() -> None:
            with pytest.raises(ResearchStoppedError):
                await owner.wait_for_completion(request_id)
            raised.append(time.monotonic())

        async with anyio.create_task_group() as tg:
            tg.start_soon(wait)
            await anyio.sleep(0.05)
            sent = time.monotonic()
            result = await other.cancel_research(request_id)
        assert result.status is ResearchStatus.STOPPED
        assert raised[0] - sent < 0.5
        assert request_id not in owner.active_requests
        assert emulator.research(request_id).status is ResearchStatus.STOPPED
        with pytest.raises(KeyError):
            await other.cancel_research(request_id)  # untracked fleet-wide now


async def test_fleet_cancel_all_stops_every_workers_researches(
    redis_url: str, redis_prefix: str, emulator: FayEmulator
) -> None:
    async with (
        emulator.client() as one,
        emulator.client() as two,
        ResearchManager(one, registry=registry(redis_url, redis_prefix)) as first,
        ResearchManager(two, registry=registry(redis_url, redis_prefix)) as second,
    ):
        ids = [await first.start_research("a") for _ in range(3)]
        ids += [await second.start_research("b") for _ in range(2)]
        await anyio.sleep(0.1)
        with pytest.raises(TypeError, match="needs a shared registry"):
            async with ResearchManager(one) as plain:
                await plain.cancel_all_research(fleet=True)
        results = await second.cancel_all_research(fleet=True)
        assert sorted(results) == sorted(ids)
        await anyio.sleep(0.1)
        assert not first.active_requests
        assert not second.active_requests
    assert {r.status for r in emulator.researches()} == {ResearchStatus.STOPPED}


async def test_orphans_of_a_dead_worker_are_swept(
    redis_url: str, redis_prefix: str, emulator: FayEmulator
) -> None:
    async with emulator.client() as client:
        orphan = (await client.create_conversation("left behind")).request_id
    raw = redis.asyncio.Redis.from_url(redis_url, decode_responses=True)
    entries = await entries_key(redis_prefix, emulator)
    entry = {"owner": "dead-worker", "prompt": "left behind", "status": "PENDING"}
    await raw.hset(entries, orphan, json.dumps(entry))
    shared = registry(redis_url, redis_prefix, sweep_every=0.1)
    async with emulator.client() as client, ResearchManager(client, registry=shared):
        await until(lambda: emulator.research(orphan).status is ResearchStatus.STOPPED)
        await until(lambda: shared.swept == 1)
    assert shared.swept == 1
    assert await raw.hlen(entries) == 0
    await raw.aclose()


async def test_a_restart_with_the_same_name_sweeps_its_previous_life(
    redis_url: str, redis_prefix: str, emulator: FayEmulator
) -> None:
    async with emulator.client() as client:
        left = (await client.create_conversation("q")).request_id
    raw = redis.asyncio.Redis.from_url(redis_url, decode_responses=True)
    entry = {"owner": "web-1", "prompt": "q", "status": None}
    await raw.hset(await entries_key(redis_prefix, emulator), left, json.dumps(entry))
    await raw.set(f"{redis_prefix}:worker:web-1", "1", px=60_000)  # its lease still runs
    shared = RedisRegistry(redis_url, key_prefix=redis_prefix, lease=60.0, worker_id="web-1")
    async with emulator.client() as client, ResearchManager(client, registry=shared) as manager:
        kept = manager.track((await client.create_conversation("kept")).request_id).request_id
        await until(lambda: emulator.research(left).status is ResearchStatus.STOPPED)
        assert emulator.research(kept).status is not ResearchStatus.STOPPED
    await raw.aclose()


async def test_leaving_without_cancel_leaves_nothing_for_the_sweep(
    redis_url: str, redis_prefix: str, emulator: FayEmulator
) -> None:
    shared = registry(redis_url, redis_prefix)
    async with (
        emulator.client() as client,
        ResearchManager(client, registry=shared, cancel_on_exit=False) as manager,
    ):
        request_id = await manager.start_research("q")
        manager.track(request_id)
        assert shared.get(request_id) is not None and len(shared) == 1
        manager.untrack(request_id)
        assert not shared.discard(request_id)
        manager.track(request_id)
        assert await shared.owner(request_id) == shared.worker_id
        assert "1 tracked here" in repr(shared)
    raw = redis.asyncio.Redis.from_url(redis_url, decode_responses=True)
    assert await raw.hlen(await entries_key(redis_prefix, emulator)) == 0
    assert await raw.exists(f"{redis_prefix}:worker:{shared.worker_id}") == 0
    await raw.aclose()
    assert emulator.research(request_id).status is ResearchStatus.PENDING


async def test_redis_away_when_entering_is_a_clear_error(emulator: FayEmulator) -> None:
    async with emulator.client() as client:
        manager = ResearchManager(client, registry=RedisRegistry(DEAD_URL))
        with pytest.raises(SharedStateError, match="joining the fleet") as caught:
            await manager.__aenter__()
        assert "hunter2" not in str(caught.value)
        with pytest.raises(SharedStateError, match="looking up"):
            await RedisRegistry(DEAD_URL).owner("x")


async def test_redis_lost_while_running_is_logged_and_survived(
    redis_url: str, redis_prefix: str, emulator: FayEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    shared = registry(redis_url, redis_prefix, sweep_every=0.05)
    async with emulator.client() as client, ResearchManager(client, registry=shared) as manager:
        real = shared._connection._client
        broken = redis.asyncio.Redis.from_url("redis://:hunter2@127.0.0.1:1/0")
        with caplog.at_level(logging.WARNING, "fay_async.redis"):
            shared._connection._client = broken
            request_id = await manager.start_research("q")  # the manager goes on
            await anyio.sleep(0.3)
            shared._connection._client = real
            await anyio.sleep(0.3)  # the pending write goes out once Redis is back
        assert await shared.owner(request_id) == shared.worker_id
        assert "failed while" in caplog.text
        assert "hunter2" not in caplog.text
        await broken.aclose()


# --- the webhook fan-out -----------------------------------------------------------------


class FakeManager:
    """What the fan-out needs of a manager: its tracked ids and handle_webhook()."""

    def __init__(self, tracked: set[str], fail: bool = False) -> None:
        self.active_requests = dict.fromkeys(tracked)
        self.events: list[Any] = []
        self.fail = fail

    async def handle_webhook(self, event: Any) -> None:
        if self.fail:
            raise RuntimeError("boom")
        self.events.append(event)


async def test_a_webhook_reaches_the_worker_that_tracks_its_research(
    redis_url: str, redis_prefix: str
) -> None:
    owner, other, failing = FakeManager({"r-1"}), FakeManager({"r-2"}), FakeManager({"r-1"}, True)
    fanouts = [WebhookFanout(redis_url, key_prefix=redis_prefix) for _ in range(3)]
    async with anyio.create_task_group() as tg:
        for fanout, manager in zip(fanouts, (owner, other, failing), strict=True):
            await tg.start(fanout.run, manager)
        receiver = WebhookFanout(redis_url, key_prefix=redis_prefix)
        assert await receiver.publish({"request_id": "r-1", "status": "COMPLETED"}) == 3
        await receiver.publish(types.SimpleNamespace(request_id="r-9", status="FAILED"))

        class Event:
            def __init__(self, request_id: str) -> None:
                self.request_id = request_id

            def to_dict(self) -> dict[str, str]:
                return {"request_id": self.request_id}

        await receiver.publish(Event("r-2"))
        await until(lambda: bool(owner.events and other.events))
        tg.cancel_scope.cancel()
    assert [e.status for e in owner.events] == ["COMPLETED"]
    assert [e.request_id for e in other.events] == ["r-2"]
    assert fanouts[0].delivered == 1 and fanouts[2].delivered == 0
    for fanout in [*fanouts, receiver]:
        await fanout.aclose()
    with pytest.raises(SharedStateError, match="publishing"):
        await WebhookFanout(DEAD_URL).publish({"request_id": "x"})
    with pytest.raises(SharedStateError, match="subscribing"):
        await WebhookFanout(DEAD_URL).run(owner)
