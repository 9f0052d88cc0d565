"""Benchmarks of fay_async: run them with ``python -m benchmarks`` (see README.md here).

Each module has a ``run(*, quick: bool) -> list[Row]``; :data:`BENCHMARKS` names them for
the runner's ``--only``.
"""

from __future__ import annotations

from collections.abc import Callable

from . import (
    disconnect,
    fleet,
    free_tier,
    manager,
    overhead,
    polling,
    pushes,
    sniffio_cost,
    startup,
    stops,
    transports,
)
from ._common import Row

__all__ = ["BENCHMARKS", "Row"]

BENCHMARKS: dict[str, Callable[..., list[Row]]] = {
    "overhead": overhead.run,
    "manager": manager.run,
    "polling": polling.run,
    "free-tier": free_tier.run,
    "asgi": disconnect.run,
    "stops": stops.run,
    "webhooks": pushes.run,
    "startup": startup.run,
    "aiohttp": transports.run,
    "sniffio": sniffio_cost.run,
    "fleet": fleet.run,
}
