"""Batch claims in Redis: each prompt of a batch is created once, whichever worker runs it.

Each item of a batch has one entry in a Redis hash: ``claimed`` (a worker took it),
``creating`` (its create may have been sent), ``created`` (with its request id) and
``finished`` (with its result). Workers hold heartbeat leases; an item whose worker's
lease expired is taken over: a ``claimed`` one is started afresh, a ``created`` one is
followed by its request id, and a ``creating`` one is *uncertain* (its research may exist
under an id nobody saw), so it is never created again.
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

from ._connect import Connection, check_key_prefix

__all__ = ["BatchClaims", "Claim"]

# KEYS: the batch's hash. ARGV: this worker, the worker-lease key prefix, then the item
# keys in input order. Returns {key, action, request id} for the first item this worker
# may take (actions: new, resume, uncertain), or {"", "wait"/"done", ""}.
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
    """The claims of one batch (named ``batch``) for this worker, under a heartbeat lease."""

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
        self._sync: Any = None

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

    async def _set(self, key: str, **entry: Any) -> None:
        value = json.dumps({"owner": self.worker_id, **entry})
        await self._run("recording an item", "hset", self._hash, key, value)

    def _set_now(self, key: str, **entry: Any) -> None:
        # A blocking write, as the local journal's are: the create's callbacks do not wait
        # on the event loop, and what they record must be there before the next step.
        if self._sync is None:
            import redis  # noqa: PLC0415 - an optional extra

            self._sync = redis.Redis.from_url(self._url, decode_responses=True)
        value = json.dumps({"owner": self.worker_id, **entry})
        try:
            self._sync.hset(self._hash, key, value)
        except Exception as error:
            raise self._connection.failed(error, "recording a create") from error

    def creating(self, key: str) -> None:
        """Mark ``key`` as being created, just before its create is sent.

        From here on a crash leaves the item uncertain: it is never created twice.
        """
        self._set_now(key, state="creating")

    def created(self, key: str, request_id: str) -> None:
        """Record ``key``'s request id as soon as it exists."""
        self._set_now(key, state="created", request_id=request_id)

    async def finished(self, key: str, result: dict[str, Any]) -> None:
        """Record ``key``'s final result."""
        await self._set(key, state="finished", result=result)

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
