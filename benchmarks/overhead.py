"""Call overhead: ``FayClient.get_status`` against raw ``httpx`` + ``json.loads``.

Both sides make the same GET of the same research's status against one emulator served
from a child process on a loopback socket, through two ``httpx.AsyncClient`` with the same
connection limits (``FayClient`` borrows its client), in the same event loop. The sides
take turns in short blocks (raw then FayClient, then FayClient then raw, ...): each pair
of neighbouring blocks gives one ratio, so a slow patch of the machine hits both sides of
a pair alike. Each block is timed with ``time.perf_counter`` (wall) and
``time.process_time`` (this process's CPU: the client's own work, the server's excluded).
The figures are the medians over the blocks, and the median of the per-pair ratios.

A second, in-memory figure runs both sides on ``httpx.MockTransport`` (no socket, no
server): what is left is the client's own work per call, and the difference between the
two sides is the CPU that FayClient adds to a call (request id check, deadline scope,
envelope and model decoding).
"""

from __future__ import annotations

import functools
import gc
import json
import ssl
import time
from collections.abc import Callable, Coroutine
from typing import Any, Final

import anyio
import attrs
import httpx

from fay_async import FayClient

from ._common import API_KEY, Row, check, median, quartiles, served_emulator

TARGET_RATIO = 1.15
#: In memory nothing hides the client's own work: FayClient / raw httpx, CPU.
MEMORY_TARGET_RATIO = 1.3

Call = Callable[[], Coroutine[Any, Any, object]]


@attrs.frozen(kw_only=True)
class Sizes:
    """How much to measure, by concurrency: calls per block and pairs of blocks.

    ``warm`` is how many calls per connection warm each side up before it is timed (on a
    socket); ``memory_warm`` how many calls warm the in-memory run.
    """

    calls: dict[int, int]
    pairs: dict[int, int]
    warm: int
    memory_calls: int
    memory_pairs: int
    memory_warm: int


FULL = Sizes(
    calls={1: 40, 32: 320},
    pairs={1: 60, 32: 20},
    warm=8,
    memory_calls=200,
    memory_pairs=15,
    memory_warm=160,
)
QUICK = Sizes(
    calls={1: 5, 32: 32},
    pairs={1: 2, 32: 2},
    warm=0,
    memory_calls=10,
    memory_pairs=2,
    memory_warm=5,
)


@attrs.frozen
class Block:
    """One timed block: seconds of wall time and of CPU time per call."""

    wall: float
    cpu: float


def _limits(concurrency: int) -> httpx.Limits:
    return httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)


@functools.cache
def _tls() -> ssl.SSLContext:
    """One TLS context for every client: building one per client takes a while, and no
    connection here uses it (every URL is plain http on 127.0.0.1)."""
    return ssl.create_default_context()


def _http(concurrency: int, **options: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(limits=_limits(concurrency), verify=_tls(), **options)


async def _block(calls: int, concurrency: int, one: Call) -> Block:
    """``calls`` calls of ``one`` by ``concurrency`` workers; per-call wall and CPU time."""
    remaining = calls

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            await one()

    gc.collect()
    wall, cpu = time.perf_counter(), time.process_time()
    async with anyio.create_task_group() as group:
        for _ in range(concurrency):
            group.start_soon(worker)
    return Block((time.perf_counter() - wall) / calls, (time.process_time() - cpu) / calls)


async def _warm(concurrency: int, rounds: int, one: Call) -> None:
    """Open every connection of the pool and warm the caches on both ends."""
    async with anyio.create_task_group() as group:
        for _ in range(concurrency):
            group.start_soon(one)
    if rounds:
        await _block(concurrency * rounds, concurrency, one)


async def _pairs(
    raw: Call, fay: Call, calls: int, pairs: int, concurrency: int, warm: int
) -> tuple[list[Block], list[Block]]:
    """Alternate blocks of the two sides; the order flips from one pair to the next."""
    await _warm(concurrency, warm, raw)
    await _warm(concurrency, warm, fay)
    raw_blocks: list[Block] = []
    fay_blocks: list[Block] = []
    # Everything alive now lives to the end: frozen, the collection before each block
    # (and any collection inside one) only looks at what the calls themselves made.
    gc.collect()
    gc.freeze()
    try:
        for pair in range(pairs):
            if pair % 2:
                fay_blocks.append(await _block(calls, concurrency, fay))
                raw_blocks.append(await _block(calls, concurrency, raw))
            else:
                raw_blocks.append(await _block(calls, concurrency, raw))
                fay_blocks.append(await _block(calls, concurrency, fay))
    finally:
        gc.unfreeze()
    return raw_blocks, fay_blocks


#: What each block measures: the attribute of a Block, and its words in a metric.
WALL_AND_CPU: Final = (("wall", "wall time"), ("cpu", "client CPU time"))


def paired_rows(
    name: str,
    raw_blocks: list[Block],
    fay_blocks: list[Block],
    *,
    metrics: tuple[str, str, str],
    limit: float | None,
    kinds: tuple[tuple[str, str], ...] = WALL_AND_CPU,
) -> list[Row]:
    """For each kind: both sides' median per call, and the median of the per-pair ratios.

    ``metrics`` are the raw side's, FayClient's and the ratio's metric names, formatted
    with ``what`` (the kind's words) and ``kind``; ``limit`` is the ratio's target, if any.
    """
    raw_metric, fay_metric, ratio_metric = metrics
    rows: list[Row] = []
    for kind, what in kinds:
        raw_values = [getattr(b, kind) for b in raw_blocks]
        fay_values = [getattr(b, kind) for b in fay_blocks]
        ratios = [f / r for f, r in zip(fay_values, raw_values, strict=True)]
        ratio = median(ratios)
        low, high = quartiles(ratios)
        rows += [
            Row(
                benchmark=name,
                metric=raw_metric.format(what=what, kind=kind),
                value=median(raw_values) * 1e6,
                unit="us",
            ),
            Row(
                benchmark=name,
                metric=fay_metric.format(what=what, kind=kind),
                value=median(fay_values) * 1e6,
                unit="us",
            ),
            Row(
                benchmark=name,
                metric=ratio_metric.format(what=what, kind=kind),
                value=ratio,
                unit="x",
                target="" if limit is None else f"<= {limit}",
                ok=None if limit is None else check(ratio, limit),
                note=f"IQR {low:.3f}-{high:.3f} over {len(ratios)} pairs",
            ),
        ]
    return rows


_RAW_HTTPX: Final = (
    "raw httpx, {what} per call",
    "FayClient, {what} per call",
    "FayClient / raw ({kind})",
)


async def _socket(base_url: str, concurrency: int, sizes: Sizes) -> list[Row]:
    headers = {"Authorization": f"Bearer {API_KEY}"}
    async with _http(1) as setup:
        answer = await setup.post(
            f"{base_url}/api/v1/conversations", json={"prompt": "benchmark"}, headers=headers
        )
        request_id = answer.json()["data"]["request_id"]
    url = f"{base_url}/api/v1/conversation/{request_id}/status"

    async with (
        _http(concurrency) as raw_http,
        _http(concurrency) as fay_http,
        FayClient(API_KEY, base_url=base_url, http_client=fay_http) as fay,
    ):
        raw_call, fay_call = _sides(raw_http, fay, url, headers, request_id)
        raw_blocks, fay_blocks = await _pairs(
            raw_call,
            fay_call,
            sizes.calls[concurrency],
            sizes.pairs[concurrency],
            concurrency,
            sizes.warm,
        )
    return paired_rows(
        f"overhead c={concurrency}",
        raw_blocks,
        fay_blocks,
        metrics=_RAW_HTTPX,
        limit=TARGET_RATIO,
    )


def _sides(
    raw_http: httpx.AsyncClient,
    fay: FayClient,
    url: str,
    headers: dict[str, str],
    request_id: str,
) -> tuple[Call, Call]:
    """The two sides of the comparison: the same status GET, raw and through FayClient."""

    async def raw_call() -> object:
        response = await raw_http.get(url, headers=headers)
        return json.loads(response.content)["data"]

    async def fay_call() -> object:
        return await fay.get_status(request_id)

    return raw_call, fay_call


async def _in_memory(body: bytes, sizes: Sizes) -> list[Row]:
    """Both sides on one in-memory transport: the client's own CPU per call.

    FayClient runs twice against raw httpx: with its own httpx client (made on the same
    transport: what ``FayClient(transport=...)`` and a plain ``FayClient()`` get), and
    borrowing one (``http_client=``), whose hooks and defaults it must go through.
    """
    request_id = json.loads(body)["data"]["request_id"]

    def answer(_request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=body, headers={"content-type": "application/json"})

    base_url = "http://127.0.0.1:9"  # never connected to: the transport answers
    headers = {"Authorization": f"Bearer {API_KEY}"}
    url = f"{base_url}/api/v1/conversation/{request_id}/status"
    transport = httpx.MockTransport(answer)
    rows: list[Row] = []
    async with (
        _http(1, transport=transport) as raw_http,
        _http(1, transport=transport) as fay_http,
        FayClient(API_KEY, base_url=base_url, transport=transport) as owning,
        FayClient(API_KEY, base_url=base_url, http_client=fay_http) as borrowing,
    ):
        for fay, side, target in ((owning, "own", True), (borrowing, "borrowed", False)):
            raw_call, fay_call = _sides(raw_http, fay, url, headers, request_id)
            raw_blocks, fay_blocks = await _pairs(
                raw_call, fay_call, sizes.memory_calls, sizes.memory_pairs, 1, sizes.memory_warm
            )
            rows += _memory_rows(raw_blocks, fay_blocks, side, target=target)
    return rows


def _memory_rows(
    raw_blocks: list[Block], fay_blocks: list[Block], side: str, *, target: bool
) -> list[Row]:
    name = f"overhead in-memory, {side} httpx client"
    rows = paired_rows(
        name,
        raw_blocks,
        fay_blocks,
        metrics=_RAW_HTTPX,
        limit=MEMORY_TARGET_RATIO if target else None,
        kinds=(("cpu", "CPU"),),
    )
    extra = median([f.cpu - r.cpu for f, r in zip(fay_blocks, raw_blocks, strict=True)])
    rows.insert(
        2,
        Row(
            benchmark=name,
            metric="CPU FayClient adds per call",
            value=extra * 1e6,
            unit="us",
            note="no socket, no server: httpx.MockTransport",
        ),
    )
    return rows


async def _status_body(base_url: str) -> bytes:
    """A real status answer of the emulator, for the in-memory transport to replay."""
    headers = {"Authorization": f"Bearer {API_KEY}"}
    async with _http(1) as http:
        created = await http.post(
            f"{base_url}/api/v1/conversations", json={"prompt": "benchmark"}, headers=headers
        )
        request_id = created.json()["data"]["request_id"]
        status = await http.get(
            f"{base_url}/api/v1/conversation/{request_id}/status", headers=headers
        )
        return status.content


def run(*, quick: bool) -> list[Row]:
    """Every overhead figure: on a socket at each concurrency, then in memory."""
    sizes = QUICK if quick else FULL
    rows: list[Row] = []
    with served_emulator() as base_url:
        for concurrency in sorted(sizes.calls):
            rows += anyio.run(_socket, base_url, concurrency, sizes)
        body = anyio.run(_status_body, base_url)
    rows += anyio.run(_in_memory, body, sizes)
    return rows
