"""fay_async: an asyncio-native client for the Fay deep-research API.

``FayClient`` speaks the four documented endpoints; ``ResearchManager`` tracks, polls,
times out and stops many researches; ``research_many`` runs a batch of prompts. Every
error is in :mod:`fay_async.exceptions`, and :mod:`fay_async.testing` is a local
emulator of the API for tests.
"""

from __future__ import annotations

from . import _config
from ._batch import BatchItem, BatchResult, ResearchMany, research_many
from ._client import FayClient, validate_request_id
from ._manager import ActiveResearch, ResearchManager
from ._models import (
    ConversationInfo,
    ConversationOutput,
    CreatedConversation,
    ResearchResult,
    ResearchStatus,
    StopResult,
)
from ._polling import PollPolicy
from ._ratelimit import RateLimits
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
    UnexpectedResponseError,
)

__version__ = _config.VERSION

__all__ = [
    "APIConnectionError",
    "APIError",
    "APITimeoutError",
    "ActiveResearch",
    "AuthenticationError",
    "BadRequestError",
    "BatchItem",
    "BatchResult",
    "ConfigurationError",
    "ConversationAlreadyCompletedError",
    "ConversationInfo",
    "ConversationOutput",
    "CreatedConversation",
    "FayClient",
    "FayError",
    "InvalidRequestIdError",
    "NotFoundError",
    "NotTrackedError",
    "PollPolicy",
    "RateLimitError",
    "RateLimits",
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
    "StopResult",
    "UnexpectedResponseError",
    "__version__",
    "research_many",
    "validate_request_id",
]
