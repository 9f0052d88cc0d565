"""The documented flows of the research manager: research with timeout, cancel one, cancel all.

:class:`ManagerFlows` is a base of :class:`~fay_async.ResearchManager`, which holds the
state these flows use (the registry, the running machinery) and the ways of starting and
waiting; this module holds what happens when a wait runs out of time or a caller stops
caring. Also here: what exists while a manager is open (:class:`Running`).
"""

from __future__ import annotations

import enum
import inspect
import logging
import math
from collections.abc import Callable, Mapping
from typing import Any, Final

import anyio
import anyio.abc
import attrs

from ._client import FayClient
from ._creates import Creates
from ._models import (
    ConversationInfo,
    ConversationOutput,
    CreateRequest,
    ResearchResult,
    ResearchStatus,
    StopResult,
)
from ._outcomes import outcome, timeout_outcome
from ._polling import StatusPoller
from ._pushes import OUTPUT_PUSH_WAIT, OutputCache
from ._registry import Registry, SharedRegistry
from ._stops import StopJob, Stops
from ._tasks import HostedTaskGroup
from ._validators import check_callable, check_timeout, validate_request_id
from .exceptions import (
    FayError,
    NotFoundError,
    NotTrackedError,
    ResearchTimeoutError,
    SharedStateError,
    StopTimeoutError,
)

__all__ = ["ManagerFlows", "Running", "State", "create_request"]


class State(enum.Enum):
    """Where a manager is in its life."""

    NEW = "new"
    OPEN = "open"
    CLOSING = "closing"
    CLOSED = "closed"


@attrs.define(eq=False)
class Running:
    """What exists while the manager is open: its tasks and their machinery."""

    group: HostedTaskGroup
    tg: anyio.abc.TaskGroup
    poller: StatusPoller
    poller_scope: anyio.CancelScope
    stops: Stops
    creates: Creates


logger: Final = logging.getLogger("fay_async")

#: What a stop may find a research that ended without it: then it was not stopped.
_ENDED_ON_ITS_OWN: Final = frozenset({ResearchStatus.COMPLETED, ResearchStatus.FAILED})


class ManagerFlows:
    """Research with timeout, cancel one and cancel all (a base of ``ResearchManager``)."""

    client: FayClient
    _registry: Registry
    _outputs: OutputCache
    _state: State
    _running: Running | None

    def _check_open(self) -> Running:
        raise NotImplementedError

    def track(self, request_id: str, *, prompt: str | None = None) -> Any:
        raise NotImplementedError

    async def _create(
        self, request: CreateRequest, before_create: Callable[[], object] | None = None
    ) -> str:
        raise NotImplementedError

    async def _wait(self, request_id: str, deadline: float, limit: float) -> ConversationInfo:
        raise NotImplementedError

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
        request = create_request(prompt, structured_output, output_schema)
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
            output = await self._pushed_output(request_id)
            if output is None:
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

    async def _pushed_output(self, request_id: str) -> ConversationOutput | None:
        """The output an Output event brought, if webhooks are flowing (else None)."""
        running = self._running
        if running is None or not running.poller.pushes_flowing:
            return self._outputs.take(request_id)
        return await self._outputs.wait(request_id, OUTPUT_PUSH_WAIT)

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
        raise :class:`ResearchStoppedError` at once. A research that had already ended is
        reported with its real final status. One the service does not know raises
        :class:`NotFoundError` and is untracked: there is nothing to stop. Any other
        failure raises, and the id stays tracked.
        """
        validate_request_id(request_id)
        stops = self._check_open().stops
        if request_id not in self._registry:
            shared = self._registry
            if isinstance(shared, SharedRegistry) and await shared.owner(request_id):
                outcome_ = await self._stop_untracked(request_id)
                await _tell_fleet(shared, request_id, outcome_)
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
        :class:`ResearchStoppedError`. It raises :class:`SharedStateError` (having
        stopped nothing) when the fleet's list cannot be read. With a shared registry, a
        research whose stop failed is left to the fleet: every live worker's orphan sweep
        tries again.
        """
        limit = check_timeout(timeout)
        self._check_open()
        if not fleet:
            return await self._cancel_all(limit)
        shared = self._registry
        if not isinstance(shared, SharedRegistry):
            raise TypeError("cancel_all_research(fleet=True) needs a shared registry")
        local = shared.ids()
        others = [i for i in await shared.fleet_ids() if i not in shared]
        results = await self._cancel_all(limit, local + others)
        for request_id in others:
            await _tell_fleet(shared, request_id, results[request_id])
        return results

    async def _stop_untracked(self, request_id: str) -> StopResult | FayError:
        """Stop a research this manager does not track (checking its status first)."""
        if self._state is not State.OPEN or self._running is None:  # the sweep, while closing
            return StopTimeoutError(
                f"stopping research {request_id} was not sent: the manager is closing",
                request_id=request_id,
                sent=False,
            )
        job = self._running.stops.job_for(request_id, check_first=True)
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
        shared = self._registry if isinstance(self._registry, SharedRegistry) else None
        for request_id, job in jobs.items():
            if shared is not None and not _stopped_or_unknown(job.report()):
                shared.orphan(request_id)  # left to the fleet's sweep, not forgotten
            else:
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
        if job.result.status is ResearchStatus.STOPPED:
            # Its waiters learn it now, even while the manager closes: they raise
            # ResearchStoppedError rather than hear only that the manager went away.
            await running.poller.settle(request_id, job.result.status)
        elif self._state is State.OPEN:  # it ended on its own: a check gives its real info
            running.poller.poll_soon(request_id)


def _stopped_or_unknown(outcome: StopResult | FayError) -> bool:
    """Whether nothing is left to stop: stopped, ended, or unknown to the service (404)."""
    return isinstance(outcome, (StopResult, NotFoundError))


async def _tell_fleet(
    shared: SharedRegistry, request_id: str, outcome: StopResult | FayError
) -> None:
    """Untrack a stopped research fleet-wide and tell its owner; a Redis failure is logged.

    The stop itself is done by then: its outcome stands, and the owner still learns the
    end from its own status checks.
    """
    try:
        await shared.stopped(request_id, outcome)
    except SharedStateError as error:
        logger.warning("research %s: the fleet was not told of its stop: %s", request_id, error)


def create_request(
    prompt: str, structured_output: bool, output_schema: Mapping[str, Any] | None
) -> CreateRequest:
    """The checked :class:`CreateRequest` for a manager call's arguments."""
    return CreateRequest(
        prompt=prompt,
        structured_output=structured_output,
        output_schema=output_schema,
    )
