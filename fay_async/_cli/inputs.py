"""Reading a batch's input file: plain text (one prompt a line) or JSONL."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Final

from fay_async import BatchItem

__all__ = ["MAX_PROMPT_CHARS", "BatchInputError", "read_items"]

#: A prompt longer than this (in characters) is refused while reading the input.
MAX_PROMPT_CHARS: Final = 100_000
_JSONL_KEYS: Final = frozenset({"prompt", "structured_output", "output_schema", "id"})


class BatchInputError(ValueError):
    """The batch input (or its journal) cannot be used; the message names file and line."""

    def __init__(self, message: str, *, path: str | os.PathLike[str], line: int | None = None):
        where = f"{os.fspath(path)}:{line}" if line is not None else os.fspath(path)
        super().__init__(f"{where}: {message}")
        self.path = os.fspath(path)
        self.line = line


def _fail(path: Path, line: int, message: str) -> BatchInputError:
    return BatchInputError(message, path=path, line=line)


def _is_jsonl(path: Path, lines: list[str]) -> bool:
    if path.suffix.lower() in (".jsonl", ".ndjson"):
        return True
    if path.suffix.lower() == ".txt":
        return False
    first = next((text.strip() for text in lines if text.strip()), "")
    return first.startswith("{")


def _jsonl_item(path: Path, number: int, text: str) -> BatchItem:
    try:
        record = json.loads(text)
    except ValueError as error:
        raise _fail(path, number, f"not valid JSON ({error})") from None
    if not isinstance(record, dict):
        raise _fail(path, number, "each line must be a JSON object with a 'prompt'")
    unknown = set(record) - _JSONL_KEYS
    if unknown:
        raise _fail(
            path,
            number,
            f"unknown field(s) {', '.join(sorted(unknown))}; "
            f"allowed: {', '.join(sorted(_JSONL_KEYS))}",
        )
    prompt = record.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise _fail(path, number, "'prompt' must be a non-empty string")
    structured = record.get("structured_output", False)
    if not isinstance(structured, bool):
        raise _fail(path, number, "'structured_output' must be true or false")
    schema = record.get("output_schema")
    if schema is not None and not isinstance(schema, dict):
        raise _fail(path, number, "'output_schema' must be a JSON object")
    if schema is not None and "structured_output" not in record:
        structured = True
    if schema is not None and not structured:
        raise _fail(path, number, "'output_schema' needs 'structured_output': true")
    key = record.get("id")
    if key is not None and (
        isinstance(key, bool) or not isinstance(key, (str, int)) or not str(key).strip()
    ):
        raise _fail(path, number, "'id' must be a non-empty string or a number")
    return BatchItem(
        key=str(key) if key is not None else f"line-{number}",
        prompt=prompt,
        structured_output=structured,
        output_schema=schema,
        line=number,
    )


def read_items(path: str | os.PathLike[str]) -> list[BatchItem]:
    """Read a batch input: plain text (one prompt a line) or JSONL.

    JSONL lines are objects with ``prompt`` and optional ``structured_output``,
    ``output_schema`` and ``id``. Blank lines are skipped. Every problem raises
    :class:`BatchInputError` naming the file and line.
    """
    file = Path(path)
    try:
        raw = file.read_bytes()
    except FileNotFoundError:
        raise BatchInputError("no such file", path=file) from None
    except IsADirectoryError:
        raise BatchInputError("is a directory, not a file of prompts", path=file) from None
    except OSError as error:
        raise BatchInputError(f"cannot read it ({error.strerror})", path=file) from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = raw[: error.start].count(b"\n") + 1
        raise _fail(file, line, "not UTF-8 text") from None
    lines = text.splitlines()
    jsonl = _is_jsonl(file, lines)
    items: list[BatchItem] = []
    seen: dict[str, int] = {}
    for number, content in enumerate(lines, start=1):
        if not content.strip():
            continue
        if "\x00" in content:
            raise _fail(file, number, "contains a NUL byte; is this a text file?")
        if jsonl:
            item = _jsonl_item(file, number, content)
        else:
            item = BatchItem(key=f"line-{number}", prompt=content.strip(), line=number)
        if len(item.prompt) > MAX_PROMPT_CHARS:
            raise _fail(
                file,
                number,
                f"the prompt is {len(item.prompt)} characters; at most "
                f"{MAX_PROMPT_CHARS} are accepted",
            )
        if item.key in seen:
            raise _fail(file, number, f"id {item.key!r} was already used on line {seen[item.key]}")
        seen[item.key] = number
        items.append(item)
    if not items:
        raise BatchInputError("no prompts in the file (it is empty or blank)", path=file)
    return items
