"""examples/fleet_app.py as gunicorn serves it in tests/test_fleet_app.py.

The app keeps to the Free tier's counts on a clock ``FLEET_SPEED`` times faster (the
emulator's speed), so that an hour's budget passes in seconds.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import attrs

from fay_async import RateLimits

_EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "fleet_app.py"
_spec = importlib.util.spec_from_file_location("fleet_app_example", _EXAMPLE)
assert _spec is not None
assert _spec.loader is not None
_module = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_module)

_limits = RateLimits.FREE
app = _module.create_app(
    os.environ["FAY_REDIS_URL"],
    rate_limits=attrs.evolve(_limits, window=_limits.window / float(os.environ["FLEET_SPEED"])),
)
