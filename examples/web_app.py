"""A small ASGI app (no framework) whose endpoint runs a research, and stops it when the
HTTP client goes away.

    GET /research?q=your+question[&timeout=SECONDS]  -> 200 {"request_id", "output"}
                                                       504 on timeout (stopped), 502 failed
    GET /active                                      -> the researches running now

The app opens one FayClient and one ResearchManager for its whole life (ASGI lifespan);
leaving it stops whatever is still running. While a research runs, the endpoint keeps
reading ``receive()``: an ``http.disconnect`` cancels the work, and the manager stops the
research on the service, so an abandoned page costs nothing more.

    python examples/web_app.py           # a demo: two requests, one abandoned half-way
    python examples/web_app.py --serve   # serve on http://127.0.0.1:8000 (needs uvicorn)

With FAY_API_KEY set it talks to the Fay API; without it, to an in-process emulator
where a minute of research passes in two seconds.
"""

from __future__ import annotations

import argparse
import json
import math
import os
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import parse_qs

import anyio

from fay_async import (
    FayClient,
    FayError,
    ResearchError,
    ResearchManager,
    ResearchTimeoutError,
)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


def default_client() -> FayClient:
    """The real API if FAY_API_KEY is set; else an in-process emulator, 30 times faster."""
    if os.environ.get("FAY_API_KEY"):
        return FayClient()
    from fay_async.testing import FayEmulator  # noqa: PLC0415 - only without a key

    return FayEmulator(speed=30.0).client()


class ResearchApp:
    """The ASGI 3 application; ``client_factory`` makes the FayClient at startup."""

    def __init__(self, client_factory: Callable[[], FayClient] = default_client) -> None:
        self.client_factory = client_factory
        self.manager: ResearchManager | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Dispatch one ASGI connection."""
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["type"] == "http":
            await self._http(scope, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        message = await receive()
        if message["type"] != "lifespan.startup":
            return
        try:
            client = self.client_factory()
        except FayError as error:  # no API key, bad base URL...
            await send({"type": "lifespan.startup.failed", "message": str(error)})
            return
        async with client as fay, ResearchManager(fay) as manager:
            self.manager = manager
            await send({"type": "lifespan.startup.complete"})
            while (await receive())["type"] != "lifespan.shutdown":
                pass
            self.manager = None
        # Leaving the manager has stopped every research still running.
        await send({"type": "lifespan.shutdown.complete"})

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        manager = self.manager
        if manager is None:
            await _json(send, 503, {"error": "the app is not started"})
        elif scope["method"] != "GET":
            await _json(send, 405, {"error": "only GET is supported"})
        elif scope["path"] == "/active":
            active = [
                {"request_id": r.request_id, "prompt": r.prompt, "status": str(r.status)}
                for r in manager.active_requests.values()
            ]
            await _json(send, 200, {"active": active})
        elif scope["path"] == "/research":
            await self._research(manager, scope, receive, send)
        else:
            await _json(send, 404, {"error": "not found"})

    async def _research(
        self, manager: ResearchManager, scope: Scope, receive: Receive, send: Send
    ) -> None:
        query = parse_qs(scope.get("query_string", b"").decode())
        prompt = query.get("q", [""])[0]
        try:
            timeout = float(query.get("timeout", ["300"])[0])
        except ValueError:
            timeout = math.nan
        if not prompt.strip() or not math.isfinite(timeout) or timeout <= 0:
            await _json(send, 400, {"error": "give ?q=question and an optional timeout > 0"})
            return

        answer: tuple[int, dict[str, Any]] | None = None
        async with anyio.create_task_group() as tg:

            async def run() -> None:
                nonlocal answer
                answer = await _run_research(manager, prompt, timeout)
                tg.cancel_scope.cancel()  # done: stop listening for a disconnect

            async def hang_up() -> None:
                while (await receive())["type"] != "http.disconnect":
                    pass
                # The client left: cancelling run() makes the manager stop the research.
                tg.cancel_scope.cancel()

            tg.start_soon(run)
            tg.start_soon(hang_up)
        if answer is not None:
            await _json(send, *answer)


async def _run_research(
    manager: ResearchManager,
    prompt: str,
    timeout: float,  # noqa: ASYNC109 - the request's time limit
) -> tuple[int, dict[str, Any]]:
    try:
        result = await manager.research(prompt, timeout=timeout)
    except ResearchTimeoutError as error:
        body = {"error": "timeout", "request_id": error.request_id, "stopped": error.stopped}
        return 504, body
    except ResearchError as error:
        return 502, {"error": str(error), "request_id": error.request_id}
    except FayError as error:
        return 502, {"error": str(error)}
    return 200, {"request_id": result.request_id, "output": result.text}


async def _json(send: Send, status: int, body: dict[str, Any]) -> None:
    payload = json.dumps(body).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(payload))]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


# --- driving the app in-process (the demo, and the tests) -----------------------------------


@asynccontextmanager
async def running(app: ResearchApp) -> AsyncIterator[ResearchApp]:
    """Run the app's lifespan around the block, as an ASGI server would."""
    to_app, app_inbox = anyio.create_memory_object_stream[Message](2)
    app_outbox, from_app = anyio.create_memory_object_stream[Message](2)

    async def send(message: Message) -> None:
        await app_outbox.send(message)

    failure: str | None = None
    async with to_app, app_inbox, app_outbox, from_app, anyio.create_task_group() as tg:
        tg.start_soon(app, {"type": "lifespan"}, app_inbox.receive, send)
        await to_app.send({"type": "lifespan.startup"})
        reply = await from_app.receive()
        if reply["type"] != "lifespan.startup.complete":
            failure = str(reply.get("message", reply["type"]))
        else:
            try:
                yield app
            finally:
                with anyio.CancelScope(shield=True):
                    await to_app.send({"type": "lifespan.shutdown"})
                    await from_app.receive()  # lifespan.shutdown.complete
    if failure is not None:
        raise RuntimeError(f"the app did not start: {failure}")


async def get(
    app: ResearchApp, target: str, *, disconnect_after: float | None = None
) -> tuple[int, dict[str, Any]] | None:
    """One GET request; None if the client hung up (after ``disconnect_after`` s)."""
    path, _, query = target.partition("?")
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "query_string": query.encode(),
        "headers": [(b"host", b"localhost")],
    }
    hung_up = anyio.Event()
    messages: list[Message] = []
    requested = False

    async def receive() -> Message:
        nonlocal requested
        if not requested:
            requested = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await hung_up.wait()
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        messages.append(message)

    async with anyio.create_task_group() as tg:
        if disconnect_after is not None:

            async def hang_up() -> None:
                await anyio.sleep(disconnect_after)
                hung_up.set()

            tg.start_soon(hang_up)
        await app(scope, receive, send)
        tg.cancel_scope.cancel()
    if not messages:
        return None
    body = b"".join(m.get("body", b"") for m in messages if m["type"] == "http.response.body")
    return int(messages[0]["status"]), json.loads(body)


async def main(client_factory: Callable[[], FayClient] = default_client) -> list[Any]:
    """The demo: one request answered, one abandoned half-way (its research is stopped)."""
    app = ResearchApp(client_factory)
    outcomes: list[Any] = []
    async with running(app):
        answered = get(app, "/research?q=Which+heat+pumps+work+below+-20C%3F&timeout=300")
        abandoned = get(app, "/research?q=A+question+nobody+waits+for", disconnect_after=1.0)
        async with anyio.create_task_group() as tg:

            async def call(request: Awaitable[Any], label: str) -> None:
                outcome = await request
                outcomes.append((label, outcome))
                print(f"{label}: {outcome if outcome is None else outcome[0]}")

            tg.start_soon(call, answered, "answered")
            tg.start_soon(call, abandoned, "abandoned")
        print("still running:", (await get(app, "/active") or (0, {}))[1])
    return outcomes


def _serve() -> None:
    import uvicorn  # noqa: PLC0415 - optional: pip install uvicorn

    uvicorn.run(ResearchApp(), host="127.0.0.1", port=8000, lifespan="on")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="A research endpoint that stops on disconnect")
    parser.add_argument("--serve", action="store_true", help="serve on 127.0.0.1:8000")
    if parser.parse_args().serve:
        _serve()
    else:
        anyio.run(main)
