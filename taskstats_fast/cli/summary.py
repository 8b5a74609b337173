"""``taskstats-fast summary``: the top commands by CPU, delays and I/O in recorded files."""

from __future__ import annotations

import argparse
import json
from typing import Any

from .common import EXIT_OK, UsageError, add_command, positive_int, say

__all__ = ["add_parser", "run"]


def add_parser(subparsers: Any) -> None:
    p = add_command(subparsers, "summary",
                    help="top commands by CPU, delays and I/O in recorded files",
                    description="Summarise recorded files or dataset directories: the top "
                                "commands by CPU time, by each delay class and by I/O "
                                "(over their PID records, one per exited thread).")
    p.add_argument("paths", nargs="+", metavar="PATH",
                   help="recorded files (.parquet, .arrow, .npy, .csv) or directories of them")
    p.add_argument("--top", type=positive_int, default=10, metavar="N",
                   help="rows per table (default: %(default)s)")
    p.add_argument("--json", action="store_true", help="print the tables as JSON")
    p.add_argument("--plot", metavar="PNG",
                   help="also draw the exit rate over time and the delay distributions to this "
                        "PNG file (needs taskstats_fast[plot], i.e. matplotlib)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from .. import recording, report
    files = recording.find_files(args.paths)
    if not files:
        raise UsageError(f"no recorded files (.parquet, .arrow, .npy, .csv) in "
                         f"{', '.join(args.paths)}")
    if args.plot:   # fail before the work if matplotlib is missing
        from ..frames import require
        require("matplotlib", "plot", "--plot")
    metadata = [recording.read_metadata(f) for f in files]
    cols = recording.read_columns(files, report.SUMMARY_COLUMNS)
    summary = report.summarize(cols, top=args.top, metadata=metadata)
    if args.json:
        print(json.dumps(report.summary_json(summary), indent=2))
    else:
        print(report.format_summary(summary), end="")
    if args.plot:
        report.plot_summary(cols, args.plot, title=f"taskstats_fast: {', '.join(args.paths)}")
        say(f"wrote {args.plot}")
    return EXIT_OK
