"""Shutdown of a web app: CancelOnDisconnect on a shutdown signal, and closing the manager.

ASGI-level tests on asyncio and trio, on virtual time; the same under real uvicorn and
gunicorn processes is in tests/test_webapp_shutdown.py.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from typing import Any

import anyio
import anyio.to_thread
import pytest

from fay_async import ResearchManager, ResearchStatus, ResearchStoppedError
from fay_async.asgi import SHUTDOWN_SIGNALS, CancelOnDisconnect
from fay_async.testing import FayEmulator, Scenario

from ._emulated import running
from .test_asgi import HTTP, FakeServer, Message

pytestmark = pytest.mark.anyio

UNAVAILABLE = b"The server is shutting down; try again.\n"


async def forever(scope: Any, receive: Any, send: Any) -> None:
    """A handler awaiting a research that does not end: it answers only when told to."""
    if scope["type"] == "lifespan":
        return
    if scope["path"] == "/stream":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"data: 1\n\n", "more_body": True})
    elif scope["path"] == "/answered":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"done"})
    await anyio.sleep_forever()


def request(path: str) -> dict[str, Any]:
    return {**HTTP, "path": path}


def bodies(server: FakeServer) -> list[Any]:
    return [(m.get("status"), m.get("body"), m.get("more_body")) for m in server.sent]


async def test_shutdown_cancels_the_requests_in_flight_and_answers_their_clients() -> None:
    middleware = CancelOnDisconnect(forever, watch_after=0, shutdown_signals=())
    waiting, streaming = FakeServer([b""]), FakeServer([b""])
    answered = FakeServer([b""], disconnect_when_complete=False)
    async with anyio.create_task_group() as tg:
        tg.start_soon(middleware, request("/"), waiting.receive, waiting.send)
        tg.start_soon(middleware, request("/stream"), streaming.receive, streaming.send)
        tg.start_soon(middleware, request("/answered"), answered.receive, answered.send)
        await anyio.sleep(30)
        assert not middleware.shutting_down
        middleware.shutdown()
        await anyio.sleep(1)
        # Background work after a complete response is not cut short.
        assert len(answered.sent) == 2
        tg.cancel_scope.cancel()
    assert middleware.shutting_down
    assert waiting.sent[0]["status"] == 503
    assert dict(waiting.sent[0]["headers"])[b"connection"] == b"close"
    assert bodies(waiting)[1] == (None, UNAVAILABLE, None)
    # A stream ends (its last body message) instead of breaking off.
    assert bodies(streaming)[1:] == [(None, b"data: 1\n\n", True), (None, b"", None)]

    # Later requests get the 503 at once; the app is not called.
    late = FakeServer([b""])
    with anyio.fail_after(1):
        await middleware(request("/"), late.receive, late.send)
    assert bodies(late) == [(503, None, None), (None, UNAVAILABLE, None)]


async def test_a_client_gone_before_its_503_is_no_error() -> None:
    middleware = CancelOnDisconnect(forever, watch_after=5, shutdown_signals=())
    server = FakeServer([b""])

    async def broken_send(message: Message) -> None:
        raise OSError("the client is gone")

    async with anyio.create_task_group() as tg:
        tg.start_soon(middleware, request("/"), server.receive, broken_send)
        await anyio.sleep(1)
        middleware.shutdown()
    assert middleware.shutting_down


@pytest.fixture
def usr1() -> Iterator[list[int]]:
    """SIGUSR1 handled by a recording handler, as a server handles SIGTERM."""
    received: list[int] = []
    before = signal.signal(signal.SIGUSR1, lambda signum, _frame: received.append(signum))
    try:
        yield received
    finally:
        signal.signal(signal.SIGUSR1, before)


async def test_a_shutdown_signal_cancels_the_requests_and_reaches_the_server(
    usr1: list[int],
) -> None:
    middleware = CancelOnDisconnect(forever, shutdown_signals=[signal.SIGUSR1])
    assert middleware.shutdown_signals == (signal.SIGUSR1,)

    async def lifespan_receive() -> Message:
        return {"type": "lifespan.startup"}

    async def lifespan_send(message: Message) -> None:
        pass

    # The lifespan startup installs the handler, in front of the server's own, once.
    await middleware({"type": "lifespan"}, lifespan_receive, lifespan_send)
    await middleware({"type": "lifespan"}, lifespan_receive, lifespan_send)
    handler = signal.getsignal(signal.SIGUSR1)
    assert type(handler).__name__ == "_ChainedHandler"
    assert not isinstance(handler.previous, type(handler))  # type: ignore[union-attr]

    server = FakeServer([b""])
    async with anyio.create_task_group() as tg:
        tg.start_soon(middleware, request("/"), server.receive, server.send)
        await anyio.sleep(1)
        signal.raise_signal(signal.SIGUSR1)
        with anyio.fail_after(5):
            while not server.sent:  # noqa: ASYNC110 - the signal is handled on the loop
                await anyio.sleep(0.01)
    assert usr1 == [signal.SIGUSR1]  # the server's handler ran too
    assert server.sent[0]["status"] == 503


async def test_the_first_request_installs_the_handler_without_a_lifespan(
    usr1: list[int],
) -> None:
    middleware = CancelOnDisconnect(forever, shutdown_signals=[signal.SIGUSR1])
    server = FakeServer([b""])
    async with anyio.create_task_group() as tg:
        tg.start_soon(middleware, request("/"), server.receive, server.send)
        await anyio.sleep(1)
        assert type(signal.getsignal(signal.SIGUSR1)).__name__ == "_ChainedHandler"
        tg.cancel_scope.cancel()


async def test_no_handler_where_the_server_handles_no_signal_or_off_the_main_thread() -> None:
    before = signal.getsignal(signal.SIGUSR2)
    assert before is signal.SIG_DFL  # nothing shuts down gracefully on it
    middleware = CancelOnDisconnect(forever, shutdown_signals=[signal.SIGUSR2])
    middleware._listen()
    assert signal.getsignal(signal.SIGUSR2) is signal.SIG_DFL

    in_a_thread = CancelOnDisconnect(forever)
    await anyio.to_thread.run_sync(in_a_thread._listen)
    assert in_a_thread._call_soon is None
    in_a_thread._signalled()  # nothing to tell


def test_a_signal_after_the_event_loop_ended_is_ignored() -> None:
    middleware = CancelOnDisconnect(forever)

    def closed(callback: Any) -> None:
        raise RuntimeError("Event loop is closed")

    middleware._call_soon = closed
    middleware._signalled()
    assert middleware._call_soon is None
    assert not middleware.shutting_down


@pytest.mark.parametrize("signals", [[99999], ["TERM"], 15])
def test_shutdown_signals_are_checked(signals: Any) -> None:
    with pytest.raises(ValueError, match="shutdown_signals"):
        CancelOnDisconnect(forever, shutdown_signals=signals)


def test_the_default_signals_are_the_ones_servers_stop_on() -> None:
    assert SHUTDOWN_SIGNALS == (signal.SIGTERM, signal.SIGINT)
    assert CancelOnDisconnect(forever).shutdown_signals == SHUTDOWN_SIGNALS


# --- closing the manager while handlers still await it --------------------------------------


async def test_closing_the_manager_stops_researches_while_handlers_still_await_them() -> None:
    # A server that runs the lifespan shutdown before its handlers end (or a test that
    # closes the manager first): every research stops within stop_grace, each handler
    # learns its research was stopped, and no research is stopped twice.
    emulator = FayEmulator(scenario=Scenario(pending_s=3600, processing_s=60))
    outcomes: list[BaseException] = []

    async def handler(manager: ResearchManager, i: int) -> None:
        try:
            await manager.research(f"q{i}", timeout=None)
        except ResearchStoppedError as error:
            outcomes.append(error)

    async with emulator.client() as fay, anyio.create_task_group() as tg:
        async with ResearchManager(fay, stop_grace=10) as manager:
            for i in range(20):
                tg.start_soon(handler, manager, i)
            await anyio.sleep(5)
            assert len(running(emulator)) == 20
            closing = anyio.current_time()
        assert anyio.current_time() - closing < 10
        with anyio.fail_after(1):
            while len(outcomes) < 20:  # noqa: ASYNC110 - the handlers end on their own
                await anyio.sleep(0.01)
    assert running(emulator) == []
    assert {r.status for r in emulator.researches()} == {ResearchStatus.STOPPED}
    assert emulator.call_counts()["stop"] == 20
