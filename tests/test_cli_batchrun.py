"""The resumable batch run of ``fay-async batch``, against the in-process emulator."""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import pytest

from fay_async import BatchItem, BatchResult, ResearchManager, ResearchStatus
from fay_async._cli.batchrun import run_batch
from fay_async._cli.inputs import BatchInputError
from fay_async._cli.journal import Journal
from fay_async._cli.progress import BatchProgress
from fay_async.testing import Fault, FayEmulator

from ._emulated import by_prompt, running

pytestmark = pytest.mark.anyio


@pytest.fixture
def emulator() -> FayEmulator:
    return FayEmulator(scenario=by_prompt, seed=3)


class Recorder(BatchProgress):
    def __init__(self) -> None:
        self.events: list[tuple[str, object]] = []

    def started(self, total: int, already_done: int) -> None:
        self.events.append(("started", (total, already_done)))

    def created(self, item: BatchItem, request_id: str) -> None:
        self.events.append(("created", (item.key, request_id)))

    def finished(self, result: BatchResult) -> None:
        self.events.append(("finished", result.item.key))


def lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


async def test_run_batch_writes_one_line_per_item_and_resumes(
    emulator: FayEmulator, manager: ResearchManager, tmp_path: Path
) -> None:
    items = [BatchItem(key=f"line-{i}", prompt=f"q{i}", line=i) for i in range(1, 4)]
    out = tmp_path / "results.jsonl"
    recorder = Recorder()
    with Journal(tmp_path / "j.sqlite") as journal:
        summary = await run_batch(
            manager,
            items,
            journal=journal,
            out_path=out,
            input_path="in.txt",
            concurrency=2,
            progress=recorder,
            extra={"emulated": True},
        )
    assert summary.all_completed
    assert summary.total == 3
    records = lines(out)
    assert sorted(r["id"] for r in records) == ["line-1", "line-2", "line-3"]
    assert all(r["status"] == "COMPLETED" and r["emulated"] is True for r in records)
    assert {r["line"] for r in records} == {1, 2, 3}
    assert recorder.events[0] == ("started", (3, 0))
    assert [e for e in recorder.events if e[0] == "created"].__len__() == 3

    with Journal(tmp_path / "j.sqlite") as journal:
        again = await run_batch(manager, items, journal=journal, out_path=out, input_path="in.txt")
    assert again.skipped == 3
    assert again.all_completed
    assert len(lines(out)) == 3
    assert len(emulator.created_prompts()) == 3


async def test_run_batch_resumes_created_items_and_rebuilds_the_output(
    emulator: FayEmulator, manager: ResearchManager, tmp_path: Path
) -> None:
    items = [BatchItem(key="a", prompt="first"), BatchItem(key="b", prompt="second")]
    earlier = await manager.client.create_conversation("first")
    out = tmp_path / "out.jsonl"
    out.write_text('{"partial": true}\n{"trunc')  # a crash mid-write
    with Journal(tmp_path / "j.sqlite") as journal:
        journal.register(items, input_path="in.txt")
        journal.created("a", earlier.request_id)
        summary = await run_batch(
            manager, items, journal=journal, out_path=out, input_path="in.txt"
        )
    assert summary.resumed == 1
    assert summary.all_completed
    records = lines(out)
    assert len(records) == 2
    assert {r["request_id"] for r in records} >= {earlier.request_id}
    assert emulator.created_prompts() == ["first", "second"]


async def test_an_interrupted_batch_restarts_what_it_stopped(
    emulator: FayEmulator, manager: ResearchManager, tmp_path: Path
) -> None:
    items = [BatchItem(key="q", prompt="quick"), BatchItem(key="s", prompt="slow one")]
    out = tmp_path / "out.jsonl"
    with Journal(tmp_path / "j.sqlite") as journal:
        with anyio.move_on_after(100):
            await run_batch(
                manager, items, journal=journal, out_path=out, input_path="in", timeout=None
            )
        entries = journal.entries()
    assert entries["q"].finished
    assert entries["s"].interrupted
    assert not running(emulator)
    stopped_id = entries["s"].request_id
    assert stopped_id is not None
    assert emulator.research(stopped_id).status is ResearchStatus.STOPPED

    with Journal(tmp_path / "j.sqlite") as journal:
        summary = await run_batch(
            manager, items, journal=journal, out_path=out, input_path="in", timeout=None
        )
    assert summary.all_completed
    assert summary.skipped == 1
    records = {r["id"]: r for r in lines(out)}
    assert records["s"]["status"] == "COMPLETED"
    assert records["s"]["request_id"] != stopped_id
    assert emulator.created_prompts() == ["quick", "slow one", "slow one"]


async def test_an_interrupted_item_that_finished_anyway_is_not_created_again(
    emulator: FayEmulator, manager: ResearchManager, tmp_path: Path
) -> None:
    items = [BatchItem(key="a", prompt="done anyway")]
    created = await manager.client.create_conversation("done anyway")
    with Journal(tmp_path / "j.sqlite") as journal:
        journal.register(items, input_path="in")
        journal.created("a", created.request_id)
        journal.interrupted("a")
        summary = await run_batch(
            manager, items, journal=journal, out_path=tmp_path / "o.jsonl", input_path="in"
        )
    assert summary.all_completed
    assert emulator.created_prompts() == ["done anyway"]


async def test_a_create_cut_off_by_a_crash_is_reported_not_repeated(
    emulator: FayEmulator, manager: ResearchManager, tmp_path: Path
) -> None:
    items = [BatchItem(key="u", prompt="uncertain"), BatchItem(key="n", prompt="normal")]
    out = tmp_path / "o.jsonl"
    with Journal(tmp_path / "j.sqlite") as journal:
        journal.register(items, input_path="in")
        journal.creating("u")  # the process died here, after sending the create
        assert journal.entries()["u"].uncertain
        summary = await run_batch(manager, items, journal=journal, out_path=out, input_path="in")
        assert not summary.all_completed
        records = {r["id"]: r for r in lines(out)}
        assert records["u"]["status"] == "ERROR"
        assert records["u"]["error"]["code"] == "CREATE_INTERRUPTED"
        assert "--retry-uncertain" in records["u"]["error"]["message"]
        assert records["n"]["status"] == "COMPLETED"
        assert emulator.created_prompts() == ["normal"]

        again = await run_batch(manager, items, journal=journal, out_path=out, input_path="in")
        assert again.skipped == 2
        assert emulator.created_prompts() == ["normal"]

        retried = await run_batch(
            manager, items, journal=journal, out_path=out, input_path="in", retry_uncertain=True
        )
    assert retried.all_completed
    assert emulator.created_prompts() == ["normal", "uncertain"]
    assert {r["id"]: r["status"] for r in lines(out)} == {"u": "COMPLETED", "n": "COMPLETED"}


async def test_the_journal_marks_creating_before_the_create_is_sent(
    emulator: FayEmulator, manager: ResearchManager, tmp_path: Path
) -> None:
    items = [BatchItem(key="a", prompt="slow but sure")]
    emulator.inject_fault("create", Fault.latency(5.0))
    with Journal(tmp_path / "j.sqlite") as journal:
        journal.register(items, input_path="in")
        seen: list[bool] = []
        async with anyio.create_task_group() as group:
            group.start_soon(
                lambda: run_batch(
                    manager, items, journal=journal, out_path=tmp_path / "o", input_path="in"
                )
            )
            await anyio.sleep(1.0)  # the create is on the wire
            seen.append(journal.entries()["a"].uncertain)
        entry = journal.entries()["a"]
    assert seen == [True]
    assert not entry.uncertain
    assert entry.finished


@pytest.mark.parametrize(
    ("fault", "code"),
    [
        (Fault.error(503, "SERVICE_UNAVAILABLE"), "CREATE_INTERRUPTED"),
        (Fault.truncated_json(), "CREATE_INTERRUPTED"),
        (Fault.error(400, "VALIDATION_ERROR", "Invalid prompt format"), "VALIDATION_ERROR"),
    ],
)
async def test_a_failed_create_that_may_have_started_a_research_is_not_retried(
    emulator: FayEmulator, manager: ResearchManager, tmp_path: Path, fault: Fault, code: str
) -> None:
    items = [BatchItem(key="a", prompt="alpha")]
    out = tmp_path / "o.jsonl"
    emulator.inject_fault("create", fault, times=5)
    with Journal(tmp_path / "j.sqlite") as journal:
        first = await run_batch(manager, items, journal=journal, out_path=out, input_path="in")
        assert first.statuses == {"ERROR": 1}
        [record] = lines(out)
        assert record["error"]["code"] == code
        emulator.clear_faults()
        await run_batch(manager, items, journal=journal, out_path=out, input_path="in")
    [record] = lines(out)
    if code == "CREATE_INTERRUPTED":  # may exist: reported again, never created again
        assert record["error"]["code"] == "CREATE_INTERRUPTED"
        assert record["error"]["message"].endswith(
            "; rerun with --retry-uncertain to create it anyway"
        )
        assert emulator.call_counts()["create"] == 1
    else:  # certainly refused: nothing was paid, so the rerun tries again
        assert record["status"] == "COMPLETED"


async def test_a_rerun_retries_errors_that_came_before_any_research(
    emulator: FayEmulator, manager: ResearchManager, tmp_path: Path
) -> None:
    items = [BatchItem(key="e", prompt=" "), BatchItem(key="ok", prompt="fine")]
    out = tmp_path / "o.jsonl"
    with Journal(tmp_path / "j.sqlite") as journal:
        await run_batch(manager, items, journal=journal, out_path=out, input_path="in")
        assert {r["id"]: r["status"] for r in lines(out)} == {"e": "ERROR", "ok": "COMPLETED"}
        again = await run_batch(manager, items, journal=journal, out_path=out, input_path="in")
    assert again.skipped == 1
    assert emulator.created_prompts() == ["fine"]


async def test_a_new_journal_beside_old_results_is_refused(
    manager: ResearchManager, tmp_path: Path
) -> None:
    out = tmp_path / "o.jsonl"
    out.write_text('{"id": "a", "status": "COMPLETED"}\n')
    with (
        Journal(tmp_path / "j.sqlite") as journal,
        pytest.raises(BatchInputError, match="already holds results, but its journal"),
    ):
        await run_batch(
            manager,
            [BatchItem(key="a", prompt="A")],
            journal=journal,
            out_path=out,
            input_path="in",
        )
    assert out.read_text() == '{"id": "a", "status": "COMPLETED"}\n'


async def test_ids_that_did_not_survive_are_started_afresh(
    emulator: FayEmulator, manager: ResearchManager, tmp_path: Path
) -> None:
    items = [BatchItem(key="a", prompt="A"), BatchItem(key="b", prompt="B")]
    with Journal(tmp_path / "j.sqlite") as journal:
        journal.register(items, input_path="in")
        journal.created("a", "id-of-an-emulator-that-is-gone")
        journal.interrupted("a")
        journal.creating("b")
        summary = await run_batch(
            manager,
            items,
            journal=journal,
            out_path=tmp_path / "o",
            input_path="in",
            target="the built-in emulator",
            ids_survive=False,
        )
    assert summary.all_completed
    assert sorted(emulator.created_prompts()) == ["A", "B"]


async def test_an_interrupted_research_the_service_no_longer_knows(
    emulator: FayEmulator, manager: ResearchManager, tmp_path: Path
) -> None:
    items = [BatchItem(key="a", prompt="A")]
    with Journal(tmp_path / "j.sqlite") as journal:
        journal.register(items, input_path="in")
        journal.created("a", "unknown-to-this-key")
        journal.interrupted("a")
        summary = await run_batch(
            manager, items, journal=journal, out_path=tmp_path / "o.jsonl", input_path="in"
        )
    assert summary.statuses == {"ERROR": 1}
    [record] = lines(tmp_path / "o.jsonl")
    assert record["error"]["code"] == "REQUEST_NOT_FOUND"
    assert emulator.created_prompts() == []
