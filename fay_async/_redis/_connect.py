"""One Redis connection per store: made in the running asyncio loop, its URL never shown."""

from __future__ import annotations

import unicodedata
import urllib.parse
from typing import TYPE_CHECKING, Any, Final

import sniffio

from fay_async.exceptions import ConfigurationError, SharedStateError

if TYPE_CHECKING:
    import redis.asyncio

__all__ = ["SOCKET_TIMEOUT", "Connection", "check_key_prefix", "check_worker_id", "redact"]

_EXTRA: Final = 'pip install "fay-async[redis]"'
#: Seconds a Redis command (or a connect) may take before it fails, unless the URL says.
#: Pub/sub waits pass their own timeout and are not cut by it.
SOCKET_TIMEOUT: Final = 5.0

#: The URL schemes redis-py's ``from_url`` reads (it refuses any other at first use).
_SCHEMES: Final = ("redis://", "rediss://", "unix://")


def redact(url: str) -> str:
    """``url`` with every password in it replaced by ``***``, for logs and reprs; never raises.

    Masked: the password of the user part (``redis://user:***@host``) and the value of
    every query parameter whose name contains ``password`` (redis-py reads
    ``?password=...`` too). The host is kept as written (an IPv6 host keeps its
    brackets, a port that is not a number stays as it is).
    """
    try:
        scheme, netloc, path, query, fragment = urllib.parse.urlsplit(url)
    except Exception:  # noqa: BLE001 - a URL this cannot read is shown as nothing of it
        return _UNREADABLE
    userinfo, at, host = netloc.rpartition("@")
    shown_netloc = f"{userinfo.partition(':')[0]}:***@{host}" if at and ":" in userinfo else netloc
    shown_query = "&".join(_masked(part) for part in query.split("&"))
    if shown_netloc == netloc and shown_query == query:
        return url  # nothing to hide: shown exactly as given
    shown = f"{scheme}://{shown_netloc}{path}"
    return shown + (f"?{shown_query}" if query else "") + (f"#{fragment}" if fragment else "")


_UNREADABLE: Final = "<a Redis URL that cannot be parsed>"


def _masked(parameter: str) -> str:
    """One ``name=value`` of a query, its value masked if the name is a password's."""
    name, equals, _value = parameter.partition("=")
    if equals and "password" in urllib.parse.unquote_plus(name).lower():
        return f"{name}=***"
    return parameter


def _is_name(value: str) -> bool:
    """Non-empty, without white space or control characters (a part of a Redis key)."""
    return bool(value) and not any(
        char.isspace() or unicodedata.category(char).startswith("C") for char in value
    )


def check_key_prefix(key_prefix: object, name: str = "key_prefix") -> str:
    """``key_prefix``, the start of every Redis key of a store: a non-empty str, no spaces.

    A wrong type raises ``TypeError``; an empty string, or one with white space or a
    control character, ``ValueError``.
    """
    if not isinstance(key_prefix, str):
        raise TypeError(f"{name} must be a string, got {type(key_prefix).__name__}")
    if not _is_name(key_prefix):
        raise ValueError(
            f"{name} must be a non-empty string without white space or control characters, "
            f"got {key_prefix!r}"
        )
    return key_prefix


def check_worker_id(worker_id: object, name: str = "worker_id") -> str | None:
    """``worker_id``, a worker's name in Redis keys: None (a name is made), or as a prefix.

    A wrong type raises ``TypeError``; an empty string, or one with white space or a
    control character, ``ValueError``.
    """
    if worker_id is None:
        return None
    if not isinstance(worker_id, str):
        raise TypeError(f"{name} must be a string or None, got {type(worker_id).__name__}")
    if not _is_name(worker_id):
        raise ValueError(
            f"{name} must be a non-empty string without white space or control characters "
            f"(or None for a generated name), got {worker_id!r}"
        )
    return worker_id


def _check_url(what: str, url: str) -> None:
    """Refuse now, clearly, a URL that redis-py would refuse at first use."""
    if not url.startswith(_SCHEMES):
        raise ConfigurationError(
            f"{what}: the Redis URL must start with redis://, rediss:// or unix://, "
            f"got {redact(url)!r}"
        )
    try:
        urllib.parse.urlsplit(url).port  # noqa: B018 - read for its check only
    except ValueError:
        raise ConfigurationError(
            f"{what}: the host or port of the Redis URL {redact(url)!r} cannot be read "
            "(the port must be a number from 0 to 65535, an IPv6 host goes in brackets)"
        ) from None


def refuse_trio(what: str) -> None:
    """Raise when called on trio: redis-py's asyncio client runs on asyncio only."""
    try:
        library = sniffio.current_async_library()
    except sniffio.AsyncLibraryNotFoundError:
        return  # not in an event loop yet: checked again on first use
    if library != "asyncio":
        raise ConfigurationError(
            f"{what} needs asyncio: redis-py's asyncio client does not run on {library}; "
            "run this process on asyncio, or use the in-memory budget and registry"
        )


class Connection:
    """A store's Redis client, created on first use in the running loop (or given)."""

    __slots__ = ("_client", "_owned", "_url", "_what")

    def __init__(self, what: str, url: str | None, client: Any) -> None:
        if (url is None) == (client is None):
            raise ConfigurationError(f"{what} needs a Redis URL or a client (one of the two)")
        if url is not None and not isinstance(url, str):
            raise ConfigurationError(f"{what}: the Redis URL must be a string")
        if url is not None:
            _check_url(what, url)
        refuse_trio(what)
        self._what = what
        self._url = url
        self._client: redis.asyncio.Redis | None = client
        self._owned = client is None

    @property
    def where(self) -> str:
        """The URL without its password, for messages."""
        return "the given Redis client" if self._url is None else redact(self._url)

    def client(self) -> redis.asyncio.Redis:
        """The client, made now if needed (in the running asyncio loop)."""
        refuse_trio(self._what)
        if self._client is None:
            try:
                import redis.asyncio  # noqa: PLC0415 - an optional extra
            except ModuleNotFoundError:
                raise ConfigurationError(f"{self._what} needs redis-py: {_EXTRA}") from None
            assert self._url is not None  # noqa: S101 - one of the two was given
            # Bounded reads and connects: a Redis that hangs fails the call that needed it
            # (as SharedStateError) instead of holding it for ever. The URL's own
            # socket_timeout / socket_connect_timeout, if given, win.
            self._client = redis.asyncio.Redis.from_url(
                self._url,
                decode_responses=True,
                socket_timeout=SOCKET_TIMEOUT,
                socket_connect_timeout=SOCKET_TIMEOUT,
            )
        return self._client

    def failed(self, error: BaseException, doing: str) -> SharedStateError:
        """The error to raise for a Redis failure while ``doing`` something."""
        return SharedStateError(
            f"{self._what}: Redis at {self.where} failed while {doing}: {error}"
        )

    async def aclose(self) -> None:
        """Close the client if this store made it."""
        client, self._client = self._client, None
        if client is not None and self._owned:
            await client.aclose()
        elif client is not None:
            self._client = client
