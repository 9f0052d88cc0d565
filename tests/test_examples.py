"""The examples run against the emulator: each one's main(), on virtual time."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest

from fay_async import ConfigurationError, FayClient, ResearchStatus, StopResult
from fay_async.testing import FayEmulator, Scenario

from ._emulated import running
from ._examples import EXAMPLES, load_example

S = ResearchStatus


# --- research_with_timeout.py ---------------------------------------------------------------


@pytest.mark.anyio
async def test_research_with_timeout_prints_the_result(capsys: pytest.CaptureFixture[str]) -> None:
    example = load_example("research_with_timeout")
    emulator = FayEmulator(seed=5)
    async with emulator.client() as fay:
        result = await example.main("What is a heat pump?", client=fay)
    assert result is not None
    assert result.text == emulator.research(result.request_id).output
    out = capsys.readouterr().out
    assert f"Research {result.request_id} completed" in out
    assert "> What is a heat pump?" in out


@pytest.mark.anyio
async def test_research_with_timeout_stops_a_late_research(
    capsys: pytest.CaptureFixture[str],
) -> None:
    example = load_example("research_with_timeout")
    emulator = FayEmulator(seed=5)
    async with emulator.client() as fay:
        assert await example.main("q", timeout=20.0, client=fay) is None
    (state,) = emulator.researches()
    assert state.status is S.STOPPED
    assert f"No answer within 20 s: research {state.request_id} was stopped." in (
        capsys.readouterr().out
    )


# --- cancel_all.py --------------------------------------------------------------------------


@pytest.mark.anyio
async def test_cancel_all_stops_what_is_still_running(capsys: pytest.CaptureFixture[str]) -> None:
    example = load_example("cancel_all")
    quick = example.PROMPTS[0]

    def scenario(prompt: str) -> Scenario:
        if prompt == quick:
            return Scenario(pending_s=2.0, processing_s=5.0)
        return Scenario(pending_s=100.0, processing_s=10.0)

    emulator = FayEmulator(scenario=scenario)
    async with emulator.client() as fay:
        outcomes = await example.main(after=40.0, client=fay)
    by_prompt = {r.prompt: r for r in emulator.researches()}
    assert by_prompt[quick].status is S.COMPLETED
    others = [by_prompt[p].request_id for p in example.PROMPTS[1:]]
    assert sorted(outcomes) == sorted(others)
    assert all(isinstance(o, StopResult) and o.status is S.STOPPED for o in outcomes.values())
    assert running(emulator) == []
    out = capsys.readouterr().out
    assert f"{by_prompt[quick].request_id}: finished before the cancel" in out
    assert f"{by_prompt[quick].request_id}: PROCESSING" in out  # on_status_change
    assert "cancelling the 3 researches still tracked" in out


# --- web_app.py -----------------------------------------------------------------------------


@pytest.mark.anyio
async def test_web_app_demo_stops_the_abandoned_research(
    capsys: pytest.CaptureFixture[str],
) -> None:
    example = load_example("web_app")
    emulator = FayEmulator(seed=9)
    outcomes = dict(await example.main(emulator.client))
    assert outcomes["abandoned"] is None
    status, body = outcomes["answered"]
    assert status == 200
    answered = emulator.research(body["request_id"])
    assert body["output"] == answered.output
    abandoned = [r for r in emulator.researches() if r.request_id != body["request_id"]]
    assert [r.status for r in abandoned] == [S.STOPPED]
    assert running(emulator) == []
    assert "still running: {'active': []}" in capsys.readouterr().out


@pytest.mark.anyio
async def test_web_app_endpoints() -> None:
    example = load_example("web_app")

    def scenario(prompt: str) -> Scenario:
        if prompt == "doomed":
            return Scenario(pending_s=1.0, processing_s=1.0, outcome=S.FAILED)
        return Scenario(pending_s=50.0, processing_s=10.0)

    emulator = FayEmulator(scenario=scenario)
    app = example.ResearchApp(emulator.client)
    assert await example.get(app, "/active") == (503, {"error": "the app is not started"})
    async with example.running(app):
        assert (await example.get(app, "/nowhere"))[0] == 404
        assert (await example.get(app, "/research?timeout=5"))[0] == 400
        assert (await example.get(app, "/research?q=x&timeout=soon"))[0] == 400
        assert (await example.get(app, "/research?q=x&timeout=-1"))[0] == 400
        status, body = await example.get(app, "/research?q=slow&timeout=30")
        assert (status, body["error"], body["stopped"]) == (504, "timeout", True)
        status, body = await example.get(app, "/research?q=doomed")
        assert status == 502
        assert "failed" in body["error"]

        async with anyio.create_task_group() as tg:
            tg.start_soon(example.get, app, "/research?q=long+one&timeout=600")
            await anyio.sleep(5)
            status, body = await example.get(app, "/active")
            assert status == 200
            assert [(a["prompt"], a["status"]) for a in body["active"]] == [("long one", "PENDING")]
            tg.cancel_scope.cancel()  # the server going down cancels the request...
        assert running(emulator) == []  # ...and the research is stopped
    assert emulator.research(body["active"][0]["request_id"]).status is S.STOPPED


@pytest.mark.anyio
async def test_web_app_other_methods_and_a_failed_startup() -> None:
    example = load_example("web_app")
    emulator = FayEmulator()
    app = example.ResearchApp(emulator.client)
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async with example.running(app):
        await app({"type": "http", "method": "POST", "path": "/research"}, receive, send)
    assert sent[0]["status"] == 405

    def no_key() -> FayClient:
        raise ConfigurationError("no Fay API key")

    broken = example.ResearchApp(no_key)
    with pytest.raises(RuntimeError, match="the app did not start: no Fay API key"):
        async with example.running(broken):
            pass


# --- as scripts -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "command",
    [
        ["research_with_timeout.py", "--timeout", "0.5"],
        ["cancel_all.py", "--after", "0.3"],
    ],
)
def test_examples_run_as_scripts_without_a_key(command: list[str]) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FAY_")}
    done = subprocess.run(  # noqa: S603 - our own interpreter and example files
        [sys.executable, str(EXAMPLES / command[0]), *command[1:]],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "stopped" in done.stdout.lower()


# --- quickstart.py and batch.py ---------------------------------------------------------------


README = EXAMPLES.parent / "README.md"


def test_the_readme_quickstart_is_the_example_file() -> None:
    code = (EXAMPLES / "quickstart.py").read_text(encoding="utf-8")
    body = code.split('"""', 2)[2].lstrip("\n")  # the file without its docstring
    assert f"```python\n{body}```" in README.read_text(encoding="utf-8")


@pytest.mark.anyio
async def test_quickstart_prints_the_research(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    example = load_example("quickstart")
    emulator = FayEmulator(seed=1)
    monkeypatch.setattr(example, "FayClient", emulator.client)
    await example.main()
    out = capsys.readouterr().out
    assert "> What changed in EU battery regulation in 2025?" in out
    [state] = emulator.researches()
    assert state.status is S.COMPLETED


@pytest.mark.anyio
async def test_batch_example_researches_every_prompt(capsys: pytest.CaptureFixture[str]) -> None:
    example = load_example("batch")
    emulator = FayEmulator(seed=2)
    async with emulator.client() as fay:
        results = await example.main(client=fay)
    prompts = [p for p in (EXAMPLES / "prompts.txt").read_text().splitlines() if p]
    assert sorted(r.item.prompt for r in results) == sorted(prompts)
    assert all(r.ok for r in results)
    assert sorted(emulator.created_prompts()) == sorted(prompts)
    out = capsys.readouterr().out
    assert f"[{len(prompts)}/{len(prompts)}] COMPLETED" in out


def test_batch_example_runs_as_a_script_without_a_key(tmp_path: Path) -> None:
    prompts = tmp_path / "two.txt"
    prompts.write_text("first question\n\nsecond question\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("FAY_")}
    done = subprocess.run(  # noqa: S603 - our own interpreter and example file
        [sys.executable, str(EXAMPLES / "batch.py"), str(prompts)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "[2/2] COMPLETED" in done.stdout
