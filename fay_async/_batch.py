"""Many researches at once: ``research_many``, its items and its results."""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final

import anyio
import attrs
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from ._models import CreateRequest, ResearchStatus
from .exceptions import (
    APIConnectionError,
    APIError,
    FayError,
    ResearchFailedError,
    ResearchStoppedError,
    ResearchTimeoutError,
    ServerError,
    UnexpectedResponseError,
)

if TYPE_CHECKING:
    from typing_extensions import Self

    from ._manager import ResearchManager

__all__ = ["BatchItem", "BatchResult", "ResearchMany", "research_many"]

#: Outcome names of a batch result, beyond the research statuses.
TIMED_OUT: Final = "TIMED_OUT"
ERROR: Final = "ERROR"
#: The error code of a create that failed in a way that may still have started a research.
CREATE_INTERRUPTED: Final = "CREATE_INTERRUPTED"


@attrs.frozen(kw_only=True)
class BatchItem:
    """One prompt of a batch, with the key that identifies it across reruns."""

    key: str
    prompt: str
    structured_output: bool = False
    output_schema: dict[str, Any] | None = None
    line: int | None = None

    @classmethod
    def of(cls, value: BatchItem | str, index: int) -> BatchItem:
        """An item from a prompt string (keyed by its position) or an item as it is."""
        if isinstance(value, BatchItem):
            return value
        return cls(key=f"#{index}", prompt=value)

    @property
    def fingerprint(self) -> str:
        """A hash of what is sent, to notice an input file edited between runs."""
        body = json.dumps(
            [self.prompt, self.structured_output, self.output_schema], sort_keys=True
        ).encode()
        return hashlib.sha256(body).hexdigest()[:16]


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
        if isinstance(prompts, (str, bytes)):
            # A string is an iterable of characters: one paid research per character.
            raise TypeError(
                f"prompts must be a list of prompts, not a single {type(prompts).__name__}; "
                "pass [prompt] to research one prompt"
            )
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
                CreateRequest(
                    prompt=item.prompt,
                    structured_output=item.structured_output,
                    output_schema=item.output_schema,
                )
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


def _cut_off_result(item: BatchItem, error: FayError, started: float) -> BatchResult:
    return BatchResult(
        item=item,
        request_id=None,
        status=ERROR,
        error_code=CREATE_INTERRUPTED,
        error_message=(
            f"the create failed after it was sent ({error}); the research may exist (and be "
            "billed) under an unknown request id, so it was not created again"
        ),
        started_at=started,
        finished_at=anyio.current_time(),
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
    ``async for result in results``. ``prompts`` is an iterable of prompt strings or
    :class:`BatchItem` (a single string is refused with ``TypeError``: it would be one
    research per character). At most ``concurrency`` researches are in flight.
    Every prompt yields exactly one result: the completed output, or the error that
    ended it (failed, timed out and stopped, stopped, API error). Leaving the block
    early, or being cancelled, stops every research still in flight.

    ``resume`` maps item keys to request ids created earlier: those are waited for
    again, never created twice. ``on_created(item, request_id)`` is called as soon as
    a research exists, before it is waited for (a journal can record it there);
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
