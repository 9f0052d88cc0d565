"""Helpers for tests that run researches on the in-process emulator."""

from __future__ import annotations

from fay_async.testing import FayEmulator, Scenario


def running(emulator: FayEmulator) -> list[str]:
    """The request ids of the researches still PENDING or PROCESSING on the emulator."""
    return [r.request_id for r in emulator.researches() if r.status.is_running]


def by_prompt(prompt: str) -> Scenario:
    """Durations and outcomes read from the prompt: 'slow', 'fail', else 10 s + 10 s."""
    if "slow" in prompt:
        return Scenario(pending_s=500.0, processing_s=500.0)
    if "fail" in prompt:
        return Scenario(pending_s=5.0, processing_s=5.0, outcome="FAILED", error_message="boom")
    return Scenario(pending_s=10.0, processing_s=10.0)
