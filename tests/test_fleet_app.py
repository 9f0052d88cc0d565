"""examples/fleet_app.py under gunicorn with two workers, sharing one key through Redis.

What one worker per process gets wrong (a DELETE that lands on the other worker answers
404, a cancel-all stops one worker's share, the two workers together draw 429s) is what
this checks, against the emulator served on a loopback socket with the Free tier's
limits, an emulated hour passing in one real second, and its webhooks delivered to the
app. Real processes, real sockets, a real redis-server.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from fay_async import ResearchStatus
from fay_async.testing import DEFAULT_API_KEY, FayEmulator, Scenario, serve

from .test_webapp_shutdown import free_port, process, until_ready

pytestmark = [pytest.mark.anyio, pytest.mark.real_time, pytest.mark.asyncio_only]

SECRET = "placeholder"
HOUR = 3600.0
#: The emulator's speed: one emulated hour per real second.
SPEED = HOUR
#: The app's budget window is twice the emulator's hour: a slot is counted when it is
#: taken, the emulator counts the call when it arrives. With three servers, the emulator
#: and this test on two busy cores, a call was seen to arrive 300 ms after its slot: five
#: emulated minutes at this speed, which an hour's window at real speed absorbs easily.
APP_SPEED = SPEED / 2


def scenario(prompt: str) -> Scenario:
    if prompt.startswith("quick"):
        return Scenario(pending_s=0.3 * HOUR, processing_s=0.3 * HOUR)  # 0.6 s
    return Scenario(pending_s=1000 * HOUR, processing_s=HOUR)  # longer than the test


def gunicorn(port: int) -> list[str]:
    """The README's command: gunicorn with uvicorn workers (two of them)."""
    return [
        *(sys.executable, "-m", "gunicorn", "tests.fleet_server:app"),
        *("-k", "uvicorn.workers.UvicornWorker", "-w", "2", "-b", f"127.0.0.1:{port}"),
        *("--log-level", "warning"),
    ]


def uvicorn(port: int) -> list[str]:
    """Another replica: one uvicorn process."""
    return [
        *(sys.executable, "-m", "uvicorn", "tests.fleet_server:app"),
        *("--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"),
    ]


def prompts(tag: str, count: int) -> list[str]:
    return [f"question {tag}{i}" for i in range(count)]


async def start(*batches: tuple[httpx.AsyncClient, list[str]]) -> list[list[str]]:
    """POST every prompt of every batch at once, each to its replica; the request ids."""
    made: list[list[str]] = [[] for _ in batches]

    async def one(http: httpx.AsyncClient, prompt: str, into: list[str]) -> None:
        answer = await http.post("/researches", json={"prompt": prompt})
        assert answer.status_code == 202, answer.text
        into.append(answer.json()["request_id"])

    async with anyio.create_task_group() as tg:
        for (http, batch), into in zip(batches, made, strict=True):
            for prompt in batch:
                tg.start_soon(one, http, prompt, into)
    return made


async def test_replicas_act_as_one_app(tmp_path: Path, redis_url: str) -> None:
    ports = free_port(), free_port()
    emulator = FayEmulator(
        scenario=scenario,
        rate_limits="free",
        speed=SPEED,
        # Fay's webhooks all reach the first replica, whoever waits for them.
        webhook_url=f"http://127.0.0.1:{ports[0]}/webhooks/fay",
        webhook_secret=SECRET,
    )
    async with serve(emulator) as base_url:
        env = {
            **os.environ,
            "FAY_BASE_URL": base_url,
            "FAY_API_KEY": DEFAULT_API_KEY,
            # The app uses the default key prefix: database 1 is this test's alone.
            "FAY_REDIS_URL": f"{redis_url.rsplit('/', 1)[0]}/1",
            "FAY_WEBHOOK_SECRET": SECRET,
            "FLEET_SPEED": str(APP_SPEED),
        }
        with (
            process(gunicorn(ports[0]), env, tmp_path / "gunicorn.log") as first,
            process(uvicorn(ports[1]), env, tmp_path / "uvicorn.log") as second,
        ):
            await until_ready(ports[0], first)
            await until_ready(ports[1], second)
            # A new connection per request, so that both of gunicorn's workers take some.
            # Creates wait for their budget slot: seconds, at this speed.
            options: dict[str, Any] = {
                "limits": httpx.Limits(max_keepalive_connections=0),
                "timeout": 60,
            }
            async with (
                httpx.AsyncClient(base_url=f"http://127.0.0.1:{ports[0]}", **options) as a,
                httpx.AsyncClient(base_url=f"http://127.0.0.1:{ports[1]}", **options) as b,
            ):
                # Started on one replica, cancelled through the other, one by one.
                on_a, on_b = await start((a, prompts("a", 4)), (b, prompts("b", 4)))
                for other, request_id in [*((b, i) for i in on_a), *((a, i) for i in on_b)]:
                    answer = await other.delete(f"/researches/{request_id}")
                    assert answer.status_code == 200, answer.text
                    assert answer.json()["status"] == "STOPPED"
                # Cancel all, fleet-wide, from one replica.
                started = [
                    i
                    for ids in await start((a, prompts("c", 7)), (b, prompts("d", 6)))
                    for i in ids
                ]
                answer = await b.delete("/researches")
                assert answer.status_code == 200, answer.text
                assert answer.json() == dict.fromkeys(started, "STOPPED")
                # A research awaited on the second replica ends on a webhook the first one
                # received: no status check, no output call.
                answer = await b.post("/research", json={"prompt": "quick one"})
                assert answer.status_code == 200, answer.text
                quick = answer.json()["info"]["request_id"]
                assert answer.json()["output"]["output"] == emulator.research(quick).output
                # Thirty creates at once on the Free tier's 10 an hour, through both
                # replicas: they wait for their turn, and not one draws a 429.
                burst = [
                    i
                    for ids in await start((a, prompts("e", 15)), (b, prompts("f", 15)))
                    for i in ids
                ]
                answer = await a.delete("/researches")
                assert sorted(answer.json()) == sorted(burst)
            statuses = {r.request_id: r.status for r in emulator.researches()}
    calls = emulator.calls()
    assert [(c.endpoint, c.time) for c in calls if c.status_code == 429] == []
    assert sum(c.endpoint == "create" for c in calls) == 8 + 13 + 1 + 30
    assert statuses.pop(quick) is ResearchStatus.COMPLETED
    assert set(statuses.values()) == {ResearchStatus.STOPPED}
    assert [c for c in calls if c.request_id == quick and c.endpoint != "create"] == []
    # The quick research's events reached the first replica, which took them. (Events of
    # the researches stopped last may reach replicas already gone: not counted.)
    assert {d.status_code for d in emulator.deliveries() if d.request_id == quick} == {200}
