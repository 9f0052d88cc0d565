"""Start several researches, follow their status, then cancel every one still running.

    python examples/cancel_all.py [--after SECONDS]

Each status change is printed as it is seen. After ``--after`` seconds (default 2) every
research still tracked is stopped at once, and the outcome of each stop is printed (one
that finished in the meantime is reported with its real final status). With FAY_API_KEY
set this talks to the Fay API; without it, to an in-process emulator where a minute
passes in two seconds.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio

from fay_async import ConversationInfo, FayClient, FayError, ResearchManager, StopResult

PROMPTS = (
    "Summarise this week's changes to the EU AI Act guidance.",
    "Compare sodium-ion and LFP batteries for home storage.",
    "Which open-source vector databases support hybrid search?",
    "What are the current USB-C charging rules in the EU?",
)


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


def show(info: ConversationInfo) -> None:
    """Print one status change."""
    print(f"  {info.request_id}: {info.status}")


async def main(
    prompts: tuple[str, ...] = PROMPTS,
    *,
    after: float = 2.0,
    client: FayClient | None = None,
) -> dict[str, StopResult | FayError]:
    """Start ``prompts``, follow them for ``after`` s, cancel all; return each outcome."""
    async with (
        open_client(client) as fay,
        ResearchManager(fay, on_status_change=show) as manager,
    ):
        for prompt in prompts:
            request_id = await manager.start_research(prompt)
            print(f"started {request_id}: {prompt}")

        with anyio.move_on_after(after):
            async with anyio.create_task_group() as tg:
                for request_id in list(manager.active_requests):
                    tg.start_soon(_follow, manager, request_id)

        print(f"cancelling the {len(manager.active_requests)} researches still tracked")
        outcomes = await manager.cancel_all_research()

        for request_id, outcome in outcomes.items():
            if isinstance(outcome, StopResult):
                print(f"  {request_id}: {outcome.status} ({outcome.message})")
            else:
                print(f"  {request_id}: could not be stopped: {outcome}")
        return outcomes


async def _follow(manager: ResearchManager, request_id: str) -> None:
    try:
        await manager.wait_for_completion(request_id)
    except FayError as error:
        print(f"  {request_id}: {type(error).__name__}")
    else:
        print(f"  {request_id}: finished before the cancel")


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--after", type=float, default=2.0, help="seconds (default 2)")
    return parser.parse_args()


if __name__ == "__main__":
    args = _arguments()
    anyio.run(lambda: main(after=args.after))
