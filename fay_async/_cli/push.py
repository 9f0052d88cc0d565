"""``--webhook-port``: a local webhook receiver beside a command, so it waits by push too.

The receiver (:class:`fay_async.webhooks.WebhookReceiver`) runs under uvicorn in the
command's own event loop and hands each verified event to the command's manager. Fay
reaches it through a tunnel the user runs (its public URL registered in the Fay
dashboard); with ``--emulator`` the built-in emulator delivers to it directly.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import secrets
import socket
from collections.abc import AsyncIterator, Iterator
from typing import Final

import anyio

from fay_async import (
    ResearchManager,
    _config,  # the environment variables' names: no public alternative
)
from fay_async.webhooks import WebhookEvent, WebhookReceiver

from .run import UsageError, say
from .target import Target, make_manager, open_target

__all__ = ["open_run"]

logger: Final = logging.getLogger("fay_async.cli")

#: How long the receiver's server may take to start listening.
_STARTUP_SECONDS: Final = 10.0


@contextlib.asynccontextmanager
async def open_run(args: argparse.Namespace) -> AsyncIterator[tuple[Target, ResearchManager]]:
    """The target and manager of a command, with a webhook receiver if ``--webhook-port``."""
    port: int | None = getattr(args, "webhook_port", None)
    if port is None:
        if getattr(args, "webhook_secret", None) is not None:
            raise UsageError("--webhook-secret needs --webhook-port")
        if getattr(args, "webhook_host", None) is not None:
            raise UsageError("--webhook-host needs --webhook-port")
        async with open_target(args) as target, make_manager(args, target) as manager:
            yield target, manager
        return
    secret = _secret(args)
    host = args.webhook_host or "127.0.0.1"
    with _bound(host, port) as sock:
        url = _url(sock)
        async with (
            open_target(args, webhook_url=url, webhook_secret=secret) as target,
            make_manager(args, target) as manager,
            _serving(_receiver(secret, manager), sock),
        ):
            where = "from the built-in emulator" if target.emulated else "(point your tunnel here)"
            say(f"receiving Fay webhooks on {url} {where}")
            yield target, manager


def _secret(args: argparse.Namespace) -> str:
    secret: str | None = args.webhook_secret or os.environ.get(_config.WEBHOOK_SECRET_ENV)
    if secret is not None and not secret.strip():
        raise UsageError("--webhook-secret is empty")
    if secret is None:
        if args.emulator:  # both ends are in this process: any secret will do
            return secrets.token_hex(16)
        raise UsageError(
            f"--webhook-port needs the webhook secret: set {_config.WEBHOOK_SECRET_ENV} or pass "
            "--webhook-secret (the Fay dashboard showed it when the webhook was registered)"
        )
    return secret


@contextlib.contextmanager
def _bound(host: str, port: int) -> Iterator[socket.socket]:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    except OSError as error:
        raise UsageError(f"--webhook-host {host}: {error}") from None
    with sock:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
        except OSError as error:
            raise UsageError(f"--webhook-port {port}: cannot listen on {host}: {error}") from None
        yield sock


def _url(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


def _log_event(event: WebhookEvent) -> None:
    status = event.status.value if event.status is not None else "-"
    logger.debug("webhook %s: %s %s for %s", event.id, event.type, status, event.request_id)


def _receiver(secret: str, manager: ResearchManager) -> WebhookReceiver:
    return WebhookReceiver(secret=secret, manager=manager, on_event=_log_event)


@contextlib.asynccontextmanager
async def _serving(receiver: WebhookReceiver, sock: socket.socket) -> AsyncIterator[None]:
    try:
        import uvicorn  # noqa: PLC0415 - only --webhook-port needs it
    except ImportError:
        raise UsageError('--webhook-port needs uvicorn: pip install "fay-async[cli]"') from None

    class Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            # The command handles Ctrl-C itself: uvicorn must not take the signals over.
            yield

    config = uvicorn.Config(
        receiver, lifespan="on", log_config=None, log_level="warning", access_log=False, http="h11"
    )
    server = Server(config)
    error: Exception | None = None
    async with anyio.create_task_group() as group:
        group.start_soon(server.serve, [sock])
        try:
            with anyio.fail_after(_STARTUP_SECONDS):
                while not server.started:  # noqa: ASYNC110 - uvicorn has no event for it
                    await anyio.sleep(0.005)
            yield
        except Exception as exc:  # noqa: BLE001 - raised below, not as an ExceptionGroup
            error = exc
        finally:
            server.should_exit = True
    if error is not None:
        raise error
