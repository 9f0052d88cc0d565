"""ResearchManager against the emulator: every documented flow, inputs, exit, observers."""

from __future__ import annotations

import logging
from contextlib import aclosing
from typing import Any

import anyio
import pytest

from fay_async import (
    APIError,
    ConversationInfo,
    FayClient,
    InvalidRequestIdError,
    NotFoundError,
    NotTrackedError,
    RateLimitError,
    RateLimits,
    RequestValidationError,
    ResearchFailedError,
    ResearchStatus,
    ResearchStoppedError,
    ResearchTimeoutError,
    ServerError,
    StopResult,
)
from fay_async._manager import ActiveResearch, ResearchManager
from fay_async._polling import PollPolicy
from fay_async.testing import Fault, FayEmulator, Scenario

from ._emulated import running
from ._fake_fay import FakeFay
from ._fake_fay import client as fake_client
from ._fake_fay import ok as fake_ok

pytestmark = pytest.mark.anyio

S = ResearchStatus
QUICK = Scenario(pending_s=5.0, processing_s=5.0)


@pytest.fixture
def emulator() -> FayEmulator:
    return FayEmulator(seed=7)


# --- Start ----------------------------------------------------------------------------------


async def test_start_creates_and_tracks(emulator: FayEmulator, manager: ResearchManager) -> None:
    before = anyio.current_time()
    request_id = await manager.start_research("What changed in EU battery rules?")
    entry = manager.active_requests[request_id]
    assert entry == ActiveResearch(
        request_id=request_id,
        prompt="What changed in EU battery rules?",
        started_at=entry.started_at,
        status=S.PENDING,
    )
    assert entry.started_at == before  # loop time: the create took no virtual time
    assert emulator.research(request_id).prompt == "What changed in EU battery rules?"
    with pytest.raises(TypeError):
        manager.active_requests[request_id] = entry  # type: ignore[index]


async def test_start_with_structured_output(
    emulator: FayEmulator, manager: ResearchManager
) -> None:
    schema = {"type": "object", "properties": {"title": {"type": "string"}}}
    result = await manager.research("q", structured_output=True, output_schema=schema, timeout=None)
    assert isinstance(result.text, dict)
    assert result.text == emulator.research(result.request_id).output
    assert emulator.research(result.request_id).output_schema == schema


async def test_a_refused_create_raises_and_tracks_nothing(
    emulator: FayEmulator, manager: ResearchManager
) -> None:
    emulator.inject_fault("create", Fault.error(400, "VALIDATION_ERROR", "Invalid prompt format"))
    with pytest.raises(RequestValidationError, match="Invalid prompt format"):
        await manager.start_research("q")
    assert not manager.active_requests
    assert emulator.researches() == []


async def test_bad_prompts_are_refused_before_anything_is_sent(
    emulator: FayEmulator, manager: ResearchManager
) -> None:
    with pytest.raises(ValueError, match="prompt is empty"):
        await manager.start_research("  ")
    with pytest.raises(TypeError, match="prompt must be a string"):
        await manager.research(None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="only used with structured_output=True"):
        await manager.research("q", output_schema={"type": "object"})
    with pytest.raises(ValueError, match="prompt is not valid Unicode text"):
        await manager.research("caf\udce9")  # what argv makes of undecodable bytes
    with pytest.raises(ValueError, match="prompt is not valid Unicode text"):
        await manager.start_research("\ud800")
    assert emulator.calls() == []


# --- Wait / poll ----------------------------------------------------------------------------


async def test_wait_returns_the_completed_status(
    emulator: FayEmulator, manager: ResearchManager
) -> None:
    request_id = await manager.start_research("q")
    info = await manager.wait_for_completion(request_id, timeout=300)
    assert info.status is S.COMPLETED
    assert info.completed_at == emulator.research(request_id).completed_at
    assert request_id not in manager.active_requests  # it has ended


async def test_wait_raises_the_failure_with_its_message() -> None:
    emulator = FayEmulator(
        scenario=Scenario(
            pending_s=3.0, processing_s=4.0, outcome=S.FAILED, error_message="agent crashed"
        )
    )
    async with emulator.client() as fay, ResearchManager(fay) as manager:
        request_id = await manager.start_research("q")
        with pytest.raises(ResearchFailedError) as info:
            await manager.wait_for_completion(request_id)
        assert info.value.error_message == "agent crashed"
        assert info.value.request_id == request_id
        assert "agent crashed" in str(info.value)
        with pytest.raises(ResearchFailedError):
            await manager.research("again")
        assert not manager.active_requests


async def test_wait_timeout_leaves_the_research_running_and_tracked(
    emulator: FayEmulator, manager: ResearchManager
) -> None:
    request_id = await manager.start_research("q")
    start = anyio.current_time()
    with pytest.raises(ResearchTimeoutError) as info:
        await manager.wait_for_completion(request_id, timeout=20)
    assert anyio.current_time() - start == pytest.approx(20.0)
    assert info.value.stopped is False
    assert info.value.last_status is S.PENDING
    assert isinstance(info.value, TimeoutError)
    assert request_id in manager.active_requests
    assert running(emulator) == [request_id]
    assert emulator.call_counts()["stop"] == 0


async def test_a_research_stopped_elsewhere_raises_stopped(
    emulator: FayEmulator, fay: FayClient, manager: ResearchManager
) -> None:
    request_id = await manager.start_research("q")

    async def stop_later() -> None:
        await anyio.sleep(30)
        await fay.stop_conversation(request_id)

    async with anyio.create_task_group() as tg:
        tg.start_soon(stop_later)
        with pytest.raises(ResearchStoppedError, match="was stopped"):
            await manager.wait_for_completion(request_id)
    assert request_id not in manager.active_requests


async def test_waiting_on_an_id_started_elsewhere(
    emulator: FayEmulator, fay: FayClient, manager: ResearchManager
) -> None:
    created = await fay.create_conversation("made by someone else")
    info = await manager.wait_for_completion(created.request_id)
    assert info.status is S.COMPLETED
    assert info.prompt == "made by someone else"
    assert created.request_id not in manager.active_requests  # waiting does not track


async def test_waiting_on_an_unknown_id_raises_not_found(
    emulator: FayEmulator, manager: ResearchManager
) -> None:
    with pytest.raises(NotFoundError):
        await manager.wait_for_completion("5a4a5c8e-0000-4000-8000-000000000000")
    assert emulator.call_counts()["status"] == 1


async def test_several_waiters_share_one_poll_loop() -> None:
    emulator = FayEmulator(scenario=Scenario(pending_s=50.0, processing_s=12.0))
    policy = PollPolicy(jitter=0)
    async with emulator.client() as fay, ResearchManager(fay, poll_policy=policy) as manager:
        alone = await manager.start_research("alone")
        await manager.wait_for_completion(alone)
        per_research = emulator.call_counts()["status"]

        shared = await manager.start_research("shared")
        infos: list[ConversationInfo] = []

        async def wait() -> None:
            infos.append(await manager.wait_for_completion(shared))

        async with anyio.create_task_group() as tg:
            for _ in range(10):
                tg.start_soon(wait)
            async with aclosing(manager.watch(shared)) as changes:
                async for _ in changes:
                    pass
    assert len(infos) == 10
    assert {info.status for info in infos} == {S.COMPLETED}
    status_calls = [c for c in emulator.calls() if c.endpoint == "status"]
    assert len([c for c in status_calls if c.request_id == shared]) == per_research
    assert len({c.time for c in status_calls if c.request_id == shared}) == per_research
    assert 5 <= per_research <= 10  # ~8 instead of 31 for the documented 2-s loop


# --- Get output and research with timeout ---------------------------------------------------


async def test_research_returns_the_output_and_untracks(
    emulator: FayEmulator, manager: ResearchManager
) -> None:
    result = await manager.research("Summarise the 2025 battery regulation")
    state = emulator.research(result.request_id)
    assert result.info.status is S.COMPLETED
    assert result.output.status is S.COMPLETED
    assert result.text == state.output
    assert isinstance(result.text, str) and "battery regulation" in result.text
    assert not manager.active_requests
    counts = emulator.call_counts()
    assert (counts["create"], counts["output"], counts["stop"]) == (1, 1, 0)


async def test_research_timeout_stops_the_research(
    emulator: FayEmulator, manager: ResearchManager
) -> None:
    start = anyio.current_time()
    with pytest.raises(ResearchTimeoutError) as info:
        await manager.research("q", timeout=30)
    assert anyio.current_time() - start == pytest.approx(30.0)
    assert info.value.stopped is True
    assert info.value.last_status is S.PENDING
    assert "cancelled due to timeout" in str(info.value)
    state = emulator.research(info.value.request_id)
    assert state.status is S.STOPPED
    assert not manager.active_requests
    assert emulator.call_counts()["stop"] == 1


async def test_research_default_timeout_is_five_minutes() -> None:
    emulator = FayEmulator(scenario=Scenario(pending_s=400.0, processing_s=10.0))
    async with emulator.client() as fay, ResearchManager(fay) as manager:
        start = anyio.current_time()
        with pytest.raises(ResearchTimeoutError) as info:
            await manager.research("q")
        assert anyio.current_time() - start == pytest.approx(300.0)
        assert info.value.stopped is True
        assert running(emulator) == []


async def test_research_timeout_when_the_stop_fails_keeps_it_tracked() -> None:
    emulator = FayEmulator()
    async with emulator.client(max_retries=0) as fay, ResearchManager(fay) as manager:
        emulator.inject_fault("stop", Fault.error(503, "DOWN", "down for maintenance"))
        with pytest.raises(ResearchTimeoutError) as info:
            await manager.research("q", timeout=10)
        request_id = info.value.request_id
        assert info.value.stopped is False
        assert isinstance(info.value.__cause__, ServerError)
        assert "stopping it failed" in str(info.value)
        assert request_id in manager.active_requests  # so the exit tries again
        assert running(emulator) == [request_id]
    assert emulator.research(request_id).status is S.STOPPED


RACE_POLICY = PollPolicy(jitter=0, processing_first=8.0, processing_max=8.0, pending_first=8.0)


async def test_research_that_completes_as_the_timeout_hits_returns_its_output() -> None:
    # The deadline (22 s) falls between two polls (16 s, 24 s), after the research
    # completed (20 s): the stop finds it COMPLETED, and the paid output is returned.
    emulator = FayEmulator(scenario=Scenario(pending_s=0.0, processing_s=20.0))
    async with (
        emulator.client() as fay,
        ResearchManager(fay, poll_policy=RACE_POLICY) as manager,
    ):
        result = await manager.research("q", timeout=22)
        assert anyio.current_time() == pytest.approx(22.0)
        assert not manager.active_requests
    assert result.info.status is S.COMPLETED
    assert result.text == emulator.research(result.request_id).output
    assert emulator.research(result.request_id).status is S.COMPLETED
    counts = emulator.call_counts()
    assert (counts["stop"], counts["output"]) == (1, 1)


async def test_resume_that_completes_as_the_timeout_hits_returns_its_output() -> None:
    emulator = FayEmulator(scenario=Scenario(pending_s=0.0, processing_s=20.0))
    async with (
        emulator.client() as fay,
        ResearchManager(fay, poll_policy=RACE_POLICY) as manager,
    ):
        created = await fay.create_conversation("q")
        result = await manager.resume_research(created.request_id, timeout=22)
    assert result.info.status is S.COMPLETED
    assert result.text == emulator.research(created.request_id).output


async def test_research_that_fails_as_the_timeout_hits_raises_its_failure() -> None:
    scenario = Scenario(
        pending_s=0.0, processing_s=20.0, outcome=S.FAILED, error_message="agent crashed"
    )
    emulator = FayEmulator(scenario=scenario)
    async with (
        emulator.client() as fay,
        ResearchManager(fay, poll_policy=RACE_POLICY) as manager,
    ):
        with pytest.raises(ResearchFailedError) as info:
            await manager.research("q", timeout=22)
        assert not manager.active_requests
    assert info.value.error_message == "agent crashed"
    assert emulator.call_counts()["output"] == 0


async def test_a_timeout_whose_stop_answers_an_unexpected_status() -> None:
    fake = FakeFay()
    with fake.mocked():
        async with fake_client() as fay, ResearchManager(fay) as manager:
            fake.faults["stop"].append(
                fake_ok({"request_id": "req-00001", "status": "STOPPING", "message": "soon"})
            )
            with pytest.raises(ResearchTimeoutError) as info:
                await manager.research("q", timeout=10)
    assert info.value.stopped is False
    assert info.value.last_status == "STOPPING"
    assert "answered with the status STOPPING, so it may not be stopped" in str(info.value)


# --- Cancel one -----------------------------------------------------------------------------


async def test_cancel_one_stops_and_untracks(
    emulator: FayEmulator, manager: ResearchManager
) -> None:
    request_id = await manager.start_research("q")
    result = await manager.cancel_research(request_id)
    assert result == StopResult(
        request_id=request_id, status=S.STOPPED, message="Conversation stopped successfully"
    )
    assert request_id not in manager.active_requests
    assert emulator.research(request_id).status is S.STOPPED
    with pytest.raises(NotTrackedError, match="not found in active requests"):
        await manager.cancel_research(request_id)


async def test_cancel_an_id_never_tracked(emulator: FayEmulator, manager: ResearchManager) -> None:
    with pytest.raises(NotTrackedError) as info:
        await manager.cancel_research("e0a05c59-a5d7-44f3-8d5e-9e535e4db957")
    assert str(info.value) == (
        "research e0a05c59-a5d7-44f3-8d5e-9e535e4db957 not found in active requests"
    )
    assert isinstance(info.value, KeyError)
    assert emulator.calls() == []


@pytest.mark.parametrize(
    ("scenario", "ended"),
    [
        (Scenario(pending_s=1.0, processing_s=1.0), S.COMPLETED),
        (Scenario(pending_s=1.0, processing_s=1.0, outcome=S.FAILED), S.FAILED),
    ],
)
async def test_cancel_a_research_that_already_ended_reports_its_status(
    scenario: Scenario, ended: ResearchStatus
) -> None:
    emulator = FayEmulator(scenario=scenario)
    async with emulator.client() as fay, ResearchManager(fay) as manager:
        request_id = await manager.start_research("q")
        await anyio.sleep(10)
        result = await manager.cancel_research(request_id)
        assert result.status is ended
        assert result.request_id == request_id
        assert "already" in result.message
        assert request_id not in manager.active_requests
        assert emulator.research(request_id).status is ended


async def test_cancel_a_research_stopped_elsewhere(
    emulator: FayEmulator, fay: FayClient, manager: ResearchManager
) -> None:
    request_id = await manager.start_research("q")
    await fay.stop_conversation(request_id)
    result = await manager.cancel_research(request_id)
    assert result.status is S.STOPPED
    assert result.message == "the research had already ended (STOPPED)"


async def test_a_failed_cancel_raises_and_keeps_the_id() -> None:
    emulator = FayEmulator()
    async with emulator.client(max_retries=0) as fay, ResearchManager(fay) as manager:
        request_id = await manager.start_research("q")
        emulator.inject_fault("stop", Fault.error(500, "INTERNAL", "it broke"))
        with pytest.raises(ServerError, match="it broke"):
            await manager.cancel_research(request_id)
        assert request_id in manager.active_requests
        assert running(emulator) == [request_id]
        assert (await manager.cancel_research(request_id)).status is S.STOPPED
        assert not manager.active_requests


NOT_FOUND = Fault.error(404, "REQUEST_NOT_FOUND", "Request not found")


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


async def test_a_stop_answered_404_has_nothing_to_stop(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="fay_async")
    emulator = FayEmulator()
    async with emulator.client(max_retries=0) as fay, ResearchManager(fay) as manager:
        request_id = await manager.start_research("q")
        emulator.inject_fault("stop", NOT_FOUND)
        with pytest.raises(NotFoundError):
            await manager.cancel_research(request_id)
        assert request_id not in manager.active_requests  # settled, not to be retried
    assert emulator.call_counts()["stop"] == 1  # the exit did not try again
    assert warnings_of(caplog) == []
    assert f"research {request_id} is not known to the service: nothing to stop" in caplog.text


async def test_cancel_all_reports_a_404_as_not_found_and_does_not_retry_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    emulator = FayEmulator()
    async with emulator.client(max_retries=0) as fay, ResearchManager(fay) as manager:
        first = await manager.start_research("first")
        second = await manager.start_research("second")
        emulator.inject_fault("stop", NOT_FOUND)
        results = await manager.cancel_all_research()
        assert not manager.active_requests
        [unknown] = [k for k, v in results.items() if isinstance(v, NotFoundError)]
        [stopped] = [k for k, v in results.items() if isinstance(v, StopResult)]
        assert {unknown, stopped} == {first, second}
    assert emulator.call_counts()["stop"] == 2
    assert warnings_of(caplog) == []


async def test_a_404_on_the_stop_at_exit_is_not_a_failure(
    emulator: FayEmulator, fay: FayClient, caplog: pytest.LogCaptureFixture
) -> None:
    async with ResearchManager(fay) as manager:
        await manager.start_research("q")
        emulator.inject_fault("stop", NOT_FOUND)
    assert emulator.call_counts()["stop"] == 1
    assert warnings_of(caplog) == []


async def test_resuming_an_id_the_service_does_not_know(
    emulator: FayEmulator, manager: ResearchManager, caplog: pytest.LogCaptureFixture
) -> None:
    unknown = "5a4a5c8e-0000-4000-8000-000000000000"
    with pytest.raises(NotFoundError):
        await manager.resume_research(unknown)
    assert unknown not in manager.active_requests
    assert emulator.call_counts()["stop"] == 1
    assert [w for w in warnings_of(caplog) if "could not stop" in w] == []


async def test_a_timeout_whose_stop_is_answered_404() -> None:
    emulator = FayEmulator()
    async with emulator.client(max_retries=0) as fay, ResearchManager(fay) as manager:
        emulator.inject_fault("stop", NOT_FOUND)
        with pytest.raises(ResearchTimeoutError) as info:
            await manager.research("q", timeout=10)
        assert info.value.stopped is False
        assert "the service does not know it" in str(info.value)
        assert isinstance(info.value.__cause__, NotFoundError)
        assert not manager.active_requests


async def test_a_stop_slower_than_the_grace_is_a_timeout() -> None:
    emulator = FayEmulator()
    async with emulator.client() as fay, ResearchManager(fay, stop_grace=2.0) as manager:
        request_id = await manager.start_research("q")
        emulator.inject_fault("stop", Fault.error(503, "DOWN"), times=2)
        emulator.inject_fault("stop", Fault.latency(60.0))
        start = anyio.current_time()
        with pytest.raises(TimeoutError, match="stop grace of 2 s"):
            await manager.cancel_research(request_id)
        assert anyio.current_time() - start == pytest.approx(2.0)
        assert request_id in manager.active_requests


async def test_concurrent_cancels_of_one_research_share_one_stop(
    emulator: FayEmulator, manager: ResearchManager
) -> None:
    request_id = await manager.start_research("q")
    results: list[StopResult] = []

    async def cancel() -> None:
        results.append(await manager.cancel_research(request_id))

    async with anyio.create_task_group() as tg:
        for _ in range(5):
            tg.start_soon(cancel)
    assert [r.status for r in results] == [S.STOPPED] * 5
    assert emulator.call_counts()["stop"] == 1


# --- Cancel all -----------------------------------------------------------------------------


async def test_cancel_all_with_a_thousand_researches() -> None:
    def scenario(prompt: str) -> Scenario:
        n = int(prompt.rsplit(maxsplit=1)[-1])
        if n % 10 == 0:  # these complete before the cancel
            return Scenario(pending_s=1.0, processing_s=1.0)
        return Scenario(pending_s=500.0, processing_s=10.0)

    emulator = FayEmulator(scenario=scenario, seed=3)
    async with emulator.client(max_retries=0) as fay, ResearchManager(fay) as manager:
        async with anyio.create_task_group() as tg:
            for n in range(1000):
                tg.start_soon(manager.start_research, f"question {n}")
        ids = dict(manager.active_requests)
        assert len(ids) == 1000
        await anyio.sleep(5)
        emulator.inject_fault("stop", Fault.error(500, "INTERNAL", "stop failed"), times=25)
        emulator.inject_fault("stop", Fault.html(502), times=15)
        results = await manager.cancel_all_research()
        assert set(results) == set(ids)
        assert not manager.active_requests
    stopped = [k for k, v in results.items() if isinstance(v, StopResult) and v.status is S.STOPPED]
    completed = [
        k for k, v in results.items() if isinstance(v, StopResult) and v.status is S.COMPLETED
    ]
    failed = {k: v for k, v in results.items() if not isinstance(v, StopResult)}
    assert len(failed) == 40
    assert {type(v).__name__ for v in failed.values()} == {"ServerError"}
    assert len(completed) + len(stopped) == 960
    assert 90 <= len(completed) <= 100
    # Every research is over on the service but those whose stop failed (and ran).
    still_running = set(running(emulator))
    assert still_running <= set(failed)
    for request_id in set(failed) - still_running:
        assert emulator.research(request_id).status is S.COMPLETED
    assert len(still_running) >= 30
    for request_id in completed:
        prompt = ids[request_id].prompt
        assert prompt is not None
        assert int(prompt.rsplit(maxsplit=1)[-1]) % 10 == 0


async def test_cancel_all_with_nothing_tracked(
    emulator: FayEmulator, manager: ResearchManager
) -> None:
    assert await manager.cancel_all_research() == {}
    assert emulator.calls() == []


async def test_cancel_all_bounds_concurrent_stops() -> None:
    emulator = FayEmulator()
    async with emulator.client() as fay, ResearchManager(fay, max_concurrent_stops=4) as manager:
        for n in range(12):
            await manager.start_research(f"q{n}")
        emulator.inject_fault("stop", Fault.latency(1.0), times=12)
        start = anyio.current_time()
        results = await manager.cancel_all_research()
        assert anyio.current_time() - start == pytest.approx(3.0)  # 12 stops, 4 at a time
    assert {r.status for r in results.values() if isinstance(r, StopResult)} == {S.STOPPED}


# --- leaving the manager --------------------------------------------------------------------


async def test_leaving_stops_what_is_still_tracked() -> None:
    def scenario(prompt: str) -> Scenario:
        return QUICK if prompt == "finished" else Scenario(pending_s=100.0, processing_s=10.0)

    emulator = FayEmulator(scenario=scenario)
    async with emulator.client() as fay, ResearchManager(fay) as manager:
        ids = [await manager.start_research(f"q{n}") for n in range(3)]
        finished = await manager.start_research("finished")
        await manager.wait_for_completion(finished)
    assert [emulator.research(i).status for i in ids] == [S.STOPPED] * 3
    assert emulator.research(finished).status is S.COMPLETED
    assert not manager.active_requests


async def test_leaving_without_cancel_on_exit_leaves_them_running(
    emulator: FayEmulator, fay: FayClient
) -> None:
    async with ResearchManager(fay, cancel_on_exit=False) as manager:
        ids = [await manager.start_research(f"q{n}") for n in range(3)]
    assert sorted(running(emulator)) == sorted(ids)
    assert emulator.call_counts()["stop"] == 0
    assert set(manager.active_requests) == set(ids)


async def test_leaving_on_an_error_still_stops(emulator: FayEmulator, fay: FayClient) -> None:
    started: list[str] = []

    async def application() -> None:
        async with ResearchManager(fay) as manager:
            started.append(await manager.start_research("q"))
            raise LookupError("the application failed")

    with pytest.raises(LookupError, match="the application failed"):  # not an ExceptionGroup
        await application()
    assert emulator.research(started[0]).status is S.STOPPED


async def test_leaving_when_cancelled_still_stops(emulator: FayEmulator, fay: FayClient) -> None:
    with anyio.move_on_after(10):
        async with ResearchManager(fay) as manager:
            request_id = await manager.start_research("q")
            await anyio.sleep(100)
    assert emulator.research(request_id).status is S.STOPPED
    assert not manager.active_requests


async def test_leaving_logs_the_stops_that_failed(
    fay: FayClient, emulator: FayEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    async with ResearchManager(fay) as manager:
        await manager.start_research("q")
        emulator.inject_fault("stop", Fault.error(401, "INVALID_API_KEY", "key revoked"))
    assert "1 of 1 researches could not be stopped on exit" in caplog.text


async def test_waits_in_progress_end_when_the_manager_closes(
    emulator: FayEmulator, fay: FayClient
) -> None:
    elsewhere = await fay.create_conversation("started elsewhere")
    errors: list[BaseException] = []

    async def wait(request_id: str) -> None:
        try:
            await manager.wait_for_completion(request_id)
        except (RuntimeError, ResearchStoppedError) as error:
            errors.append(error)

    async with anyio.create_task_group() as tg, ResearchManager(fay) as manager:
        request_id = await manager.start_research("q")
        tg.start_soon(wait, request_id)
        tg.start_soon(wait, elsewhere.request_id)
        await anyio.sleep(1)
    # The tracked research is stopped on leaving, and its waiter hears so; the other is
    # left running, and its waiter hears that the manager closed.
    stopped, closed = sorted(errors, key=lambda e: isinstance(e, RuntimeError))
    assert isinstance(stopped, ResearchStoppedError)
    assert stopped.request_id == request_id
    assert isinstance(closed, RuntimeError)
    assert "closed while this research was being waited on" in str(closed)
    assert emulator.research(request_id).status is S.STOPPED
    assert emulator.research(elsewhere.request_id).status.is_running


# --- observing status changes ---------------------------------------------------------------


async def test_watch_yields_each_new_status() -> None:
    emulator = FayEmulator(scenario=Scenario(pending_s=20.0, processing_s=30.0))
    async with emulator.client() as fay, ResearchManager(fay) as manager:
        request_id = await manager.start_research("q")
        seen = [(info.status, info.request_id) async for info in manager.watch(request_id)]
        assert seen == [
            (S.PENDING, request_id),
            (S.PROCESSING, request_id),
            (S.COMPLETED, request_id),
        ]
        # A finished research yields its final status once, without a new status call.
        calls = emulator.call_counts()["status"]
        assert [i.status async for i in manager.watch(request_id)] == [S.COMPLETED]
        assert emulator.call_counts()["status"] == calls


async def test_watch_raises_what_ends_polling(manager: ResearchManager) -> None:
    with pytest.raises(NotFoundError):
        async for _ in manager.watch("5a4a5c8e-0000-4000-8000-000000000000"):
            pass


async def test_leaving_a_watch_early_stops_its_polls(
    emulator: FayEmulator, manager: ResearchManager
) -> None:
    request_id = await manager.start_research("q")
    async with aclosing(manager.watch(request_id)) as changes:
        async for info in changes:
            assert info.status is S.PENDING
            break
    calls = emulator.call_counts()["status"]
    await anyio.sleep(120)
    assert emulator.call_counts()["status"] == calls


@pytest.mark.parametrize("kind", ["function", "coroutine"])
async def test_on_status_change_sees_every_change(
    kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="fay_async")
    seen: list[tuple[str, ResearchStatus]] = []

    def record(info: ConversationInfo) -> None:
        seen.append((info.request_id, info.status))

    async def record_async(info: ConversationInfo) -> None:
        await anyio.sleep(0.5)
        record(info)

    emulator = FayEmulator(scenario=Scenario(pending_s=20.0, processing_s=30.0))
    callback: Any = record if kind == "function" else record_async
    async with emulator.client() as fay, ResearchManager(fay, on_status_change=callback) as mgr:
        result = await mgr.research("q")
    rid = result.request_id
    assert seen == [(rid, S.PROCESSING), (rid, S.COMPLETED)]
    assert f"research {rid}: PENDING -> PROCESSING" in caplog.text
    assert f"research {rid}: PROCESSING -> COMPLETED" in caplog.text


async def test_a_failing_callback_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    def broken(info: ConversationInfo) -> None:
        raise ValueError("callback bug")

    emulator = FayEmulator(scenario=QUICK)
    async with emulator.client() as fay, ResearchManager(fay, on_status_change=broken) as mgr:
        result = await mgr.research("q")
    assert result.info.status is S.COMPLETED
    assert "on_status_change failed" in caplog.text
    assert "callback bug" in caplog.text


# --- tracking ids started elsewhere ---------------------------------------------------------


async def test_track_adopts_a_research_for_cancel(
    emulator: FayEmulator, fay: FayClient, manager: ResearchManager
) -> None:
    created = await fay.create_conversation("from a previous run")
    entry = manager.track(created.request_id, prompt="from a previous run")
    assert entry.status is None
    assert manager.track(created.request_id) is entry  # idempotent
    info = await manager.wait_for_completion(created.request_id, timeout=1000)
    assert info.status is S.COMPLETED
    assert created.request_id not in manager.active_requests
    other = await fay.create_conversation("another")
    manager.track(other.request_id)
    assert (await manager.cancel_research(other.request_id)).status is S.STOPPED


# --- bad inputs and misuse ------------------------------------------------------------------


@pytest.mark.parametrize("bad_id", ["", "../status", "a b", "x/y", 42])
async def test_invalid_ids_are_refused_before_sending(
    bad_id: Any, emulator: FayEmulator, manager: ResearchManager
) -> None:
    with pytest.raises(InvalidRequestIdError):
        await manager.wait_for_completion(bad_id)
    with pytest.raises(InvalidRequestIdError):
        await manager.cancel_research(bad_id)
    with pytest.raises(InvalidRequestIdError):
        async for _ in manager.watch(bad_id):
            pass
    with pytest.raises(InvalidRequestIdError):
        manager.track(bad_id)
    assert emulator.calls() == []


@pytest.mark.parametrize(
    ("timeout", "error", "message"),
    [
        (0, ValueError, "timeout must be a positive number of seconds"),
        (-5, ValueError, "timeout must be a positive number of seconds"),
        (float("nan"), ValueError, "timeout must be a positive number of seconds"),
        ("300", TypeError, "timeout must be a number of seconds or None, got str"),
        (True, TypeError, "timeout must be a number of seconds or None, got bool"),
    ],
)
async def test_bad_timeouts_are_refused(
    timeout: Any,  # noqa: ASYNC109 - the value under test
    error: type[Exception],
    message: str,
    emulator: FayEmulator,
    manager: ResearchManager,
) -> None:
    with pytest.raises(error, match=message):
        await manager.research("q", timeout=timeout)
    with pytest.raises(error, match=message):
        await manager.wait_for_completion("e0a05c59-a5d7-44f3-8d5e-9e535e4db957", timeout=timeout)
    assert emulator.calls() == []


async def test_an_infinite_timeout_means_no_limit(manager: ResearchManager) -> None:
    result = await manager.research("q", timeout=float("inf"))
    assert result.info.status is S.COMPLETED


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"stop_grace": 0}, ValueError, "stop_grace must be a positive number"),
        ({"stop_grace": float("inf")}, ValueError, "stop_grace must be a finite number"),
        ({"stop_grace": "10"}, TypeError, "stop_grace must be a number of seconds"),
        ({"max_concurrent_stops": 0}, ValueError, "max_concurrent_stops must be a whole number"),
        ({"max_concurrent_stops": 2.5}, TypeError, "max_concurrent_stops must be a whole"),
        ({"poll_policy": {"pending_first": 3}}, TypeError, "poll_policy must be a PollPolicy"),
        ({"on_status_change": "print"}, TypeError, "on_status_change must be callable"),
    ],
)
async def test_bad_options_are_refused(
    kwargs: dict[str, Any], error: type[Exception], message: str, fay: FayClient
) -> None:
    with pytest.raises(error, match=message):
        ResearchManager(fay, **kwargs)


async def test_the_manager_must_be_entered_once(fay: FayClient) -> None:
    manager = ResearchManager(fay)
    with pytest.raises(RuntimeError, match="use it as `async with ResearchManager"):
        await manager.research("q")
    with pytest.raises(RuntimeError, match="not open"):
        await manager.cancel_all_research()
    with pytest.raises(RuntimeError, match="was not entered"):
        await manager.__aexit__(None, None, None)
    async with manager:
        pass
    with pytest.raises(RuntimeError, match="entered only once"):
        async with manager:
            pass
    with pytest.raises(RuntimeError, match="not open"):
        await manager.start_research("q")


# --- the create budget ----------------------------------------------------------------------


async def test_a_start_beyond_the_create_budget_waits_past_the_client_deadline() -> None:
    emulator = FayEmulator(rate_limits={"create": 2})
    limits = RateLimits(create=2)
    async with emulator.client(rate_limits=limits) as fay, ResearchManager(fay) as manager:
        start = anyio.current_time()
        ids = [await manager.start_research(f"q{n}") for n in range(3)]
        waited = anyio.current_time() - start
    assert waited == pytest.approx(3600.0, abs=1.0)  # much longer than the 120-s deadline
    assert len(set(ids)) == 3
    assert [c.status_code for c in emulator.calls() if c.endpoint == "create"] == [200] * 3


async def test_a_start_beyond_the_create_budget_can_raise_instead() -> None:
    emulator = FayEmulator()
    limits = RateLimits(create=1, wait_for_create=False)
    async with emulator.client(rate_limits=limits) as fay, ResearchManager(fay) as manager:
        await manager.start_research("first")
        start = anyio.current_time()
        with pytest.raises(RateLimitError) as info:
            await manager.start_research("second")
        assert anyio.current_time() == start
        assert info.value.retry_after == pytest.approx(3600.0, abs=1.0)
        assert len(manager.active_requests) == 1
    assert emulator.created_prompts() == ["first"]


async def test_concurrent_starts_queue_for_create_slots() -> None:
    emulator = FayEmulator(rate_limits={"create": 3})
    limits = RateLimits(create=3)
    async with (
        emulator.client(rate_limits=limits) as fay,
        ResearchManager(fay) as manager,
        anyio.create_task_group() as tg,
    ):
        for n in range(7):
            tg.start_soon(manager.start_research, f"q{n}")
    creates = [c for c in emulator.calls() if c.endpoint == "create"]
    assert [c.status_code for c in creates] == [200] * 7
    assert [round(c.time / 3600.0) for c in creates] == [0, 0, 0, 1, 1, 1, 2]


# --- the batch runner's hooks ---------------------------------------------------------------


async def test_on_created_sees_the_id_before_the_wait(
    emulator: FayEmulator, manager: ResearchManager
) -> None:
    seen: list[tuple[str, bool]] = []

    def created(request_id: str) -> None:
        seen.append((request_id, request_id in manager.active_requests))

    result = await manager.research("q", on_created=created)
    assert seen == [(result.request_id, True)]

    async def created_async(request_id: str) -> None:
        await anyio.sleep(1)
        seen.append((request_id, request_id in manager.active_requests))

    second = await manager.research("q", on_created=created_async)
    assert seen[1] == (second.request_id, True)
    with pytest.raises(TypeError, match="on_created must be callable"):
        await manager.research("q", on_created="journal")  # type: ignore[arg-type]


async def test_before_create_runs_after_the_slot_wait_and_before_sending(
    emulator: FayEmulator,
) -> None:
    marks: list[tuple[float, int]] = []
    limits = RateLimits(create=1)
    async with emulator.client(rate_limits=limits) as fay, ResearchManager(fay) as manager:

        def before() -> None:
            marks.append((anyio.current_time(), len(emulator.created_prompts())))

        start = anyio.current_time()
        await manager.start_research("first")
        await manager.research("second", timeout=None, before_create=before)
        with pytest.raises(TypeError, match="before_create must be callable"):
            await manager.research("q", before_create=3)  # type: ignore[arg-type]
    [(when, created_before)] = marks
    assert when - start == pytest.approx(3600, abs=2)  # after the wait for a create slot
    assert created_before == 1  # and before the second research existed


async def test_the_timeout_starts_once_the_create_answered_and_on_created_returned() -> None:
    # The create is answered after 5 s and on_created takes 20 s more: the 10-s timeout
    # runs from 25 s to 35 s, and the research, done at 30 s, is seen within it. Counted
    # from the create (deadline 10 s or 15 s), it would have timed out.
    emulator = FayEmulator(scenario=Scenario(pending_s=10.0, processing_s=20.0))
    emulator.inject_fault("create", Fault.latency(5.0))

    async def created(request_id: str) -> None:
        await anyio.sleep(20.0)

    policy = PollPolicy(jitter=0)
    async with emulator.client() as fay, ResearchManager(fay, poll_policy=policy) as manager:
        start = anyio.current_time()
        result = await manager.research("q", timeout=10, on_created=created)
        assert 30.0 <= anyio.current_time() - start <= 35.0
    assert result.info.status is S.COMPLETED
    assert emulator.call_counts()["stop"] == 0


async def test_a_failing_on_created_stops_the_research(
    emulator: FayEmulator, manager: ResearchManager
) -> None:
    def created(request_id: str) -> None:
        raise OSError("journal disk full")

    with pytest.raises(OSError, match="journal disk full"):
        await manager.research("q", on_created=created)
    assert [r.status for r in emulator.researches()] == [S.STOPPED]
    assert not manager.active_requests


async def test_resume_follows_an_existing_research(
    emulator: FayEmulator, fay: FayClient, manager: ResearchManager
) -> None:
    created = await fay.create_conversation("from before the restart")
    result = await manager.resume_research(created.request_id, prompt="from before the restart")
    assert result.request_id == created.request_id
    assert result.text == emulator.research(created.request_id).output
    assert not manager.active_requests
    late = await fay.create_conversation("too slow")
    with pytest.raises(ResearchTimeoutError) as info:
        await manager.resume_research(late.request_id, timeout=5)
    assert info.value.stopped is True
    assert emulator.research(late.request_id).status is S.STOPPED
    with pytest.raises(InvalidRequestIdError):
        await manager.resume_research("../x")


# --- corner cases ---------------------------------------------------------------------------


async def test_a_start_still_waiting_for_a_slot_when_the_manager_closes() -> None:
    emulator = FayEmulator(rate_limits={"create": 1})
    errors: list[BaseException] = []
    async with (
        emulator.client(rate_limits=RateLimits(create=1)) as fay,
        anyio.create_task_group() as tg,
        ResearchManager(fay) as manager,
    ):
        await manager.start_research("first")

        async def second() -> None:
            try:
                await manager.start_research("second")
            except RuntimeError as error:
                errors.append(error)

        tg.start_soon(second)
        await anyio.sleep(10)
    assert len(errors) == 1
    assert "not open" in str(errors[0])
    assert emulator.created_prompts() == ["first"]


async def test_resume_of_a_research_already_seen_to_finish(
    emulator: FayEmulator, manager: ResearchManager
) -> None:
    request_id = await manager.start_research("q")
    await manager.wait_for_completion(request_id)
    calls = emulator.call_counts()["status"]
    result = await manager.resume_research(request_id)
    assert result.info.status is S.COMPLETED
    assert emulator.call_counts()["status"] == calls  # known to be finished: no status call
    assert not manager.active_requests


async def test_a_refused_stop_of_a_running_research_raises(
    emulator: FayEmulator, manager: ResearchManager
) -> None:
    request_id = await manager.start_research("q")
    emulator.inject_fault("stop", Fault.error(409, "CONFLICT", "try again"))
    with pytest.raises(APIError, match="try again") as info:
        await manager.cancel_research(request_id)
    assert info.value.status_code == 409
    assert request_id in manager.active_requests
    assert running(emulator) == [request_id]


async def test_waiters_learn_of_a_confirmed_stop_without_another_status_check(
    emulator: FayEmulator, fay: FayClient
) -> None:
    changes: list[str] = []

    def changed(info: ConversationInfo) -> None:
        changes.append(info.status.value)

    async with ResearchManager(fay, on_status_change=changed) as manager:
        request_id = await manager.start_research("to be cancelled")
        errors: list[BaseException] = []

        async def waiter() -> None:
            try:
                await manager.wait_for_completion(request_id)
            except ResearchStoppedError as error:
                errors.append(error)

        async with anyio.create_task_group() as group:
            group.start_soon(waiter)
            await anyio.sleep(4.0)  # one check has seen it PENDING
            checks = emulator.call_counts()["status"]
            stopped = await manager.cancel_research(request_id)
        assert stopped.status is S.STOPPED
        assert [type(e) for e in errors] == [ResearchStoppedError]
        assert emulator.call_counts()["status"] == checks  # the stop's answer was enough
        assert changes == ["STOPPED"]  # observers hear of it too


@pytest.mark.parametrize("client", ["x", None, object()])
def test_a_manager_needs_a_client_at_construction(client: Any) -> None:
    with pytest.raises(TypeError, match="ResearchManager needs a FayClient, got"):
        ResearchManager(client)


async def test_repr_shows_state_and_tracked_count(fay: FayClient) -> None:
    manager = ResearchManager(fay)
    assert repr(manager).startswith("<ResearchManager new: 0 tracked, client=FayClient(")
    async with manager:
        manager.track("e0a05c59-a5d7-44f3-8d5e-9e535e4db957")
        assert repr(manager).startswith("<ResearchManager open: 1 tracked")
    assert repr(manager).startswith("<ResearchManager closed: 0 tracked")
    assert "test-key" not in repr(manager)
