"""Development sessions: ``nox -s tests lint typecheck`` is the whole check.

``nox -s mutate`` (mutation testing, some minutes) is run before a release, not by CI.
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
from pathlib import Path

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


#: mutmut's exit codes per mutant, as its ``results`` command reads them.
_KILLED = {1, 3, -24, 24, 152, 255, 36}  # a test failed, pytest broke, or it ran out of time
_SURVIVED = {0}
_NO_TESTS = {5, 33}


def _mutation_scores() -> list[tuple[str, int, int, int]]:
    """(module, killed, survived, no test reached it) from the mutants/ metadata."""
    scores = []
    for meta in sorted(Path("mutants/fay_async").glob("*.py.meta")):
        codes = list(json.loads(meta.read_text())["exit_code_by_key"].values())
        unknown = [code for code in codes if code not in _KILLED | _SURVIVED | _NO_TESTS]
        if unknown:
            raise RuntimeError(f"{meta}: mutants neither killed nor survived: {unknown}")
        scores.append(
            (
                meta.name.removesuffix(".meta"),
                sum(code in _KILLED for code in codes),
                sum(code in _SURVIVED for code in codes),
                sum(code in _NO_TESTS for code in codes),
            )
        )
    return scores


def _write_mutation_report(path: Path, minutes: float) -> None:
    rows = []
    total_killed = total = 0
    for module, killed, survived, untested in _mutation_scores():
        count = killed + survived + untested
        total_killed += killed
        total += count
        rows.append(
            f"| `{module}` | {100 * killed / count:.1f} % | {killed} | {survived} | {untested} |"
        )
    rows.append(
        f"| all | {100 * total_killed / total:.1f} % | {total_killed} | {total - total_killed} | |"
    )
    today = datetime.datetime.now(tz=datetime.timezone.utc).date().isoformat()
    path.write_text(
        "# Mutation score\n\n"
        "Written by `nox -s mutate` (mutmut); every run replaces this file. A mutant is a\n"
        "small change to the code; it is killed when a test fails. Mutants marked\n"
        "equivalent (`# pragma: no mutate` with the reason beside it) are not made.\n\n"
        f"Run on {today}, {minutes:.1f} minutes.\n\n"
        "| module | score | killed | survived | no test |\n"
        "| --- | ---: | ---: | ---: | ---: |\n" + "\n".join(rows) + "\n"
    )


@nox.session
def mutate(session: nox.Session) -> None:
    """Mutation testing of the core modules (mutmut); writes MUTATION.md. Some minutes.

    ``nox -s mutate -- --again`` keeps mutmut's results from the last run and tests only
    the mutants of functions that changed since; without it every mutant is tested anew.
    """
    _install(session, "test")
    session.install("mutmut==3.8.1")
    if "--again" not in session.posargs:
        shutil.rmtree("mutants", ignore_errors=True)
    started = datetime.datetime.now(tz=datetime.timezone.utc)
    # Two workers: each runs pytest in a process of its own, and these are two-core machines.
    session.run("mutmut", "run", "--max-children", "2")
    minutes = (datetime.datetime.now(tz=datetime.timezone.utc) - started).total_seconds() / 60
    _write_mutation_report(Path("MUTATION.md"), minutes)
    session.run("mutmut", "results")
