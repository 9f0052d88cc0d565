"""The fay-async command: each subcommand, its errors, Ctrl-C, and kill-then-resume."""

from __future__ import annotations

import importlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

import fay_async
from fay_async import BatchItem, BatchResult, _cli
from fay_async._cli import batchrun, commands, progress
from fay_async._cli.journal import journal_path
from fay_async._cli.main import build_parser
from fay_async._cli.run import describe
from fay_async._cli.target import Target, poll_policy
from fay_async.exceptions import (
    APIConnectionError,
    AuthenticationError,
    ConfigurationError,
    NotFoundError,
    RateLimitError,
    ResearchFailedError,
    ResearchStoppedError,
    ResearchTimeoutError,
    ServerError,
)
from fay_async.testing import DEFAULT_API_KEY, Fault, FayEmulator, Scenario, serve

KEY = "test-key"
main_module = importlib.import_module("fay_async._cli.main")  # _cli.main is the function


def parse(*argv: str) -> Any:
    return build_parser().parse_args(list(argv))


# --- help -------------------------------------------------------------------------------------


def test_top_level_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        _cli.main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for command in ("research", "batch", "status", "output", "stop", "emulator"):
        assert command in out


def test_version_is_printed(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        _cli.main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out == f"fay-async {fay_async.__version__}\n"


def test_help_loads_neither_the_library_nor_the_emulator() -> None:
    # --help must stay fast: argparse and the parser, not httpx, anyio, the emulator,
    # rich or the package's metadata.
    script = (
        "import sys\n"
        "from fay_async._cli import main\n"
        "try:\n"
        "    main(['--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "heavy = ('httpx', 'anyio', 'rich', 'uvicorn', 'attrs', 'cattrs', 'importlib.metadata',"
        " 'fay_async.testing', 'fay_async._client')\n"
        "print(sorted(m for m in sys.modules if m in heavy), file=sys.stderr)\n"
    )
    done = subprocess.run(  # noqa: S603 - our own interpreter and script
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stderr.strip() == "[]"
    assert "research" in done.stdout


def test_the_emulator_key_in_the_help_is_the_emulators_default() -> None:
    assert main_module.DEFAULT_API_KEY == DEFAULT_API_KEY


@pytest.mark.parametrize(
    ("command", "options"),
    [
        ("research", ["--timeout", "--schema", "--json", "--emulator", "--api-key", "--tier"]),
        (
            "batch",
            ["--out", "--concurrency", "--timeout", "--tier", "--emulator", "journal", "130"],
        ),
        ("status", ["ID", "--json", "--emulator"]),
        ("output", ["ID", "--json", "30 days"]),
        ("stop", ["ID", "already ended"]),
    ],
)
def test_each_command_has_complete_help(
    command: str, options: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        _cli.main([command, "--help"])
    assert info.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    for option in options:
        assert option in out, option


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["batch", "p.txt"], "the following arguments are required: --out"),
        (["batch", "p.txt", "--out", "o", "--concurrency", "0"], "must be at least 1"),
        (["batch", "p.txt", "--out", "o", "--concurrency", "many"], "not a whole number"),
        (["research", "q", "--timeout", "-3"], "must be a positive number"),
        (["research", "q", "--tier", "gold"], "invalid choice: 'gold'"),
        (["status"], "the following arguments are required: ID"),
    ],
)
def test_bad_flags_exit_2(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        _cli.main(argv)
    assert info.value.code == 2
    assert message in capsys.readouterr().err


# --- one line per failure ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "text", "code"),
    [
        (ConfigurationError("no Fay API key: set FAY_API_KEY"), "FAY_API_KEY", 2),
        (
            AuthenticationError("Invalid or expired API key", status_code=401),
            "the API key was refused (Invalid or expired API key); check FAY_API_KEY",
            2,
        ),
        (NotFoundError("Request not found", status_code=404), "unknown request id", 2),
        (RateLimitError("Rate limit exceeded", retry_after=90), "retry in 90 s (after ", 1),
        (RateLimitError("Rate limit exceeded"), "retry later", 1),
        (
            ResearchTimeoutError("t", request_id="r1", stopped=True),
            "research r1 timed out; it was stopped",
            1,
        ),
        (
            ResearchTimeoutError("t", request_id="r1"),
            "it may still be running",
            1,
        ),
        (
            ResearchFailedError("f", request_id="r1", error_message="agent crashed"),
            "research r1 failed: agent crashed",
            1,
        ),
        (ResearchFailedError("f", request_id="r1", error_message=None), "no reason given", 1),
        (ResearchStoppedError("s", request_id="r1"), "research r1 was stopped", 1),
        (APIConnectionError("refused"), "could not reach the Fay API: refused", 1),
        (ServerError("down", status_code=503), "HTTP 503: down", 1),
    ],
)
def test_describe(error: Exception, text: str, code: int) -> None:
    message, exit_code = describe(error)
    assert text in message
    assert "\n" not in message
    assert exit_code == code


def test_missing_key_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert _cli.main(["status", "abc"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "no Fay API key: set FAY_API_KEY" in err
    assert "--api-key" in err
    assert "--emulator" in err
    assert "FayClient(" not in err
    assert "Traceback" not in err


def test_invalid_request_id(capsys: pytest.CaptureFixture[str]) -> None:
    assert _cli.main(["output", "../../etc", "--api-key", KEY]) == 2
    assert "invalid request id" in capsys.readouterr().err


def test_unknown_request_id_on_the_emulator(capsys: pytest.CaptureFixture[str]) -> None:
    assert _cli.main(["stop", "no-such-id", "--emulator"]) == 2
    err = capsys.readouterr().err
    assert "built-in Fay emulator" in err
    assert "unknown request id (Request not found)" in err


def test_unreadable_input_names_file_and_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    prompts = tmp_path / "in.jsonl"
    prompts.write_text('{"prompt": "ok"}\n{"prompt": 3}\n')
    code = _cli.main(["batch", str(prompts), "--out", str(tmp_path / "o.jsonl"), "--emulator"])
    assert code == 2
    assert f"{prompts}:2: 'prompt' must be a non-empty string" in capsys.readouterr().err
    assert not (tmp_path / "o.jsonl").exists()


@pytest.mark.parametrize(
    ("out", "message"),
    [
        (".", "is a directory"),
        ("missing/o.jsonl", "does not exist"),
        ("in.txt", "must not be the input file"),
    ],
)
def test_bad_out_path(
    tmp_path: Path, out: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "in.txt").write_text("question\n")
    os.chdir(tmp_path)
    assert _cli.main(["batch", "in.txt", "--out", out, "--emulator"]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "no such file"),
        ("[1, 2", ":1:6: not valid JSON"),
        ("[1, 2]", "must be a JSON object"),
    ],
)
def test_bad_schema_file(
    tmp_path: Path, content: str | None, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    schema = tmp_path / "schema.json"
    if content is not None:
        schema.write_text(content)
    assert _cli.main(["research", "q", "--schema", str(schema), "--emulator"]) == 2
    assert message in capsys.readouterr().err


def test_empty_prompt(capsys: pytest.CaptureFixture[str]) -> None:
    assert _cli.main(["research", "  ", "--emulator"]) == 2
    assert "the prompt is empty" in capsys.readouterr().err


# --- the commands on virtual time ----------------------------------------------------------------


@pytest.mark.anyio
async def test_research_prints_markdown(capsys: pytest.CaptureFixture[str]) -> None:
    code = await commands.research(parse("research", "Is fusion close?", "--emulator"))
    assert code == 0
    out = capsys.readouterr().out
    assert out.startswith("# ")
    assert "> Is fusion close?" in out


@pytest.mark.anyio
async def test_research_with_schema_prints_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    schema = tmp_path / "s.json"
    schema.write_text(json.dumps({"type": "object", "properties": {"n": {"type": "integer"}}}))
    args = parse("research", "Count", "--emulator", "--schema", str(schema), "--json")
    assert await commands.research(args) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["status"] == "COMPLETED"
    assert result["emulated"] is True
    assert isinstance(result["output"]["n"], int)


@pytest.mark.anyio
async def test_research_timeout_stops_it(capsys: pytest.CaptureFixture[str]) -> None:
    args = parse("research", "Slow", "--emulator", "--timeout", "5")
    with pytest.raises(ResearchTimeoutError) as info:
        await commands.research(args)
    assert info.value.stopped


def test_status_output_and_stop_on_a_served_emulator(
    capsys: pytest.CaptureFixture[str],
) -> None:
    def scenario(prompt: str) -> Scenario:
        return Scenario(pending_s=1e6 if "running" in prompt else 0, processing_s=0)

    emulator = FayEmulator(api_keys=[KEY], scenario=scenario)
    with serve(emulator) as base_url:
        connect = ["--api-key", KEY, "--base-url", base_url]

        async def create(prompt: str) -> str:
            async with emulator.client() as client:
                return (await client.create_conversation(prompt)).request_id

        done = anyio.run(create, "Done already")
        pending = anyio.run(create, "Still running")

        assert _cli.main(["status", done, *connect]) == 0
        out = capsys.readouterr().out
        assert "status: COMPLETED" in out
        assert "prompt: Done already" in out
        assert _cli.main(["status", done, "--json", *connect]) == 0
        assert json.loads(capsys.readouterr().out)["status"] == "COMPLETED"
        assert _cli.main(["output", done, *connect]) == 0
        assert "> Done already" in capsys.readouterr().out
        assert _cli.main(["output", done, "--json", *connect]) == 0
        assert "Done already" in json.loads(capsys.readouterr().out)["output"]
        assert _cli.main(["output", pending, *connect]) == 1
        assert "RESEARCH_NOT_COMPLETED" in capsys.readouterr().err
        assert _cli.main(["stop", done, *connect]) == 0
        assert "already COMPLETED, nothing to stop" in capsys.readouterr().out
        assert _cli.main(["stop", pending, *connect]) == 0
        assert f"{pending}: STOPPED" in capsys.readouterr().out
        assert emulator.research(pending).stopped
        assert _cli.main(["status", done, "--api-key", "wrong-key", "--base-url", base_url]) == 2
        assert "the API key was refused" in capsys.readouterr().err


@pytest.mark.anyio
async def test_batch_on_the_emulator(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("first question\nsecond question\n\nthird question\n")
    out = tmp_path / "results.jsonl"
    args = parse("batch", str(prompts), "--out", str(out), "--emulator", "--tier", "free")
    assert await batchrun.batch(args) == 0
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(r["line"] for r in records) == [1, 2, 4]
    assert all(r["status"] == "COMPLETED" and r["emulated"] for r in records)
    streams = capsys.readouterr()
    assert f"3 prompts: 3 completed -> {out}" in streams.out
    assert "[3/3]" in streams.err
    assert journal_path(out).exists()
    # Rerun: everything is already done, nothing is created again.
    assert await batchrun.batch(args) == 0
    assert len(out.read_text().splitlines()) == 3
    assert "(3 already done)" in capsys.readouterr().err


@pytest.mark.anyio
async def test_batch_exit_code_when_some_did_not_complete(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"prompt": "fine", "id": "a"}\n{"prompt": "x", "id": "b"}\n')
    out = tmp_path / "o.jsonl"
    args = parse("batch", str(prompts), "--out", str(out), "--emulator", "--timeout", "1")
    assert await batchrun.batch(args) == 1
    assert "2 prompts: 2 timed out" in capsys.readouterr().out


@pytest.mark.anyio
async def test_an_emulator_batch_resumes_after_an_interrupt(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("first question\nsecond question\n")
    out = tmp_path / "results.jsonl"
    args = parse("batch", str(prompts), "--out", str(out), "--emulator")
    with anyio.move_on_after(0.5):  # interrupted while both researches are queued
        await batchrun.batch(args)
    assert out.read_text() == ""
    # The emulator of the first run is gone with it: the rerun starts both again.
    assert await batchrun.batch(args) == 0
    assert len(out.read_text().splitlines()) == 2


def test_a_batch_is_resumed_only_where_it_started(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("only question\n")
    out = tmp_path / "results.jsonl"
    assert _cli.main(["batch", str(prompts), "--out", str(out), "--emulator"]) == 0
    capsys.readouterr()
    code = _cli.main(
        [
            "batch",
            str(prompts),
            "--out",
            str(out),
            "--api-key",
            KEY,
            "--base-url",
            "http://127.0.0.1:9",
        ]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert "started against the built-in emulator and is now run against http://127.0.0.1:9" in err


def test_poll_interval_is_a_fixed_schedule() -> None:
    target = Target(client=None, speed=1.0, emulated=False)  # type: ignore[arg-type]
    policy = poll_policy(parse("batch", "f", "--out", "o", "--poll-interval", "0.5"), target)
    assert policy.pending_first == policy.pending_max == policy.processing_max == 0.5
    scaled = poll_policy(
        parse("batch", "f", "--out", "o", "--poll-interval", "6"),
        Target(client=None, speed=60.0, emulated=True),  # type: ignore[arg-type]
    )
    assert scaled.processing_first == pytest.approx(0.1)
    fast = poll_policy(
        parse("batch", "f", "--out", "o"), Target(client=None, speed=60.0, emulated=True)
    )  # type: ignore[arg-type]
    assert fast.pending_max == pytest.approx(15.0 / 60)


def test_live_progress_counts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    with progress.open_progress() as shown:
        assert isinstance(shown, progress.RichProgress)
        shown.started(4, 1)
        item = BatchItem(key="a", prompt="p")
        shown.created(item, "r1")
        shown.created(item, "r2")
        assert "in flight 2" in shown._text()
        shown.finished(BatchResult(item=item, request_id="r1", status="COMPLETED"))
        shown.finished(BatchResult(item=item, request_id="r2", status="TIMED_OUT"))
        text = shown._text()
    assert text == "done 1 · failed 0 · timed out 1 · in flight 0"


def test_plain_progress_when_not_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False)
    with progress.open_progress() as shown:
        assert isinstance(shown, progress.PlainProgress)


def test_verbose_logs_every_attempt(capsys: pytest.CaptureFixture[str]) -> None:
    assert _cli.main(["status", "no-such-id", "--emulator", "-v"]) == 2
    err = capsys.readouterr().err
    assert "GET /conversation/no-such-id/status -> 404" in err
    assert DEFAULT_API_KEY not in err


# --- real processes: Ctrl-C and kill -9 ---------------------------------------------------------


def _cli_process(argv: list[str], base_url: str) -> subprocess.Popen[str]:
    env = {**os.environ, "FAY_API_KEY": KEY, "FAY_BASE_URL": base_url}
    return subprocess.Popen(  # noqa: S603 - our own interpreter and module
        [sys.executable, "-m", "fay_async._cli", *argv],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _journal_ids(journal: Path) -> list[str]:
    if not journal.exists():
        return []
    try:
        with sqlite3.connect(journal) as db:
            rows = db.execute("SELECT request_id FROM items WHERE request_id IS NOT NULL")
            return [row[0] for row in rows]
    except sqlite3.OperationalError:  # the tables are not there yet
        return []


def _wait_for(condition: Any, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:  # pragma: no cover - a hung process
            raise AssertionError("timed out waiting")
        time.sleep(0.02)


@pytest.fixture
def prompts(tmp_path: Path) -> Path:
    path = tmp_path / "prompts.txt"
    path.write_text("".join(f"question number {i}\n" for i in range(1, 7)))
    return path


@pytest.fixture
def served_quick() -> Iterator[tuple[FayEmulator, str]]:
    emulator = FayEmulator(api_keys=[KEY], scenario=Scenario(pending_s=0.15, processing_s=0.15))
    with serve(emulator) as base_url:
        yield emulator, base_url


def test_kill_9_then_rerun_creates_nothing_twice(
    served_quick: tuple[FayEmulator, str], prompts: Path, tmp_path: Path
) -> None:
    emulator, base_url = served_quick
    out = tmp_path / "results.jsonl"
    argv = [
        "batch",
        str(prompts),
        "--out",
        str(out),
        "--concurrency",
        "2",
        "--poll-interval",
        "0.03",
    ]
    first = _cli_process(argv, base_url)
    _wait_for(lambda: len(_journal_ids(journal_path(out))) >= 3)
    first.send_signal(signal.SIGKILL)
    first.communicate(timeout=10)
    created_before = len(emulator.created_prompts())
    assert 3 <= created_before < 6

    second = _cli_process(argv, base_url)
    stdout, stderr = second.communicate(timeout=30)
    records = [json.loads(line) for line in out.read_text().splitlines()]
    # Every prompt has exactly one result ...
    assert sorted(r["id"] for r in records) == [f"line-{i}" for i in range(1, 7)]
    # ... and none was created twice. A create cut off by the kill (sent, no id back yet)
    # is reported as such rather than sent again.
    created = emulator.created_prompts()
    assert len(created) == len(set(created))
    cut_off = [r for r in records if r["status"] != "COMPLETED"]
    assert all(r["error"]["code"] == "CREATE_INTERRUPTED" for r in cut_off)
    assert second.returncode == (1 if cut_off else 0), stderr
    assert f"6 prompts: {6 - len(cut_off)} completed" in stdout
    completed = [r["request_id"] for r in records if r["status"] == "COMPLETED"]
    assert len(set(completed)) == len(completed)


def test_ctrl_c_stops_what_is_in_flight_and_exits_130(prompts: Path, tmp_path: Path) -> None:
    emulator = FayEmulator(api_keys=[KEY], scenario=Scenario(pending_s=60, processing_s=60))
    out = tmp_path / "results.jsonl"
    with serve(emulator) as base_url:
        batch = _cli_process(
            ["batch", str(prompts), "--out", str(out), "--concurrency", "3"], base_url
        )
        _wait_for(lambda: len(_journal_ids(journal_path(out))) == 3)
        batch.send_signal(signal.SIGINT)
        _, stderr = batch.communicate(timeout=20)
        assert batch.returncode == 130, stderr
        assert "interrupted: stopping the researches in flight" in stderr
        assert "Traceback" not in stderr
        states = emulator.researches()
        assert len(states) == 3
        assert all(state.stopped for state in states)
    with sqlite3.connect(journal_path(out)) as db:
        assert db.execute("SELECT COUNT(*) FROM items WHERE interrupted = 1").fetchone() == (3,)


def test_a_second_ctrl_c_exits_at_once(prompts: Path, tmp_path: Path) -> None:
    emulator = FayEmulator(api_keys=[KEY], scenario=Scenario(pending_s=60, processing_s=60))
    emulator.inject_fault("stop", Fault.latency(30), times=10)
    out = tmp_path / "results.jsonl"
    with serve(emulator) as base_url:
        batch = _cli_process(
            ["batch", str(prompts), "--out", str(out), "--concurrency", "2"], base_url
        )
        _wait_for(lambda: len(_journal_ids(journal_path(out))) == 2)
        batch.send_signal(signal.SIGINT)
        _wait_for(lambda: emulator.call_counts()["stop"] >= 1)
        started = time.monotonic()
        batch.send_signal(signal.SIGINT)
        _, stderr = batch.communicate(timeout=20)
        assert time.monotonic() - started < 3
    assert batch.returncode == 130
    assert "interrupted again: exiting now" in stderr


@pytest.mark.parametrize(
    ("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["INT", "TERM"]
)
def test_interrupting_a_single_research_stops_it(signum: int, code: int) -> None:
    emulator = FayEmulator(api_keys=[KEY], scenario=Scenario(pending_s=60, processing_s=60))
    with serve(emulator) as base_url:
        research = _cli_process(["research", "A long question"], base_url)
        _wait_for(lambda: emulator.call_counts()["create"] == 1)
        anyio.run(anyio.sleep, 0.1)
        research.send_signal(signum)
        _, stderr = research.communicate(timeout=20)
        assert research.returncode == code, stderr
        [state] = emulator.researches()
        assert state.stopped
