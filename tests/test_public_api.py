from __future__ import annotations

import argparse
import ast
import inspect
import re
import subprocess
import sys
from pathlib import Path

import pytest

import fay_async
from fay_async import exceptions


def test_all_is_sorted_and_complete() -> None:
    assert fay_async.__all__ == sorted(fay_async.__all__)
    assert set(fay_async._LOCATIONS) | {"__version__"} == set(fay_async.__all__)
    for name in fay_async.__all__:
        value = getattr(fay_async, name)
        assert not inspect.ismodule(value), name
        if name != "__version__":
            assert getattr(value, "__name__", name) == name
    assert set(fay_async.__all__) <= set(dir(fay_async))
    with pytest.raises(AttributeError, match="has no attribute 'Nope'"):
        fay_async.Nope  # noqa: B018


def test_importing_the_package_loads_no_submodule_until_a_name_is_used() -> None:
    code = (
        "import sys, fay_async; "
        "print(sorted(m for m in sys.modules if m.startswith('fay_async.'))); "
        "fay_async.FayClient; "
        "print('fay_async._client' in sys.modules, 'importlib.metadata' in sys.modules)"
    )
    out = subprocess.run(  # noqa: S603 - this interpreter, fixed code
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.splitlines() == ["[]", "True False"]


def test_every_exception_is_exported_and_documented() -> None:
    names = [
        n for n, v in vars(exceptions).items() if isinstance(v, type) and issubclass(v, Exception)
    ]
    for name in names:
        if name in {"Any", "Mapping"}:
            continue
        cls = getattr(exceptions, name)
        assert issubclass(cls, exceptions.FayError), name
        assert name in fay_async.__all__, name
        assert cls.__doc__ and "\n" not in cls.__doc__.strip(), name
        assert name in exceptions.__doc__, f"{name} is missing from the drawn tree"
    assert sorted(exceptions.__all__) == exceptions.__all__


def test_version_is_the_installed_metadata() -> None:
    out = subprocess.run(
        [sys.executable, "-c", "import fay_async; print(fay_async.__version__)"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == fay_async.__version__
    assert fay_async.__version__[0].isdigit()
    assert "unknown" not in fay_async.__version__


def test_exception_tree_has_the_documented_bases() -> None:
    e = exceptions
    assert issubclass(e.InvalidRequestIdError, ValueError)
    assert issubclass(e.APITimeoutError, e.APIConnectionError)
    assert issubclass(e.APITimeoutError, TimeoutError)
    assert issubclass(e.ResearchTimeoutError, TimeoutError)
    assert issubclass(e.ResearchTimeoutError, e.ResearchError)
    assert issubclass(e.NotTrackedError, KeyError)
    for cls in (
        e.RequestValidationError,
        e.ConversationAlreadyCompletedError,
        e.ResearchNotCompletedError,
    ):
        assert issubclass(cls, e.BadRequestError)
    for cls in (
        e.BadRequestError,
        e.AuthenticationError,
        e.NotFoundError,
        e.RateLimitError,
        e.ServerError,
        e.UnexpectedResponseError,
    ):
        assert issubclass(cls, e.APIError)


def test_exception_texts() -> None:
    e = exceptions
    err = e.RateLimitError("slow down", retry_after=12.5)
    assert str(err) == "HTTP 429 RATE_LIMIT_EXCEEDED: slow down (retry after 12.5 s)"
    assert str(e.NotTrackedError("r1 not found in active requests", request_id="r1")) == (
        "r1 not found in active requests"
    )
    timeout = e.ResearchTimeoutError("late", request_id="r1", last_status="PENDING", stopped=True)
    assert (timeout.request_id, timeout.last_status, timeout.stopped) == ("r1", "PENDING", True)
    failed = e.ResearchFailedError("failed", request_id="r1", error_message="boom")
    assert failed.error_message == "boom"
    assert str(e.ServerError("down", status_code=503)) == "HTTP 503: down"


def test_testing_all_is_complete() -> None:
    from fay_async import testing

    public = {
        name
        for name, value in vars(testing).items()
        if not name.startswith("_") and not inspect.ismodule(value) and name != "annotations"
    }
    assert public == set(testing.__all__)
    assert testing.DEFAULT_API_KEY == "test-key"
    assert testing.FayEmulator().api_keys == (testing.DEFAULT_API_KEY,)


_PACKAGE = Path(fay_async.__file__).parent
_CLI = _PACKAGE / "_cli"


def _library_modules() -> list[Path]:
    return [path for path in _PACKAGE.rglob("*.py") if _CLI not in path.parents]


def test_the_command_line_uses_only_the_public_api() -> None:
    from fay_async import redis as fay_redis
    from fay_async import testing, webhooks

    public = {
        "fay_async": set(fay_async.__all__) | {"_config"},  # _config: env-var names only
        "fay_async.exceptions": set(exceptions.__all__),
        "fay_async.testing": set(testing.__all__),
        "fay_async.webhooks": set(webhooks.__all__),
        "fay_async.redis": set(fay_redis.__all__),
    }
    for path in _CLI.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names if alias.name.startswith("fay_async")]
                assert all(name in public for name in names), (path.name, names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                module = node.module or ""
                if module.split(".")[0] != "fay_async":
                    continue
                assert module in public, (path.name, module)
                for alias in node.names:
                    assert alias.name in public[module], (path.name, module, alias.name)


def test_library_messages_name_no_command_line_flag() -> None:
    from fay_async._cli.main import build_parser

    flags: set[str] = set()
    parsers = [build_parser()]
    while parsers:
        parser = parsers.pop()
        for action in parser._actions:
            flags.update(option for option in action.option_strings if option.startswith("--"))
            if isinstance(action, argparse._SubParsersAction):
                parsers.extend(action.choices.values())
    flags -= {"--help", "--version"}
    assert {"--out", "--retry-uncertain", "--emulator", "--api-key"} <= flags
    pattern = re.compile(r"(?<![\w-])(" + "|".join(map(re.escape, flags)) + r")(?![\w-])")
    for path in _library_modules():
        found = pattern.findall(path.read_text(encoding="utf-8"))
        assert not found, (path.relative_to(_PACKAGE), found)
