"""`prunekit report`: Markdown and HTML from `prunekit eval` results."""

from __future__ import annotations

from prunekit.commands.common import (
    print_result,
    shown,
)
from prunekit.commands.flags import (
    OUTPUT_OPTIONS,
    add_tables,
)
from prunekit.reporting import write_report


def cmd_report(args) -> int:
    paths = write_report(args.results, args.out, overwrite=args.overwrite, baseline=args.baseline)
    return print_result(args, {k: str(v) for k, v in paths.items()}, [f"wrote {shown(paths['markdown'])} and {shown(paths['html'])}"])


def register(sub) -> None:
    report = sub.add_parser("report", help="Markdown + HTML report with tables and plots from eval results")
    report.add_argument("results", nargs="+", help="results JSON files written by prunekit eval --out")
    add_tables(report, OUTPUT_OPTIONS)
    report.add_argument("--baseline", help="label or file of the dense model for ratios (default: the one with most blocks)")
    report.add_argument("--json", action="store_true")
    sub.choices["report"].set_defaults(func=cmd_report)
