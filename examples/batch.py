"""Research every prompt of a file, four at a time, printing each result as it lands.

    python examples/batch.py [examples/prompts.txt]

Each prompt gets one result: its output, or why it has none (failed, timed out and
stopped, API error). Ctrl-C stops every research still in flight. With FAY_API_KEY set
this talks to the Fay API; without it, to an in-process emulator where a minute of
research passes in two seconds. For a resumable batch with a journal, use the command
``fay-async batch``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import anyio

from fay_async import BatchResult, FayClient, ResearchManager, research_many

HERE = Path(__file__).resolve().parent


def make_client() -> FayClient:
    """The Fay API if FAY_API_KEY is set, else an in-process emulator running 30x faster."""
    if os.environ.get("FAY_API_KEY"):
        return FayClient()
    from fay_async.testing import FayEmulator  # noqa: PLC0415 - only without a key

    return FayEmulator(speed=30.0).client()


async def main(
    path: Path = HERE / "prompts.txt", *, client: FayClient | None = None
) -> list[BatchResult]:
    """Research each line of ``path``; print and return the results in finishing order."""
    text = await anyio.Path(path).read_text(encoding="utf-8")
    prompts = [line.strip() for line in text.splitlines() if line.strip()]
    finished: list[BatchResult] = []
    async with (
        client or make_client() as fay,
        ResearchManager(fay) as manager,
        research_many(manager, prompts, concurrency=4, timeout=600) as results,
    ):
        async for result in results:
            finished.append(result)
            first_line = str(result.output).strip().splitlines()[0] if result.ok else ""
            detail = first_line if result.ok else f"{result.error_code}: {result.error_message}"
            print(f"[{len(finished)}/{len(prompts)}] {result.status:<9} {result.item.prompt}")
            print(f"    {detail}")
    return finished


if __name__ == "__main__":
    anyio.run(main, Path(sys.argv[1]) if len(sys.argv) > 1 else HERE / "prompts.txt")
