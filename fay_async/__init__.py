"""fay_async: an asyncio-native client for the Fay deep-research API.

``FayClient`` speaks the four documented endpoints; ``ResearchManager`` tracks, polls,
times out and stops many researches; ``research_many`` runs a batch of prompts. Every
error is in :mod:`fay_async.exceptions`, and :mod:`fay_async.testing` is a local
emulator of the API for tests.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._batch import BatchItem, BatchResult, ResearchMany, research_many
    from ._client import FayClient
    from ._manager import ResearchManager
    from ._models import (
        ConversationInfo,
        ConversationOutput,
        CreatedConversation,
        CreateRequest,
        ResearchResult,
        ResearchStatus,
        StopResult,
    )
    from ._policy import PollPolicy
    from ._ratelimit import BudgetStore, MemoryBudget, RateLimits
    from ._registry import ActiveResearch, MemoryRegistry, Registry
    from ._validators import validate_request_id
    from .exceptions import (
        APIConnectionError,
        APIError,
        APITimeoutError,
        AuthenticationError,
        BadRequestError,
        ConfigurationError,
        ConversationAlreadyCompletedError,
        FayError,
        InvalidRequestIdError,
        NotFoundError,
        NotTrackedError,
        RateLimitError,
        RequestValidationError,
        ResearchError,
        ResearchFailedError,
        ResearchNotCompletedError,
        ResearchStoppedError,
        ResearchTimeoutError,
        ServerError,
        SharedStateError,
        StopTimeoutError,
        UnexpectedResponseError,
        WebhookPayloadError,
        WebhookVerificationError,
    )

#: Where each public name lives: imported on first use (PEP 562), so that importing
#: fay_async costs little more than importing httpx.
_LOCATIONS: dict[str, str] = {
    "APIConnectionError": "exceptions",
    "APIError": "exceptions",
    "APITimeoutError": "exceptions",
    "ActiveResearch": "_registry",
    "AuthenticationError": "exceptions",
    "BadRequestError": "exceptions",
    "BatchItem": "_batch",
    "BatchResult": "_batch",
    "BudgetStore": "_ratelimit",
    "ConfigurationError": "exceptions",
    "ConversationAlreadyCompletedError": "exceptions",
    "ConversationInfo": "_models",
    "ConversationOutput": "_models",
    "CreateRequest": "_models",
    "CreatedConversation": "_models",
    "FayClient": "_client",
    "FayError": "exceptions",
    "InvalidRequestIdError": "exceptions",
    "MemoryBudget": "_ratelimit",
    "MemoryRegistry": "_registry",
    "NotFoundError": "exceptions",
    "NotTrackedError": "exceptions",
    "PollPolicy": "_policy",
    "RateLimitError": "exceptions",
    "RateLimits": "_ratelimit",
    "Registry": "_registry",
    "RequestValidationError": "exceptions",
    "ResearchError": "exceptions",
    "ResearchFailedError": "exceptions",
    "ResearchManager": "_manager",
    "ResearchMany": "_batch",
    "ResearchNotCompletedError": "exceptions",
    "ResearchResult": "_models",
    "ResearchStatus": "_models",
    "ResearchStoppedError": "exceptions",
    "ResearchTimeoutError": "exceptions",
    "ServerError": "exceptions",
    "SharedStateError": "exceptions",
    "StopResult": "_models",
    "StopTimeoutError": "exceptions",
    "UnexpectedResponseError": "exceptions",
    "WebhookPayloadError": "exceptions",
    "WebhookVerificationError": "exceptions",
    "research_many": "_batch",
    "validate_request_id": "_validators",
}


def __getattr__(name: str) -> Any:
    if name == "__version__":
        from ._config import version  # noqa: PLC0415

        return version()
    module = _LOCATIONS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


__all__ = [
    "APIConnectionError",
    "APIError",
    "APITimeoutError",
    "ActiveResearch",
    "AuthenticationError",
    "BadRequestError",
    "BatchItem",
    "BatchResult",
    "BudgetStore",
    "ConfigurationError",
    "ConversationAlreadyCompletedError",
    "ConversationInfo",
    "ConversationOutput",
    "CreateRequest",
    "CreatedConversation",
    "FayClient",
    "FayError",
    "InvalidRequestIdError",
    "MemoryBudget",
    "MemoryRegistry",
    "NotFoundError",
    "NotTrackedError",
    "PollPolicy",
    "RateLimitError",
    "RateLimits",
    "Registry",
    "RequestValidationError",
    "ResearchError",
    "ResearchFailedError",
    "ResearchManager",
    "ResearchMany",
    "ResearchNotCompletedError",
    "ResearchResult",
    "ResearchStatus",
    "ResearchStoppedError",
    "ResearchTimeoutError",
    "ServerError",
    "SharedStateError",
    "StopResult",
    "StopTimeoutError",
    "UnexpectedResponseError",
    "WebhookPayloadError",
    "WebhookVerificationError",
    "__version__",
    "research_many",
    "validate_request_id",
]
