"""examples/fastapi_app.py as uvicorn and gunicorn serve it in tests/test_webapp_shutdown.py.

``WEBAPP_SHUTDOWN_SIGNALS=off`` builds it with ``CancelOnDisconnect(shutdown_signals=())``:
the middleware cancels on disconnect only, and the server's shutdown is left as it is.
"""

from __future__ import annotations

import os

from fay_async.asgi import CancelOnDisconnect

from ._examples import load_example

_module = load_example("fastapi_app")

app = _module.create_app()
if os.environ.get("WEBAPP_SHUTDOWN_SIGNALS") == "off":
    for middleware in app.user_middleware:
        if middleware.cls is CancelOnDisconnect:
            middleware.kwargs["shutdown_signals"] = ()
