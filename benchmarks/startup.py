"""Start-up: whole-process wall time of the commands a user starts, side by side.

Each command runs as a fresh process of this interpreter; the commands take turns (one
run of each per round, the order rotating from round to round), so a slow patch of the
machine hits them alike. The figures are the medians over the rounds. The targets are
ratios against ``import httpx`` measured in the same rounds: ``import fay_async`` within
1.1x of it, and ``fay-async --help`` at most 0.3x of the 537 ms it took before its
imports were made lazy, when ``import httpx`` took 353 ms on the same machine (so at most
0.3 x 537 / 353 = 0.46x ``import httpx``).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

from ._common import Row, check, median

IMPORT_TARGET = 1.1
#: 0.3 x the old ``fay-async --help`` (537 ms) over ``import httpx`` then (353 ms).
HELP_TARGET = round(0.3 * 537 / 353, 2)


def _script() -> list[str]:
    """The installed ``fay-async`` script next to this interpreter, or ``-m`` without it."""
    found = Path(sys.executable).with_name("fay-async")
    if found.exists():
        return [str(found)]
    on_path = shutil.which("fay-async")
    return [on_path] if on_path else [sys.executable, "-m", "fay_async._cli"]


def _commands() -> dict[str, list[str]]:
    python = sys.executable
    return {
        "python -c pass": [python, "-c", "pass"],
        "import httpx": [python, "-c", "import httpx"],
        "import fay_async": [python, "-c", "import fay_async"],
        "import fay_async; fay_async.FayClient": [
            python,
            "-c",
            "import fay_async; fay_async.FayClient",
        ],
        "fay-async --help": [*_script(), "--help"],
        "python -m fay_async._cli --help": [python, "-m", "fay_async._cli", "--help"],
    }


def _time(argv: list[str]) -> float:
    began = time.perf_counter()
    subprocess.run(argv, stdout=subprocess.DEVNULL, check=True)  # noqa: S603 - our own
    return time.perf_counter() - began


def run(*, quick: bool) -> list[Row]:
    """Median whole-process wall time of each command, and the ratios against the targets."""
    commands = _commands()
    rounds = 2 if quick else 21
    names = list(commands)
    for name in names:  # warm the file system cache and the bytecode
        _time(commands[name])
    times: dict[str, list[float]] = {name: [] for name in names}
    for turn in range(rounds):
        shift = turn % len(names)
        for name in names[shift:] + names[:shift]:
            times[name].append(_time(commands[name]))
    ms = {name: median(values) * 1e3 for name, values in times.items()}
    bench = "startup"
    rows = [
        Row(benchmark=bench, metric=f"{name}, whole process", value=ms[name], unit="ms")
        for name in names
    ]
    httpx_ms = ms["import httpx"]
    import_ratio = ms["import fay_async"] / httpx_ms
    help_ratio = ms["fay-async --help"] / httpx_ms
    rows += [
        Row(
            benchmark=bench,
            metric="import fay_async / import httpx",
            value=import_ratio,
            unit="x",
            target=f"<= {IMPORT_TARGET}",
            ok=check(import_ratio, IMPORT_TARGET),
        ),
        Row(
            benchmark=bench,
            metric="import fay_async; fay_async.FayClient / import httpx",
            value=ms["import fay_async; fay_async.FayClient"] / httpx_ms,
            unit="x",
        ),
        Row(
            benchmark=bench,
            metric="fay-async --help / import httpx",
            value=help_ratio,
            unit="x",
            target=f"<= {HELP_TARGET}",
            ok=check(help_ratio, HELP_TARGET),
            note="0.3x the old 537 ms, when import httpx took 353 ms",
        ),
        Row(
            benchmark=bench,
            metric="fay-async --help / python -c pass",
            value=ms["fay-async --help"] / ms["python -c pass"],
            unit="x",
            note=f"median of {rounds} interleaved rounds",
        ),
    ]
    return rows
