"""Batch claims in Redis: each prompt of a batch is created once, whichever worker runs it.

Each item of a batch has one entry in a Redis hash: ``claimed`` (a worker took it),
``creating`` (its create may have been sent), ``created`` (with its request id) and
``finished`` (with its result). Workers hold heartbeat leases; an item whose worker's
lease expired is taken over: a ``claimed`` one is started afresh, a ``created`` one is
followed by its request id, and a ``creating`` one is *uncertain* (its research may exist
under an id nobody saw), so it is never created again.

Every later step (``creating``, ``created``, ``finished``) is a compare-and-set in one
script: it is written only if this worker still owns the item, in the state the step
follows. A worker whose lease lapsed (a stall, a partition) and whose item was taken
over is refused with :class:`ClaimLostError` and drops the item: its create is not sent.

One Redis server (or a primary with replicas), not Redis Cluster: the claim script
reads worker-lease keys it builds from names, which Cluster does not allow.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import uuid
from collections.abc import Sequence
from typing import Any, Final

import anyio

from fay_async._validators import check_seconds
from fay_async.exceptions import SharedStateError

from ._connect import Connection, check_key_prefix

__all__ = ["BatchClaims", "Claim", "ClaimLostError"]

# KEYS: the batch's hash. ARGV: this worker, the worker-lease key prefix, then the item
# keys in input order. It reads the leases of the items' owners, keys it builds from
# ARGV and does not declare: fine on one Redis server, not on Redis Cluster. Returns
# {key, action, request id} for the first item this worker may take (actions: new,
# resume, uncertain), or {"", "wait"/"done", ""}.
_CLAIM: Final = """
local me = ARGV[1]
local unfinished = 0
for i = 3, #ARGV do
  local key = ARGV[i]
  local raw = redis.call('HGET', KEYS[1], key)
  if not raw then
    redis.call('HSET', KEYS[1], key, cjson.encode({state = 'claimed', owner = me}))
    return {key, 'new', ''}
  end
  local entry = cjson.decode(raw)
  if entry.state ~= 'finished' then
    unfinished = unfinished + 1
    if entry.owner ~= me and redis.call('EXISTS', ARGV[2] .. entry.owner) == 0 then
      local was = entry.state
      entry.owner = me
      if was == 'claimed' then
        redis.call('HSET', KEYS[1], key, cjson.encode(entry))
        return {key, 'new', ''}
      elseif was == 'created' then
        redis.call('HSET', KEYS[1], key, cjson.encode(entry))
        return {key, 'resume', entry.request_id}
      else
        entry.state = 'uncertain'
        redis.call('HSET', KEYS[1], key, cjson.encode(entry))
        return {key, 'uncertain', ''}
      end
    end
  end
end
if unfinished > 0 then return {'', 'wait', ''} end
return {'', 'done', ''}
"""


# Compare-and-set of one item. KEYS: the batch's hash. ARGV: the item key, this worker,
# the new entry (JSON), then the states it may follow. Returns {1} when written, else
# {0, state, owner} as found ('' when the item has no entry).
_STEP: Final = """
local raw = redis.call('HGET', KEYS[1], ARGV[1])
if not raw then return {0, '', ''} end
local entry = cjson.decode(raw)
local state = tostring(entry.state)
local owner = tostring(entry.owner)
if owner == ARGV[2] then
  for i = 4, #ARGV do
    if state == ARGV[i] then
      redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
      return {1}
    end
  end
end
return {0, state, owner}
"""

#: The states each step may follow (the item owned by this worker).
_FOLLOWS: Final = {
    "creating": ("claimed",),
    "created": ("creating",),
    "finished": ("claimed", "creating", "created", "uncertain"),
}


class ClaimLostError(SharedStateError):
    """This worker no longer owns a batch item (its lease lapsed and another took it over).

    Raised by :meth:`BatchClaims.creating` (the create must not be sent),
    :meth:`BatchClaims.created` and :meth:`BatchClaims.finished`: the item is the other
    worker's now, and this one drops it. ``state`` and ``owner`` are what Redis holds.
    """

    def __init__(self, key: str, step: str, state: str, owner: str) -> None:
        found = f"state {state!r}, owner {owner!r}" if owner else "no entry"
        super().__init__(
            f"batch item {key!r} cannot be marked {step} by this worker: Redis holds {found} "
            "(another worker takes an item over once the lease of its owner lapses)"
        )
        self.key = key
        self.step = step
        self.state = state
        self.owner = owner


def batch_name(keys_and_fingerprints: Sequence[tuple[str, str]]) -> str:
    """A name for a batch from its items: every worker given the same input agrees on it."""
    body = json.dumps(list(keys_and_fingerprints)).encode()
    return hashlib.sha256(body).hexdigest()[:16]


class Claim:
    """One item taken by this worker: ``action`` is new, resume or uncertain."""

    __slots__ = ("action", "key", "request_id")

    def __init__(self, key: str, action: str, request_id: str | None) -> None:
        self.key = key
        self.action = action
        self.request_id = request_id


class BatchClaims:
    """The claims of one batch (named ``batch``) for this worker, under a heartbeat lease.

    One Redis server (or a primary with replicas): Redis Cluster is not supported.
    """

    def __init__(
        self, url: str, *, batch: str, key_prefix: str = "fay", lease: float = 15.0
    ) -> None:
        self._url = url
        self._connection = Connection("the batch's claims", url, None)
        check_key_prefix(key_prefix)
        self.lease = check_seconds(lease, "lease")
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._hash = f"{key_prefix}:batch:{batch}"
        self._workers = f"{key_prefix}:batch-worker:"
        self._script: Any = None
        self._step: Any = None
        self._sync: Any = None
        self._sync_step: Any = None
        # The blocking writes (creating, created) run on the event loop: each attempt may
        # block it for at most connect + read timeout, twice (one retry), so a Redis
        # that is away stalls this worker well within its lease, never indefinitely.
        self._sync_timeout = self.lease / 10

    @property
    def where(self) -> str:
        """The Redis URL without its password."""
        return self._connection.where

    async def _run(self, doing: str, command: str, *args: Any, **kwargs: Any) -> Any:
        try:
            return await getattr(self._connection.client(), command)(*args, **kwargs)
        except Exception as error:
            raise self._connection.failed(error, doing) from error

    async def renew(self) -> None:
        """Hold (or renew) this worker's lease."""
        await self._run(
            "renewing the lease",
            "set",
            self._workers + self.worker_id,
            "1",
            px=int(self.lease * 1000),
        )

    async def heartbeat(self) -> None:
        """Renew the lease until cancelled."""
        while True:
            await self.renew()
            await anyio.sleep(self.lease / 3)

    async def next(self, keys: Sequence[str]) -> Claim | str:
        """The next item this worker may take, or ``"wait"`` / ``"done"``."""
        if self._script is None:
            self._script = self._connection.client().register_script(_CLAIM)
        try:
            key, action, request_id = await self._script(
                keys=[self._hash], args=[self.worker_id, self._workers, *keys]
            )
        except Exception as error:
            raise self._connection.failed(error, "claiming an item") from error
        if not key:
            return str(action)
        return Claim(str(key), str(action), str(request_id) or None)

    def _refused(self, key: str, step: str, answer: Any) -> None:
        if int(answer[0]) != 1:
            raise ClaimLostError(key, step, str(answer[1]), str(answer[2]))

    def _step_args(self, key: str, step: str, entry: dict[str, Any]) -> list[Any]:
        value = json.dumps({"owner": self.worker_id, "state": step, **entry})
        return [key, self.worker_id, value, *_FOLLOWS[step]]

    async def _set(self, key: str, step: str, **entry: Any) -> None:
        if self._step is None:
            self._step = self._connection.client().register_script(_STEP)
        try:
            answer = await self._step(keys=[self._hash], args=self._step_args(key, step, entry))
        except Exception as error:
            raise self._connection.failed(error, f"marking an item {step}") from error
        self._refused(key, step, answer)

    def _set_now(self, key: str, step: str, **entry: Any) -> None:
        # A blocking write, as the local journal's are: the create's callbacks do not wait
        # on the event loop, and what they record must be there before the next step.
        if self._sync is None:
            import redis  # noqa: PLC0415 - an optional extra
            from redis.backoff import NoBackoff  # noqa: PLC0415
            from redis.retry import Retry  # noqa: PLC0415

            self._sync = redis.Redis.from_url(
                self._url,
                decode_responses=True,
                socket_timeout=self._sync_timeout,
                socket_connect_timeout=self._sync_timeout,
                retry=Retry(NoBackoff(), 1),
            )
            self._sync_step = self._sync.register_script(_STEP)
        try:
            answer = self._sync_step(keys=[self._hash], args=self._step_args(key, step, entry))
        except Exception as error:
            raise self._connection.failed(error, f"marking an item {step}") from error
        self._refused(key, step, answer)

    def creating(self, key: str) -> None:
        """Mark ``key`` as being created, just before its create is sent.

        From here on a crash leaves the item uncertain: it is never created twice.
        Raises :class:`ClaimLostError` if the item is no longer this worker's, or not
        ``claimed`` any more: the create must not be sent. A blocking call, bounded by a
        socket timeout of ``lease / 10`` seconds (one retry).
        """
        self._set_now(key, "creating")

    def created(self, key: str, request_id: str) -> None:
        """Record ``key``'s request id as soon as it exists (after :meth:`creating`).

        Raises :class:`ClaimLostError` if the item is no longer this worker's. Blocking,
        bounded as :meth:`creating` is.
        """
        self._set_now(key, "created", request_id=request_id)

    async def finished(self, key: str, result: dict[str, Any]) -> None:
        """Record ``key``'s final result; :class:`ClaimLostError` if it is not this worker's."""
        await self._set(key, "finished", result=result)

    async def states(self) -> dict[str, dict[str, Any]]:
        """Every item's entry, by key."""
        raw = await self._run("reading the batch", "hgetall", self._hash)
        return {str(k): json.loads(v) for k, v in raw.items()}

    async def aclose(self) -> None:
        """Give up the lease and close the connections."""
        try:
            await self._run("leaving", "delete", self._workers + self.worker_id)
        finally:
            await self._connection.aclose()
            if self._sync is not None:
                self._sync.close()
