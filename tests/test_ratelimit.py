"""RateLimits and RateLimiter: the client-side sliding-window budget, on virtual time."""

from __future__ import annotations

import math

import anyio
import httpx
import pytest
import respx

from fay_async import (
    ConfigurationError,
    CreateRequest,
    FayClient,
    RateLimitError,
    RateLimits,
    exceptions,
)
from fay_async._ratelimit import HOUR, SLACK, RateLimiter, Slot, coerce_limits

from ._fake_fay import BASE, KEY, FakeFay, client

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


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "10", math.nan, math.inf])
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


@pytest.mark.parametrize(
    ("name", "tier"),
    [("free", RateLimits.FREE), ("Pro", RateLimits.PRO), (" FREE ", RateLimits.FREE)],
)
def test_a_tier_name_gives_the_published_tier(name: str, tier: RateLimits) -> None:
    assert coerce_limits(name) is tier


EXPECTED = "RateLimits, a mapping such as {'status': 100}, or a tier name 'free'/'pro'"


def test_an_unknown_tier_name_says_what_is_expected() -> None:
    with pytest.raises(ValueError, match="unknown tier 'gold'") as info:
        coerce_limits("gold")
    assert EXPECTED in str(info.value)


@pytest.mark.parametrize("bad", [100, ["status"], 1.5])
def test_a_value_of_another_type_says_what_is_expected(bad: object) -> None:
    with pytest.raises(TypeError) as info:
        coerce_limits(bad)  # type: ignore[arg-type]
    assert str(info.value) == f"expected {EXPECTED}, got {type(bad).__name__}"


def test_the_client_takes_a_tier_name() -> None:
    assert FayClient(KEY, rate_limits="free").rate_limits is RateLimits.FREE
    assert FayClient(KEY, rate_limits="PRO").rate_limits is RateLimits.PRO
    with pytest.raises(ConfigurationError) as info:
        FayClient(KEY, rate_limits="gold")
    assert str(info.value) == f"rate_limits: unknown tier 'gold'; expected {EXPECTED}"
    with pytest.raises(ConfigurationError, match="rate_limits: expected RateLimits"):
        FayClient(KEY, rate_limits=100)  # type: ignore[arg-type]


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


# --- reservations and the per-attempt hook ----------------------------------------------------


@pytest.mark.anyio
async def test_reserve_returns_the_counted_slot() -> None:
    limiter = RateLimiter(RateLimits(status=2))
    await anyio.sleep(5.0)
    slot = await limiter.reserve("status")
    assert slot == Slot("status", anyio.current_time())
    assert limiter.available("status") == 1
    unlimited = await limiter.reserve("output")
    assert unlimited.endpoint == "output"


class _Hooks:
    """Calls ``attempt_hook`` the way the transport does, for one call."""

    @staticmethod
    async def attempts(limiter: RateLimiter, n: int, slot: Slot | None = None) -> None:
        hook = limiter.attempt_hook("create", slot)
        for attempt in range(1, n + 1):
            await hook.before_attempt(attempt)


@pytest.mark.anyio
async def test_a_hook_uses_the_given_slot_for_the_first_attempt_only() -> None:
    limiter = RateLimiter(RateLimits(create=5))
    slot = await limiter.reserve("create")
    await _Hooks.attempts(limiter, 1, slot)
    assert limiter.available("create") == 4
    await _Hooks.attempts(limiter, 2, slot)  # the retry takes a slot of its own
    assert limiter.available("create") == 3
    await _Hooks.attempts(limiter, 2)  # without a slot each attempt takes one
    assert limiter.available("create") == 1


def test_a_slot_pays_only_for_its_own_endpoint() -> None:
    limiter = RateLimiter(RateLimits(create=5))
    with pytest.raises(ValueError, match="a slot reserved for status cannot pay for a create"):
        limiter.attempt_hook("create", Slot("status", 0.0))


@pytest.mark.anyio
async def test_a_hook_does_not_wait_for_a_create_unless_told_to() -> None:
    limiter = RateLimiter(RateLimits(create=1, wait_for_create=False))
    await _Hooks.attempts(limiter, 1)
    with pytest.raises(RateLimitError, match="client-side create budget"):
        await _Hooks.attempts(limiter, 1)
    status = limiter.attempt_hook("status")
    start = anyio.current_time()
    await status.before_attempt(1)
    assert anyio.current_time() == start


@pytest.mark.anyio
async def test_after_refusal_holds_the_endpoint_back_when_told_how_long() -> None:
    limiter = RateLimiter(RateLimits(status=100))
    hook = limiter.attempt_hook("status")
    hook.after_refusal(None)
    assert limiter.next_free("status") == 0.0
    hook.after_refusal(20.0)
    assert limiter.next_free("status") == pytest.approx(20.0)
    assert limiter.next_free("output") == 0.0


@pytest.mark.anyio
async def test_a_server_429_holds_back_the_budget_after_the_call() -> None:
    # No retry, so nothing sleeps through the hold: it is the budget that keeps it.
    with respx.mock(base_url=BASE) as router:
        router.get(path__regex=r"/status$").mock(
            return_value=httpx.Response(
                429,
                json={"status": False, "error": {"code": "RATE_LIMIT_EXCEEDED", "message": "x"}},
                headers={"Retry-After": "40"},
            )
        )
        async with client(RateLimits(status=100), max_retries=0) as fay:
            with pytest.raises(RateLimitError):
                await fay.get_status("r1")
            limiter = fay.rate_limiter
            assert limiter is not None
            assert limiter.next_free("status") == pytest.approx(40.0)
            assert limiter.available("status") == 0


@pytest.mark.anyio
async def test_a_create_given_a_slot_takes_no_second_one() -> None:
    fake = FakeFay()
    with fake.mocked():
        async with client(RateLimits(create=3)) as fay:
            limiter = fay.rate_limiter
            assert limiter is not None
            slot = await limiter.reserve("create")
            await fay.create(CreateRequest(prompt="q"), slot=slot)
            assert limiter.available("create") == 2
            await fay.create_conversation("q")  # without a slot it takes its own
            assert limiter.available("create") == 1
    assert fake.count("create") == 2


@pytest.mark.anyio
async def test_the_retry_of_a_create_given_a_slot_takes_its_own() -> None:
    fake = FakeFay()
    with fake.mocked() as router:
        router.post("/conversations").mock(side_effect=[httpx.ConnectError("refused"), fake.create])
        async with client(RateLimits(create=3), max_retries=1) as fay:
            limiter = fay.rate_limiter
            assert limiter is not None
            slot = await limiter.reserve("create")
            await fay.create(CreateRequest(prompt="q"), slot=slot)
            assert limiter.available("create") == 1


@pytest.mark.anyio
async def test_a_wait_shorter_than_a_second_is_still_waited() -> None:
    limiter = RateLimiter(RateLimits(status=1, window=0.5))
    await limiter.reserve("status")
    start = anyio.current_time()
    await limiter.reserve("status")
    assert anyio.current_time() - start == pytest.approx(0.5 * (1 + SLACK))
    limiter.block("output", 0.25)
    assert limiter.next_free("output") == pytest.approx(0.25)
    start = anyio.current_time()
    await limiter.reserve("output")
    assert anyio.current_time() - start == pytest.approx(0.25)


@pytest.mark.anyio
async def test_a_client_side_refusal_is_a_429_without_a_code() -> None:
    limiter = RateLimiter(RateLimits(status=1))
    await limiter.reserve("status")
    with pytest.raises(RateLimitError) as info:
        await limiter.reserve("status", wait=False)
    assert (info.value.status_code, info.value.code) == (429, None)
    limiter.block("output", 30.0)
    with pytest.raises(RateLimitError) as info:
        await limiter.reserve("output", wait=False)
    assert (info.value.status_code, info.value.code) == (429, None)
    assert info.value.retry_after == pytest.approx(30.0)


@pytest.mark.anyio
async def test_an_unlimited_endpoint_is_free_again_once_its_block_is_over() -> None:
    limiter = RateLimiter(RateLimits())
    limiter.block("output", 5.0)
    await anyio.sleep(5.0)
    slot = await limiter.reserve("output", wait=False)
    assert slot == Slot("output", anyio.current_time())


@pytest.mark.anyio
async def test_each_retry_takes_a_slot_of_its_own() -> None:
    fake = FakeFay()
    with fake.mocked() as router:
        router.get(path__regex=r"/conversation/[^/]+/status$").mock(
            side_effect=[httpx.Response(503), fake.status]
        )
        async with client(RateLimits(status=5), max_retries=1) as fay:
            limiter = fay.rate_limiter
            assert limiter is not None
            with pytest.raises(exceptions.NotFoundError):
                await fay.get_status("r1")
            assert limiter.available("status") == 3
