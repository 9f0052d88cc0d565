"""``FayClient``: one method per documented endpoint of the Fay research API."""

from __future__ import annotations

import copy
import functools
import hashlib
import math
from collections.abc import Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import attrs

from . import _config, _wire
from ._config import resolve_api_key, resolve_base_url
from ._models import (
    ConversationInfo,
    ConversationOutput,
    CreatedConversation,
    CreateRequest,
    ResearchStatus,
    StopResult,
)
from ._ratelimit import BudgetStore, Endpoint, RateLimiter, RateLimits, Slot, coerce_limits
from ._retries import RetryPolicy
from ._transport import Transport
from ._validators import check_count, check_seconds, validate_request_id
from .exceptions import (
    APIError,
    ConfigurationError,
    ConversationAlreadyCompletedError,
)

if TYPE_CHECKING:
    import httpx
    from typing_extensions import Self

__all__ = ["FayClient"]


@attrs.frozen(kw_only=True)
class _Options:
    """The timeouts and retries a client was made with (checked)."""

    timeout: float
    deadline: float | None
    max_retries: int
    max_retry_after: float


def _fingerprint(api_key: str) -> str:
    """A name for the key in shared stores and logs: 16 hex digits of its SHA-256."""
    return hashlib.sha256(api_key.encode()).hexdigest()[:16]


def _deadline(value: object) -> float | None:
    seconds = check_seconds(value, "deadline", allow_inf=True)
    return None if math.isinf(seconds) else seconds


class FayClient:
    """An async client for the Fay research API.

    ``api_key`` defaults to the ``FAY_API_KEY`` environment variable and ``base_url`` (the
    origin, such as ``https://api.fay.work``) to ``FAY_BASE_URL``. ``timeout`` bounds one
    HTTP attempt; ``deadline`` bounds one call across all its retries. ``rate_limits`` is
    a :class:`RateLimits`, a mapping such as ``{"status": 100}`` or a tier name
    (``"free"``, ``"pro"``); ``budget`` is where that budget's windows live: this
    process by default, or a store shared by several processes, such as
    :class:`fay_async.redis.RedisBudget`, so that they spend the key's budget together.
    ``transport`` is an httpx transport for the client's own
    httpx client (closed with it); ``http_client`` an httpx client to borrow (left open).
    Use it as an async context manager, or call :meth:`aclose` when done.
    """

    def __init__(
        self,
        api_key: str | None = None,
        *,
        base_url: str | None = None,
        timeout: float = _config.DEFAULT_TIMEOUT,
        max_retries: int = _config.DEFAULT_MAX_RETRIES,
        deadline: float | None = 120.0,
        max_retry_after: float = _config.DEFAULT_MAX_RETRY_AFTER,
        rate_limits: RateLimits | Mapping[str, int] | str | None = None,
        budget: BudgetStore | None = None,
        http_client: httpx.AsyncClient | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        default_headers: Mapping[str, str] | None = None,
        allow_insecure_http: bool = False,
    ) -> None:
        key = resolve_api_key(api_key)
        self._base_url = resolve_base_url(base_url, allow_insecure_http=allow_insecure_http)
        try:
            check_count(max_retries, "max_retries", minimum=0)
            timeout = check_seconds(timeout, "timeout")
            max_retry_after = check_seconds(max_retry_after, "max_retry_after")
            if deadline is not None:
                deadline = _deadline(deadline)
        except (TypeError, ValueError) as error:
            raise ConfigurationError(str(error)) from None
        try:
            limits = coerce_limits(rate_limits)
        except (TypeError, ValueError) as error:
            raise ConfigurationError(f"rate_limits: {error}") from None
        headers = {
            "User-Agent": f"fay-async/{_config.VERSION}",
            "Accept": "application/json",
            **(default_headers or {}),
        }
        if any(name.lower() == "authorization" for name in headers):
            raise ConfigurationError("default_headers must not set Authorization; pass api_key")
        if budget is not None and not callable(getattr(budget, "take", None)):
            raise ConfigurationError(
                f"budget must be a BudgetStore such as RedisBudget, got {type(budget).__name__}"
            )
        if budget is not None and limits is None:
            raise ConfigurationError(
                "a shared budget needs rate_limits to share: FayClient(rate_limits='free', "
                "budget=...)"
            )
        self.rate_limits = limits
        self._fingerprint = _fingerprint(key)
        self._limiter = (
            RateLimiter(limits, store=budget, scope=self._fingerprint)
            if limits is not None
            else None
        )
        self._options = _Options(
            timeout=timeout,
            deadline=deadline,
            max_retries=max_retries,
            max_retry_after=max_retry_after,
        )
        self._transport = Transport(
            api_key=key,
            base_url=self._base_url + _config.API_PREFIX,
            timeout=float(timeout),
            retry=RetryPolicy(max_retries=max_retries, max_retry_after=float(max_retry_after)),
            deadline=deadline,
            http_client=http_client,
            http_transport=transport,
            headers=headers,
        )

    def with_options(
        self,
        *,
        timeout: float | None = None,
        deadline: float | None = None,
        max_retries: int | None = None,
        max_retry_after: float | None = None,
    ) -> FayClient:
        """A client like this one with other timeouts or retries; an option left out is kept.

        It shares this client's connection pool and rate budget (the budget is the API
        key's). Closing it leaves the pool open; closing this client closes it for both.
        ``deadline=math.inf`` takes the deadline away.
        """
        options = self._options
        try:
            options = _Options(
                timeout=options.timeout if timeout is None else check_seconds(timeout, "timeout"),
                deadline=options.deadline if deadline is None else _deadline(deadline),
                max_retries=(
                    options.max_retries
                    if max_retries is None
                    else check_count(max_retries, "max_retries", minimum=0)
                ),
                max_retry_after=(
                    options.max_retry_after
                    if max_retry_after is None
                    else check_seconds(max_retry_after, "max_retry_after")
                ),
            )
        except (TypeError, ValueError) as error:
            raise ConfigurationError(str(error)) from None
        clone = copy.copy(self)
        clone._options = options
        clone._transport = self._transport.derive(
            timeout=options.timeout,
            retry=RetryPolicy(
                max_retries=options.max_retries, max_retry_after=options.max_retry_after
            ),
            deadline=options.deadline,
        )
        return clone

    @property
    def base_url(self) -> str:
        """The origin the client talks to (``/api/v1`` is added to every path)."""
        return self._base_url

    @property
    def key_fingerprint(self) -> str:
        """A fingerprint of the API key (16 hex digits of its SHA-256), safe to show.

        Shared stores name the key's budget and researches with it, never with the key.
        """
        return self._fingerprint

    @property
    def rate_limiter(self) -> RateLimiter | None:
        """The client-side budget every call through this client draws on, if any."""
        return self._limiter

    @property
    def is_closed(self) -> bool:
        """True once :meth:`aclose` has been called."""
        return self._transport.closed

    def __repr__(self) -> str:
        return f"FayClient(base_url={self._base_url!r}, api_key='***')"

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Release the connections (only those of an httpx client this one created)."""
        await self._transport.aclose()

    async def _call(
        self,
        method: str,
        path: str,
        endpoint: Endpoint,
        model: type[Any],
        *,
        json_body: Mapping[str, Any] | None = None,
        may_resend: bool = True,
        slot: Slot | None = None,
        timeout: float | None = None,
        deadline: float | None = None,
    ) -> Any:
        if timeout is not None:
            timeout = check_seconds(timeout, "timeout")
        if deadline is not None:
            deadline = check_seconds(deadline, "deadline", allow_inf=True)
        hook = self._limiter.attempt_hook(endpoint, slot) if self._limiter is not None else None
        response = await self._transport.request(
            method,
            path,
            json=json_body,
            may_resend=may_resend,
            hook=hook,
            timeout=timeout,
            deadline=deadline,
        )
        data = _wire.decode_envelope(response.status_code, response.content)
        return _wire.structure(response.status_code, data, model, response.content)

    async def create_conversation(
        self,
        prompt: str,
        *,
        structured_output: bool = False,
        output_schema: Mapping[str, Any] | None = None,
        timeout: float | None = None,
        deadline: float | None = None,
    ) -> CreatedConversation:
        """Start a research (paid). Never sent twice: retried only if it surely never arrived.

        The arguments are checked (:class:`CreateRequest`) before anything is sent.
        ``timeout`` (seconds for one HTTP attempt) and ``deadline`` (for the whole call,
        retries included; ``math.inf`` for none) replace the client's for this call, as
        they do on every call of the client.
        """
        request = CreateRequest(
            prompt=prompt,
            structured_output=structured_output,
            output_schema=output_schema,
        )
        return await self.create(request, timeout=timeout, deadline=deadline)

    async def create(
        self,
        request: CreateRequest,
        *,
        slot: Slot | None = None,
        timeout: float | None = None,
        deadline: float | None = None,
    ) -> CreatedConversation:
        """Start the research ``request`` describes: :meth:`create_conversation`, as a value.

        ``slot``: a slot of the create budget already reserved with
        ``client.rate_limiter.reserve("create")``, which this create uses instead of taking
        one (a caller that must not wait once it has decided to send, such as the research
        manager, reserves first, where waiting can still be cancelled).
        """
        if not isinstance(request, CreateRequest):
            raise TypeError(
                f"request must be a CreateRequest, got {type(request).__name__}; "
                "create_conversation() takes a prompt"
            )
        result: CreatedConversation = await self._call(
            "POST",
            "/conversations",
            "create",
            CreatedConversation,
            json_body=_wire.create_body(request),
            # (None would be as false as False: not mutated)
            may_resend=False,  # pragma: no mutate
            slot=slot,
            timeout=timeout,
            deadline=deadline,
        )
        return result

    async def get_status(
        self,
        request_id: str,
        *,
        timeout: float | None = None,
        deadline: float | None = None,
    ) -> ConversationInfo:
        """The current status of a research, with its timestamps and error message."""
        path = _path(request_id, "status")
        result: ConversationInfo = await self._call(
            "GET", path, "status", ConversationInfo, timeout=timeout, deadline=deadline
        )
        return result

    async def get_output(
        self,
        request_id: str,
        *,
        timeout: float | None = None,
        deadline: float | None = None,
    ) -> ConversationOutput:
        """The output of a completed research (Markdown text, or a JSON object)."""
        path = _path(request_id, "output")
        result: ConversationOutput = await self._call(
            "GET", path, "output", ConversationOutput, timeout=timeout, deadline=deadline
        )
        return result

    async def stop_conversation(
        self,
        request_id: str,
        *,
        slot: Slot | None = None,
        timeout: float | None = None,
        deadline: float | None = None,
    ) -> StopResult:
        """Stop a PENDING or PROCESSING research; it will have no output.

        ``slot``: a slot of the stop budget already reserved (see :meth:`create`).
        """
        path = _path(request_id, "stop")
        result: StopResult = await self._call(
            "POST", path, "stop", StopResult, slot=slot, timeout=timeout, deadline=deadline
        )
        return result

    async def stop_if_running(
        self, request_id: str, *, check_first: bool = True, slot: Slot | None = None
    ) -> ConversationInfo | StopResult:
        """The documented "stop if needed": stop a research only while it is running.

        Returns the :class:`StopResult` when it stopped the research, else the research's
        real final status. A status this library does not know is not terminal, so such a
        research is stopped too: a paid research is never left running out of doubt.

        With ``check_first`` (the default) the status is checked first, and a research
        that has ended is reported as its :class:`ConversationInfo` without a stop call.
        ``check_first=False`` is for a caller that already believes the research is
        running (the research manager): the stop is sent at once, saving a status call.
        ``slot``: a slot of the stop budget already reserved, used by the stop (and
        spent even if no stop is sent). Either way, a stop the service refuses because
        the research had just ended is not an error: the documented
        CONVERSATION_ALREADY_COMPLETED answer becomes a COMPLETED :class:`StopResult`
        (with ``check_first=False``), and any other refusal that may mean "already
        ended" (:func:`is_already_finished`) is settled by a status check that finds it
        terminal. Anything else raises the stop's error.
        """
        if check_first:
            info = await self.get_status(request_id)
            if info.status.is_terminal:
                return info
        try:
            return await self.stop_conversation(request_id, slot=slot)
        except APIError as error:
            if not check_first and isinstance(error, ConversationAlreadyCompletedError):
                return StopResult(
                    request_id=request_id,
                    status=ResearchStatus.COMPLETED,
                    message="the research had already completed",
                )
            if not is_already_finished(error):
                raise
            info = await self.get_status(request_id)
            if not info.status.is_terminal:
                raise
            return info


def is_already_finished(error: APIError) -> bool:
    """Whether a stop's error may mean "this research had already ended".

    The documentation gives a code only for a completed research; stopping a FAILED or
    STOPPED one is some other 4xx. Authentication, not-found and rate-limit answers are
    never read that way.
    """
    return 400 <= error.status_code < 500 and error.status_code not in (401, 403, 404, 429)


def _path(request_id: str, action: str) -> str:
    # (hashable, and the same id gives the same path; the other way gives it too, slower:
    # not mutated)
    if type(request_id) is str:  # pragma: no mutate
        return _checked_path(request_id, action)
    return f"/conversation/{quote(validate_request_id(request_id), safe='')}/{action}"


@functools.lru_cache(maxsize=4096)
def _checked_path(request_id: str, action: str) -> str:
    """The path of a request id (checked; a refused id raises, and is not remembered).

    A research is polled many times: its id is checked and quoted once.
    """
    return f"/conversation/{quote(validate_request_id(request_id), safe='')}/{action}"
