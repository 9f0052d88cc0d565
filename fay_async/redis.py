"""Shared state for a fleet of processes that use one API key (``pip install "fay-async[redis]"``).

- :class:`RedisBudget`: the key's rate budget, shared: ``FayClient(rate_limits="free",
  budget=RedisBudget(url))``.
- :class:`RedisRegistry`: what every manager tracks, with owners and leases:
  ``ResearchManager(client, registry=RedisRegistry(url))``.
- :class:`WebhookFanout`: a webhook event received by any worker reaches the worker that
  tracks its research.
- :class:`BatchClaims`: the claims of a batch run by several workers
  (the command line's shared batch): each prompt is created once fleet-wide.

Every one of them runs on asyncio only (redis-py's asyncio client) and refuses trio at
construction; none of them ever shows the password of its Redis URL.
"""

from __future__ import annotations

from ._redis._connect import redact
from ._redis.budget import RedisBudget
from ._redis.claims import BatchClaims, Claim, ClaimLostError, batch_name
from ._redis.events import WebhookFanout
from ._redis.registry import RedisRegistry

__all__ = [
    "BatchClaims",
    "Claim",
    "ClaimLostError",
    "RedisBudget",
    "RedisRegistry",
    "WebhookFanout",
    "batch_name",
    "redact",
]
