"""The webhook receiver under a real uvicorn, and mounted in Starlette and FastAPI apps.

Served tests run uvicorn in this event loop (asyncio only: uvicorn has no trio server) on
the real clock, over a loopback socket; the app tests run on asyncio and trio.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import Mount, Route

from fay_async.webhooks import WebhookEvent, WebhookReceiver

from ._served import eventually, served
from .test_webhooks import OUTPUT_EVENT, SECRET, STATUS_EVENT, TEST_EVENT, body_of, sign


@asynccontextmanager
async def serve(app: Any, *, lifespan: str) -> AsyncIterator[str]:
    """Serve ``app`` with uvicorn on 127.0.0.1 in this event loop; yield its base URL."""
    async with served(app, lifespan=lifespan) as port:
        yield f"http://127.0.0.1:{port}"


def signed(event: dict[str, Any]) -> dict[str, Any]:
    body = body_of(event)
    return {"content": body, "headers": {"X-Fay-Signature": sign(body)}}


@pytest.mark.anyio
@pytest.mark.real_time
@pytest.mark.asyncio_only
@pytest.mark.parametrize("lifespan", ["on", "off"])
async def test_under_uvicorn_fay_has_its_answer_before_the_handler_ends(lifespan: str) -> None:
    release = anyio.Event()
    started: list[str] = []
    done: list[str] = []

    async def slow(event: WebhookEvent) -> None:
        started.append(event.id)
        await release.wait()
        done.append(event.id)

    receiver = WebhookReceiver(secret=SECRET, on_event=slow)
    async with serve(receiver, lifespan=lifespan) as url, httpx.AsyncClient(base_url=url) as http:
        with anyio.fail_after(2):  # Fay gives a handler 5 s; this one would take forever
            first = await http.post("/", **signed(STATUS_EVENT))
            again = await http.post("/", **signed(STATUS_EVENT))
        assert (first.status_code, first.text) == (200, "received\n")
        assert (again.status_code, again.text) == (200, "already received\n")
        await eventually(lambda: started == ["evt_1a2b3c"])
        assert done == []
        release.set()
        await eventually(lambda: done == ["evt_1a2b3c"])


@pytest.mark.anyio
@pytest.mark.real_time
@pytest.mark.asyncio_only
async def test_under_uvicorn_each_refusal_by_status_code() -> None:
    handled: list[str] = []
    receiver = WebhookReceiver(secret=SECRET, on_event=lambda e: handled.append(e.id), max_body=99)
    small = {"id": "e1", "type": "test", "created": 1, "data": {}}
    body = body_of(small)
    async with serve(receiver, lifespan="auto") as url, httpx.AsyncClient(base_url=url) as http:
        assert (await http.post("/", content=body)).status_code == 400
        wrong = {"X-Fay-Signature": sign(body, "another-secret")}
        assert (await http.post("/", content=body, headers=wrong)).status_code == 401
        too_large = await http.post("/", **signed(STATUS_EVENT))
        assert (too_large.status_code, too_large.text) == (413, "the body is over 99 bytes\n")
        get = await http.get("/")
        assert (get.status_code, get.headers["allow"]) == (405, "POST")
        assert (await http.post("/", **signed(small))).status_code == 200
        await eventually(lambda: handled == ["e1"])


@pytest.mark.anyio
async def test_mounted_in_a_starlette_app() -> None:
    handled: list[str] = []
    receiver = WebhookReceiver(secret=SECRET, on_event=lambda e: handled.append(e.id))
    app = Starlette(
        routes=[
            Mount("/webhooks/fay", app=receiver),
            Route("/hooks/fay", receiver, methods=["POST"]),
        ]
    )
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://app") as http:
        answer = await http.post("/webhooks/fay/", **signed(STATUS_EVENT))
        assert (answer.status_code, answer.text) == (200, "received\n")
        # Starlette redirects the bare path of a mount (307 keeps the method and the body):
        # register the URL with its trailing slash, or use a Route as below.
        bare = await http.post("/webhooks/fay", **signed(OUTPUT_EVENT))
        assert (bare.status_code, bare.headers["location"]) == (307, "http://app/webhooks/fay/")
        routed = await http.post("/hooks/fay", **signed(OUTPUT_EVENT))
        assert routed.status_code == 200
        assert (await http.get("/hooks/fay")).status_code == 405
        assert (await http.post("/webhooks/fay/", content=b"{}")).status_code == 400
    assert handled == ["evt_1a2b3c", "evt_4d5e6f"]


# --- the README's FastAPI app (examples/fastapi_webhooks.py) ---------------------------------


def test_the_readme_webhook_app_is_the_example_file() -> None:
    from ._examples import EXAMPLES
    from .test_examples import README

    code = (EXAMPLES / "fastapi_webhooks.py").read_text(encoding="utf-8")
    body = code.split('"""', 2)[2].lstrip("\n")
    assert f"```python\n{body}```" in README.read_text(encoding="utf-8")


@pytest.mark.anyio
async def test_the_example_fastapi_app_receives_events(monkeypatch: pytest.MonkeyPatch) -> None:
    from ._examples import load_example

    monkeypatch.setenv("FAY_WEBHOOK_SECRET", SECRET)
    example = load_example("fastapi_webhooks")
    transport = httpx.ASGITransport(app=example.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://app") as http:
        request_id = STATUS_EVENT["data"]["request_id"]
        for event in (TEST_EVENT, STATUS_EVENT):
            assert (await http.post("/webhooks/fay/", **signed(event))).status_code == 200
        missing = await http.get(f"/results/{request_id}")
        assert (missing.status_code, missing.json()) == (
            404,
            {"detail": "no result for this research yet"},
        )
        assert (await http.post("/webhooks/fay/", **signed(OUTPUT_EVENT))).status_code == 200
        assert (await http.post("/webhooks/fay/", content=b"{}")).status_code == 400
        state = (await http.get(f"/results/{request_id}")).json()
    assert state == {
        "request_id": request_id,
        "status": "COMPLETED",
        "output": OUTPUT_EVENT["data"]["output"],
        "error_message": None,
    }
