"""``fay-async batch --redis``: three worker processes share one batch, one of them killed.

The emulator is served on a loopback socket from this process; the workers are the real
command line in child processes, sharing a real redis-server. Real time, a few seconds.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from fay_async._cli.main import main
from fay_async.testing import DEFAULT_API_KEY, FayEmulator, serve

pytestmark = pytest.mark.real_time

PROMPTS = 200


def worker(
    inputs: Path, out: Path, base_url: str, redis_url: str, env: dict[str, str]
) -> subprocess.Popen[bytes]:
    return subprocess.Popen(  # noqa: S603 - this interpreter, the package's own command
        [
            sys.executable, "-m", "fay_async._cli", "batch", str(inputs),
            "--out", str(out), "--base-url", base_url, "--redis", redis_url,
            "--lease", "1", "--concurrency", "20", "--poll-interval", "0.05",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip


def test_three_workers_one_killed_and_restarted_create_each_prompt_once(
    tmp_path: Path, redis_url: str, redis_prefix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    inputs = tmp_path / "prompts.txt"
    inputs.write_text("".join(f"{redis_prefix} prompt {i}\n" for i in range(PROMPTS)))
    emulator = FayEmulator(speed=300.0)  # a research: about a minute, 0.2 s here
    env = {**os.environ, "FAY_API_KEY": DEFAULT_API_KEY}
    with serve(emulator) as base_url:
        workers = [
            worker(inputs, tmp_path / f"out{i}.jsonl", base_url, redis_url, env) for i in range(3)
        ]
        try:
            deadline = time.monotonic() + 30
            while sum(1 for r in emulator.researches()) < PROMPTS // 3:
                assert time.monotonic() < deadline
                time.sleep(0.02)
            workers[0].send_signal(signal.SIGKILL)  # mid-run: creates and waits in flight
            workers[0].wait(timeout=10)
            workers[0] = worker(inputs, tmp_path / "out0.jsonl", base_url, redis_url, env)
            codes = [process.wait(timeout=60) for process in workers]
        finally:
            for process in workers:
                if process.poll() is None:
                    process.kill()
                    process.wait()
    created = Counter(r.prompt for r in emulator.researches())
    assert max(created.values()) == 1  # no prompt created twice
    export = tmp_path / "union.jsonl"
    env_code = main(["batch-export", str(inputs), "--redis", redis_url, "--out", str(export)])
    lines = [json.loads(line) for line in export.read_text().splitlines()]
    assert len(lines) == PROMPTS  # exactly one line per prompt
    assert len({line["id"] for line in lines}) == PROMPTS
    statuses = Counter(line["status"] for line in lines)
    uncertain = [line for line in lines if line["status"] != "COMPLETED"]
    assert all(line["error"]["code"] == "CREATE_INTERRUPTED" for line in uncertain)
    assert statuses["COMPLETED"] + len(uncertain) == PROMPTS
    assert len(created) >= statuses["COMPLETED"]
    for i in range(3):  # every worker wrote the same union
        assert (tmp_path / f"out{i}.jsonl").read_text() == export.read_text()
    assert f"{PROMPTS} prompts:" in capsys.readouterr().out
    print(f"batch: {dict(statuses)}, {len(created)} creates, exit codes {codes}, {env_code}")


def test_a_worker_takes_over_what_a_dead_one_left(
    tmp_path: Path,
    redis_url: str,
    redis_prefix: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import redis as sync_redis

    from fay_async import ResearchStatus
    from fay_async._cli.inputs import read_items
    from fay_async.redis import batch_name

    inputs = tmp_path / "prompts.txt"
    prompts = [f"{redis_prefix} takeover {i}" for i in range(5)]
    inputs.write_text("".join(p + "\n" for p in prompts))
    items = read_items(inputs)
    name = batch_name([(item.key, item.fingerprint) for item in items])
    emulator = FayEmulator(speed=300.0)
    monkeypatch.setenv("FAY_API_KEY", DEFAULT_API_KEY)
    monkeypatch.setenv("FAY_REDIS_URL", redis_url)
    with serve(emulator) as base_url:
        made = emulator.client()
        import anyio

        async def create() -> str:
            async with made:
                return (await made.create_conversation(prompts[2])).request_id

        existing = anyio.run(create)
        raw = sync_redis.Redis.from_url(redis_url, decode_responses=True)
        dead = {"owner": "dead-worker"}
        raw.hset(f"fay:batch:{name}", "line-1", json.dumps({**dead, "state": "claimed"}))
        raw.hset(f"fay:batch:{name}", "line-2", json.dumps({**dead, "state": "creating"}))
        raw.hset(
            f"fay:batch:{name}",
            "line-3",
            json.dumps({**dead, "state": "created", "request_id": existing}),
        )
        raw.close()
        out = tmp_path / "out.jsonl"
        common = [
            "--base-url",
            base_url,
            "--lease",
            "1",
            "--poll-interval",
            "0.05",
        ]
        code = main(["batch", str(inputs), "--out", str(out), *common])
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [line["id"] for line in lines] == [f"line-{i}" for i in range(1, 6)]
    assert [line["status"] for line in lines] == ["COMPLETED", "ERROR", *["COMPLETED"] * 3]
    assert lines[1]["error"]["code"] == "CREATE_INTERRUPTED"
    assert lines[2]["request_id"] == existing  # followed, not created again
    assert Counter(r.prompt for r in emulator.researches()) == Counter(
        p for i, p in enumerate(prompts) if i != 1
    )
    assert all(r.status is ResearchStatus.COMPLETED for r in emulator.researches())
    assert code == 1  # one prompt did not complete
    assert "5 prompts: 4 completed, 0 unfinished" in capsys.readouterr().out


def test_fleet_batch_usage_errors(
    tmp_path: Path,
    redis_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    inputs = tmp_path / "prompts.txt"
    inputs.write_text("a\nb\n")
    out = str(tmp_path / "out.jsonl")
    assert main(["batch", str(inputs), "--out", out, "--emulator", "--redis", redis_url]) == 2
    assert "the built-in emulator lives in one process" in capsys.readouterr().err
    monkeypatch.setenv("FAY_API_KEY", DEFAULT_API_KEY)
    monkeypatch.setenv("FAY_REDIS_URL", redis_url)
    assert main(["batch", str(inputs), "--out", out, "--retry-uncertain"]) == 2
    assert "--retry-uncertain works on a batch of one process" in capsys.readouterr().err
    assert main(["batch-export", str(inputs), "--out", out]) == 1
    lines = [json.loads(line) for line in Path(out).read_text().splitlines()]
    assert [(line["status"], line["state"]) for line in lines] == [("UNFINISHED", "unclaimed")] * 2
    monkeypatch.delenv("FAY_REDIS_URL")
    assert main(["batch-export", str(inputs), "--out", out]) == 2
    assert "batch-export needs --redis URL" in capsys.readouterr().err
