"""Smoke test of the benchmarks: every runner function produces sane rows at tiny sizes.

Nothing here asserts a timing: the figures depend on the machine. ``python -m
benchmarks`` (or ``nox -s bench``) runs them at full size.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from benchmarks import (
    BENCHMARKS,
    __main__,
    disconnect,
    fleet,
    free_tier,
    manager,
    overhead,
    polling,
    pushes,
    sniffio_cost,
    startup,
    stops,
    transports,
)
from benchmarks._common import Row, format_table


def _check(rows: list[Row], *, expected: int) -> None:
    assert len(rows) == expected
    for row in rows:
        assert row.benchmark
        assert row.metric
        assert math.isfinite(row.value), row
        if row.target:
            assert isinstance(row.ok, bool), row
        else:
            assert row.ok is None, row
    table = format_table(rows)
    assert table.count("\n") == len(rows) + 1


def _value(rows: list[Row], metric: str) -> float:
    (row,) = (row for row in rows if row.metric == metric)
    return row.value


def test_overhead_rows() -> None:
    rows = overhead.run(quick=True)
    _check(rows, expected=20)
    for row in rows:
        assert row.value > 0 or row.metric == "CPU FayClient adds per call", row
    assert {row.benchmark for row in rows} == {
        "overhead c=1",
        "overhead c=32",
        "overhead in-memory, own httpx client",
        "overhead in-memory, borrowed httpx client",
    }


def test_manager_rows() -> None:
    rows = manager.run(quick=True)
    _check(rows, expected=8)
    assert 0 < _value(rows, "memory per tracked research") < 100_000
    assert _value(rows, "memory per awaited research, with its waiting task") > 0
    assert _value(rows, "cancel_all_research(), wall time") > 0


def test_webhook_rows() -> None:
    rows = pushes.run(quick=True)
    _check(rows, expected=6)
    assert all(row.ok for row in rows if row.target)


def test_stops_rows() -> None:
    rows = stops.run(quick=True)
    _check(rows, expected=6)
    assert all(row.ok for row in rows)


def test_polling_rows() -> None:
    rows = polling.run(quick=True)
    _check(rows, expected=6)
    fixed = _value(rows, "documented 2-s loop: status calls per research")
    adaptive = _value(rows, "default PollPolicy: status calls per research")
    assert fixed > adaptive > 1
    assert _value(rows, "default PollPolicy: mean detection lag") >= 0


def test_free_tier_rows() -> None:
    rows = free_tier.run(quick=True)
    _check(rows, expected=6)
    assert _value(rows, "429 answers") >= 0
    assert _value(rows, "researches completed") == 20


def test_asgi_rows() -> None:
    rows = disconnect.run(quick=True)
    _check(rows, expected=10)
    assert {row.benchmark for row in rows} == {
        "asgi served",
        "asgi served, one client call",
        "asgi in-process",
    }
    assert all(row.value > 0 for row in rows if row.unit == "x")


def test_startup_rows() -> None:
    rows = startup.run(quick=True)
    _check(rows, expected=10)
    assert all(row.value > 0 for row in rows)
    assert _value(rows, "import fay_async / import httpx") > 0


def test_aiohttp_rows() -> None:
    rows = transports.run(quick=True)
    _check(rows, expected=24)
    assert {row.benchmark for row in rows} == {"aiohttp c=1", "aiohttp c=32"}
    assert all(row.value > 0 for row in rows)


def test_sniffio_rows() -> None:
    rows = sniffio_cost.run(quick=True)
    _check(rows, expected=6)
    assert all(row.value > 0 for row in rows)


def test_runner_writes_the_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "out" / "latest.json"
    code = __main__.main(["--quick", "--only", "free-tier", "--json", str(target)])
    assert code == 0
    record = json.loads(target.read_text(encoding="utf-8"))
    assert record["quick"] is True
    assert record["machine"]["python"]
    assert set(record["elapsed_s"]) == {"free-tier", "total"}
    assert [row["benchmark"] for row in record["rows"]] == ["free tier n=20"] * 6
    assert "| free tier n=20 | 429 answers |" in capsys.readouterr().out


def test_every_benchmark_has_a_name() -> None:
    assert set(BENCHMARKS) == {
        "overhead",
        "manager",
        "polling",
        "free-tier",
        "asgi",
        "startup",
        "aiohttp",
        "sniffio",
        "stops",
        "webhooks",
        "fleet",
    }


def test_fleet_rows(redis_url: str) -> None:
    rows = fleet.run(quick=True)
    _check(rows, expected=4)
    assert all(row.value > 0 for row in rows)
    assert all(row.ok for row in rows if row.target)
