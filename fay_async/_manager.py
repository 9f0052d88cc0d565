"""``ResearchManager``: the lifecycle of many researches, as the documented flows describe it.

It keeps the *active requests* (the researches it started or was asked to track), polls
their status under the client's shared budget (:mod:`fay_async._polling`), races a wait
against a timeout, and stops researches remotely when they are given up: on a timeout,
when the caller is cancelled, on :meth:`ResearchManager.cancel_research`,
:meth:`~ResearchManager.cancel_all_research`, and on leaving ``async with``.

Every remote stop runs as a task of the manager, inside ``move_on_after(stop_grace,
shield=True)``: a caller that is cancelled (even twice, even by a bare ``task.cancel()``
on asyncio) cannot interrupt a stop half-way, and a stop never takes longer than the grace.
Creates run the same way, so that a research the service has accepted is always tracked.
"""

from __future__ import annotations

import inspect
import logging
import math
import types
from collections.abc import AsyncGenerator, Awaitable, Callable, Coroutine, Mapping
from contextlib import AsyncExitStack
from typing import Any, Final, Generic, TypeVar

import anyio
import anyio.abc
import attrs

from ._client import FayClient, check_create_arguments, validate_request_id
from ._models import ConversationInfo, ResearchResult, ResearchStatus, StopResult
from ._polling import PollPolicy, StatusPoller, Watch
from ._ratelimit import Slot
from .exceptions import (
    APITimeoutError,
    FayError,
    NotFoundError,
    NotTrackedError,
    ResearchFailedError,
    ResearchStoppedError,
    ResearchTimeoutError,
)

__all__ = ["ActiveResearch", "ResearchManager"]

logger: Final = logging.getLogger("fay_async")

T = TypeVar("T")

StatusChangeCallback = Callable[[ConversationInfo], "Awaitable[object] | object"]


@attrs.frozen(kw_only=True)
class ActiveResearch:
    """A research the manager tracks: its id, prompt, loop time started and last status."""

    request_id: str
    prompt: str | None
    started_at: float
    status: ResearchStatus | None


@attrs.define(eq=False)
class _Running:
    """What exists while the manager is open: its tasks and their synchronisation."""

    stack: AsyncExitStack
    tg: anyio.abc.TaskGroup
    poller: StatusPoller
    poller_scope: anyio.CancelScope
    stop_slots: anyio.CapacityLimiter


@attrs.define(eq=False)
class _Job(Generic[T]):
    """A create or a stop running as a task of the manager, and its outcome."""

    done: anyio.Event = attrs.field(factory=anyio.Event)
    result: T | None = None
    error: BaseException | None = None
    abandoned: bool = False


def _check_timeout(timeout: object, name: str = "timeout") -> float:
    """Seconds as a float (``inf`` for None); a clear error for anything else."""
    if timeout is None:
        return math.inf
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise TypeError(f"{name} must be a number of seconds or None, got {type(timeout).__name__}")
    if math.isnan(timeout) or timeout <= 0:
        raise ValueError(
            f"{name} must be a positive number of seconds (or None for no limit), got {timeout!r}"
        )
    return float(timeout)


def _describe_limit(seconds: float) -> str:
    return "without a limit" if math.isinf(seconds) else f"within {seconds:g} s"


class ResearchManager:
    """Starts, waits for, times out and stops many researches through one ``FayClient``.

    Use it as an async context manager: it owns the tasks that poll and stop. On leaving,
    every research still tracked is stopped when ``cancel_on_exit`` is true (the default),
    else left running. ``poll_policy`` sets the status-check schedule, ``stop_grace`` the
    most seconds one remote stop may take (queueing included), ``max_concurrent_stops``
    how many stops run at once, and ``on_status_change`` (a function or coroutine
    function) is called with each new status seen.

    A research leaves :attr:`active_requests` when it is seen to end (any terminal
    status), when it is stopped through the manager, and when :meth:`research` returns or
    raises (unless stopping it failed: then it stays, so that a later
    :meth:`cancel_all_research` or the exit tries again; a stop answered 404 is not a
    failure: the service does not know the research, so there is nothing to stop and it
    leaves too). Waiting on an id the manager
    does not track works, but does not track it: use :meth:`track` for that.
    """

    def __init__(
        self,
        client: FayClient,
        *,
        poll_policy: PollPolicy | None = None,
        cancel_on_exit: bool = True,
        stop_grace: float = 10.0,
        max_concurrent_stops: int = 32,
        on_status_change: StatusChangeCallback | None = None,
    ) -> None:
        if poll_policy is None:
            poll_policy = PollPolicy()
        if not isinstance(poll_policy, PollPolicy):
            raise TypeError(f"poll_policy must be a PollPolicy, got {type(poll_policy).__name__}")
        grace = _check_timeout(stop_grace, "stop_grace")
        if math.isinf(grace):
            raise ValueError("stop_grace must be a finite number of seconds")
        if (
            isinstance(max_concurrent_stops, bool)
            or not isinstance(max_concurrent_stops, int)
            or max_concurrent_stops < 1
        ):
            raise ValueError(
                f"max_concurrent_stops must be a whole number >= 1, got {max_concurrent_stops!r}"
            )
        if on_status_change is not None and not callable(on_status_change):
            raise TypeError("on_status_change must be callable")
        self.client = client
        self.poll_policy = poll_policy
        self.cancel_on_exit = bool(cancel_on_exit)
        self.stop_grace = grace
        self.max_concurrent_stops = max_concurrent_stops
        self._on_status_change = on_status_change
        self._active: dict[str, ActiveResearch] = {}
        self._stops: dict[str, _Job[StopResult]] = {}
        self._unstoppable: set[str] = set()
        self._state = "new"
        self._running: _Running | None = None

    # --- the registry -----------------------------------------------------------------------

    @property
    def active_requests(self) -> Mapping[str, ActiveResearch]:
        """The tracked researches by request id (a read-only, live view)."""
        return types.MappingProxyType(self._active)

    def track(self, request_id: str, *, prompt: str | None = None) -> ActiveResearch:
        """Track a research started elsewhere, so it is stopped with the others."""
        validate_request_id(request_id)
        entry = self._active.get(request_id)
        if entry is None:
            entry = ActiveResearch(
                request_id=request_id,
                prompt=prompt,
                started_at=anyio.current_time(),
                status=None,
            )
            self._active[request_id] = entry
        return entry

    # --- entering and leaving ---------------------------------------------------------------

    async def __aenter__(self) -> ResearchManager:
        if self._state != "new":
            raise RuntimeError("a ResearchManager can be entered only once")
        poller = StatusPoller(self.client, self.poll_policy, on_change=self._status_changed)
        async with AsyncExitStack() as stack:
            tg = await stack.enter_async_context(anyio.create_task_group())
            poller_scope: anyio.CancelScope = await tg.start(self._run_poller, poller)
            self._running = _Running(
                stack=stack.pop_all(),
                tg=tg,
                poller=poller,
                poller_scope=poller_scope,
                stop_slots=anyio.CapacityLimiter(self.max_concurrent_stops),
            )
        self._state = "open"
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: types.TracebackType | None,
    ) -> None:
        running = self._running
        if running is None or self._state != "open":
            raise RuntimeError("this ResearchManager was not entered")
        self._state = "closing"
        try:
            if self.cancel_on_exit and self._active:
                with anyio.CancelScope(shield=True):
                    results = await self._cancel_all()
                failed = {
                    k: v
                    for k, v in results.items()
                    if not isinstance(v, (StopResult, NotFoundError))  # 404: nothing to stop
                }
                if failed:
                    logger.warning(
                        "%d of %d researches could not be stopped on exit: %s",
                        len(failed),
                        len(results),
                        ", ".join(f"{k} ({v})" for k, v in failed.items()),
                    )
        finally:
            running.poller.close()
            running.poller_scope.cancel()
            self._state = "closed"
            # The body's own exception is not handed to the task group: it would come back
            # wrapped in an ExceptionGroup. It propagates from here unchanged.
            await running.stack.__aexit__(None, None, None)

    @staticmethod
    async def _run_poller(
        poller: StatusPoller,
        *,
        task_status: anyio.abc.TaskStatus[anyio.CancelScope] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        with anyio.CancelScope() as scope:
            task_status.started(scope)
            await poller.run()

    def _check_open(self) -> _Running:
        if self._state != "open" or self._running is None:
            raise RuntimeError(
                "the ResearchManager is not open: use it as `async with ResearchManager(client)"
                " as manager:` and call it inside that block"
            )
        return self._running

    # --- start ------------------------------------------------------------------------------

    async def start_research(
        self,
        prompt: str,
        *,
        structured_output: bool = False,
        output_schema: Mapping[str, Any] | None = None,
    ) -> str:
        """Create a research (paid), track it, and return its request id.

        Waits for a create slot when the client's budget is spent (unless
        ``RateLimits(wait_for_create=False)``); a cancellation ends that wait at once.
        Once the create is sent it completes and the research is tracked even if the
        caller is cancelled meanwhile, so the caller's cleanup (or leaving the manager)
        can stop it.
        """
        self._check_open()
        check_create_arguments(prompt, structured_output, output_schema)
        return await self._create(prompt, structured_output, output_schema)

    async def _create(
        self,
        prompt: str,
        structured_output: bool,
        output_schema: Mapping[str, Any] | None,
        before_create: Callable[[], object] | None = None,
    ) -> str:
        limiter = self.client.rate_limiter
        slot = None
        if limiter is not None:
            # The create's slot in the client's budget is taken here, where a cancellation
            # ends the wait at once; the create itself is sent shielded, and must not wait
            # there for a slot that someone else using the client took meanwhile.
            slot = await limiter.reserve("create", wait=limiter.limits.wait_for_create)
        running = self._check_open()  # it may have closed during the wait
        if before_create is not None:
            before_create()
        job: _Job[str] = _Job()
        running.tg.start_soon(self._run_create, job, prompt, structured_output, output_schema, slot)
        try:
            with anyio.CancelScope(shield=True):
                await job.done.wait()
        except BaseException:
            # Only a cancellation from outside anyio (asyncio's task.cancel()) gets here.
            job.abandoned = True
            if job.result is not None:  # pragma: no cover - cancelled as the create ended
                self._stop_job_for(job.result)
            raise
        if job.error is not None:
            raise job.error
        assert job.result is not None  # noqa: S101 - a create job ends with one of the two
        return job.result

    async def _run_create(
        self,
        job: _Job[str],
        prompt: str,
        structured_output: bool,
        output_schema: Mapping[str, Any] | None,
        slot: Slot | None,
    ) -> None:
        try:
            with anyio.CancelScope(shield=True):
                created = await self.client._create_conversation(
                    prompt,
                    structured_output=structured_output,
                    output_schema=output_schema,
                    slot=slot,
                )
                self._active[created.request_id] = ActiveResearch(
                    request_id=created.request_id,
                    prompt=prompt,
                    started_at=anyio.current_time(),
                    status=created.status,
                )
                job.result = created.request_id
                logger.info("research %s created", created.request_id)
        except Exception as error:  # noqa: BLE001 - handed to the caller, who raises it
            job.error = error
            if job.abandoned:
                logger.warning("a create whose caller was cancelled failed: %s", error)
        finally:
            job.done.set()
        request_id = job.result
        if request_id is not None and (
            job.abandoned or (self._state != "open" and self.cancel_on_exit)
        ):
            await _settled(self._stop_job_for(request_id))

    # --- wait -------------------------------------------------------------------------------

    async def wait_for_completion(
        self,
        request_id: str,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 - the documented flow has a timeout
    ) -> ConversationInfo:
        """Poll until the research ends: the info if COMPLETED, else raise.

        FAILED raises :class:`ResearchFailedError`, STOPPED :class:`ResearchStoppedError`;
        after ``timeout`` seconds :class:`ResearchTimeoutError` (``stopped=False``: the
        research keeps running and stays tracked). Several waiters on one id share polls.
        """
        validate_request_id(request_id)
        limit = _check_timeout(timeout)
        self._check_open()
        info = await self._wait(request_id, anyio.current_time() + limit, limit)
        return _outcome(info)

    async def _wait(self, request_id: str, deadline: float, limit: float) -> ConversationInfo:
        poller = self._check_open().poller
        watch = self._subscribe(poller, request_id)
        info: ConversationInfo | None = None
        try:
            if math.isinf(deadline):  # no limit: no scope (it costs ~600 B per waiter)
                info = await watch.wait_settled()
            else:
                with anyio.CancelScope(deadline=deadline):
                    info = await watch.wait_settled()
        finally:
            poller.unsubscribe(watch)
        if info is None:
            raise ResearchTimeoutError(
                f"research {request_id} did not finish {_describe_limit(limit)} "
                f"(last status: {watch.status or 'unknown'})",
                request_id=request_id,
                last_status=watch.status,
                stopped=False,
            )
        return info

    def _subscribe(self, poller: StatusPoller, request_id: str) -> Watch:
        entry = self._active.get(request_id)
        if entry is None:
            return poller.subscribe(request_id)
        return poller.subscribe(request_id, known=entry.status, since=entry.started_at)

    async def watch(self, request_id: str) -> AsyncGenerator[ConversationInfo, None]:
        """Yield the research's status info each time it changes, until it is terminal.

        Raises what made polling fail for good (for example an unknown id). Close the
        iterator (``contextlib.aclosing``) when leaving the loop early.
        """
        validate_request_id(request_id)
        poller = self._check_open().poller
        watch = self._subscribe(poller, request_id)
        try:
            last: ResearchStatus | None = None
            while True:
                changed = watch.changed
                info = watch.info
                if info is not None and info.status != last:
                    last = info.status
                    yield info
                    if info.status.is_terminal:
                        return
                    continue
                if watch.error is not None:
                    raise watch.error
                await changed.wait()
        finally:
            poller.unsubscribe(watch)

    async def _status_changed(
        self, info: ConversationInfo, previous: ResearchStatus | None
    ) -> None:
        request_id = info.request_id
        entry = self._active.get(request_id)
        if info.status.is_terminal:
            self._unstoppable.discard(request_id)
        if entry is not None:
            if info.status.is_terminal:
                del self._active[request_id]
            else:
                self._active[request_id] = attrs.evolve(entry, status=info.status)
        logger.info("research %s: %s -> %s", request_id, previous or "unknown", info.status)
        if self._on_status_change is not None:
            try:
                result = self._on_status_change(info)
                if inspect.isawaitable(result):
                    await result
            except Exception:
                logger.exception("on_status_change failed for research %s", request_id)

    # --- research with timeout --------------------------------------------------------------

    async def research(
        self,
        prompt: str,
        *,
        timeout: float | None = 300.0,  # noqa: ASYNC109 - the documented flow has a timeout
        structured_output: bool = False,
        output_schema: Mapping[str, Any] | None = None,
        on_created: Callable[[str], object] | None = None,
        before_create: Callable[[], object] | None = None,
    ) -> ResearchResult:
        """Start a research, wait for it (at most ``timeout`` s), and return its output.

        On timeout the research is stopped and :class:`ResearchTimeoutError` raised
        (``stopped=True``), unless that stop finds it had just COMPLETED or FAILED: it is
        then reported as if the wait had seen it end (its output returned, or
        :class:`ResearchFailedError` raised). If the caller is cancelled, the research is
        stopped and the cancellation goes on. FAILED / STOPPED raise as in
        :meth:`wait_for_completion`.

        ``timeout`` bounds only the wait for the research to end. It starts once the
        create has been answered and ``on_created`` has returned: the wait for a create
        slot, the create itself and ``on_created`` are not counted, nor are what comes
        after the wait (fetching the output, or the stop after a timeout, which
        ``stop_grace`` bounds).

        ``on_created(request_id)`` (a function or coroutine function) is called once the
        research exists, to record its id; if it raises, the research is stopped and the
        error propagates.
        ``before_create()`` (a plain function) is called just before the create is sent,
        after any wait for a create slot: a journal marks there that a research may exist
        from then on, even if the process dies before the answer arrives.
        """
        limit = _check_timeout(timeout)
        self._check_open()
        check_create_arguments(prompt, structured_output, output_schema)
        for name, hook in (("on_created", on_created), ("before_create", before_create)):
            if hook is not None and not callable(hook):
                raise TypeError(f"{name} must be callable")
        request_id = await self._create(prompt, structured_output, output_schema, before_create)
        return await self._follow(request_id, limit, on_created)

    async def resume_research(
        self,
        request_id: str,
        *,
        prompt: str | None = None,
        timeout: float | None = 300.0,  # noqa: ASYNC109 - the documented flow has a timeout
    ) -> ResearchResult:
        """Follow a research that already exists (after a restart, say) as :meth:`research` does.

        It is tracked, waited for at most ``timeout`` seconds from now (then stopped), and
        its output returned.
        """
        validate_request_id(request_id)
        limit = _check_timeout(timeout)
        self._check_open()
        self.track(request_id, prompt=prompt)
        return await self._follow(request_id, limit, None)

    async def _follow(
        self, request_id: str, limit: float, on_created: Callable[[str], object] | None
    ) -> ResearchResult:
        """The rest of :meth:`research` once ``request_id`` is tracked (no await before try)."""
        ended = False  # the research is known to have ended, or its stop was attempted
        try:
            if on_created is not None:
                created = on_created(request_id)
                if inspect.isawaitable(created):
                    await created
            timed_out: ResearchTimeoutError | None = None
            try:
                info = await self._wait(request_id, anyio.current_time() + limit, limit)
            except ResearchTimeoutError as error:
                timed_out = error
            ended = True
            if timed_out is not None:
                info = await self._stop_after_timeout(timed_out, limit)
            info = _outcome(info)
            output = await self.client.get_output(request_id)
            return ResearchResult(info=info, output=output)
        except BaseException:
            if not ended:
                await _settled(self._stop_job_for(request_id))
            raise
        finally:
            if request_id not in self._stops:
                self._release(request_id)

    async def _stop_after_timeout(
        self, timed_out: ResearchTimeoutError, limit: float
    ) -> ConversationInfo:
        """Stop a research that timed out and raise; or its info if it had just ended.

        When the stop finds the research already COMPLETED or FAILED, the timeout lost the
        race with the end: its status is fetched and it is reported as if the wait had
        seen it end (its output is returned, or its failure raised).
        """
        request_id = timed_out.request_id
        job = self._stop_job_for(request_id)
        await _settled(job)
        if job.result is None or job.result.status not in _ENDED_ON_ITS_OWN:
            raise _timeout_outcome(timed_out, job, limit) from job.error
        return await self.client.get_status(request_id)

    def _release(self, request_id: str) -> None:
        """Untrack a research that ended, unless stopping it failed (then it is retried)."""
        entry = self._active.get(request_id)
        if entry is not None and request_id not in self._unstoppable:
            del self._active[request_id]

    # --- stop -------------------------------------------------------------------------------

    async def cancel_research(self, request_id: str) -> StopResult:
        """Stop a tracked research and untrack it.

        An id that is not tracked raises :class:`NotTrackedError`. A research that had
        already ended is reported with its real final status. One the service does not
        know raises :class:`NotFoundError` and is untracked: there is nothing to stop. Any
        other failure raises, and the id stays tracked.
        """
        validate_request_id(request_id)
        self._check_open()
        if request_id not in self._active:
            raise NotTrackedError(
                f"research {request_id} not found in active requests", request_id=request_id
            )
        job = self._stop_job_for(request_id)
        await _settled(job)
        if job.error is not None:
            raise job.error
        assert job.result is not None  # noqa: S101 - a stop job ends with one of the two
        return job.result

    async def cancel_all_research(self) -> dict[str, StopResult | FayError]:
        """Stop every tracked research concurrently; return each outcome; never raise.

        Waits until every stop settled (``max_concurrent_stops`` at a time, each within
        ``stop_grace``), then untracks all of them, stopped or not. Each outcome is a
        :class:`StopResult`, or the error of a stop that failed: a
        :class:`NotFoundError` means the service does not know the research (nothing to
        stop).
        """
        self._check_open()
        return await self._cancel_all()

    async def _cancel_all(self) -> dict[str, StopResult | FayError]:
        jobs = {request_id: self._stop_job_for(request_id) for request_id in list(self._active)}
        for job in jobs.values():
            await _settled(job)
        results: dict[str, StopResult | FayError] = {}
        for request_id, job in jobs.items():
            self._active.pop(request_id, None)
            self._unstoppable.discard(request_id)
            if job.error is None:
                assert job.result is not None  # noqa: S101
                results[request_id] = job.result
            elif isinstance(job.error, FayError):
                results[request_id] = job.error
            else:
                wrapped = FayError(f"stopping research {request_id} failed: {job.error!r}")
                wrapped.__cause__ = job.error
                results[request_id] = wrapped
        return results

    def _stop_job_for(self, request_id: str) -> _Job[StopResult]:
        """The stop in progress for ``request_id``, or a new one running as a task."""
        job = self._stops.get(request_id)
        if job is None:
            job = _Job()
            self._stops[request_id] = job
            if not self._spawn(self._run_stop, request_id, job):  # pragma: no cover
                job.error = FayError("the ResearchManager is closed; nothing can be stopped")
                del self._stops[request_id]
                job.done.set()
        return job

    def _spawn(self, func: Callable[..., Coroutine[Any, Any, None]], *args: Any) -> bool:
        try:
            assert self._running is not None  # noqa: S101 - only called once entered
            self._running.tg.start_soon(func, *args)
        except RuntimeError:  # pragma: no cover - the task group has already ended
            return False
        return True

    async def _run_stop(self, request_id: str, job: _Job[StopResult]) -> None:
        running = self._running
        assert running is not None  # noqa: S101 - stops are started only once entered
        try:
            with anyio.move_on_after(self.stop_grace, shield=True) as scope:
                async with running.stop_slots:
                    job.result = await self._stop_remote(request_id)
            if scope.cancelled_caught and job.result is None:
                job.error = APITimeoutError(
                    f"stopping research {request_id} did not finish within the stop grace "
                    f"of {self.stop_grace:g} s",
                    method="POST",
                    path=f"/conversation/{request_id}/stop",
                )
        except Exception as error:  # noqa: BLE001 - reported to whoever asked for the stop
            job.error = error
        finally:
            self._stops.pop(request_id, None)
            if job.result is not None:
                job.error = None
                self._active.pop(request_id, None)
                self._unstoppable.discard(request_id)
                logger.info("research %s stopped (%s)", request_id, job.result.status)
                if job.result.status is ResearchStatus.STOPPED and self._state == "open":
                    with anyio.CancelScope(shield=True):
                        settled = await running.poller.settle(request_id, job.result.status)
                    if not settled:
                        running.poller.poll_soon(request_id)
                else:
                    running.poller.poll_soon(request_id)
            elif isinstance(job.error, NotFoundError):
                # The service does not know this research: there is nothing to stop, now
                # or on a later try.
                self._active.pop(request_id, None)
                self._unstoppable.discard(request_id)
                logger.info("research %s is not known to the service: nothing to stop", request_id)
            else:
                self._unstoppable.add(request_id)
                logger.warning("could not stop research %s: %s", request_id, job.error)
            job.done.set()

    async def _stop_remote(self, request_id: str) -> StopResult:
        """Stop; a research that had already ended is reported with its final status."""
        outcome = await self.client._stop_reporting_ended(request_id, trust_completed=True)
        if isinstance(outcome, StopResult):
            return outcome
        return StopResult(
            request_id=request_id,
            status=outcome.status,
            message=f"the research had already ended ({outcome.status})",
        )


#: What a stop may find a research that ended without it: then it was not stopped.
_ENDED_ON_ITS_OWN: Final = frozenset({ResearchStatus.COMPLETED, ResearchStatus.FAILED})


async def _settled(job: _Job[Any]) -> None:
    """Wait for a job, immune to anyio cancellation (the job itself is bounded)."""
    with anyio.CancelScope(shield=True):
        await job.done.wait()


def _outcome(info: ConversationInfo) -> ConversationInfo:
    if info.status is ResearchStatus.FAILED:
        raise ResearchFailedError(
            f"research {info.request_id} failed: {info.error_message or 'no error message'}",
            request_id=info.request_id,
            error_message=info.error_message,
        )
    if info.status is ResearchStatus.STOPPED:
        raise ResearchStoppedError(
            f"research {info.request_id} was stopped", request_id=info.request_id
        )
    return info


def _timeout_outcome(
    timed_out: ResearchTimeoutError, job: _Job[StopResult], limit: float
) -> ResearchTimeoutError:
    request_id = timed_out.request_id
    late = f"research {request_id} did not finish {_describe_limit(limit)}"
    stopped = job.result
    if isinstance(job.error, NotFoundError):
        return ResearchTimeoutError(
            f"{late} (last status: {timed_out.last_status or 'unknown'}) and the service "
            "does not know it (the stop was answered 404): there was nothing to stop",
            request_id=request_id,
            last_status=timed_out.last_status,
            stopped=False,
        )
    if stopped is None:
        return ResearchTimeoutError(
            f"{late} (last status: {timed_out.last_status or 'unknown'}) and stopping it failed "
            f"({job.error}): it may still be running, and stays in active_requests",
            request_id=request_id,
            last_status=timed_out.last_status,
            stopped=False,
        )
    if stopped.status is ResearchStatus.STOPPED:
        return ResearchTimeoutError(
            f"{late} (last status: {timed_out.last_status or 'unknown'}): cancelled due to "
            "timeout, it was stopped",
            request_id=request_id,
            last_status=timed_out.last_status,
            stopped=True,
        )
    return ResearchTimeoutError(
        f"{late} (last status: {timed_out.last_status or 'unknown'}); the stop was answered "
        f"with the status {stopped.status}, so it may not be stopped",
        request_id=request_id,
        last_status=stopped.status,
        stopped=False,
    )
