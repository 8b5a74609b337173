"""The ``taskstats-fast`` command (also ``python -m taskstats_fast``).

This module owns the command line: argument parsing and help, what each subcommand prints, the
live status line of ``record``, signal handling (Ctrl-C / SIGTERM stop a recording cleanly), and
turning expected failures into one-line messages with documented exit codes.  The work itself is
done by ``Connection`` / ``ExitListener`` (the kernel), ``recording`` (files) and ``report``
(text, tables, plots).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import sys
import time
import warnings
from typing import Any, List, Optional, Sequence, TextIO


from . import recording, report
from .errors import (CpumaskError, MissingExtraError, NamespaceError, NoSuchTaskError,
                     PermissionDeniedError, TaskstatsError)

__all__ = ["main", "build_parser", "EXIT_OK", "EXIT_ERROR", "EXIT_USAGE", "EXIT_PERMISSION",
           "EXIT_NO_SUCH_TASK", "EXIT_MISSING_EXTRA", "EXIT_INTERRUPTED", "DEFAULT_RECORD_PATH"]

EXIT_OK = 0
EXIT_ERROR = 1            #: the kernel or the file system refused something (message says what)
EXIT_USAGE = 2            #: bad arguments
EXIT_PERMISSION = 3       #: needs root / CAP_NET_ADMIN, or the initial namespaces
EXIT_NO_SUCH_TASK = 4     #: pid/tgid: at least one id has no task (the others are reported)
EXIT_MISSING_EXTRA = 5    #: an optional dependency is missing (message names the pip extra)
EXIT_INTERRUPTED = 130    #: Ctrl-C outside ``record`` (where Ctrl-C is the normal way to stop)

#: Where ``record`` (and the bare command) writes when no ``-o`` is given.
DEFAULT_RECORD_PATH = "taskstats-exits"
#: Rotation of ``record`` into a directory: size on disk and age of a file.
DEFAULT_ROTATE_MB = 256.0
DEFAULT_ROTATE_SECONDS = 3600.0

PROG = "taskstats-fast"

_EXIT_CODES_HELP = f"""\
exit codes:
  {EXIT_OK}    success
  {EXIT_ERROR}    the kernel or the file system refused something (the message says what)
  {EXIT_USAGE}    bad arguments
  {EXIT_PERMISSION}    not permitted: TASKSTATS needs root or CAP_NET_ADMIN in the initial
       user namespace (the exit stream also the initial pid and network namespaces)
  {EXIT_NO_SUCH_TASK}    pid/tgid: some ids have no task (exited?); the others are still reported
  {EXIT_MISSING_EXTRA}    an optional dependency is missing: pip install 'taskstats_fast[EXTRA]'
  {EXIT_INTERRUPTED}  interrupted by Ctrl-C (not for record, where Ctrl-C is how you stop)
"""


class _UsageError(Exception):
    """Bad arguments found after parsing (exit 2)."""


# ---- argument parsing ----------------------------------------------------------------------
def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0 or value != value or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} must be a positive number")
    return value


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} must be 0 or a positive number")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 1")
    return value


def _task_id(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a process or thread id") from None
    if not 0 < value <= 0xFFFFFFFF:
        raise argparse.ArgumentTypeError(f"{text!r} is not a valid id (1 .. 4294967295)")
    return value


def _add_record_options(p: argparse.ArgumentParser, *, default_path: bool) -> None:
    p.add_argument("-o", "--output", metavar="PATH", default=DEFAULT_RECORD_PATH if default_path
                   else None, required=not default_path,
                   help="where to write. A path without a file extension is a dataset directory: "
                        "hive-partitioned PATH/host=HOST/date=YYYY-MM-DD/part-*.EXT files that "
                        "rotate. A path ending in .parquet, .arrow, .npy or .csv is one file "
                        "(no rotation)" + (f" (default: ./{DEFAULT_RECORD_PATH})" if default_path
                                           else ""))
    p.add_argument("--format", choices=recording.FORMATS,
                   help="file format (default: from the extension; for a directory parquet when "
                        "pyarrow is installed, else npy). parquet/arrow/csv need "
                        "taskstats_fast[arrow]; npy needs nothing extra")
    p.add_argument("--seconds", type=_positive_float, metavar="N",
                   help="stop after N seconds (default: run until Ctrl-C or SIGTERM)")
    p.add_argument("--cpus", metavar="LIST",
                   help="record exits on these CPUs only, as a CPU list like 0-3,8 "
                        "(default: every possible CPU)")
    p.add_argument("--shards", type=_positive_int, metavar="N",
                   help="listen with N sockets, each serving a contiguous group of CPUs "
                        "(default: one socket per CPU, which makes loss counts exact per CPU)")
    p.add_argument("--rcvbuf", type=_positive_int, metavar="BYTES",
                   help="receive buffer per socket (default: room for ~8,000 exits per CPU)")
    p.add_argument("--rotate-mb", type=_non_negative_float, metavar="MB",
                   help="start a new file when the current one reaches MB megabytes on disk; "
                        f"0 = never (default: {DEFAULT_ROTATE_MB:g}; directories only)")
    p.add_argument("--rotate-seconds", type=_non_negative_float, metavar="S",
                   help="start a new file every S seconds, so finished files appear regularly; "
                        f"0 = never (default: {DEFAULT_ROTATE_SECONDS:g}; directories only; files "
                        "also rotate at midnight UTC)")
    p.add_argument("--flush-records", type=_positive_int, default=65536, metavar="N",
                   help="records held in memory before they are written out (a Parquet row "
                        "group; default: %(default)s)")
    status = p.add_mutually_exclusive_group()
    status.add_argument("--status", dest="status", action="store_true", default=None,
                        help="print the status line even when stderr is not a terminal "
                             "(then as a full line every 5 s)")
    status.add_argument("--no-status", dest="status", action="store_false",
                        help="never print the status line")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``taskstats-fast`` (every option documented in ``--help``)."""
    from . import __version__
    parser = argparse.ArgumentParser(
        prog=PROG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Linux per-task accounting (TASKSTATS): CPU time, scheduling / I/O / memory delays,\n"
            "I/O bytes, page faults and memory peaks of tasks, read from the kernel.\n\n"
            f"Without a command, records every task that exits to ./{DEFAULT_RECORD_PATH}/ until\n"
            "Ctrl-C (the same as `record` with its defaults). Needs root or CAP_NET_ADMIN."),
        epilog=(f"examples:\n"
                f"  {PROG} pid $$                      what has this shell cost so far?\n"
                f"  {PROG} record --seconds 60 -o exits  one minute of exits to ./exits/\n"
                f"  {PROG} summary exits --plot exits.png\n"
                f"  {PROG} snapshot -o now.parquet       every live process, now\n\n"
                + _EXIT_CODES_HELP))
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    for kind, what in (("pid", "threads (a pid names one thread: the main thread of a process)"),
                       ("tgid", "processes, summing all their threads")):
        p = sub.add_parser(kind, help=f"report on live {what.split(' (')[0].split(',')[0]}",
                           description=f"Report accounting of live {what}: CPU, delays with "
                                       "count/total/average/max/min, I/O, context switches, page "
                                       "faults, memory peaks.",
                           epilog=_EXIT_CODES_HELP,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        p.add_argument("ids", nargs="+", type=_task_id, metavar=kind.upper(),
                       help=f"{kind}s to report on")
        p.add_argument("--json", action="store_true",
                       help="print JSON instead of text: {kind, tasks: [...], missing: [...], "
                            "delayacct_enabled}; task keys are the pandas/Arrow column names")
        p.add_argument("--timeout", type=_positive_float, default=5.0, metavar="S",
                       help="seconds to wait for the kernel's replies (default: %(default)g)")
        p.set_defaults(run=_run_query)

    p = sub.add_parser("snapshot", help="write every live process (or thread) to a file",
                       description="Query every live process (or thread) at once and write the "
                                   "records to one file, with metadata.",
                       epilog=_EXIT_CODES_HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
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
    p.set_defaults(run=_run_snapshot)

    p = sub.add_parser("record", help="record every task that exits (the exit stream) to files",
                       description="Record every task that exits, as the kernel reports it, to "
                                   "files, until --seconds pass or Ctrl-C / SIGTERM (which flush "
                                   "and close cleanly: every record received is written). A live "
                                   "status line goes to stderr when it is a terminal.",
                       epilog=_EXIT_CODES_HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_record_options(p, default_path=True)
    p.set_defaults(run=_run_record)

    p = sub.add_parser("summary", help="top commands by CPU, delays and I/O in recorded files",
                       description="Summarise recorded files or dataset directories: the top "
                                   "commands by CPU time, by each delay class and by I/O "
                                   "(over their PID records, one per exited thread).",
                       epilog=_EXIT_CODES_HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("paths", nargs="+", metavar="PATH",
                   help="recorded files (.parquet, .arrow, .npy, .csv) or directories of them")
    p.add_argument("--top", type=_positive_int, default=10, metavar="N",
                   help="rows per table (default: %(default)s)")
    p.add_argument("--json", action="store_true", help="print the tables as JSON")
    p.add_argument("--plot", metavar="PNG",
                   help="also draw the exit rate over time and the delay distributions to this "
                        "PNG file (needs taskstats_fast[plot], i.e. matplotlib)")
    p.set_defaults(run=_run_summary)
    return parser


# ---- output helpers ----------------------------------------------------------------------
def _say(text: str, stream: Optional[TextIO] = None) -> None:
    stream = stream or sys.stderr
    print(f"{PROG}: {text}", file=stream, flush=True)


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    _say(f"warning: {message}")


def _proc_comm(pid: int) -> Optional[str]:
    try:
        with open(f"/proc/{pid}/comm", encoding="utf-8", errors="replace") as f:
            return f.read().strip() or None
    except OSError:
        return None


# ---- pid / tgid --------------------------------------------------------------------------
def _run_query(args: argparse.Namespace) -> int:
    from .connection import Connection
    from .kernel.delayacct import delayacct_enabled
    with Connection(timeout=args.timeout, warn_delayacct=False) as conn:
        lookup = conn.pids(args.ids) if args.command == "pid" else conn.tgids(args.ids)
    records = lookup.records
    found_ids = lookup.ids[lookup.found]
    comms = [_proc_comm(int(i)) for i in found_ids]
    enabled = delayacct_enabled()
    if args.json:
        doc = {"kind": args.command,
               "tasks": report.task_json(records, comms=comms),
               "missing": [int(i) for i in lookup.missing],
               "delayacct_enabled": enabled}
        print(json.dumps(doc, indent=2))
    elif len(records):
        print(report.task_report(records, delayacct_enabled=enabled, comms=comms))
    for missing in lookup.missing:
        _say(f"no task with {args.command} {int(missing)}: it may have exited "
             "(or never existed)")
    return EXIT_NO_SUCH_TASK if len(lookup.missing) else EXIT_OK


# ---- snapshot ----------------------------------------------------------------------------
def _run_snapshot(args: argparse.Namespace) -> int:
    from .connection import Connection
    fmt = recording.detect_format(args.output, args.format)
    recording._require_format(fmt)   # before the (long) query, not after it
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


# ---- record ------------------------------------------------------------------------------
class _StatusLine:
    """The live one-line status on stderr: overwritten in place on a terminal, else one full
    line every 5 s (only with --status)."""

    def __init__(self, stream: TextIO, enabled: Optional[bool]):
        tty = stream.isatty()
        self.stream = stream
        self.enabled = tty if enabled is None else enabled
        self.tty = tty
        self.interval = 0.5 if tty else 5.0
        self._last_count = 0
        self._last_time = time.monotonic()
        self._next = self._last_time + min(self.interval, 1.0)
        self._width = 0

    def update(self, now: float, received: int, lost: int, written: int, buffered: int,
               elapsed: float, force: bool = False) -> None:
        if not self.enabled or (now < self._next and not force):
            return
        dt = now - self._last_time
        rate = (received - self._last_count) / dt if dt > 0 else 0.0
        self._last_count, self._last_time, self._next = received, now, now + self.interval
        text = (f"{elapsed:7.1f} s  {rate:9,.1f} records/s  total {received:,}  lost {lost:,}  "
                f"written {report.format_bytes(written)}"
                + (f" (+{buffered:,} buffered)" if buffered else ""))
        if self.tty:
            pad = max(0, self._width - len(text))
            self.stream.write("\r" + text + " " * pad)
            self._width = len(text)
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def clear(self) -> None:
        if self.enabled and self.tty and self._width:
            self.stream.write("\r" + " " * self._width + "\r")
            self.stream.flush()
            self._width = 0


def _run_record(args: argparse.Namespace) -> int:
    from .kernel import cpumask
    from .kernel.listener import ExitListener

    fmt = recording.detect_format(args.output, args.format)
    dataset = recording.is_dataset_path(args.output)
    if not dataset and (args.rotate_mb or args.rotate_seconds):
        raise _UsageError(f"{args.output} is a single file, which does not rotate: give a "
                          "directory (a path without an extension) to use --rotate-mb / "
                          "--rotate-seconds")
    rotate_mb = DEFAULT_ROTATE_MB if args.rotate_mb is None else args.rotate_mb
    rotate_seconds = DEFAULT_ROTATE_SECONDS if args.rotate_seconds is None else args.rotate_seconds
    rotate_bytes = int(rotate_mb * 1024 * 1024) if dataset else None
    rotate_seconds = rotate_seconds if dataset else None
    recording._require_format(fmt)
    stop: List[str] = []

    def on_signal(signum: int, frame: Any) -> None:
        stop.append(signal.Signals(signum).name)

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    listener = None
    recorder: Optional[recording.Recorder] = None
    writer: Optional[recording.BackgroundWriter] = None
    status = _StatusLine(sys.stderr, args.status)
    try:
        # The listener first: when it cannot register (no privilege) nothing is left on disk.
        listener = ExitListener(cpus=args.cpus, shards=args.shards, rcvbuf=args.rcvbuf)
        recorder = recording.Recorder(args.output, fmt, rotate_bytes=rotate_bytes,
                                      rotate_seconds=rotate_seconds,
                                      flush_records=args.flush_records,
                                      metadata={"source": "exit stream"})
        started = time.monotonic()
        cpus = cpumask.format(listener.cpus)
        recorder.metadata.update(cpus=cpus, nr_cpus=len(listener.cpus),
                                 sockets=len(listener.shards))
        # Files are written on another thread: a Parquet row group can take a second to
        # compress, and the sockets must keep being drained meanwhile.
        writer = recording.BackgroundWriter(recorder)
        where = (os.path.join(args.output, f"host={recorder.hostname}",
                              f"date={time.strftime('%Y-%m-%d', time.gmtime())}", "")
                 if dataset else args.output)
        until = f"for {args.seconds:g} s" if args.seconds else "until Ctrl-C"
        _say(f"recording every task that exits on CPUs {cpus} to {where} ({fmt}), {until}")
        deadline = started + args.seconds if args.seconds else None
        while not stop:
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                break
            wait = 0.25 if deadline is None else max(0.0, min(0.25, deadline - now))
            batch = listener.read(timeout=wait)   # a fresh array: handed over without a copy
            if len(batch):
                writer.write(batch, copy=False)
            else:
                writer.tick()
            now = time.monotonic()
            if status.enabled and now >= status._next:
                stats = listener.stats
                writer.update_counters(_loss_counters(stats))
                status.update(now, stats.delivered, stats.lost, writer.bytes_written,
                              writer.buffered, now - started)
        stopped = time.monotonic()
        # Stopping: stop() deregisters and hands back everything still queued on the sockets,
        # including exits that raced the deregistration.
        tail = listener.stop()
        if len(tail):
            writer.write(tail, copy=False)
        final = listener.stats
        writer.update_counters(_loss_counters(final))
        files = writer.close()
    except BaseException:
        status.clear()
        if listener is not None:
            listener.close()
        try:   # whatever was received is written even on the way out
            if writer is not None:
                writer.close()
        except Exception as e:  # the original error matters more
            _say(f"could not finish the output: {e}")
        raise
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    status.clear()
    assert recorder is not None
    elapsed = stopped - started
    reason = f" (stopped by {stop[0]})" if stop else ""
    rate = recorder.records_written / elapsed if elapsed > 0 else 0.0
    usage = resource.getrusage(resource.RUSAGE_SELF)
    _say(f"recorded {recorder.records_written:,} records in {elapsed:.1f} s ({rate:,.1f}/s){reason}"
         f" to {len(files)} file(s), {report.format_bytes(recorder.bytes_written)}: "
         + (os.path.commonpath(files) if len(files) > 1 else files[0])
         + f"; this process used {usage.ru_utime + usage.ru_stime:.2f} s of CPU")
    if final.lost or final.discarded:
        _say(f"lost {final.lost:,} exit messages (receive buffer full: raise --rcvbuf, or read "
             f"faster) and {final.discarded:,} records that arrived while closing")
    else:
        _say("nothing was lost")
    _say(f"next: {PROG} summary {args.output}")
    return EXIT_OK


def _loss_counters(stats: Any) -> dict:
    return {"received": stats.received, "lost": stats.lost, "dropped": stats.dropped,
            "truncated": stats.truncated, "overruns": stats.overruns,
            "discarded": stats.discarded}


# ---- summary -----------------------------------------------------------------------------
def _run_summary(args: argparse.Namespace) -> int:
    files = recording.find_files(args.paths)
    if not files:
        raise _UsageError(f"no recorded files (.parquet, .arrow, .npy, .csv) in "
                          f"{', '.join(args.paths)}")
    if args.plot:   # fail before the work if matplotlib is missing
        from .frames import require
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
        _say(f"wrote {args.plot}")
    return EXIT_OK


# ---- entry point -------------------------------------------------------------------------
def _message(error: BaseException) -> str:
    """The text of an expected failure, without Python's "[Errno N]" prefix."""
    if isinstance(error, OSError) and error.strerror:
        if error.filename and not isinstance(error, TaskstatsError):
            return f"{error.filename}: {error.strerror}"
        return str(error.strerror)
    return str(error)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run ``taskstats-fast`` with ``argv`` (default ``sys.argv[1:]``); returns the exit code."""
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or (argv[0].startswith("-") and argv[0] not in ("-h", "--help", "--version")):
        argv = ["record", *argv]   # the bare command records with the defaults
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    warnings.showwarning = _show_warning
    try:
        return args.run(args)
    except _UsageError as e:
        _say(str(e))
        return EXIT_USAGE
    except (PermissionDeniedError, NamespaceError) as e:
        _say(_message(e))
        return EXIT_PERMISSION
    except NoSuchTaskError as e:
        _say(_message(e))
        return EXIT_NO_SUCH_TASK
    except MissingExtraError as e:
        _say(str(e))
        return EXIT_MISSING_EXTRA
    except CpumaskError as e:
        _say(f"--cpus: {e}")
        return EXIT_USAGE
    except KeyboardInterrupt:
        _say("interrupted")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # stdout went away (e.g. `| head`): not an error worth a message
        try:
            sys.stdout = open(os.devnull, "w")
        except OSError:
            pass
        return EXIT_OK
    except TaskstatsError as e:
        _say(_message(e))
        return EXIT_ERROR
    except ValueError as e:
        _say(str(e))
        return EXIT_USAGE
    except OSError as e:   # files: "path: what went wrong"
        _say(_message(e))
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
