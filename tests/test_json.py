"""Every public value is JSON-friendly: to_dict(), dict(value), and FastAPI responses."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from fay_async import (
    ActiveResearch,
    ConversationInfo,
    ConversationOutput,
    CreatedConversation,
    CreateRequest,
    ResearchResult,
    ResearchStatus,
    StopResult,
)
from fay_async._wire import structure

from . import _docs as docs

WHEN = datetime(2025, 6, 23, 12, 48, 43, 31000, tzinfo=timezone.utc)


def info() -> ConversationInfo:
    return structure(200, docs.STATUS_COMPLETED["data"], ConversationInfo, b"")


def result() -> ResearchResult:
    output = structure(200, docs.OUTPUT_STRUCTURED["data"], ConversationOutput, b"")
    return ResearchResult(info=info(), output=output)


def test_to_dict_gives_the_api_its_own_json_back() -> None:
    # What the wire read from the documented payload is what to_dict() writes back.
    assert info().to_dict() == docs.STATUS_COMPLETED["data"]
    output = structure(200, docs.OUTPUT_STRUCTURED["data"], ConversationOutput, b"")
    assert output.to_dict() == docs.OUTPUT_STRUCTURED["data"]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (
            CreatedConversation(request_id="r", status=ResearchStatus.PENDING, created_at=WHEN),
            {
                "request_id": "r",
                "status": "PENDING",
                "created_at": "2025-06-23T12:48:43.031000+00:00",
            },
        ),
        (
            StopResult(request_id="r", status=ResearchStatus.STOPPED, message="stopped"),
            {"request_id": "r", "status": "STOPPED", "message": "stopped"},
        ),
        (
            ActiveResearch(request_id="r", prompt="q", started_at=1.5, status=None),
            {"request_id": "r", "prompt": "q", "started_at": 1.5, "status": None},
        ),
        (
            CreateRequest(prompt="q", structured_output=True, output_schema={"type": "object"}),
            {"prompt": "q", "structured_output": True, "output_schema": {"type": "object"}},
        ),
        (
            StopResult(request_id="r", status=ResearchStatus.from_api("ARCHIVED")),
            {"request_id": "r", "status": "ARCHIVED", "message": ""},
        ),
    ],
)
def test_to_dict_and_dict_of_every_value(value: Any, expected: dict[str, Any]) -> None:
    assert value.to_dict() == expected
    assert dict(value) == expected
    assert json.loads(json.dumps(value.to_dict())) == expected


def test_a_result_nests_its_parts_and_keeps_offsets() -> None:
    other_zone = timezone(timedelta(hours=2))
    value = CreatedConversation(
        request_id="r", status=ResearchStatus.PENDING, created_at=WHEN.astimezone(other_zone)
    )
    assert value.to_dict()["created_at"] == "2025-06-23T14:48:43.031000+02:00"
    nested = result().to_dict()
    assert nested["info"] == info().to_dict()
    assert nested["output"]["output"] == docs.OUTPUT_STRUCTURED["data"]["output"]


@pytest.mark.anyio
async def test_fastapi_returns_values_with_and_without_a_response_model() -> None:
    app = FastAPI()

    @app.get("/plain")
    async def plain():  # type: ignore[no-untyped-def]
        return result()

    @app.get("/typed")
    async def typed() -> ResearchResult:
        return result()

    @app.get("/info", response_model=ConversationInfo)
    async def by_model() -> Any:
        return info()

    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://app.test"
    ) as http:
        plain_body = (await http.get("/plain")).json()
        typed_body = (await http.get("/typed")).json()
        info_body = (await http.get("/info")).json()
        schema = (await http.get("/openapi.json")).json()
    assert plain_body == typed_body == result().to_dict()
    assert info_body == docs.STATUS_COMPLETED["data"]
    described = schema["paths"]["/info"]["get"]["responses"]["200"]["content"]
    properties = described["application/json"]["schema"]["properties"]
    assert properties["created_at"]["anyOf"][0] == {"type": "string", "format": "date-time"}
    assert properties["status"] == {"type": "string"}


def test_pydantic_refuses_a_value_of_another_type() -> None:
    from pydantic import TypeAdapter, ValidationError

    adapter = TypeAdapter(StopResult)
    value = StopResult(request_id="r", status=ResearchStatus.STOPPED)
    assert adapter.validate_python(value) is value
    assert adapter.dump_python(value) == value.to_dict()
    with pytest.raises(ValidationError, match="expected a StopResult, got dict"):
        adapter.validate_python({"request_id": "r"})
