"""What the manager takes from a pushed event (a webhook): its status, and its output.

The manager does not import :mod:`fay_async.webhooks` (it sits above the manager): an
event is anything shaped like :class:`Pushed`, as :class:`~fay_async.webhooks.WebhookEvent`
is.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Final, Protocol

import anyio
import attrs

from ._models import ConversationInfo, ConversationOutput, ResearchStatus

__all__ = ["OUTPUT_PUSH_WAIT", "OutputCache", "Pushed", "merged"]

#: Outputs kept for researches whose waiter has not collected them yet.
_OUTPUTS_KEPT: Final = 1024

#: Seconds a waiter that saw COMPLETED pushed waits for the Output event (sent right
#: after it) before it asks for the output itself.
OUTPUT_PUSH_WAIT: Final = 2.0


class Pushed(Protocol):
    """A pushed event: its type, its research, what it says of it, and an output if any."""

    @property
    def type(self) -> str: ...

    @property
    def request_id(self) -> str | None: ...

    @property
    def info(self) -> ConversationInfo | None: ...

    @property
    def output(self) -> str | dict[str, Any] | None: ...


def merged(previous: ConversationInfo | None, pushed: ConversationInfo) -> ConversationInfo:
    """``pushed``, with the fields it lacks (an Output event has no prompt) from before."""
    if previous is None or previous.request_id != pushed.request_id:
        return pushed
    missing = {
        field.name: getattr(previous, field.name)
        for field in attrs.fields(ConversationInfo)
        if getattr(pushed, field.name) is None and getattr(previous, field.name) is not None
    }
    return attrs.evolve(pushed, **missing) if missing else pushed


class OutputCache:
    """Outputs that came with an Output event, so the waiter needs no output call."""

    __slots__ = ("_arrived", "_outputs")

    def __init__(self) -> None:
        self._outputs: OrderedDict[str, ConversationOutput] = OrderedDict()
        self._arrived: dict[str, anyio.Event] = {}

    def keep(self, event: Pushed, info: ConversationInfo) -> None:
        """Keep the output an event carries (the oldest goes when too many are kept)."""
        if event.output is None or info.status is not ResearchStatus.COMPLETED:
            return
        self._outputs[info.request_id] = ConversationOutput(
            conversation_id=info.conversation_id,
            status=ResearchStatus.COMPLETED,
            output=event.output,
        )
        while len(self._outputs) > _OUTPUTS_KEPT:
            self._outputs.popitem(last=False)
        arrived = self._arrived.pop(info.request_id, None)
        if arrived is not None:
            arrived.set()

    async def wait(self, request_id: str, seconds: float) -> ConversationOutput | None:
        """The output of ``request_id`` once its event has come, waiting ``seconds`` at most."""
        output = self.take(request_id)
        if output is not None:
            return output
        arrived = self._arrived.setdefault(request_id, anyio.Event())
        try:
            with anyio.move_on_after(seconds):
                await arrived.wait()
        finally:
            if self._arrived.get(request_id) is arrived:
                del self._arrived[request_id]
        return self.take(request_id)

    def take(self, request_id: str) -> ConversationOutput | None:
        """The output kept for ``request_id`` (then forgotten), or None."""
        return self._outputs.pop(request_id, None)
