"""RateLimits and RateLimiter: the client-side sliding-window budget, on virtual time."""

from __future__ import annotations

import math

import anyio
import pytest

from fay_async import RateLimitError, RateLimits
from fay_async._ratelimit import HOUR, SLACK, RateLimiter, coerce_limits

from ._fake_fay import FakeFay, client

# --- RateLimits -----------------------------------------------------------------------------


def test_published_tiers() -> None:
    free, pro = RateLimits.FREE, RateLimits.PRO
    assert (free.create, free.status, free.output, free.stop) == (10, 100, 50, 20)
    assert (pro.create, pro.status, pro.output, pro.stop) == (100, 1000, 500, 200)
    assert free.window == pro.window == HOUR == 3600.0
    assert free.wait_for_create is True
    assert free.limit("status") == 100
    assert free.interval("status") == 36.0
    assert RateLimits().interval("status") == 0.0


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "10"])
def test_limits_must_be_positive_whole_numbers(bad: object) -> None:
    with pytest.raises(ValueError, match=r"RateLimits\.status must be a positive whole number"):
        RateLimits(status=bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [0, -5.0, math.inf, math.nan, True, "60"])
def test_window_must_be_a_positive_finite_number(bad: object) -> None:
    with pytest.raises(ValueError, match=r"RateLimits\.window must be a positive number"):
        RateLimits(window=bad)  # type: ignore[arg-type]


def test_coerce_limits() -> None:
    assert coerce_limits(None) is None
    assert coerce_limits(RateLimits.FREE) is RateLimits.FREE
    assert coerce_limits({"status": 5}) == RateLimits(status=5)
    with pytest.raises(ValueError, match=r"unknown rate-limit endpoints \['statuses'\]"):
        coerce_limits({"statuses": 5})


# --- RateLimiter ----------------------------------------------------------------------------


@pytest.mark.anyio
async def test_unlimited_endpoint_never_waits() -> None:
    limiter = RateLimiter(RateLimits(status=1))
    start = anyio.current_time()
    for _ in range(50):
        await limiter.reserve("output")
    assert anyio.current_time() == start
    assert limiter.available("output") == math.inf
    assert limiter.next_free("output") == 0.0
    assert limiter.share_interval("output", 10) == 0.0


@pytest.mark.anyio
async def test_a_call_beyond_budget_waits_for_the_oldest_slot() -> None:
    limiter = RateLimiter(RateLimits(status=3, window=60.0))
    start = anyio.current_time()
    for _ in range(3):
        await limiter.reserve("status")
        await anyio.sleep(10.0)
    assert limiter.available("status") == 0
    # The oldest call leaves the window at 60 s; the wait adds a slack of 0.01 % of it.
    assert limiter.next_free("status") == pytest.approx(30.0 + 60.0 * SLACK)
    await limiter.reserve("status")
    assert anyio.current_time() - start == pytest.approx(60.0 + 60.0 * SLACK)
    assert limiter.available("status") == 0  # calls at 10, 20 and 60 are in the window
    await anyio.sleep(10.0)
    assert limiter.available("status") == 1


@pytest.mark.anyio
async def test_waiters_get_their_slots_in_order() -> None:
    limiter = RateLimiter(RateLimits(stop=1, window=10.0))
    await limiter.reserve("stop")
    order: list[tuple[int, float]] = []

    async def take(n: int) -> None:
        await limiter.reserve("stop")
        order.append((n, anyio.current_time()))

    start = anyio.current_time()
    async with anyio.create_task_group() as tg:
        for n in range(4):
            tg.start_soon(take, n)
            await anyio.sleep(0.001)
    assert [n for n, _ in order] == [0, 1, 2, 3]
    gaps = [round(t - start, 2) for _, t in order]
    assert gaps == [10.0, 20.0, 30.0, 40.0]


@pytest.mark.anyio
async def test_not_waiting_raises_with_the_wait() -> None:
    limiter = RateLimiter(RateLimits(create=1, window=100.0))
    await limiter.reserve("create", wait=False)
    await anyio.sleep(30.0)
    with pytest.raises(RateLimitError) as info:
        await limiter.reserve("create", wait=False)
    assert info.value.retry_after == pytest.approx(70.0 + 100.0 * SLACK)
    assert info.value.code is None
    assert "create budget of 1 calls per 100 s is spent" in str(info.value)


@pytest.mark.anyio
async def test_a_block_holds_every_call_of_the_endpoint() -> None:
    limiter = RateLimiter(RateLimits(status=100))
    limiter.block("status", 12.0)
    limiter.block("status", 5.0)  # a shorter block never shortens the hold
    assert limiter.available("status") == 0
    assert limiter.next_free("status") == pytest.approx(12.0)
    start = anyio.current_time()
    await limiter.reserve("status")
    assert anyio.current_time() - start == pytest.approx(12.0)
    assert limiter.available("status") == 99


@pytest.mark.anyio
async def test_a_block_on_an_unlimited_endpoint() -> None:
    limiter = RateLimiter(RateLimits())
    limiter.block("output", 3.0)
    with pytest.raises(RateLimitError, match="output endpoint asked to wait") as info:
        await limiter.reserve("output", wait=False)
    assert info.value.retry_after == pytest.approx(3.0)
    start = anyio.current_time()
    await limiter.reserve("output")
    assert anyio.current_time() - start == pytest.approx(3.0)
    await limiter.reserve("output")  # the hold is over
    assert anyio.current_time() - start == pytest.approx(3.0)


def test_share_interval_spreads_the_budget() -> None:
    limiter = RateLimiter(RateLimits.FREE)
    # 100 status checks an hour shared by 20 researches: each one every 720 s.
    assert limiter.share_interval("status", 20) == pytest.approx(720.0)
    assert limiter.share_interval("status", 0) == pytest.approx(36.0)


# --- through FayClient ----------------------------------------------------------------------


@pytest.mark.anyio
async def test_a_create_beyond_budget_waits_for_its_slot() -> None:
    fake = FakeFay()
    limits = RateLimits(create=2, window=600.0)
    with fake.mocked():
        async with client(limits, deadline=None) as fay:
            start = anyio.current_time()
            for _ in range(3):
                await fay.create_conversation("q")
            assert [round(c.at - start, 2) for c in fake.calls] == [0, 0, 600.06]


@pytest.mark.anyio
async def test_a_create_beyond_budget_raises_without_waiting_when_asked() -> None:
    fake = FakeFay()
    limits = RateLimits(create=1, window=600.0, wait_for_create=False)
    with fake.mocked():
        async with client(limits) as fay:
            await fay.create_conversation("q")
            start = anyio.current_time()
            with pytest.raises(RateLimitError) as info:
                await fay.create_conversation("q")
            assert anyio.current_time() == start
            assert info.value.retry_after == pytest.approx(600.0 * (1 + SLACK))
    assert fake.count("create") == 1  # the second one was never sent
