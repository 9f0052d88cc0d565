"""Creates that are never lost: once sent, a create completes and its research is tracked.

A create runs as a task of the research manager, shielded: a caller cancelled while it is
on the wire does not cut it off. The research it made is tracked before the caller
hears of it, and stopped at once if the caller is gone by then (or the manager closing).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Final

import anyio
import anyio.abc
import attrs

from ._client import FayClient
from ._models import CreateRequest
from ._ratelimit import Slot
from ._registry import ActiveResearch, Registry
from ._stops import Stops

__all__ = ["Creates"]

logger: Final = logging.getLogger("fay_async")


@attrs.define(eq=False)
class _Create:
    """One create, and its outcome once ``done`` is set.

    Not ``TaskGroup.start()``: when a caller is cancelled from outside anyio (asyncio's
    ``task.cancel()``) while waiting, ``start()`` cancels the started task, which could cut
    off a create the service has accepted. Here the create goes on, and is stopped.
    """

    request: CreateRequest
    slot: Slot | None
    done: anyio.Event = attrs.field(factory=anyio.Event)
    request_id: str | None = None
    error: BaseException | None = None
    abandoned: bool = False


class Creates:
    """Sends creates for the manager; ``stop_all_new()`` says whether to stop what they make."""

    def __init__(
        self,
        client: FayClient,
        registry: Registry,
        stops: Stops,
        *,
        task_group: anyio.abc.TaskGroup,
        stop_all_new: Callable[[], bool],
    ) -> None:
        self._client = client
        self._registry = registry
        self._stops = stops
        self._task_group = task_group
        self._stop_all_new = stop_all_new

    async def create(self, request: CreateRequest, slot: Slot | None) -> str:
        """Send ``request`` as a task and return the request id of the tracked research."""
        job = _Create(request, slot)
        self._task_group.start_soon(self._run, job)
        try:
            with anyio.CancelScope(shield=True):
                await job.done.wait()
        except BaseException:
            # Only a cancellation from outside anyio (asyncio's task.cancel()) gets here.
            job.abandoned = True
            if job.request_id is not None:  # pragma: no cover - cancelled as the create ended
                self._stops.job_for(job.request_id)
            raise
        if job.error is not None:
            raise job.error
        assert job.request_id is not None  # noqa: S101 - a create ends with one of the two
        return job.request_id

    async def _run(self, job: _Create) -> None:
        try:
            with anyio.CancelScope(shield=True):
                created = await self._client.create(job.request, slot=job.slot)
                self._registry.add(
                    ActiveResearch(
                        request_id=created.request_id,
                        prompt=job.request.prompt,
                        started_at=anyio.current_time(),
                        status=created.status,
                    )
                )
                job.request_id = created.request_id
                logger.info("research %s created", created.request_id)
        except Exception as error:  # noqa: BLE001 - handed to the caller, who raises it
            job.error = error
            if job.abandoned:
                logger.warning("a create whose caller was cancelled failed: %s", error)
        finally:
            job.done.set()
        if job.request_id is not None and (job.abandoned or self._stop_all_new()):
            await self._stops.job_for(job.request_id).settled()
