"""The one-research commands: ``research``, ``status``, ``output`` and ``stop``.

Each is an async function ``(args) -> exit code`` for :func:`.run.run`; an expected
failure is raised and turned into one line there.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from fay_async import StopResult

from .push import open_run
from .run import EXIT_OK, UsageError
from .target import open_target

__all__ = ["output", "read_schema", "research", "status", "stop"]


def _print_json(value: object) -> None:
    print(json.dumps(value, indent=2, ensure_ascii=False))


def _print_output(output: str | dict[str, Any]) -> None:
    if isinstance(output, str):
        print(output)
    else:
        _print_json(output)


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


async def research(args: argparse.Namespace) -> int:
    """``fay-async research PROMPT``: run one research with a timeout, print its output."""
    if not args.prompt.strip():
        raise UsageError("the prompt is empty")
    schema = read_schema(args.schema) if args.schema else None
    async with open_run(args) as (target, manager):
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
        _print_json(info.to_dict())
    else:
        for name, value in info.to_dict().items():
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
