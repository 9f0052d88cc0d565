"""research_many, BatchItem and BatchResult, against the in-process emulator."""

from __future__ import annotations

import anyio
import pytest

from fay_async import BatchItem, FayClient, ResearchManager, ResearchStatus, research_many
from fay_async.testing import Fault, FayEmulator

from ._emulated import by_prompt, running

pytestmark = pytest.mark.anyio


@pytest.fixture
def emulator() -> FayEmulator:
    return FayEmulator(scenario=by_prompt, seed=3)


async def test_one_result_per_prompt_with_outputs_and_errors(
    emulator: FayEmulator, manager: ResearchManager
) -> None:
    prompts = ["alpha", "please fail", "too slow", "beta", ""]
    async with research_many(manager, prompts, concurrency=2, timeout=100) as results:
        got = {r.item.prompt: r async for r in results}
    assert set(got) == set(prompts)
    assert got["alpha"].ok
    assert isinstance(got["alpha"].output, str)
    assert "alpha" in got["alpha"].output
    assert got["please fail"].status == "FAILED"
    assert got["please fail"].error_message == "boom"
    assert got["too slow"].status == "TIMED_OUT"
    assert emulator.research(got["too slow"].request_id or "").status is ResearchStatus.STOPPED
    assert got[""].status == "ERROR"
    assert got[""].request_id is None
    assert "prompt is empty" in (got[""].error_message or "")
    assert emulator.created_prompts().count("alpha") == 1
    assert not running(emulator)
    assert not manager.active_requests


async def test_concurrency_is_bounded(emulator: FayEmulator, manager: ResearchManager) -> None:
    in_flight = 0
    most = 0

    def created(item: BatchItem, request_id: str) -> None:
        nonlocal in_flight, most
        in_flight += 1
        most = max(most, in_flight)

    prompts = [f"question {i}" for i in range(12)]
    async with research_many(manager, prompts, concurrency=3, on_created=created) as results:
        async for _ in results:
            in_flight -= 1
    assert most == 3
    assert len(emulator.created_prompts()) == 12


async def test_leaving_early_stops_the_researches_in_flight(
    emulator: FayEmulator, manager: ResearchManager
) -> None:
    prompts = ["quick", "slow 1", "slow 2", "slow 3"]
    async with research_many(manager, prompts, concurrency=4, timeout=None) as results:
        first = await results.__aiter__().__anext__()
    assert first.item.prompt == "quick"
    assert len(emulator.researches()) == 4
    assert not running(emulator)
    assert {r.status for r in emulator.researches()} == {
        ResearchStatus.COMPLETED,
        ResearchStatus.STOPPED,
    }
    assert not manager.active_requests


async def test_cancellation_stops_the_researches_in_flight(
    emulator: FayEmulator, manager: ResearchManager
) -> None:
    with anyio.move_on_after(50):
        async with research_many(manager, ["slow a", "slow b"], timeout=None) as results:
            async for _ in results:
                pass  # pragma: no cover - nothing finishes within 50 s
    assert len(emulator.researches()) == 2
    assert not running(emulator)


async def test_resume_waits_again_without_creating(
    emulator: FayEmulator, manager: ResearchManager
) -> None:
    client: FayClient = manager.client
    earlier = await client.create_conversation("resumed prompt")
    items = [BatchItem(key="a", prompt="resumed prompt"), BatchItem(key="b", prompt="fresh")]
    async with research_many(manager, items, resume={"a": earlier.request_id}) as results:
        got = {r.item.key: r async for r in results}
    assert got["a"].ok
    assert got["a"].request_id == earlier.request_id
    assert got["b"].ok
    assert emulator.created_prompts() == ["resumed prompt", "fresh"]


async def test_api_errors_are_captured_with_their_code(
    emulator: FayEmulator, manager: ResearchManager
) -> None:
    emulator.inject_fault("create", Fault.error(400, "VALIDATION_ERROR", "Invalid prompt format"))
    async with research_many(manager, ["x"]) as results:
        [result] = [r async for r in results]
    assert result.status == "ERROR"
    assert result.error_code == "VALIDATION_ERROR"
    assert result.error_message == "Invalid prompt format"
    assert result.to_json()["error"] == {
        "code": "VALIDATION_ERROR",
        "message": "Invalid prompt format",
    }


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"concurrency": 0}, "concurrency must be"),
        ({"concurrency": 2.5}, "concurrency must be"),
        ({"timeout": 0}, "timeout must be"),
        ({"timeout": float("nan")}, "timeout must be"),
    ],
)
async def test_bad_options(
    manager: ResearchManager, kwargs: dict[str, float], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        research_many(manager, ["x"], **kwargs)  # type: ignore[arg-type]


async def test_items_need_distinct_keys(manager: ResearchManager) -> None:
    items = [BatchItem(key="k", prompt="a"), BatchItem(key="k", prompt="b")]
    with pytest.raises(ValueError, match="its own key"):
        research_many(manager, items)


async def test_iterating_outside_the_block_says_how_to_use_it(manager: ResearchManager) -> None:
    with pytest.raises(RuntimeError, match="async with research_many"):
        research_many(manager, ["x"]).__aiter__()


async def test_the_body_s_own_exception_comes_out_unwrapped(manager: ResearchManager) -> None:
    with pytest.raises(ValueError, match="the caller's own bug"):
        async with research_many(manager, ["slow x"]):
            raise ValueError("the caller's own bug")


async def test_on_abandon_hears_of_the_researches_in_flight_before_they_stop(
    emulator: FayEmulator, manager: ResearchManager
) -> None:
    heard: list[tuple[list[str], int]] = []

    def abandoned(items: list[BatchItem]) -> None:
        stops = emulator.call_counts()["stop"]
        heard.append((sorted(item.prompt for item in items), stops))

    async with research_many(
        manager, ["quick", "slow a", "slow b"], on_abandon=abandoned
    ) as results:
        async for _ in results:
            break
    assert heard == [(["slow a", "slow b"], 0)]
    assert not running(emulator)


@pytest.mark.parametrize("prompts", ["Why?", b"Why?"])
async def test_a_single_prompt_string_is_refused(
    emulator: FayEmulator, manager: ResearchManager, prompts: str | bytes
) -> None:
    with pytest.raises(TypeError) as info:
        research_many(manager, prompts)  # type: ignore[arg-type]
    assert str(info.value) == (
        f"prompts must be a list of prompts, not a single {type(prompts).__name__}; "
        "pass [prompt] to research one prompt"
    )
    assert emulator.created_prompts() == []


def test_item_of() -> None:
    assert BatchItem.of("hello", 3) == BatchItem(key="#3", prompt="hello")
    item = BatchItem(key="k", prompt="p")
    assert BatchItem.of(item, 0) is item


def test_fingerprint_follows_what_is_sent() -> None:
    a = BatchItem(key="k", prompt="p")
    assert a.fingerprint == BatchItem(key="other", prompt="p", line=9).fingerprint
    assert a.fingerprint != BatchItem(key="k", prompt="p", structured_output=True).fingerprint


async def test_a_create_that_may_have_started_a_research_is_reported_not_retried(
    emulator: FayEmulator, manager: ResearchManager
) -> None:
    emulator.inject_fault("create", Fault.error(503, "SERVICE_UNAVAILABLE"), times=5)
    async with research_many(manager, ["alpha"]) as results:
        [result] = [r async for r in results]
    assert result.error_code == "CREATE_INTERRUPTED"
    assert result.request_id is None
    assert (result.error_message or "").endswith(
        "the research may exist (and be billed) under an unknown request id, "
        "so it was not created again"
    )
    assert emulator.call_counts()["create"] == 1
