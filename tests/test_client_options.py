"""Per-call timeouts and deadlines, and with_options(): other options on one pool."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import anyio
import httpx
import pytest
import respx

from fay_async import FayClient, RateLimits, exceptions

from . import _docs as docs

KEY = "fake-key"
STATUS_PATH = f"/conversation/{docs.REQUEST_ID}/status"

pytestmark = pytest.mark.anyio


@pytest.fixture
def mock() -> Iterator[respx.MockRouter]:
    with respx.mock(base_url=docs.BASE, assert_all_called=False) as router:
        yield router


def ok(body: dict[str, Any], status: int = 200) -> httpx.Response:
    return httpx.Response(status, json=body)


def attempt_timeout(request: httpx.Request) -> dict[str, float]:
    timeouts: dict[str, float] = request.extensions["timeout"]
    return timeouts


async def test_a_call_takes_its_own_attempt_timeout(mock: respx.MockRouter) -> None:
    route = mock.get(STATUS_PATH).mock(return_value=ok(docs.STATUS_PENDING))
    async with FayClient(KEY, timeout=30) as fay:
        await fay.get_status(docs.REQUEST_ID, timeout=5)
        await fay.get_status(docs.REQUEST_ID)
    first, second = (attempt_timeout(call.request) for call in route.calls)
    assert first["read"] == 5.0
    assert second["read"] == 30.0


async def test_a_call_takes_its_own_deadline(mock: respx.MockRouter) -> None:
    async def slow(request: httpx.Request) -> httpx.Response:
        await anyio.sleep(10)
        return ok(docs.STATUS_PENDING)

    mock.get(STATUS_PATH).mock(side_effect=slow)
    async with FayClient(KEY, deadline=120) as fay:
        with pytest.raises(exceptions.APITimeoutError, match="did not finish within 2 s"):
            await fay.get_status(docs.REQUEST_ID, deadline=2)
        started = anyio.current_time()
        await fay.get_status(docs.REQUEST_ID, deadline=math.inf)
        assert anyio.current_time() - started >= 10


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"timeout": "5"}, TypeError, "timeout must be a number of seconds, got str"),
        ({"timeout": 0}, ValueError, "timeout must be a positive number of seconds, got 0"),
        ({"deadline": math.nan}, ValueError, "deadline must be a positive number of seconds"),
    ],
)
async def test_bad_per_call_options_are_refused_before_sending(
    mock: respx.MockRouter, kwargs: dict[str, Any], error: type[Exception], message: str
) -> None:
    async with FayClient(KEY) as fay:
        for call in (fay.get_status, fay.get_output, fay.stop_conversation):
            with pytest.raises(error, match=message):
                await call(docs.REQUEST_ID, **kwargs)
        with pytest.raises(error, match=message):
            await fay.create_conversation("q", **kwargs)
    assert not mock.calls


async def test_with_options_shares_the_pool_and_the_budget(mock: respx.MockRouter) -> None:
    route = mock.get(STATUS_PATH).mock(return_value=ok(docs.STATUS_PENDING))
    async with FayClient(KEY, timeout=30, rate_limits=RateLimits(status=5)) as fay:
        quick = fay.with_options(timeout=3)
        assert quick.rate_limiter is fay.rate_limiter
        assert quick._transport.http is fay._transport.http
        await quick.get_status(docs.REQUEST_ID)
        await fay.get_status(docs.REQUEST_ID)
        assert fay.rate_limiter is not None
        assert fay.rate_limiter.available("status") == 3
        await quick.aclose()
        assert quick.is_closed
        assert not fay.is_closed
        await fay.get_status(docs.REQUEST_ID)  # the pool is still open
    assert [attempt_timeout(c.request)["read"] for c in route.calls] == [3.0, 30.0, 30.0]
    assert quick.is_closed
    with pytest.raises(exceptions.ConfigurationError, match="closed"):
        await quick.get_status(docs.REQUEST_ID)


async def test_with_options_changes_retries_and_keeps_the_rest(mock: respx.MockRouter) -> None:
    route = mock.get(STATUS_PATH).mock(return_value=httpx.Response(503, text="busy"))
    async with FayClient(KEY, max_retries=2) as fay:
        once = fay.with_options(max_retries=0)
        with pytest.raises(exceptions.ServerError):
            await once.get_status(docs.REQUEST_ID)
        assert route.call_count == 1
        with pytest.raises(exceptions.ServerError):
            await fay.get_status(docs.REQUEST_ID)
        assert route.call_count == 4
        assert repr(once) == repr(fay)
        assert once.base_url == fay.base_url


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"timeout": math.nan}, "timeout must be a positive number of seconds, got nan"),
        ({"max_retries": -1}, "max_retries must be a whole number >= 0, got -1"),
        ({"max_retry_after": "60"}, "max_retry_after must be a number of seconds, got str"),
        ({"deadline": 0}, "deadline must be a positive number of seconds, got 0"),
    ],
)
def test_with_options_refuses_bad_values(kwargs: dict[str, Any], message: str) -> None:
    fay = FayClient(KEY)
    with pytest.raises(exceptions.ConfigurationError, match=message):
        fay.with_options(**kwargs)
