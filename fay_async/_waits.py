"""Waiting on a research through the poller: until it ends, or change by change."""

from __future__ import annotations

import math
from collections.abc import AsyncGenerator

import anyio

from ._models import ConversationInfo, ResearchStatus
from ._outcomes import describe_limit
from ._polling import StatusPoller, Watch
from ._registry import Registry
from .exceptions import ResearchTimeoutError

__all__ = ["changes", "until_settled"]


def _subscribe(poller: StatusPoller, registry: Registry, request_id: str) -> Watch:
    entry = registry.get(request_id)
    if entry is None:
        return poller.subscribe(request_id)
    return poller.subscribe(request_id, known=entry.status, since=entry.started_at)


async def until_settled(
    poller: StatusPoller, registry: Registry, request_id: str, deadline: float, limit: float
) -> ConversationInfo:
    """The info of the research once terminal; ``ResearchTimeoutError`` at ``deadline``."""
    watch = _subscribe(poller, registry, request_id)
    info: ConversationInfo | None = None
    try:
        if math.isinf(deadline):  # no limit: no scope (it costs ~600 B per waiter)
            info = await watch.wait_settled()
        else:
            with anyio.CancelScope(deadline=deadline):
                info = await watch.wait_settled()
    finally:
        poller.unsubscribe(watch)
    if info is None:
        raise ResearchTimeoutError(
            f"research {request_id} did not finish {describe_limit(limit)} "
            f"(last status: {watch.status or 'unknown'})",
            request_id=request_id,
            last_status=watch.status,
            stopped=False,
        )
    return info


async def changes(
    poller: StatusPoller, registry: Registry, request_id: str
) -> AsyncGenerator[ConversationInfo, None]:
    """Each new status info of the research, until a terminal one (then the generator ends)."""
    watch = _subscribe(poller, registry, request_id)
    try:
        last: ResearchStatus | None = None
        while True:
            changed = watch.changed
            info = watch.info
            if info is not None and info.status != last:
                last = info.status
                yield info
                if info.status.is_terminal:
                    return
                continue
            if watch.error is not None:
                raise watch.error
            await changed.wait()
    finally:
        poller.unsubscribe(watch)
