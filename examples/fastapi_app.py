"""A FastAPI app whose researches never outlive the request, or the server, that wanted them.

uvicorn examples.fastapi_app:app     # needs fastapi and uvicorn, and FAY_API_KEY
"""

import json
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing, asynccontextmanager
from typing import Annotated

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel

from fay_async import (
    ConversationInfo,
    FayClient,
    InvalidRequestIdError,
    NotFoundError,
    NotTrackedError,
    ResearchFailedError,
    ResearchManager,
    ResearchResult,
    ResearchTimeoutError,
    StopResult,
)
from fay_async.asgi import CancelOnDisconnect


class Ask(BaseModel):
    prompt: str
    timeout: float = 600


#: The HTTP status each error of the library is answered with.
ERRORS: dict[type[Exception], int] = {
    InvalidRequestIdError: 400,
    NotTrackedError: 404,  # DELETE of a research this app does not run
    NotFoundError: 404,  # the service does not know the id
    ResearchFailedError: 502,
    ResearchTimeoutError: 504,  # it was stopped
}


async def answer_error(_request: Request, exc: Exception) -> JSONResponse:
    status = next(code for kind, code in ERRORS.items() if isinstance(exc, kind))
    return JSONResponse({"error": str(exc)}, status_code=status)


def get_manager(request: Request) -> ResearchManager:
    return request.app.state.manager


Manager = Annotated[ResearchManager, Depends(get_manager)]


def create_app(client_factory: Callable[[], FayClient] = FayClient) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # One client and one manager for the app's whole life (the key and the origin
        # come from FAY_API_KEY and FAY_BASE_URL); closing the manager stops every
        # research still running.
        async with client_factory() as client, ResearchManager(client) as manager:
            app.state.manager = manager
            yield

    app = FastAPI(lifespan=lifespan)
    # A handler is cancelled when its client leaves, and when the server is told to shut
    # down (SIGTERM): manager.research() then stops its research.
    app.add_middleware(CancelOnDisconnect)

    @app.post("/research")
    async def research(ask: Ask, manager: Manager) -> ResearchResult:
        return await manager.research(ask.prompt, timeout=ask.timeout)

    @app.post("/researches", status_code=202)
    async def start(ask: Ask, manager: Manager) -> dict[str, str]:
        return {"request_id": await manager.start_research(ask.prompt)}

    @app.get("/researches/{request_id}")
    async def status(request_id: str, manager: Manager) -> ConversationInfo:
        return await manager.get_status(request_id)

    @app.delete("/researches/{request_id}")
    async def stop(request_id: str, manager: Manager) -> StopResult:
        return await manager.cancel_research(request_id)

    @app.get("/researches/{request_id}/events")
    async def events(request_id: str, manager: Manager) -> StreamingResponse:
        async def stream() -> AsyncIterator[str]:
            async with aclosing(manager.watch(request_id)) as infos:
                async for info in infos:
                    yield f"data: {json.dumps(info.to_dict())}\n\n"

        return StreamingResponse(stream(), media_type="text/event-stream")

    for error in ERRORS:
        app.add_exception_handler(error, answer_error)
    return app


app = create_app()
