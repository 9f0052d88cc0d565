"""Response bodies as the Fay documentation shows them (shared by several test modules)."""

from __future__ import annotations

from typing import Any

VERSION = "1.0.24"
REQUEST_ID = "e0a05c59-a5d7-44f3-8d5e-9e535e4db957"
CONVERSATION_ID = "6859474b0b2a8e7d3c1f9a20"
BASE = "https://api.fay.work/api/v1"


def ok(data: dict[str, Any]) -> dict[str, Any]:
    return {"status": True, "version": VERSION, "data": data}


def err(code: str, message: str) -> dict[str, Any]:
    return {"status": False, "version": VERSION, "error": {"message": message, "code": code}}


CREATED = ok(
    {
        "request_id": REQUEST_ID,
        "status": "PENDING",
        "created_at": "2025-06-23T12:48:43.031000+00:00",
    }
)

STATUS_PENDING = ok(
    {
        "request_id": REQUEST_ID,
        "status": "PENDING",
        "prompt": "What changed in EU battery regulation in 2025?",
        "structured_output": False,
        "output_schema": None,
        "conversation_id": CONVERSATION_ID,
        "created_at": "2025-06-23T12:48:43.031000+00:00",
        "started_at": None,
        "completed_at": None,
        "error_message": None,
        "metadata": None,
    }
)

STATUS_COMPLETED = ok(
    {
        **STATUS_PENDING["data"],
        "status": "COMPLETED",
        "started_at": "2025-06-23T12:49:33.512000+00:00",
        "completed_at": "2025-06-23T12:49:46.204000+00:00",
        "metadata": {"sources": 12},
    }
)

STATUS_FAILED = ok(
    {
        **STATUS_PENDING["data"],
        "status": "FAILED",
        "started_at": "2025-06-23T12:49:33.512000+00:00",
        "completed_at": "2025-06-23T12:49:40.000000+00:00",
        "error_message": "Research agent crashed",
    }
)

OUTPUT_MARKDOWN = ok(
    {
        "conversation_id": CONVERSATION_ID,
        "status": "COMPLETED",
        "output": "# EU battery regulation\n\nThree things changed ...",
    }
)

OUTPUT_STRUCTURED = ok(
    {
        "conversation_id": CONVERSATION_ID,
        "status": "COMPLETED",
        "output": {"title": "EU battery regulation", "changes": ["a", "b", "c"]},
    }
)

STOPPED = ok(
    {
        "request_id": REQUEST_ID,
        "status": "STOPPED",
        "message": "Conversation stopped successfully",
    }
)

NOT_FOUND = err("REQUEST_NOT_FOUND", "Request not found")
ALREADY_COMPLETED = err("CONVERSATION_ALREADY_COMPLETED", "Cannot stop completed conversation")
INVALID_KEY = err("INVALID_API_KEY", "Invalid or expired API key")
VALIDATION = err("VALIDATION_ERROR", "Invalid prompt format")
NOT_COMPLETED = err("RESEARCH_NOT_COMPLETED", "Research not completed yet")
RATE_LIMITED = err("RATE_LIMIT_EXCEEDED", "Rate limit exceeded")
