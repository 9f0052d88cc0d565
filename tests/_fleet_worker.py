"""A worker process of the fleet tests: ``python -m tests._fleet_worker MODE ...``.

It talks to the emulator the test serves (``FAY_BASE_URL``, ``FAY_API_KEY``) and shares
state through the test's redis-server (``FAY_REDIS_URL``, key prefix ``FAY_REDIS_PREFIX``).

- ``creates N WINDOW``: N creates on the Free tier's counts, over a window of WINDOW
  seconds, through a shared :class:`RedisBudget`; prints how many were made.
- ``own N LEASE``: starts N researches under a :class:`RedisRegistry`, prints their ids
  as one JSON line, then waits on all of them, printing ``STOPPED <id>`` for each one
  another worker stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys

from fay_async import (
    FayClient,
    NotFoundError,
    RateLimits,
    ResearchManager,
    ResearchStoppedError,
)
from fay_async.redis import RedisBudget, RedisRegistry


def _say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


async def _warm_up(client: FayClient) -> None:
    with contextlib.suppress(NotFoundError):
        await client.get_status("warm-up")


async def creates(count: int, window: float) -> None:
    free = RateLimits.FREE
    limits = RateLimits(create=free.create, status=free.status, window=window)
    budget = RedisBudget(os.environ["FAY_REDIS_URL"], key_prefix=os.environ["FAY_REDIS_PREFIX"])
    async with budget, FayClient(rate_limits=limits, budget=budget, max_retries=0) as client:
        # Open the connections first: the budget counts a call when its slot is taken, the
        # server when it arrives, and a first connection's set-up would come in between.
        async with asyncio.TaskGroup() as tg:
            for _ in range(free.create or 0):
                tg.create_task(_warm_up(client))
        made = 0

        async def one() -> None:
            nonlocal made
            await client.create_conversation("fleet")
            made += 1

        async with asyncio.TaskGroup() as tg:
            for _ in range(count):
                tg.create_task(one())
    _say(str(made))


async def own(count: int, lease: float) -> None:
    registry = RedisRegistry(
        os.environ["FAY_REDIS_URL"], key_prefix=os.environ["FAY_REDIS_PREFIX"], lease=lease
    )
    async with FayClient() as client, ResearchManager(client, registry=registry) as manager:
        ids = [await manager.start_research(f"owned {i}") for i in range(count)]
        await asyncio.sleep(0.1)  # the write-through reaches Redis before anyone looks
        _say(json.dumps(ids))

        async def wait(request_id: str) -> None:
            try:
                await manager.wait_for_completion(request_id)
            except ResearchStoppedError:
                _say(f"STOPPED {request_id}")

        async with asyncio.TaskGroup() as tg:
            for request_id in ids:
                tg.create_task(wait(request_id))


def main(argv: list[str]) -> None:
    mode, *args = argv
    if mode == "creates":
        asyncio.run(creates(int(args[0]), float(args[1])))
    elif mode == "own":
        asyncio.run(own(int(args[0]), float(args[1])))
    else:
        raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
