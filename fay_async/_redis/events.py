"""``WebhookFanout``: a webhook event received by any worker reaches the one that needs it."""

from __future__ import annotations

import json
import logging
import types
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Final, Protocol

import anyio
import anyio.abc

from fay_async._models import ResearchStatus
from fay_async._webhook_events import WebhookEvent, decode_event
from fay_async.exceptions import SharedStateError

from ._connect import Connection, check_key_prefix

if TYPE_CHECKING:
    import redis.asyncio

__all__ = ["WebhookFanout"]

logger: Final = logging.getLogger("fay_async.redis")


class _Receiver(Protocol):
    """What the fan-out delivers to: a manager (``handle_webhook``, ``active_requests``)."""

    @property
    def active_requests(self) -> Mapping[str, object]: ...

    async def handle_webhook(self, event: Any) -> object: ...


#: How many completed researches a fan-out remembers, for the Output event that follows.
_COMPLETED_KEPT: Final = 1024

#: A research's status after which its Output event may still come (as a string too).
_COMPLETED: Final = frozenset({ResearchStatus.COMPLETED, "COMPLETED"})

#: The fields of a Fay webhook body: a message with exactly these is decoded as one.
_EVENT_FIELDS: Final = frozenset({"id", "type", "created", "data"})


def _payload(event: Any) -> dict[str, Any]:
    if isinstance(event, WebhookEvent):  # as Fay sent it, so every worker decodes the same
        return {
            "id": event.id,
            "type": event.type,
            "created": event.created.timestamp(),
            "data": dict(event.data),
        }
    to_dict = getattr(event, "to_dict", None)
    if callable(to_dict):
        return dict(to_dict())
    if isinstance(event, Mapping):
        return dict(event)
    return dict(vars(event))


def _decoded(raw: str | bytes) -> Any:
    """A published message as an event: a :class:`WebhookEvent` when it is a Fay body."""
    payload = json.loads(raw)
    if isinstance(payload, dict) and set(payload) == _EVENT_FIELDS:
        return decode_event(raw if isinstance(raw, bytes) else raw.encode())
    return types.SimpleNamespace(**payload)


class WebhookFanout:
    """Webhook events over Redis pub/sub, from the worker that received each to its owner.

    A load balancer hands a webhook to any worker; that worker publishes it instead of
    handling it: give the fan-out to the receiver, ``WebhookReceiver(manager=fanout)``
    (it verifies, answers and drops repeats first), or call :meth:`publish`. An event
    that no worker is subscribed to receive is an error (:meth:`handle_webhook`). Every worker
    runs :meth:`run` with its manager, which hands each event of a research that manager
    tracks to ``manager.handle_webhook(event)``.

    A :class:`~fay_async.webhooks.WebhookEvent` arrives as the same ``WebhookEvent``.
    Other events (a mapping, or an object with ``to_dict()``) arrive as an object with
    their keys as attributes, unless ``decode`` turns the published dictionary into
    something else; an event needs a ``request_id``. asyncio only: on trio it refuses at
    construction.
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
        self.key_prefix = check_key_prefix(key_prefix)
        self._decode = decode
        #: Events handed to this worker's manager.
        self.delivered = 0
        # Researches this worker's manager saw complete through the fan-out: it untracks
        # them then, but the Output event that follows is still for it.
        self._completed: OrderedDict[str, None] = OrderedDict()

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

    async def handle_webhook(self, event: WebhookEvent) -> None:
        """Publish ``event`` to the fleet (what a :class:`WebhookReceiver` calls).

        Raises :class:`~fay_async.SharedStateError` when no worker is listening (no
        :meth:`run` subscribed, not even this worker's) or Redis fails: the event
        reached nobody. A :class:`~fay_async.webhooks.WebhookReceiver` has answered Fay
        200 before it calls this, so Fay does not send the event again: the receiver
        logs the error (ERROR on ``fay_async.webhooks``), and the research's owner,
        if any, learns its state from its poller's checks (``push_poll_policy``).
        """
        listeners = await self.publish(event)
        if listeners == 0:
            raise SharedStateError(
                f"WebhookFanout: no worker is listening on {self._channel!r} at "
                f"{self._connection.where}, so webhook event {getattr(event, 'id', '?')} "
                f"for research {getattr(event, 'request_id', '?')} reached no one; run "
                "fanout.run(manager) in every worker (this one's too)"
            )

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
                raw = message["data"]
                try:
                    event = _decoded(raw) if self._decode is None else self._decode(json.loads(raw))
                except Exception:  # one bad message must not end the fan-out
                    logger.exception("a message on %s is not a webhook event", self._channel)
                    continue
                request_id = getattr(event, "request_id", None)
                if request_id not in manager.active_requests and request_id not in self._completed:
                    continue
                self._remember(request_id, getattr(event, "status", None))
                try:
                    await manager.handle_webhook(event)
                    self.delivered += 1
                except Exception:
                    logger.exception("a webhook event for %s failed", event.request_id)
        finally:
            with anyio.CancelScope(shield=True):
                await pubsub.aclose()

    def _remember(self, request_id: object, status: object) -> None:
        if isinstance(request_id, str) and status in _COMPLETED:
            self._completed[request_id] = None
            while len(self._completed) > _COMPLETED_KEPT:
                self._completed.popitem(last=False)

    async def aclose(self) -> None:
        """Close the Redis connection (only one this fan-out made)."""
        await self._connection.aclose()
