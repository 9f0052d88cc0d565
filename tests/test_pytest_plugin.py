"""The pytest plugin, run the way users run it: their test files under each runner.

Every user file below runs in an inner pytest session under pytest-asyncio's strict
mode, its auto mode, and anyio's plugin on asyncio and on trio, with only the runner's
own marker changing between them.
"""

from __future__ import annotations

import re
import textwrap
import time
from pathlib import Path
from typing import Any

import attrs
import pytest

README = Path(__file__).parent.parent / "README.md"

pytest_plugins = ["pytester"]

LOOPTIME_PLUGINS = (
    "-p",
    "no:looptime_plugin",
    "-p",
    "no:looptime_chronometers",
    "-p",
    "no:looptime_timeproxies",
)


@attrs.frozen
class Runner:
    """How a user runs async tests: an ini file, the test marker, fixture decorator."""

    name: str
    ini: str
    mark: str
    fixture: str
    conftest: str = ""
    # looptime's pytest plugin needs pytest-asyncio: users without it turn it off.
    args: tuple[str, ...] = ()


PYTEST_ASYNCIO_INI = "[pytest]\nasyncio_default_fixture_loop_scope = function\n"
RUNNERS = [
    Runner(
        "pytest-asyncio-strict",
        PYTEST_ASYNCIO_INI + "asyncio_mode = strict\n",
        "@pytest.mark.asyncio",
        "@pytest_asyncio.fixture",
    ),
    Runner(
        "pytest-asyncio-auto",
        PYTEST_ASYNCIO_INI + "asyncio_mode = auto\n",
        "",
        "@pytest.fixture",
    ),
    *(
        Runner(
            f"anyio-{backend}",
            "[pytest]\n",
            "@pytest.mark.anyio",
            "@pytest.fixture",
            f"import pytest\n\n\n@pytest.fixture\ndef anyio_backend():\n    return {backend!r}\n",
            ("-p", "no:asyncio", *LOOPTIME_PLUGINS),
        )
        for backend in ("asyncio", "trio")
    ),
]


def run(pytester: pytest.Pytester, runner: Runner, tests: str, *args: str) -> Any:
    """Run a user's test file (``{mark}`` and ``{fixture}`` filled in) under ``runner``."""
    pytester.makefile(".ini", pytest=runner.ini)
    if runner.conftest:
        pytester.makeconftest(runner.conftest)
    source = textwrap.dedent(tests).replace("{mark}", runner.mark)
    pytester.makepyfile(test_user=source.replace("{fixture}", runner.fixture))
    return pytester.runpytest("-p", "no:cacheprovider", "-W", "error", *runner.args, *args)


by_runner = pytest.mark.parametrize("runner", RUNNERS, ids=[r.name for r in RUNNERS])

FIXTURES = """
import time

import anyio
import pytest
import pytest_asyncio

from fay_async import FayClient, RateLimits, ResearchManager, ResearchStatus
from fay_async.testing import DEFAULT_API_KEY, FayEmulator, Fault, Scenario

pytestmark = pytest.mark.fay(emulator={"seed": 7, "api_keys": ["module-key"]})

SEEN = {}


{mark}
@pytest.mark.fay(emulator={"scenario": Scenario(0, 1)})
async def test_client_talks_to_the_emulator(fay_client, fay_emulator):
    created = await fay_client.create_conversation("What changed in EU battery rules?")
    assert fay_emulator.created_prompts() == ["What changed in EU battery rules?"]
    assert fay_emulator.api_keys == ("module-key",)  # the module's mark, merged
    SEEN["client"] = fay_client


def test_the_client_is_closed_after_its_test():
    assert SEEN["client"].is_closed


{mark}
@pytest.mark.fay(virtual_time=True)
async def test_a_minute_of_research_in_virtual_time(fay_manager, fay_emulator):
    started, wall = anyio.current_time(), time.perf_counter()
    result = await fay_manager.research("Compare sodium-ion and LFP batteries", timeout=300)
    assert "sodium-ion" in result.text
    assert anyio.current_time() - started > 50  # the emulator's default durations passed
    assert time.perf_counter() - wall < 1
    (research,) = fay_emulator.researches()
    assert research.status is ResearchStatus.COMPLETED


{mark}
async def test_the_manager_is_left_after_its_test(fay_manager, fay_emulator):
    SEEN["unfinished"] = (fay_emulator, await fay_manager.start_research("Left running"))


def test_leaving_the_manager_stopped_the_research():
    emulator, request_id = SEEN["unfinished"]
    assert emulator.research(request_id).status is ResearchStatus.STOPPED


CHANGES = []


{mark}
@pytest.mark.fay(
    virtual_time=True,
    emulator={"rate_limits": "free", "api_keys": ["my-fake-key"]},
    client={"rate_limits": RateLimits.FREE},
    manager={"on_status_change": lambda info: CHANGES.append(info.status)},
)
async def test_marker_options_reach_each_fixture(fay_emulator, fay_client, fay_manager):
    assert fay_emulator.api_keys == ("my-fake-key",)
    assert fay_emulator.rate_limits["create"] == 10
    assert fay_client.rate_limiter is not None
    await fay_manager.research("Options", timeout=300)
    assert CHANGES[-1] is ResearchStatus.COMPLETED


{mark}
async def test_a_fault_reaches_the_client(fay_client, fay_emulator):
    fay_emulator.inject_fault("create", Fault.drop(processed=True))
    with pytest.raises(Exception, match="could not talk to the Fay API"):
        await fay_client.create_conversation("Only once, please")
    assert fay_emulator.created_prompts() == ["Only once, please"]


{mark}
@pytest.mark.fay(virtual_time=True, emulator={"api_keys": [DEFAULT_API_KEY]})
async def test_virtual_time_needs_no_fay_fixture(fay_emulator):
    # Code under test that opens its own client and sleeps for real seconds.
    async with fay_emulator.client() as client:
        created = await client.create_conversation("Unchanged code")
        wall = time.perf_counter()
        while not (await client.get_status(created.request_id)).status.is_terminal:
            await anyio.sleep(2)
    assert time.perf_counter() - wall < 1
"""


@by_runner
def test_every_fixture_and_option_under_each_runner(
    pytester: pytest.Pytester, runner: Runner
) -> None:
    result = run(pytester, runner, FIXTURES)
    result.assert_outcomes(passed=8)


USER_FIXTURE = """
import time

import anyio
import pytest
import pytest_asyncio

from fay_async import ResearchManager, ResearchStatus

LEFT = []


{fixture}
async def manager(fay_client):
    async with ResearchManager(fay_client) as manager:
        yield manager


{mark}
@pytest.mark.fay(virtual_time=True)
async def test_a_manager_opened_in_a_user_fixture(manager, fay_emulator):
    wall = time.perf_counter()
    await manager.research("From my own fixture", timeout=300)
    assert time.perf_counter() - wall < 1
    LEFT.append((fay_emulator, await manager.start_research("Stopped when the fixture ends")))


def test_leaving_the_fixture_stopped_what_was_left():
    ((emulator, request_id),) = LEFT
    assert emulator.research(request_id).status is ResearchStatus.STOPPED
"""


@by_runner
def test_a_research_manager_in_a_user_fixture(pytester: pytest.Pytester, runner: Runner) -> None:
    result = run(pytester, runner, USER_FIXTURE)
    result.assert_outcomes(passed=2)


SIXTY_SECONDS = """
import time

import anyio
import pytest

from fay_async import ResearchManager
from fay_async.testing import Scenario


{mark}
@pytest.mark.fay(virtual_time=True, emulator={"scenario": Scenario(45, 15)})
async def test_sixty_seconds(fay_client):
    wall = time.perf_counter()
    async with ResearchManager(fay_client) as manager:
        await manager.research("A minute", timeout=300)
    print(f"WALL={time.perf_counter() - wall:.3f}")
"""


@by_runner
def test_the_virtual_time_switch_makes_a_minute_take_under_a_second(
    pytester: pytest.Pytester, runner: Runner
) -> None:
    wall = time.perf_counter()
    result = run(pytester, runner, SIXTY_SECONDS, "-s")
    result.assert_outcomes(passed=1)
    (seconds,) = re.findall(r"WALL=([0-9.]+)", result.stdout.str())
    assert float(seconds) < 1
    assert time.perf_counter() - wall < 5  # the whole inner session, collection included


MISTAKES = """
import pytest


@pytest.mark.fay("positional")
def test_positional(fay_emulator):
    pass


@pytest.mark.fay(colour="blue")
def test_unknown_option(fay_emulator):
    pass


@pytest.mark.fay(virtual_time="yes")
def test_virtual_time_not_a_bool(fay_emulator):
    pass


@pytest.mark.fay(manager=[1])
def test_not_a_dict(fay_emulator):
    pass


@pytest.mark.fay(emulator={"sped": 2})
def test_wrong_emulator_option(fay_emulator):
    pass


{mark}
@pytest.mark.fay(client={"max_retry": 1})
async def test_wrong_client_option(fay_client):
    pass


{mark}
@pytest.mark.fay(manager={"stop_grace": -1})
async def test_wrong_manager_option(fay_manager):
    pass


def test_async_fixture_in_a_sync_test(fay_client):
    pass


@pytest.mark.fay(virtual_time=True)
def test_virtual_time_on_a_sync_test_is_harmless(fay_emulator):
    pass
"""


@pytest.mark.parametrize("runner", RUNNERS[::2], ids=[r.name for r in RUNNERS[::2]])
def test_mistakes_get_a_clear_error(pytester: pytest.Pytester, runner: Runner) -> None:
    result = run(pytester, runner, MISTAKES)
    result.assert_outcomes(passed=1, errors=8)
    result.stdout.fnmatch_lines_random(
        [
            "*@pytest.mark.fay takes keyword arguments only (virtual_time, emulator, client,*",
            "*@pytest.mark.fay got an unknown option 'colour'; the options are virtual_time,*",
            "*@pytest.mark.fay(virtual_time=...) must be True or False, got 'yes'*",
            "*@pytest.mark.fay(manager=...) must be a dict of keyword arguments, got [[]1[]]*",
            "*@pytest.mark.fay(emulator=...): *unexpected keyword argument 'sped'*",
            "*@pytest.mark.fay(client=...): *unexpected keyword argument 'max_retry'*",
            "*@pytest.mark.fay(manager=...): stop_grace must be*",
            "*fay_client is an async fixture: run the test with pytest-asyncio*",
        ]
    )


NO_RUNNER = """
import pytest


@pytest.mark.fay(virtual_time=True)
async def test_no_runner(fay_emulator):
    pass
"""


def test_virtual_time_without_a_runner_says_what_to_do(pytester: pytest.Pytester) -> None:
    pytester.makefile(".ini", pytest=PYTEST_ASYNCIO_INI)
    pytester.makepyfile(test_user=NO_RUNNER)
    # pytest-asyncio's strict mode skips the unmarked test: set it up by hand instead.
    result = pytester.runpytest("-p", "no:cacheprovider", "-p", "no:asyncio", *LOOPTIME_PLUGINS)
    result.stdout.fnmatch_lines(["*fay(virtual_time=True) needs an event loop*@pytest.mark.anyio*"])


@pytest.mark.parametrize("runner", RUNNERS[::2], ids=[r.name for r in RUNNERS[::2]])
def test_virtual_time_on_asyncio_needs_looptime(pytester: pytest.Pytester, runner: Runner) -> None:
    hide_looptime = "import sys\n\nsys.modules['looptime'] = None  # as if not installed\n"
    runner = attrs.evolve(runner, conftest=runner.conftest + hide_looptime)
    result = run(pytester, runner, SIXTY_SECONDS)
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*virtual_time=True) on asyncio needs looptime: pip install*"])


WIDER_LOOP = """
import pytest


@pytest.fixture(scope="module")
def anyio_backend():
    return "asyncio"


@pytest.fixture(scope="module")
async def started_early():
    yield


@pytest.mark.anyio
@pytest.mark.fay(virtual_time=True)
async def test_too_late(started_early, fay_client):
    pass
"""


def test_virtual_time_refuses_a_loop_started_without_it(pytester: pytest.Pytester) -> None:
    result = run(pytester, RUNNERS[3], WIDER_LOOP)
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*the event loop of this test is not on a virtual clock*"])


def test_the_marker_is_registered(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--markers", "-p", "no:asyncio", *LOOPTIME_PLUGINS)
    result.stdout.fnmatch_lines(["@pytest.mark.fay(*, virtual_time=False, emulator={}*"])
    assert result.ret == 0


def readme_example(runner: str) -> str:
    """The README's testing example for ``runner`` (its first line names the runner)."""
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
    (block,) = [b for b in blocks if b.startswith(f"# test_research.py, with {runner}")]
    return block


UNITTEST = Runner("unittest", "[pytest]\n", "", "", args=("-p", "no:asyncio", *LOOPTIME_PLUGINS))


@pytest.mark.parametrize(
    ("example", "runner", "passed"),
    [
        ("pytest-asyncio in strict mode", RUNNERS[0], 2),
        ("pytest-asyncio in auto mode", RUNNERS[1], 1),
        ("anyio's pytest plugin", attrs.evolve(RUNNERS[2], conftest=""), 2),
        ("unittest.IsolatedAsyncioTestCase", UNITTEST, 1),
    ],
    ids=["pytest-asyncio-strict", "pytest-asyncio-auto", "anyio", "unittest"],
)
def test_the_readme_examples_pass_in_well_under_a_second(
    pytester: pytest.Pytester, example: str, runner: Runner, passed: int
) -> None:
    wall = time.perf_counter()
    result = run(pytester, runner, readme_example(example))
    result.assert_outcomes(passed=passed)
    assert time.perf_counter() - wall < 2  # minutes of research each, on virtual time
