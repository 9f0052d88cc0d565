"""A web app's shutdown with researches in flight, under real uvicorn and gunicorn processes.

examples/fastapi_app.py (through tests/webapp_server.py) runs as a subprocess against the
emulator served on a loopback socket in this process. Raw-socket clients put
``IN_FLIGHT`` ``POST /research`` in flight; then the server gets SIGTERM (or SIGKILL),
and the test measures how long the process takes to exit and counts, on the emulator,
the researches left running. The README's shutdown table comes from these runs.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import anyio
import pytest

from fay_async import ResearchStatus
from fay_async.testing import DEFAULT_API_KEY, FayEmulator, Scenario, serve

from ._emulated import running

pytestmark = [pytest.mark.anyio, pytest.mark.real_time, pytest.mark.asyncio_only]

ROOT = Path(__file__).resolve().parent.parent
IN_FLIGHT = 50
S = ResearchStatus
#: Researches that run far longer than any test.
LONG = Scenario(pending_s=3600, processing_s=600)
#: Researches that end two seconds after they are created.
SHORT = Scenario(pending_s=1, processing_s=1)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def uvicorn_command(port: int, *options: str) -> list[str]:
    return [
        *(sys.executable, "-m", "uvicorn", "tests.webapp_server:app"),
        *("--host", "127.0.0.1", "--port", str(port), "--log-level", "warning", *options),
    ]


def gunicorn_command(port: int, *options: str) -> list[str]:
    return [
        *(sys.executable, "-m", "gunicorn", "tests.webapp_server:app"),
        *("-k", "uvicorn.workers.UvicornWorker", "-w", "1", "-b", f"127.0.0.1:{port}"),
        *("--log-level", "warning", *options),
    ]


@dataclass
class Shutdown:
    """What one shutdown did."""

    seconds: float  # from the signal to the process's exit
    statuses: collections.Counter[ResearchStatus]  # of the researches, on the emulator
    answers: collections.Counter[int]  # HTTP status each client got (0: none)
    stops: int  # stop calls the emulator received
    log: str

    def __str__(self) -> str:
        statuses = {str(k): v for k, v in self.statuses.items()}
        return f"{self.seconds:.2f} s, {statuses}, answers {dict(self.answers)}, {self.stops} stops"


@contextmanager
def process(
    command: list[str], env: dict[str, str], log: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``command`` in a process group of its own; on leaving, nothing of it is left.

    A server killed with SIGKILL cannot end its own children (gunicorn's workers): the
    whole group is killed once the server has exited or been killed.
    """
    with log.open("wb") as out:
        proc = subprocess.Popen(  # noqa: S603 - our interpreter, our app
            command,
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait(10)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)


async def answer_of(port: int, method: str, target: str, body: bytes = b"") -> int:
    """The HTTP status of one request's answer; 0 when the connection ends without one."""
    head = (
        f"{method} {target} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    async with await anyio.connect_tcp("127.0.0.1", port) as stream:
        await stream.send(head.encode() + body)
        data = b""
        try:
            while True:
                data += await stream.receive()
        except (anyio.EndOfStream, anyio.BrokenResourceError):
            pass
    return int(data[9:12]) if data.startswith(b"HTTP/1.1 ") else 0


async def until(condition: Callable[[], bool], seconds: float, what: str) -> None:
    with anyio.move_on_after(seconds):
        while not condition():  # noqa: ASYNC110 - state kept by other threads and processes
            await anyio.sleep(0.01)
        return
    raise AssertionError(f"not within {seconds} s: {what}")


async def until_ready(port: int, proc: subprocess.Popen[bytes]) -> None:
    with anyio.fail_after(30):  # importing FastAPI on a loaded machine
        while True:
            assert proc.poll() is None, "the server exited on start-up"
            try:
                if await answer_of(port, "GET", "/openapi.json") == 200:
                    return
            except OSError:
                pass
            await anyio.sleep(0.05)


async def shut_down(
    tmp_path: Path,
    command: Callable[..., list[str]],
    *options: str,
    scenario: Scenario = LONG,
    signals: bool = True,
    sig: signal.Signals = signal.SIGTERM,
) -> Shutdown:
    """Run the app, put IN_FLIGHT researches in flight, send ``sig``, see what is left."""
    emulator = FayEmulator(scenario=scenario, seed=11)
    port = free_port()
    answers: collections.Counter[int] = collections.Counter()
    async with serve(emulator) as base_url:
        env = {**os.environ, "FAY_BASE_URL": base_url, "FAY_API_KEY": DEFAULT_API_KEY}
        if not signals:
            env["WEBAPP_SHUTDOWN_SIGNALS"] = "off"
        log = tmp_path / "server.log"
        with process(command(port, *options), env, log) as proc:
            await until_ready(port, proc)

            async def client(i: int) -> None:
                body = json.dumps({"prompt": f"question {i}"}).encode()
                answers[await answer_of(port, "POST", "/research", body)] += 1

            async with anyio.create_task_group() as tg:
                for i in range(IN_FLIGHT):
                    tg.start_soon(client, i)
                await until(
                    lambda: len(running(emulator)) == IN_FLIGHT, 20, f"{IN_FLIGHT} in flight"
                )
                start = time.monotonic()
                proc.send_signal(sig)
                await until(lambda: proc.poll() is not None, 30, "the server exits")
                seconds = time.monotonic() - start
        # A research whose stop was sent just before the exit is STOPPED by now.
        await until(lambda: len(emulator.researches()) == IN_FLIGHT, 1, "every research seen")
        statuses = collections.Counter(r.status for r in emulator.researches())
        stops = emulator.call_counts()["stop"]
    done = Shutdown(seconds, statuses, answers, stops, log.read_text(errors="replace"))
    print(command.__name__, options, "signals" if signals else "no hook", sig.name, done)
    return done


# --- uvicorn --------------------------------------------------------------------------------


async def test_uvicorn_defaults_wait_for_every_research_without_the_signal_hook(
    tmp_path: Path,
) -> None:
    # What apps got before the middleware listened for shutdown signals: uvicorn waits
    # for every request in flight, so every research runs (and is paid for) to its end.
    done = await shut_down(tmp_path, uvicorn_command, scenario=SHORT, signals=False)
    assert done.statuses == {S.COMPLETED: IN_FLIGHT}, done.log
    assert done.stops == 0
    assert done.answers == {200: IN_FLIGHT}
    assert done.seconds > 0.5  # the shutdown waited for the researches to end


async def test_uvicorn_graceful_timeout_cancels_the_handlers_and_the_researches_stop(
    tmp_path: Path,
) -> None:
    done = await shut_down(
        tmp_path, uvicorn_command, "--timeout-graceful-shutdown", "1", signals=False
    )
    assert done.statuses == {S.STOPPED: IN_FLIGHT}, done.log
    assert done.stops == IN_FLIGHT
    assert 1 <= done.seconds < 1 + 10  # the grace, plus at most the manager's stop_grace


async def test_uvicorn_defaults_with_the_signal_hook_stop_every_research_at_once(
    tmp_path: Path,
) -> None:
    done = await shut_down(tmp_path, uvicorn_command)
    assert done.statuses == {S.STOPPED: IN_FLIGHT}, done.log
    assert done.stops == IN_FLIGHT
    assert done.answers == {503: IN_FLIGHT}
    assert done.seconds < 10  # the manager's stop_grace: in practice well under a second


async def test_sigkill_leaves_every_research_running(tmp_path: Path) -> None:
    # What `docker stop` does after its grace, and the OOM killer at once: no code runs.
    done = await shut_down(tmp_path, uvicorn_command, sig=signal.SIGKILL)
    assert done.statuses == {S.PENDING: IN_FLIGHT}
    assert done.stops == 0
    assert done.answers == {0: IN_FLIGHT}


# --- gunicorn with uvicorn workers ----------------------------------------------------------


async def test_gunicorn_kills_its_workers_after_the_graceful_timeout_without_the_hook(
    tmp_path: Path,
) -> None:
    # The worker waits for its requests; the arbiter kills it when --graceful-timeout
    # ends: the lifespan shutdown never runs.
    done = await shut_down(tmp_path, gunicorn_command, "--graceful-timeout", "1", signals=False)
    assert done.statuses == {S.PENDING: IN_FLIGHT}, done.log
    assert done.stops == 0
    assert done.seconds >= 1


async def test_gunicorn_with_the_signal_hook_stops_every_research(tmp_path: Path) -> None:
    done = await shut_down(tmp_path, gunicorn_command, "--graceful-timeout", "30")
    assert done.statuses == {S.STOPPED: IN_FLIGHT}, done.log
    assert done.stops == IN_FLIGHT
    assert done.answers == {503: IN_FLIGHT}
    assert done.seconds < 10
