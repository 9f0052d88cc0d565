"""examples/fastapi_app.py: in-process through its lifespan, and under a real uvicorn."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx
import pytest

from fay_async import ResearchManager, ResearchStatus
from fay_async.testing import FayEmulator, Scenario

from ._emulated import running
from ._examples import EXAMPLES, load_example
from ._served import eventually
from .test_asgi import serve
from .test_examples import README

S = ResearchStatus


def scenario(prompt: str) -> Scenario:
    if prompt.startswith("quick"):
        return Scenario(pending_s=2, processing_s=3)
    if prompt == "doomed":
        return Scenario(pending_s=2, processing_s=3, outcome=S.FAILED)
    return Scenario(pending_s=3600, processing_s=600)


@asynccontextmanager
async def app_on(emulator: FayEmulator) -> AsyncIterator[Any]:
    """The example's app on ``emulator``, started: its lifespan runs around the block."""
    app = load_example("fastapi_app").create_app(emulator.client)
    async with app.router.lifespan_context(app):
        yield app


def test_the_readme_fastapi_app_is_the_example_file() -> None:
    code = (EXAMPLES / "fastapi_app.py").read_text(encoding="utf-8")
    body = code.split('"""', 2)[2].lstrip("\n")
    assert f"```python\n{body}```" in README.read_text(encoding="utf-8")


@pytest.mark.anyio
async def test_every_endpoint_of_the_example() -> None:
    emulator = FayEmulator(scenario=scenario, seed=6)
    async with (
        app_on(emulator) as app,
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://app") as http,
    ):
        answer = await http.post("/research", json={"prompt": "quick one"})
        assert answer.status_code == 200
        result = answer.json()
        assert result["info"]["status"] == "COMPLETED"
        request_id = result["info"]["request_id"]
        assert result["output"]["output"] == emulator.research(request_id).output

        answer = await http.post("/research", json={"prompt": "slow", "timeout": 30})
        assert answer.status_code == 504
        assert "stopped" in answer.json()["error"]
        assert (await http.post("/research", json={"prompt": "doomed"})).status_code == 502

        started = await http.post("/researches", json={"prompt": "slow two"})
        assert started.status_code == 202
        request_id = started.json()["request_id"]
        status = await http.get(f"/researches/{request_id}")
        assert (status.status_code, status.json()["status"]) == (200, "PENDING")
        stopped = await http.delete(f"/researches/{request_id}")
        assert (stopped.status_code, stopped.json()["status"]) == (200, "STOPPED")
        assert (await http.delete(f"/researches/{request_id}")).status_code == 404
        unknown = "00000000-0000-4000-8000-000000000000"
        assert (await http.get(f"/researches/{unknown}")).status_code == 404
        assert (await http.get("/researches/no%20spaces")).status_code == 400

        quick = (await http.post("/researches", json={"prompt": "quick two"})).json()
        events = await http.get(f"/researches/{quick['request_id']}/events")
        assert events.headers["content-type"].startswith("text/event-stream")
        infos = [json.loads(line[6:]) for line in events.text.splitlines() if line]
        assert {i["request_id"] for i in infos} == {quick["request_id"]}
        assert infos[-1]["status"] == "COMPLETED"  # each change once, until the end

        left = (await http.post("/researches", json={"prompt": "slow three"})).json()
        assert running(emulator) == [left["request_id"]]
    # Closing the app (its lifespan) stopped the research nobody asked about again.
    assert emulator.research(left["request_id"]).status is S.STOPPED
    assert running(emulator) == []


@pytest.mark.anyio
@pytest.mark.real_time
@pytest.mark.asyncio_only
async def test_a_client_leaving_the_example_under_uvicorn_stops_its_research() -> None:
    emulator = FayEmulator(scenario=scenario, seed=7)
    body = json.dumps({"prompt": "slow"}).encode()
    head = (
        "POST /research HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    async with app_on(emulator) as app, serve(app) as port:
        async with await anyio.connect_tcp("127.0.0.1", port) as stream:
            await stream.send(head + body)
            await eventually(lambda: len(running(emulator)) == 1)
        await eventually(lambda: running(emulator) == [])
    [research] = emulator.researches()
    assert research.status is S.STOPPED


def readme_block(containing: str) -> str:
    blocks = README.read_text(encoding="utf-8").split("```python\n")[1:]
    [block] = [b.split("```", 1)[0] for b in blocks if containing in b]
    return block


@pytest.mark.anyio
async def test_the_readme_hand_over_snippet() -> None:
    namespace: dict[str, Any] = {}
    exec(readme_block("async def hand_over"), namespace)  # noqa: S102 - the README's own code
    emulator = FayEmulator(scenario=scenario, seed=8)
    async with emulator.client() as fay, ResearchManager(fay) as manager:
        request_id = await manager.start_research("slow")
        answer = await namespace["hand_over"](fay, manager, request_id)
        assert json.loads(answer)["status"] == "PENDING"
        assert request_id not in manager.active_requests
    assert running(emulator) == [request_id]  # left to whoever took it over
    assert emulator.call_counts()["status"] == 2
