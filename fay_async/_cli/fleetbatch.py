"""``fay-async batch FILE --redis URL``: one batch run by several workers, on any hosts.

Every worker runs the same command over the same input. Items are claimed one at a time
in Redis (:mod:`fay_async._redis.claims`), so each prompt is created once fleet-wide; the
workers share the key's budget (``--tier``) through Redis too. When no item is left,
each worker writes the union of the results to its ``--out``; ``fay-async batch-export``
writes it at any time.

A worker whose lease lapsed (a stall, a partition) may find that another worker took
its item over: its ``creating`` / ``created`` / ``finished`` mark is refused
(:class:`~fay_async.redis.ClaimLostError`), and it drops the item, without sending its
create if it had not yet, and says so on stderr.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import anyio

from fay_async import BatchItem, research_many

from .batchrun import _checked_out, _cut_off_by_a_crash, _rewrite, _with_retry_hint
from .inputs import read_items
from .progress import open_progress
from .run import EXIT_NOT_COMPLETED, EXIT_OK, UsageError, say
from .target import make_manager, open_target

__all__ = ["batch_export", "fleet_batch", "redis_url"]

REDIS_ENV: Final = "FAY_REDIS_URL"
#: The status of an item no worker has finished yet, in an export.
UNFINISHED: Final = "UNFINISHED"


def redis_url(args: argparse.Namespace) -> str | None:
    """``--redis``, else ``$FAY_REDIS_URL``, else None (a batch of one process)."""
    url = getattr(args, "redis", None) or os.environ.get(REDIS_ENV) or None
    return None if url is None else str(url)


def _claims(url: str, items: Sequence[BatchItem], args: argparse.Namespace) -> Any:
    try:
        from fay_async.redis import BatchClaims, batch_name  # noqa: PLC0415
    except ModuleNotFoundError:  # pragma: no cover - redis-py is the extra's only need
        raise UsageError('--redis needs redis-py: pip install "fay-async[redis]"') from None
    name = batch_name([(item.key, item.fingerprint) for item in items])
    return BatchClaims(url, batch=name, lease=getattr(args, "lease", 15.0))


def _union(items: Sequence[BatchItem], states: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """One record per item, in input order: its result, or what is known so far."""
    records = []
    for item in items:
        entry = states.get(item.key, {})
        result = entry.get("result")
        if entry.get("state") == "finished" and isinstance(result, dict):
            records.append(result)
            continue
        record: dict[str, Any] = {"id": item.key}
        if item.line is not None:
            record["line"] = item.line
        record["request_id"] = entry.get("request_id")
        record["status"] = UNFINISHED
        record["state"] = entry.get("state", "unclaimed")
        records.append(record)
    return records


class _Marks:
    """The create's callbacks, each a compare-and-set in Redis; a refused one drops the item."""

    def __init__(self, claims: Any) -> None:
        self._claims = claims
        #: The items another worker took over from this one.
        self.lost: set[str] = set()

    def _mark(self, step: Any, item: BatchItem, *args: Any) -> None:
        from fay_async.redis import ClaimLostError  # noqa: PLC0415 - an optional extra

        try:
            step(item.key, *args)
        except ClaimLostError:
            self.lost.add(item.key)
            raise  # from creating: the create is not sent

    def creating(self, item: BatchItem) -> None:
        self._mark(self._claims.creating, item)

    def created(self, item: BatchItem, request_id: str) -> None:
        self._mark(self._claims.created, item, request_id)


async def _record(claims: Any, key: str, record: dict[str, Any] | None) -> None:
    """Record ``key``'s result, unless another worker took it over (then say so)."""
    from fay_async.redis import ClaimLostError  # noqa: PLC0415 - an optional extra

    if record is not None:
        try:
            await claims.finished(key, record)
        except ClaimLostError:
            pass
        else:
            return
    say(
        f"{key}: another worker took this prompt over (this worker's lease had lapsed); "
        "it is left to that worker"
    )


async def _export(claims: Any, items: Sequence[BatchItem], out: Path) -> int:
    records = _union(items, await claims.states())
    _rewrite(out, records)
    done = sum(record.get("status") == "COMPLETED" for record in records)
    unfinished = sum(record.get("status") == UNFINISHED for record in records)
    print(f"{len(records)} prompts: {done} completed, {unfinished} unfinished -> {out}")
    return EXIT_OK if done == len(records) else EXIT_NOT_COMPLETED


async def fleet_batch(args: argparse.Namespace) -> int:
    """Run this worker's share of a batch shared through Redis; export the union at the end."""
    url = redis_url(args)
    assert url is not None  # noqa: S101 - batch() sends only --redis runs here
    if args.emulator:
        raise UsageError(
            "--redis shares a batch between processes, but the built-in emulator lives in "
            "one process: serve one (`fay-async emulator`) and pass --base-url"
        )
    if args.retry_uncertain:
        raise UsageError("--retry-uncertain works on a batch of one process, without --redis")
    items = read_items(args.file)
    out = _checked_out(Path(args.out), Path(args.file))
    claims = _claims(url, items, args)
    by_key = {item.key: item for item in items}
    keys = [item.key for item in items]
    budget = None
    if args.tier is not None:
        from fay_async.redis import RedisBudget  # noqa: PLC0415 - an optional extra

        budget = RedisBudget(url)
    try:
        with open_progress() as progress:
            async with (
                open_target(args, budget=budget) as target,
                make_manager(args, target) as manager,
            ):
                await claims.renew()
                progress.started(len(items), 0)

                marks = _Marks(claims)

                async def one(item: BatchItem, claim: Any) -> dict[str, Any] | None:
                    if claim.action == "uncertain":
                        return _cut_off_by_a_crash(item).to_json()
                    resume = {item.key: claim.request_id} if claim.action == "resume" else {}
                    async with research_many(
                        manager,
                        [item],
                        concurrency=1,
                        timeout=target.real_seconds(args.timeout),
                        resume=resume,
                        on_creating=marks.creating,
                        on_created=marks.created,
                    ) as results:
                        async for result in results:
                            if item.key in marks.lost:
                                return None
                            progress.finished(result)
                            return _with_retry_hint(result).to_json()
                    raise AssertionError(
                        "research_many yields one result per item"
                    )  # pragma: no cover

                async def work() -> None:
                    while True:
                        claim = await claims.next(keys)
                        if claim == "done":
                            return
                        if claim == "wait":  # others hold the rest: one of them may die
                            await anyio.sleep(claims.lease / 4)
                            continue
                        item = by_key[claim.key]
                        await _record(claims, item.key, await one(item, claim))

                async with anyio.create_task_group() as tg:
                    tg.start_soon(claims.heartbeat)
                    async with anyio.create_task_group() as workers:
                        for _ in range(args.concurrency):
                            workers.start_soon(work)
                    tg.cancel_scope.cancel()
        return await _export(claims, items, out)
    finally:
        with anyio.CancelScope(shield=True):
            await claims.aclose()
            if budget is not None:
                await budget.aclose()


async def batch_export(args: argparse.Namespace) -> int:
    """``fay-async batch-export FILE --redis URL --out OUT``: the union, one line per prompt."""
    url = redis_url(args)
    if url is None:
        raise UsageError(f"batch-export needs --redis URL (or ${REDIS_ENV})")
    items = read_items(args.file)
    out = _checked_out(Path(args.out), Path(args.file))
    claims = _claims(url, items, args)
    try:
        return await _export(claims, items, out)
    finally:
        await claims.aclose()
