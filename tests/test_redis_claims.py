"""BatchClaims: each step of an item is a compare-and-set, so a lapsed worker pays nothing.

A worker whose lease lapsed (a stall, a partition) while it held an item, and whose item
another worker took over, is refused every later step: above all ``creating``, so the
prompt is not created twice. A real redis-server on loopback; asyncio, real time.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections import Counter
from pathlib import Path

import anyio
import pytest
import redis as sync_redis

from fay_async import SharedStateError
from fay_async._cli.inputs import read_items
from fay_async._cli.main import main
from fay_async.redis import BatchClaims, Claim, ClaimLostError, batch_name
from fay_async.testing import DEFAULT_API_KEY, FayEmulator, serve

pytestmark = [pytest.mark.real_time]


@pytest.mark.anyio
@pytest.mark.asyncio_only
async def test_a_worker_whose_item_was_taken_over_is_refused_every_step(
    redis_url: str, redis_prefix: str
) -> None:
    a = BatchClaims(redis_url, batch="b", key_prefix=redis_prefix, lease=0.2)
    b = BatchClaims(redis_url, batch="b", key_prefix=redis_prefix, lease=5.0)
    try:
        await a.renew()
        claim = await a.next(["k"])
        assert isinstance(claim, Claim) and (claim.key, claim.action) == ("k", "new")
        await anyio.sleep(0.4)  # A stalls: its lease lapses
        await b.renew()
        taken = await b.next(["k"])
        assert isinstance(taken, Claim) and (taken.key, taken.action) == ("k", "new")
        with pytest.raises(ClaimLostError, match="'k' cannot be marked creating") as caught:
            a.creating("k")  # A wakes up: its create must not be sent
        assert (caught.value.state, caught.value.owner) == ("claimed", b.worker_id)
        assert isinstance(caught.value, SharedStateError)
        b.creating("k")
        with pytest.raises(ClaimLostError, match="cannot be marked created"):
            a.created("k", "r-a")
        b.created("k", "r-b")
        with pytest.raises(ClaimLostError, match="cannot be marked finished"):
            await a.finished("k", {"id": "k", "status": "COMPLETED", "by": "a"})
        with pytest.raises(ClaimLostError, match="cannot be marked creating"):
            b.creating("k")  # not twice, even by its owner
        await b.finished("k", {"id": "k", "status": "COMPLETED", "by": "b"})
        with pytest.raises(ClaimLostError, match="Redis holds no entry"):
            b.creating("unclaimed")
        states = await b.states()
        assert states["k"]["owner"] == b.worker_id
        assert states["k"]["result"]["by"] == "b"
        assert await a.next(["k"]) == "done"
    finally:
        await a.aclose()
        await b.aclose()


def test_a_create_refused_by_its_claim_is_not_sent(
    tmp_path: Path,
    redis_url: str,
    redis_prefix: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    prompts = [f"{redis_prefix} lapsed {i}" for i in range(3)]
    inputs = tmp_path / "prompts.txt"
    inputs.write_text("".join(p + "\n" for p in prompts))
    items = read_items(inputs)
    name = batch_name([(item.key, item.fingerprint) for item in items])
    creating = BatchClaims.creating

    def stalled(self: BatchClaims, key: str) -> None:
        # While this worker stalled, its lease lapsed and another took line-2 over and
        # began creating it; then this worker, awake, marks it creating.
        if key == "line-2" and not getattr(stalled, "done", False):
            stalled.done = True  # type: ignore[attr-defined]
            raw = sync_redis.Redis.from_url(redis_url, decode_responses=True)
            entry = {"owner": "other-worker", "state": "creating"}
            raw.hset(f"fay:batch:{name}", key, json.dumps(entry))
            raw.close()
        creating(self, key)

    monkeypatch.setattr(BatchClaims, "creating", stalled)
    monkeypatch.setenv("FAY_API_KEY", DEFAULT_API_KEY)
    monkeypatch.setenv("FAY_REDIS_URL", redis_url)
    emulator = FayEmulator(speed=300.0)
    out = tmp_path / "out.jsonl"
    with serve(emulator) as base_url:
        code = main(
            [
                "batch", str(inputs), "--out", str(out), "--base-url", base_url,
                "--lease", "1", "--poll-interval", "0.05", "--concurrency", "1",
            ]
        )  # fmt: skip
    assert Counter(r.prompt for r in emulator.researches()) == Counter([prompts[0], prompts[2]])
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [line["status"] for line in lines] == ["COMPLETED", "ERROR", "COMPLETED"]
    # the other worker (gone since) left line-2 uncertain: never created by anyone
    assert lines[1]["error"]["code"] == "CREATE_INTERRUPTED"
    err = capsys.readouterr().err
    assert "line-2: another worker took this prompt over" in err
    assert code == 1


def test_a_blocking_mark_is_bounded_when_redis_does_not_answer() -> None:
    silent = socket.create_server(("127.0.0.1", 0))  # accepts connections, never answers
    port = silent.getsockname()[1]
    claims = BatchClaims(f"redis://:s3cret@127.0.0.1:{port}/0", batch="b", lease=1.0)
    failed: list[BaseException] = []

    def mark() -> None:
        try:
            claims.creating("k")
        except BaseException as error:
            failed.append(error)

    start = time.monotonic()
    thread = threading.Thread(target=mark, daemon=True)
    thread.start()
    thread.join(timeout=5.0)
    try:
        assert not thread.is_alive(), "creating() blocked with no timeout"
        assert time.monotonic() - start < 1.0  # well within the lease
        assert isinstance(failed[0], SharedStateError)
        assert "marking an item creating" in str(failed[0])
        assert "s3cret" not in str(failed[0])
    finally:
        silent.close()
        if claims._sync is not None:
            claims._sync.close()
