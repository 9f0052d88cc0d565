"""Research one question; it is stopped (and costs no more) if it takes over 5 minutes."""

import anyio

from fay_async import FayClient, ResearchManager


async def main() -> None:
    # The API key comes from the FAY_API_KEY environment variable.
    async with FayClient() as client, ResearchManager(client) as manager:
        result = await manager.research(
            "What changed in EU battery regulation in 2025?", timeout=300
        )
        print(result.text)


if __name__ == "__main__":
    anyio.run(main)
