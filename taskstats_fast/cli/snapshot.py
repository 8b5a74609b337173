"""``taskstats-fast snapshot``: every live process (or thread) at once, to one file."""

from __future__ import annotations

import argparse
from typing import Any

from .common import EXIT_OK, add_command

__all__ = ["add_parser", "run"]


def add_parser(subparsers: Any) -> None:
    from .. import recording
    p = add_command(subparsers, "snapshot", help="write every live process (or thread) to a file",
                    description="Query every live process (or thread) at once and write the "
                                "records to one file, with metadata.")
    p.add_argument("-o", "--output", required=True, metavar="FILE",
                   help="file to write: .parquet, .arrow, .npy or .csv (or use --format; without "
                        "an extension the format's is added)")
    p.add_argument("--format", choices=recording.FORMATS, help="file format (default: from FILE)")
    scope = p.add_mutually_exclusive_group()
    scope.add_argument("--threads", action="store_true",
                       help="one record per thread instead of one per process")
    scope.add_argument("--aggregate", action="store_true",
                       help="per-process totals over all threads (TGID records: CPU, switches and "
                            "delays summed; no identity, memory or I/O fields)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from .. import recording
    from .. import Connection
    fmt = recording.detect_format(args.output, args.format)
    recording.require_format(fmt)   # before the (long) query, not after it
    recording.prepare_output(args.output)
    with Connection(warn_delayacct=False) as conn:
        lookup = conn.snapshot(threads=args.threads, aggregate=args.aggregate)
    what = "threads" if args.threads else "processes"
    path = recording.write_file(args.output, lookup.records, fmt, metadata={
        "source": "snapshot", "scope": "aggregate" if args.aggregate else what,
        "asked": int(len(lookup.ids)), "exited_before_query": int(len(lookup.missing))})
    print(f"wrote {len(lookup.records):,} {what}{' (per-process totals)' if args.aggregate else ''}"
          f" to {path} ({fmt}); {len(lookup.missing):,} exited between listing and query")
    return EXIT_OK
