"""What ``CancelOnDisconnect`` costs a request that does not disconnect.

Three figures, each comparing the same Starlette endpoint with and without the
middleware, the sides taking turns in blocks (the order flipping from pair to pair):

- **served**: uvicorn (h11) on 127.0.0.1 in this event loop, one keep-alive connection per
  side written by hand; wall time per request, client and server included. This is the
  overhead a deployed app sees; the target applies here.
- **served, one client call**: the same, with an endpoint that does what an app of this
  library's users does: one ``FayClient.get_status`` (on an in-process emulator). Its
  anyio work per request is work the middleware's cancel scope shares.
- **in-process**: the app called directly with a receive/send pair that behaves like
  uvicorn's; CPU per request. No server: what is left is the middleware's own work (a
  cancel scope, a timer, the receive/send wrappers), set against a framework's cheapest
  request.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import attrs
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from fay_async import FayClient
from fay_async.asgi import CancelOnDisconnect
from fay_async.testing import FayEmulator, Scenario
from fay_async.testing._server import bind_socket

from ._common import Row, check, median, quartiles

TARGET_RATIO = 1.05

REQUEST = b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n"


@attrs.frozen(kw_only=True)
class Sizes:
    """Requests per block and pairs of blocks, served and in-process."""

    served_requests: int
    served_pairs: int
    memory_requests: int
    memory_pairs: int


FULL = Sizes(served_requests=300, served_pairs=30, memory_requests=2000, memory_pairs=30)
QUICK = Sizes(served_requests=5, served_pairs=2, memory_requests=20, memory_pairs=2)


async def _hello(_request: Request) -> PlainTextResponse:
    return PlainTextResponse("ok")


def _app() -> Starlette:
    return Starlette(routes=[Route("/", _hello)])


def _status_app(fay: FayClient, request_id: str) -> Starlette:
    """What an app of this library's users does per request: one client call."""

    async def status(_request: Request) -> PlainTextResponse:
        info = await fay.get_status(request_id)
        return PlainTextResponse(info.status.value)

    return Starlette(routes=[Route("/", status)])


Block = Callable[[int], Awaitable[None]]


async def _pairs(bare: Block, watched: Block, requests: int, pairs: int, clock: Any) -> Any:
    """Per-request seconds of each side per block, and the per-pair ratios."""
    times: dict[str, list[float]] = {"bare": [], "watched": []}
    ratios: list[float] = []
    await bare(requests)  # warm both sides up
    await watched(requests)
    gc.collect()
    gc.freeze()
    try:
        for pair in range(pairs):
            order = [("bare", bare), ("watched", watched)]
            if pair % 2:
                order.reverse()
            got: dict[str, float] = {}
            for name, run in order:
                gc.collect()
                started = clock()
                await run(requests)
                got[name] = (clock() - started) / requests
                times[name].append(got[name])
            ratios.append(got["watched"] / got["bare"])
    finally:
        gc.unfreeze()
    return times, ratios


def _rows(name: str, what: str, unit_scale: float, times: Any, ratios: list[float]) -> list[Row]:
    bare, watched = median(times["bare"]), median(times["watched"])
    ratio = median(ratios)
    low, high = quartiles(ratios)
    return [
        Row(benchmark=name, metric=f"no middleware, {what}", value=bare * unit_scale, unit="us"),
        Row(
            benchmark=name,
            metric=f"CancelOnDisconnect, {what}",
            value=watched * unit_scale,
            unit="us",
        ),
        Row(
            benchmark=name,
            metric="with / without",
            value=ratio,
            unit="x",
            note=f"IQR {low:.3f}-{high:.3f} over {len(ratios)} pairs",
        ),
    ]


# --- served ---------------------------------------------------------------------------------


class _Connection:
    """One keep-alive HTTP/1.1 connection that sends the same GET again and again."""

    def __init__(self, stream: anyio.abc.SocketStream) -> None:
        self.stream = stream
        self.size = 0  # bytes of one response (its Date header is always as long)

    async def request(self) -> None:
        await self.stream.send(REQUEST)
        data = b""
        while self.size == 0 or len(data) < self.size:
            data += await self.stream.receive()
            if self.size == 0 and b"\r\n\r\n" in data:
                head = data.partition(b"\r\n\r\n")[0]
                length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
                self.size = len(head) + 4 + length
        if not data.startswith(b"HTTP/1.1 200 "):
            raise RuntimeError(f"unexpected answer: {data[:60]!r}")

    async def block(self, requests: int) -> None:
        for _ in range(requests):
            await self.request()


async def _served(
    sizes: Sizes, make_app: Callable[[], Starlette] = _app, name: str = "asgi served"
) -> list[Row]:
    servers = []
    connections = []
    async with anyio.create_task_group() as tg:
        for app in (make_app(), CancelOnDisconnect(make_app())):
            config = uvicorn.Config(app, lifespan="off", log_level="warning", http="h11")
            server = uvicorn.Server(config)
            sock = bind_socket("127.0.0.1", 0)
            tg.start_soon(server.serve, [sock])
            while not server.started:  # noqa: ASYNC110 - uvicorn has no event for it
                await anyio.sleep(0.005)
            servers.append(server)
            stream = await anyio.connect_tcp("127.0.0.1", sock.getsockname()[1])
            connections.append(_Connection(stream))
        try:
            bare, watched = connections
            times, ratios = await _pairs(
                bare.block,
                watched.block,
                sizes.served_requests,
                sizes.served_pairs,
                time.perf_counter,
            )
        finally:
            for connection in connections:
                await connection.stream.aclose()
            for server in servers:
                server.should_exit = True
    rows = _rows(name, "wall time per request", 1e6, times, ratios)
    rows[-1] = attrs.evolve(
        rows[-1], target=f"<= {TARGET_RATIO}", ok=check(rows[-1].value, TARGET_RATIO)
    )
    return rows


# --- in-process -----------------------------------------------------------------------------

SCOPE: dict[str, Any] = {
    "type": "http",
    "asgi": {"version": "3.0", "spec_version": "2.3"},
    "http_version": "1.1",
    "method": "GET",
    "scheme": "http",
    "path": "/",
    "raw_path": b"/",
    "query_string": b"",
    "root_path": "",
    "headers": [(b"host", b"bench")],
    "client": ("127.0.0.1", 50000),
    "server": ("127.0.0.1", 8000),
}


async def _call(app: Any) -> None:
    """One request the way uvicorn serves it: receive() says http.disconnect once the
    response is complete."""
    complete = anyio.Event()
    requested = False

    async def receive() -> dict[str, Any]:
        nonlocal requested
        if not requested:
            requested = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await complete.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.body" and not message.get("more_body", False):
            complete.set()

    await app(dict(SCOPE), receive, send)


async def _in_process(sizes: Sizes) -> list[Row]:
    bare_app, watched_app = _app(), CancelOnDisconnect(_app())

    async def bare(requests: int) -> None:
        for _ in range(requests):
            await _call(bare_app)

    async def watched(requests: int) -> None:
        for _ in range(requests):
            await _call(watched_app)

    times, ratios = await _pairs(
        bare, watched, sizes.memory_requests, sizes.memory_pairs, time.process_time
    )
    rows = _rows("asgi in-process", "CPU per request", 1e6, times, ratios)
    added = median([w - b for w, b in zip(times["watched"], times["bare"], strict=True)])
    rows.append(
        Row(
            benchmark="asgi in-process",
            metric="CPU the middleware adds per request",
            value=added * 1e6,
            unit="us",
            note="no socket, no server: a cancel scope, a timer, two wrappers",
        )
    )
    return rows


def run(*, quick: bool = False) -> list[Row]:
    """The rows: served (with the target), then in-process."""
    sizes = QUICK if quick else FULL

    async def main() -> list[Row]:
        emulator = FayEmulator(scenario=Scenario(pending_s=1e9, processing_s=1.0))
        async with emulator.client() as fay:
            request_id = (await fay.create_conversation("benchmark")).request_id
            realistic = await _served(
                sizes, lambda: _status_app(fay, request_id), "asgi served, one client call"
            )
        return [*await _served(sizes), *realistic, *await _in_process(sizes)]

    rows: list[Row] = anyio.run(main)
    return rows
