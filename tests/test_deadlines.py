"""Call deadlines on a timer shared by the calls in flight (on asyncio; trio's own on trio).

Each call must still end at its own deadline, whatever the deadlines of the calls around
it, and calls that ended must not pile up behind one that is still running.
"""

from __future__ import annotations

import asyncio
import gc
import weakref

import anyio
import httpx
import pytest

from fay_async import FayClient, exceptions
from fay_async._deadlines import Deadlines

from . import _docs as docs

pytestmark = pytest.mark.anyio

KEY = "fake-key-DO-NOT-LEAK-9012"


class Hanging(httpx.AsyncBaseTransport):
    """Never answers a request whose URL ends with ``hang``; answers the others at once."""

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if "hang" in request.url.path:
            await anyio.sleep_forever()
        return httpx.Response(200, json=docs.STATUS_PENDING)


async def _timed_out_after(fay: FayClient, *, deadline: float) -> float:
    started = anyio.current_time()
    with pytest.raises(exceptions.APITimeoutError, match=f"within {deadline:g} s") as caught:
        await fay.get_status("hang", deadline=deadline)
    assert caught.value.sent is True
    return anyio.current_time() - started


async def test_a_short_deadline_ends_its_call_while_a_longer_one_runs_on() -> None:
    ended: dict[str, float] = {}
    async with FayClient(KEY, transport=Hanging(), max_retries=0) as fay:

        async def call(name: str, deadline: float) -> None:
            ended[name] = await _timed_out_after(fay, deadline=deadline)

        async with anyio.create_task_group() as group:
            group.start_soon(call, "long", 300.0)
            await anyio.sleep(1)
            group.start_soon(call, "short", 5.0)
    assert ended["short"] == pytest.approx(5, abs=0.01)
    assert ended["long"] == pytest.approx(300, abs=0.01)


async def test_a_deadline_holds_after_calls_that_ended_before_theirs() -> None:
    async with FayClient(KEY, transport=Hanging(), max_retries=0) as fay:
        for _ in range(3):
            await fay.get_status(docs.REQUEST_ID, deadline=50)  # answered at once
        await anyio.sleep(10)
        # The timer armed for the ended calls' deadline (t=50) finds nothing to cut
        # and is armed again for this one.
        assert await _timed_out_after(fay, deadline=100) == pytest.approx(100, abs=0.01)
        assert await _timed_out_after(fay, deadline=7) == pytest.approx(7, abs=0.01)


@pytest.mark.asyncio_only
async def test_ended_calls_do_not_pile_up_behind_a_running_one() -> None:
    deadlines = Deadlines(asyncio.get_running_loop())
    running = anyio.CancelScope()
    deadlines.add(anyio.current_time() + 1000, running)
    ended = [
        deadlines.add(anyio.current_time() + 1000 + n, anyio.CancelScope()) for n in range(500)
    ]
    for entry in reversed(ended):  # each ends with the running one still in front
        deadlines.remove(entry)
    assert len(deadlines) == 1
    assert len(deadlines._heap) <= 2 * len(deadlines) + 64
    with running:
        await anyio.sleep(2000)
    assert running.cancelled_caught


def test_an_event_loop_that_made_calls_is_not_kept_alive() -> None:
    loops: list[weakref.ref[asyncio.AbstractEventLoop]] = []

    async def calls() -> None:
        loops.append(weakref.ref(asyncio.get_running_loop()))
        async with FayClient(KEY, transport=Hanging(), max_retries=0) as fay:
            await fay.get_status(docs.REQUEST_ID, deadline=30)

    asyncio.run(calls())
    gc.collect()
    assert loops[0]() is None
