"""A FastAPI app run as many workers on one Fay API key: budget, researches and webhooks
shared through Redis.

FAY_REDIS_URL=redis://:password@redis:6379/0 FAY_WEBHOOK_SECRET=... \\
    gunicorn examples.fleet_app:app -k uvicorn.workers.UvicornWorker -w 4

(needs ``pip install "fay-async[redis]" fastapi uvicorn gunicorn``, and FAY_API_KEY). Any
worker can stop any research, the workers together keep to the tier's hourly limits, a
webhook reaches the worker whose request waits for it, and the researches of a worker
that was killed are stopped by the others.
"""

import os
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Annotated

import anyio
from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from fay_async import (
    FayClient,
    FayError,
    NotTrackedError,
    RateLimits,
    ResearchManager,
    ResearchResult,
    StopResult,
)
from fay_async.asgi import CancelOnDisconnect
from fay_async.redis import RedisBudget, RedisRegistry, WebhookFanout
from fay_async.webhooks import WebhookReceiver


class Ask(BaseModel):
    prompt: str
    timeout: float = 600


def get_manager(request: Request) -> ResearchManager:
    return request.app.state.manager


Manager = Annotated[ResearchManager, Depends(get_manager)]


async def answer_error(_request: Request, exc: Exception) -> JSONResponse:
    # 404: a research no worker of the fleet tracks; 502: Fay (or Redis) failed.
    status = 404 if isinstance(exc, NotTrackedError) else 502
    return JSONResponse({"error": str(exc)}, status_code=status)


def create_app(redis_url: str, rate_limits: RateLimits | str = "free") -> FastAPI:
    # Each worker process builds its own app (gunicorn forks, then imports): the Redis
    # connections are made in the worker's event loop, on first use.
    fanout = WebhookFanout(redis_url)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        budget = RedisBudget(redis_url)
        registry = RedisRegistry(redis_url)
        async with (
            budget,
            FayClient(rate_limits=rate_limits, budget=budget) as client,
            ResearchManager(client, registry=registry) as manager,
            anyio.create_task_group() as tasks,
        ):
            await tasks.start(fanout.run, manager)  # webhooks of this worker's researches
            app.state.manager = manager
            app.state.worker = registry.worker_id
            yield
            tasks.cancel_scope.cancel()
        await fanout.aclose()

    app = FastAPI(lifespan=lifespan)
    app.add_middleware(CancelOnDisconnect)
    # Fay's webhooks land on any worker: the receiver checks the signature, answers, and
    # publishes each event to the fleet (the secret comes from FAY_WEBHOOK_SECRET).
    # Register https://<your host>/webhooks/fay in the Fay dashboard.
    app.add_route("/webhooks/fay", WebhookReceiver(manager=fanout), methods=["POST"])

    @app.get("/healthz")
    async def healthz(request: Request, manager: Manager) -> dict[str, object]:
        # A readiness probe: which worker answered, and how many researches it runs.
        return {"worker": request.app.state.worker, "tracked": len(manager.active_requests)}

    @app.post("/research")
    async def research(ask: Ask, manager: Manager) -> ResearchResult:
        return await manager.research(ask.prompt, timeout=ask.timeout)

    @app.post("/researches", status_code=202)
    async def start(ask: Ask, manager: Manager) -> dict[str, str]:
        return {"request_id": await manager.start_research(ask.prompt)}

    @app.delete("/researches/{request_id}")
    async def stop(request_id: str, manager: Manager) -> StopResult:
        # Whichever worker started it: the fleet registry knows its owner.
        return await manager.cancel_research(request_id)

    @app.delete("/researches")
    async def stop_all(manager: Manager) -> Mapping[str, str]:
        outcomes = await manager.cancel_all_research(fleet=True)
        return {
            request_id: outcome.status.value if isinstance(outcome, StopResult) else str(outcome)
            for request_id, outcome in outcomes.items()
        }

    app.add_exception_handler(FayError, answer_error)
    return app


app = create_app(os.environ["FAY_REDIS_URL"])
