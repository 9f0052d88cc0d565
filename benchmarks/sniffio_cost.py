"""What a missing ``sniffio`` costs: FayClient's CPU per call with it and without it.

httpcore asks ``import sniffio`` whenever it sets up a lock or an event, several times a
request; without sniffio installed each ask is a failed import that searches the whole
``sys.path`` again. fay-async now depends on sniffio; this figure is what a user without
it (an install without trio, whose anyio no longer brings sniffio) paid before.

Two child processes of this interpreter make ``FayClient.get_status`` calls against one
static server; in one of them sniffio (and trio, which would import it) cannot be found:
the site-packages entry of its ``sys.path`` is replaced by a folder of links to every
package there but those. The children take turns running blocks of calls (the order
flipping per pair) and report the CPU time per call of their block; the ratio is the
median of the per-pair ratios.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from ._common import API_KEY, Row, median, quartiles, static_server

_HIDDEN = ("sniffio", "trio")

_CHILD = """
import gc, json, sys, sysconfig, time
base_url, concurrency, farm = sys.argv[1], int(sys.argv[2]), sys.argv[3]
if farm:
    purelib = sysconfig.get_paths()["purelib"]
    sys.path[:] = [farm if entry == purelib else entry for entry in sys.path]
    sys.path_importer_cache.clear()
import anyio
from fay_async import FayClient

async def main():
    async with FayClient(%r, base_url=base_url) as fay:
        async def block(calls):
            remaining = calls
            async def worker():
                nonlocal remaining
                while remaining > 0:
                    remaining -= 1
                    await fay.get_status("req_static")
            async with anyio.create_task_group() as group:
                for _ in range(concurrency):
                    group.start_soon(worker)
        while line := await anyio.to_thread.run_sync(sys.stdin.readline):
            calls = int(line)
            gc.collect()
            began = time.process_time()
            await block(calls)
            cpu = (time.process_time() - began) / calls
            print(json.dumps({"cpu": cpu, "sniffio": "sniffio" in sys.modules}), flush=True)

anyio.run(main, backend="asyncio")
"""


@contextlib.contextmanager
def _without(names: tuple[str, ...]) -> Iterator[str]:
    """A folder of links to everything in site-packages but the packages ``names``."""
    purelib = Path(sysconfig.get_paths()["purelib"])
    with tempfile.TemporaryDirectory(prefix="fay-bench-") as farm:
        for entry in purelib.iterdir():
            base = entry.name.split("-")[0].split(".")[0].lower()
            if base not in names:
                os.symlink(entry, Path(farm) / entry.name)
        yield farm


class _Child:
    def __init__(self, base_url: str, concurrency: int, farm: str) -> None:
        self.process = subprocess.Popen(  # noqa: S603 - our own interpreter and code
            [sys.executable, "-c", _CHILD % API_KEY, base_url, str(concurrency), farm],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def block(self, calls: int) -> tuple[float, bool]:
        stdin: IO[str] | None = self.process.stdin
        stdout: IO[str] | None = self.process.stdout
        assert stdin is not None
        assert stdout is not None
        stdin.write(f"{calls}\n")
        stdin.flush()
        answer = json.loads(stdout.readline())
        return answer["cpu"], answer["sniffio"]

    def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()


def _measure(base_url: str, concurrency: int, calls: int, pairs: int, farm: str) -> list[Row]:
    with_it = _Child(base_url, concurrency, "")
    without = _Child(base_url, concurrency, farm)
    try:
        for child in (with_it, without):  # connections opened, caches warm
            child.block(calls)
        cpu_with: list[float] = []
        cpu_without: list[float] = []
        seen: set[bool] = set()
        for pair in range(pairs):
            order = (with_it, without) if pair % 2 == 0 else (without, with_it)
            for child in order:
                cpu, imported = child.block(calls)
                (cpu_with if child is with_it else cpu_without).append(cpu)
                if child is without:
                    seen.add(imported)
    finally:
        with_it.close()
        without.close()
    if seen != {False}:
        raise RuntimeError("sniffio was imported in the process meant to be without it")
    ratios = [b / a for a, b in zip(cpu_with, cpu_without, strict=True)]
    low, high = quartiles(ratios)
    name = f"sniffio c={concurrency}"
    return [
        Row(
            benchmark=name,
            metric="FayClient, CPU per call, sniffio installed",
            value=median(cpu_with) * 1e6,
            unit="us",
        ),
        Row(
            benchmark=name,
            metric="FayClient, CPU per call, without sniffio",
            value=median(cpu_without) * 1e6,
            unit="us",
            note="what an install without trio paid before sniffio became a dependency",
        ),
        Row(
            benchmark=name,
            metric="without / with sniffio (cpu)",
            value=median(ratios),
            unit="x",
            note=f"IQR {low:.3f}-{high:.3f} over {len(ratios)} pairs",
        ),
    ]


def run(*, quick: bool) -> list[Row]:
    """CPU per call with and without sniffio, at concurrency 1 and 32."""
    sizes = {1: (5, 2), 32: (32, 2)} if quick else {1: (200, 12), 32: (640, 10)}
    rows: list[Row] = []
    with static_server() as base_url, _without(_HIDDEN) as farm:
        for concurrency, (calls, pairs) in sizes.items():
            rows += _measure(base_url, concurrency, calls, pairs, farm)
    return rows
