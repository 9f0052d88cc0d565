"""A tiny in-test Fay service on respx, for unit tests of polling and the manager.

Researches follow PENDING -> PROCESSING -> outcome on the event loop's clock; every call
is recorded; ``faults`` forces the next answers of an endpoint (an ``httpx.Response`` or an
exception to raise, such as ``httpx.ConnectError``).
"""

from __future__ import annotations

import itertools
import json
import re
from collections import defaultdict, deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import anyio
import attrs
import httpx
import respx

from fay_async import FayClient, RateLimits

BASE = "https://api.fay.work/api/v1"
KEY = "fake-key-for-tests"
VERSION = "1.0.24"
TS = "2025-06-23T12:48:43.031000+00:00"


def ok(data: dict[str, Any]) -> httpx.Response:
    return httpx.Response(200, json={"status": True, "version": VERSION, "data": data})


def err(status: int, code: str, message: str, **headers: str) -> httpx.Response:
    body = {"status": False, "version": VERSION, "error": {"message": message, "code": code}}
    return httpx.Response(status, json=body, headers=headers)


@attrs.define
class Research:
    request_id: str
    prompt: str
    created: float
    pending: float
    processing: float
    outcome: str = "COMPLETED"
    stopped_at: float | None = None

    def status(self, now: float) -> str:
        if self.stopped_at is not None:
            return "STOPPED"
        if now < self.created + self.pending:
            return "PENDING"
        if now < self.created + self.pending + self.processing:
            return "PROCESSING"
        return self.outcome

    @property
    def ends(self) -> float:
        return self.created + self.pending + self.processing


@attrs.define
class Call:
    at: float
    endpoint: str
    request_id: str | None
    status_code: int


@attrs.define
class FakeFay:
    pending: float = 50.0
    processing: float = 12.0
    outcome: str = "COMPLETED"
    durations: Callable[[], tuple[float, float]] | None = None
    researches: dict[str, Research] = attrs.field(factory=dict)
    calls: list[Call] = attrs.field(factory=list)
    faults: dict[str, deque[Any]] = attrs.field(factory=lambda: defaultdict(deque))
    status_override: dict[str, str] = attrs.field(factory=dict)
    _ids: Iterator[int] = attrs.field(factory=lambda: itertools.count(1))

    def count(self, endpoint: str, request_id: str | None = None) -> int:
        return sum(
            1
            for c in self.calls
            if c.endpoint == endpoint and (request_id is None or c.request_id == request_id)
        )

    def running(self) -> list[str]:
        now = anyio.current_time()
        return [r.request_id for r in self.researches.values() if r.status(now) in _RUNNING]

    def _fault(self, endpoint: str) -> httpx.Response | None:
        queue = self.faults.get(endpoint)
        if not queue:
            return None
        fault = queue.popleft()
        if isinstance(fault, BaseException):
            raise fault
        assert isinstance(fault, httpx.Response)
        return fault

    def _record(self, endpoint: str, request_id: str | None, response: httpx.Response) -> None:
        self.calls.append(Call(anyio.current_time(), endpoint, request_id, response.status_code))

    def _answer(
        self, endpoint: str, request_id: str, answer: Callable[[], httpx.Response]
    ) -> httpx.Response:
        try:
            response = self._fault(endpoint) or answer()
        except Exception:
            self.calls.append(Call(anyio.current_time(), endpoint, request_id, 0))
            raise
        self._record(endpoint, request_id, response)
        return response

    def create(self, request: httpx.Request) -> httpx.Response:
        response = self._fault("create") or self._create(request)
        rid = response.json().get("data", {}).get("request_id") if response.is_success else None
        self._record("create", rid, response)
        return response

    def _create(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        rid = f"req-{next(self._ids):05d}"
        pending, processing = (
            self.durations() if self.durations else (self.pending, self.processing)
        )
        self.researches[rid] = Research(
            rid, body["prompt"], anyio.current_time(), pending, processing, self.outcome
        )
        return ok({"request_id": rid, "status": "PENDING", "created_at": TS})

    def _lookup(self, request: httpx.Request) -> tuple[str, Research | None]:
        match = re.search(r"/conversation/([^/]+)/", request.url.path)
        assert match
        rid = match.group(1)
        return rid, self.researches.get(rid)

    def status(self, request: httpx.Request) -> httpx.Response:
        rid, research = self._lookup(request)
        return self._answer("status", rid, lambda: self._status(rid, research))

    def _status(self, rid: str, research: Research | None) -> httpx.Response:
        if research is None:
            return err(404, "REQUEST_NOT_FOUND", "Request not found")
        status = self.status_override.get(rid) or research.status(anyio.current_time())
        return ok(
            {
                "request_id": rid,
                "status": status,
                "prompt": research.prompt,
                "structured_output": False,
                "output_schema": None,
                "conversation_id": "6859474b0b2a8e7d3c1f9a20",
                "created_at": TS,
                "started_at": None,
                "completed_at": None,
                "error_message": "agent crashed" if status == "FAILED" else None,
                "metadata": None,
            }
        )

    def output(self, request: httpx.Request) -> httpx.Response:
        rid, research = self._lookup(request)
        return self._answer("output", rid, lambda: self._output(research))

    def _output(self, research: Research | None) -> httpx.Response:
        if research is None:
            return err(404, "REQUEST_NOT_FOUND", "Request not found")
        if research.status(anyio.current_time()) != "COMPLETED":
            return err(400, "RESEARCH_NOT_COMPLETED", "Research not completed yet")
        return ok(
            {
                "conversation_id": "6859474b0b2a8e7d3c1f9a20",
                "status": "COMPLETED",
                "output": f"# {research.prompt}",
            }
        )

    def stop(self, request: httpx.Request) -> httpx.Response:
        rid, research = self._lookup(request)
        return self._answer("stop", rid, lambda: self._stop(rid, research))

    def _stop(self, rid: str, research: Research | None) -> httpx.Response:
        if research is None:
            return err(404, "REQUEST_NOT_FOUND", "Request not found")
        status = research.status(anyio.current_time())
        if status == "COMPLETED":
            return err(400, "CONVERSATION_ALREADY_COMPLETED", "Cannot stop completed conversation")
        if status in ("FAILED", "STOPPED"):
            return err(400, "CANNOT_STOP", f"Cannot stop {status.lower()} conversation")
        research.stopped_at = anyio.current_time()
        return ok({"request_id": rid, "status": "STOPPED", "message": "stopped"})

    @contextmanager
    def mocked(self) -> Iterator[respx.MockRouter]:
        with respx.mock(base_url=BASE, assert_all_called=False) as router:
            router.post("/conversations").mock(side_effect=self.create)
            router.get(path__regex=r"/conversation/[^/]+/status$").mock(side_effect=self.status)
            router.get(path__regex=r"/conversation/[^/]+/output$").mock(side_effect=self.output)
            router.post(path__regex=r"/conversation/[^/]+/stop$").mock(side_effect=self.stop)
            yield router


_RUNNING = ("PENDING", "PROCESSING")


def client(rate_limits: RateLimits | None = None, **kwargs: Any) -> FayClient:
    kwargs.setdefault("max_retries", 0)
    return FayClient(KEY, rate_limits=rate_limits, **kwargs)
