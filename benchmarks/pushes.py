"""Waits that end on a push: webhooks against polling, on the same researches.

The 200 researches of the polling benchmark (seeded, queued 45-55 s, processing 10-15 s,
started 0.3 s apart on virtual time) are waited for by a ``ResearchManager`` whose
``WebhookReceiver`` gets the emulator's signed events in-process: once with every
delivery arriving, once with 10 % of them dropped (the safety-net schedule must still
end every wait), against the default polling schedule without webhooks.

Figures: status calls per research (counted by the emulator) and the detection lag, in
loop time, from the moment the emulator completes a research to the moment its wait
returns.
"""

from __future__ import annotations

import anyio

from fay_async import ResearchManager
from fay_async.testing import FayEmulator
from fay_async.webhooks import WebhookEvent, WebhookReceiver

from ._common import API_KEY, Row, check, run_virtual
from .polling import SEED, SPACING, Outcome, _lags, measure, outcome_rows

SECRET = "placeholder"  # noqa: S105 - signs benchmark bodies only
TARGET_CALLS = 0.2
TARGET_LAG = 0.05


async def pushed(count: int, drop_rate: float) -> Outcome:
    """Run ``count`` researches waited for with webhooks (``drop_rate`` of them lost)."""
    manager: ResearchManager | None = None

    async def to_manager(event: WebhookEvent) -> None:  # the receiver's sink, once it exists
        assert manager is not None
        await manager.handle_webhook(event)

    receiver = WebhookReceiver(secret=SECRET, on_event=to_manager)
    emulator = FayEmulator(
        api_keys={API_KEY},
        seed=SEED,
        webhook_app=receiver,
        webhook_secret=SECRET,
        webhook_drop_rate=drop_rate,
    )
    detected: dict[str, float] = {}
    async with (
        emulator.client() as client,
        ResearchManager(client) as opened,
        emulator.delivering(),
    ):
        manager = opened

        async def one(n: int) -> None:
            await anyio.sleep(n * SPACING)
            request_id = await opened.start_research(f"question {n}")
            await opened.wait_for_completion(request_id)
            detected[request_id] = anyio.current_time()

        async with anyio.create_task_group() as group:
            for n in range(count):
                group.start_soon(one, n)
    if len(detected) != count:
        raise RuntimeError(f"{len(detected)} of {count} researches were seen to end")
    return Outcome(emulator.call_counts()["status"] / count, _lags(emulator, detected))


def run(*, quick: bool) -> list[Row]:
    """Polling, webhooks, and webhooks with 10 % of deliveries lost."""
    count = 20 if quick else 200
    polled = run_virtual(lambda: measure(count, adaptive=True))
    every = run_virtual(lambda: pushed(count, 0.0))
    lossy = run_virtual(lambda: pushed(count, 0.1))
    name = f"webhooks n={count}"
    return [
        *outcome_rows(name, "polling only", polled),
        *outcome_rows(
            name,
            "webhooks",
            every,
            calls={
                "target": f"<= {TARGET_CALLS:g}",
                "ok": check(every.calls, TARGET_CALLS),
            },
            lag={
                "target": f"< {TARGET_LAG:g}",
                "ok": every.mean_lag < TARGET_LAG,
                "note": f"max {max(every.lags):.3f} s",
            },
        ),
        *outcome_rows(
            name,
            "10 % of deliveries lost",
            lossy,
            calls={"note": "every wait ended (checked)"},
            lag={"note": f"max {max(lossy.lags):.1f} s: a lost COMPLETED waits for the safety net"},
        ),
    ]
