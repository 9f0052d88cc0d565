"""An ASGI app under a real uvicorn in the test's own event loop, and a polling wait.

asyncio only (uvicorn has no trio server), on the real clock, bound to 127.0.0.1.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import uvicorn

from fay_async.testing._server import bind_socket

__all__ = ["eventually", "served"]


@asynccontextmanager
async def served(
    app: Any, *, lifespan: str = "off", force_exit: bool = False
) -> AsyncIterator[int]:
    """Serve ``app`` with uvicorn on 127.0.0.1 in this event loop; yield the port.

    ``force_exit`` ends the server without waiting for requests still in flight. On
    leaving, it checks that uvicorn logged no application error.
    """
    config = uvicorn.Config(
        app, host="127.0.0.1", port=0, lifespan=lifespan, log_level="warning", http="h11"
    )
    server = uvicorn.Server(config)
    sock = bind_socket("127.0.0.1", 0)
    errors: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = errors.append  # type: ignore[method-assign]
    logging.getLogger("uvicorn.error").addHandler(handler)
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(server.serve, [sock])
            with anyio.fail_after(5):
                while not server.started:  # noqa: ASYNC110 - uvicorn has no event for it
                    await anyio.sleep(0.002)
            try:
                yield sock.getsockname()[1]
            finally:
                server.should_exit = True
                server.force_exit = force_exit
    finally:
        logging.getLogger("uvicorn.error").removeHandler(handler)
        sock.close()
    assert [r.getMessage() for r in errors if r.levelno >= logging.ERROR] == []


async def eventually(condition: Callable[[], bool], seconds: float = 5.0) -> None:
    """Wait until ``condition()`` holds: it polls state kept by other tasks or threads."""
    with anyio.fail_after(seconds):
        while not condition():  # noqa: ASYNC110 - nothing to wait on but the condition
            await anyio.sleep(0.005)
