"""PollPolicy and the status poller: schedule, errors, shared polls, the shared budget."""

from __future__ import annotations

import itertools
import logging
import math
import random
import statistics

import anyio
import httpx
import pytest

from fay_async import (
    APIConnectionError,
    AuthenticationError,
    ConversationInfo,
    FayClient,
    FayError,
    NotFoundError,
    RateLimitError,
    RateLimits,
    ResearchStatus,
    ResearchTimeoutError,
    ServerError,
    UnexpectedResponseError,
)
from fay_async._manager import ResearchManager
from fay_async._polling import PollPolicy, StatusPoller, is_transient
from fay_async.testing import FayEmulator

from ._fake_fay import FakeFay, client, err

PENDING, PROCESSING = ResearchStatus.PENDING, ResearchStatus.PROCESSING

# --- PollPolicy -----------------------------------------------------------------------------


def test_default_schedule_follows_the_guidance_then_backs_off_while_queued() -> None:
    policy = PollPolicy()
    pending = [round(policy.base_interval(PENDING, n), 2) for n in range(7)]
    assert pending == [3.0, 4.8, 7.68, 12.29, 15.0, 15.0, 15.0]
    assert {policy.base_interval(PROCESSING, n) for n in range(50)} == {2.5}
    # A status this version does not know (and no status at all) is polled like PENDING.
    unknown = ResearchStatus.from_api("QUEUED_ELSEWHERE")
    assert policy.base_interval(unknown, 2) == policy.base_interval(None, 2) == pytest.approx(7.68)
    assert policy.base_interval(PENDING, 10**9) == 15.0  # no overflow after a long queue


def test_jitter_stays_within_its_fraction() -> None:
    policy = PollPolicy()
    rng = random.Random(7)  # noqa: S311 - jitter, not secrets
    processing = [policy.interval(PROCESSING, 0, rng) for _ in range(2000)]
    # 2.5 s +- 20 %: exactly the documented 2-3 s while PROCESSING.
    assert 2.0 <= min(processing) < 2.05
    assert 2.95 < max(processing) <= 3.0
    first = [policy.interval(PENDING, 0, rng) for _ in range(2000)]
    assert min(first) >= 2.4
    assert max(first) <= 3.6
    assert PollPolicy(jitter=0).interval(PENDING, 1, rng) == pytest.approx(4.8)


def test_retry_delay_doubles_up_to_its_cap() -> None:
    policy = PollPolicy(jitter=0)
    rng = random.Random(0)  # noqa: S311
    assert [policy.retry_delay(n, rng) for n in (1, 2, 3, 4, 5, 6, 100)] == [
        1.0,
        2.0,
        4.0,
        8.0,
        16.0,
        30.0,
        30.0,
    ]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"pending_first": 0}, "pending_first must be a positive number"),
        ({"processing_max": -1.0}, "processing_max must be a positive number"),
        ({"retry_first": math.nan}, "retry_first must be a positive number"),
        ({"pending_max": True}, "pending_max must be a number of seconds, got bool"),
        ({"pending_growth": 0.5}, "pending_growth must be between 1 and 10"),
        ({"processing_growth": 11}, "processing_growth must be between 1 and 10"),
        ({"jitter": 1.0}, r"jitter must be in \[0, 1\)"),
        ({"jitter": "0.1"}, r"jitter must be in \[0, 1\)"),
        ({"pending_max": 2.0}, "pending_max must not be smaller than pending_first"),
        ({"retry_max": 0.5}, "retry_max must not be smaller than retry_first"),
    ],
)
def test_bad_policies_are_refused(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises((TypeError, ValueError), match=message):
        PollPolicy(**kwargs)  # type: ignore[arg-type]


def test_transient_errors() -> None:
    assert is_transient(ServerError("down", status_code=503))
    assert is_transient(APIConnectionError("reset"))
    assert is_transient(UnexpectedResponseError("html", status_code=200))
    assert not is_transient(AuthenticationError("no", status_code=401))
    assert not is_transient(NotFoundError("no", status_code=404))
    assert not is_transient(ValueError("bug"))


# --- polling through the manager ------------------------------------------------------------


async def _fixed_loop(fay: FayClient, request_id: str) -> None:
    """The documented loop: check every 2 s until terminal."""
    while True:
        await anyio.sleep(2.0)
        if (await fay.get_status(request_id)).status.is_terminal:
            return


async def _measure(adaptive: bool, count: int = 24) -> tuple[float, float]:
    """Status checks per research and mean detection lag, on the emulator's durations."""
    emulator = FayEmulator(seed=2024)  # each research queued 45-55 s, then run 10-15 s
    detected: dict[str, float] = {}
    async with emulator.client() as fay, ResearchManager(fay) as manager:

        async def one(n: int) -> None:
            await anyio.sleep(n * 0.37)  # researches start at different times
            request_id = await manager.start_research(f"question {n}")
            if adaptive:
                await manager.wait_for_completion(request_id)
            else:
                await _fixed_loop(fay, request_id)
            detected[request_id] = anyio.current_time()

        async with anyio.create_task_group() as tg:
            for n in range(count):
                tg.start_soon(one, n)
    created = {c.request_id: c.time for c in emulator.calls() if c.endpoint == "create"}
    lags = []
    for request_id, at in detected.items():
        scenario = emulator.research(request_id).scenario
        lags.append(at - (created[request_id] + scenario.pending_s + scenario.processing_s))
    assert len(lags) == count
    assert min(lags) >= 0
    return emulator.call_counts()["status"] / count, statistics.mean(lags)


@pytest.mark.anyio
async def test_default_policy_uses_a_third_of_the_calls_of_a_fixed_loop() -> None:
    fixed_calls, fixed_lag = await _measure(adaptive=False)
    calls, lag = await _measure(adaptive=True)
    # Measured: ~31.7 checks and 0.85 s for the fixed loop; ~8.6 checks and 1.1-1.5 s here.
    assert 29 <= fixed_calls <= 36
    assert calls <= fixed_calls / 3
    assert lag - fixed_lag <= 1.5


@pytest.mark.anyio
async def test_waiters_on_one_research_share_its_polls() -> None:
    fake = FakeFay()
    with fake.mocked():
        async with (
            client() as fay,
            ResearchManager(fay, poll_policy=PollPolicy(jitter=0)) as manager,
        ):
            alone = await manager.start_research("alone")
            await manager.wait_for_completion(alone)
            solo_calls = fake.count("status", alone)

            shared = await manager.start_research("shared")
            results: list[ConversationInfo] = []

            async def wait() -> None:
                results.append(await manager.wait_for_completion(shared))

            async with anyio.create_task_group() as tg:
                for _ in range(5):
                    tg.start_soon(wait)
    assert [r.status for r in results] == [ResearchStatus.COMPLETED] * 5
    assert fake.count("status", shared) == solo_calls
    assert 3 <= solo_calls <= 12


@pytest.mark.anyio
async def test_a_finished_research_is_not_polled_again() -> None:
    fake = FakeFay(pending=1.0, processing=1.0)
    with fake.mocked():
        async with client() as fay, ResearchManager(fay) as manager:
            request_id = await manager.start_research("q")
            first = await manager.wait_for_completion(request_id)
            calls = fake.count("status")
            again = await manager.wait_for_completion(request_id)
    assert again is first
    assert fake.count("status") == calls


@pytest.mark.anyio
async def test_a_429_makes_the_poller_wait_not_fail() -> None:
    fake = FakeFay(pending=1.0, processing=1.0)
    with fake.mocked():
        async with client() as fay, ResearchManager(fay) as manager:
            request_id = await manager.start_research("q")
            fake.faults["status"].extend(
                [
                    err(429, "RATE_LIMIT_EXCEEDED", "slow down", **{"Retry-After": "40"}),
                    err(429, "RATE_LIMIT_EXCEEDED", "slow down"),
                ]
            )
            info = await manager.wait_for_completion(request_id, timeout=120)
    assert info.status is ResearchStatus.COMPLETED
    times = [c.at for c in fake.calls if c.endpoint == "status"]
    assert [c.status_code for c in fake.calls if c.endpoint == "status"] == [429, 429, 200]
    assert times[1] - times[0] >= 40.0  # the Retry-After was honoured
    assert times[2] - times[1] >= 0.8  # and without one, the retry backoff


@pytest.mark.anyio
@pytest.mark.parametrize(
    "fault",
    [
        err(503, "UNAVAILABLE", "try later"),
        httpx.ConnectError("connection refused"),
        httpx.Response(502, text="<html>Bad Gateway</html>"),
        httpx.Response(200, text="not json"),
    ],
)
async def test_transient_errors_are_retried_within_the_deadline(fault: object) -> None:
    fake = FakeFay(pending=5.0, processing=5.0)
    with fake.mocked():
        async with client() as fay, ResearchManager(fay) as manager:
            request_id = await manager.start_research("q")
            fake.faults["status"].extend([fault, fault, fault])
            info = await manager.wait_for_completion(request_id, timeout=60)
    assert info.status is ResearchStatus.COMPLETED
    assert fake.count("status") >= 4


@pytest.mark.anyio
async def test_transient_errors_until_the_deadline_end_in_a_timeout() -> None:
    fake = FakeFay()
    with fake.mocked():
        async with client() as fay, ResearchManager(fay) as manager:
            request_id = await manager.start_research("q")
            fake.faults["status"].extend([err(500, "BOOM", "internal")] * 100)
            with pytest.raises(ResearchTimeoutError) as info:
                await manager.wait_for_completion(request_id, timeout=20)
    assert info.value.stopped is False
    assert info.value.last_status is ResearchStatus.PENDING  # known from the create


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("fault", "error"),
    [
        (err(401, "INVALID_API_KEY", "Invalid or expired API key"), AuthenticationError),
        (err(404, "REQUEST_NOT_FOUND", "Request not found"), NotFoundError),
    ],
)
async def test_auth_and_not_found_fail_the_wait(
    fault: httpx.Response, error: type[Exception]
) -> None:
    fake = FakeFay()
    with fake.mocked():
        async with client() as fay, ResearchManager(fay) as manager:
            request_id = await manager.start_research("q")
            fake.faults["status"].append(fault)
            start = anyio.current_time()
            with pytest.raises(error):
                await manager.wait_for_completion(request_id, timeout=300)
            assert anyio.current_time() - start < 5.0
            assert fake.count("status") == 1
            assert request_id in manager.active_requests  # it may still be running


@pytest.mark.anyio
async def test_an_unexpected_error_fails_only_that_wait(caplog: pytest.LogCaptureFixture) -> None:
    fake = FakeFay(pending=1.0, processing=1.0)
    with fake.mocked():
        async with client() as fay, ResearchManager(fay) as manager:
            broken = await manager.start_research("broken")
            fine = await manager.start_research("fine")
            fake.faults["status"].append(LookupError("a bug"))
            with pytest.raises(LookupError, match="a bug"):
                await manager.wait_for_completion(broken)
            assert (await manager.wait_for_completion(fine)).status is ResearchStatus.COMPLETED
    assert "failed unexpectedly" in caplog.text


@pytest.mark.anyio
async def test_an_unknown_status_is_polled_until_the_deadline() -> None:
    fake = FakeFay()
    with fake.mocked():
        async with client() as fay, ResearchManager(fay) as manager:
            request_id = await manager.start_research("q")
            fake.status_override[request_id] = "ARCHIVING"
            with pytest.raises(ResearchTimeoutError) as info:
                await manager.wait_for_completion(request_id, timeout=100)
    assert info.value.last_status == "ARCHIVING"
    assert not ResearchStatus.from_api("ARCHIVING").is_known
    assert 5 <= fake.count("status") <= 12


@pytest.mark.anyio
async def test_status_changes_are_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="fay_async")
    fake = FakeFay(pending=10.0, processing=10.0)
    with fake.mocked():
        async with client() as fay, ResearchManager(fay) as manager:
            request_id = await manager.start_research("q")
            await manager.wait_for_completion(request_id)
    changes = [
        r.getMessage()
        for r in caplog.records
        if r.name == "fay_async" and "->" in r.getMessage() and "research" in r.getMessage()
    ]
    assert changes == [
        f"research {request_id}: PENDING -> PROCESSING",
        f"research {request_id}: PROCESSING -> COMPLETED",
    ]


# --- the shared budget ----------------------------------------------------------------------


def _max_in_window(times: list[float], window: float) -> int:
    times = sorted(times)
    best, lo = 0, 0
    for hi, t in enumerate(times):
        while times[lo] <= t - window:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


@pytest.mark.anyio
async def test_the_status_budget_is_shared_fairly() -> None:
    # 12 status checks per 60 s shared by 6 researches: each one at most every 30 s.
    limits = RateLimits(status=12, window=60.0)
    fake = FakeFay(pending=200.0, processing=30.0)
    with fake.mocked():
        async with client(limits) as fay, ResearchManager(fay) as manager:
            ids = [await manager.start_research(f"q{n}") for n in range(6)]
            async with anyio.create_task_group() as tg:
                for request_id in ids:
                    tg.start_soon(manager.wait_for_completion, request_id)
    status = [c for c in fake.calls if c.endpoint == "status"]
    assert _max_in_window([c.at for c in status], 60.0) <= 12
    for request_id in ids:
        times = [c.at for c in status if c.request_id == request_id]
        gaps = [b - a for a, b in itertools.pairwise(times)]
        assert min(gaps) >= 30.0 - 1e-6  # N * W / L
        assert max(gaps) <= 45.0  # and nobody is starved
        assert times[-1] - fake.researches[request_id].ends <= 45.0


@pytest.mark.anyio
async def test_the_poller_waits_for_a_slot_held_by_a_check_in_flight() -> None:
    limits = RateLimits(status=2, window=10.0)
    fake = FakeFay(pending=1.0, processing=1.0)
    with fake.mocked():
        async with client(limits) as fay:
            poller = StatusPoller(fay, PollPolicy(jitter=0), max_in_flight=1)
            async with anyio.create_task_group() as tg:
                await tg.start(poller.run)
                ids = [(await fay.create_conversation(f"q{n}")).request_id for n in range(3)]
                watches = [poller.subscribe(rid) for rid in ids]
                assert poller.polled == 3
                for watch in watches:
                    await watch.wait_settled()
                poller.unsubscribe(watches[0])
                poller.poll_soon(ids[0])  # not watched any more: nothing happens
                tg.cancel_scope.cancel()
    times = [c.at for c in fake.calls if c.endpoint == "status"]
    assert _max_in_window(times, 10.0) <= 2
    assert poller.checks == len(times)


@pytest.mark.anyio
async def test_closing_the_poller_fails_the_waits() -> None:
    fake = FakeFay()
    with fake.mocked():
        async with client() as fay:
            poller = StatusPoller(fay, PollPolicy())
            async with anyio.create_task_group() as tg:
                await tg.start(poller.run)
                watch = poller.subscribe("req-unknown")
                poller.close()
                with pytest.raises(RuntimeError, match="closed while this research"):
                    await watch.wait_settled()
                with pytest.raises(RuntimeError, match="is closed"):
                    poller.subscribe("req-other")
                tg.cancel_scope.cancel()


@pytest.mark.anyio
async def test_a_rate_limit_error_from_the_client_budget_is_waited_out() -> None:
    assert issubclass(RateLimitError, Exception)
    limits = RateLimits(status=1, window=30.0)
    fake = FakeFay(pending=1.0, processing=1.0)
    with fake.mocked():
        async with client(limits) as fay, ResearchManager(fay) as manager:
            request_id = await manager.start_research("q")
            await fay.get_status(request_id)  # someone else spends the budget
            info = await manager.wait_for_completion(request_id)
    assert info.status is ResearchStatus.COMPLETED
    times = [c.at for c in fake.calls if c.endpoint == "status"]
    assert times[1] - times[0] >= 30.0


@pytest.mark.anyio
async def test_closing_leaves_finished_waits_alone_and_the_cache_is_bounded() -> None:
    fake = FakeFay(pending=0.0, processing=0.0)
    with fake.mocked():
        async with client() as fay:
            poller = StatusPoller(fay, PollPolicy(), finished_cache=2)
            async with anyio.create_task_group() as tg:
                await tg.start(poller.run)
                ids = [(await fay.create_conversation(f"q{n}")).request_id for n in range(3)]
                for rid in ids:
                    watch = poller.subscribe(rid)
                    await watch.wait_settled()
                    poller.unsubscribe(watch)
                assert fake.count("status") == 3
                cached = poller.subscribe(ids[2])  # still cached: settled at once
                assert cached.settled
                evicted = poller.subscribe(ids[0])  # pushed out of the cache of 2
                await evicted.wait_settled()
                assert fake.count("status") == 4
                poller.close()
                assert cached.error is None
                assert (await cached.wait_settled()).status is ResearchStatus.COMPLETED
                tg.cancel_scope.cancel()


@pytest.mark.anyio
async def test_a_stop_failing_with_a_foreign_error_is_reported_as_a_fay_error() -> None:
    fake = FakeFay()
    with fake.mocked():
        async with client() as fay, ResearchManager(fay) as manager:
            request_id = await manager.start_research("q")
            fake.faults["stop"].append(LookupError("a bug below"))
            results = await manager.cancel_all_research()
    error = results[request_id]
    assert isinstance(error, FayError)
    assert isinstance(error.__cause__, LookupError)
    assert "a bug below" in str(error)
