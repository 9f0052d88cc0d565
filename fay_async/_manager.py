"""``ResearchManager``: the lifecycle of many researches, as the documented flows describe it.

It keeps the *active requests* (:mod:`fay_async._registry`), polls their status under the
client's shared budget (:mod:`fay_async._polling`), races a wait against a timeout, and
stops researches remotely (:mod:`fay_async._stops`) when they are given up: on a timeout,
when the caller is cancelled, on :meth:`ResearchManager.cancel_research`,
:meth:`~ResearchManager.cancel_all_research`, and on leaving ``async with``. Creates run as
tasks of the manager too, shielded, so that a research the service has accepted is always
tracked.
"""

from __future__ import annotations

import enum
import inspect
import logging
import math
import types
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from contextlib import aclosing
from typing import Any, Final

import anyio
import anyio.abc
import attrs

from ._client import FayClient, validate_request_id
from ._creates import Creates
from ._models import ConversationInfo, CreateRequest, ResearchResult, ResearchStatus, StopResult
from ._outcomes import outcome, timeout_outcome
from ._polling import PollPolicy, StatusPoller
from ._registry import ActiveResearch, FleetHooks, MemoryRegistry, Registry, SharedRegistry
from ._stops import StopJob, Stops
from ._tasks import HostedTaskGroup
from ._validators import check_callable, check_count, check_seconds, check_timeout
from ._waits import changes, until_settled
from .exceptions import FayError, NotFoundError, NotTrackedError, ResearchTimeoutError

__all__ = ["ActiveResearch", "ResearchManager"]

logger: Final = logging.getLogger("fay_async")

StatusChangeCallback = Callable[[ConversationInfo], "Awaitable[object] | object"]


class _State(enum.Enum):
    NEW = "new"
    OPEN = "open"
    CLOSING = "closing"
    CLOSED = "closed"


@attrs.define(eq=False)
class _Running:
    """What exists while the manager is open: its tasks and their machinery."""

    group: HostedTaskGroup
    tg: anyio.abc.TaskGroup
    poller: StatusPoller
    poller_scope: anyio.CancelScope
    stops: Stops
    creates: Creates


class ResearchManager:
    """Starts, waits for, times out and stops many researches through one ``FayClient``.

    Use it as an async context manager: it owns the tasks that poll and stop. On leaving,
    every research still tracked is stopped when ``cancel_on_exit`` is true (the default),
    else left running. ``poll_policy`` sets the status-check schedule, ``stop_grace`` the
    most seconds one remote stop may take once sent, ``max_concurrent_stops``
    how many stops run at once, ``exit_timeout`` (None: no bound) how long leaving may
    spend on stops not sent yet (see :meth:`cancel_all_research`), and
    ``on_status_change`` (a function or coroutine function) is called with each new
    status seen. ``registry`` holds what is tracked: this process's memory by default,
    or a registry shared by several processes (:class:`fay_async.redis.RedisRegistry`),
    through which any of them can cancel any research and survivors stop the researches
    of a process that died.

    A research leaves :attr:`active_requests` when it is seen to end (any terminal
    status), when it is stopped through the manager, and when :meth:`research` returns or
    raises (unless stopping it failed: then it stays, so that a later
    :meth:`cancel_all_research` or the exit tries again; a stop answered 404 is not a
    failure: the service does not know the research, so there is nothing to stop and it
    leaves too). Waiting on an id the manager does not track works, but does not track
    it: use :meth:`track` for that.
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
        exit_timeout: float | None = None,
        registry: Registry | None = None,
    ) -> None:
        if not isinstance(client, FayClient):
            raise TypeError(
                f"ResearchManager needs a FayClient, got {type(client).__name__}: "
                "ResearchManager(FayClient(...))"
            )
        if poll_policy is None:
            poll_policy = PollPolicy()
        if not isinstance(poll_policy, PollPolicy):
            raise TypeError(f"poll_policy must be a PollPolicy, got {type(poll_policy).__name__}")
        self.client = client
        self.poll_policy = poll_policy
        self.cancel_on_exit = bool(cancel_on_exit)
        self.stop_grace = check_seconds(stop_grace, "stop_grace")
        self.max_concurrent_stops = check_count(max_concurrent_stops, "max_concurrent_stops")
        self.exit_timeout = check_timeout(exit_timeout, "exit_timeout")
        self._on_status_change = check_callable(on_status_change, "on_status_change")
        if registry is not None and not callable(getattr(registry, "add", None)):
            raise TypeError(
                f"registry must be a Registry such as RedisRegistry, got {type(registry).__name__}"
            )
        self._registry: Registry = MemoryRegistry() if registry is None else registry
        self._state = _State.NEW
        self._running: _Running | None = None

    def __repr__(self) -> str:
        return (
            f"<ResearchManager {self._state.value}: {len(self._registry)} tracked, "
            f"client={self.client!r}>"
        )

    # --- the registry -----------------------------------------------------------------------

    @property
    def active_requests(self) -> Mapping[str, ActiveResearch]:
        """The tracked researches by request id (a read-only, live view)."""
        return self._registry.view()

    def track(self, request_id: str, *, prompt: str | None = None) -> ActiveResearch:
        """Track a research started elsewhere, so it is stopped with the others."""
        validate_request_id(request_id)
        return self._registry.add(
            ActiveResearch(
                request_id=request_id, prompt=prompt, started_at=anyio.current_time(), status=None
            )
        )

    def untrack(self, request_id: str) -> ActiveResearch | None:
        """Stop tracking a research, without stopping it; return its entry (None if untracked).

        It leaves :attr:`active_requests`, and neither :meth:`cancel_all_research` nor the
        exit will stop it: for a research another process now owns, say.
        """
        validate_request_id(request_id)
        entry = self._registry.get(request_id)
        self._registry.discard(request_id)
        return entry

    # --- entering and leaving ---------------------------------------------------------------

    async def __aenter__(self) -> ResearchManager:
        if self._state is not _State.NEW:
            raise RuntimeError("a ResearchManager can be entered only once")
        poller = StatusPoller(self.client, self.poll_policy, on_change=self._status_changed)
        group = HostedTaskGroup()
        tg = await group.open()
        poller_scope: anyio.CancelScope = await tg.start(self._run_poller, poller)
        stops = Stops(
            self.client,
            grace=self.stop_grace,
            max_concurrent=self.max_concurrent_stops,
            task_group=tg,
            on_settled=self._stop_settled,
        )
        creates = Creates(
            self.client,
            self._registry,
            stops,
            task_group=tg,
            stop_all_new=lambda: self._state is not _State.OPEN and self.cancel_on_exit,
        )
        self._running = _Running(group, tg, poller, poller_scope, stops, creates)
        self._state = _State.OPEN
        if isinstance(self._registry, SharedRegistry):
            try:
                await self._registry.start(tg, FleetHooks(self._learned, self._stop_untracked))
            except BaseException:
                with anyio.CancelScope(shield=True):
                    await self.__aexit__(None, None, None)
                raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: types.TracebackType | None,
    ) -> None:
        running = self._running
        if running is None or self._state is not _State.OPEN:
            raise RuntimeError("this ResearchManager was not entered")
        self._state = _State.CLOSING
        try:
            if self.cancel_on_exit and self._registry:
                with anyio.CancelScope(shield=True):
                    results = await self._cancel_all(self.exit_timeout)
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
            if isinstance(self._registry, SharedRegistry):
                with anyio.CancelScope(shield=True):
                    await self._registry.close()
            running.poller.close()
            running.poller_scope.cancel()
            self._state = _State.CLOSED
            await running.group.close()

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
        if self._state is not _State.OPEN or self._running is None:
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
        request = _request(prompt, structured_output, output_schema)
        return await self._create(request)

    async def _create(
        self, request: CreateRequest, before_create: Callable[[], object] | None = None
    ) -> str:
        limiter = self.client.rate_limiter
        # The create's slot in the client's budget is reserved here, where a cancellation
        # ends the wait at once; the create itself is sent shielded, with that slot.
        slot = (
            None
            if limiter is None
            else await limiter.reserve("create", wait=limiter.limits.wait_for_create)
        )
        running = self._check_open()  # it may have closed during the wait
        if before_create is not None:
            before_create()
        return await running.creates.create(request, slot)

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
        limit = check_timeout(timeout)
        self._check_open()
        info = await self._wait(request_id, anyio.current_time() + limit, limit)
        return outcome(info)

    async def _wait(self, request_id: str, deadline: float, limit: float) -> ConversationInfo:
        poller = self._check_open().poller
        return await until_settled(poller, self._registry, request_id, deadline, limit)

    async def watch(self, request_id: str) -> AsyncGenerator[ConversationInfo, None]:
        """Yield the research's status info each time it changes, until it is terminal.

        Raises what made polling fail for good (for example an unknown id). Close the
        iterator (``contextlib.aclosing``) when leaving the loop early.
        """
        validate_request_id(request_id)
        poller = self._check_open().poller
        async with aclosing(changes(poller, self._registry, request_id)) as infos:
            async for info in infos:
                yield info

    async def get_status(self, request_id: str) -> ConversationInfo:
        """The research's status, read through the manager so that it learns it too.

        :meth:`FayClient.get_status`, and then: a tracked research's entry gets the new
        status, a research seen to have ended is untracked (so no stop call is spent on
        it later), and everyone waiting on it or watching it sees the status at once.
        """
        validate_request_id(request_id)
        self._check_open()
        info = await self.client.get_status(request_id)
        await self._learned(info)
        return info

    async def _learned(self, info: ConversationInfo) -> None:
        """Feed a status learnt outside the poller into the state the poller keeps."""
        running = self._check_open()
        entry = self._registry.get(info.request_id)
        if await running.poller.observe(info):
            return  # the poller told the registry and the observers, if it changed
        if entry is not None and entry.status != info.status:
            await self._status_changed(info, entry.status)

    async def _status_changed(
        self, info: ConversationInfo, previous: ResearchStatus | None
    ) -> None:
        request_id = info.request_id
        if info.status.is_terminal:
            if self._running is not None:
                self._running.stops.unstoppable.discard(request_id)
            self._registry.discard(request_id)
        else:
            self._registry.set_status(request_id, info.status)
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
        limit = check_timeout(timeout)
        self._check_open()
        request = _request(prompt, structured_output, output_schema)
        check_callable(on_created, "on_created")
        check_callable(before_create, "before_create")
        request_id = await self._create(request, before_create)
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
        limit = check_timeout(timeout)
        self._check_open()
        self.track(request_id, prompt=prompt)
        return await self._follow(request_id, limit, None)

    async def _follow(
        self, request_id: str, limit: float, on_created: Callable[[str], object] | None
    ) -> ResearchResult:
        """The rest of :meth:`research` once ``request_id`` is tracked (no await before try)."""
        stops = self._check_open().stops
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
                info = await self._stop_after_timeout(stops, timed_out, limit)
            info = outcome(info)
            output = await self.client.get_output(request_id)
            return ResearchResult(info=info, output=output)
        except BaseException:
            if not ended:
                await stops.job_for(request_id).settled()
            raise
        finally:
            # Untrack a research that ended, unless stopping it failed (then it is retried).
            if request_id not in stops and request_id not in stops.unstoppable:
                self._registry.discard(request_id)

    async def _stop_after_timeout(
        self, stops: Stops, timed_out: ResearchTimeoutError, limit: float
    ) -> ConversationInfo:
        """Stop a research that timed out and raise; or its info if it had just ended.

        When the stop finds the research already COMPLETED or FAILED, the timeout lost the
        race with the end: its status is fetched and it is reported as if the wait had
        seen it end (its output is returned, or its failure raised).
        """
        request_id = timed_out.request_id
        job = stops.job_for(request_id)
        await job.settled()
        if job.result is None or job.result.status not in _ENDED_ON_ITS_OWN:
            raise timeout_outcome(timed_out, job, limit) from job.error
        return await self.client.get_status(request_id)

    # --- stop -------------------------------------------------------------------------------

    async def cancel_research(self, request_id: str) -> StopResult:
        """Stop a tracked research and untrack it.

        An id that is not tracked raises :class:`NotTrackedError`; with a shared registry,
        a research another process tracks is stopped from here, and its owner's waiters
        raise :class:`ResearchStoppedError` at once. A research that had
        already ended is reported with its real final status. One the service does not
        know raises :class:`NotFoundError` and is untracked: there is nothing to stop. Any
        other failure raises, and the id stays tracked.
        """
        validate_request_id(request_id)
        stops = self._check_open().stops
        if request_id not in self._registry:
            shared = self._registry
            if isinstance(shared, SharedRegistry) and await shared.owner(request_id):
                outcome_ = await self._stop_untracked(request_id)
                await shared.stopped(request_id, outcome_)
                if isinstance(outcome_, FayError):
                    raise outcome_
                return outcome_
            raise NotTrackedError(
                f"research {request_id} not found in active requests", request_id=request_id
            )
        job = stops.job_for(request_id, check_first=self._status_unknown(request_id))
        await job.settled()
        return job.outcome()

    def _status_unknown(self, request_id: str) -> bool:
        """Whether nothing is known of a tracked research's status (tracked by id only).

        Its stop then checks the status first, as the documented "stop if needed" does:
        a status call is cheaper than a stop call under every published tier.
        """
        entry = self._registry.get(request_id)
        return entry is not None and entry.status is None

    async def cancel_all_research(
        self,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 - a bound on the whole, as documented
        fleet: bool = False,
    ) -> dict[str, StopResult | FayError]:
        """Stop every tracked research concurrently; return each outcome; never raise.

        Waits until every stop settled, then untracks all of them, stopped or not. The
        stops wait for their turn (the client's stop budget, ``max_concurrent_stops`` at
        a time); each one sent gets ``stop_grace`` seconds. ``timeout`` bounds the whole:
        stops not sent by then are not sent at all. Each outcome is a
        :class:`StopResult`, or the error of a stop that failed: a
        :class:`StopTimeoutError` says whether it was ever sent (``sent``), a
        :class:`NotFoundError` that the service does not know the research.

        ``fleet=True`` (with a shared registry) stops every research tracked by any
        process of the fleet, from here; their owners' waiters raise
        :class:`ResearchStoppedError`.
        """
        limit = check_timeout(timeout)
        self._check_open()
        shared = self._registry
        if not fleet:
            return await self._cancel_all(limit)
        if not isinstance(shared, SharedRegistry):
            raise TypeError("cancel_all_research(fleet=True) needs a shared registry")
        local = self._registry.ids()
        others = [i for i in await shared.fleet_ids() if i not in self._registry]
        results = await self._cancel_all(limit, local + others)
        for request_id in others:
            await shared.stopped(request_id, results[request_id])
        return results

    async def _stop_untracked(self, request_id: str) -> StopResult | FayError:
        """Stop a research this manager does not track (checking its status first)."""
        job = self._check_open().stops.job_for(request_id, check_first=True)
        await job.settled()
        return job.report()

    async def _cancel_all(
        self, limit: float = math.inf, ids: list[str] | None = None
    ) -> dict[str, StopResult | FayError]:
        assert self._running is not None  # noqa: S101 - open or closing
        stops = self._running.stops
        jobs = {
            request_id: stops.job_for(
                request_id,
                check_first=request_id not in self._registry or self._status_unknown(request_id),
            )
            for request_id in (self._registry.ids() if ids is None else ids)
        }
        with anyio.CancelScope(shield=True):
            with anyio.move_on_after(limit):
                for job in jobs.values():
                    await job.done.wait()
            for job in jobs.values():
                job.give_up_queueing()  # nothing for those sent, or done
                await job.done.wait()
        for request_id in jobs:
            self._registry.discard(request_id)
            stops.unstoppable.discard(request_id)
        return {request_id: job.report() for request_id, job in jobs.items()}

    async def _stop_settled(self, job: StopJob) -> None:
        """What the manager learns from a stop that is over (before its waiters wake)."""
        running = self._running
        assert running is not None  # noqa: S101 - stops run only once entered
        request_id = job.request_id
        if job.result is None:
            if isinstance(job.error, NotFoundError):
                self._registry.discard(request_id)
            return
        self._registry.discard(request_id)
        if self._state is not _State.OPEN:
            return  # the poller is closing: its waiters hear that the manager closed
        if job.result.status is ResearchStatus.STOPPED:
            await running.poller.settle(request_id, job.result.status)
        else:  # it had ended on its own: a check gives waiters its real final info
            running.poller.poll_soon(request_id)


#: What a stop may find a research that ended without it: then it was not stopped.
_ENDED_ON_ITS_OWN: Final = frozenset({ResearchStatus.COMPLETED, ResearchStatus.FAILED})


def _request(
    prompt: str, structured_output: bool, output_schema: Mapping[str, Any] | None
) -> CreateRequest:
    return CreateRequest(
        prompt=prompt,
        structured_output=structured_output,
        output_schema=output_schema,
    )
