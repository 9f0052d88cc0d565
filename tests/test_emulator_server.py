"""FayEmulator over a real loopback socket: the documented calls with a plain HTTP client,
every documented error, faults on the wire, ``serve()`` and the ``fay-async emulator`` command.
"""

from __future__ import annotations

import importlib
import logging
import logging.config
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from fay_async import FayClient, ResearchStatus, _cli, exceptions
from fay_async.testing import (
    DEFAULT_API_KEY,
    Fault,
    FayEmulator,
    ManualClock,
    Scenario,
    _server,
    serve,
    serve_forever,
)

pytestmark = pytest.mark.real_time

KEY = "test-key"
HEADERS = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}\+00:00$")
VERSION = "1.0.24"


def err(code: str, message: str) -> dict[str, Any]:
    return {"status": False, "version": VERSION, "error": {"message": message, "code": code}}


class Served:
    def __init__(self, emulator: FayEmulator, clock: ManualClock, http: httpx.Client) -> None:
        self.emulator = emulator
        self.clock = clock
        self.http = http


@pytest.fixture
def served() -> Iterator[Served]:
    clock = ManualClock()
    emulator = FayEmulator(clock=clock, scenario=Scenario(50, 12), rate_limits="free")
    with serve(emulator) as base_url, httpx.Client(base_url=base_url, timeout=5) as http:
        assert base_url.startswith("http://127.0.0.1:")
        yield Served(emulator, clock, http)


# --- the documented calls, field by field -----------------------------------------------------


def test_documented_flow_field_by_field(served: Served) -> None:
    http = served.http
    created = http.post(
        "/api/v1/conversations", headers=HEADERS, json={"prompt": "EU battery rules in 2025?"}
    )
    assert created.status_code == 200
    assert created.headers["content-type"] == "application/json"
    body = created.json()
    assert list(body) == ["status", "version", "data"]
    assert body["status"] is True
    assert body["version"] == VERSION
    data = body["data"]
    assert set(data) == {"request_id", "status", "created_at"}
    request_id = data["request_id"]
    assert uuid.UUID(request_id).version == 4
    assert data["status"] == "PENDING"
    assert ISO.match(data["created_at"])

    status = http.get(f"/api/v1/conversation/{request_id}/status", headers=HEADERS).json()
    assert status["status"] is True
    assert status["data"] == {
        "request_id": request_id,
        "status": "PENDING",
        "prompt": "EU battery rules in 2025?",
        "structured_output": False,
        "output_schema": None,
        "conversation_id": status["data"]["conversation_id"],
        "created_at": data["created_at"],
        "started_at": None,
        "completed_at": None,
        "error_message": None,
        "metadata": None,
    }
    conversation_id = status["data"]["conversation_id"]
    assert re.fullmatch(r"[0-9a-f]{24}", conversation_id)

    served.clock.advance(55)
    running = http.get(f"/api/v1/conversation/{request_id}/status", headers=HEADERS).json()
    assert running["data"]["status"] == "PROCESSING"
    assert ISO.match(running["data"]["started_at"])
    assert running["data"]["completed_at"] is None

    not_yet = http.get(f"/api/v1/conversation/{request_id}/output", headers=HEADERS)
    assert not_yet.status_code == 400
    assert not_yet.json()["error"]["code"] == "RESEARCH_NOT_COMPLETED"

    served.clock.advance(10)
    done = http.get(f"/api/v1/conversation/{request_id}/status", headers=HEADERS).json()
    assert done["data"]["status"] == "COMPLETED"
    assert ISO.match(done["data"]["completed_at"])

    output = http.get(f"/api/v1/conversation/{request_id}/output", headers=HEADERS).json()
    assert output["status"] is True
    assert output["version"] == VERSION
    assert output["data"]["conversation_id"] == conversation_id
    assert output["data"]["status"] == "COMPLETED"
    assert isinstance(output["data"]["output"], str)
    assert "EU battery rules in 2025?" in output["data"]["output"]

    stopped_late = http.post(f"/api/v1/conversation/{request_id}/stop", headers=HEADERS)
    assert stopped_late.status_code == 400
    assert stopped_late.json() == err(
        "CONVERSATION_ALREADY_COMPLETED", "Cannot stop completed conversation"
    )


def test_documented_stop_example(served: Served) -> None:
    http = served.http
    request_id = http.post(
        "/api/v1/conversations",
        headers=HEADERS,
        json={"prompt": "Stop me", "structured_output": True, "output_schema": {"type": "object"}},
    ).json()["data"]["request_id"]
    # The documentation's request: POST with the key and a JSON content type, no body.
    response = http.post(f"/api/v1/conversation/{request_id}/stop", headers=HEADERS)
    assert response.status_code == 200
    assert response.json() == {
        "status": True,
        "version": VERSION,
        "data": {
            "request_id": request_id,
            "status": "STOPPED",
            "message": "Conversation stopped successfully",
        },
    }
    info = http.get(f"/api/v1/conversation/{request_id}/status", headers=HEADERS).json()["data"]
    assert info["status"] == "STOPPED"
    assert info["structured_output"] is True
    assert info["output_schema"] == {"type": "object"}
    assert http.get(f"/api/v1/conversation/{request_id}/output", headers=HEADERS).status_code == 400
    again = http.post(f"/api/v1/conversation/{request_id}/stop", headers=HEADERS)
    assert again.status_code == 400
    assert again.json()["error"]["code"] == "CONVERSATION_ALREADY_STOPPED"


def test_documented_errors(served: Served) -> None:
    http = served.http
    unknown = "e0a05c59-a5d7-44f3-8d5e-9e535e4db957"
    for method, action in (("GET", "status"), ("GET", "output"), ("POST", "stop")):
        response = http.request(method, f"/api/v1/conversation/{unknown}/{action}", headers=HEADERS)
        assert response.status_code == 404
        assert response.json() == err("REQUEST_NOT_FOUND", "Request not found")
    without_key = {"Content-Type": "application/json"}
    wrong_key = {**HEADERS, "Authorization": "Bearer YOUR_API_KEY"}
    for headers in (without_key, wrong_key):
        response = http.post(f"/api/v1/conversation/{unknown}/stop", headers=headers)
        assert response.status_code == 401
        assert response.json() == err("INVALID_API_KEY", "Invalid or expired API key")
    bad_prompt = http.post("/api/v1/conversations", headers=HEADERS, json={"prompt": ""})
    assert bad_prompt.status_code == 400
    assert bad_prompt.json() == err("VALIDATION_ERROR", "Invalid prompt format")
    not_json = http.post("/api/v1/conversations", headers=HEADERS, content=b"prompt=hello")
    assert not_json.status_code == 400
    assert not_json.json()["error"]["code"] == "VALIDATION_ERROR"
    nowhere = http.get("/api/v2/conversations", headers=HEADERS)
    assert nowhere.status_code == 404
    assert nowhere.json()["status"] is False
    wrong = http.put("/api/v1/conversations", headers=HEADERS)
    assert wrong.status_code == 405
    assert wrong.headers["allow"] == "POST"
    assert wrong.json()["status"] is False


def test_free_tier_rate_limit_over_http(served: Served) -> None:
    http = served.http
    for i in range(10):
        ok = http.post("/api/v1/conversations", headers=HEADERS, json={"prompt": f"q{i}"})
        assert ok.status_code == 200
    served.clock.advance(600)
    refused = http.post("/api/v1/conversations", headers=HEADERS, json={"prompt": "q10"})
    assert refused.status_code == 429
    assert refused.json() == err("RATE_LIMIT_EXCEEDED", "Rate limit exceeded")
    assert refused.headers["retry-after"] == "3000"
    served.clock.advance(3000)
    assert (
        http.post("/api/v1/conversations", headers=HEADERS, json={"prompt": "q11"}).status_code
        == 200
    )
    assert len(served.emulator.created_prompts()) == 11


def test_introspection_over_http(served: Served) -> None:
    http = served.http
    request_id = http.post(
        "/api/v1/conversations", headers=HEADERS, json={"prompt": "inspect"}
    ).json()["data"]["request_id"]
    calls = http.get("/_emulator/calls").json()["calls"]
    assert calls == [
        {
            "endpoint": "create",
            "method": "POST",
            "path": "/api/v1/conversations",
            "request_id": request_id,
            "time": 0.0,
            "status_code": 200,
            "error_code": None,
            "fault": None,
        }
    ]
    researches = http.get("/_emulator/researches").json()["researches"]
    assert [(r["request_id"], r["status"], r["prompt"]) for r in researches] == [
        (request_id, "PENDING", "inspect")
    ]


# --- faults on the wire -----------------------------------------------------------------------


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_drop_closes_the_connection_mid_body(served: Served) -> None:
    served.emulator.inject_fault("create", Fault.drop())
    served.emulator.inject_fault("create", Fault.drop(processed=True))
    collect = Collect()
    uvicorn_log = logging.getLogger("uvicorn.error")
    uvicorn_log.addHandler(collect)
    try:
        for prompt in ("before", "after"):
            # A close with the request still unread may reach the client as a reset.
            with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
                served.http.post("/api/v1/conversations", headers=HEADERS, json={"prompt": prompt})
        uvicorn_log.error("a real application error still shows")
    finally:
        uvicorn_log.removeHandler(collect)
    assert served.emulator.created_prompts() == ["after"]
    assert [c.fault for c in served.emulator.calls()] == ["drop", "drop"]
    # uvicorn does not report the injected drops as application errors.
    assert [r.getMessage() for r in collect.records] == ["a real application error still shows"]
    # The server keeps serving after a drop.
    again = served.http.post("/api/v1/conversations", headers=HEADERS, json={"prompt": "again"})
    assert again.status_code == 200


def test_gateway_faults_on_the_wire(served: Served) -> None:
    emulator, http = served.emulator, served.http
    emulator.inject_fault("status", Fault.html(504))
    emulator.inject_fault("status", Fault.empty())
    emulator.inject_fault("status", Fault.error(503, "OVERLOADED", retry_after=3))
    emulator.inject_fault("create", Fault.truncated_json())
    html = http.get("/api/v1/conversation/x/status", headers=HEADERS)
    assert html.status_code == 504
    assert html.headers["content-type"] == "text/html"
    assert "<html>" in html.text
    empty = http.get("/api/v1/conversation/x/status", headers=HEADERS)
    assert (empty.status_code, empty.content) == (502, b"")
    busy = http.get("/api/v1/conversation/x/status", headers=HEADERS)
    assert busy.status_code == 503
    assert busy.headers["retry-after"] == "3"
    assert busy.json() == err("OVERLOADED", "Injected fault")
    cut = http.post("/api/v1/conversations", headers=HEADERS, json={"prompt": "cut"})
    assert cut.status_code == 200
    assert cut.content.startswith(b'{"status": true')
    with pytest.raises(ValueError, match=r"Expecting|Unterminated"):
        cut.json()
    assert emulator.created_prompts() == ["cut"]


def test_latency_on_the_wire(served: Served) -> None:
    served.emulator.inject_fault("status", Fault.latency(0.2))
    start = time.monotonic()
    response = served.http.get("/api/v1/conversation/x/status", headers=HEADERS)
    assert time.monotonic() - start >= 0.2
    assert response.status_code == 404


@pytest.mark.anyio
async def test_fay_client_over_the_socket() -> None:
    clock = ManualClock()
    emulator = FayEmulator(clock=clock, scenario=Scenario(1, 1))
    async with serve(emulator) as base_url, FayClient(KEY, base_url=base_url) as fay:
        created = await fay.create_conversation("over the wire")
        clock.advance(2)
        info = await fay.get_status(created.request_id)
        assert info.status is ResearchStatus.COMPLETED
        output = await fay.get_output(created.request_id)
        assert "over the wire" in str(output.output)
        emulator.inject_fault("create", Fault.drop(processed=True))
        with pytest.raises(exceptions.APIConnectionError):
            await fay.create_conversation("dropped over the wire")
    assert emulator.created_prompts() == ["over the wire", "dropped over the wire"]
    assert emulator.call_counts()["create"] == 2


def test_served_default_clock_is_monotonic_times_speed() -> None:
    emulator = FayEmulator(speed=20_000, seed=5)  # a default research lasts ~3 ms
    with serve(emulator) as base_url, httpx.Client(base_url=base_url) as http:
        request_id = http.post(
            "/api/v1/conversations", headers=HEADERS, json={"prompt": "quick"}
        ).json()["data"]["request_id"]
        time.sleep(0.05)
        data = http.get(f"/api/v1/conversation/{request_id}/status", headers=HEADERS).json()
    assert data["data"]["status"] == "COMPLETED"


# --- serve() ----------------------------------------------------------------------------------


def test_server_lifecycle_errors() -> None:
    server = serve(FayEmulator(clock=ManualClock()))
    assert repr(server) == "EmulatorServer(stopped)"
    with pytest.raises(RuntimeError, match="not running"):
        _ = server.base_url
    server.stop()  # not running: nothing to do
    with server as base_url:
        assert server.base_url == base_url
        assert base_url in repr(server)
        with pytest.raises(RuntimeError, match="already running"):
            server.start()
    with pytest.raises(httpx.ConnectError):
        httpx.get(base_url + "/_emulator/calls")


def test_server_that_cannot_start(monkeypatch: pytest.MonkeyPatch) -> None:
    uvicorn = _server.require_uvicorn()
    monkeypatch.setattr(uvicorn.Server, "run", lambda *_, **__: None)
    with pytest.raises(RuntimeError, match="did not start"):
        serve(FayEmulator()).start()


def test_missing_uvicorn_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "uvicorn", None)
    with pytest.raises(ModuleNotFoundError, match=r'pip install "fay-async\[emulator\]"'):
        serve(FayEmulator()).start()


def test_bind_socket() -> None:
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    try:
        with pytest.raises(OSError):
            _server.bind_socket("127.0.0.1", holder.getsockname()[1])
    finally:
        holder.close()
    try:
        sock = _server.bind_socket("::1", 0)
    except OSError:  # pragma: no cover - a machine without IPv6 loopback
        pytest.skip("no IPv6 loopback here")
    with sock:
        assert re.fullmatch(r"http://\[::1\]:\d+", _server.base_url_for(sock))


# --- the fay-async command --------------------------------------------------------------------


def test_cli_emulator_serves_until_ctrl_c() -> None:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "fay_async._cli", "emulator", "--port", "0", "--speed", "100"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert process.stdout is not None
        lines = [process.stdout.readline() for _ in range(3)]
        export = next(line for line in lines if line.startswith("export "))
        match = re.fullmatch(
            r"export FAY_BASE_URL=(http://127\.0\.0\.1:\d+) FAY_API_KEY=(\S+)\n", export
        )
        assert match, lines
        base_url, key = match.groups()
        assert key == DEFAULT_API_KEY == "test-key"
        deadline = time.monotonic() + 10
        while True:
            try:
                response = httpx.post(
                    f"{base_url}/api/v1/conversations",
                    headers={"Authorization": f"Bearer {key}"},
                    json={"prompt": "from the command line"},
                )
                break
            except httpx.ConnectError:
                assert time.monotonic() < deadline
                time.sleep(0.02)
        assert response.status_code == 200
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=10)
    finally:
        if process.poll() is None:  # pragma: no cover - only when the test already failed
            process.kill()
            process.wait()
    assert process.returncode in (0, 130)
    assert "Traceback" not in stderr


class FakeServer:
    runs: list[Any] = []  # noqa: RUF012 - test bookkeeping
    outcome: type[BaseException] | None = None

    def __init__(self, config: Any) -> None:
        self.config = config

    def run(self, sockets: list[socket.socket] | None = None) -> None:
        assert sockets is not None
        FakeServer.runs.append((self.config, sockets[0].getsockname()))
        if FakeServer.outcome is not None:
            raise FakeServer.outcome


@pytest.fixture
def fake_uvicorn(monkeypatch: pytest.MonkeyPatch) -> type[FakeServer]:
    uvicorn = _server.require_uvicorn()
    monkeypatch.setattr(uvicorn, "Server", FakeServer)
    # The command configures logging for a terminal; the test process keeps its own.
    monkeypatch.setattr(logging.config, "dictConfig", lambda _: None)
    FakeServer.runs = []
    FakeServer.outcome = None
    return FakeServer


def test_serve_forever_binds_then_serves(fake_uvicorn: type[FakeServer]) -> None:
    serve_forever(FayEmulator(), port=0)
    [(config, (host, _))] = fake_uvicorn.runs
    assert host == "127.0.0.1"
    assert config.log_level == "info"
    assert isinstance(config.app, FayEmulator)


@pytest.mark.parametrize(("host", "warned"), [("127.0.0.1", False), ("0.0.0.0", True)])  # noqa: S104
def test_serving_beyond_this_machine_is_warned_of(
    fake_uvicorn: type[FakeServer],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    host: str,
    warned: bool,
) -> None:
    bind = _server.bind_socket
    # Tests bind loopback only: the socket is a loopback one whatever the host asked for.
    monkeypatch.setattr(_server, "bind_socket", lambda _host, port: bind("127.0.0.1", port))
    with caplog.at_level(logging.WARNING, logger="fay_async.testing"):
        serve_forever(FayEmulator(), host=host, port=0)
    messages = [r.getMessage() for r in caplog.records if r.name == "fay_async.testing"]
    expected = [f"the Fay emulator listens on {host}, not only on this machine"]
    assert [m.split(":")[0] for m in messages] == (expected if warned else [])


@pytest.mark.parametrize(("outcome", "code"), [(None, 0), (KeyboardInterrupt, 130)])
def test_cli_emulator_options(
    fake_uvicorn: type[FakeServer],
    capsys: pytest.CaptureFixture[str],
    outcome: type[BaseException] | None,
    code: int,
) -> None:
    fake_uvicorn.outcome = outcome
    argv = ["emulator", "--port", "0", "--tier", "pro", "--speed", "50", "--api-key", "my-fake"]
    assert _cli.main([*argv, "--seed", "3", "--log-level", "warning"]) == code
    out = capsys.readouterr().out
    config, (host, port) = fake_uvicorn.runs[0]
    assert host == "127.0.0.1"
    assert f"export FAY_BASE_URL=http://127.0.0.1:{port} FAY_API_KEY=my-fake" in out
    assert "speed x50" in out
    assert "pro rate limits" in out
    emulator = config.app
    assert isinstance(emulator, FayEmulator)
    assert emulator.api_keys == ("my-fake",)
    assert emulator.speed == 50
    assert emulator.rate_limits["create"] == 100
    assert config.log_level == "warning"
    assert config.http == "h11"


def test_cli_emulator_failing_once_listening_is_not_an_address_problem(
    fake_uvicorn: type[FakeServer], capsys: pytest.CaptureFixture[str]
) -> None:
    fake_uvicorn.outcome = ConnectionResetError
    with pytest.raises(ConnectionResetError):
        _cli.main(["emulator", "--port", "0"])
    assert "cannot listen" not in capsys.readouterr().err


def test_cli_warns_when_not_on_loopback(
    fake_uvicorn: type[FakeServer],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Without a handler of the application's, Python prints a warning on stderr.
    real_bind = _server.bind_socket
    monkeypatch.setattr(_server, "bind_socket", lambda *_: real_bind("127.0.0.1", 0))

    def warned(host: str) -> bool:
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="fay_async.testing"):
            assert _cli.main(["emulator", "--host", host, "--port", "0"]) == 0
        return any("not only on this machine" in r.getMessage() for r in caplog.records)

    assert warned("192.0.2.10")
    assert not warned("localhost")
    assert warned("example-host")


def test_cli_errors(
    fake_uvicorn: type[FakeServer],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert _cli.main([]) == 2
    assert "emulator" in capsys.readouterr().err
    assert _cli.main(["emulator", "--api-key", "two words"]) == 2
    assert "--api-key" in capsys.readouterr().err
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    with holder:
        port = str(holder.getsockname()[1])
        assert _cli.main(["emulator", "--port", port]) == 1
    assert "cannot listen" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "uvicorn", None)
    assert _cli.main(["emulator"]) == 1
    err_text = capsys.readouterr().err
    assert err_text.count("\n") == 1
    assert 'pip install "fay-async[emulator]"' in err_text
    assert fake_uvicorn.runs == []


@pytest.mark.parametrize(
    "argv",
    [
        ["emulator", "--speed", "0"],
        ["emulator", "--speed", "fast"],
        ["emulator", "--speed", "inf"],
        ["emulator", "--port", "70000"],
        ["emulator", "--port", "http"],
        ["emulator", "--tier", "gold"],
        ["--version"],
    ],
)
def test_cli_argument_errors(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        _cli.main(argv)
    if argv == ["--version"]:
        assert info.value.code == 0
        assert "fay-async" in capsys.readouterr().out
    else:
        assert info.value.code == 2


def test_python_m_runs_the_command(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "argv", ["fay-async", "--version"])
    monkeypatch.delitem(sys.modules, "fay_async._cli.__main__", raising=False)
    with pytest.raises(SystemExit) as info:
        importlib.import_module("fay_async._cli.__main__")
    assert info.value.code == 0
    assert capsys.readouterr().out.startswith("fay-async ")
