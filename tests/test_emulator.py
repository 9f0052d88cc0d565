"""FayEmulator in-process: lifecycles on an injected clock, validation, rate limits, faults."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timedelta
from typing import Any

import anyio
import anyio.lowlevel
import httpx
import pytest

from fay_async import FayClient, ResearchStatus, exceptions
from fay_async.testing import (
    API_VERSION,
    RATE_LIMIT_TIERS,
    CallRecord,
    Fault,
    FayEmulator,
    ManualClock,
    Scenario,
    example_for_schema,
)

KEY = "test-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}\+00:00$")
STATUS_FIELDS = {
    "request_id",
    "status",
    "prompt",
    "structured_output",
    "output_schema",
    "conversation_id",
    "created_at",
    "started_at",
    "completed_at",
    "error_message",
    "metadata",
}


def err(code: str, message: str) -> dict[str, Any]:
    return {"status": False, "version": API_VERSION, "error": {"message": message, "code": code}}


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def emulator(clock: ManualClock) -> FayEmulator:
    return FayEmulator(clock=clock, scenario=Scenario(10, 5), seed=7)


@pytest.fixture
async def raw(emulator: FayEmulator) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        transport=emulator.transport(), base_url="http://emulator.test/api/v1", headers=AUTH
    ) as client:
        yield client


async def create(raw: httpx.AsyncClient, prompt: str = "Battery rules?", **extra: Any) -> str:
    response = await raw.post("/conversations", json={"prompt": prompt, **extra})
    assert response.status_code == 200, response.text
    request_id: str = response.json()["data"]["request_id"]
    return request_id


async def status_data(raw: httpx.AsyncClient, request_id: str) -> dict[str, Any]:
    response = await raw.get(f"/conversation/{request_id}/status")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] is True
    assert body["version"] == API_VERSION
    data: dict[str, Any] = body["data"]
    return data


def parse(text: str) -> datetime:
    assert ISO.match(text), text
    return datetime.fromisoformat(text)


# --- construction and values ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"api_keys": "test-key"}, TypeError),
        ({"api_keys": []}, ValueError),
        ({"api_keys": ["ok", ""]}, ValueError),
        ({"speed": 0}, ValueError),
        ({"speed": float("inf")}, ValueError),
        ({"speed": True}, ValueError),
        ({"clock": 12.0}, TypeError),
        ({"scenario": "fast"}, TypeError),
        ({"rate_limits": "gold"}, ValueError),
        ({"rate_limits": {"search": 5}}, ValueError),
        ({"rate_limits": {"create": 0}}, ValueError),
        ({"rate_limits": {"create": True}}, ValueError),
    ],
)
def test_constructor_refuses_bad_options(kwargs: dict[str, Any], error: type[Exception]) -> None:
    with pytest.raises(error):
        FayEmulator(**kwargs)


def test_constructor_keeps_key_order_and_limits() -> None:
    emulator = FayEmulator(api_keys=["b-key", "a-key", "b-key"], rate_limits="PRO", speed=2)
    assert emulator.api_keys == ("b-key", "a-key")
    assert dict(emulator.rate_limits) == {"create": 100, "status": 1000, "output": 500, "stop": 200}
    assert emulator.speed == 2.0
    assert "speed=2" in repr(emulator)
    assert FayEmulator().api_keys == ("test-key",)


def test_published_tiers() -> None:
    assert dict(RATE_LIMIT_TIERS["free"]) == {"create": 10, "status": 100, "output": 50, "stop": 20}
    assert dict(RATE_LIMIT_TIERS["pro"]) == {
        "create": 100,
        "status": 1000,
        "output": 500,
        "stop": 200,
    }


@pytest.mark.parametrize(
    ("args", "kwargs", "error"),
    [
        ((-1, 5), {}, ValueError),
        ((1, float("nan")), {}, ValueError),
        ((1, "5"), {}, ValueError),
        ((1, 5), {"outcome": "STOPPED"}, ValueError),
        ((1, 5), {"outcome": "NOT_A_STATUS"}, ValueError),
        ((1, 5), {"output": 42}, TypeError),
    ],
)
def test_scenario_validation(
    args: tuple[Any, ...], kwargs: dict[str, Any], error: type[Exception]
) -> None:
    with pytest.raises(error):
        Scenario(*args, **kwargs)


def test_scenario_accepts_outcome_strings() -> None:
    scenario = Scenario(0, 1, outcome="FAILED", error_message="boom")
    assert scenario.outcome is ResearchStatus.FAILED


@pytest.mark.parametrize(
    "build",
    [
        lambda: Fault.error(99, "X"),
        lambda: Fault.error(True, "X"),  # type: ignore[arg-type]
        lambda: Fault.error(503, "X", retry_after=-1),
        lambda: Fault.html(600),
        lambda: Fault.latency(-0.5),
        lambda: Fault.latency(float("inf")),
    ],
)
def test_fault_factories_validate(build: Callable[[], Fault]) -> None:
    with pytest.raises((TypeError, ValueError)):
        build()


def test_inject_fault_validates(emulator: FayEmulator) -> None:
    with pytest.raises(ValueError, match="unknown endpoint"):
        emulator.inject_fault("search", Fault.html())
    with pytest.raises(TypeError, match="must be a Fault"):
        emulator.inject_fault("create", "drop")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="times"):
        emulator.inject_fault("create", Fault.html(), times=0)
    with pytest.raises(ValueError, match="unknown endpoint"):
        emulator.pending_fault_count("search")
    emulator.inject_fault("status", Fault.html(), times=2)
    emulator.inject_fault("status", Fault.empty())
    assert emulator.pending_fault_count("status") == 3
    assert emulator.pending_fault_count("create") == 0
    emulator.clear_faults()
    assert emulator.pending_fault_count("status") == 0


def test_manual_clock() -> None:
    clock = ManualClock(5)
    assert clock() == 5.0
    assert clock.advance(2.5) == 7.5
    assert clock.now == 7.5
    assert repr(clock) == "ManualClock(now=7.5)"
    with pytest.raises(ValueError, match="only moves forward"):
        clock.advance(-1)
    with pytest.raises(ValueError, match="only moves forward"):
        clock.advance(float("nan"))
    with pytest.raises(ValueError, match="finite"):
        ManualClock(float("inf"))


# --- the lifecycle ------------------------------------------------------------------------


@pytest.mark.anyio
async def test_lifecycle_fields_at_every_stage(raw: httpx.AsyncClient, clock: ManualClock) -> None:
    response = await raw.post("/conversations", json={"prompt": "Battery rules?"})
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["status"] is True
    assert body["version"] == "1.0.24"
    assert set(body["data"]) == {"request_id", "status", "created_at"}
    request_id = body["data"]["request_id"]
    assert uuid.UUID(request_id).version == 4
    assert str(uuid.UUID(request_id)) == request_id
    assert body["data"]["status"] == "PENDING"
    created = parse(body["data"]["created_at"])

    pending = await status_data(raw, request_id)
    assert set(pending) == STATUS_FIELDS
    assert pending["status"] == "PENDING"
    assert pending["prompt"] == "Battery rules?"
    assert pending["structured_output"] is False
    assert pending["output_schema"] is None
    assert re.fullmatch(r"[0-9a-f]{24}", pending["conversation_id"])
    assert parse(pending["created_at"]) == created
    assert pending["started_at"] is None
    assert pending["completed_at"] is None
    assert pending["error_message"] is None
    assert pending["metadata"] is None

    clock.advance(9.999)
    assert (await status_data(raw, request_id))["status"] == "PENDING"
    clock.advance(0.001)
    processing = await status_data(raw, request_id)
    assert processing["status"] == "PROCESSING"
    assert parse(processing["started_at"]) - created == timedelta(seconds=10)
    assert processing["completed_at"] is None

    clock.advance(5)
    done = await status_data(raw, request_id)
    assert done["status"] == "COMPLETED"
    assert parse(done["completed_at"]) - created == timedelta(seconds=15)
    assert done["conversation_id"] == pending["conversation_id"]
    assert isinstance(done["metadata"], dict)

    output = (await raw.get(f"/conversation/{request_id}/output")).json()
    assert output["status"] is True
    assert set(output["data"]) == {"conversation_id", "status", "output"}
    assert output["data"]["status"] == "COMPLETED"
    assert output["data"]["conversation_id"] == pending["conversation_id"]
    assert "> Battery rules?" in output["data"]["output"]
    assert output["data"]["output"].startswith("# ")


@pytest.mark.anyio
async def test_output_before_completion_is_refused(
    raw: httpx.AsyncClient, clock: ManualClock
) -> None:
    request_id = await create(raw)
    for advance in (0, 12):  # PENDING, then PROCESSING
        clock.advance(advance)
        response = await raw.get(f"/conversation/{request_id}/output")
        assert response.status_code == 400
        assert response.json()["error"]["code"] == "RESEARCH_NOT_COMPLETED"


@pytest.mark.anyio
async def test_output_is_gone_after_thirty_days(raw: httpx.AsyncClient, clock: ManualClock) -> None:
    request_id = await create(raw)
    clock.advance(15 + 30 * 86400)
    assert (await raw.get(f"/conversation/{request_id}/output")).status_code == 200
    clock.advance(1)
    response = await raw.get(f"/conversation/{request_id}/output")
    assert response.status_code == 404
    assert response.json() == err("REQUEST_NOT_FOUND", "Request not found")
    assert (await status_data(raw, request_id))["status"] == "COMPLETED"


@pytest.mark.anyio
async def test_failed_research(clock: ManualClock) -> None:
    emulator = FayEmulator(
        clock=clock, scenario=Scenario(1, 2, outcome=ResearchStatus.FAILED, error_message="boom")
    )
    async with emulator.client(max_retries=0) as fay:
        created = await fay.create_conversation("Will this fail?")
        assert (await fay.get_status(created.request_id)).error_message is None
        clock.advance(3)
        info = await fay.get_status(created.request_id)
        assert info.status is ResearchStatus.FAILED
        assert info.error_message == "boom"
        assert info.completed_at is not None
        with pytest.raises(exceptions.BadRequestError) as output_error:
            await fay.get_output(created.request_id)
        assert output_error.value.code == "RESEARCH_FAILED"
        with pytest.raises(exceptions.BadRequestError) as stop_error:
            await fay.stop_conversation(created.request_id)
        assert stop_error.value.code == "RESEARCH_ALREADY_FAILED"
    assert emulator.research(created.request_id).output is None


@pytest.mark.anyio
async def test_failed_research_has_a_default_message(clock: ManualClock) -> None:
    emulator = FayEmulator(clock=clock, scenario=Scenario(0, 0, outcome="FAILED"))
    async with emulator.client() as fay:
        created = await fay.create_conversation("Fail fast")
        info = await fay.get_status(created.request_id)
    assert info.status is ResearchStatus.FAILED
    assert info.error_message
    assert emulator.research(created.request_id).error_message == info.error_message


@pytest.mark.anyio
async def test_stop_a_pending_research(raw: httpx.AsyncClient, clock: ManualClock) -> None:
    request_id = await create(raw)
    clock.advance(3)
    response = await raw.post(f"/conversation/{request_id}/stop")
    assert response.status_code == 200
    assert response.json() == {
        "status": True,
        "version": "1.0.24",
        "data": {
            "request_id": request_id,
            "status": "STOPPED",
            "message": "Conversation stopped successfully",
        },
    }
    clock.advance(100)
    stopped = await status_data(raw, request_id)
    assert stopped["status"] == "STOPPED"
    assert stopped["started_at"] is None
    assert parse(stopped["completed_at"]) - parse(stopped["created_at"]) == timedelta(seconds=3)
    output = await raw.get(f"/conversation/{request_id}/output")
    assert output.status_code == 400
    assert output.json()["error"]["code"] == "RESEARCH_STOPPED"
    again = await raw.post(f"/conversation/{request_id}/stop")
    assert again.status_code == 400
    assert again.json()["error"]["code"] == "CONVERSATION_ALREADY_STOPPED"


@pytest.mark.anyio
async def test_stop_a_processing_research_keeps_its_start(
    raw: httpx.AsyncClient, clock: ManualClock, emulator: FayEmulator
) -> None:
    request_id = await create(raw)
    clock.advance(12)
    assert (await raw.post(f"/conversation/{request_id}/stop")).status_code == 200
    stopped = await status_data(raw, request_id)
    assert stopped["status"] == "STOPPED"
    assert stopped["started_at"] is not None
    state = emulator.research(request_id)
    assert state.stopped is True
    assert state.status is ResearchStatus.STOPPED


@pytest.mark.anyio
async def test_stop_a_completed_research(raw: httpx.AsyncClient, clock: ManualClock) -> None:
    request_id = await create(raw)
    clock.advance(15)
    response = await raw.post(f"/conversation/{request_id}/stop")
    assert response.status_code == 400
    assert response.json() == err(
        "CONVERSATION_ALREADY_COMPLETED", "Cannot stop completed conversation"
    )


@pytest.mark.anyio
async def test_client_stop_if_running_on_emulator(clock: ManualClock) -> None:
    emulator = FayEmulator(clock=clock, scenario=Scenario(10, 5))
    async with emulator.client() as fay:
        running = await fay.create_conversation("one")
        done = await fay.create_conversation("two")
        clock.advance(1)
        result = await fay.stop_if_running(running.request_id)
        assert result.status is ResearchStatus.STOPPED
        clock.advance(20)
        assert (await fay.stop_if_running(done.request_id)).status is ResearchStatus.COMPLETED
    assert emulator.call_counts()["stop"] == 1


@pytest.mark.anyio
async def test_scenario_per_prompt_and_fixed_output(clock: ManualClock) -> None:
    def scenario(prompt: str) -> Scenario:
        if "slow" in prompt:
            return Scenario(100, 100)
        return Scenario(0, 1, output="fixed answer")

    emulator = FayEmulator(clock=clock, scenario=scenario)
    async with emulator.client() as fay:
        slow = await fay.create_conversation("a slow one")
        fast = await fay.create_conversation("a fast one")
        clock.advance(1)
        assert (await fay.get_status(slow.request_id)).status is ResearchStatus.PENDING
        assert (await fay.get_output(fast.request_id)).output == "fixed answer"
    assert emulator.research(slow.request_id).scenario == Scenario(100, 100)


@pytest.mark.anyio
async def test_scenario_callable_must_return_a_scenario(clock: ManualClock) -> None:
    emulator = FayEmulator(clock=clock, scenario=lambda _: None)  # type: ignore[arg-type,return-value]
    async with emulator.client() as fay:
        with pytest.raises(TypeError, match="not a Scenario"):
            await fay.create_conversation("anything")
    assert emulator.created_prompts() == []


# --- structured output ----------------------------------------------------------------------


@pytest.mark.anyio
async def test_structured_output_fits_the_schema(clock: ManualClock) -> None:
    schema = {
        "type": "object",
        "properties": {
            "title": {"type": "string"},
            "score": {"type": "number", "minimum": 3},
            "count": {"type": "integer"},
            "ok": {"type": "boolean"},
            "tags": {"type": "array", "items": {"type": "string"}},
            "grade": {"enum": ["A", "B"]},
        },
        "required": ["title", "summary"],
    }
    emulator = FayEmulator(clock=clock, scenario=Scenario(0, 1))
    async with emulator.client() as fay:
        created = await fay.create_conversation(
            "Rate EU battery rules", structured_output=True, output_schema=schema
        )
        info = await fay.get_status(created.request_id)
        assert info.structured_output is True
        assert info.output_schema == schema
        clock.advance(1)
        output = (await fay.get_output(created.request_id)).output
    assert isinstance(output, dict)
    assert set(output) == {"title", "score", "count", "ok", "tags", "grade", "summary"}
    assert isinstance(output["title"], str)
    assert "Rate EU battery rules" in output["title"]
    assert isinstance(output["score"], float)
    assert output["score"] >= 3
    assert isinstance(output["count"], int)
    assert output["ok"] is True
    assert output["tags"]
    assert all(isinstance(tag, str) for tag in output["tags"])
    assert output["grade"] == "A"
    assert isinstance(output["summary"], str)


@pytest.mark.anyio
async def test_structured_output_without_schema_is_an_object(clock: ManualClock) -> None:
    emulator = FayEmulator(clock=clock, scenario=Scenario(0, 0))
    async with emulator.client() as fay:
        created = await fay.create_conversation("Any JSON please", structured_output=True)
        output = (await fay.get_output(created.request_id)).output
    assert isinstance(output, dict)
    assert output["prompt"] == "Any JSON please"


@pytest.mark.anyio
async def test_non_object_schema_output_is_wrapped(
    raw: httpx.AsyncClient, clock: ManualClock
) -> None:
    request_id = await create(
        raw, structured_output=True, output_schema={"type": "array", "items": {"type": "integer"}}
    )
    clock.advance(15)
    output = (await raw.get(f"/conversation/{request_id}/output")).json()["data"]["output"]
    assert output == {"result": [1, 1]}


def test_schema_examples() -> None:
    prompt = "p" * 200
    assert example_for_schema({"const": 3}, prompt=prompt) == 3
    assert example_for_schema({"anyOf": [{"type": "integer"}, {"type": "string"}]}, prompt="") == 1
    assert example_for_schema({"type": ["null", "boolean"]}, prompt="") is True
    assert example_for_schema({"type": ["null"]}, prompt="") is None
    assert example_for_schema({"type": "null"}, prompt="") is None
    assert example_for_schema({"items": {"type": "boolean"}}, prompt="") == [True, True]
    assert example_for_schema({"required": ["a"]}, prompt="") == {"a": "Emulated a for: "}
    text = example_for_schema({"type": "string"}, prompt=prompt)
    assert text.endswith("...")
    assert len(text) < 120
    assert example_for_schema({"type": "string", "format": "date-time"}, prompt="") == (
        "2025-01-01T00:00:00+00:00"
    )
    assert example_for_schema({"type": "string", "maxLength": 4}, prompt="x") == "Emul"
    assert len(example_for_schema({"type": "string", "minLength": 64}, prompt="x")) == 64
    assert example_for_schema({"type": "integer", "maximum": 0}, prompt="") == 0
    assert example_for_schema({"type": "integer", "exclusiveMinimum": 5}, prompt="") == 6
    assert example_for_schema({"type": "number", "minimum": 2}, prompt="") == 2.0
    assert example_for_schema(
        {"type": "array", "items": {"type": "integer"}, "minItems": 9, "maxItems": 3}, prompt=""
    ) == [1, 1, 1]
    assert example_for_schema(
        {"type": "array", "items": [{"type": "integer"}, {"type": "boolean"}]}, prompt=""
    ) == [1, True]
    assert example_for_schema({"type": "object", "properties": "bad"}, prompt="") == {}
    assert example_for_schema({"type": "mystery"}, prompt="") == "Emulated value for: "
    assert example_for_schema({}, prompt="q") == "Emulated value for: q"
    nested: dict[str, Any] = {"type": "string"}
    for _ in range(12):
        nested = {"type": "object", "properties": {"deeper": nested}}
    value = example_for_schema(nested, prompt="")
    for _ in range(9):
        value = value["deeper"]
    assert value == "Emulated deeper for: "


# --- request validation, auth and routing -----------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{not json", "Request body must be valid JSON"),
        (b'{"prompt": NaN}', "Request body must be valid JSON"),
        (b"\xff\xfe", "Request body must be valid JSON"),
        (b"", "Request body must be valid JSON"),
        (b'["prompt"]', "Request body must be a JSON object"),
        (b"{}", "Invalid prompt format"),
        (b'{"prompt": 12}', "Invalid prompt format"),
        (b'{"prompt": ""}', "Invalid prompt format"),
        (b'{"prompt": "  \\n "}', "Invalid prompt format"),
        (json.dumps({"prompt": "x" * 100_001}).encode(), "Invalid prompt format"),
        (b'{"prompt": "ok", "structured_output": "yes"}', "structured_output must be a boolean"),
        (b'{"prompt": "ok", "structured_output": 1}', "structured_output must be a boolean"),
        (b'{"prompt": "ok", "output_schema": []}', "output_schema must be a JSON object"),
    ],
)
async def test_create_validation(
    raw: httpx.AsyncClient, emulator: FayEmulator, body: bytes, message: str
) -> None:
    response = await raw.post(
        "/conversations", content=body, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400
    assert response.json() == err("VALIDATION_ERROR", message)
    assert emulator.created_prompts() == []
    assert emulator.calls()[-1].error_code == "VALIDATION_ERROR"


@pytest.mark.anyio
async def test_create_accepts_the_longest_prompt_and_null_schema(
    raw: httpx.AsyncClient, emulator: FayEmulator
) -> None:
    await create(raw, "x" * 100_000, output_schema=None)
    assert emulator.created_prompts() == ["x" * 100_000]


@pytest.mark.anyio
async def test_oversized_body_is_refused(raw: httpx.AsyncClient, emulator: FayEmulator) -> None:
    response = await raw.post("/conversations", content=b" " * 1_048_577)
    assert response.status_code == 413
    assert response.json()["status"] is False
    assert emulator.created_prompts() == []


@pytest.mark.anyio
@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "test-key"},
        {"Authorization": "Basic test-key"},
        {"Authorization": "Bearer "},
        {"Authorization": "Bearer other-key"},
    ],
)
async def test_invalid_api_key(emulator: FayEmulator, headers: dict[str, str]) -> None:
    async with httpx.AsyncClient(
        transport=emulator.transport(), base_url="http://emulator.test/api/v1"
    ) as client:
        for response in (
            await client.post("/conversations", json={"prompt": "x"}, headers=headers),
            await client.get("/conversation/some-id/status", headers=headers),
        ):
            assert response.status_code == 401
            assert response.json() == err("INVALID_API_KEY", "Invalid or expired API key")
    assert emulator.created_prompts() == []


@pytest.mark.anyio
async def test_every_configured_key_is_accepted(clock: ManualClock) -> None:
    emulator = FayEmulator(api_keys=["first-key", "second-key"], clock=clock)
    async with emulator.client(api_key="second-key") as fay:
        await fay.create_conversation("hello")
    async with emulator.client(api_key="unknown-key", max_retries=0) as fay:
        with pytest.raises(exceptions.AuthenticationError):
            await fay.create_conversation("hello")
    assert emulator.created_prompts() == ["hello"]


@pytest.mark.anyio
@pytest.mark.parametrize("action", ["status", "output", "stop"])
async def test_unknown_request_id(raw: httpx.AsyncClient, action: str) -> None:
    method = "POST" if action == "stop" else "GET"
    response = await raw.request(method, f"/conversation/{uuid.uuid4()}/{action}")
    assert response.status_code == 404
    assert response.json() == err("REQUEST_NOT_FOUND", "Request not found")


@pytest.mark.anyio
@pytest.mark.parametrize(
    "path", ["/nothing", "/conversation", "/conversation/a/b/status", "/conversation/x/restart"]
)
async def test_unknown_path_is_a_404_envelope(
    raw: httpx.AsyncClient, emulator: FayEmulator, path: str
) -> None:
    response = await raw.get(path)
    assert response.status_code == 404
    assert response.json() == err("NOT_FOUND", "Not found")
    assert emulator.calls()[-1].endpoint is None
    assert emulator.calls()[-1].status_code == 404
    assert sum(emulator.call_counts().values()) == 0


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("GET", "/conversations", "POST"),
        ("POST", "/conversation/x/status", "GET"),
        ("DELETE", "/conversation/x/output", "GET"),
        ("GET", "/conversation/x/stop", "POST"),
    ],
)
async def test_wrong_method_is_a_405_envelope(
    raw: httpx.AsyncClient, method: str, path: str, allow: str
) -> None:
    response = await raw.request(method, path)
    assert response.status_code == 405
    assert response.headers["allow"] == allow
    assert response.json() == err("METHOD_NOT_ALLOWED", "Method not allowed")


@pytest.mark.anyio
async def test_lifespan_and_other_scopes(emulator: FayEmulator) -> None:
    incoming = iter(
        [{"type": "lifespan.startup"}, {"type": "lifespan.other"}, {"type": "lifespan.shutdown"}]
    )
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return next(incoming)

    async def send(message: Any) -> None:
        sent.append(dict(message))

    await emulator({"type": "lifespan"}, receive, send)
    assert sent == [{"type": "lifespan.startup.complete"}, {"type": "lifespan.shutdown.complete"}]
    await emulator({"type": "websocket"}, receive, send)
    assert len(sent) == 2


@pytest.mark.anyio
async def test_body_read_stops_at_disconnect(emulator: FayEmulator) -> None:
    incoming = iter(
        [
            {"type": "http.request", "body": b'{"prompt": ', "more_body": True},
            {"type": "http.disconnect"},
        ]
    )
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return next(incoming)

    async def send(message: Any) -> None:
        sent.append(dict(message))

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/api/v1/conversations",
        "headers": [(b"authorization", b"Bearer test-key")],
    }
    await emulator(scope, receive, send)
    assert sent[0]["status"] == 400
    assert json.loads(sent[1]["body"])["error"]["code"] == "VALIDATION_ERROR"


# --- rate limits ------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_free_tier_create_budget_slides_over_an_hour() -> None:
    clock = ManualClock()
    emulator = FayEmulator(clock=clock, rate_limits="free")
    async with httpx.AsyncClient(
        transport=emulator.transport(), base_url="http://emulator.test/api/v1", headers=AUTH
    ) as raw:
        for i in range(10):
            await create(raw, f"prompt {i}")
            clock.advance(60)
        refused = await raw.post("/conversations", json={"prompt": "one too many"})
        assert refused.status_code == 429
        assert refused.json() == err("RATE_LIMIT_EXCEEDED", "Rate limit exceeded")
        # The oldest call was at t=0 and it is now t=600: it leaves the window at 3600.
        assert refused.headers["retry-after"] == "3000"
        clock.advance(2999)
        assert (await raw.post("/conversations", json={"prompt": "x"})).status_code == 429
        clock.advance(1)
        await create(raw, "fits again")
        assert (await raw.post("/conversations", json={"prompt": "x"})).status_code == 429
        # Other endpoints have budgets of their own.
        request_id = emulator.researches()[0].request_id
        assert (await raw.get(f"/conversation/{request_id}/status")).status_code == 200
    assert len(emulator.created_prompts()) == 11
    assert [c.error_code for c in emulator.calls()].count("RATE_LIMIT_EXCEEDED") == 3


@pytest.mark.anyio
async def test_rate_limits_are_per_key_and_retry_after_is_in_real_seconds() -> None:
    clock = ManualClock()
    emulator = FayEmulator(
        api_keys=["key-a", "key-b"], clock=clock, rate_limits={"status": 2}, speed=60
    )
    async with httpx.AsyncClient(
        transport=emulator.transport(), base_url="http://emulator.test/api/v1"
    ) as raw:
        for key in ("key-a", "key-b"):
            headers = {"Authorization": f"Bearer {key}"}
            for _ in range(2):
                assert (await raw.get("/conversation/x/status", headers=headers)).status_code == 404
        clock.advance(30)  # 30 real seconds: 1800 emulator seconds
        refused = await raw.get("/conversation/x/status", headers={"Authorization": "Bearer key-a"})
        assert refused.status_code == 429
        assert refused.headers["retry-after"] == "30"
        clock.advance(29.99)
        refused = await raw.get("/conversation/x/status", headers={"Authorization": "Bearer key-a"})
        assert refused.headers["retry-after"] == "1"
        # create has no limit in this mapping
        for i in range(5):
            created = await raw.post(
                "/conversations", json={"prompt": str(i)}, headers={"Authorization": "Bearer key-a"}
            )
            assert created.status_code == 200


@pytest.mark.anyio
async def test_client_sees_rate_limit_error_with_retry_after() -> None:
    clock = ManualClock()
    emulator = FayEmulator(clock=clock, rate_limits={"create": 1})
    async with emulator.client(max_retries=0) as fay:
        await fay.create_conversation("first")
        with pytest.raises(exceptions.RateLimitError) as info:
            await fay.create_conversation("second")
    assert info.value.retry_after == 3600
    assert emulator.created_prompts() == ["first"]


# --- faults -----------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_error_fault_for_the_next_calls(emulator: FayEmulator) -> None:
    emulator.inject_fault(
        "create", Fault.error(503, "SERVICE_UNAVAILABLE", "try later", retry_after=2), times=2
    )
    async with emulator.client(max_retries=0) as fay:
        for _ in range(2):
            with pytest.raises(exceptions.ServerError) as info:
                await fay.create_conversation("faulty")
            assert info.value.code == "SERVICE_UNAVAILABLE"
            assert info.value.message == "try later"
        await fay.create_conversation("works")
    assert emulator.created_prompts() == ["works"]
    assert [c.fault for c in emulator.calls()] == ["error", "error", None]
    assert [c.status_code for c in emulator.calls()] == [503, 503, 200]


@pytest.mark.anyio
async def test_rate_limit_fault_is_retried_by_the_client_after_retry_after(
    emulator: FayEmulator,
) -> None:
    emulator.inject_fault("create", Fault.error(429, "RATE_LIMIT_EXCEEDED", retry_after=1.5))
    async with emulator.client() as fay:
        start = anyio.current_time()
        await fay.create_conversation("patient")
        assert anyio.current_time() - start >= 1.5
    assert emulator.call_counts()["create"] == 2
    assert emulator.created_prompts() == ["patient"]


@pytest.mark.anyio
async def test_error_fault_defaults(raw: httpx.AsyncClient, emulator: FayEmulator) -> None:
    emulator.inject_fault("status", Fault.error(500, "", ""))
    response = await raw.get("/conversation/x/status")
    assert response.status_code == 500
    assert response.json()["error"] == {"message": "Injected fault", "code": "INJECTED_FAULT"}
    assert "retry-after" not in response.headers


@pytest.mark.anyio
async def test_html_and_empty_faults(emulator: FayEmulator) -> None:
    emulator.inject_fault("status", Fault.html())
    emulator.inject_fault("status", Fault.empty())
    emulator.inject_fault("status", Fault.empty(200))
    async with emulator.client(max_retries=0) as fay:
        with pytest.raises(exceptions.ServerError) as html:
            await fay.get_status("some-id")
        assert html.value.status_code == 502
        assert "502 Bad Gateway" in str(html.value.body)
        with pytest.raises(exceptions.ServerError) as empty:
            await fay.get_status("some-id")
        assert empty.value.status_code == 502
        with pytest.raises(exceptions.UnexpectedResponseError, match="empty"):
            await fay.get_status("some-id")
        with pytest.raises(exceptions.NotFoundError):
            await fay.get_status("some-id")
    assert [c.fault for c in emulator.calls()] == ["html", "empty", "empty", None]


@pytest.mark.anyio
async def test_truncated_create_still_creates(emulator: FayEmulator) -> None:
    emulator.inject_fault("create", Fault.truncated_json())
    async with emulator.client() as fay:
        with pytest.raises(exceptions.UnexpectedResponseError, match="not JSON"):
            await fay.create_conversation("cut short")
    assert emulator.created_prompts() == ["cut short"]
    assert emulator.call_counts()["create"] == 1
    assert emulator.calls()[0].request_id == emulator.researches()[0].request_id


@pytest.mark.anyio
async def test_drop_before_processing_creates_nothing(emulator: FayEmulator) -> None:
    emulator.inject_fault("create", Fault.drop())
    async with emulator.client() as fay:
        with pytest.raises(exceptions.APIConnectionError) as info:
            await fay.create_conversation("dropped")
    assert isinstance(info.value.__cause__, httpx.RemoteProtocolError)
    assert emulator.created_prompts() == []
    assert emulator.call_counts()["create"] == 1  # a create is never resent after a drop
    call = emulator.calls()[0]
    assert (call.status_code, call.fault, call.request_id) == (None, "drop", None)


@pytest.mark.anyio
async def test_drop_after_processing_creates_once(emulator: FayEmulator) -> None:
    emulator.inject_fault("create", Fault.drop(processed=True))
    async with emulator.client() as fay:
        with pytest.raises(exceptions.APIConnectionError):
            await fay.create_conversation("dropped after")
    assert emulator.created_prompts() == ["dropped after"]
    assert emulator.calls()[0].request_id == emulator.researches()[0].request_id


@pytest.mark.anyio
async def test_dropped_status_is_retried(emulator: FayEmulator) -> None:
    async with emulator.client() as fay:
        created = await fay.create_conversation("poll me")
        emulator.inject_fault("status", Fault.drop(processed=True))
        info = await fay.get_status(created.request_id)
    assert info.status is ResearchStatus.PENDING
    assert emulator.call_counts() == {"create": 1, "status": 2, "output": 0, "stop": 0}


@pytest.mark.anyio
async def test_latency_delays_the_answer(clock: ManualClock) -> None:
    emulator = FayEmulator(clock=clock)
    emulator.inject_fault("status", Fault.latency(7))
    async with emulator.client() as fay:
        start = anyio.current_time()
        with pytest.raises(exceptions.NotFoundError):
            await fay.get_status("some-id")
        assert anyio.current_time() - start >= 7
    assert emulator.calls()[0].fault == "latency"


@pytest.mark.anyio
async def test_latency_beyond_the_read_timeout_times_out_after_creating(
    emulator: FayEmulator,
) -> None:
    emulator.inject_fault("create", Fault.latency(60))
    async with emulator.client(timeout=5) as fay:
        with pytest.raises(exceptions.APITimeoutError):
            await fay.create_conversation("slow answer")
    # The service handled it: the client must not create it again, and did not.
    assert emulator.created_prompts() == ["slow answer"]
    assert emulator.call_counts()["create"] == 1


@pytest.mark.anyio
async def test_transport_turns_a_slow_answer_into_read_timeout(emulator: FayEmulator) -> None:
    emulator.inject_fault("status", Fault.latency(10))
    async with httpx.AsyncClient(transport=emulator.transport(), timeout=1) as raw:
        with pytest.raises(httpx.ReadTimeout):
            await raw.get("http://emulator.test/api/v1/conversation/x/status", headers=AUTH)


# --- introspection ----------------------------------------------------------------------------


@pytest.mark.anyio
async def test_calls_counts_and_research_states(
    raw: httpx.AsyncClient, emulator: FayEmulator, clock: ManualClock
) -> None:
    first = await create(raw, "first")
    clock.advance(11)
    second = await create(raw, "second")
    await raw.get(f"/conversation/{first}/status")
    await raw.get(f"/conversation/{first}/output")
    await raw.post(f"/conversation/{second}/stop")
    assert emulator.call_counts() == {"create": 2, "status": 1, "output": 1, "stop": 1}
    calls = emulator.calls()
    assert calls[0] == CallRecord(
        endpoint="create",
        method="POST",
        path="/api/v1/conversations",
        request_id=first,
        time=0.0,
        status_code=200,
    )
    assert calls[3].error_code == "RESEARCH_NOT_COMPLETED"
    assert calls[3].time == 11.0
    assert calls[4].request_id == second
    assert emulator.created_prompts() == ["first", "second"]
    states = emulator.researches()
    assert [s.request_id for s in states] == [first, second]
    assert [s.status for s in states] == [ResearchStatus.PROCESSING, ResearchStatus.STOPPED]
    assert states[0].started_at is not None
    assert states[0].output is None
    clock.advance(4)
    done = emulator.research(first)
    assert done.status is ResearchStatus.COMPLETED
    assert isinstance(done.output, str)
    assert done.to_json()["status"] == "COMPLETED"
    assert done.to_json()["completed_at"].endswith("+00:00")
    with pytest.raises(KeyError):
        emulator.research("never-created")


@pytest.mark.anyio
async def test_introspection_endpoints_need_no_key(
    raw: httpx.AsyncClient, emulator: FayEmulator
) -> None:
    request_id = await create(raw, "look at me")
    async with httpx.AsyncClient(
        transport=emulator.transport(), base_url="http://emulator.test"
    ) as anonymous:
        calls = (await anonymous.get("/_emulator/calls")).json()["calls"]
        researches = (await anonymous.get("/_emulator/researches")).json()["researches"]
        wrong = await anonymous.post("/_emulator/calls")
    assert calls == [emulator.calls()[0].to_json()]
    assert calls[0]["request_id"] == request_id
    assert researches[0]["prompt"] == "look at me"
    assert researches[0]["status"] == "PENDING"
    assert researches[0]["pending_s"] == 10
    assert wrong.status_code == 405
    assert len(emulator.calls()) == 2  # introspection reads are not recorded; the 405 is


# --- clocks -----------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_default_clock_follows_the_event_loop() -> None:
    emulator = FayEmulator(seed=3)
    async with emulator.client() as fay:
        created = await fay.create_conversation("virtual minute")
        start = anyio.current_time()
        statuses = []
        while True:
            info = await fay.get_status(created.request_id)
            statuses.append(info.status)
            if info.status.is_terminal:
                break
            await anyio.sleep(2)
        output = await fay.get_output(created.request_id)
    elapsed = anyio.current_time() - start
    scenario = emulator.research(created.request_id).scenario
    assert 45 <= scenario.pending_s <= 55
    assert 10 <= scenario.processing_s <= 15
    assert scenario.pending_s + scenario.processing_s <= elapsed
    assert elapsed < scenario.pending_s + scenario.processing_s + 2.5
    assert statuses[0] is ResearchStatus.PENDING
    assert ResearchStatus.PROCESSING in statuses
    assert statuses[-1] is ResearchStatus.COMPLETED
    assert "virtual minute" in str(output.output)


@pytest.mark.anyio
async def test_seed_makes_ids_and_durations_repeatable() -> None:
    results = []
    for _ in range(2):
        emulator = FayEmulator(seed=11, clock=ManualClock())
        async with emulator.client() as fay:
            created = await fay.create_conversation("same")
            info = await fay.get_status(created.request_id)
        results.append(
            (created.request_id, info.conversation_id, emulator.researches()[0].scenario)
        )
    assert results[0] == results[1]
    other = FayEmulator(seed=12, clock=ManualClock())
    async with other.client() as fay:
        assert (await fay.create_conversation("same")).request_id != results[0][0]


def test_speed_scales_the_clock() -> None:
    clock = ManualClock()
    emulator = FayEmulator(clock=clock, speed=10)
    clock.advance(6)
    assert emulator.now() == 60.0


def test_time_never_runs_backwards() -> None:
    readings = iter([100.0, 40.0, 45.0])
    emulator = FayEmulator(clock=lambda: next(readings))
    assert emulator.now() == 100.0
    assert emulator.now() == 100.0  # the clock restarted at 40: carry on from 100
    assert emulator.now() == 105.0


def test_default_clock_outside_an_event_loop_stays_at_the_last_time() -> None:
    emulator = FayEmulator()
    assert emulator.now() == 0.0

    async def read() -> float:
        await anyio.lowlevel.checkpoint()
        return emulator.now()

    inside = anyio.run(read)
    assert emulator.now() == inside


def test_wall_clock_after_serving() -> None:
    emulator = FayEmulator(speed=1000)
    emulator.use_wall_clock()
    first = emulator.now()
    second = emulator.now()
    assert first > 1000  # monotonic seconds, scaled
    assert second >= first


# --- emulator.client() ------------------------------------------------------------------------


@pytest.mark.anyio
async def test_client_owns_and_closes_its_transport(emulator: FayEmulator) -> None:
    fay = emulator.client(timeout=3)
    assert type(fay) is FayClient
    assert fay.base_url == "http://emulator.test"
    async with fay:
        await fay.create_conversation("owned")
        http = fay._transport.http
        assert not http.is_closed
    assert fay.is_closed
    assert http.is_closed
    async with httpx.AsyncClient() as borrowed:
        with pytest.raises(exceptions.ConfigurationError, match="transport or http_client"):
            emulator.client(http_client=borrowed)
