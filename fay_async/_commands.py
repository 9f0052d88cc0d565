"""What the ``fay-async`` subcommands do once their arguments are parsed.

Each command is an async function ``(args) -> exit code`` run by :func:`run`, which
turns every expected failure into one line on stderr and handles Ctrl-C: the first stops
the work (and, through the manager, every research in flight), the second exits at once.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Final, TextIO

import anyio
import attrs

from . import _config
from ._batch import BatchProgress, BatchResult, run_batch
from ._client import FayClient
from ._journal import BatchInputError, BatchItem, Journal, read_items
from ._manager import ResearchManager
from ._models import ConversationInfo, ResearchStatus, StopResult
from ._polling import PollPolicy
from ._ratelimit import HOUR, RateLimits
from .exceptions import (
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
)

__all__ = ["EMULATOR_SPEED", "run"]

#: With ``--emulator``, emulated time (research durations, timeouts, hourly budgets)
#: runs this many times faster than real time: a default research takes about a second.
EMULATOR_SPEED: Final = 60.0

EXIT_OK: Final = 0
EXIT_NOT_COMPLETED: Final = 1
EXIT_USAGE: Final = 2
EXIT_INTERRUPTED: Final = 130
EXIT_TERMINATED: Final = 143

Command = Callable[[argparse.Namespace], Awaitable[int]]


class UsageError(Exception):
    """A problem with what the user typed or gave: one line, exit code 2."""


def _say(message: str) -> None:
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
                        _say("interrupted again: exiting now")
                        if sys.stderr.isatty():
                            sys.stderr.write("\x1b[?25h")  # a progress bar hid the cursor
                            sys.stderr.flush()
                        os._exit(exit_code)
                    interrupted = exit_code
                    _say(
                        "interrupted: stopping the researches in flight (Ctrl-C again to quit now)"
                    )
                    work.cancel()

        async with anyio.create_task_group() as group:
            # The handler is in place before the command starts: an early Ctrl-C is handled.
            await group.start(watch_signals)
            with work:
                try:
                    code = await command(args)
                except (FayError, UsageError, BatchInputError) as error:
                    message, code = describe(error)
                    _say(message)
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


# --- the target: the service, or the built-in emulator ------------------------------------------


@attrs.frozen
class Target:
    """A connected client, and how fast its clock runs compared with real time."""

    client: FayClient
    speed: float
    emulated: bool

    @property
    def name(self) -> str:
        """Where the researches live: the API origin, or the in-process emulator."""
        return "the built-in emulator" if self.emulated else self.client.base_url

    def real_seconds(self, seconds: float | None) -> float | None:
        """Real seconds for ``seconds`` of (possibly emulated) research time."""
        return None if seconds is None else seconds / self.speed


def _missing_key(args: argparse.Namespace) -> bool:
    key = args.api_key if args.api_key is not None else os.environ.get(_config.API_KEY_ENV)
    return not (key or "").strip()


def _rate_limits(tier: str | None, speed: float) -> RateLimits | None:
    if tier is None:
        return None
    preset = RateLimits.FREE if tier == "free" else RateLimits.PRO
    return attrs.evolve(preset, window=HOUR / speed)


@contextlib.asynccontextmanager
async def open_target(args: argparse.Namespace) -> AsyncIterator[Target]:
    """The client for this invocation: ``--emulator`` or the service (key from the env)."""
    tier = getattr(args, "tier", None)
    if args.emulator:
        from .testing import FayEmulator  # noqa: PLC0415 - only --emulator needs it

        _say("using the built-in Fay emulator (no account, no network): every output is made up")
        emulator = FayEmulator(
            api_keys=[_config.EMULATOR_API_KEY], speed=EMULATOR_SPEED, rate_limits=tier
        )
        client = emulator.client(rate_limits=_rate_limits(tier, EMULATOR_SPEED))
        speed, emulated = EMULATOR_SPEED, True
    else:
        if _missing_key(args):
            raise UsageError(
                f"no Fay API key: set {_config.API_KEY_ENV} (export {_config.API_KEY_ENV}=...) "
                "or pass --api-key; or try it offline with --emulator"
            )
        client = FayClient(
            args.api_key, base_url=args.base_url, rate_limits=_rate_limits(tier, 1.0)
        )
        speed, emulated = 1.0, False
    async with client:
        yield Target(client=client, speed=speed, emulated=emulated)


def poll_policy(args: argparse.Namespace, target: Target) -> PollPolicy:
    """The documented polling schedule, on the target's clock, or a fixed interval."""
    interval = getattr(args, "poll_interval", None)
    if interval is not None:
        interval /= target.speed  # seconds of research time, like --timeout
        return PollPolicy(
            pending_first=interval,
            pending_growth=1.0,
            pending_max=interval,
            processing_first=interval,
            processing_max=interval,
            retry_first=interval,
            retry_max=max(interval, 30.0 / target.speed),
        )
    default = PollPolicy()
    scale = 1.0 / target.speed
    return attrs.evolve(
        default,
        pending_first=default.pending_first * scale,
        pending_max=default.pending_max * scale,
        processing_first=default.processing_first * scale,
        processing_max=default.processing_max * scale,
        retry_first=default.retry_first * scale,
        retry_max=default.retry_max * scale,
    )


def _manager(args: argparse.Namespace, target: Target) -> ResearchManager:
    return ResearchManager(target.client, poll_policy=poll_policy(args, target))


# --- output ------------------------------------------------------------------------------------


def _print_json(value: object) -> None:
    print(json.dumps(value, indent=2, ensure_ascii=False))


def _print_output(output: str | dict[str, Any]) -> None:
    if isinstance(output, str):
        print(output)
    else:
        _print_json(output)


def _plain(value: object) -> object:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, ResearchStatus):
        return value.value
    return value


def _info_dict(info: ConversationInfo) -> dict[str, Any]:
    return {
        field.name: _plain(getattr(info, field.name)) for field in attrs.fields(ConversationInfo)
    }


def read_schema(path: str) -> dict[str, Any]:
    """Read a JSON-schema file for ``--schema``; every problem is a :class:`UsageError`."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"--schema {path}: no such file") from None
    except (OSError, UnicodeDecodeError) as error:
        raise UsageError(f"--schema {path}: cannot read it ({error})") from None
    try:
        schema = json.loads(text)
    except json.JSONDecodeError as error:
        raise UsageError(
            f"--schema {path}:{error.lineno}:{error.colno}: not valid JSON ({error.msg})"
        ) from None
    if not isinstance(schema, dict):
        raise UsageError(f"--schema {path}: a JSON schema must be a JSON object")
    return schema


# --- commands ------------------------------------------------------------------------------------


async def research(args: argparse.Namespace) -> int:
    """``fay-async research PROMPT``: run one research with a timeout, print its output."""
    if not args.prompt.strip():
        raise UsageError("the prompt is empty")
    schema = read_schema(args.schema) if args.schema else None
    async with open_target(args) as target, _manager(args, target) as manager:
        result = await manager.research(
            args.prompt,
            timeout=target.real_seconds(args.timeout),
            structured_output=schema is not None,
            output_schema=schema,
        )
    if args.json:
        _print_json(
            {
                "request_id": result.request_id,
                "status": result.info.status.value,
                "output": result.text,
                "emulated": target.emulated,
            }
        )
    else:
        _print_output(result.text)
    return EXIT_OK


async def status(args: argparse.Namespace) -> int:
    """``fay-async status ID``."""
    async with open_target(args) as target:
        info = await target.client.get_status(args.request_id)
    if args.json:
        _print_json(_info_dict(info))
    else:
        for name, value in _info_dict(info).items():
            if value is not None:
                print(f"{name}: {value}")
    return EXIT_OK


async def output(args: argparse.Namespace) -> int:
    """``fay-async output ID``."""
    async with open_target(args) as target:
        result = await target.client.get_output(args.request_id)
    if args.json:
        _print_json({"conversation_id": result.conversation_id, "output": result.output})
    else:
        _print_output(result.output)
    return EXIT_OK


async def stop(args: argparse.Namespace) -> int:
    """``fay-async stop ID``: stop a running research; say so if it had already ended."""
    async with open_target(args) as target:
        result = await target.client.stop_if_running(args.request_id)
    if isinstance(result, StopResult):
        print(f"{result.request_id}: {result.status.value} ({result.message})")
    else:
        print(f"{result.request_id}: already {result.status.value}, nothing to stop")
    return EXIT_OK


class _PlainProgress(BatchProgress):
    """One line per finished item, for logs and pipes."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._total = 0
        self._done = 0

    def started(self, total: int, already_done: int) -> None:
        self._total, self._done = total, already_done
        resumed = f" ({already_done} already done)" if already_done else ""
        print(f"batch: {total} prompts{resumed}", file=self._stream, flush=True)

    def finished(self, result: BatchResult) -> None:
        self._done += 1
        detail = "" if result.ok else f": {result.error_message}"
        print(
            f"[{self._done}/{self._total}] {result.item.key} {result.status} "
            f"({result.request_id or 'not created'}){detail}",
            file=self._stream,
            flush=True,
        )


class _RichProgress(BatchProgress):
    """A live progress bar: done, failed, timed out, in flight, ETA."""

    def __init__(self) -> None:
        from rich.progress import (  # noqa: PLC0415 - rich is an optional extra
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
        )

        self._progress = Progress(
            TextColumn("[bold]batch"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[counts]}"),
            TimeRemainingColumn(),
            transient=False,
        )
        self._task: Any = None
        self._counts: dict[str, int] = {}
        self._in_flight = 0

    def __enter__(self) -> _RichProgress:
        self._progress.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._progress.stop()

    def _text(self) -> str:
        done = self._counts.get("COMPLETED", 0)
        failed = sum(v for k, v in self._counts.items() if k not in ("COMPLETED", "TIMED_OUT"))
        timed_out = self._counts.get("TIMED_OUT", 0)
        return (
            f"done {done} · failed {failed} · timed out {timed_out} · in flight {self._in_flight}"
        )

    def started(self, total: int, already_done: int) -> None:
        self._task = self._progress.add_task("batch", total=total, counts="")
        self._progress.update(self._task, completed=already_done, counts=self._text())

    def created(self, item: BatchItem, request_id: str) -> None:
        del item, request_id
        self._in_flight += 1
        self._progress.update(self._task, counts=self._text())

    def finished(self, result: BatchResult) -> None:
        self._in_flight = max(0, self._in_flight - 1)
        self._counts[result.status] = self._counts.get(result.status, 0) + 1
        self._progress.update(self._task, advance=1, counts=self._text())


def _progress() -> contextlib.AbstractContextManager[BatchProgress]:
    if sys.stderr.isatty():
        try:
            return _RichProgress()
        except ImportError:
            pass
    return contextlib.nullcontext(_PlainProgress(sys.stderr))


def _checked_out(out: Path, source: Path) -> Path:
    if out.is_dir():
        raise UsageError(f"--out {out}: is a directory; give a file name such as results.jsonl")
    if not out.parent.is_dir():
        raise UsageError(f"--out {out}: the folder {out.parent} does not exist")
    if out.resolve() == source.resolve():
        raise UsageError("--out must not be the input file")
    return out


def journal_path(out: Path) -> Path:
    """Where the journal of a batch writing to ``out`` lives."""
    return out.with_name(out.name + ".journal.sqlite")


async def batch(args: argparse.Namespace) -> int:
    """``fay-async batch FILE --out OUT``: a resumable batch; see :func:`run_batch`."""
    items = read_items(args.file)
    out = _checked_out(Path(args.out), Path(args.file))
    with Journal(journal_path(out)) as journal, _progress() as progress:
        async with open_target(args) as target, _manager(args, target) as manager:
            extra = {"emulated": True} if target.emulated else None
            summary = await run_batch(
                manager,
                items,
                journal=journal,
                out_path=out,
                input_path=args.file,
                concurrency=args.concurrency,
                timeout=target.real_seconds(args.timeout),
                progress=progress,
                extra=extra,
                retry_uncertain=args.retry_uncertain,
                target=target.name,
                ids_survive=not target.emulated,
            )
    parts = [
        f"{count} {status.lower().replace('_', ' ')}" for status, count in summary.statuses.items()
    ]
    print(f"{summary.total} prompts: {', '.join(parts)} -> {out}")
    return EXIT_OK if summary.all_completed else EXIT_NOT_COMPLETED
