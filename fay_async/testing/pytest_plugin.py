"""pytest fixtures for code that talks to Fay: ``fay_emulator``, ``fay_client``, ``fay_manager``.

Installed with fay-async and loaded by pytest automatically. The async fixtures work the
same under pytest-asyncio (strict or auto mode) and under anyio's pytest plugin (asyncio
or trio): each of them is a plain fixture that hands the async work to whichever plugin
runs the test, so a test file only carries its runner's own marker.

- ``fay_emulator``: a fresh :class:`~fay_async.testing.FayEmulator` for each test.
- ``fay_client``: ``fay_emulator.client()``, closed after the test.
- ``fay_manager``: an open :class:`~fay_async.ResearchManager` on ``fay_client``, closed
  (stopping what is still running) after the test.

Options go in one marker, ``@pytest.mark.fay(...)``, on a test, a class or a module
(``pytestmark``); the closest mark wins, key by key:

- ``emulator={...}``: ``FayEmulator`` keyword arguments (``scenario``, ``rate_limits``, ...);
- ``client={...}``: ``FayClient`` keyword arguments (``max_retries``, ``rate_limits``, ...);
- ``manager={...}``: ``ResearchManager`` keyword arguments (``poll_policy``, ...);
- ``virtual_time=True``: the test runs on a virtual clock, so a research's minute of
  lifecycle, a 300-s timeout and every poll interval pass as soon as the code under test
  waits. asyncio uses looptime (``pip install looptime``), trio
  ``trio.testing.MockClock(autojump_threshold=0)``.
"""

from __future__ import annotations

import asyncio
import inspect
import math
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any, Final, TypeVar

import pytest

from ._options import MARKER_HELP, FayOptions, build, options_for

if TYPE_CHECKING:
    from fay_async import FayClient, ResearchManager
    from fay_async.testing import FayEmulator

__all__ = ["fay_client", "fay_emulator", "fay_manager"]

_T = TypeVar("_T")

_LOOP_SCOPES: Final = ("function", "class", "module", "package", "session")
_LOOPTIME_MISSING: Final = (
    "@pytest.mark.fay(virtual_time=True) on asyncio needs looptime: pip install looptime "
    '(or "fay-async[testing]")'
)
_RUN_IT: Final = (
    "run the test with pytest-asyncio (@pytest.mark.asyncio, or asyncio_mode = auto) "
    "or with anyio (@pytest.mark.anyio)"
)


def pytest_configure(config: pytest.Config) -> None:
    """Register the ``fay`` marker."""
    config.addinivalue_line("markers", MARKER_HELP)


# --- the public fixtures --------------------------------------------------------------------


@pytest.fixture
def _fay_options(request: pytest.FixtureRequest) -> FayOptions:
    """The merged ``@pytest.mark.fay(...)`` options of this test."""
    return options_for(request.node)


@pytest.fixture
def fay_emulator(_fay_options: FayOptions) -> FayEmulator:
    """A fresh FayEmulator; its options come from ``@pytest.mark.fay(emulator={...})``."""
    from fay_async.testing import FayEmulator  # noqa: PLC0415 - keeps plugin loading cheap

    emulator: FayEmulator = build("emulator", FayEmulator, _fay_options.emulator)
    return emulator


@pytest.fixture
def fay_client(request: pytest.FixtureRequest) -> FayClient:
    """A FayClient talking to ``fay_emulator`` in-process; closed after the test.

    Its options come from ``@pytest.mark.fay(client={...})``.
    """
    client: FayClient = request.getfixturevalue(_async_fixture(request, "fay_client"))
    return client


@pytest.fixture
def fay_manager(request: pytest.FixtureRequest) -> ResearchManager:
    """An open ResearchManager on ``fay_client``; leaving it stops what still runs.

    Its options come from ``@pytest.mark.fay(manager={...})``.
    """
    manager: ResearchManager = request.getfixturevalue(_async_fixture(request, "fay_manager"))
    return manager


@pytest.fixture(autouse=True)
def _fay_virtual_time(request: pytest.FixtureRequest) -> Iterator[None]:
    """Put an async test marked ``fay(virtual_time=True)`` on a virtual clock.

    Autouse, so that it runs before any function-scoped async fixture starts the loop.
    """
    if not isinstance(request.node, pytest.Function) or not asyncio.iscoroutinefunction(
        request.node.obj
    ):
        yield
        return
    if not options_for(request.node).virtual_time:
        yield
        return
    runner = _runner_of(request)
    if runner == "anyio":
        yield from _anyio_virtual_time(request)
    elif runner == "asyncio":
        yield from _pytest_asyncio_virtual_time(request)
    else:
        pytest.fail(
            f"@pytest.mark.fay(virtual_time=True) needs an event loop it can put on a virtual "
            f"clock: {_RUN_IT}",
            pytrace=False,
        )


# --- which plugin runs the test -------------------------------------------------------------


def _runner_of(request: pytest.FixtureRequest) -> str | None:
    if "anyio_backend" in request.fixturenames:
        return "anyio"
    if (
        request.node.get_closest_marker("asyncio") is not None
        and request.config.pluginmanager.has_plugin("asyncio")
        and _pytest_asyncio is not None
    ):
        return "asyncio"
    return None


def _async_fixture(request: pytest.FixtureRequest, name: str) -> str:
    """The name of the hidden fixture that does ``name``'s async work for this test."""
    runner = _runner_of(request)
    if runner == "anyio":
        return f"_{name}_anyio"
    if runner == "asyncio":
        # The fixture must run in the test's own loop, whatever its loop scope.
        return f"_{name}_asyncio_{_loop_scope(request)}"
    pytest.fail(f"{name} is an async fixture: {_RUN_IT}", pytrace=False)


def _loop_scope(request: pytest.FixtureRequest) -> str:
    """The scope of the pytest-asyncio loop the test runs in."""
    marker = request.node.get_closest_marker("asyncio")
    assert marker is not None  # noqa: S101 - _runner_of found it
    scope: str = (
        marker.kwargs.get("loop_scope")
        or marker.kwargs.get("scope")
        or request.config.getini("asyncio_default_test_loop_scope")
        or "function"
    )
    return scope


# --- the async work, shared by both plugins -------------------------------------------------


async def _open_client(fay_emulator: FayEmulator, _fay_options: FayOptions) -> AsyncIterator[Any]:
    client = build("client", fay_emulator.client, _fay_options.client)
    async with client:
        yield client


async def _open_manager(fay_client: FayClient, _fay_options: FayOptions) -> AsyncIterator[Any]:
    from fay_async import ResearchManager  # noqa: PLC0415 - keeps plugin loading cheap

    manager = build("manager", ResearchManager, _fay_options.manager, fay_client)
    async with manager:
        yield manager


async def _in_own_task(context: AbstractAsyncContextManager[_T]) -> AsyncIterator[_T]:
    """Enter and leave ``context`` in one task of its own.

    pytest-asyncio runs an async fixture's setup and its teardown as two tasks, and a task
    group (a manager's pollers) must be left by the task that entered it.
    """
    loop = asyncio.get_running_loop()
    entered: asyncio.Future[_T] = loop.create_future()
    leave = asyncio.Event()

    async def hold() -> None:
        async with context as value:
            entered.set_result(value)
            await leave.wait()

    def entering_failed(task: asyncio.Task[None]) -> None:
        if not entered.done():
            error = None if task.cancelled() else task.exception()
            entered.set_exception(error or RuntimeError("cancelled while entering"))

    task = loop.create_task(hold())
    task.add_done_callback(entering_failed)
    try:
        yield await entered
    finally:
        leave.set()
        await task


def _asyncio_manager(fay_client: FayClient, _fay_options: FayOptions) -> AsyncIterator[Any]:
    from fay_async import ResearchManager  # noqa: PLC0415 - keeps plugin loading cheap

    manager = build("manager", ResearchManager, _fay_options.manager, fay_client)
    return _in_own_task(manager)


def _named(function: Callable[..., Any], name: str) -> Callable[..., Any]:
    """A fresh function object: pytest-asyncio marks the function it decorates."""

    async def fixture(*args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        async for value in function(*args, **kwargs):
            yield value

    fixture.__name__ = fixture.__qualname__ = name
    fixture.__signature__ = inspect.signature(function)  # type: ignore[attr-defined]
    return fixture


_fay_client_anyio = pytest.fixture(_open_client, name="_fay_client_anyio")
_fay_manager_anyio = pytest.fixture(_open_manager, name="_fay_manager_anyio")

try:
    import pytest_asyncio as _pytest_asyncio
except ImportError:  # pragma: no cover - the test environment has it
    _pytest_asyncio = None  # type: ignore[assignment]
else:
    for _scope in _LOOP_SCOPES:
        for _base, _function in (("fay_client", _open_client), ("fay_manager", _asyncio_manager)):
            _name = f"_{_base}_asyncio_{_scope}"
            globals()[_name] = _pytest_asyncio.fixture(
                _named(_function, _name),
                loop_scope=_scope,
                name=_name,
            )


# --- virtual time ---------------------------------------------------------------------------


def _looptime() -> Any:
    try:
        import looptime  # noqa: PLC0415 - optional, for virtual time on asyncio only
    except ImportError:
        pytest.fail(_LOOPTIME_MISSING, pytrace=False)
    return looptime


def _pytest_asyncio_virtual_time(request: pytest.FixtureRequest) -> Iterator[None]:
    """Compact the time of the test's pytest-asyncio loop while this test and its
    function-scoped fixtures run, so that a fixture's teardown sees the same clock."""
    looptime = _looptime()
    runner = request.getfixturevalue(f"_{_loop_scope(request)}_scoped_runner")
    loop = looptime.patch_event_loop(runner.get_loop(), _enabled=False)
    if loop.looptime_on:  # looptime's own marker or --looptime already did it
        yield
        return
    with loop.looptime_enabled():
        yield


def _anyio_virtual_time(request: pytest.FixtureRequest) -> Iterator[None]:
    """Start anyio's test runner on a virtual clock before any async fixture starts it."""
    from anyio.pytest_plugin import extract_backend_and_options, get_runner  # noqa: PLC0415

    backend, options = extract_backend_and_options(request.getfixturevalue("anyio_backend"))
    options = dict(options)
    if backend == "asyncio":
        options.setdefault("loop_factory", _looptime().new_event_loop)
    elif backend == "trio":
        from trio.testing import MockClock  # noqa: PLC0415 - trio is optional

        options.setdefault("clock", MockClock(autojump_threshold=0))
    with get_runner(backend, options) as runner:
        if not runner.run_fixture(_virtual_clock_running, {"backend": backend}):
            pytest.fail(
                "@pytest.mark.fay(virtual_time=True): the event loop of this test is not on "
                "a virtual clock (an async fixture of a wider scope started it, or the "
                "anyio_backend options name a clock or loop factory of their own)",
                pytrace=False,
            )
        yield


async def _virtual_clock_running(backend: str) -> bool:
    if backend == "trio":
        import trio  # noqa: PLC0415 - trio is optional
        from trio.testing import MockClock  # noqa: PLC0415

        clock = trio.lowlevel.current_clock()
        return isinstance(clock, MockClock) and not math.isinf(clock.autojump_threshold)
    return bool(getattr(asyncio.get_running_loop(), "looptime_on", False))
