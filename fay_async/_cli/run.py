"""Running one command: signals, exit codes, and one line per expected failure.

Each command is an async function ``(args) -> exit code`` run by :func:`run`, which
turns every expected failure into one line on stderr and handles Ctrl-C: the first stops
the work (and, through the manager, every research in flight), the second exits at once.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Iterator
from datetime import datetime, timedelta
from typing import Final

import anyio

from fay_async import (
    APIConnectionError,
    AuthenticationError,
    ConfigurationError,
    FayError,
    InvalidRequestIdError,
    NotFoundError,
    RateLimitError,
    ResearchFailedError,
    ResearchStoppedError,
    ResearchTimeoutError,
    _config,  # the environment variables' names: no public alternative
)

from .inputs import BatchInputError

__all__ = [
    "EXIT_INTERRUPTED",
    "EXIT_NOT_COMPLETED",
    "EXIT_OK",
    "EXIT_TERMINATED",
    "EXIT_USAGE",
    "Command",
    "UsageError",
    "describe",
    "run",
    "say",
]

EXIT_OK: Final = 0
EXIT_NOT_COMPLETED: Final = 1
EXIT_USAGE: Final = 2
EXIT_INTERRUPTED: Final = 130
EXIT_TERMINATED: Final = 143

Command = Callable[[argparse.Namespace], Awaitable[int]]


class UsageError(Exception):
    """A problem with what the user typed or gave: one line, exit code 2."""


def say(message: str) -> None:
    """One line on stderr, prefixed with the command's name."""
    print(f"fay-async: {message}", file=sys.stderr, flush=True)


def describe(error: BaseException) -> tuple[str, int]:  # noqa: PLR0911 - one line per kind
    """One line for the user, and the exit code, for an expected failure."""
    if isinstance(error, (UsageError, BatchInputError, ConfigurationError)):
        return str(error), EXIT_USAGE
    if isinstance(error, InvalidRequestIdError):
        return f"invalid request id: {error}", EXIT_USAGE
    if isinstance(error, AuthenticationError):
        return (
            f"the API key was refused ({error.message}); check {_config.API_KEY_ENV} or --api-key",
            EXIT_USAGE,
        )
    if isinstance(error, NotFoundError):
        return f"unknown request id ({error.message})", EXIT_USAGE
    if isinstance(error, RateLimitError):
        if error.retry_after is None:
            return f"rate limit exceeded ({error.message}); retry later", EXIT_NOT_COMPLETED
        moment = datetime.now().astimezone() + timedelta(seconds=error.retry_after)
        when = moment.strftime("%H:%M:%S")
        wait = f"retry in {error.retry_after:.0f} s (after {when})"
        return f"rate limit exceeded ({error.message}); {wait}", EXIT_NOT_COMPLETED
    if isinstance(error, ResearchTimeoutError):
        stopped = "it was stopped" if error.stopped else "it may still be running"
        return f"research {error.request_id} timed out; {stopped}", EXIT_NOT_COMPLETED
    if isinstance(error, ResearchFailedError):
        return (
            f"research {error.request_id} failed: {error.error_message or 'no reason given'}",
            EXIT_NOT_COMPLETED,
        )
    if isinstance(error, ResearchStoppedError):
        return f"research {error.request_id} was stopped", EXIT_NOT_COMPLETED
    if isinstance(error, APIConnectionError):
        return f"could not reach the Fay API: {error}", EXIT_NOT_COMPLETED
    return str(error), EXIT_NOT_COMPLETED


def run(command: Command, args: argparse.Namespace) -> int:
    """Run one command on an event loop; map failures and Ctrl-C to exit codes."""

    async def main() -> int:
        interrupted: int | None = None
        code = EXIT_OK
        work = anyio.CancelScope()

        async def watch_signals(*, task_status: anyio.abc.TaskStatus[None]) -> None:
            nonlocal interrupted
            with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                task_status.started()
                async for signum in signals:
                    exit_code = EXIT_TERMINATED if signum == signal.SIGTERM else EXIT_INTERRUPTED
                    if interrupted is not None:
                        say("interrupted again: exiting now")
                        if sys.stderr.isatty():
                            sys.stderr.write("\x1b[?25h")  # a progress bar hid the cursor
                            sys.stderr.flush()
                        os._exit(exit_code)
                    interrupted = exit_code
                    say("interrupted: stopping the researches in flight (Ctrl-C again to quit now)")
                    work.cancel()

        async with anyio.create_task_group() as group:
            # The handler is in place before the command starts: an early Ctrl-C is handled.
            await group.start(watch_signals)
            with work:
                try:
                    code = await command(args)
                except (FayError, UsageError, BatchInputError) as error:
                    message, code = describe(error)
                    say(message)
                except BrokenPipeError:
                    # The reader went away (`| head`): stop writing, quietly.
                    devnull = os.open(os.devnull, os.O_WRONLY)
                    os.dup2(devnull, sys.stdout.fileno())
                    code = EXIT_OK
            group.cancel_scope.cancel()
        return code if interrupted is None else interrupted

    with _logging(args):
        return anyio.run(main)


@contextlib.contextmanager
def _logging(args: argparse.Namespace) -> Iterator[None]:
    """With ``--verbose``, the library's debug records (one per HTTP attempt) on stderr."""
    if not getattr(args, "verbose", False):
        yield
        return
    logger = logging.getLogger("fay_async")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s: %(message)s"))
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
