"""``fay-async batch``: a resumable batch run over an input file, nothing paid twice.

:func:`run_batch` drives :func:`fay_async.research_many` through the journal: it
decides before a run what an earlier run left half done (the resume policy), records
each request id and result as they come, and rewrites the output file from the journal.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import attrs

from fay_async import (
    BatchItem,
    BatchResult,
    NotFoundError,
    ResearchManager,
    ResearchStatus,
    research_many,
)

from .inputs import BatchInputError, read_items
from .journal import Journal, journal_path
from .progress import BatchProgress, open_progress
from .push import open_run
from .run import EXIT_NOT_COMPLETED, EXIT_OK, UsageError

__all__ = ["BatchSummary", "batch", "run_batch"]

#: The status of a result that ended in an error.
ERROR: Final = "ERROR"
#: research_many's documented error code for a create that may have started a research
#: whose request id never came back.
CREATE_INTERRUPTED: Final = "CREATE_INTERRUPTED"
_RETRY_HINT: Final = "; rerun with --retry-uncertain to create it anyway"


def _with_retry_hint(result: BatchResult) -> BatchResult:
    """A cut-off create's result, telling the user which flag creates it anyway."""
    if result.error_code != CREATE_INTERRUPTED:
        return result
    return attrs.evolve(result, error_message=f"{result.error_message}{_RETRY_HINT}")


def _cut_off_by_a_crash(item: BatchItem) -> BatchResult:
    """The result of an item whose create was sent by a run that died before the answer."""
    return BatchResult(
        item=item,
        request_id=None,
        status=ERROR,
        error_code=CREATE_INTERRUPTED,
        error_message=(
            "the batch stopped while this prompt's research was being created; the research "
            "may exist (and be billed) under an unknown request id, so it was not created "
            f"again{_RETRY_HINT}"
        ),
    )


@attrs.define
class BatchSummary:
    """What a batch run ended with, counted over every item of the input."""

    total: int
    statuses: dict[str, int] = attrs.field(factory=dict)
    resumed: int = 0
    skipped: int = 0
    interrupted: bool = False

    @property
    def completed(self) -> int:
        """Items whose research completed."""
        return self.statuses.get(ResearchStatus.COMPLETED.value, 0)

    @property
    def all_completed(self) -> bool:
        """True when every item of the input has a completed result."""
        return self.completed == self.total


def _rewrite(out_path: Path, records: Iterable[Mapping[str, Any]]) -> None:
    """Write the recorded results to ``out_path`` atomically (a rerun starts from them)."""
    temporary = out_path.with_name(out_path.name + ".tmp")
    with temporary.open("w", encoding="utf-8") as out:
        for record in records:
            out.write(json.dumps(record, ensure_ascii=False) + "\n")
        out.flush()
        os.fsync(out.fileno())
    temporary.replace(out_path)


def _is_uncertain_result(result: Mapping[str, Any] | None) -> bool:
    error = (result or {}).get("error")
    return isinstance(error, dict) and error.get("code") == CREATE_INTERRUPTED


async def _settle_leftovers(
    manager: ResearchManager,
    items: Sequence[BatchItem],
    journal: Journal,
    extra: Mapping[str, Any],
    *,
    retry_uncertain: bool,
    ids_survive: bool,
) -> None:
    """Decide, before a run, what an earlier run left half done."""
    entries = journal.entries()
    for item in items:
        entry = entries[item.key]
        result = entry.result
        if result is None and not ids_survive and (entry.request_id or entry.creating):
            # The earlier run's researches are gone with it (an in-process emulator).
            journal.restart(item.key)
        elif retry_uncertain and (entry.uncertain or _is_uncertain_result(result)):
            journal.restart(item.key)
        elif entry.uncertain:
            journal.finished(item.key, {**_cut_off_by_a_crash(item).to_json(), **extra})
        elif result is not None and _never_created(result):
            journal.restart(item.key)  # nothing was paid: try again
        elif result is None and entry.request_id is not None and entry.interrupted:
            # Stopped by an earlier Ctrl-C: a stopped research has no output, so start anew.
            try:
                info = await manager.client.get_status(entry.request_id)
            except NotFoundError as error:
                gone = BatchResult(
                    item=item,
                    request_id=entry.request_id,
                    status=ERROR,
                    error_code=error.code or type(error).__name__,
                    error_message=error.message,
                )
                journal.finished(item.key, {**gone.to_json(), **extra})
                continue
            if info.status is ResearchStatus.STOPPED:
                journal.restart(item.key)


def _never_created(result: Mapping[str, Any]) -> bool:
    """A recorded error that came before any research existed (rate limit, bad input...)."""
    return (
        result.get("status") == ERROR
        and result.get("request_id") is None
        and not _is_uncertain_result(result)
    )


def _refuse_orphan_results(out_file: Path, journal: Journal) -> None:
    """A new journal beside an output that has results: rewriting it would lose them."""
    if journal.is_empty and out_file.exists() and out_file.stat().st_size > 0:
        raise BatchInputError(
            f"already holds results, but its journal {journal.path} is new (moved or "
            "deleted?): restore the journal to resume that batch, or write to another --out",
            path=out_file,
        )


async def run_batch(
    manager: ResearchManager,
    items: Sequence[BatchItem],
    *,
    journal: Journal,
    out_path: str | os.PathLike[str],
    input_path: str | os.PathLike[str],
    concurrency: int = 8,
    timeout: float | None = 300.0,
    progress: BatchProgress | None = None,
    extra: Mapping[str, Any] | None = None,
    retry_uncertain: bool = False,
    target: str | None = None,
    ids_survive: bool = True,
) -> BatchSummary:
    """Run a resumable batch: one JSON line per item in ``out_path``, nothing paid twice.

    Items the journal has a result for are skipped; items with a request id are waited
    for again (a research stopped by an earlier interrupt is started afresh); the rest
    start. Each request id is journalled as soon as it exists and each result before it
    is written out, so a crash at any point loses nothing. If the run is cancelled (Ctrl-C),
    the researches in flight are stopped, marked interrupted in the journal, and the
    cancellation goes on.

    An item whose create was sent but whose request id never came back (the process was
    killed during that round trip) may exist on the service: it is not created again but
    gets a ``CREATE_INTERRUPTED`` error result, unless ``retry_uncertain`` asks to create
    it anyway. An error recorded before any research existed (a rate limit, a refused
    prompt) is tried again.

    ``target`` names where the researches live (the base URL): a journal started against
    another target is refused. ``ids_survive=False`` says the earlier run's researches
    are gone (an in-process emulator), so its unfinished items start afresh.
    """
    progress = progress or BatchProgress()
    out_file = Path(out_path)
    _refuse_orphan_results(out_file, journal)
    if target is not None:
        journal.bind_target(target)
    journal.register(items, input_path=input_path)
    await _settle_leftovers(
        manager,
        items,
        journal,
        extra or {},
        retry_uncertain=retry_uncertain,
        ids_survive=ids_survive,
    )
    entries = journal.entries()
    summary = BatchSummary(total=len(items))
    for item in items:
        recorded = entries[item.key].result
        if recorded is not None:
            status = str(recorded.get("status"))
            summary.statuses[status] = summary.statuses.get(status, 0) + 1
            summary.skipped += 1
    _rewrite(out_file, journal.results(item.key for item in items))
    todo = [item for item in items if entries[item.key].result is None]
    resume = {
        item.key: request_id
        for item in todo
        if (request_id := entries[item.key].request_id) is not None
    }
    summary.resumed = len(resume)
    progress.started(len(items), summary.skipped)
    in_flight: set[str] = set(resume)

    def creating(item: BatchItem) -> None:
        journal.creating(item.key)

    def created(item: BatchItem, request_id: str) -> None:
        journal.created(item.key, request_id)
        in_flight.add(item.key)
        progress.created(item, request_id)

    def abandoned(abandoned_items: list[BatchItem]) -> None:
        # Before the stops go out: a second Ctrl-C may end the process at any moment.
        for item in abandoned_items:
            journal.interrupted(item.key)

    try:
        # One short line per result, flushed at once: blocking writes are the simple, safe
        # choice here, and the journal before them is synchronous by design.
        with out_file.open("a", encoding="utf-8") as out:  # noqa: ASYNC230
            async with research_many(
                manager,
                todo,
                concurrency=concurrency,
                timeout=timeout,
                resume=resume,
                on_created=created,
                on_creating=creating,
                on_abandon=abandoned,
            ) as results:
                async for item_result in results:
                    result = _with_retry_hint(item_result)
                    record = {**result.to_json(), **(extra or {})}
                    journal.finished(result.item.key, record)
                    in_flight.discard(result.item.key)
                    out.write(json.dumps(record, ensure_ascii=False) + "\n")
                    out.flush()
                    summary.statuses[result.status] = summary.statuses.get(result.status, 0) + 1
                    progress.finished(result)
    except BaseException:
        summary.interrupted = True
        for key in in_flight:
            journal.interrupted(key)
        raise
    return summary


def _checked_out(out: Path, source: Path) -> Path:
    if out.is_dir():
        raise UsageError(f"--out {out}: is a directory; give a file name such as results.jsonl")
    if not out.parent.is_dir():
        raise UsageError(f"--out {out}: the folder {out.parent} does not exist")
    if out.resolve() == source.resolve():
        raise UsageError("--out must not be the input file")
    return out


async def batch(args: argparse.Namespace) -> int:
    """``fay-async batch FILE --out OUT``: a resumable batch; see :func:`run_batch`.

    With ``--redis URL`` (or ``$FAY_REDIS_URL``), a worker of a batch shared by several
    processes: see :mod:`fay_async._cli.fleetbatch`.
    """
    from .fleetbatch import fleet_batch, redis_url  # noqa: PLC0415 - a rarer case

    if redis_url(args) is not None:
        return await fleet_batch(args)
    items = read_items(args.file)
    out = _checked_out(Path(args.out), Path(args.file))
    with Journal(journal_path(out)) as journal, open_progress() as progress:
        async with open_run(args) as (target, manager):
            extra = {"emulated": True} if target.emulated else None
            summary = await run_batch(
                manager,
                items,
                journal=journal,
                out_path=out,
                input_path=args.file,
                concurrency=args.concurrency,
                timeout=target.real_seconds(args.timeout),
                progress=progress,
                extra=extra,
                retry_uncertain=args.retry_uncertain,
                target=target.name,
                ids_survive=not target.emulated,
            )
    parts = [
        f"{count} {status.lower().replace('_', ' ')}" for status, count in summary.statuses.items()
    ]
    print(f"{summary.total} prompts: {', '.join(parts)} -> {out}")
    return EXIT_OK if summary.all_completed else EXIT_NOT_COMPLETED
