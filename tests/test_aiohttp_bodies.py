"""Request bodies through AiohttpTransport from an httpx client of the user's."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import httpx
import pytest

from fay_async.aiohttp import AiohttpTransport

from .test_aiohttp_transport import CREATED, RawServer, answer_with

pytestmark = [pytest.mark.anyio, pytest.mark.real_time, pytest.mark.asyncio_only]


async def test_a_streamed_request_body_is_read_before_it_is_sent() -> None:
    """Such a client may hand over a request whose body has not been read yet."""

    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"prompt": '
        yield b'"streamed"}'

    body = json.dumps(CREATED).encode()
    with RawServer(answer_with(body)) as server:
        async with httpx.AsyncClient(transport=AiohttpTransport()) as http:
            response = await http.post(
                f"{server.base_url}/api/v1/conversations",
                content=chunks(),
                headers={"Content-Length": "22"},
            )
    assert response.json() == CREATED
    (request,) = server.requests
    assert request.endswith(b'\r\n\r\n{"prompt": "streamed"}')
