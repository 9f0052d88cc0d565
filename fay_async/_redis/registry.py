"""``RedisRegistry``: what every manager of a fleet tracks, with owners and heartbeat leases."""

from __future__ import annotations

import json
import logging
import math
import os
import socket
import uuid
from collections import deque
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final

import anyio
import anyio.abc

from fay_async._models import ConversationInfo, ResearchStatus, StopResult
from fay_async._registry import ActiveResearch, FleetHooks, MemoryRegistry
from fay_async._validators import check_seconds
from fay_async.exceptions import FayError, NotFoundError

from ._connect import Connection, check_key_prefix, check_worker_id

if TYPE_CHECKING:
    import redis.asyncio

__all__ = ["RedisRegistry"]

logger: Final = logging.getLogger("fay_async.redis")

#: How long leaving may spend writing out what is pending, at most.
_CLOSE_GRACE: Final = 5.0
#: The owner of a research no worker tracks any more (its stop failed): no lease has this
#: name, so every sweep takes it for an orphan and tries to stop it again.
_NOBODY: Final = ""


def _worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class RedisRegistry:
    """The researches of a fleet of managers, in Redis: ``ResearchManager(registry=...)``.

    Each manager keeps its own researches in memory (the manager reads them without
    waiting) and writes them through to one Redis hash, keyed by request id, with the
    owning worker's name. A worker holds a heartbeat lease of ``lease`` seconds. With
    it, any worker can cancel any research (its owner's waiters learn it at once over
    pub/sub and raise :class:`~fay_async.ResearchStoppedError`), cancel-all can cover the
    fleet, and every ``sweep_every`` seconds (default ``lease / 2``) live workers stop the
    researches of a worker whose lease expired (killed, or cut off from Redis): an orphan
    is stopped within about ``lease + sweep_every`` seconds plus the stop itself.

    ``worker_id`` names this worker (default: host, pid and a random suffix). A stable
    name (a pod's or a service's) makes a restarted single process stop what its previous
    life left at once, instead of after the lease. If Redis cannot be reached when the
    manager starts, entering it raises :class:`~fay_async.SharedStateError`; once running,
    the manager goes on with its own researches while Redis is away (fleet-wide cancels
    raise ``SharedStateError``), writes out what changed when Redis is back, and a worker
    that cannot renew its lease for ``lease`` seconds is treated as dead by the others.
    Entries are written out by a background task, a few milliseconds after the manager
    tracks a research: a worker killed in between leaves a research the fleet never
    saw. asyncio only: on trio it refuses at construction.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        client: redis.asyncio.Redis | None = None,
        key_prefix: str = "fay",
        lease: float = 15.0,
        sweep_every: float | None = None,
        worker_id: str | None = None,
    ) -> None:
        self._connection = Connection("RedisRegistry", url, client)
        self.key_prefix = check_key_prefix(key_prefix)
        self.lease = check_seconds(lease, "lease")
        self.sweep_every = check_seconds(
            self.lease / 2 if sweep_every is None else sweep_every, "sweep_every"
        )
        self.worker_id = check_worker_id(worker_id) or _worker_name()
        self._local = MemoryRegistry()
        self._pending: deque[tuple[str, str | None]] = deque()  # (id, entry JSON or None)
        self._wake: anyio.Event | None = None
        self._scope: anyio.CancelScope | None = None
        self._finished: anyio.Event | None = None
        self._hooks: FleetHooks | None = None
        self._key = ""
        self._pubsub: Any = None
        self._started = False
        #: How many orphans this worker has stopped.
        self.swept = 0

    def __repr__(self) -> str:
        return (
            f"RedisRegistry({self._connection.where!r}, worker_id={self.worker_id!r}, "
            f"{len(self._local)} tracked here)"
        )

    # --- Redis names ------------------------------------------------------------------------

    # Researches exist per API key: the entries, the channel and the sweep claims are
    # named with the key's fingerprint, learnt from the manager's client at start().

    @property
    def _entries(self) -> str:
        return f"{self.key_prefix}:{self._key}:registry"

    @property
    def _channel(self) -> str:
        return f"{self.key_prefix}:{self._key}:registry:events"

    def _sweeping(self, request_id: str) -> str:
        return f"{self.key_prefix}:{self._key}:sweeping:{request_id}"

    def _worker(self, worker_id: str) -> str:
        return f"{self.key_prefix}:worker:{worker_id}"

    # --- the synchronous registry: this worker's researches ---------------------------------

    def get(self, request_id: str) -> ActiveResearch | None:
        return self._local.get(request_id)

    def add(self, entry: ActiveResearch) -> ActiveResearch:
        new = entry.request_id not in self._local
        tracked = self._local.add(entry)
        if new:
            self._write(tracked)
        return tracked

    def set_status(self, request_id: str, status: ResearchStatus) -> None:
        self._local.set_status(request_id, status)
        entry = self._local.get(request_id)
        if entry is not None:
            self._write(entry)

    def discard(self, request_id: str) -> bool:
        if not self._local.discard(request_id):
            return False
        self._pending.append((request_id, None))
        self._poke()
        return True

    def orphan(self, request_id: str) -> None:
        entry = self._local.get(request_id)
        if entry is None or not self._local.discard(request_id):
            return
        self._write(entry, owner=_NOBODY)

    def ids(self) -> list[str]:
        return self._local.ids()

    def view(self) -> Mapping[str, ActiveResearch]:
        return self._local.view()

    def __contains__(self, request_id: object) -> bool:
        return request_id in self._local

    def __len__(self) -> int:
        return len(self._local)

    def _write(self, entry: ActiveResearch, *, owner: str | None = None) -> None:
        status = None if entry.status is None else entry.status.value
        owner = self.worker_id if owner is None else owner
        value = {"owner": owner, "prompt": entry.prompt, "status": status}
        self._pending.append((entry.request_id, json.dumps(value)))
        self._poke()

    def _poke(self) -> None:
        if self._wake is not None:
            self._wake.set()

    # --- the fleet --------------------------------------------------------------------------

    async def owner(self, request_id: str) -> str | None:
        if request_id in self._local:
            return self.worker_id
        raw = await self._call("looking up a research", "hget", self._entries, request_id)
        return None if raw is None else str(json.loads(raw).get("owner"))

    async def fleet_ids(self) -> list[str]:
        ids = await self._call("listing the fleet's researches", "hkeys", self._entries)
        latest = dict(self._pending)  # this worker's untracks not written out yet count too
        return [str(i) for i in ids if not (i in latest and latest[i] is None)]

    async def stopped(self, request_id: str, outcome: StopResult | FayError) -> None:
        if not isinstance(outcome, (StopResult, NotFoundError)):
            return  # not stopped: it stays tracked, for a later try
        await self._call("untracking a research", "hdel", self._entries, request_id)
        if isinstance(outcome, StopResult):
            message = json.dumps({"id": request_id, "status": outcome.status.value})
            await self._call("telling the owner", "publish", self._channel, message)

    async def _call(self, doing: str, command: str, *args: Any) -> Any:
        client = self._connection.client()
        try:
            return await getattr(client, command)(*args)
        except Exception as error:
            raise self._connection.failed(error, doing) from error

    # --- lifecycle --------------------------------------------------------------------------

    async def start(self, task_group: anyio.abc.TaskGroup, hooks: FleetHooks) -> None:
        if self._started:
            raise RuntimeError("a RedisRegistry serves one ResearchManager, once")
        self._started = True
        self._hooks = hooks
        self._key = hooks.key
        client = self._connection.client()
        try:
            await client.set(self._worker(self.worker_id), "1", px=self._lease_ms())
            self._pubsub = client.pubsub(ignore_subscribe_messages=True)
            await self._pubsub.subscribe(self._channel)
        except Exception as error:
            with anyio.CancelScope(shield=True):
                if self._pubsub is not None:
                    await self._pubsub.aclose()
                await self._connection.aclose()
            raise self._connection.failed(error, "joining the fleet") from error
        self._wake = anyio.Event()
        self._finished = anyio.Event()
        self._scope = anyio.CancelScope()
        if self._pending:
            self._wake.set()
        task_group.start_soon(self._run, self._scope, self._finished)

    async def close(self) -> None:
        for request_id in self._local.ids():  # left running on purpose: not orphans
            self._pending.append((request_id, None))
        if self._scope is None or self._finished is None:
            await self._connection.aclose()
            return
        self._scope.cancel()
        with anyio.CancelScope(shield=True):
            await self._finished.wait()
            with anyio.move_on_after(_CLOSE_GRACE):
                try:
                    await self._flush()
                    await self._connection.client().delete(self._worker(self.worker_id))
                    await self._pubsub.aclose()
                except Exception as error:  # noqa: BLE001 - logged: leaving goes on
                    logger.warning("RedisRegistry at %s: %s", self._connection.where, error)
            await self._connection.aclose()

    def _lease_ms(self) -> int:
        return math.ceil(self.lease * 1000)

    async def _run(self, scope: anyio.CancelScope, finished: anyio.Event) -> None:
        try:
            with scope:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(self._forever, "renewing the lease", self._heartbeat)
                    tg.start_soon(self._forever, "writing the registry", self._writer)
                    tg.start_soon(self._forever, "listening", self._listen)
                    tg.start_soon(self._forever, "sweeping orphans", self._sweeper)
        finally:
            finished.set()

    async def _forever(self, doing: str, task: Any) -> None:
        """Run ``task`` again after each Redis failure, a little later each time."""
        pause = min(0.05, self.lease / 10)
        while True:
            try:
                await task()
            except Exception as error:  # noqa: BLE001, PERF203 - Redis away: try again later
                logger.warning(
                    "RedisRegistry at %s failed while %s: %s", self._connection.where, doing, error
                )
                await anyio.sleep(pause)
                pause = min(pause * 2, self.lease / 3)

    async def _heartbeat(self) -> None:
        client = self._connection.client()
        while True:
            await client.set(self._worker(self.worker_id), "1", px=self._lease_ms())
            await anyio.sleep(self.lease / 3)

    async def _writer(self) -> None:
        assert self._wake is not None  # noqa: S101 - started
        while True:
            await self._wake.wait()
            self._wake = anyio.Event()
            await self._flush()

    async def _flush(self) -> None:
        ops = list(self._pending)
        if not ops:
            return
        pipe = self._connection.client().pipeline(transaction=False)
        for request_id, value in ops:
            if value is None:
                pipe.hdel(self._entries, request_id)
            else:
                pipe.hset(self._entries, request_id, value)
        await pipe.execute()
        for _ in ops:  # those added meanwhile stay for the next round
            self._pending.popleft()

    async def _listen(self) -> None:
        assert self._hooks is not None  # noqa: S101 - started
        while True:
            message = await self._pubsub.get_message(timeout=self.lease)
            if message is None or message.get("type") != "message":
                continue
            data = json.loads(message["data"])
            request_id = data.get("id")
            if request_id not in self._local:
                continue
            info = ConversationInfo(request_id=request_id, status=ResearchStatus(data["status"]))
            try:
                await self._hooks.learned(info)
            except Exception:
                logger.exception("a stop of research %s made elsewhere was not applied", request_id)

    async def _sweeper(self) -> None:
        first = True
        while True:
            await self.sweep(previous_life=first)
            first = False
            await anyio.sleep(self.sweep_every)

    async def sweep(self, *, previous_life: bool = False) -> int:
        """Stop the researches whose owner's lease has expired; return how many were stopped.

        ``previous_life``: also those recorded under this worker's own name that it does
        not track (left by an earlier process with the same ``worker_id``).
        """
        client = self._connection.client()
        entries = await client.hgetall(self._entries)
        owners = {str(i): str(json.loads(raw).get("owner")) for i, raw in entries.items()}
        others = sorted({o for o in owners.values() if o != self.worker_id})
        alive = dict(zip(others, await self._alive(others), strict=True))
        pending = {request_id for request_id, _ in self._pending}
        orphans = [
            request_id
            for request_id, owner in owners.items()
            if (owner != self.worker_id and not alive[owner])
            or (
                previous_life
                and owner == self.worker_id
                and request_id not in self._local
                and request_id not in pending
            )
        ]
        stopped = 0
        for request_id in orphans:
            claimed = await client.set(
                self._sweeping(request_id),
                self.worker_id,
                nx=True,
                px=2 * self._lease_ms(),
            )
            if claimed and await self._sweep_one(request_id):
                stopped += 1
                self.swept += 1
        return stopped

    async def _alive(self, workers: list[str]) -> list[bool]:
        if not workers:
            return []
        pipe = self._connection.client().pipeline(transaction=False)
        for worker in workers:
            pipe.exists(self._worker(worker))
        return [bool(found) for found in await pipe.execute()]

    async def _sweep_one(self, request_id: str) -> bool:
        assert self._hooks is not None  # noqa: S101 - started
        outcome = await self._hooks.stop(request_id)
        await self.stopped(request_id, outcome)
        if isinstance(outcome, FayError) and not isinstance(outcome, NotFoundError):
            logger.warning("orphan research %s could not be stopped: %s", request_id, outcome)
            return False
        logger.info("orphan research %s stopped (its worker's lease expired)", request_id)
        return True
