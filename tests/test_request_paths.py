"""The path of a request id: checked before anything is sent, every time, whatever its type."""

from __future__ import annotations

import httpx
import pytest

from fay_async import FayClient, exceptions

from . import _docs as docs

pytestmark = pytest.mark.anyio


class Recording(httpx.AsyncBaseTransport):
    def __init__(self) -> None:
        self.paths: list[str] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.paths.append(request.url.raw_path.decode())
        return httpx.Response(200, json=docs.STATUS_PENDING)


class Id(str):
    """A request id that is a str subclass (such as an enum or a typed id)."""


async def test_an_id_is_refused_every_time_it_is_given() -> None:
    seen = Recording()
    async with FayClient("key", transport=seen) as fay:
        for _ in range(2):
            with pytest.raises(exceptions.InvalidRequestIdError, match="contains '/'"):
                await fay.get_status("a/b")
        with pytest.raises(exceptions.InvalidRequestIdError, match="must be a string, got int"):
            await fay.get_status(123)  # type: ignore[arg-type]
        with pytest.raises(exceptions.InvalidRequestIdError, match="must be a string, got list"):
            await fay.get_status(["x"])  # type: ignore[arg-type]
    assert seen.paths == []


async def test_the_same_id_gives_the_same_path_for_each_action() -> None:
    seen = Recording()
    async with FayClient("key", transport=seen) as fay:
        await fay.get_status("req_1")
        await fay.get_status(Id("req_1"))
        await fay.get_status("req_1")
        await fay.get_status("id:colon@at")
        with pytest.raises(exceptions.UnexpectedResponseError):
            await fay.get_output("req_1")  # answered with a status: not an output
    assert seen.paths == [
        "/api/v1/conversation/req_1/status",
        "/api/v1/conversation/req_1/status",
        "/api/v1/conversation/req_1/status",
        "/api/v1/conversation/id%3Acolon%40at/status",
        "/api/v1/conversation/req_1/output",
    ]
