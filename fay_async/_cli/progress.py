"""What a batch shows as it goes: a live progress bar, or one plain line per result."""

from __future__ import annotations

import contextlib
import sys
from typing import Any, TextIO

from fay_async import BatchItem, BatchResult

__all__ = ["BatchProgress", "PlainProgress", "RichProgress", "open_progress"]


class BatchProgress:
    """Hooks a batch run calls as it goes; the base class draws nothing."""

    def started(self, total: int, already_done: int) -> None:
        """The batch starts: ``total`` items, ``already_done`` of them from an earlier run."""

    def created(self, item: BatchItem, request_id: str) -> None:
        """A research was created for ``item``."""

    def finished(self, result: BatchResult) -> None:
        """``result`` was recorded."""


class PlainProgress(BatchProgress):
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


class RichProgress(BatchProgress):
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

    def __enter__(self) -> RichProgress:
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


def open_progress() -> contextlib.AbstractContextManager[BatchProgress]:
    """A live progress bar on a terminal (with rich installed), else plain lines."""
    if sys.stderr.isatty():
        try:
            return RichProgress()
        except ImportError:
            pass
    return contextlib.nullcontext(PlainProgress(sys.stderr))
