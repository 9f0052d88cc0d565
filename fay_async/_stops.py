"""Remote stops that nothing can interrupt half-way, and that never take longer than a grace.

Each stop runs as a task of the research manager, shielded: a caller that is cancelled
(even twice, even by a bare ``task.cancel()`` on asyncio) cannot cut a stop short.
A stop first waits for its turn: a slot of the client's stop budget, then one of the
manager's ``max_concurrent_stops``. Its grace starts when it is sent, so a stop that
queued behind a thousand others is not given up before it was ever sent; an overall
bound (:meth:`StopJob.give_up_queueing`) ends the wait of those not sent yet, which are
then reported as never sent. Everyone who asks to stop the same research while its stop
runs shares that one stop.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Container
from typing import Final

import anyio
import anyio.abc
import attrs

from ._client import FayClient
from ._models import StopResult
from ._ratelimit import Slot
from .exceptions import FayError, NotFoundError, StopTimeoutError

__all__ = ["StopJob", "Stops"]

logger: Final = logging.getLogger("fay_async")


@attrs.define(eq=False)
class StopJob:
    """One stop of one research, and its outcome once ``done`` is set.

    The outcome is either ``result`` (the service stopped it, or it had already ended) or
    ``error``. Several callers wait on one job, so it is a shared value rather than the
    return value of one task.
    """

    request_id: str
    done: anyio.Event = attrs.field(factory=anyio.Event)
    result: StopResult | None = None
    error: BaseException | None = None
    #: Ends the wait for the stop's turn (cancelled by an overall bound).
    queue: anyio.CancelScope = attrs.field(factory=anyio.CancelScope)

    def give_up_queueing(self) -> None:
        """Send nothing if the stop has not been sent yet: it ends as never sent."""
        self.queue.cancel()

    async def settled(self) -> None:
        """Wait until the stop is done, immune to cancellation (the stop itself is bounded)."""
        with anyio.CancelScope(shield=True):
            await self.done.wait()

    def outcome(self) -> StopResult:
        """The result, or raise the error of a stop that failed."""
        if self.result is None:
            assert self.error is not None  # noqa: S101 - a done job has one of the two
            raise self.error
        return self.result

    def report(self) -> StopResult | FayError:
        """The outcome as a value: the result, or the error (wrapped if not a FayError)."""
        if self.result is not None:
            return self.result
        if isinstance(self.error, FayError):
            return self.error
        wrapped = FayError(f"stopping research {self.request_id} failed: {self.error!r}")
        wrapped.__cause__ = self.error
        return wrapped


#: Called once a stop is over, before its waiters wake: the manager updates what it tracks.
Settle = Callable[[StopJob], Awaitable[None]]


class Stops:
    """The stops in progress, at most ``max_concurrent`` on the wire at a time.

    ``unstoppable`` holds the ids whose last stop failed (so that a research whose stop
    failed stays tracked, and a later cancel-all or the manager's exit tries again).
    """

    def __init__(
        self,
        client: FayClient,
        *,
        grace: float,
        max_concurrent: int,
        task_group: anyio.abc.TaskGroup,
        on_settled: Settle,
    ) -> None:
        self._client = client
        self._grace = grace
        self._slots = anyio.CapacityLimiter(max_concurrent)
        self._task_group = task_group
        self._on_settled = on_settled
        self._jobs: dict[str, StopJob] = {}
        self.unstoppable: set[str] = set()

    def __contains__(self, request_id: object) -> bool:
        """Whether a stop of ``request_id`` is in progress."""
        return request_id in self._jobs

    def give_up_queueing(self, keep: Container[str] = ()) -> None:
        """End the wait of every stop not sent yet, but those of the ids in ``keep``."""
        for request_id, job in list(self._jobs.items()):
            if request_id not in keep:
                job.give_up_queueing()

    def job_for(self, request_id: str, *, check_first: bool = False) -> StopJob:
        """The stop in progress for ``request_id``, or a new one running as a task.

        ``check_first``: check the status before sending a stop (for a research whose
        status is not known), as :meth:`FayClient.stop_if_running` does.
        """
        job = self._jobs.get(request_id)
        if job is None:
            job = StopJob(request_id)
            self._jobs[request_id] = job
            self._task_group.start_soon(self._run, job, check_first)
        return job

    async def _run(self, job: StopJob, check_first: bool) -> None:
        request_id = job.request_id
        try:
            with anyio.CancelScope(shield=True):
                slot: Slot | None = None
                with job.queue:
                    limiter = self._client.rate_limiter
                    if limiter is not None:
                        slot = await limiter.reserve("stop")
                    await self._slots.acquire()
                if job.queue.cancelled_caught:
                    job.error = StopTimeoutError(
                        f"stopping research {request_id} was given up before it was sent "
                        "(it was still waiting for its turn): the research is still running",
                        request_id=request_id,
                        sent=False,
                    )
                    return
                try:
                    await self._send(job, check_first, slot)
                finally:
                    self._slots.release()
        except Exception as error:  # noqa: BLE001 - reported to whoever asked for the stop
            job.error = error
        finally:
            del self._jobs[request_id]
            if job.result is not None:
                self.unstoppable.discard(request_id)
                logger.info("research %s stopped (%s)", request_id, job.result.status)
            elif isinstance(job.error, NotFoundError):
                # The service does not know this research: nothing to stop, now or later.
                self.unstoppable.discard(request_id)
                logger.info("research %s is not known to the service: nothing to stop", request_id)
            else:
                self.unstoppable.add(request_id)
                logger.warning("could not stop research %s: %s", request_id, job.error)
            try:
                with anyio.CancelScope(shield=True):
                    await self._on_settled(job)
            finally:
                job.done.set()

    async def _send(self, job: StopJob, check_first: bool, slot: Slot | None) -> None:
        """The stop on the wire, within the grace."""
        with anyio.move_on_after(self._grace) as scope:
            job.result = await self._stop(job.request_id, check_first, slot)
        if scope.cancelled_caught and job.result is None:
            job.error = StopTimeoutError(
                f"stopping research {job.request_id} did not finish within the stop grace "
                f"of {self._grace:g} s after it was sent: it may or may not be stopped",
                request_id=job.request_id,
                sent=True,
            )

    async def _stop(self, request_id: str, check_first: bool, slot: Slot | None) -> StopResult:
        """Stop; a research that had already ended is reported with its final status."""
        outcome = await self._client.stop_if_running(request_id, check_first=check_first, slot=slot)
        if isinstance(outcome, StopResult):
            return outcome
        return StopResult(
            request_id=request_id,
            status=outcome.status,
            message=f"the research had already ended ({outcome.status})",
        )
