"""Helpers for tests that run researches on the in-process emulator."""

from __future__ import annotations

from fay_async.testing import FayEmulator


def running(emulator: FayEmulator) -> list[str]:
    """The request ids of the researches still PENDING or PROCESSING on the emulator."""
    return [r.request_id for r in emulator.researches() if r.status.is_running]
