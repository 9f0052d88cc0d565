"""examples/fastapi_app.py as uvicorn and gunicorn serve it in tests/test_webapp_shutdown.py.

``WEBAPP_SHUTDOWN_SIGNALS=off`` builds it with ``CancelOnDisconnect(shutdown_signals=())``:
the middleware cancels on disconnect only, and the server's shutdown is left as it is.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from fay_async.asgi import CancelOnDisconnect

_EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "fastapi_app.py"
_spec = importlib.util.spec_from_file_location("fastapi_app_example", _EXAMPLE)
assert _spec is not None
assert _spec.loader is not None
_module = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_module)

app = _module.create_app()
if os.environ.get("WEBAPP_SHUTDOWN_SIGNALS") == "off":
    for middleware in app.user_middleware:
        if middleware.cls is CancelOnDisconnect:
            middleware.kwargs["shutdown_signals"] = ()
