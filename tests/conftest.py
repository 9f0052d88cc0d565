"""Shared fixtures: every async test runs on asyncio and on trio, both on virtual time.

asyncio runs on a looptime event loop and trio on ``MockClock(autojump_threshold=0)``:
when every task is waiting, the clock jumps to the next deadline, so a five-minute
timeout or an hour of rate budget takes milliseconds. Tests that talk over a real socket
use the ``real_time`` marker, which keeps the clocks real.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Iterator
from typing import Any

import looptime
import pytest
import trio.testing

from fay_async import FayClient, ResearchManager
from fay_async.testing import FayEmulator

from ._redis_server import redis_server as _redis_server

API_KEY = "test-key-not-a-real-secret"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "real_time: run on the real clock (for tests that use real sockets)"
    )
    config.addinivalue_line(
        "markers", "asyncio_only: a test of asyncio's own cancellation (task.cancel())"
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests of asyncio-only behaviour are not collected for trio at all (not skipped)."""
    keep, drop = [], []
    for item in items:
        trio_variant = "[trio" in item.name
        (drop if trio_variant and item.get_closest_marker("asyncio_only") else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> tuple[str, dict[str, Any]]:
    real = request.node.get_closest_marker("real_time") is not None
    if request.param == "asyncio":
        return ("asyncio", {} if real else {"loop_factory": looptime.new_event_loop})
    return ("trio", {} if real else {"clock": trio.testing.MockClock(autojump_threshold=0)})


@pytest.fixture
def api_key() -> str:
    return API_KEY


@pytest.fixture(autouse=True)
def _no_fay_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never see a developer's real key or base URL."""
    for name in ("FAY_API_KEY", "FAY_BASE_URL", "FAY_WEBHOOK_SECRET"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
async def fay(emulator: FayEmulator) -> AsyncIterator[FayClient]:
    """A client of the test module's ``emulator`` fixture, in-process."""
    async with emulator.client() as client:
        yield client


@pytest.fixture
async def manager(fay: FayClient) -> AsyncIterator[ResearchManager]:
    """An open ResearchManager on ``fay``."""
    async with ResearchManager(fay) as manager:
        yield manager


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real redis-server on loopback for the whole session (it fails if not installed)."""
    with _redis_server(tmp_path_factory.mktemp("redis")) as url:
        yield url


_prefixes = itertools.count()


@pytest.fixture
def redis_prefix() -> str:
    """A key prefix of this test's own, so that tests sharing the server never meet."""
    return f"t{next(_prefixes)}"
