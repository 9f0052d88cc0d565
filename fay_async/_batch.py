"""Many researches at once: ``research_many`` and the resumable batch runner."""

from __future__ import annotations

import json
import math
import os
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final

import anyio
import attrs
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from ._client import check_create_arguments
from ._journal import BatchInputError, BatchItem, Journal
from ._models import ResearchStatus
from .exceptions import (
    APIConnectionError,
    APIError,
    FayError,
    NotFoundError,
    ResearchFailedError,
    ResearchStoppedError,
    ResearchTimeoutError,
    ServerError,
    UnexpectedResponseError,
)

if TYPE_CHECKING:
    from typing_extensions import Self

    from ._manager import ResearchManager

__all__ = [
    "BatchProgress",
    "BatchResult",
    "BatchSummary",
    "ResearchMany",
    "research_many",
    "run_batch",
]

#: Outcome names of a batch result, beyond the research statuses.
TIMED_OUT: Final = "TIMED_OUT"
ERROR: Final = "ERROR"


@attrs.frozen(kw_only=True)
class BatchResult:
    """The outcome of one prompt of a batch: its output, or the error that ended it."""

    item: BatchItem
    request_id: str | None
    status: str
    output: str | dict[str, Any] | None = None
    error_code: str | None = None
    error_message: str | None = None
    started_at: float = 0.0
    finished_at: float = 0.0

    @property
    def ok(self) -> bool:
        """True when the research completed and its output is here."""
        return self.status == ResearchStatus.COMPLETED.value

    @property
    def elapsed(self) -> float:
        """Seconds from the start of this prompt's research to its result."""
        return self.finished_at - self.started_at

    def to_json(self) -> dict[str, Any]:
        """The result as one JSON object (one line of a batch's output file)."""
        record: dict[str, Any] = {"id": self.item.key}
        if self.item.line is not None:
            record["line"] = self.item.line
        record["request_id"] = self.request_id
        record["status"] = self.status
        if self.ok:
            record["output"] = self.output
        else:
            record["error"] = {"code": self.error_code, "message": self.error_message}
        record["elapsed_s"] = round(self.elapsed, 3)
        return record


def _error_result(
    item: BatchItem, request_id: str | None, error: FayError, started: float
) -> BatchResult:
    status = ERROR
    code: str | None = type(error).__name__
    message = str(error)
    if isinstance(error, ResearchTimeoutError):
        status = TIMED_OUT
    elif isinstance(error, ResearchFailedError):
        status = ResearchStatus.FAILED.value
        message = error.error_message or message
    elif isinstance(error, ResearchStoppedError):
        status = ResearchStatus.STOPPED.value
    elif isinstance(error, APIError):
        code = error.code or code
        message = error.message
    return BatchResult(
        item=item,
        request_id=request_id or getattr(error, "request_id", None),
        status=status,
        error_code=code,
        error_message=message,
        started_at=started,
        finished_at=anyio.current_time(),
    )


class ResearchMany:
    """Runs prompts through a manager, ``concurrency`` at a time; see :func:`research_many`."""

    def __init__(
        self,
        manager: ResearchManager,
        prompts: Iterable[BatchItem | str],
        *,
        concurrency: int,
        timeout: float | None,
        resume: Mapping[str, str] | None = None,
        on_created: Callable[[BatchItem, str], object] | None = None,
        on_creating: Callable[[BatchItem], object] | None = None,
        on_abandon: Callable[[list[BatchItem]], object] | None = None,
    ) -> None:
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise ValueError(f"concurrency must be a whole number >= 1, got {concurrency!r}")
        if timeout is not None and (
            isinstance(timeout, bool)
            or not isinstance(timeout, (int, float))
            or not timeout > 0
            or math.isnan(timeout)
        ):
            raise ValueError(
                f"timeout must be a positive number of seconds or None, got {timeout!r}"
            )
        self._manager = manager
        self._items = [BatchItem.of(value, index) for index, value in enumerate(prompts)]
        keys = [item.key for item in self._items]
        if len(set(keys)) != len(keys):
            raise ValueError("every batch item needs its own key")
        self._concurrency = concurrency
        self._timeout = timeout
        self._resume = dict(resume or {})
        self._on_created = on_created
        self._on_creating = on_creating
        self._on_abandon = on_abandon
        self._in_flight: dict[str, BatchItem] = {}
        self._task_group: TaskGroup | None = None
        self._send: MemoryObjectSendStream[BatchResult] | None = None
        self._receive: MemoryObjectReceiveStream[BatchResult] | None = None

    async def __aenter__(self) -> Self:
        send, receive = anyio.create_memory_object_stream[BatchResult](len(self._items) or 1)
        self._send, self._receive = send, receive
        self._task_group = anyio.create_task_group()
        await self._task_group.__aenter__()
        self._task_group.start_soon(self._feed, send)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> bool | None:
        if self._task_group is None or self._receive is None:
            raise RuntimeError("research_many() was not entered")
        # Leaving early (break, error, cancellation) abandons the rest: in-flight researches
        # are cancelled, and the manager stops each of them on the service. The hook hears
        # of them first, before any stop is sent.
        if self._in_flight and self._on_abandon is not None:
            self._on_abandon(list(self._in_flight.values()))
        self._task_group.cancel_scope.cancel()
        try:
            # The body's own exception is not handed to the task group: it would come back
            # wrapped in an ExceptionGroup. It propagates from here unchanged.
            await self._task_group.__aexit__(None, None, None)
        finally:
            self._receive.close()
        return None

    def __aiter__(self) -> AsyncIterator[BatchResult]:
        if self._receive is None:
            raise RuntimeError(
                "use research_many() as 'async with research_many(...) as results:' "
                "and iterate over results inside the block"
            )
        return self._receive.__aiter__()

    async def _feed(self, send: MemoryObjectSendStream[BatchResult]) -> None:
        limiter = anyio.Semaphore(self._concurrency)
        async with send, anyio.create_task_group() as group:
            for item in self._items:
                await limiter.acquire()
                group.start_soon(self._one, item, limiter, send.clone())

    async def _one(
        self,
        item: BatchItem,
        limiter: anyio.Semaphore,
        send: MemoryObjectSendStream[BatchResult],
    ) -> None:
        async with send:
            try:
                result = await self._run(item)
            finally:
                self._in_flight.pop(item.key, None)
                limiter.release()
            await send.send(result)

    async def _run(self, item: BatchItem) -> BatchResult:
        started = anyio.current_time()
        request_id = self._resume.get(item.key)
        if request_id is None:
            try:
                check_create_arguments(item.prompt, item.structured_output, item.output_schema)
            except (TypeError, ValueError) as error:
                return BatchResult(
                    item=item,
                    request_id=None,
                    status=ERROR,
                    error_code="INVALID_INPUT",
                    error_message=str(error),
                    started_at=started,
                    finished_at=started,
                )
        sent = False
        if request_id is not None:
            self._in_flight[item.key] = item
        try:
            if request_id is None:

                def creating() -> None:
                    nonlocal sent
                    sent = True
                    self._in_flight[item.key] = item
                    if self._on_creating is not None:
                        self._on_creating(item)

                def created(new_id: str) -> None:
                    nonlocal request_id
                    request_id = new_id
                    if self._on_created is not None:
                        self._on_created(item, new_id)

                result = await self._manager.research(
                    item.prompt,
                    timeout=self._timeout,
                    structured_output=item.structured_output,
                    output_schema=item.output_schema,
                    on_created=created,
                    before_create=creating,
                )
            else:
                result = await self._manager.resume_research(
                    request_id, prompt=item.prompt, timeout=self._timeout
                )
        except FayError as error:
            if request_id is None and sent and _may_have_created(error):
                return _cut_off_result(item, error, started)
            return _error_result(item, request_id, error, started)
        return BatchResult(
            item=item,
            request_id=result.request_id,
            status=ResearchStatus.COMPLETED.value,
            output=result.text,
            started_at=started,
            finished_at=anyio.current_time(),
        )


def _may_have_created(error: FayError) -> bool:
    """Whether a create that failed this way may still have started a research."""
    if isinstance(error, APIConnectionError):
        return getattr(error, "sent", True)
    return isinstance(error, (ServerError, UnexpectedResponseError))


CREATE_INTERRUPTED: Final = "CREATE_INTERRUPTED"
_CUT_OFF = (
    "may exist (and be billed) under an unknown request id, so it was not created again: "
    "rerun with --retry-uncertain to create it anyway"
)


def _cut_off_result(item: BatchItem, error: FayError | None, started: float) -> BatchResult:
    why = (
        f"the create failed after it was sent ({error})"
        if error is not None
        else "the batch stopped while this prompt's research was being created"
    )
    return BatchResult(
        item=item,
        request_id=None,
        status=ERROR,
        error_code=CREATE_INTERRUPTED,
        error_message=f"{why}; the research {_CUT_OFF}",
        started_at=started,
        finished_at=anyio.current_time() if error is not None else started,
    )


def research_many(
    manager: ResearchManager,
    prompts: Iterable[BatchItem | str],
    *,
    concurrency: int = 8,
    timeout: float | None = 300.0,
    resume: Mapping[str, str] | None = None,
    on_created: Callable[[BatchItem, str], object] | None = None,
    on_creating: Callable[[BatchItem], object] | None = None,
    on_abandon: Callable[[list[BatchItem]], object] | None = None,
) -> ResearchMany:
    """Research many prompts concurrently; yield one :class:`BatchResult` as each finishes.

    Use it as ``async with research_many(manager, prompts) as results:`` and iterate
    ``async for result in results``. At most ``concurrency`` researches are in flight.
    Every prompt yields exactly one result: the completed output, or the error that
    ended it (failed, timed out and stopped, stopped, API error). Leaving the block
    early, or being cancelled, stops every research still in flight.

    ``resume`` maps item keys to request ids created earlier: those are waited for
    again, never created twice. ``on_created(item, request_id)`` is called as soon as
    a research exists, before it is waited for (the batch journal records it there);
    ``on_creating(item)`` just before its create is sent; ``on_abandon(items)`` when the
    block is left with researches in flight, before they are stopped.

    A create that failed in a way that may still have started a research (a 5xx, a
    garbled answer, a connection lost after sending) is reported with the error code
    ``CREATE_INTERRUPTED``, never retried.
    """
    return ResearchMany(
        manager,
        prompts,
        concurrency=concurrency,
        timeout=timeout,
        resume=resume,
        on_created=on_created,
        on_creating=on_creating,
        on_abandon=on_abandon,
    )


class BatchProgress:
    """Hooks a batch runner calls as it goes (the command line draws them)."""

    def started(self, total: int, already_done: int) -> None:
        """The batch starts: ``total`` items, ``already_done`` of them from an earlier run."""

    def created(self, item: BatchItem, request_id: str) -> None:
        """A research was created for ``item``."""

    def finished(self, result: BatchResult) -> None:
        """``result`` was recorded."""


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
            journal.finished(item.key, {**_cut_off_result(item, None, 0.0).to_json(), **extra})
        elif result is not None and _never_created(result):
            journal.restart(item.key)  # nothing was paid: try again
        elif result is None and entry.request_id is not None and entry.interrupted:
            # Stopped by an earlier Ctrl-C: a stopped research has no output, so start anew.
            try:
                info = await manager.client.get_status(entry.request_id)
            except NotFoundError as error:
                failed = _error_result(item, entry.request_id, error, 0.0)
                journal.finished(item.key, {**failed.to_json(), **extra})
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
    timeout: float | None = 300.0,  # noqa: ASYNC109 - per research, not for this call
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
                async for result in results:
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
