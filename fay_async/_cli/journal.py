"""The batch journal: what makes a batch resumable.

The journal is a SQLite file next to the output file. It records each request id the
moment the research is created and each final result, so a rerun after a crash or
Ctrl-C skips finished items, polls created ones again (never creating them twice), and
starts the rest.
"""

from __future__ import annotations

import json
import os
import sqlite3
import sys
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any, Final

import attrs

from fay_async import BatchItem

from .inputs import BatchInputError

if sys.platform != "win32":
    import fcntl

__all__ = ["Journal", "JournalEntry", "journal_path"]

SCHEMA_VERSION: Final = "1"


def journal_path(out: Path) -> Path:
    """Where the journal of a batch writing to ``out`` lives."""
    return out.with_name(out.name + ".journal.sqlite")


@attrs.frozen(kw_only=True)
class JournalEntry:
    """What the journal knows of one item."""

    key: str
    fingerprint: str
    request_id: str | None
    result: dict[str, Any] | None
    interrupted: bool = False
    creating: bool = False

    @property
    def finished(self) -> bool:
        """True once a final result is recorded."""
        return self.result is not None

    @property
    def uncertain(self) -> bool:
        """A create was sent, but no request id came back before the process died."""
        return self.creating and self.request_id is None and self.result is None


def _lock(path: Path) -> IO[str] | None:
    """Hold an exclusive lock beside the journal, so that two runs never share one batch."""
    if sys.platform == "win32":  # pragma: no cover - no flock there
        return None
    lock_path = path.with_name(path.name + ".lock")
    try:
        handle = lock_path.open("a", encoding="utf-8")
    except OSError as error:
        raise BatchInputError(
            f"cannot create the journal's lock file ({error.strerror})", path=lock_path
        ) from None
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        raise BatchInputError(
            "another fay-async batch is running with this journal right now; wait for it to "
            "end (or stop it), or write to another --out",
            path=path,
        ) from None
    return handle


class Journal:
    """The SQLite journal of one batch: request ids as they are created, final results.

    Writes are committed before the call returns (WAL mode), so they survive the
    process being killed (not a power cut: the operating system may still hold the
    last writes). One process at a time may open a journal: a second one is refused.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._lock = _lock(self.path)
        try:
            self._open()
        except BaseException:
            self._release()
            raise

    def _release(self) -> None:
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def _open(self) -> None:
        try:
            self._db = sqlite3.connect(self.path, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(
                """
                CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
                CREATE TABLE IF NOT EXISTS items (
                    key TEXT PRIMARY KEY,
                    position INTEGER NOT NULL,
                    fingerprint TEXT NOT NULL,
                    request_id TEXT,
                    result TEXT,
                    interrupted INTEGER NOT NULL DEFAULT 0,
                    creating INTEGER NOT NULL DEFAULT 0
                );
                """
            )
            version = self._db.execute("SELECT value FROM meta WHERE name = 'schema'").fetchone()
        except sqlite3.DatabaseError as error:
            raise BatchInputError(
                f"the batch journal cannot be used ({error}); move it away to start afresh",
                path=self.path,
            ) from None
        if version is None:
            self._db.execute("INSERT INTO meta VALUES ('schema', ?)", (SCHEMA_VERSION,))
        elif version[0] != SCHEMA_VERSION:
            raise BatchInputError(
                f"the batch journal has format {version[0]}, this version reads {SCHEMA_VERSION}",
                path=self.path,
            )

    def close(self) -> None:
        """Close the database and release the lock."""
        self._db.close()
        self._release()

    @property
    def is_empty(self) -> bool:
        """True while no batch item has been recorded (a new journal)."""
        return self._db.execute("SELECT 1 FROM items LIMIT 1").fetchone() is None

    def bind_target(self, target: str) -> None:
        """Record where this batch's researches live; refuse to resume it anywhere else."""
        row = self._db.execute("SELECT value FROM meta WHERE name = 'target'").fetchone()
        if row is None:
            self._db.execute("INSERT INTO meta VALUES ('target', ?)", (target,))
        elif row[0] != target:
            raise BatchInputError(
                f"this batch was started against {row[0]} and is now run against {target}; "
                f"its request ids exist only at {row[0]}: run it there again, or write to "
                "another --out to start a new batch",
                path=self.path,
            )

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def entries(self) -> dict[str, JournalEntry]:
        """Every item the journal knows, by key."""
        rows = self._db.execute(
            "SELECT key, fingerprint, request_id, result, interrupted, creating FROM items "
            "ORDER BY position"
        )
        return {
            key: JournalEntry(
                key=key,
                fingerprint=fingerprint,
                request_id=request_id,
                result=json.loads(result) if result is not None else None,
                interrupted=bool(interrupted),
                creating=bool(creating),
            )
            for key, fingerprint, request_id, result, interrupted, creating in rows
        }

    def register(self, items: Iterable[BatchItem], *, input_path: str | os.PathLike[str]) -> None:
        """Record the batch's items; refuse an input that changed since the journal began."""
        known = self.entries()
        for item in items:
            entry = known.get(item.key)
            if entry is not None and entry.fingerprint != item.fingerprint:
                raise BatchInputError(
                    f"item {item.key!r} changed since this batch's journal "
                    f"({self.path}) was written; restore it, or use a new --out to start "
                    "a new batch",
                    path=input_path,
                    line=item.line,
                )
        new = [
            (item.key, position, item.fingerprint)
            for position, item in enumerate(items)
            if item.key not in known
        ]
        # One transaction: fast for a long input, and all or nothing.
        self._db.execute("BEGIN")
        self._db.executemany("INSERT INTO items (key, position, fingerprint) VALUES (?, ?, ?)", new)
        self._db.execute("COMMIT")

    def creating(self, key: str) -> None:
        """Record that an item's create is about to be sent: from now on it may exist."""
        self._db.execute("UPDATE items SET creating = 1 WHERE key = ?", (key,))

    def created(self, key: str, request_id: str) -> None:
        """Record the request id of an item's research, as soon as it exists."""
        self._db.execute(
            "UPDATE items SET request_id = ?, creating = 0 WHERE key = ?", (request_id, key)
        )

    def interrupted(self, key: str) -> None:
        """Record that the batch was interrupted while this item's research ran."""
        self._db.execute("UPDATE items SET interrupted = 1 WHERE key = ?", (key,))

    def restart(self, key: str) -> None:
        """Forget an item's research and result: it starts afresh."""
        self._db.execute(
            "UPDATE items SET request_id = NULL, result = NULL, interrupted = 0, creating = 0 "
            "WHERE key = ?",
            (key,),
        )

    def finished(self, key: str, result: Mapping[str, Any]) -> None:
        """Record an item's final result."""
        self._db.execute(
            "UPDATE items SET result = ? WHERE key = ?", (json.dumps(dict(result)), key)
        )

    def results(self, keys: Iterable[str] | None = None) -> Iterator[dict[str, Any]]:
        """The final results recorded so far, in input order (only ``keys``, if given)."""
        wanted = None if keys is None else set(keys)
        for entry in self.entries().values():
            if entry.result is not None and (wanted is None or entry.key in wanted):
                yield entry.result
