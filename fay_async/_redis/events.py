"""``WebhookFanout``: a webhook event received by any worker reaches the one that needs it."""

from __future__ import annotations

import json
import logging
import types
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Final, Protocol

import anyio
import anyio.abc

from ._connect import Connection

if TYPE_CHECKING:
    import redis.asyncio

__all__ = ["WebhookFanout"]

logger: Final = logging.getLogger("fay_async.redis")


class _Receiver(Protocol):
    """What the fan-out delivers to: a manager (``handle_webhook``, ``active_requests``)."""

    @property
    def active_requests(self) -> Mapping[str, object]: ...

    async def handle_webhook(self, event: Any) -> object: ...


def _payload(event: Any) -> dict[str, Any]:
    to_dict = getattr(event, "to_dict", None)
    if callable(to_dict):
        return dict(to_dict())
    if isinstance(event, Mapping):
        return dict(event)
    return dict(vars(event))


class WebhookFanout:
    """Webhook events over Redis pub/sub, from the worker that received each to its owner.

    A load balancer hands a webhook to any worker; that worker calls :meth:`publish`
    instead of handling it. Every worker runs :meth:`run` with its manager, which hands
    each event of a research that manager tracks to ``manager.handle_webhook(event)``.
    ``decode`` turns the published dictionary back into an event (default: an object
    with the dictionary's keys as attributes); an event needs a ``request_id``.
    asyncio only: on trio it refuses at construction.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        client: redis.asyncio.Redis | None = None,
        key_prefix: str = "fay",
        decode: Callable[[dict[str, Any]], Any] | None = None,
    ) -> None:
        self._connection = Connection("WebhookFanout", url, client)
        self.key_prefix = key_prefix
        self._decode = decode or (lambda payload: types.SimpleNamespace(**payload))
        #: Events handed to this worker's manager.
        self.delivered = 0

    def __repr__(self) -> str:
        return f"WebhookFanout({self._connection.where!r}, key_prefix={self.key_prefix!r})"

    @property
    def _channel(self) -> str:
        return f"{self.key_prefix}:webhooks"

    async def publish(self, event: Any) -> int:
        """Send ``event`` to every worker; return how many are listening."""
        message = json.dumps(_payload(event), default=str)
        try:
            listeners = await self._connection.client().publish(self._channel, message)
        except Exception as error:
            raise self._connection.failed(error, "publishing a webhook event") from error
        return int(listeners)

    async def run(
        self,
        manager: _Receiver,
        *,
        task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """Deliver the events of ``manager``'s researches to it, until cancelled."""
        client = self._connection.client()
        pubsub: Any = client.pubsub(ignore_subscribe_messages=True)
        try:
            try:
                await pubsub.subscribe(self._channel)
            except Exception as error:
                raise self._connection.failed(error, "subscribing to webhook events") from error
            task_status.started()
            while True:
                message = await pubsub.get_message(timeout=60.0)
                if message is None or message.get("type") != "message":
                    continue
                event = self._decode(json.loads(message["data"]))
                if getattr(event, "request_id", None) not in manager.active_requests:
                    continue
                try:
                    await manager.handle_webhook(event)
                    self.delivered += 1
                except Exception:
                    logger.exception("a webhook event for %s failed", event.request_id)
        finally:
            with anyio.CancelScope(shield=True):
                await pubsub.aclose()

    async def aclose(self) -> None:
        """Close the Redis connection (only one this fan-out made)."""
        await self._connection.aclose()
