"""The ``fay-async`` command: its entry point and argument parser.

Each subcommand is one ``_add_<name>`` function that declares its parser and sets
``run`` (a function ``argparse.Namespace -> int``); list it in ``_SUBCOMMANDS``. The
commands themselves are imported only when one runs, which keeps ``--help`` fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence
from typing import Any, Final

from fay_async import _config  # the environment variables' names: no public alternative

__all__ = ["build_parser", "main"]

_Subparsers = Any  # argparse's _SubParsersAction is private

#: fay_async.testing.DEFAULT_API_KEY, written out: importing it would load the emulator,
#: httpx and anyio for every ``--help`` (a test checks that the two agree).
DEFAULT_API_KEY: Final = "test-key"


class _Version(argparse.Action):
    """``--version``: the installed version is looked up only when asked for."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, *_args: object) -> None:
        print(f"{parser.prog} {_config.version()}")
        parser.exit()


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text!r}")
    return value


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"a port is 0-65535 (0: any free port), got {value}")
    return value


def _add_emulator(subparsers: _Subparsers) -> None:
    parser = subparsers.add_parser(
        "emulator",
        help="run a local Fay API emulator",
        description=(
            "Serve a local emulation of the Fay research API (uvicorn). Researches go "
            "PENDING -> PROCESSING -> COMPLETED in about a minute of emulator time; "
            "--speed makes that minute pass faster. Ctrl-C stops it."
        ),
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument(
        "--port", type=_port, default=8765, help="port to bind, 0 for any (default 8765)"
    )
    parser.add_argument(
        "--tier",
        choices=("free", "pro"),
        default=None,
        help="enforce the published hourly rate limits of this tier (default: none)",
    )
    parser.add_argument(
        "--speed",
        type=_positive_float,
        default=1.0,
        help="emulator seconds per real second (50: a research completes in ~1.3 s)",
    )
    parser.add_argument(
        "--api-key",
        default=DEFAULT_API_KEY,
        help=f"the API key the emulator accepts (default {DEFAULT_API_KEY!r})",
    )
    parser.add_argument("--seed", type=int, default=None, help="seed for ids and durations")
    parser.add_argument(
        "--webhook-url",
        metavar="URL",
        default=None,
        help="POST a signed webhook event to URL at each status change (retried 3 times)",
    )
    parser.add_argument(
        "--webhook-secret",
        metavar="SECRET",
        default=None,
        help=f"the secret webhooks are signed with (default: ${_config.WEBHOOK_SECRET_ENV})",
    )
    parser.add_argument(
        "--log-level",
        choices=("critical", "error", "warning", "info", "debug"),
        default="info",
        help="uvicorn's log level (default info: one line per request)",
    )
    parser.set_defaults(run=_plain_command("emulate", "run_emulator"))


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _connection_options() -> argparse.ArgumentParser:
    """Options every command that talks to the API shares."""
    common = argparse.ArgumentParser(add_help=False)
    group = common.add_argument_group("connection")
    group.add_argument(
        "--emulator",
        action="store_true",
        help="run against the built-in Fay emulator: no key, no network, made-up outputs, "
        "and emulated time 60x faster",
    )
    group.add_argument(
        "--api-key",
        default=None,
        help=f"the Fay API key (default: ${_config.API_KEY_ENV})",
    )
    group.add_argument(
        "--base-url",
        default=None,
        help=f"the API origin (default: ${_config.BASE_URL_ENV} or {_config.DEFAULT_BASE_URL})",
    )
    group.add_argument(
        "--tier",
        choices=("free", "pro"),
        default=None,
        help="keep to this plan's published hourly rate limits on the client side",
    )
    group.add_argument(
        "-v", "--verbose", action="store_true", help="log every HTTP attempt to stderr"
    )
    return common


def _polling_options() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--timeout",
        type=_positive_float,
        default=300.0,
        help="seconds a research may take before it is stopped (default 300)",
    )
    common.add_argument(
        "--poll-interval",
        type=_positive_float,
        default=None,
        help="check the status every this many seconds instead of the default schedule "
        "(3 s growing to 15 s while queued, 2.5 s while running)",
    )
    return common


def _webhook_options() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    group = common.add_argument_group(
        "webhooks",
        "Receive Fay's webhooks while waiting, besides polling: run a tunnel to this port and "
        "register its URL in the Fay dashboard (with --emulator, the emulator delivers here).",
    )
    group.add_argument(
        "--webhook-port",
        type=_port,
        default=None,
        metavar="N",
        help="listen for webhooks on this port (0: any free port)",
    )
    group.add_argument(
        "--webhook-host",
        default=None,
        metavar="HOST",
        help="the address to listen on (default 127.0.0.1)",
    )
    group.add_argument(
        "--webhook-secret",
        default=None,
        metavar="SECRET",
        help=f"the webhook secret (default: ${_config.WEBHOOK_SECRET_ENV})",
    )
    return common


def _plain_command(module: str, name: str) -> Callable[[argparse.Namespace], int]:
    """Run the function ``name`` of the module ``module`` of this package (imported then)."""

    def run_command(args: argparse.Namespace) -> int:
        command: Callable[[argparse.Namespace], int]
        command = getattr(importlib.import_module(f".{module}", __package__), name)
        return command(args)

    return run_command


def _command(module: str, name: str) -> Callable[[argparse.Namespace], int]:
    """Run the async command ``name`` of the module ``module`` of this package."""

    def run_command(args: argparse.Namespace) -> int:
        from .run import Command, run  # noqa: PLC0415 - keeps `fay-async --help` fast

        command: Command = getattr(importlib.import_module(f".{module}", __package__), name)
        return run(command, args)

    return run_command


def _add_research(subparsers: _Subparsers) -> None:
    parser = subparsers.add_parser(
        "research",
        parents=[_connection_options(), _polling_options(), _webhook_options()],
        help="run one research and print its output",
        description=(
            "Start a research, wait for it, and print its Markdown output (or JSON with "
            "--schema or --json). If it takes longer than --timeout it is stopped, so you "
            "pay for no more than you wait for; Ctrl-C stops it too. Exit codes: 0 "
            "completed, 1 failed, stopped or timed out, 2 bad input, 130 interrupted."
        ),
    )
    parser.add_argument("prompt", help="the research question")
    parser.add_argument(
        "--schema",
        metavar="FILE",
        help="a JSON-schema file: ask for structured output that fits it",
    )
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.set_defaults(run=_command("commands", "research"))


def _add_request_command(subparsers: _Subparsers, name: str, summary: str, detail: str) -> None:
    detail += (
        " With --emulator it asks a new, empty emulator, which knows no request id: useful "
        "only to see the answers' form."
    )
    parser = subparsers.add_parser(
        name, parents=[_connection_options()], help=summary, description=detail
    )
    parser.add_argument("request_id", metavar="ID", help="the request id of the research")
    if name != "stop":
        parser.add_argument("--json", action="store_true", help="print JSON")
    parser.set_defaults(run=_command("commands", name))


def _add_status(subparsers: _Subparsers) -> None:
    _add_request_command(
        subparsers,
        "status",
        "show a research's status",
        "Print the status of a research: its state, prompt, timestamps and error message.",
    )


def _add_output(subparsers: _Subparsers) -> None:
    _add_request_command(
        subparsers,
        "output",
        "print a completed research's output",
        "Print the output of a COMPLETED research: Markdown, or JSON for structured output. "
        "Outputs are kept 30 days.",
    )


def _add_stop(subparsers: _Subparsers) -> None:
    _add_request_command(
        subparsers,
        "stop",
        "stop a running research",
        "Stop a PENDING or PROCESSING research (it will have no output). A research that "
        "has already ended is reported with its status and left alone.",
    )


def _add_batch(subparsers: _Subparsers) -> None:
    parser = subparsers.add_parser(
        "batch",
        parents=[_connection_options(), _polling_options(), _webhook_options()],
        help="research many prompts, resumably",
        description=(
            "Research every prompt of FILE, --concurrency at a time, and write one JSON line "
            "per prompt to --out (id, line, request_id, status, output or error, elapsed_s). "
            "FILE is plain text (one prompt a line) or JSONL (objects with 'prompt' and "
            "optional 'structured_output', 'output_schema', 'id'). A journal next to --out "
            "(OUT.journal.sqlite) records each research as it is created: rerun the same "
            "command after a crash or Ctrl-C and it resumes, never paying for a prompt "
            "twice. Exit codes: 0 all completed, 1 some did not, 2 bad input, 130 "
            "interrupted (the researches in flight were stopped). With --redis URL (or "
            "$FAY_REDIS_URL), run the same command as several workers on any hosts: each "
            "prompt is created once fleet-wide, the workers share --tier's budget, and each "
            "writes the union of the results to its --out when none is left."
        ),
    )
    parser.add_argument("file", metavar="FILE", help="the prompts: .txt or .jsonl")
    parser.add_argument(
        "--out", required=True, metavar="OUT", help="where to write the results (JSONL)"
    )
    parser.add_argument(
        "--concurrency",
        type=_positive_int,
        default=8,
        help="researches in flight at once (default 8)",
    )
    parser.add_argument(
        "--retry-uncertain",
        action="store_true",
        help="create again the prompts whose create was cut off by a crash (their first "
        "research may exist and be billed; by default they are reported, not re-created)",
    )
    _redis_options(parser)
    parser.set_defaults(run=_command("batchrun", "batch"))


def _redis_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--redis",
        metavar="URL",
        default=None,
        help="share the batch with other workers through this Redis (default: $FAY_REDIS_URL)",
    )
    parser.add_argument(
        "--lease",
        type=_positive_float,
        default=15.0,
        help="with --redis: seconds after which a silent worker's prompts are taken over "
        "(default 15)",
    )


def _add_batch_export(subparsers: _Subparsers) -> None:
    parser = subparsers.add_parser(
        "batch-export",
        help="write the results of a batch shared through Redis",
        description=(
            "Write one JSON line per prompt of FILE to --out: the result recorded by "
            "whichever worker ran it, or status UNFINISHED with its state. Exit code 0 "
            "when every prompt completed, 1 otherwise."
        ),
    )
    parser.add_argument("file", metavar="FILE", help="the batch's input, as given to the workers")
    parser.add_argument(
        "--out", required=True, metavar="OUT", help="where to write the results (JSONL)"
    )
    _redis_options(parser)
    parser.set_defaults(run=_command("fleetbatch", "batch_export"))


_SUBCOMMANDS: Final[tuple[Callable[[_Subparsers], None], ...]] = (
    _add_research,
    _add_batch,
    _add_batch_export,
    _add_status,
    _add_output,
    _add_stop,
    _add_emulator,
)


def build_parser() -> argparse.ArgumentParser:
    """The ``fay-async`` argument parser with every subcommand."""
    parser = argparse.ArgumentParser(
        prog="fay-async", description="Tools for the Fay research API."
    )
    parser.add_argument("--version", action=_Version, help="show the version and exit")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in _SUBCOMMANDS:
        add(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``fay-async`` with ``argv`` (default: the command line); return the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    run: Callable[[argparse.Namespace], int] | None = getattr(args, "run", None)
    if run is None:
        parser.print_help(sys.stderr)
        return 2
    return run(args)
