"""fay_async.redis's checks at construction and its URL redaction: no Redis server needed.

Every Redis store refuses a bad option where it is given, with a message naming it, and
never shows the password of its URL, wherever redis-py would read one.
"""

from __future__ import annotations

import pytest

from fay_async.redis import RedisBudget, RedisRegistry, WebhookFanout, redact


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
