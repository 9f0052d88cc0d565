"""fay_async.redis's checks at construction and its URL redaction: no Redis server needed.

Every Redis store refuses a bad option where it is given, with a message naming it, and
never shows the password of its URL, wherever redis-py would read one.
"""

from __future__ import annotations

import math
import re
import socket
from typing import Any

import anyio
import pytest

from fay_async import ConfigurationError, SharedStateError
from fay_async._redis._connect import SOCKET_TIMEOUT, check_key_prefix, check_worker_id
from fay_async.redis import BatchClaims, RedisBudget, RedisRegistry, WebhookFanout, redact


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://h:6379/0?password=s3cret", "redis://h:6379/0?password=***"),
        ("redis://h/0?db=1&password=s3cret&x=y", "redis://h/0?db=1&password=***&x=y"),
        ("rediss://h/0?ssl_password=s3cret", "rediss://h/0?ssl_password=***"),
        ("redis://h/0?pass%77ord=s3cret", "redis://h/0?pass%77ord=***"),
        ("redis://u:pw@h/0?password=s3cret", "redis://u:***@h/0?password=***"),
        ("redis://:s3cret@[::1]:6379/0", "redis://:***@[::1]:6379/0"),
        ("redis://[::1]:6379/0", "redis://[::1]:6379/0"),
        ("redis://:s3cret@h:notaport/0", "redis://:***@h:notaport/0"),
        ("redis://:s3c@ret@h:6379", "redis://:***@h:6379"),
        ("unix://:s3cret@/run/redis.sock?db=0", "unix://:***@/run/redis.sock?db=0"),
        ("redis://h:6379/0", "redis://h:6379/0"),
        ("unix:///run/redis.sock?password=s3cret", "unix:///run/redis.sock?password=***"),
        ("unix:///run/redis.sock", "unix:///run/redis.sock"),
    ],
)
def test_redact_masks_every_password_redis_py_reads(url: str, shown: str) -> None:
    assert redact(url) == shown


@pytest.mark.parametrize("url", ["redis://:s3cret@[::1:6379/0", "redis://:s3cret@h:99999/0"])
def test_redact_never_raises_nor_shows_the_password(url: str) -> None:
    assert "s3cret" not in redact(url)


def test_no_repr_shows_a_password_given_in_the_query() -> None:
    url = "redis://h:6379/0?password=s3cret"
    for store in (RedisBudget(url), RedisRegistry(url), WebhookFanout(url)):
        assert "s3cret" not in repr(store)
        assert "password=***" in repr(store)


STORES = [
    pytest.param(RedisBudget, id="RedisBudget"),
    pytest.param(WebhookFanout, id="WebhookFanout"),
    pytest.param(lambda url, **kw: BatchClaims(url, batch="b", **kw), id="BatchClaims"),
    pytest.param(RedisRegistry, id="RedisRegistry"),
]


@pytest.mark.parametrize("store", STORES)
@pytest.mark.parametrize("prefix", ["", "my app", "tab\there", "new\nline", "nul\x00"])
def test_a_key_prefix_must_be_a_name(store: Any, prefix: str) -> None:
    with pytest.raises(ValueError, match=r"key_prefix must be a non-empty string without white"):
        store("redis://h:6379/0", key_prefix=prefix)


@pytest.mark.parametrize("store", STORES)
def test_a_key_prefix_must_be_a_string(store: Any) -> None:
    with pytest.raises(TypeError, match="key_prefix must be a string, got bytes"):
        store("redis://h:6379/0", key_prefix=b"fay")


def test_a_registry_s_worker_id_is_a_name_or_none() -> None:
    assert check_key_prefix("fay:app-1") == "fay:app-1"
    assert RedisRegistry("redis://h:6379/0", worker_id="web-1").worker_id == "web-1"
    assert RedisRegistry("redis://h:6379/0").worker_id  # a name is made
    assert check_worker_id(None) is None
    with pytest.raises(TypeError, match="worker_id must be a string or None, got int"):
        RedisRegistry("redis://h:6379/0", worker_id=7)  # type: ignore[arg-type]
    for bad in ("", "web 1", "web\n1"):
        with pytest.raises(ValueError, match=r"worker_id must be a non-empty string without"):
            RedisRegistry("redis://h:6379/0", worker_id=bad)


@pytest.mark.parametrize(
    ("ttl", "error", "message"),
    [
        (0, ValueError, "sharer_ttl must be a positive number of seconds, got 0"),
        (-1.0, ValueError, "sharer_ttl must be a positive number of seconds, got -1.0"),
        (math.nan, ValueError, "sharer_ttl must be a positive number of seconds, got nan"),
        (math.inf, ValueError, "sharer_ttl must be a finite number of seconds, got inf"),
        ("60", TypeError, "sharer_ttl must be a number of seconds, got str"),
        (True, TypeError, "sharer_ttl must be a number of seconds, got bool"),
    ],
)
def test_sharer_ttl_is_positive_finite_seconds(ttl: Any, error: type, message: str) -> None:
    with pytest.raises(error, match=re.escape(message)):
        RedisBudget("redis://h:6379/0", sharer_ttl=ttl)


@pytest.mark.parametrize(
    "store",
    [*STORES, pytest.param(RedisRegistry, id="RedisRegistry")],
)
def test_a_url_redis_py_cannot_read_is_refused_at_construction(store: Any) -> None:
    for url in ("localhost:6379", "http://:s3cret@h:6379/0", "REDIS://h"):
        with pytest.raises(
            ConfigurationError, match="the Redis URL must start with redis://, rediss:// or unix://"
        ) as caught:
            store(url)
        assert "s3cret" not in str(caught.value)
    for url in ("redis://:s3cret@h:notaport/0", "redis://:s3cret@[::1:6379/0"):
        with pytest.raises(ConfigurationError, match="host or port of the Redis URL") as caught:
            store(url)
        assert "s3cret" not in str(caught.value)
    for url in ("redis://h", "rediss://h:6380/1", "unix:///run/redis.sock?db=1"):
        store(url)  # accepted


@pytest.mark.anyio
@pytest.mark.asyncio_only
async def test_redis_commands_have_a_bounded_wait_unless_the_url_says() -> None:
    default = RedisBudget("redis://127.0.0.1:6379/0")
    kwargs = default._connection.client().connection_pool.connection_kwargs
    assert kwargs["socket_timeout"] == kwargs["socket_connect_timeout"] == SOCKET_TIMEOUT
    await default.aclose()
    given = RedisBudget("redis://127.0.0.1:6379/0?socket_timeout=0.5")
    assert given._connection.client().connection_pool.connection_kwargs["socket_timeout"] == 0.5
    await given.aclose()


@pytest.mark.anyio
@pytest.mark.asyncio_only
@pytest.mark.real_time
async def test_a_redis_that_never_answers_fails_the_budget_check_clearly() -> None:
    silent = socket.create_server(("127.0.0.1", 0))  # accepts connections, never answers
    port = silent.getsockname()[1]
    url = f"redis://:s3cret@127.0.0.1:{port}/0?socket_timeout=0.1&socket_connect_timeout=0.1"
    budget = RedisBudget(url)
    try:
        with anyio.fail_after(5):  # a few 0.1-s reads, with redis-py's retries
            with pytest.raises(SharedStateError, match="RedisBudget: Redis at") as caught:
                await budget.take("k:status", 10, 60.0)
        assert "s3cret" not in str(caught.value)
    finally:
        await budget.aclose()
        silent.close()
