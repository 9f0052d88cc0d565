"""A Starlette (or FastAPI) app whose research endpoints stop when the browser goes away.

uvicorn examples.starlette_app:app     # needs starlette and uvicorn, and FAY_API_KEY
"""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from fay_async import FayClient, ResearchManager
from fay_async.asgi import CancelOnDisconnect, cancel_on_disconnect


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    # One client and one manager for the app's whole life; leaving stops what still runs.
    async with FayClient() as client, ResearchManager(client) as manager:
        app.state.manager = manager
        yield


async def research(request: Request) -> Response:
    # CancelOnDisconnect cancels this handler if the client leaves: the research stops.
    manager: ResearchManager = request.app.state.manager
    result = await manager.research(request.query_params["q"], timeout=600)
    return JSONResponse({"request_id": result.request_id, "output": result.text})


async def research_here(request: Request) -> Response:
    # Without the middleware: watch the client for one block of one handler.
    manager: ResearchManager = request.app.state.manager
    async with cancel_on_disconnect(request) as watch:
        result = await manager.research(request.query_params["q"], timeout=600)
    if watch.disconnected:
        return Response(status_code=499)  # nobody is left to read it
    return JSONResponse({"request_id": result.request_id, "output": result.text})


app = Starlette(
    routes=[Route("/research", research), Route("/research-here", research_here)],
    lifespan=lifespan,
    middleware=[Middleware(CancelOnDisconnect)],
)
