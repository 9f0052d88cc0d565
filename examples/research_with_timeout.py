"""Run one research with a time limit: on timeout it is stopped, so it costs nothing more.

    python examples/research_with_timeout.py ["your question"] [--timeout SECONDS]

With FAY_API_KEY set this talks to the Fay API; without it, to an in-process emulator
that runs a minute of research in about two seconds.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio

from fay_async import FayClient, ResearchManager, ResearchResult, ResearchTimeoutError

PROMPT = "What changed in EU battery regulation in 2025?"


@asynccontextmanager
async def open_client(client: FayClient | None = None) -> AsyncIterator[FayClient]:
    """The given client; else the real API if FAY_API_KEY is set; else a local emulator."""
    if client is not None:
        yield client
        return
    if os.environ.get("FAY_API_KEY"):
        fay = FayClient()
    else:
        from fay_async.testing import FayEmulator  # noqa: PLC0415 - only without a key

        fay = FayEmulator(speed=30.0).client()
    async with fay:
        yield fay


async def main(
    prompt: str = PROMPT,
    *,
    timeout: float = 300.0,  # noqa: ASYNC109 - the time limit is what this example shows
    client: FayClient | None = None,
) -> ResearchResult | None:
    """Research ``prompt``; print and return the result, or None if it timed out."""
    async with open_client(client) as fay, ResearchManager(fay) as manager:
        try:
            result = await manager.research(prompt, timeout=timeout)
        except ResearchTimeoutError as error:
            what = "stopped" if error.stopped else "could not be stopped"
            print(f"No answer within {timeout:g} s: research {error.request_id} was {what}.")
            return None
        print(f"Research {result.request_id} completed:\n")
        print(result.text)
        return result


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("prompt", nargs="?", default=PROMPT)
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds (default 300)")
    return parser.parse_args()


if __name__ == "__main__":
    args = _arguments()
    anyio.run(lambda: main(args.prompt, timeout=args.timeout))
