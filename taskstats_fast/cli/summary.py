"""``taskstats-fast summary``: the top commands by CPU, delays and I/O in recorded files."""

from __future__ import annotations

import argparse
import json
from typing import Any

from .common import EXIT_ERROR, EXIT_OK, UsageError, add_command, positive_int, say
from ..schema import require

__all__ = ["add_parser", "run"]


def add_parser(subparsers: Any) -> None:
    p = add_command(subparsers, "summary",
                    help="top commands by CPU, delays and I/O in recorded files",
                    description="Summarise recorded files or dataset directories: the top "
                                "commands by CPU time, by each delay class and by I/O. In an "
                                "exit recording (`record`) the rows are exits (PID records, one "
                                "per exited thread) over the recording window; in a snapshot "
                                "they are the live tasks at that moment; an interval recording (`record --interval`) "
                                "also shows its pressure stalls (PSI, kept under DIR/_psi): the "
                                "system's as % of the time covered and the cgroups that stalled "
                                "most. A file that cannot be "
                                "read is named and skipped, the others are summarised, and the "
                                "exit code is 1.")
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
    if not recording.find_files(args.paths):
        raise UsageError(f"no recorded files (.parquet, .arrow, .npy, .csv) in "
                         f"{', '.join(args.paths)}")
    if args.plot:   # fail before the work if matplotlib is missing
        require("matplotlib", "plot", "--plot")
    summary = recording.summarize(args.paths, top=args.top)
    if args.plot and summary["kind"] == recording.INTERVALS:
        raise UsageError("--plot draws the exits of an exit recording; this is an interval "
                         "recording (record --interval): drop --plot, or plot read_frame's rows")
    if args.json:
        print(json.dumps(report.summary_json(summary), indent=2))
    else:
        print(report.format_summary(summary), end="")
    if args.plot:
        report.plot_summary(summary, args.plot, title=f"taskstats_fast: {', '.join(args.paths)}")
        say(f"wrote {args.plot}")
    for damaged in summary["damaged"]:
        say(f"skipped {damaged['error']} (the other files are summarised above; move it "
            "aside or delete it)")
    return EXIT_ERROR if summary["damaged"] else EXIT_OK
