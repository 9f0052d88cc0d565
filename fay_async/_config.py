"""Defaults and the names of the environment variables the library reads."""

from __future__ import annotations

import functools
from typing import Final


@functools.cache
def version() -> str:
    """The installed version of fay-async, looked up once, when first asked for.

    Not at import: ``importlib.metadata`` costs tens of milliseconds of start-up.
    """
    from importlib.metadata import PackageNotFoundError  # noqa: PLC0415
    from importlib.metadata import version as installed  # noqa: PLC0415

    try:
        return installed("fay-async")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "0.0.0+unknown"


def __getattr__(name: str) -> str:
    if name == "VERSION":
        return version()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


API_KEY_ENV: Final = "FAY_API_KEY"
BASE_URL_ENV: Final = "FAY_BASE_URL"
#: The secret the dashboard shows once when a webhook is registered.
WEBHOOK_SECRET_ENV: Final = "FAY_WEBHOOK_SECRET"  # noqa: S105 - a variable name

DEFAULT_BASE_URL: Final = "https://api.fay.work"
API_PREFIX: Final = "/api/v1"

#: Seconds for one HTTP attempt (connect, read, write, pool).
DEFAULT_TIMEOUT: Final = 30.0
DEFAULT_MAX_RETRIES: Final = 2
#: First backoff step and the largest single backoff sleep, in seconds.
DEFAULT_BACKOFF_BASE: Final = 0.5
DEFAULT_BACKOFF_CAP: Final = 8.0
#: A Retry-After longer than this is not slept through: the call raises RateLimitError.
DEFAULT_MAX_RETRY_AFTER: Final = 60.0

#: Longest request id accepted before anything is sent.
MAX_REQUEST_ID_LENGTH: Final = 128
