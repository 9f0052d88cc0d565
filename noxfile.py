"""Development sessions: ``nox -s tests lint typecheck`` is the whole check."""

from __future__ import annotations

import os

import nox

nox.options.default_venv_backend = "venv"
nox.options.reuse_existing_virtualenvs = True
nox.options.error_on_missing_interpreters = "CI" in os.environ
nox.options.sessions = ["tests", "lint", "typecheck"]

PYPROJECT = nox.project.load_toml("pyproject.toml")


def _install(session: nox.Session, *groups: str, extras: str = "") -> None:
    for group in groups:
        session.install(*nox.project.dependency_groups(PYPROJECT, group))
    session.install("-e", f".{extras}")


@nox.session
def tests(session: nox.Session) -> None:
    """Run the test suite on asyncio and trio, with the branch-coverage gate."""
    _install(session, "test", extras="[cli]")
    session.run("coverage", "erase")
    session.run("coverage", "run", "-m", "pytest", *session.posargs)
    session.run("coverage", "combine", success_codes=[0, 1])
    session.run("coverage", "report")


@nox.session
def lint(session: nox.Session) -> None:
    """ruff: lint and formatting of the package, tests, examples and benchmarks."""
    session.install(*nox.project.dependency_groups(PYPROJECT, "lint"))
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy --strict on the package."""
    _install(session, "typecheck", extras="[cli]")
    session.run("mypy", "--strict", "fay_async")


@nox.session
def bench(session: nox.Session) -> None:
    """The benchmarks at full size, about two minutes (not part of the default check).

    Arguments go to the runner: ``nox -s bench -- --quick`` or ``-- --only overhead``.
    Only what the benchmarks need is installed, trio not among it: trio brings sniffio,
    and the figures are to be those of a plain ``pip install fay-async``.
    """
    _install(session, "bench", extras="[aiohttp]")
    session.run(
        "python",
        "-c",
        "import importlib.util, sys; sys.exit(importlib.util.find_spec('trio') is not None and "
        "'trio is installed in this environment: remove .nox/bench and run again')",
    )
    session.run("python", "-m", "benchmarks", *session.posargs)
