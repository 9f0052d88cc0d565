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
