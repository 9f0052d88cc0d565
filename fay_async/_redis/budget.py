"""``RedisBudget``: the budget windows of one API key, shared by every process that uses it."""

from __future__ import annotations

import itertools
import math
import uuid
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final

import anyio

from fay_async._ratelimit import SLACK
from fay_async._validators import check_seconds

from ._connect import Connection, check_key_prefix

if TYPE_CHECKING:
    import redis.asyncio
    from typing_extensions import Self

__all__ = ["RedisBudget"]

# One atomic step on Redis's clock (TIME), so that hosts whose clocks disagree still share
# one window: drop the calls older than the window, count this one if there is room, and
# refresh this process's count of callers sharing the window.
# KEYS: the window (sorted set of call times, microseconds), the sharers (hash).
# ARGV: limit, window (µs), member, process id, local sharers (-1: unknown), sharers' TTL (µs).
# Returns: {taken (0/1), wait (µs), calls left, sharers in the fleet}.
_TAKE: Final = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', string.format('%d', now - window))
local used = redis.call('ZCARD', KEYS[1])
local taken = 0
local wait = 0
if used < limit then
  redis.call('ZADD', KEYS[1], string.format('%d', now), ARGV[3])
  redis.call('PEXPIRE', KEYS[1], math.ceil(window / 1000) + 1000)
  used = used + 1
  taken = 1
else
  local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  wait = tonumber(oldest[2]) + window - now
end
local ttl = tonumber(ARGV[6])
local mine = tonumber(ARGV[5])
if mine > 0 then
  redis.call('HSET', KEYS[2], ARGV[4], string.format('%d:%d', mine, now + ttl))
elseif mine == 0 then
  redis.call('HDEL', KEYS[2], ARGV[4])
end
local fleet = 0
local all = redis.call('HGETALL', KEYS[2])
for i = 1, #all, 2 do
  local sep = string.find(all[i + 1], ':')
  local count = tonumber(string.sub(all[i + 1], 1, sep - 1))
  if tonumber(string.sub(all[i + 1], sep + 1)) < now then
    redis.call('HDEL', KEYS[2], all[i])
  else
    fleet = fleet + count
  end
end
redis.call('PEXPIRE', KEYS[2], math.ceil(ttl / 1000))
return {taken, wait, limit - used, fleet}
"""

_MICRO: Final = 1_000_000


class _Estimate:
    """What the last answer of Redis said about one window, on this process's loop clock."""

    __slots__ = ("fleet", "free_at", "left", "reported")

    def __init__(self) -> None:
        self.left = math.inf
        self.free_at = -math.inf
        self.fleet = 0
        self.reported = -1


class RedisBudget:
    """Budget windows in Redis: processes on any number of hosts spend one key's budget.

    Pass it to every client of the key: ``FayClient(rate_limits="free",
    budget=RedisBudget("redis://host:6379/0"))``. Each call's slot is taken by one atomic
    script on Redis's clock (a sorted set per API key and endpoint, named from
    ``key_prefix`` and a fingerprint of the key, never the key), so together the
    processes never exceed the tier and can use all of it. The poller's fair share
    counts the researches watched by every process (each process's count lives
    ``sharer_ttl`` seconds past its last call).

    If Redis cannot be reached, a call that needs a slot raises
    :class:`~fay_async.SharedStateError` and is not sent: the budget is never spent
    unseen. asyncio only (redis-py's asyncio client): on trio it refuses at construction.
    ``client`` is a ``redis.asyncio.Redis`` to borrow instead of ``url`` (left open).
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        client: redis.asyncio.Redis | None = None,
        key_prefix: str = "fay",
        sharer_ttl: float = 60.0,
    ) -> None:
        self._connection = Connection("RedisBudget", url, client)
        self.key_prefix = check_key_prefix(key_prefix)
        self.sharer_ttl = check_seconds(sharer_ttl, "sharer_ttl")
        self._process = uuid.uuid4().hex
        self._counter = itertools.count()
        self._estimates: dict[str, _Estimate] = {}
        self._local: dict[str, int] = {}
        self._script: Any = None

    def __repr__(self) -> str:
        return f"RedisBudget({self._connection.where!r}, key_prefix={self.key_prefix!r})"

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the Redis connection (only one this budget made)."""
        await self._connection.aclose()
        self._script = None

    def _estimate(self, name: str) -> _Estimate:
        estimate = self._estimates.get(name)
        if estimate is None:
            estimate = self._estimates[name] = _Estimate()
        return estimate

    async def take(self, name: str, limit: int, window: float) -> float:
        client = self._connection.client()
        if self._script is None:
            self._script = client.register_script(_TAKE)
        estimate = self._estimate(name)
        local = self._local.get(name, -1)
        member = f"{self._process}:{next(self._counter)}"
        try:
            taken, wait_us, left, fleet = await self._script(
                keys=[f"{self.key_prefix}:budget:{name}", f"{self.key_prefix}:sharers:{name}"],
                args=[
                    limit,
                    math.ceil(window * _MICRO),
                    member,
                    self._process,
                    local,
                    math.ceil(self.sharer_ttl * _MICRO),
                ],
            )
        except Exception as error:
            raise self._connection.failed(error, "taking a budget slot") from error
        now = anyio.current_time()
        wait = 0.0 if taken else int(wait_us) / _MICRO + window * SLACK
        estimate.left = float(left)
        estimate.free_at = now + wait
        estimate.fleet = int(fleet)
        estimate.reported = local
        return wait

    def available(self, name: str, limit: int, window: float) -> float:  # noqa: ARG002
        estimate = self._estimate(name)
        if estimate.left >= 1 or anyio.current_time() >= estimate.free_at:
            return math.inf  # unknown, or room left: the atomic take decides
        return 0.0

    def next_free(self, name: str, limit: int, window: float) -> float:  # noqa: ARG002
        estimate = self._estimate(name)
        return max(0.0, estimate.free_at - anyio.current_time())

    def sharers(self, name: str, local: int) -> int:
        self._local[name] = max(0, local)
        estimate = self._estimate(name)
        others = estimate.fleet - max(0, estimate.reported)
        return max(0, others) + local
