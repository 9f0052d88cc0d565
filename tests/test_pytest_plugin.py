"""The pytest plugin: a user's test file with ``fay_emulator`` and ``fay_client`` passes."""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]

# The looptime plugins installed next to these tests expect pytest-asyncio; a user's own
# session would not load them, and neither do these inner sessions.
NO_LOOPTIME = (
    "-p",
    "no:looptime_plugin",
    "-p",
    "no:looptime_chronometers",
    "-p",
    "no:looptime_timeproxies",
)

USER_CONFTEST = """
import pytest
import trio.testing


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request):
    if request.param == "trio":
        return ("trio", {"clock": trio.testing.MockClock(autojump_threshold=0)})
    return "asyncio"
"""

USER_TESTS = """
import anyio
import pytest

from fay_async import FayClient, ResearchStatus
from fay_async.testing import FayEmulator, Fault, Scenario

CLIENTS = []


@pytest.mark.anyio
@pytest.mark.fay_emulator(scenario=Scenario(0.05, 0.05))
async def test_research_completes(fay_client, fay_emulator):
    created = await fay_client.create_conversation("What changed in EU battery rules?")
    while not (await fay_client.get_status(created.request_id)).status.is_terminal:
        await anyio.sleep(0.02)
    output = await fay_client.get_output(created.request_id)
    assert "EU battery rules" in output.output
    assert fay_emulator.created_prompts() == ["What changed in EU battery rules?"]
    CLIENTS.append(fay_client)


def test_the_client_was_closed_after_its_test():
    assert CLIENTS
    assert all(client.is_closed for client in CLIENTS)


@pytest.mark.fay_emulator(rate_limits="free", api_keys=["my-fake-key"])
def test_marker_options(fay_emulator):
    assert isinstance(fay_emulator, FayEmulator)
    assert fay_emulator.api_keys == ("my-fake-key",)
    assert fay_emulator.rate_limits["create"] == 10


def test_each_test_gets_a_fresh_emulator(fay_emulator):
    assert fay_emulator.calls == []
    assert fay_emulator.api_keys == ("test-key",)


@pytest.mark.anyio
async def test_fault_reaches_the_client(fay_client, fay_emulator):
    fay_emulator.inject_fault("create", Fault.drop())
    with pytest.raises(Exception, match="could not talk to the Fay API"):
        await fay_client.create_conversation("dropped")
    assert fay_emulator.created_prompts() == []


@pytest.mark.fay_emulator("positional")
def test_marker_takes_keywords_only(fay_emulator):
    pass
"""


def test_fixtures_in_a_user_test_file(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(USER_CONFTEST)
    pytester.makepyfile(test_user=USER_TESTS)
    result = pytester.runpytest("-p", "no:cacheprovider", *NO_LOOPTIME)
    result.assert_outcomes(passed=7, errors=1)
    result.stdout.fnmatch_lines(["*test_marker_takes_keywords_only*", "*keyword arguments only*"])


def test_marker_is_registered(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--markers", *NO_LOOPTIME)
    result.stdout.fnmatch_lines(["@pytest.mark.fay_emulator(**options):*"])
    assert result.ret == 0
