"""``taskstats-fast record`` (also the bare command): every task that exits, to files, with a
live status line on stderr and a closing account of what was written and lost; with
``--interval SECS``, what every task (or process, ``--by process``) used in each interval
instead (``recording.record_intervals``)."""

from __future__ import annotations

import argparse
import os
import resource
import signal
import sys
import threading
import time
from typing import Any, Callable, Dict, List, Optional, TextIO

from .common import (EXIT_OK, PROG, UsageError, add_command, add_privilege_options,
                     check_privilege_options, drop_privileges_as_asked, non_negative_float,
                     positive_float, positive_int, say)

__all__ = ["add_parser", "run", "add_record_options", "DEFAULT_RECORD_PATH", "DEFAULT_ROTATE_MB",
           "DEFAULT_ROTATE_SECONDS", "StatusLine"]

#: Where ``record`` (and the bare command) writes when no ``-o`` is given.
DEFAULT_RECORD_PATH = "taskstats-exits"
#: Rotation of ``record`` into a directory: size on disk and age of a file.
DEFAULT_ROTATE_MB = 256.0
DEFAULT_ROTATE_SECONDS = 3600.0


def add_record_options(p: argparse.ArgumentParser, *, default_path: bool) -> None:
    from .. import recording
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
    p.add_argument("--seconds", type=positive_float, metavar="N",
                   help="stop after N seconds (default: run until Ctrl-C, SIGTERM or SIGHUP)")
    p.add_argument("--cpus", metavar="LIST",
                   help="record exits on these CPUs only, as a CPU list like 0-3,8 "
                        "(default: every possible CPU)")
    p.add_argument("--shards", type=positive_int, metavar="N",
                   help="listen with N sockets, each serving a contiguous group of CPUs "
                        "(default: one socket per CPU, which makes loss counts exact per CPU)")
    p.add_argument("--rcvbuf", type=positive_int, metavar="BYTES",
                   help="receive buffer per socket (default: room for ~8,000 exits per CPU)")
    p.add_argument("--rotate-mb", type=non_negative_float, metavar="MB",
                   help="start a new file when the current one reaches MB megabytes on disk; "
                        f"0 = never (default: {DEFAULT_ROTATE_MB:g}; directories only)")
    p.add_argument("--rotate-seconds", type=non_negative_float, metavar="S",
                   help="start a new file every S seconds, so finished files appear regularly; "
                        f"0 = never (default: {DEFAULT_ROTATE_SECONDS:g}; directories only; files "
                        "also rotate at midnight UTC)")
    p.add_argument("--keep-days", type=positive_float, metavar="DAYS",
                   help="after each rotation, delete complete files of this host older than DAYS "
                        "days (never the file being written; directories only)")
    p.add_argument("--max-total-mb", type=positive_float, metavar="MB",
                   help="after each rotation, delete this host's oldest complete files until they "
                        "take at most MB megabytes, an interval recording's PSI under PATH/_psi "
                        "counted with them (never the newest of either, nor the file being "
                        "written; directories only)")
    p.add_argument("--flush-records", type=positive_int, default=65536, metavar="N",
                   help="records held in memory at most before they are written out and "
                        "fsynced (default: %(default)s)")
    p.add_argument("--flush-seconds", type=positive_float, default=1.0, metavar="S",
                   help="write out and fsync what was received at least every S seconds: after "
                        "a crash, a kill -9 or a power cut at most the last S seconds are lost, "
                        "and the next record on the same output recovers the rest "
                        "(default: %(default)g)")
    status = p.add_mutually_exclusive_group()
    status.add_argument("--status", dest="status", action="store_true", default=None,
                        help="print the status line even when stderr is not a terminal "
                             "(then as a full line every 5 s)")
    status.add_argument("--no-status", dest="status", action="store_false",
                        help="never print the status line")
    add_privilege_options(p)


def add_parser(subparsers: Any) -> None:
    p = add_command(subparsers, "record",
                    help="record every task that exits (the exit stream) to files",
                    description="Record every task that exits, as the kernel reports it, to "
                                "files, until --seconds pass or Ctrl-C / SIGTERM / SIGHUP (which "
                                "flush and close cleanly: every record received is written). A "
                                "live status line goes to stderr when it is a terminal. When "
                                "stderr is closed, recording goes on: one line says so to the "
                                "system log (/dev/log), status lines are dropped and the closing "
                                "counts go to the system log.")
    add_record_options(p, default_path=True)
    g = p.add_argument_group("accounting intervals")
    g.add_argument("--interval", type=positive_float, metavar="SECS",
                   help="instead of exits, record what every task used in each SECS-second "
                        "interval (deltas of CPU, delays, I/O; one row per task and interval, "
                        "stamped interval_start/interval_end); into a directory, each interval's "
                        "pressure stalls (PSI) too, per cgroup and system-wide, under PATH/_psi")
    g.add_argument("--by", choices=("task", "process"), default="task",
                   help="with --interval: one row per task (thread), or per process with its "
                        "threads summed (default: %(default)s)")
    # a closed stderr must not stop a recording (cli/output.py; main() wraps stderr)
    p.set_defaults(run=run, survives_closed_stderr=True)


class SignalStop:
    """SIGINT, SIGTERM and SIGHUP set ``event`` (and name themselves in ``stopped_by``) until
    ``restore`` puts the previous handlers back: a recording stops cleanly, files closed.  SIGHUP
    is an ssh session or terminal going away, which must not cost what was recorded."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.stopped_by: List[str] = []
        self._previous = {s: signal.signal(s, self._on_signal)
                          for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}

    def _on_signal(self, signum: int, frame: Any) -> None:
        self.stopped_by.append(signal.Signals(signum).name)
        self.event.set()

    def restore(self) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)


class StatusLine:
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
        self.next_due = self._last_time + min(self.interval, 1.0)
        self._width = 0

    def update(self, now: float, received: int, lost: int, written: int, buffered: int,
               elapsed: float, force: bool = False) -> None:
        from ..report import format_bytes
        if not self.enabled or (now < self.next_due and not force):
            return
        dt = now - self._last_time
        rate = (received - self._last_count) / dt if dt > 0 else 0.0
        self._last_count, self._last_time, self.next_due = received, now, now + self.interval
        text = (f"{elapsed:7.1f} s  {rate:9,.1f} records/s  total {received:,}  lost {lost:,}  "
                f"written {format_bytes(written)}"
                + (f" (+{buffered:,} buffered)" if buffered else ""))
        if self.tty:
            pad = max(0, self._width - len(text))
            self._write("\r" + text + " " * pad)
            self._width = len(text)
        else:
            self._write(text + "\n")

    def _write(self, text: str) -> None:
        # a SurvivingStderr drops status lines once its reader is gone (see cli/output.py)
        write_status = getattr(self.stream, "write_status", None)
        if write_status is not None:
            write_status(text)
        else:
            self.stream.write(text)
            self.stream.flush()

    def progress_options(self) -> Dict[str, Any]:
        """The recording loop's ``progress`` options that keep this line current (none when it
        is off)."""
        if not self.enabled:
            return {}

        def progress(so_far: Any) -> None:   # a recording.RecordResult
            self.update(time.monotonic(), so_far.received, so_far.kernel_lost,
                        so_far.sink.bytes, so_far.sink.buffered, so_far.elapsed)
        return {"progress": progress, "progress_seconds": self.interval}

    def clear(self) -> None:
        if self.enabled and self.tty and self._width:
            self._write("\r" + " " * self._width + "\r")
            self._width = 0


def say_recovery(result: Any) -> None:
    """One line for what recovery found that earlier runs left unfinished (none: nothing)."""
    if result.recovered:
        where = [p for p, _ in result.recovered]
        say(f"recovered {result.records:,} records that an earlier run left unfinished "
            f"(killed or crashed) into {len(where)} file(s) marked recovered: "
            + (os.path.commonpath(where) if len(where) > 1 else where[0])
            + (f" (dropped {result.torn_bytes:,} bytes of torn tails)" if result.torn_bytes
               else ""))
    if result.empty:
        say(f"removed {len(result.empty):,} file(s) an earlier run left before its first "
            "complete record")
    for path, why in result.unreadable:
        say(f"warning: could not recover {path}: {why}")


def run(args: argparse.Namespace) -> int:
    from .. import recording
    from ..kernel import cpumask

    check_privilege_options(args)
    if args.cpus is not None:   # first: a bad or huge list is one line before anything is opened
        cpumask.CpuSet.resolve(args.cpus)
    if args.interval is None and getattr(args, "by", "task") != "task":
        raise UsageError("--by process groups accounting intervals: give --interval SECS too")
    fmt = recording.detect_format(args.output, args.format)
    sink_options = _sink_options(args)
    recording.require_format(fmt)
    # A real file is created (and removed) where the output goes before the listener
    # registers: an unwritable output fails now, not after the first flush, and leaves nothing.
    recording.check_writable(args.output)
    signals = SignalStop()
    deadline: List[float] = []   # --seconds count from the recording loop's first look

    def stop() -> bool:
        if args.seconds and not deadline:
            deadline.append(time.monotonic() + args.seconds)
        return signals.event.is_set() or bool(deadline and time.monotonic() >= deadline[0])

    try:
        if getattr(args, "interval", None) is not None:
            return _run_intervals(args, fmt, stop, signals.stopped_by, **sink_options)
        return _run_exits(args, fmt, stop, signals.stopped_by, **sink_options)
    finally:
        signals.restore()


def _sink_options(args: argparse.Namespace) -> Dict[str, Any]:
    """The ``FileSink`` options of ``record``'s arguments: rotation and retention, which only a
    dataset directory has (a single file given them is a usage error)."""
    from .. import recording
    dataset = recording.is_dataset_path(args.output)
    if not dataset and (args.rotate_mb or args.rotate_seconds):
        raise UsageError(f"{args.output} is a single file, which does not rotate: give a "
                         "directory (a path without an extension) to use --rotate-mb / "
                         "--rotate-seconds")
    if not dataset and (args.keep_days or args.max_total_mb):
        raise UsageError(f"{args.output} is a single file: --keep-days / --max-total-mb delete old "
                         "files of a dataset; give a directory (a path without an extension)")
    retention = recording.RetentionPolicy(
        keep_days=args.keep_days,
        max_total_bytes=None if args.max_total_mb is None else int(args.max_total_mb * 1024 * 1024))
    rotate_mb = DEFAULT_ROTATE_MB if args.rotate_mb is None else args.rotate_mb
    rotate_seconds = DEFAULT_ROTATE_SECONDS if args.rotate_seconds is None else args.rotate_seconds
    return dict(rotate_bytes=int(rotate_mb * 1024 * 1024) if dataset else None,
                rotate_seconds=rotate_seconds if dataset else None, retention=retention,
                flush_records=args.flush_records, flush_seconds=args.flush_seconds)


def _run_exits(args: argparse.Namespace, fmt: str, stop: Callable[[], bool], stopped_by: List[str],
               **sink_options: Any) -> int:
    """``record``: the exit stream into files until --seconds or a signal."""
    from .. import recording
    from ..kernel import cpumask
    from ..kernel.listener import ExitListener

    listener = ahead = None
    status = StatusLine(sys.stderr, args.status)
    try:
        # The sink's imports before the listener registers: from then on the sockets fill
        # unless read, and the imports would compete with the read-ahead for the GIL.
        recording.prepare_writing(fmt)
        # The listener first: when it cannot register (no privilege) nothing is left on disk.
        listener = ExitListener(cpus=args.cpus, shards=args.shards, rcvbuf=args.rcvbuf)
        drop_privileges_as_asked(args)   # the sockets are registered: no root needed from here on
        # Read from now on (a thread: after the privileges, which are each thread's and refuse
        # to drop while others run): making the sink recovers what a killed run left, seconds
        # for a big file, and the sockets fill meanwhile.
        ahead = recording.ReadAhead(listener)
        cpus = cpumask.format(listener.cpus)
        recorder = recording.FileSink(args.output, fmt,
                                      metadata={"source": "exit stream", "cpus": cpus,
                                                "nr_cpus": len(listener.cpus),
                                                "sockets": len(listener.shards)}, **sink_options)
        say_recovery(recorder.recovery)
        # Files are written on another thread: a Parquet row group can take a second to
        # compress, and the sockets must keep being drained meanwhile.
        sink = recording.BackgroundWriter(recorder)
        where = (os.path.join(args.output, f"host={recorder.hostname}",
                              f"date={time.strftime('%Y-%m-%d', time.gmtime())}", "")
                 if recording.is_dataset_path(args.output) else args.output)
        say(f"recording every task that exits on CPUs {cpus} to {where} ({fmt}), {_until(args)}")

        result = recording.record(listener, sink, stop=stop, ahead=ahead,
                                  **status.progress_options())
    except BaseException:
        status.clear()
        if ahead is not None:
            try:
                ahead.take()   # the recording did not start: what it read goes nowhere
            except Exception:   # the error being raised says more
                pass
        if listener is not None:
            listener.close()
        raise
    status.clear()
    elapsed, written = result.elapsed, result.sink.written
    rate = written / elapsed if elapsed > 0 else 0.0
    usage = resource.getrusage(resource.RUSAGE_SELF)
    lost = (f"lost {result.kernel_lost:,} exit messages (receive buffer full: raise --rcvbuf, or "
            f"read faster) and {result.discarded:,} records that arrived while closing"
            if result.kernel_lost or result.discarded else None)
    return _say_closing(
        args, recorder, result.sink, stopped_by,
        f"recorded {written:,} records in {elapsed:.1f} s ({rate:,.1f}/s)",
        f"; this process used {usage.ru_utime + usage.ru_stime:.2f} s of CPU", lost,
        received=result.received, what=f"all {written:,} records received")


def _until(args: argparse.Namespace) -> str:
    return f"for {args.seconds:g} s" if args.seconds else "until Ctrl-C"


def _say_closing(args: argparse.Namespace, recorder: Any, stats: Any, stopped_by: List[str],
                 recorded: str, tail: str, lost: Optional[str], *, received: int, what: str) -> int:
    """The closing account of a recording: what was written where, what was lost and what
    retention deleted; "nothing was lost" only when that was checked."""
    from ..report import format_bytes
    files = stats.files
    reason = f" (stopped by {stopped_by[0]})" if stopped_by else ""
    say(f"{recorded}{reason} to {len(files)} file(s), {format_bytes(stats.bytes)}: "
        + (os.path.commonpath(files) if len(files) > 1 else files[0]) + tail)
    if lost:
        say(lost)
    say_deleted(recorder, files)
    if not lost and _all_kept(received, stats.written, stats.lost, files, recorder.deleted):
        say(f"nothing was lost: {what} are in complete files")
    say(f"next: {PROG} summary {args.output}")
    return EXIT_OK


def _all_kept(received: int, written: int, not_written: int, files: Any, deleted: Any) -> bool:
    """Checked, not assumed: every record received written, and every file still there."""
    return (received == written and not not_written and not set(files) & set(deleted)
            and all(os.path.exists(f) for f in files))


def say_deleted(sink: Any, files: Any) -> None:
    """One line for what retention deleted (files of this very run are named as such)."""
    if not sink.deleted and not sink.aged_out:
        return
    ours = len(set(files) & set(sink.deleted))
    say(f"retention deleted {len(sink.deleted):,} older file(s)"
        + (f", {ours:,} of them written by this run" if ours else "")
        + (f", and {len(sink.aged_out):,} crash leftover file(s) it could not recover"
           if sink.aged_out else ""))



def _run_intervals(args: argparse.Namespace, fmt: str, stop: Callable[[], bool],
                   stopped_by: List[str], **sink_options: Any) -> int:
    """``record --interval``: accounting intervals into files until --seconds or a signal."""
    from .. import recording
    from ..accounting import Accounting

    listener_options = {k: v for k, v in (("cpus", args.cpus), ("shards", args.shards),
                                          ("rcvbuf", args.rcvbuf)) if v is not None}
    accounting = Accounting(interval=args.interval, **listener_options)
    status = StatusLine(sys.stderr, args.status)
    try:
        recording.prepare_writing(fmt, recording.interval_schema(args.by))   # as _run_exits
        accounting.open()   # first: without privilege nothing is left on disk
        drop_privileges_as_asked(args, keep=("CAP_NET_ADMIN",))   # looks keep querying
        sink = recording.FileSink(args.output, fmt, schema=recording.interval_schema(args.by),
                                  metadata={"interval_seconds": args.interval}, **sink_options)
        say_recovery(sink.recovery)
        psi = _psi_sink(args, fmt, sink_options)
        say(f"recording every {args.interval:g} s what each {args.by} used to {args.output} "
            f"({fmt}), {_until(args)}"
            + (f"; pressure stalls (PSI) to {psi.root}" if psi is not None else
               "; no pressure stalls (PSI): a single file holds one kind of rows"))
        # Both written on threads of their own, as the exit stream is (_run_exits): a flush
        # or a file opened on the loop's thread held back the next interval's close, and every
        # exit since then waited in the sockets, on no disk (seconds on a starved CPU: the
        # power-cut guest lost exits 9 s old)
        result = recording.record_intervals(
            accounting, recording.BackgroundWriter(sink), stop=stop, by=args.by,
            psi=recording.BackgroundWriter(psi) if psi is not None else None,
            **status.progress_options())
    finally:
        status.clear()
        accounting.close()
    lost = f"lost {result.lost:,} exit messages (tasks that ended unseen)" if result.lost else None
    pressure = psi.stats() if psi is not None else None
    psi_rows = pressure.written + pressure.lost if pressure is not None else 0
    if pressure is not None and pressure.lost:   # its failure stopped the recording: not here
        lost = (lost + "; " if lost else "") + f"{pressure.lost:,} of {psi_rows:,} PSI rows were not written"
    return _say_closing(args, sink, result.sink, stopped_by,
                        f"recorded {result.intervals:,} intervals, {result.rows:,} rows in "
                        f"{result.elapsed:.1f} s",
                        f" (and {psi_rows:,} PSI rows)" if pressure is not None else "",
                        lost, received=result.rows, what=f"all {result.rows:,} rows"
                        + (f" and {psi_rows:,} PSI rows" if pressure is not None else ""))


def _psi_sink(args: argparse.Namespace, fmt: str, sink_options: Dict[str, Any]) -> Any:
    """The sink of an interval recording's pressure stalls: a dataset of its own inside the
    output dataset (``psi_rows``), with the same rotation, retention and flush; None for a
    single-file output."""
    from .. import recording
    where = recording.psi_path(args.output)
    if where is None:
        return None
    psi = recording.FileSink(where, fmt, schema=recording.psi_schema(),
                             metadata={"interval_seconds": args.interval}, **sink_options)
    say_recovery(psi.recovery)
    return psi
