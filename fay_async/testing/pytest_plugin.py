"""pytest fixtures for code that talks to Fay: ``fay_emulator`` and ``fay_client``.

Installed with fay-async and loaded by pytest automatically.

- ``fay_emulator``: a fresh :class:`~fay_async.testing.FayEmulator` for each test, on the
  default clock: ``anyio.current_time``. Under a virtual-time event loop (trio's
  ``MockClock(autojump_threshold=0)``, looptime) a research's minute of lifecycle passes
  as soon as the code under test sleeps while polling. Options for the emulator go in a
  marker: ``@pytest.mark.fay_emulator(rate_limits="free", scenario=Scenario(0, 1))``.
- ``fay_client``: an async fixture (run by anyio's pytest plugin: mark the test
  ``@pytest.mark.anyio``) yielding ``fay_emulator.client()``, closed after the test.

This module imports fay_async only inside the fixtures, so merely having the plugin
installed costs a pytest session nothing.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from fay_async import FayClient
    from fay_async.testing import FayEmulator

__all__ = ["fay_client", "fay_emulator"]


def pytest_configure(config: pytest.Config) -> None:
    """Register the ``fay_emulator`` marker."""
    config.addinivalue_line(
        "markers",
        "fay_emulator(**options): keyword arguments for the FayEmulator of the "
        "fay_emulator fixture (api_keys, clock, scenario, rate_limits, speed, seed)",
    )


@pytest.fixture
def fay_emulator(request: pytest.FixtureRequest) -> FayEmulator:
    """A fresh FayEmulator; options come from the ``fay_emulator`` marker, if any."""
    from fay_async.testing import FayEmulator  # noqa: PLC0415 - keeps plugin loading cheap

    marker = request.node.get_closest_marker("fay_emulator")
    if marker is None:
        return FayEmulator()
    if marker.args:
        raise pytest.UsageError("@pytest.mark.fay_emulator takes keyword arguments only")
    return FayEmulator(**marker.kwargs)


@pytest.fixture
async def fay_client(fay_emulator: FayEmulator) -> AsyncIterator[FayClient]:
    """A FayClient talking to ``fay_emulator`` in-process; closed after the test."""
    async with fay_emulator.client() as client:
        yield client
