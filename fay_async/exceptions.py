"""The errors that fay_async raises: every one of them is a :class:`FayError`.

::

    FayError
    ├── ConfigurationError                     missing API key, unusable base URL
    ├── WebhookVerificationError               missing, malformed or wrong X-Fay-Signature
    ├── WebhookPayloadError                    a signed webhook body that is not a Fay event
    ├── SharedStateError                       the shared store (Redis) failed; nothing sent
    ├── InvalidRequestIdError (+ ValueError)   unsafe request id, refused before sending
    ├── APIConnectionError                     network failure after retries, .sent
    │   └── APITimeoutError (+ TimeoutError)
    ├── APIError                               .status_code .code .message .api_version .body
    │   ├── BadRequestError                    400
    │   │   ├── RequestValidationError         VALIDATION_ERROR
    │   │   ├── ConversationAlreadyCompletedError
    │   │   └── ResearchNotCompletedError
    │   ├── AuthenticationError                401
    │   ├── NotFoundError                      404
    │   ├── RateLimitError                     429, .retry_after
    │   ├── ServerError                        5xx
    │   └── UnexpectedResponseError            body is not the documented envelope
    └── ResearchError                          .request_id
        ├── ResearchFailedError                FAILED, .error_message
        ├── ResearchStoppedError               STOPPED while being waited on
        ├── ResearchTimeoutError (+ TimeoutError)  .last_status .stopped
        ├── StopTimeoutError (+ TimeoutError)  a stop not done within the stop grace, .sent
        └── NotTrackedError (+ KeyError)       cancel of an id the manager does not track

Exceptions from httpx, json or cattrs never reach the caller: they are chained as
``__cause__`` of one of these.

``WebhookVerificationError.reason`` is ``"missing"`` (no signature: a webhook receiver
answers 400), ``"malformed"`` or ``"mismatch"`` (answered 401). Neither webhook error
ever quotes the secret or the signature the body should have had.

``StopTimeoutError.sent`` is False when the stop was still waiting for its turn among the
manager's stops when its grace ran out: it was never sent, and the research is surely
still running.

``APIConnectionError.sent`` (keyword-only, default True) is False when the request
certainly had no effect: no attempt of it reached the service (the connection could not
be made, or no pooled connection became free), or every one that did was refused with
429. It is True when the request may have reached the service (a read timeout, a
dropped connection, ...): after a create, the research may then exist.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

__all__ = [
    "APIConnectionError",
    "APIError",
    "APITimeoutError",
    "AuthenticationError",
    "BadRequestError",
    "ConfigurationError",
    "ConversationAlreadyCompletedError",
    "FayError",
    "InvalidRequestIdError",
    "NotFoundError",
    "NotTrackedError",
    "RateLimitError",
    "RequestValidationError",
    "ResearchError",
    "ResearchFailedError",
    "ResearchNotCompletedError",
    "ResearchStoppedError",
    "ResearchTimeoutError",
    "ServerError",
    "SharedStateError",
    "StopTimeoutError",
    "UnexpectedResponseError",
    "WebhookPayloadError",
    "WebhookVerificationError",
]


class FayError(Exception):
    """Base class of every error raised by fay_async."""


class ConfigurationError(FayError):
    """The client cannot be used as configured (missing API key, unusable base URL)."""


class WebhookVerificationError(FayError):
    """A webhook body whose X-Fay-Signature is missing, malformed or wrong: not from Fay."""

    def __init__(
        self, message: str, *, reason: Literal["missing", "malformed", "mismatch"]
    ) -> None:
        super().__init__(message)
        self.reason = reason


class WebhookPayloadError(FayError):
    """A correctly signed webhook body that is not a Fay event (not JSON, or a wrong shape)."""


class SharedStateError(FayError):
    """The shared store (Redis) could not be used; no call was counted or sent for it."""


class InvalidRequestIdError(FayError, ValueError):
    """A request id that is unsafe to put in a URL; refused before anything is sent."""

    def __init__(self, message: str, *, request_id: object) -> None:
        super().__init__(message)
        self.request_id = request_id


class APIConnectionError(FayError):
    """A network failure after all retries; ``sent`` is False if it certainly had no effect."""

    def __init__(
        self, message: str, *, method: str = "", path: str = "", sent: bool = True
    ) -> None:
        super().__init__(message)
        self.method = method
        self.path = path
        self.sent = sent


class APITimeoutError(APIConnectionError, TimeoutError):
    """A request (or a call across its retries) ran out of time."""


class APIError(FayError):
    """The service answered with an error, or with something that is not its envelope."""

    def __init__(
        self,
        message: str,
        *,
        status_code: int,
        code: str | None = None,
        api_version: str | None = None,
        body: Mapping[str, Any] | str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code
        self.code = code
        self.api_version = api_version
        self.body = body

    def __str__(self) -> str:
        code = f" {self.code}" if self.code else ""
        return f"HTTP {self.status_code}{code}: {self.message}"


class BadRequestError(APIError):
    """HTTP 400: the service refused the request."""


class RequestValidationError(BadRequestError):
    """HTTP 400 VALIDATION_ERROR: the request body was refused (for example the prompt)."""


class ConversationAlreadyCompletedError(BadRequestError):
    """HTTP 400 CONVERSATION_ALREADY_COMPLETED: a completed research cannot be stopped."""


class ResearchNotCompletedError(BadRequestError):
    """HTTP 400 RESEARCH_NOT_COMPLETED: the output exists only once the research completed."""


class AuthenticationError(APIError):
    """HTTP 401 INVALID_API_KEY: the API key is invalid or expired."""


class NotFoundError(APIError):
    """HTTP 404 REQUEST_NOT_FOUND: no such request id (or its output has expired)."""


class RateLimitError(APIError):
    """HTTP 429 RATE_LIMIT_EXCEEDED, or a client-side budget that refuses to wait."""

    def __init__(
        self,
        message: str,
        *,
        status_code: int = 429,
        code: str | None = "RATE_LIMIT_EXCEEDED",
        api_version: str | None = None,
        body: Mapping[str, Any] | str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(
            message, status_code=status_code, code=code, api_version=api_version, body=body
        )
        self.retry_after = retry_after

    def __str__(self) -> str:
        text = super().__str__()
        if self.retry_after is not None:
            text += f" (retry after {self.retry_after:g} s)"
        return text


class ServerError(APIError):
    """HTTP 5xx: the service or a gateway in front of it failed."""


class UnexpectedResponseError(APIError):
    """The response is not the documented envelope (HTML page, empty body, bad JSON, ...)."""


class ResearchError(FayError):
    """A research ended (or was given up) in a way the caller has to handle."""

    def __init__(self, message: str, *, request_id: str) -> None:
        super().__init__(message)
        self.request_id = request_id


class ResearchFailedError(ResearchError):
    """The research ended with status FAILED."""

    def __init__(self, message: str, *, request_id: str, error_message: str | None) -> None:
        super().__init__(message, request_id=request_id)
        self.error_message = error_message


class ResearchStoppedError(ResearchError):
    """The research was STOPPED while it was being waited on."""


class ResearchTimeoutError(ResearchError, TimeoutError):
    """The research did not finish in time; ``stopped`` says whether it was stopped."""

    def __init__(
        self,
        message: str,
        *,
        request_id: str,
        last_status: object = None,
        stopped: bool = False,
    ) -> None:
        super().__init__(message, request_id=request_id)
        self.last_status = last_status
        self.stopped = stopped


class StopTimeoutError(ResearchError, TimeoutError):
    """A stop did not finish within the stop grace; ``sent``: it may have reached the service."""

    def __init__(self, message: str, *, request_id: str, sent: bool) -> None:
        super().__init__(message, request_id=request_id)
        self.sent = sent


class NotTrackedError(ResearchError, KeyError):
    """The manager does not track this request id (never started here, or already ended)."""

    def __str__(self) -> str:
        # KeyError.__str__ would quote the message like a dictionary key.
        return str(self.args[0]) if self.args else ""
