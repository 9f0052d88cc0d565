"""Manager scale: 10,000 researches tracked at once by one ``ResearchManager``.

Everything runs in this process on virtual time (looptime), against an in-process
emulator where every research stays PENDING for an hour, so no research ends on its own.

1. **Tracked**: ``start_research`` creates and tracks every research. Its memory is
   measured with ``tracemalloc`` on ``track()`` of the same ids in a second manager:
   ``track`` keeps the same registry entry without an HTTP call, so the emulator's own
   memory (its researches, its call log) stays out of the figure.
2. **Awaited**: one task per research waits in ``wait_for_completion``. The memory is
   measured before the first status check is due (no HTTP call happens in between), and
   set against the same number of bare tasks waiting on one shared event: the difference
   is what the manager adds per waiter (its poll state, wake-up event, deadline scope).
3. **Polling**: the next seconds of virtual time give every research its first status
   check. CPU time per check, against bare ``get_status`` calls made just before on the
   same emulator and the same heap (every waiter alive, so the GC costs the same).
4. **Cancel all**: ``cancel_all_research()`` with every waiter still waiting; its wall
   time, and the time until the last waiter has seen its research STOPPED.
"""

from __future__ import annotations

import contextlib
import gc
import sys
import time
import tracemalloc

import anyio
import anyio.abc
import attrs

from fay_async import FayClient, ResearchManager, ResearchStatus, StopResult
from fay_async.exceptions import ResearchStoppedError
from fay_async.testing import FayEmulator, Scenario

from ._common import API_KEY, GcTimer, Row, check, run_virtual

TARGET_BYTES = 4096
TARGET_CANCEL_ALL = 5.0

#: Long enough that no research leaves PENDING while it is measured.
_SCENARIO = Scenario(pending_s=3600.0, processing_s=600.0)


@attrs.frozen(kw_only=True)
class Sizes:
    """How many researches, and how many bare ``get_status`` calls for the comparison."""

    researches: int
    bare_calls: int


FULL = Sizes(researches=10_000, bare_calls=1_000)
QUICK = Sizes(researches=100, bare_calls=50)


def _snapshot() -> tracemalloc.Snapshot:
    gc.collect()
    return tracemalloc.take_snapshot().filter_traces(
        [tracemalloc.Filter(inclusive=False, filename_pattern=tracemalloc.__file__)]
    )


def _grown(before: tracemalloc.Snapshot, after: tracemalloc.Snapshot) -> int:
    return sum(stat.size_diff for stat in after.compare_to(before, "filename"))


async def _registry_bytes(client: FayClient, ids: list[str], prompts: list[str]) -> float:
    """Bytes per research that a manager's registry holds (measured on ``track``)."""
    # Fresh copies of the ids, as start_research holds the strings it decoded.
    copies = [request_id.encode().decode() for request_id in ids]
    async with ResearchManager(client, cancel_on_exit=False) as manager:
        tracemalloc.start()
        try:
            before = _snapshot()
            for request_id, prompt in zip(copies, prompts, strict=True):
                manager.track(request_id, prompt=prompt)
            after = _snapshot()
        finally:
            tracemalloc.stop()
        # The copies were made before the first snapshot: count their size explicitly.
        strings = sum(sys.getsizeof(request_id) for request_id in copies)
        return (_grown(before, after) + strings) / len(ids)


async def _waiter(manager: ResearchManager, request_id: str) -> None:
    with contextlib.suppress(ResearchStoppedError):
        await manager.wait_for_completion(request_id)


async def _bare_waiter(event: anyio.Event) -> None:
    with contextlib.suppress(ResearchStoppedError):  # the same frame as _waiter's
        await event.wait()


async def _bare_waiter_bytes(count: int) -> float:
    """Bytes per task for ``count`` tasks waiting on one shared event (the baseline)."""
    event = anyio.Event()
    async with anyio.create_task_group() as group:
        tracemalloc.start()
        try:
            before = _snapshot()
            for _ in range(count):
                group.start_soon(_bare_waiter, event)
            await anyio.sleep(0.1)
            after = _snapshot()
        finally:
            tracemalloc.stop()
        event.set()
    return _grown(before, after) / count


async def _scale(sizes: Sizes) -> list[Row]:
    count = sizes.researches
    emulator = FayEmulator(api_keys={API_KEY}, scenario=_SCENARIO)
    prompts = [f"benchmark question {n}" for n in range(count)]
    rows: list[Row] = []
    name = f"manager n={count:,}"
    async with emulator.client() as client, ResearchManager(client) as manager:
        wall = time.perf_counter()
        ids = [await manager.start_research(prompt) for prompt in prompts]
        start_wall = time.perf_counter() - wall
        assert len(manager.active_requests) == count

        registry = await _registry_bytes(client, ids, prompts)
        bare = await _bare_waiter_bytes(count)

        statuses = emulator.call_counts()["status"]
        async with anyio.create_task_group() as waiters:
            tracemalloc.start()
            try:
                before = _snapshot()
                for request_id in ids:
                    waiters.start_soon(_waiter, manager, request_id)
                await anyio.sleep(1.0)  # every waiter waits; the first checks are due at 2.4 s
                after = _snapshot()
            finally:
                tracemalloc.stop()
            if emulator.call_counts()["status"] != statuses:
                raise RuntimeError("a status check ran while the waiters' memory was measured")
            awaited = _grown(before, after) / count

            # Bare calls on the same heap (every waiter alive), before any check is due.
            sample = ids[: sizes.bare_calls]
            cpu = time.process_time()
            for request_id in sample:
                await client.get_status(request_id)
            bare_cpu = (time.process_time() - cpu) / len(sample)
            statuses = emulator.call_counts()["status"]

            cpu = time.process_time()
            with GcTimer() as poll_gc:
                await anyio.sleep(4.0)  # every research gets its first check (2.4-3.6 s)
            poll_cpu = time.process_time() - cpu
            polls = emulator.call_counts()["status"] - statuses
            if polls < count:
                raise RuntimeError(f"only {polls} of {count} researches were checked")

            wall = time.perf_counter()
            with GcTimer() as gc_time:
                results = await manager.cancel_all_research()
            cancel_wall = time.perf_counter() - wall
        settled_wall = time.perf_counter() - wall
        stopped = sum(
            1
            for result in results.values()
            if isinstance(result, StopResult) and result.status is ResearchStatus.STOPPED
        )
        if stopped != count or manager.active_requests:
            raise RuntimeError(f"cancel_all_research stopped {stopped} of {count}")

    rows += [
        Row(
            benchmark=name,
            metric="start_research, wall time each",
            value=start_wall / count * 1e6,
            unit="us",
            note="in-process emulator, create included",
        ),
        Row(
            benchmark=name,
            metric="memory per tracked research",
            value=registry,
            unit="B",
            target=f"<= {TARGET_BYTES}",
            ok=check(registry, TARGET_BYTES),
            note="registry entry, request id included",
        ),
        Row(
            benchmark=name,
            metric="memory per awaited research, manager's share",
            value=awaited - bare,
            unit="B",
            target=f"<= {TARGET_BYTES}",
            ok=check(awaited - bare, TARGET_BYTES),
            note="poll state, wake-up event, wait scope, coroutines",
        ),
        Row(
            benchmark=name,
            metric="memory per awaited research, with its waiting task",
            value=awaited,
            unit="B",
            note=f"of which the task itself (bare anyio task on an event): {bare:,.0f} B",
        ),
        Row(
            benchmark=name,
            metric="CPU per status check by the manager",
            value=poll_cpu / polls * 1e6,
            unit="us",
            note=f"{polls:,} checks, waking the waiters included; {poll_gc.seconds:.1f} s GC",
        ),
        Row(
            benchmark=name,
            metric="CPU per bare get_status, same emulator",
            value=bare_cpu * 1e6,
            unit="us",
            note="client and in-process emulator, on the same heap",
        ),
        Row(
            benchmark=name,
            metric="cancel_all_research(), wall time",
            value=cancel_wall,
            unit="s",
            target=f"<= {TARGET_CANCEL_ALL:g}",
            ok=check(cancel_wall, TARGET_CANCEL_ALL),
            note=f"{count:,} stops; {gc_time.seconds:.1f} s of it in the GC",
        ),
        Row(
            benchmark=name,
            metric="until every waiter saw STOPPED",
            value=settled_wall,
            unit="s",
        ),
    ]
    return rows


def run(*, quick: bool) -> list[Row]:
    """The manager figures for 10,000 researches (100 with ``quick``)."""
    sizes = QUICK if quick else FULL
    return run_virtual(lambda: _scale(sizes))
