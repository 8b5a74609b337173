"""The ``taskstats-fast`` command (also ``python -m taskstats_fast``).

This package owns the command line and nothing else: it parses arguments and prints.  Each
subcommand is one module exposing ``add_parser(subparsers)`` and ``run(args)``; ``SUBCOMMANDS``
lists them in the order ``--help`` shows, so a new subcommand is a new module plus one entry
there.  ``common`` holds what they share (exit codes, option types, one-line errors).  The work
itself is done by the library: ``Connection`` / ``ExitListener`` (the kernel), ``recording``
(files) and ``report`` (text, tables, plots).
"""

from __future__ import annotations

import argparse
import sys
import warnings
from typing import Optional, Sequence

from . import query, record, serve, snapshot, summary, top
from .common import (EXIT_CODES_HELP, EXIT_ERROR, EXIT_INTERRUPTED, EXIT_MISSING_EXTRA,
                     EXIT_NO_SUCH_TASK, EXIT_OK, EXIT_PERMISSION, EXIT_USAGE, PROG, run_guarded,
                     show_warning, wrap)
from .output import SurvivingStderr
from .record import DEFAULT_RECORD_PATH

__all__ = ["main", "build_parser", "SUBCOMMANDS", "DEFAULT_COMMAND", "EXIT_OK", "EXIT_ERROR",
           "EXIT_USAGE", "EXIT_PERMISSION", "EXIT_NO_SUCH_TASK", "EXIT_MISSING_EXTRA",
           "EXIT_INTERRUPTED", "DEFAULT_RECORD_PATH"]

#: The subcommand modules, in ``--help`` order.
SUBCOMMANDS = (query, snapshot, record, summary, top, serve)
#: What the bare command (or one starting with an option) runs.
DEFAULT_COMMAND = "record"


class _Version(argparse._VersionAction):
    """``--version``: the version, then what the C core was built as (asked only when shown,
    so that parsing never needs the extension)."""

    def __call__(self, parser, namespace, values, option_string=None):
        from .._native import build_info
        parser._print_message(f"{parser.prog} {self.version.split()[-1]}\n{build_info()}\n", sys.stdout)
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``taskstats-fast`` (every option documented in ``--help``)."""
    from .._version import __version__
    parser = argparse.ArgumentParser(
        prog=PROG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=wrap(
            "Linux per-task accounting (TASKSTATS): CPU time, scheduling / I/O / memory delays, "
            "I/O bytes, page faults and memory peaks of tasks, read from the kernel.\n\n"
            f"Without a command, records every task that exits to ./{DEFAULT_RECORD_PATH}/ until "
            "Ctrl-C (the same as `record` with its defaults). Needs root or CAP_NET_ADMIN."),
        epilog=(f"examples:\n"
                f"  {PROG} pid $$                      what has this shell cost so far?\n"
                f"  {PROG} record --seconds 60 -o exits  one minute of exits to ./exits/\n"
                f"  {PROG} summary exits --plot exits.png\n"
                f"  {PROG} snapshot -o now.parquet       every live process, now\n"
                f"  {PROG} top                           live CPU, delays, I/O, exits\n\n"
                + EXIT_CODES_HELP))
    parser.add_argument("--version", action=_Version, version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in SUBCOMMANDS:
        module.add_parser(subparsers)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run ``taskstats-fast`` with ``argv`` (default ``sys.argv[1:]``); returns the exit code."""
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or (argv[0].startswith("-") and argv[0] not in ("-h", "--help", "--version")):
        argv = [DEFAULT_COMMAND, *argv]   # the bare command records with the defaults
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    warnings.showwarning = show_warning
    if getattr(args, "survives_closed_stderr", False):
        with SurvivingStderr():
            return run_guarded(args.run, args)
    return run_guarded(args.run, args)
