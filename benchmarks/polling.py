"""Polling efficiency: the default ``PollPolicy`` against the documented 2-second loop.

200 researches with the emulator's default durations (queued 45-55 s, then processing
10-15 s, drawn from a seeded generator) start 0.3 s apart on virtual time, twice: once
waited for by a ``ResearchManager`` with its default policy, once by the loop the API
documentation shows, written on the client directly (sleep 2 s, check the status, until
it is terminal, at most 60 times). The same seed gives the n-th research the same
durations in both runs.

Figures: status calls per research (counted by the emulator), and the detection lag: from
the moment the emulator completes the research to the moment the wait returns.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping
from typing import Any

import anyio
import attrs

from fay_async import FayClient, ResearchManager
from fay_async.testing import FayEmulator

from ._common import API_KEY, Row, check, run_virtual

TARGET_CALL_SHARE = 1 / 3
TARGET_EXTRA_LAG = 1.5
SEED = 2024
SPACING = 0.3
FIXED_INTERVAL = 2.0
FIXED_ATTEMPTS = 60


@attrs.frozen
class Outcome:
    """Status calls per research, and the detection lags in seconds."""

    calls: float
    lags: list[float]

    @property
    def mean_lag(self) -> float:
        """The mean detection lag."""
        return statistics.mean(self.lags)


async def documented_loop(client: FayClient, request_id: str) -> None:
    """The documentation's loop: every 2 s, at most 60 times, until the status is terminal."""
    for _ in range(FIXED_ATTEMPTS):
        await anyio.sleep(FIXED_INTERVAL)
        if (await client.get_status(request_id)).status.is_terminal:
            return
    raise TimeoutError(f"research {request_id} did not finish in 60 checks")


def _lags(emulator: FayEmulator, detected: dict[str, float]) -> list[float]:
    created = {c.request_id: c.time for c in emulator.calls() if c.endpoint == "create"}
    lags = []
    for request_id, at in detected.items():
        scenario = emulator.research(request_id).scenario
        completed = created[request_id] + scenario.pending_s + scenario.processing_s
        lags.append(at - completed)
    if min(lags) < 0:
        raise RuntimeError("a wait returned before its research completed")
    return lags


async def measure(count: int, *, adaptive: bool) -> Outcome:
    """Run ``count`` researches; wait with the manager (``adaptive``) or the fixed loop."""
    emulator = FayEmulator(api_keys={API_KEY}, seed=SEED)
    detected: dict[str, float] = {}
    async with emulator.client() as client, ResearchManager(client) as manager:

        async def one(n: int) -> None:
            await anyio.sleep(n * SPACING)
            if adaptive:
                request_id = await manager.start_research(f"question {n}")
                await manager.wait_for_completion(request_id)
            else:
                request_id = (await client.create_conversation(f"question {n}")).request_id
                await documented_loop(client, request_id)
            detected[request_id] = anyio.current_time()

        async with anyio.create_task_group() as group:
            for n in range(count):
                group.start_soon(one, n)
    if len(detected) != count:
        raise RuntimeError(f"{len(detected)} of {count} researches were seen to end")
    return Outcome(emulator.call_counts()["status"] / count, _lags(emulator, detected))


def outcome_rows(
    name: str,
    label: str,
    outcome: Outcome,
    *,
    calls: Mapping[str, Any] | None = None,
    lag: Mapping[str, Any] | None = None,
) -> list[Row]:
    """The status calls per research and the mean detection lag of one way of waiting.

    ``calls`` and ``lag`` add to their row (a target and its verdict, a note).
    """
    return [
        Row(
            benchmark=name,
            metric=f"{label}: status calls per research",
            value=outcome.calls,
            unit="calls",
            **(calls or {}),
        ),
        Row(
            benchmark=name,
            metric=f"{label}: mean detection lag",
            value=outcome.mean_lag,
            unit="s",
            **(lag or {}),
        ),
    ]


def run(*, quick: bool) -> list[Row]:
    """Both schedules on the same researches, and the two targets."""
    count = 20 if quick else 200
    fixed = run_virtual(lambda: measure(count, adaptive=False))
    default = run_virtual(lambda: measure(count, adaptive=True))
    share = default.calls / fixed.calls
    extra = default.mean_lag - fixed.mean_lag
    name = f"polling n={count}"
    return [
        *outcome_rows(
            name, "documented 2-s loop", fixed, lag={"note": f"max {max(fixed.lags):.2f} s"}
        ),
        *outcome_rows(
            name, "default PollPolicy", default, lag={"note": f"max {max(default.lags):.2f} s"}
        ),
        Row(
            benchmark=name,
            metric="calls, default / documented loop",
            value=share,
            unit="x",
            target="<= 1/3",
            ok=check(share, TARGET_CALL_SHARE),
        ),
        Row(
            benchmark=name,
            metric="extra mean lag, default - documented loop",
            value=extra,
            unit="s",
            target=f"<= {TARGET_EXTRA_LAG}",
            ok=check(extra, TARGET_EXTRA_LAG),
        ),
    ]
