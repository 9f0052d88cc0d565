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

import inspect
import logging
import types
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from contextlib import aclosing
from typing import Any, Final

import anyio
import anyio.abc

from ._client import FayClient
from ._creates import Creates
from ._flows import ManagerFlows, Running, State, create_request
from ._models import ConversationInfo, CreateRequest, ResearchStatus, StopResult
from ._outcomes import outcome
from ._policy import SAFETY_NET, PollPolicy
from ._polling import StatusPoller
from ._pushes import OutputCache, Pushed, merged
from ._registry import ActiveResearch, FleetHooks, MemoryRegistry, Registry, SharedRegistry
from ._stops import Stops
from ._tasks import HostedTaskGroup
from ._validators import (
    check_callable,
    check_count,
    check_seconds,
    check_timeout,
    validate_request_id,
)
from ._waits import changes, until_settled
from .exceptions import NotFoundError

__all__ = ["ActiveResearch", "ResearchManager"]

logger: Final = logging.getLogger("fay_async")

StatusChangeCallback = Callable[[ConversationInfo], "Awaitable[object] | object"]


class ResearchManager(ManagerFlows):
    """Starts, waits for, times out and stops many researches through one ``FayClient``.

    Use it as an async context manager: it owns the tasks that poll and stop. On leaving,
    every research still tracked is stopped when ``cancel_on_exit`` is true (the default),
    else left running. ``poll_policy`` sets the status-check schedule, ``stop_grace`` the
    most seconds one remote stop may take once sent, ``max_concurrent_stops``
    how many stops run at once, ``exit_timeout`` (None: no bound) how long leaving may
    spend on stops not sent yet (see :meth:`cancel_all_research`), and
    ``on_status_change`` (a function or coroutine function) is called with each new
    status seen. ``push_poll_policy`` is the schedule while webhooks are flowing
    (:meth:`handle_webhook`): by default a safety net that checks after two minutes.
    ``registry`` holds what is tracked: this process's memory by default, or a registry
    shared by several processes (:class:`fay_async.redis.RedisRegistry`), through which
    any of them can cancel any research and survivors stop the researches of a process
    that died.

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
        push_poll_policy: PollPolicy = SAFETY_NET,
        registry: Registry | None = None,
    ) -> None:
        if not isinstance(client, FayClient):
            raise TypeError(
                f"ResearchManager needs a FayClient, got {type(client).__name__}: "
                "ResearchManager(FayClient(...))"
            )
        if poll_policy is None:
            poll_policy = PollPolicy()
        for name, policy in (("poll_policy", poll_policy), ("push_poll_policy", push_poll_policy)):
            if not isinstance(policy, PollPolicy):
                raise TypeError(f"{name} must be a PollPolicy, got {type(policy).__name__}")
        self.push_poll_policy = push_poll_policy
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
        self._outputs = OutputCache()
        self._state = State.NEW
        self._running: Running | None = None

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
        if self._state is not State.NEW:
            raise RuntimeError("a ResearchManager can be entered only once")
        poller = StatusPoller(
            self.client,
            self.poll_policy,
            on_change=self._status_changed,
            push_policy=self.push_poll_policy,
        )
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
            stop_all_new=lambda: self._state is not State.OPEN and self.cancel_on_exit,
        )
        self._running = Running(group, tg, poller, poller_scope, stops, creates)
        self._state = State.OPEN
        if isinstance(self._registry, SharedRegistry):
            try:
                await self._registry.start(
                    tg, FleetHooks(self._learned, self._stop_untracked, self.client.key_fingerprint)
                )
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
        if running is None or self._state is not State.OPEN:
            raise RuntimeError("this ResearchManager was not entered")
        self._state = State.CLOSING
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
                # Stops of researches this manager does not track (the orphan sweep's, a
                # cancel of another worker's) are not this exit's to wait for: those not
                # sent yet end now, and what they would have stopped stays in the fleet's
                # registry for the other workers' sweeps.
                running.stops.give_up_queueing(keep=self._registry)
                with anyio.CancelScope(shield=True):
                    await self._registry.close()
            running.poller.close()
            running.poller_scope.cancel()
            self._state = State.CLOSED
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

    def _check_open(self) -> Running:
        if self._state is not State.OPEN or self._running is None:
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
        request = create_request(prompt, structured_output, output_schema)
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

    async def handle_webhook(self, event: Pushed) -> None:
        """Take in a pushed event (a :class:`~fay_async.webhooks.WebhookEvent`).

        Its status goes into the same state the poller keeps: waiters on the research
        wake at once, :meth:`watch` yields it, an Error event makes them raise
        :class:`ResearchFailedError` with its message, and an Output event's output is
        kept so :meth:`research` needs no output call. While events keep coming, the
        poller checks only on the ``push_poll_policy`` schedule, a safety net for a lost
        delivery. An event of another type (the dashboard's test event) is ignored, and
        so is any event once the manager is closed.
        """
        running = self._running
        if running is None or self._state is not State.OPEN:
            return
        info = event.info
        if info is None or event.request_id is None:
            return
        running.poller.pushed()
        info = merged(running.poller.last_info(info.request_id), info)
        self._outputs.keep(event, info)
        await self._learned(info)

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
