"""A task group that may be entered in one task and left in another.

The research manager runs its poller, creates and stops in a task group that lives from
``__aenter__`` to ``__aexit__``. pytest-asyncio runs an async fixture's setup and its
teardown as two different asyncio tasks, and anyio (rightly) refuses to leave a cancel
scope in another task than the one that entered it. So on asyncio the group is hosted by
a task of its own, which the manager starts and later asks to finish. On trio the runners
enter and leave a fixture in one task, and the group is entered in the caller's task.
"""

from __future__ import annotations

import asyncio
import enum
from typing import Any

import anyio
import anyio.abc

__all__ = ["HostedTaskGroup"]


class _Host(enum.Enum):
    CALLER = "the caller's task"
    OWN_TASK = "a task of its own"


class HostedTaskGroup:
    """``await group.open()`` gives a task group; ``await group.close()`` waits for it to end.

    :meth:`close` lets the tasks still running finish (the caller cancels what must not);
    an error raised by one of them is raised from :meth:`close`.
    """

    def __init__(self) -> None:
        self._group: anyio.abc.TaskGroup | None = None
        self._host: _Host | None = None
        self._finish = anyio.Event()
        self._ended = anyio.Event()
        self._error: BaseException | None = None
        self._task: asyncio.Task[None] | None = None

    async def open(self) -> anyio.abc.TaskGroup:
        """Start the task group and return it."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # not asyncio: trio
            group = anyio.create_task_group()
            await group.__aenter__()
            self._host, self._group = _Host.CALLER, group
            return group
        ready = anyio.Event()
        self._host = _Host.OWN_TASK
        self._task = loop.create_task(self._run(ready))
        try:
            await ready.wait()
        except BaseException:
            self._finish.set()
            self._task.cancel()
            raise
        assert self._group is not None  # noqa: S101 - set before ready
        return self._group

    async def _run(self, ready: anyio.Event) -> None:
        try:
            async with anyio.create_task_group() as group:
                self._group = group
                ready.set()
                await self._finish.wait()
        except BaseException as error:  # noqa: BLE001 - handed to close()
            self._error = error
        finally:
            self._ended.set()

    async def close(self) -> None:
        """Let the group end once its tasks are done; raise what one of them raised."""
        if self._host is _Host.CALLER:
            assert self._group is not None  # noqa: S101
            # The body's own exception is not handed to the task group: it would come back
            # wrapped in an ExceptionGroup. It propagates from the caller unchanged.
            await self._group.__aexit__(None, None, None)
            return
        self._finish.set()
        with anyio.CancelScope(shield=True):
            await self._ended.wait()
        if self._error is not None:
            raise self._error

    def __repr__(self) -> str:
        where: Any = self._host.value if self._host is not None else "not started"
        return f"<HostedTaskGroup in {where}>"
