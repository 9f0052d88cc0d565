"""What the benchmarks share: result rows, statistics, clocks, and the served emulator."""

from __future__ import annotations

import contextlib
import gc
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Any, TypeVar

import anyio
import attrs
import looptime

T = TypeVar("T")

#: The key every benchmark emulator accepts: an obvious placeholder, not a secret.
API_KEY = "bench-key-not-a-secret"

# Serves a FayEmulator on a loopback port from a separate process, so that the server's work
# does not share the interpreter (and its lock) with the client being measured. Every
# research stays PENDING, so every status answer has the same size. The parent ends the
# child with SIGTERM; a closed stdin (the parent died) ends it too.
_SERVER = """
import sys
from fay_async.testing import FayEmulator, Scenario, serve
emulator = FayEmulator(api_keys={%r}, scenario=Scenario(pending_s=1e9, processing_s=1.0))
with serve(emulator, host="127.0.0.1") as base_url:
    print(base_url, flush=True)
    sys.stdin.read()
"""


# A static HTTP/1.1 server in a child process: every request, whatever its path, gets the
# same keep-alive answer (a status envelope of a PENDING research). It does next to no work
# per request, so a client's own cost is what a comparison against it shows.
_STATIC_SERVER = """
import asyncio, json, sys
BODY = json.dumps({
    "status": True, "version": "1.0.24",
    "data": {"request_id": "req_static", "status": "PENDING", "prompt": "benchmark",
             "created_at": "2025-01-01T00:00:00.000000+00:00", "started_at": None,
             "completed_at": None, "stopped": False, "error_message": None},
}).encode()
ANSWER = (b"HTTP/1.1 200 OK\\r\\nContent-Type: application/json\\r\\nContent-Length: "
          + str(len(BODY)).encode() + b"\\r\\n\\r\\n" + BODY)

class Static(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport, self.buffer = transport, b""
    def data_received(self, data):
        self.buffer += data
        while b"\\r\\n\\r\\n" in self.buffer:  # bodiless requests only (GET)
            _, _, self.buffer = self.buffer.partition(b"\\r\\n\\r\\n")
            self.transport.write(ANSWER)

async def main():
    server = await asyncio.get_running_loop().create_server(Static, "127.0.0.1", 0)
    print(f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)

asyncio.run(main())
"""


@attrs.frozen(kw_only=True)
class Row:
    """One figure of the table: what was measured, its value, and the target if any."""

    benchmark: str
    metric: str
    value: float
    unit: str
    target: str = ""
    ok: bool | None = None
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        """The row as plain JSON-ready data."""
        return attrs.asdict(self)


def median(values: Sequence[float]) -> float:
    """The median of a non-empty sequence."""
    return statistics.median(values)


def quartiles(values: Sequence[float]) -> tuple[float, float]:
    """The first and third quartiles (both equal to the value for a single one)."""
    if len(values) < 2:
        return values[0], values[0]
    low, _, high = statistics.quantiles(values, n=4, method="inclusive")
    return low, high


def check(value: float, limit: float) -> bool:
    """Whether ``value`` meets an upper bound (a NaN never does)."""
    return not math.isnan(value) and value <= limit


def run_virtual(func: Callable[[], Awaitable[T]]) -> T:
    """Run ``func`` on asyncio with virtual time (looptime): sleeps take no real time.

    ``noop_cycles=0`` lets the clock jump as soon as nothing is ready to run. Everything
    measured on virtual time runs in this process with no threads, so nothing from the
    outside can arrive late; the default (42 idle loop turns before each jump) would only
    add loop turns to every CPU figure.
    """

    async def main() -> T:
        return await func()

    result: T = anyio.run(
        main,
        backend="asyncio",
        backend_options={"loop_factory": lambda: looptime.new_event_loop(noop_cycles=0)},
    )
    return result


@attrs.define
class GcTimer:
    """Real seconds spent in the garbage collector while installed (``with GcTimer() as t``)."""

    seconds: float = 0.0
    collections: int = 0
    _started: float = 0.0

    def _callback(self, phase: str, _info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.seconds += time.perf_counter() - self._started
            self.collections += 1

    def __enter__(self) -> GcTimer:
        gc.callbacks.append(self._callback)
        return self

    def __exit__(self, *_exc: object) -> None:
        gc.callbacks.remove(self._callback)


@contextlib.contextmanager
def served_emulator() -> Iterator[str]:
    """A socket emulator in a child process on 127.0.0.1; yields its base URL."""
    with _child_server(_SERVER % API_KEY) as base_url:
        yield base_url


@contextlib.contextmanager
def static_server() -> Iterator[str]:
    """A static HTTP server in a child process on 127.0.0.1; yields its base URL."""
    with _child_server(_STATIC_SERVER) as base_url:
        yield base_url


@contextlib.contextmanager
def _child_server(code: str) -> Iterator[str]:
    with subprocess.Popen(  # noqa: S603 - our own interpreter and code
        [sys.executable, "-c", code],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as child:
        try:
            assert child.stdout is not None
            base_url = child.stdout.readline().strip()
            if not base_url.startswith("http://127.0.0.1:"):
                raise RuntimeError(f"the server did not start: {base_url!r}")
            yield base_url
        finally:
            child.terminate()
            try:
                child.wait(timeout=10)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()


def machine() -> dict[str, Any]:
    """What the figures depend on: CPUs, CPU model, Python, and the main libraries."""
    model = platform.processor() or platform.machine()
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                model = line.partition(":")[2].strip()
                break
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    versions: dict[str, str] = {}
    names = ("fay-async", "httpx", "httpcore", "anyio", "sniffio", "trio", "aiohttp", "cattrs")
    for name in (*names, "uvicorn", "looptime"):
        with contextlib.suppress(Exception):
            from importlib.metadata import version  # noqa: PLC0415

            versions[name] = version(name)
    return {
        "nproc": usable or os.cpu_count(),
        "cpu": model,
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "system": f"{platform.system()} {platform.release()}",
        "versions": versions,
    }


def format_value(row: Row) -> str:
    """A value printed with a precision that suits its size."""
    value = row.value
    if math.isnan(value):
        return "n/a"
    if value == int(value) and abs(value) >= 1:
        return f"{int(value):,}"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}" if abs(value) < 1 else f"{value:.2f}"


def format_table(rows: Sequence[Row]) -> str:
    """The rows as a Markdown table (it is also what README.md records)."""
    lines = [
        "| benchmark | metric | value | unit | target | ok | note |",
        "|---|---|---:|---|---|---|---|",
    ]
    for row in rows:
        ok = "" if row.ok is None else ("yes" if row.ok else "**no**")
        lines.append(
            f"| {row.benchmark} | {row.metric} | {format_value(row)} | {row.unit} "
            f"| {row.target} | {ok} | {row.note} |"
        )
    return "\n".join(lines)
