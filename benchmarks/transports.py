"""FayClient on ``AiohttpTransport`` and on its default httpx transport, against raw aiohttp.

All three make the same status GET against one static HTTP server in a child process
(the same answer to every request, next to no work per request), so what differs is the
client's own cost. Raw aiohttp is one ``aiohttp.ClientSession`` with ``json.loads`` of the
body; FayClient adds its request id check, deadline, retry loop and model decoding on top
of either transport. Each FayClient side is paired with raw aiohttp in alternating blocks
(the order flipping per pair), as in ``overhead.py``; the ratio is the median of the
per-pair ratios. Asyncio only: aiohttp needs it.
"""

from __future__ import annotations

import json

import aiohttp
import anyio
import attrs

from fay_async import FayClient
from fay_async.aiohttp import AiohttpTransport

from ._common import API_KEY, Row, static_server
from .overhead import Block, Call, _pairs, paired_rows

#: FayClient on AiohttpTransport against raw aiohttp, at every concurrency.
TARGET_RATIO = 1.5
REQUEST_ID = "req_static"


@attrs.frozen(kw_only=True)
class Sizes:
    """Calls per block and pairs of blocks, by concurrency; warm-up calls per connection."""

    calls: dict[int, int]
    pairs: dict[int, int]
    warm: int


FULL = Sizes(calls={1: 100, 32: 640}, pairs={1: 20, 32: 12}, warm=8)
QUICK = Sizes(calls={1: 5, 32: 32}, pairs={1: 2, 32: 2}, warm=0)


def _rows(name: str, side: str, raw: list[Block], fay: list[Block], *, target: bool) -> list[Row]:
    metrics = (
        f"raw aiohttp, {{what}} per call (paired with {side})",
        f"FayClient on {side}, {{what}} per call",
        f"FayClient on {side} / raw aiohttp ({{kind}})",
    )
    return paired_rows(name, raw, fay, metrics=metrics, limit=TARGET_RATIO if target else None)


async def _measure(base_url: str, concurrency: int, sizes: Sizes) -> list[Row]:
    url = f"{base_url}/api/v1/conversation/{REQUEST_ID}/status"
    headers = {"Authorization": f"Bearer {API_KEY}"}
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        FayClient(
            API_KEY,
            base_url=base_url,
            transport=AiohttpTransport(max_connections=concurrency),
        ) as on_aiohttp,
        FayClient(API_KEY, base_url=base_url) as on_httpx,
    ):

        async def raw() -> object:
            async with session.get(url, headers=headers) as response:
                return json.loads(await response.read())["data"]

        def fay_call(fay: FayClient) -> Call:
            async def call() -> object:
                return await fay.get_status(REQUEST_ID)

            return call

        name = f"aiohttp c={concurrency}"
        calls, pairs = sizes.calls[concurrency], sizes.pairs[concurrency]
        raw_a, fay_a = await _pairs(
            raw, fay_call(on_aiohttp), calls, pairs, concurrency, sizes.warm
        )
        raw_h, fay_h = await _pairs(raw, fay_call(on_httpx), calls, pairs, concurrency, sizes.warm)
    return [
        *_rows(name, "AiohttpTransport", raw_a, fay_a, target=True),
        *_rows(name, "httpx (default)", raw_h, fay_h, target=False),
    ]


def run(*, quick: bool) -> list[Row]:
    """FayClient on each transport against raw aiohttp, at concurrency 1 and 32."""
    sizes = QUICK if quick else FULL
    rows: list[Row] = []
    with static_server() as base_url:
        for concurrency in sorted(sizes.calls):
            rows += anyio.run(_measure, base_url, concurrency, sizes, backend="asyncio")
    return rows
