"""``taskstats-fast snapshot``: every live process (or thread) at once, to one file."""

from __future__ import annotations

import argparse
import os
import time
from typing import Any, Optional, Tuple

from .common import EXIT_OK, UsageError, add_command

__all__ = ["add_parser", "run", "output_file"]


def add_parser(subparsers: Any) -> None:
    from .. import recording
    extensions = ", ".join(recording.EXTENSIONS.values())
    p = add_command(subparsers, "snapshot", help="write every live process (or thread) to a file",
                    description="Query every live process (or thread) at once and write the "
                                "records to one file, with metadata.")
    p.add_argument("-o", "--output", required=True, metavar="PATH",
                   help="where to write. A directory (one that exists, or a path ending in /) "
                        "gets a new file snapshot-<UTC time>.<format> inside it; a name ending "
                        f"in {extensions} is that file, in that format; a name without an "
                        "extension gets the format's. Other extensions are refused")
    p.add_argument("--format", choices=recording.FORMATS,
                   help="file format (default: from the extension; else parquet when pyarrow "
                        "is installed, else npy)")
    scope = p.add_mutually_exclusive_group()
    scope.add_argument("--threads", action="store_true",
                       help="one record per thread instead of one per process")
    scope.add_argument("--aggregate", action="store_true",
                       help="per-process totals over all threads (TGID records: CPU, switches and "
                            "delays summed; no identity, memory or I/O fields)")
    p.set_defaults(run=run)


def output_file(output: str, fmt: Optional[str] = None,
                now: Optional[time.struct_time] = None) -> Tuple[str, str]:
    """The file ``-o output`` names and its format: a directory (existing, or ending in /)
    means a new file inside it, a known extension means that file, no extension gets the
    format's; an unknown extension is a ``UsageError``."""
    from .. import recording
    if output.endswith(("/", os.sep)) or os.path.isdir(output):
        fmt = fmt or recording.default_format()
        stamp = time.strftime("%Y%m%dT%H%M%SZ", now or time.gmtime())
        path = os.path.join(output, f"snapshot-{stamp}{recording.EXTENSIONS[fmt]}")
        again = 1
        while os.path.exists(path):   # two snapshots in one second: never overwrite
            path = os.path.join(output, f"snapshot-{stamp}-{again}{recording.EXTENSIONS[fmt]}")
            again += 1
        return path, fmt
    extension = os.path.splitext(output)[1]
    if not extension:
        fmt = fmt or recording.default_format()
        return output + recording.EXTENSIONS[fmt], fmt
    if recording.format_of_path(output) is None:
        raise UsageError(f"-o {output}: {extension!r} is not an extension taskstats-fast writes: "
                         f"end the name in {', '.join(recording.EXTENSIONS.values())}, or give a "
                         "directory (ending in /) to put a new file in")
    return output, recording.detect_format(output, fmt)


def run(args: argparse.Namespace) -> int:
    from .. import recording
    from ..kernel.connection import Connection
    path, fmt = output_file(args.output, args.format)
    recording.require_format(fmt)   # before the query, not after it
    recording.check_writable(path)  # likewise: a real file is created there (and removed)
    with Connection(warn_delayacct=False) as conn:
        lookup = conn.snapshot(threads=args.threads, aggregate=args.aggregate)
    what = "threads" if args.threads else "processes"
    path = recording.write_file(path, lookup.records, fmt, metadata={
        "source": "snapshot", "scope": "aggregate" if args.aggregate else what,
        "asked": int(len(lookup.ids)), "exited_before_query": int(len(lookup.missing))})
    print(f"wrote {len(lookup.records):,} {what}{' (per-process totals)' if args.aggregate else ''}"
          f" to {path} ({fmt}); {len(lookup.missing):,} exited between listing and query")
    return EXIT_OK
