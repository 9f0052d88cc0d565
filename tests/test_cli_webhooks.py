"""The command line's webhooks: research and batch --webhook-port, emulator --webhook-url.

These run the command as a user does (its own event loop, real sockets on 127.0.0.1).
"""

from __future__ import annotations

import json
import re
import socket
import sys
from pathlib import Path

import pytest

from fay_async import _cli
from fay_async.testing import FayEmulator, Scenario, serve

from .test_emulator_server import FakeServer, fake_uvicorn  # noqa: F401 - a fixture

KEY = "test-key"
EVENT_LINE = re.compile(r"webhook evt_[0-9a-f]{24}: (\w+) (\w+) for ([0-9a-f-]{36})")


def received(stderr: str) -> dict[str, list[tuple[str, str]]]:
    """The events the command's receiver verified and logged, by research."""
    events: dict[str, list[tuple[str, str]]] = {}
    for kind, status, request_id in EVENT_LINE.findall(stderr):
        events.setdefault(request_id, []).append((kind, status))
    return events


def test_research_on_the_emulator_receives_every_event(
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = ["research", "pushed", "--emulator", "--webhook-port", "0", "--verbose", "--json"]
    assert _cli.main(argv) == 0
    captured = capsys.readouterr()
    result = json.loads(captured.out)
    assert re.search(
        r"receiving Fay webhooks on http://127\.0\.0\.1:\d+/ from the built-in", captured.err
    )
    # The wait ended on the pushes: no status call, and the output came with its event
    # (without --webhook-port the same research takes about ten status calls).
    assert "GET /conversation/" not in captured.err
    assert received(captured.err)[result["request_id"]] == [
        ("Status", "PENDING"),
        ("Status", "PROCESSING"),
        ("Status", "COMPLETED"),
        ("Output", "COMPLETED"),
    ]


def test_batch_on_the_emulator_receives_the_events_of_each_prompt(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("first question\nsecond question\n")
    out = tmp_path / "results.jsonl"
    argv = ["batch", str(prompts), "--out", str(out), "--emulator", "--webhook-port", "0"]
    assert _cli.main([*argv, "--webhook-secret", "s3cret", "--verbose"]) == 0
    events = received(capsys.readouterr().err)
    ids = [json.loads(line)["request_id"] for line in out.read_text().splitlines()]
    assert len(ids) == 2
    for request_id in ids:
        assert events[request_id][-1] == ("Output", "COMPLETED")


def test_research_against_a_service_listens_for_its_tunnel(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAY_WEBHOOK_SECRET", "from-the-env")
    emulator = FayEmulator(api_keys=[KEY], scenario=Scenario(0.2, 0.2))
    with serve(emulator) as base_url:
        argv = ["research", "by poll", "--api-key", KEY, "--base-url", base_url]
        assert _cli.main([*argv, "--webhook-port", "0", "--webhook-host", "127.0.0.1"]) == 0
    captured = capsys.readouterr()
    assert "(point your tunnel here)" in captured.err
    assert "> by poll" in captured.out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--emulator", "--webhook-secret", "s"], "--webhook-secret needs --webhook-port"),
        (["--emulator", "--webhook-host", "::1"], "--webhook-host needs --webhook-port"),
        (["--api-key", KEY, "--webhook-port", "0"], "--webhook-port needs the webhook secret"),
        (
            ["--emulator", "--webhook-port", "0", "--webhook-secret", " "],
            "--webhook-secret is empty",
        ),
        (
            ["--emulator", "--webhook-port", "0", "--webhook-host", "no.such.host.invalid"],
            "cannot listen",
        ),
    ],
)
def test_bad_webhook_options_are_one_line(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    assert _cli.main(["research", "question", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err


def test_a_busy_webhook_port_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert _cli.main(["research", "q", "--emulator", "--webhook-port", str(port)]) == 2
    assert f"--webhook-port {port}: cannot listen on 127.0.0.1" in capsys.readouterr().err


def test_webhook_port_without_uvicorn(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "uvicorn", None)
    assert _cli.main(["research", "q", "--emulator", "--webhook-port", "0"]) == 2
    assert 'needs uvicorn: pip install "fay-async[cli]"' in capsys.readouterr().err


@pytest.mark.parametrize(
    ("value", "message"),
    [("70000", "a port is 0-65535"), ("http", "not a port number: 'http'")],
)
def test_a_bad_webhook_port_is_refused_by_the_parser(
    capsys: pytest.CaptureFixture[str], value: str, message: str
) -> None:
    with pytest.raises(SystemExit) as info:
        _cli.main(["batch", "in.txt", "--out", "o.jsonl", "--webhook-port", value])
    assert info.value.code == 2
    assert message in capsys.readouterr().err


# --- fay-async emulator --webhook-url ---------------------------------------------------------


def test_the_emulator_command_delivers_webhooks(
    fake_uvicorn: type[FakeServer],  # noqa: F811 - the fixture
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url = "https://abc.example-tunnel.test/hooks/fay"
    assert (
        _cli.main(["emulator", "--port", "0", "--webhook-url", url, "--webhook-secret", "s"]) == 0
    )
    config, _ = fake_uvicorn.runs[0]
    assert config.app.webhook_url == url
    assert config.lifespan == "on"  # the lifespan runs the delivery
    assert f"Webhooks to {url}" in capsys.readouterr().out
    monkeypatch.setenv("FAY_WEBHOOK_SECRET", "from-the-env")
    assert _cli.main(["emulator", "--port", "0", "--webhook-url", url]) == 0
    assert fake_uvicorn.runs[1][0].app.webhook_url == url


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--webhook-secret", "s"], "--webhook-secret needs --webhook-url"),
        (["--webhook-url", "http://127.0.0.1:9/"], "--webhook-url needs a secret to sign with"),
        (
            ["--webhook-url", "127.0.0.1:9", "--webhook-secret", "s"],
            "must be an http:// or https://",
        ),
        (["--webhook-url", "http:///x", "--webhook-secret", "s"], "must be an http:// or https://"),
    ],
)
def test_the_emulator_commands_bad_webhook_options(
    fake_uvicorn: type[FakeServer],  # noqa: F811 - the fixture
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    message: str,
) -> None:
    assert _cli.main(["emulator", "--port", "0", *argv]) == 2
    assert message in capsys.readouterr().err
    assert fake_uvicorn.runs == []
