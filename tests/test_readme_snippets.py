"""The README's snippets of the client and the manager run, against the emulator."""

from __future__ import annotations

import math
import re
import textwrap
from pathlib import Path
from typing import Any

import anyio
import pytest

import fay_async
from fay_async.testing import FayEmulator, Scenario

pytestmark = pytest.mark.anyio

README = Path(__file__).parent.parent / "README.md"


def snippet(containing: str) -> str:
    """The README's one ```python block that contains ``containing``."""
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
    found = [block for block in blocks if containing in block]
    assert len(found) == 1, f"{len(found)} README snippets contain {containing!r}"
    return found[0]


async def run(code: str, names: dict[str, Any]) -> dict[str, Any]:
    """Run ``code`` as the body of a coroutine function; return its local names."""
    source = "async def __snippet__():\n" + textwrap.indent(code, "    ")
    source += "\n    return locals()\n"
    public = {name: getattr(fay_async, name) for name in fay_async.__all__}
    scope: dict[str, Any] = {**public, "math": math, **names}
    exec(compile(source, str(README), "exec"), scope)  # noqa: S102 - the README's own code
    result: dict[str, Any] = await scope["__snippet__"]()
    return result


async def test_the_per_call_options_snippet() -> None:
    emulator = FayEmulator(scenario=Scenario(pending_s=1.0, processing_s=1.0))
    async with emulator.client() as client:
        created = await client.create_conversation("q")
        await anyio.sleep(3)
        names = await run(
            snippet("impatient = client.with_options("),
            {"client": client, "request_id": created.request_id},
        )
        assert names["info"].status is fay_async.ResearchStatus.COMPLETED
        assert names["impatient"].rate_limiter is client.rate_limiter
        assert names["output"].output
    assert emulator.call_counts()["output"] == 1


async def test_the_manager_snippet(capsys: pytest.CaptureFixture[str]) -> None:
    # On the Free tier's status budget a research is checked about every 36 s.
    def scenario(prompt: str) -> Scenario:
        long = "vector" in prompt  # the second research outlives the first
        return Scenario(pending_s=100.0, processing_s=2000.0 if long else 200.0)

    emulator = FayEmulator(scenario=scenario)
    names = await run(
        snippet("manager.cancel_all_research()"),
        {"FayClient": emulator.client},
    )
    printed = capsys.readouterr().out.split()
    assert printed == ["PENDING", "PROCESSING", "COMPLETED"]
    assert names["outcomes"] == {}
    stopped = emulator.research(names["second"])
    assert stopped.status is fay_async.ResearchStatus.STOPPED


@pytest.mark.real_time
@pytest.mark.asyncio_only
async def test_the_many_workers_snippet(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    emulator = FayEmulator(scenario=Scenario(pending_s=100.0, processing_s=100.0))
    monkeypatch.setenv("FAY_REDIS_URL", redis_url)
    names = await run(snippet("RedisRegistry(url)"), {"FayClient": emulator.client})
    assert names["stopped"].status is fay_async.ResearchStatus.STOPPED
    assert names["everything"] == {}
    assert names["client"].rate_limiter.store is names["budget"]
