"""fay_async.asgi under a real uvicorn with raw-socket clients, and at the ASGI level.

Served tests run uvicorn in this event loop (asyncio only: uvicorn has no trio server) on
the real clock, driven by clients that write HTTP/1.1 by hand and close their socket
mid-request. ASGI-level tests run on asyncio and trio, on virtual time.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import anyio
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from fay_async import PollPolicy, ResearchManager, ResearchStatus
from fay_async.asgi import READ_AHEAD, CancelOnDisconnect, cancel_on_disconnect
from fay_async.testing import FayEmulator, Scenario

from ._emulated import running
from ._served import eventually, served

Message = dict[str, Any]
#: Concurrent raw-socket clients of the served research tests.
CLIENTS = 100
FAST_POLLS = PollPolicy(
    pending_first=0.01, pending_max=0.02, processing_first=0.01, processing_max=0.02, jitter=0
)


# --- a real server and raw clients ----------------------------------------------------------


def serve(app: Any) -> AbstractAsyncContextManager[int]:
    """``app`` under uvicorn; leaving does not wait for the requests still in flight."""
    return served(app, force_exit=True)


def request_bytes(method: str, target: str, body: bytes = b"") -> bytes:
    head = f"{method} {target} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n"
    if body or method == "POST":
        head += f"Content-Length: {len(body)}\r\n"
    return head.encode() + b"\r\n" + body


async def fetch(port: int, method: str, target: str, body: bytes = b"") -> bytes:
    """The raw response to one request (the server closes the connection after it)."""
    async with await anyio.connect_tcp("127.0.0.1", port) as stream:
        data = request_bytes(method, target, body)
        for start in range(0, len(data), 50_000):  # a large body goes in several writes
            await stream.send(data[start : start + 50_000])
        chunks = []
        try:
            while True:
                chunks.append(await stream.receive())
        except (anyio.EndOfStream, anyio.BrokenResourceError):
            pass
    return b"".join(chunks)


async def hang_up(port: int, target: str, *, when: Callable[[], Any]) -> None:
    """Send a GET, wait for ``when()`` (an awaitable), then close the socket unanswered."""
    async with await anyio.connect_tcp("127.0.0.1", port) as stream:
        await stream.send(request_bytes("GET", target))
        await when()


def without_date(raw: bytes) -> bytes:
    return re.sub(rb"\r\ndate: [^\r]*", b"", raw, flags=re.IGNORECASE)


# --- cancellation under uvicorn -------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.real_time
@pytest.mark.asyncio_only
async def test_disconnected_handlers_are_cancelled_the_others_complete() -> None:
    started: set[str] = set()
    cancelled: set[str] = set()
    completed: set[str] = set()
    release = anyio.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        name = scope["path"].strip("/")
        started.add(name)
        try:
            await release.wait()
        except anyio.get_cancelled_exc_class():
            cancelled.add(name)
            raise
        headers = [(b"content-length", b"%d" % len(name))]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": name.encode()})
        completed.add(name)

    rng = random.Random(7)  # noqa: S311 - test timings
    names = [f"r{i}" for i in range(24)]
    leaving = set(rng.sample(names, 12))
    answers: dict[str, bytes] = {}

    async def client(port: int, name: str) -> None:
        if name in leaving:
            delay = rng.uniform(0, 0.03)  # before or after the handler started
            await hang_up(port, f"/{name}", when=lambda: anyio.sleep(delay))
        else:
            answers[name] = await fetch(port, "GET", f"/{name}")

    async with (
        serve(CancelOnDisconnect(app, watch_after=0.01)) as port,
        anyio.create_task_group() as tg,
    ):
        for name in names:
            tg.start_soon(client, port, name)
        await eventually(lambda: cancelled == leaving)
        release.set()
    assert started == set(names)
    assert completed == set(names) - leaving
    assert all(answers[n].endswith(n.encode()) for n in completed)


def research_app(manager: ResearchManager) -> Starlette:
    async def research(request: Request) -> Response:
        result = await manager.research(request.query_params["q"], timeout=None)
        return JSONResponse({"request_id": result.request_id, "output": result.text})

    async def events(request: Request) -> Response:
        request_id = await manager.start_research(request.query_params["q"])

        async def stream() -> AsyncIterator[str]:
            ended = False
            try:
                async for info in manager.watch(request_id):
                    ended = info.status.is_terminal
                    yield f"data: {info.status}\n\n"
            finally:
                if not ended:  # the client left: nobody wants the research any more
                    with anyio.CancelScope(shield=True):
                        await manager.cancel_research(request_id)

        return StreamingResponse(stream(), media_type="text/event-stream")

    async def guarded(request: Request) -> Response:
        async with cancel_on_disconnect(request) as watch:
            result = await manager.research(request.query_params["q"], timeout=None)
        if watch.disconnected:
            return Response(status_code=499)
        return JSONResponse({"output": result.text})

    return Starlette(
        routes=[Route("/research", research), Route("/events", events), Route("/guarded", guarded)]
    )


def quick_or_slow(prompt: str) -> Scenario:
    if prompt.startswith("quick"):
        return Scenario(pending_s=0.02, processing_s=0.02)
    return Scenario(pending_s=3600, processing_s=60)


@asynccontextmanager
async def research_server(
    *, middleware: bool = True
) -> AsyncIterator[tuple[FayEmulator, ResearchManager, int]]:
    emulator = FayEmulator(scenario=quick_or_slow, seed=3)
    async with emulator.client() as fay, ResearchManager(fay, poll_policy=FAST_POLLS) as manager:
        app: Any = research_app(manager)
        if middleware:
            app = CancelOnDisconnect(app, watch_after=0.01)
        async with serve(app) as port:
            yield emulator, manager, port


@pytest.mark.parametrize(
    ("path", "middleware"),
    [("/research", True), ("/events", True), ("/guarded", False)],
    ids=["research", "sse", "in-handler"],
)
@pytest.mark.anyio
@pytest.mark.real_time
@pytest.mark.asyncio_only
async def test_abandoned_researches_are_stopped(path: str, middleware: bool) -> None:
    # CLIENTS at once, half of them hanging up at a random moment: before their research
    # was created, or while it runs. Every research created for one of them is stopped.
    rng = random.Random(path)  # noqa: S311 - test timings
    async with research_server(middleware=middleware) as (emulator, manager, port):
        answers: list[bytes] = []

        async def leave(i: int) -> None:
            delay = rng.uniform(0, 0.5)
            await hang_up(port, f"{path}?q=slow{i}", when=lambda: anyio.sleep(delay))

        async def answered(prompt: str) -> None:
            answers.append(await fetch(port, "GET", f"{path}?q={prompt}"))

        async with anyio.create_task_group() as tg:
            for i in range(CLIENTS // 2):
                tg.start_soon(leave, i)
                tg.start_soon(answered, f"quick{i}")
        await eventually(lambda: running(emulator) == [], 10)
        await eventually(lambda: not manager.active_requests)
    by_prompt = {r.prompt: r.status for r in emulator.researches()}
    abandoned = {p: s for p, s in by_prompt.items() if p.startswith("slow")}
    assert set(abandoned.values()) == {ResearchStatus.STOPPED}
    assert len(abandoned) > CLIENTS // 4  # most left while their research ran
    assert all(by_prompt[f"quick{i}"] is ResearchStatus.COMPLETED for i in range(CLIENTS // 2))
    assert len(answers) == CLIENTS // 2
    assert all(a.startswith(b"HTTP/1.1 200 ") for a in answers)
    if path == "/events":
        assert all(b"data: COMPLETED" in a for a in answers)
    else:
        assert all(b"Research report" in a for a in answers)


# --- byte-identical responses ---------------------------------------------------------------


async def byte_app(scope: Any, receive: Any, send: Any) -> None:
    path = scope["path"]
    if path == "/upload":
        digest, size, more = hashlib.sha256(), 0, True
        while more:
            message = await receive()
            assert message["type"] == "http.request"
            digest.update(message.get("body", b""))
            size += len(message.get("body", b""))
            more = message.get("more_body", False)
            await anyio.sleep(0.001)  # the watcher gets to read ahead
        body = f"{size} {digest.hexdigest()}".encode()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})
        return
    headers = [(b"content-type", b"text/plain"), (b"x-thing", b"1")]
    await send({"type": "http.response.start", "status": 201, "headers": headers})
    if path == "/stream":
        for part in (b"one ", b"two ", b"three"):
            await anyio.sleep(0.02)  # long enough for the watcher to start
            await send({"type": "http.response.body", "body": part, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
    else:
        await send({"type": "http.response.body", "body": b"plain text"})


@pytest.mark.anyio
@pytest.mark.real_time
@pytest.mark.asyncio_only
async def test_responses_are_byte_identical_with_and_without_the_middleware() -> None:
    big = random.Random(1).randbytes(3 * READ_AHEAD + 12_345)  # noqa: S311 - test data
    requests = [("GET", "/plain", b""), ("GET", "/stream", b""), ("POST", "/upload", big)]
    async with serve(byte_app) as bare, serve(CancelOnDisconnect(byte_app, watch_after=0)) as mw:
        for method, target, body in requests:
            plain = await fetch(bare, method, target, body)
            watched = await fetch(mw, method, target, body)
            assert without_date(plain) == without_date(watched), target
            assert plain.startswith(b"HTTP/1.1 20")
    assert f"\r\n{len(big)} {hashlib.sha256(big).hexdigest()}\r\n".encode() in plain


# --- ASGI level (asyncio and trio, virtual time) --------------------------------------------


class FakeServer:
    """receive/send of one HTTP request: body chunks, then http.disconnect when told."""

    def __init__(self, chunks: list[bytes], *, disconnect_when_complete: bool = True) -> None:
        self.messages: list[Message] = [
            {"type": "http.request", "body": c, "more_body": i < len(chunks) - 1}
            for i, c in enumerate(chunks)
        ]
        self.gone = anyio.Event()
        self.sent: list[Message] = []
        self.disconnect_when_complete = disconnect_when_complete
        self.reads = 0

    async def receive(self) -> Message:
        self.reads += 1
        if self.messages:
            await anyio.sleep(0.01)
            return self.messages.pop(0)
        await self.gone.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: Message) -> None:
        self.sent.append(message)
        complete = message["type"] == "http.response.body" and not message.get("more_body")
        if complete and self.disconnect_when_complete:
            self.gone.set()  # as uvicorn does: receive() says http.disconnect from now on


HTTP: dict[str, Any] = {"type": "http", "path": "/", "method": "POST"}


@pytest.mark.anyio
async def test_the_app_reads_every_message_in_order_after_the_watcher_read_ahead() -> None:
    chunks = [b"a" * 40_000, b"b" * 40_000, b"c" * 10, b""]
    server = FakeServer(chunks)
    seen: list[Message] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await anyio.sleep(1)  # the watcher reads ahead meanwhile
        while True:
            message = await receive()
            seen.append(message)
            if not message.get("more_body"):
                break
            await anyio.sleep(0.005)  # shorter than a read: the app waits for the watcher's
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})
        seen.append(await receive())  # what a server says after the response

    expected = [
        {"type": "http.request", "body": c, "more_body": i < 3} for i, c in enumerate(chunks)
    ]
    await CancelOnDisconnect(app, watch_after=0)(HTTP, server.receive, server.send)
    assert seen == [*expected, {"type": "http.disconnect"}]
    assert [m["type"] for m in server.sent] == ["http.response.start", "http.response.body"]


@pytest.mark.anyio
async def test_a_disconnect_cancels_the_handler_and_the_middleware_returns() -> None:
    server = FakeServer([b""])
    cancelled = anyio.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"tick", "more_body": True})
        try:
            await anyio.sleep_forever()
        finally:
            cancelled.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(CancelOnDisconnect(app, watch_after=5), HTTP, server.receive, server.send)
        await anyio.sleep(60)
        server.gone.set()
    assert cancelled.is_set()


@pytest.mark.anyio
async def test_no_cancellation_after_the_response_is_complete() -> None:
    server = FakeServer([b""])
    finished = anyio.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"done"})
        await anyio.sleep(10)  # background work after the answer (a server's disconnect)
        finished.set()

    await CancelOnDisconnect(app, watch_after=0)(HTTP, server.receive, server.send)
    assert finished.is_set()


@pytest.mark.anyio
async def test_a_short_request_ends_before_it_is_watched() -> None:
    server = FakeServer([b"x"], disconnect_when_complete=False)

    async def app(scope: Any, receive: Any, send: Any) -> None:
        assert (await receive())["body"] == b"x"
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    await CancelOnDisconnect(app)(HTTP, server.receive, server.send)
    assert server.reads == 1  # only the app's own read
    assert len(server.sent) == 2


@pytest.mark.anyio
async def test_a_watcher_still_reading_when_the_app_returns_is_ended() -> None:
    server = FakeServer([b""], disconnect_when_complete=False)  # never says http.disconnect

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await anyio.sleep(1)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    with anyio.fail_after(5):
        await CancelOnDisconnect(app, watch_after=0)(HTTP, server.receive, server.send)
    assert server.reads == 2


@pytest.mark.anyio
async def test_the_apps_error_propagates_unwrapped() -> None:
    server = FakeServer([b""])

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await anyio.sleep(1)
        raise LookupError("the app's own")

    with pytest.raises(LookupError, match="the app's own"):
        await CancelOnDisconnect(app, watch_after=0)(HTTP, server.receive, server.send)


@pytest.mark.anyio
async def test_a_failing_receive_stops_the_watch_not_the_app() -> None:
    async def receive() -> Message:
        raise OSError("the server cannot read")

    done = anyio.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await anyio.sleep(1)
        done.set()

    async def send(message: Message) -> None:
        pass

    await CancelOnDisconnect(app, watch_after=0)(HTTP, receive, send)
    assert done.is_set()


@pytest.mark.parametrize("kind", ["websocket", "lifespan"])
@pytest.mark.anyio
async def test_websocket_and_lifespan_pass_through_untouched(kind: str) -> None:
    calls: list[tuple[Any, Any, Any]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        calls.append((scope, receive, send))

    async def receive() -> Message:
        return {"type": f"{kind}.connect"}

    async def send(message: Message) -> None:
        pass

    scope = {"type": kind}
    await CancelOnDisconnect(app)(scope, receive, send)
    assert calls == [(scope, receive, send)]
    assert calls[0][0] is scope
    assert calls[0][1] is receive
    assert calls[0][2] is send


@pytest.mark.parametrize("watch_after", [-1, float("nan"), float("inf"), True, "1"])
def test_watch_after_is_checked(watch_after: Any) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        pass

    with pytest.raises(ValueError, match="watch_after"):
        CancelOnDisconnect(app, watch_after=watch_after)


# --- cancel_on_disconnect, at the ASGI level ------------------------------------------------


class FakeRequest:
    def __init__(self, receive: Any) -> None:
        self.receive = receive


@pytest.mark.anyio
async def test_the_helper_cancels_its_block_on_disconnect() -> None:
    server = FakeServer([b"body"])
    async with anyio.create_task_group() as tg:

        async def leave() -> None:
            await anyio.sleep(30)
            server.gone.set()

        tg.start_soon(leave)
        reached = False
        async with cancel_on_disconnect(FakeRequest(server.receive)) as watch:
            await anyio.sleep(3600)
            reached = True
    assert watch.disconnected
    assert not reached
    # What the watcher read is there for whoever reads next.
    assert await watch.receive() == {"type": "http.request", "body": b"body", "more_body": False}
    assert await watch.receive() == {"type": "http.disconnect"}


@pytest.mark.anyio
async def test_the_helper_leaves_a_finished_block_alone() -> None:
    server = FakeServer([])
    async with cancel_on_disconnect(server.receive) as watch:
        await anyio.sleep(1)
    assert not watch.disconnected
    with pytest.raises(RuntimeError, match="only once"):
        async with watch:
            pass


@pytest.mark.anyio
async def test_the_helper_lets_the_blocks_error_through_unwrapped() -> None:
    server = FakeServer([])

    async def block() -> None:
        async with cancel_on_disconnect(server.receive):
            await anyio.sleep(1)
            raise KeyError("mine")

    with pytest.raises(KeyError, match="mine"):
        await block()


def test_the_helper_needs_a_receive() -> None:
    with pytest.raises(TypeError, match="Request or an ASGI receive"):
        cancel_on_disconnect(42)  # type: ignore[arg-type]


# --- the README's web app (examples/starlette_app.py) ---------------------------------------


def test_the_readme_web_app_is_the_example_file() -> None:
    from ._examples import EXAMPLES
    from .test_examples import README

    code = (EXAMPLES / "starlette_app.py").read_text(encoding="utf-8")
    body = code.split('"""', 2)[2].lstrip("\n")
    assert f"```python\n{body}```" in README.read_text(encoding="utf-8")


@pytest.mark.anyio
async def test_the_example_web_app_answers_both_endpoints(monkeypatch: pytest.MonkeyPatch) -> None:
    import httpx

    from ._examples import load_example

    example = load_example("starlette_app")
    emulator = FayEmulator(seed=4)
    monkeypatch.setattr(example, "FayClient", emulator.client)
    transport = httpx.ASGITransport(app=example.app)
    async with (
        example.lifespan(example.app),
        httpx.AsyncClient(transport=transport, base_url="http://app") as http,
    ):
        for path in ("/research", "/research-here"):
            answer = await http.get(path, params={"q": "What is a heat pump?"})
            assert answer.status_code == 200
            body = answer.json()
            assert body["output"] == emulator.research(body["request_id"]).output
    assert running(emulator) == []
