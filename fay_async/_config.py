"""Defaults, the environment variables the library reads, and reading them."""

from __future__ import annotations

import functools
import ipaddress
import os
from typing import Final
from urllib.parse import urlsplit

from .exceptions import ConfigurationError


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


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine (localhost, 127.0.0.0/8, ::1)."""
    if host.lower() == "localhost" or host.lower().endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def resolve_base_url(base_url: str | None, *, allow_insecure_http: bool) -> str:
    if base_url is not None and not isinstance(base_url, str):
        raise ConfigurationError(
            f"base_url must be a string such as {DEFAULT_BASE_URL!r}, got {type(base_url).__name__}"
        )
    raw = base_url if base_url is not None else os.environ.get(BASE_URL_ENV)
    if raw is None or not raw.strip():
        return DEFAULT_BASE_URL
    source = "base_url" if base_url is not None else BASE_URL_ENV
    text = raw.strip()
    try:
        parts = urlsplit(text)
        host = parts.hostname
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError as error:
        raise ConfigurationError(f"{source} {text!r} is not a valid URL: {error}") from None
    if parts.scheme not in ("https", "http") or not host:
        raise ConfigurationError(
            f"{source} must be an http(s) origin such as {DEFAULT_BASE_URL!r}, got {text!r}"
        )
    if parts.query or parts.fragment or parts.username or parts.password:
        raise ConfigurationError(
            f"{source} must not carry credentials, a query or a fragment, got {text!r}"
        )
    if parts.scheme == "http" and not allow_insecure_http and not is_loopback(host):
        raise ConfigurationError(
            f"{source} {text!r} uses plain http to a remote host, which would send the API "
            "key in clear text; use https, or pass allow_insecure_http=True if the network "
            "path is trusted"
        )
    path = parts.path.rstrip("/")
    path = path.removesuffix(API_PREFIX)
    return f"{parts.scheme}://{parts.netloc}{path}"


def resolve_api_key(api_key: str | None) -> str:
    key: object = api_key if api_key is not None else os.environ.get(API_KEY_ENV)
    if key is not None and not isinstance(key, str):
        raise ConfigurationError(f"the API key must be a string, got {type(key).__name__}")
    if key is None or not key.strip():
        raise ConfigurationError(
            "no Fay API key: pass FayClient(api_key=...) or set the environment variable "
            f"{API_KEY_ENV} (for example: export {API_KEY_ENV}=your-key)"
        )
    if key != key.strip() or any(c.isspace() or not c.isprintable() for c in key):
        raise ConfigurationError(
            "the API key contains white space or control characters; "
            "check for a stray newline or quote where it is set"
        )
    if not key.isascii():
        raise ConfigurationError(
            "the API key contains characters that are not ASCII (a typographic quote or "
            "dash pasted with it, say); check where it is set"
        )
    return key
