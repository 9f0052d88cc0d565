"""Several real processes share one key through a real redis-server, against the emulator.

Each test serves the emulator on a loopback socket from this process, and runs workers
as child processes (``tests/_fleet_worker.py``). Real time, asyncio only, a few seconds.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import anyio
import pytest

from fay_async import ResearchManager, ResearchStatus
from fay_async.redis import RedisRegistry
from fay_async.testing import DEFAULT_API_KEY, FayEmulator, serve

pytestmark = [pytest.mark.anyio, pytest.mark.real_time, pytest.mark.asyncio_only]

ROOT = Path(__file__).resolve().parent.parent
HOUR = 3600.0


@pytest.fixture
def fleet_env(redis_url: str, redis_prefix: str) -> Callable[[str], dict[str, str]]:
    def env(base_url: str) -> dict[str, str]:
        return {
            **os.environ,
            "FAY_BASE_URL": base_url,
            "FAY_API_KEY": DEFAULT_API_KEY,
            "FAY_REDIS_URL": redis_url,
            "FAY_REDIS_PREFIX": redis_prefix,
            "PYTHONPATH": str(ROOT),
        }

    return env


def spawn(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(  # noqa: S603 - this interpreter, the tests' own worker
        [sys.executable, "-m", "tests._fleet_worker", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )


@pytest.fixture
def workers() -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)
        if process.stdout is not None:
            process.stdout.close()


def test_four_processes_share_the_free_tier_without_a_429(
    fleet_env: Callable[[str], dict[str, str]], workers: list[subprocess.Popen[str]]
) -> None:
    # One emulated hour, in real seconds: 200 creates at 10 an hour take 20 of them. The
    # budget counts a call when its slot is taken, the server when it arrives; on a busy
    # machine that lag reaches tens of milliseconds, so the client's window is 7 % longer
    # than the server's (an hour's budget allows far more: 0.36 s of slack).
    window = 1.0
    emulator = FayEmulator(rate_limits="free", speed=HOUR / window)
    with serve(emulator) as base_url:
        workers += [spawn(fleet_env(base_url), "creates", "50", str(window * 1.07)) for _ in "abcd"]
        made = [int(process.communicate(timeout=60)[0]) for process in workers]
    calls = [c for c in emulator.calls() if c.endpoint == "create"]
    assert made == [50, 50, 50, 50]
    assert [c.status_code for c in calls].count(429) == 0
    assert len(calls) == 200
    times = sorted(c.time for c in calls)
    limit = 10
    rate = (len(times) - limit) / (times[-1] - times[0])  # emulated seconds
    use = rate / (limit / HOUR)
    print(f"budget use: {use:.1%} of the Free tier's creates")
    assert use >= 0.90


async def test_a_cancel_from_another_process_and_the_sweep_after_a_sigkill(
    fleet_env: Callable[[str], dict[str, str]],
    workers: list[subprocess.Popen[str]],
    redis_url: str,
    redis_prefix: str,
) -> None:
    lease = 1.0
    emulator = FayEmulator()
    with serve(emulator) as base_url:
        owner = spawn(fleet_env(base_url), "own", "4", str(lease))
        workers.append(owner)
        assert owner.stdout is not None
        ids = json.loads(await anyio.to_thread.run_sync(owner.stdout.readline))
        registry = RedisRegistry(
            redis_url, key_prefix=redis_prefix, lease=lease, sweep_every=lease / 4
        )
        async with emulator.client() as client, ResearchManager(client, registry=registry) as me:
            # The cancel: this process does not own ids[0], yet stops it; the owner's
            # waiter raises ResearchStoppedError.
            sent = time.monotonic()
            result = await me.cancel_research(ids[0])
            line = await anyio.to_thread.run_sync(owner.stdout.readline)
            print(f"cross-worker cancel: {time.monotonic() - sent:.3f} s")
            assert result.status is ResearchStatus.STOPPED
            assert line.split() == ["STOPPED", ids[0]]
            # The kill: nothing stops its researches but this survivor's sweep.
            owner.send_signal(signal.SIGKILL)
            killed = time.monotonic()
            owner.wait(timeout=10)
            assert all(emulator.research(i).status is not ResearchStatus.STOPPED for i in ids[1:])
            with anyio.fail_after(lease * 3):
                while not all(  # noqa: ASYNC110 - the emulator lives in another thread
                    emulator.research(i).status is ResearchStatus.STOPPED for i in ids[1:]
                ):
                    await anyio.sleep(0.02)
            swept = time.monotonic() - killed
            print(f"orphan sweep after SIGKILL: {swept:.2f} s (lease {lease} s)")
            assert swept < lease + lease / 4 + 1.0
            with anyio.fail_after(1):  # each one is counted once untracked fleet-wide
                while registry.swept < 3:  # noqa: ASYNC110 - a counter, no event to wait on
                    await anyio.sleep(0.01)
            assert registry.swept == 3
