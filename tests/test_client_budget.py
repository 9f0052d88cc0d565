"""A client's budget store and key fingerprint, without Redis: what reaches the store."""

from __future__ import annotations

import hashlib
import json

import httpx
import pytest

from fay_async import (
    ConfigurationError,
    FayClient,
    MemoryBudget,
    RateLimits,
    UnexpectedResponseError,
)

from . import _docs as docs

pytestmark = pytest.mark.anyio

KEY = "test-key-budget"


class Recording(MemoryBudget):
    """The in-memory store, keeping the name, limit and window of every take."""

    def __init__(self) -> None:
        super().__init__()
        self.taken: list[tuple[str, int, float]] = []

    async def take(self, name: str, limit: int, window: float) -> float:
        self.taken.append((name, limit, window))
        return await super().take(name, limit, window)


def snippet(body: object) -> str:
    """The body as the error shows it: the JSON text httpx sent, on one line."""
    return json.dumps(body, separators=(",", ":"))


def answering(body: object) -> httpx.MockTransport:
    return httpx.MockTransport(lambda _request: httpx.Response(200, json=body))


def test_the_key_fingerprint_is_16_hex_digits_of_its_sha256() -> None:
    fay = FayClient(KEY, transport=answering(docs.STATUS_PENDING))
    assert fay.key_fingerprint == hashlib.sha256(KEY.encode()).hexdigest()[:16]
    assert len(fay.key_fingerprint) == 16
    assert KEY not in repr(fay)


async def test_every_slot_is_taken_from_the_given_store_under_the_keys_name() -> None:
    store = Recording()
    limits = RateLimits(status=5, window=60.0)
    async with FayClient(
        KEY, rate_limits=limits, budget=store, transport=answering(docs.STATUS_PENDING)
    ) as fay:
        await fay.get_status("r-1")
        await fay.get_status("r-1")
        fingerprint = fay.key_fingerprint
    assert store.taken == [(f"{fingerprint}:status", 5, 60.0)] * 2
    assert store.available(f"{fingerprint}:status", 5, 60.0) == 3


async def test_two_keys_on_one_store_have_budgets_of_their_own() -> None:
    store = Recording()
    limits = RateLimits(status=1, window=3600.0)
    transport = answering(docs.STATUS_PENDING)
    async with (
        FayClient(KEY, rate_limits=limits, budget=store, transport=transport) as one,
        FayClient("other-key", rate_limits=limits, budget=store, transport=transport) as two,
    ):
        await one.get_status("r-1")
        await two.get_status("r-1")  # not held back by the first key's spent budget
    assert {name for name, _, _ in store.taken} == {
        f"{one.key_fingerprint}:status",
        f"{two.key_fingerprint}:status",
    }


def test_a_budget_that_is_not_a_store_is_refused() -> None:
    with pytest.raises(
        ConfigurationError, match="budget must be a BudgetStore such as RedisBudget, got dict"
    ):
        FayClient(KEY, rate_limits="free", budget={})  # type: ignore[arg-type]


def test_a_budget_without_rate_limits_is_refused() -> None:
    with pytest.raises(
        ConfigurationError,
        match=r"a shared budget needs rate_limits to share: FayClient\(rate_limits='free', "
        r"budget=\.\.\.\)",
    ):
        FayClient(KEY, budget=MemoryBudget())


async def test_data_of_the_wrong_shape_names_the_status_and_shows_the_body() -> None:
    body = {"status": True, "data": {"request_id": 5, "status": "PENDING"}}
    async with FayClient(KEY, transport=answering(body)) as fay:
        with pytest.raises(UnexpectedResponseError) as caught:
            await fay.get_status("r-1")
    assert caught.value.status_code == 200
    assert "ConversationInfo data does not match" in str(caught.value)
    assert caught.value.body == snippet(body)
