"""``python -m benchmarks [--quick] [--json PATH] [--only NAME...]``: run, print, record."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

from . import BENCHMARKS
from ._common import Row, format_table, machine

DEFAULT_JSON = Path(__file__).parent / "results" / "latest.json"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description="Benchmarks of fay_async (see README.md)."
    )
    parser.add_argument(
        "--quick", action="store_true", help="tiny sizes: checks that everything runs"
    )
    parser.add_argument(
        "--json",
        type=Path,
        default=DEFAULT_JSON,
        metavar="PATH",
        help="where to write the results (default: benchmarks/results/latest.json)",
    )
    parser.add_argument(
        "--strict", action="store_true", help="exit with status 1 when a target is missed"
    )
    parser.add_argument(
        "--only",
        nargs="+",
        choices=sorted(BENCHMARKS),
        metavar="NAME",
        help=f"run only these ({', '.join(BENCHMARKS)})",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the chosen benchmarks, print the table, write the JSON.

    The exit status is 1 with ``--strict`` when a target is missed, else 0.
    """
    args = _parser().parse_args(argv)
    names = [name for name in BENCHMARKS if args.only is None or name in args.only]
    info = machine()
    print(
        f"{info['nproc']} CPUs ({info['cpu']}), {info['implementation']} {info['python']}, "
        f"{'quick' if args.quick else 'full'} run: {', '.join(names)}",
        flush=True,
    )
    started = datetime.now(timezone.utc)
    rows: list[Row] = []
    elapsed: dict[str, float] = {}
    for name in names:
        began = time.perf_counter()
        rows += BENCHMARKS[name](quick=args.quick)
        elapsed[name] = time.perf_counter() - began
        print(f"  {name}: {elapsed[name]:.1f} s", flush=True)
    print()
    print(format_table(rows))
    total = sum(elapsed.values())
    print(f"\n{total:.1f} s in all")
    record = {
        "started_at": started.isoformat(timespec="seconds"),
        "quick": args.quick,
        "machine": info,
        "elapsed_s": {**elapsed, "total": total},
        "rows": [row.as_dict() for row in rows],
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    print(f"written to {args.json}")
    missed = [f"{row.benchmark}: {row.metric}" for row in rows if row.ok is False]
    if missed:
        print(f"targets missed: {'; '.join(missed)}")
    return 1 if missed and args.strict else 0


if __name__ == "__main__":
    sys.exit(main())
