"""examples/fleet_app.py as gunicorn serves it in tests/test_fleet_app.py.

The app keeps to the Free tier's counts on a clock ``FLEET_SPEED`` times faster (the
emulator's speed), so that an hour's budget passes in seconds.
"""

from __future__ import annotations

import os

import attrs

from fay_async import RateLimits

from ._examples import load_example

_module = load_example("fleet_app")

_limits = RateLimits.FREE
app = _module.create_app(
    os.environ["FAY_REDIS_URL"],
    rate_limits=attrs.evolve(_limits, window=_limits.window / float(os.environ["FLEET_SPEED"])),
)
