"""A testing kit for code that uses fay_async: a faithful local Fay API.

:class:`FayEmulator` is an ASGI 3 application serving the four documented endpoints with
research lifecycles on an injectable clock, optional rate limits, injectable faults, and
signed webhook deliveries (:meth:`FayEmulator.delivering`).
Use it in-process with :meth:`FayEmulator.client`, over a loopback socket with
:func:`serve` (or in the foreground with :func:`serve_forever`, as the ``fay-async
emulator`` command does), or through the pytest fixtures ``fay_emulator``, ``fay_client``
and ``fay_manager`` and the ``fay`` marker (see :mod:`fay_async.testing.pytest_plugin`).
"""

from __future__ import annotations

from ._clock import Clock, ManualClock
from ._emulator import FayEmulator
from ._schema import example_for_schema
from ._server import EmulatorServer, serve, serve_forever
from ._values import (
    API_VERSION,
    DEFAULT_API_KEY,
    ENDPOINTS,
    RATE_LIMIT_TIERS,
    CallRecord,
    Endpoint,
    Fault,
    ResearchState,
    Scenario,
    WebhookDelivery,
    WebhookFault,
)

__all__ = [
    "API_VERSION",
    "DEFAULT_API_KEY",
    "ENDPOINTS",
    "RATE_LIMIT_TIERS",
    "CallRecord",
    "Clock",
    "EmulatorServer",
    "Endpoint",
    "Fault",
    "FayEmulator",
    "ManualClock",
    "ResearchState",
    "Scenario",
    "WebhookDelivery",
    "WebhookFault",
    "example_for_schema",
    "serve",
    "serve_forever",
]
