"""``taskstats-fast top``: a live view of interval accounting, on the terminal or as plain text."""

from __future__ import annotations

import argparse
import pwd
import signal
import sys
import threading
from typing import Any, List, Optional, Tuple

from .common import EXIT_OK, UsageError, add_command, positive_float, positive_int

__all__ = ["add_parser", "run"]


def add_parser(subparsers: Any) -> None:
    from ..live import top, top_formats
    p = add_command(
        subparsers, "top", help="live view: CPU, delays and I/O per process, thread, cgroup, user or command",
        description="Every interval, what each process (or thread, cgroup, user, command) used: CPU %, "
                    "each delay class as % of the interval, read/write bytes per second, and the "
                    "tasks that exited, counted even when they lived for a millisecond (marked x, or * "
                    "when also born inside the interval). Press h for the keys. Needs root or "
                    "CAP_NET_ADMIN.",
        epilog="examples:\n"
               "  taskstats-fast top                      the live screen (h: keys, q: quit)\n"
               "  taskstats-fast top -g command           short-lived commands summed by name\n"
               "  taskstats-fast top -b -n 5 -d 2         five 2-second intervals as text\n"
               "  taskstats-fast top -n 5 --format json   one JSON object per interval (batch)\n"
               "  taskstats-fast top --columns cpu,blkio_delay,read,write,user,res\n")
    p.add_argument("-b", "--batch", action="store_true",
                   help="print each interval as plain text instead of the screen (for logs, "
                        "scripts and tests); groups that did nothing are left out")
    p.add_argument("-n", "--iterations", type=positive_int, metavar="N",
                   help="stop after N intervals (default: until q or Ctrl-C)")
    p.add_argument("-d", "--delay", type=positive_float, default=1.0, metavar="SECS",
                   help="interval length in seconds (default: %(default)s); the first interval is "
                        f"{top.FIRST_INTERVAL_SECONDS:g} s, so the first screen comes at once")
    p.add_argument("-g", "--group", choices=top.GROUPINGS, default="process", metavar="GROUPING",
                   help="one row per process (default), thread, cgroup, user or command")
    p.add_argument("-s", "--sort", choices=top.COLUMN_KEYS, default="cpu", metavar="COLUMN",
                   help="sort by this column, largest first: " + ", ".join(top.COLUMN_KEYS)
                        + " (default: %(default)s)")
    p.add_argument("-f", "--filter", default="", metavar="TEXT",
                   help="only tasks whose command name or cgroup path contains TEXT")
    p.add_argument("-p", "--pid", type=_pid_list, default=(), metavar="PID,...",
                   help="only these processes (their threads too)")
    p.add_argument("-u", "--user", metavar="USER",
                   help="only tasks of this user (name or uid)")
    p.add_argument("-t", "--tree", action="store_true",
                   help="process tree: each process above its children (key V)")
    p.add_argument("-w", "--width", type=positive_int, metavar="COLUMNS",
                   help="batch mode: fit the table to COLUMNS characters (default: every column)")
    p.add_argument("--format", choices=tuple(top_formats.FORMATS), default="text",
                   help="batch output: text (default), json (one object per interval, one per "
                        "line) or csv (a header, then a line per row); json and csv imply -b")
    p.add_argument("--columns", type=_column_list, metavar="KEY,...",
                   help="show only these columns (key F chooses on the screen): "
                        + ", ".join(top.CHOOSABLE))
    p.set_defaults(run=run)


def _pid_list(text: str) -> Tuple[int, ...]:
    try:
        pids = tuple(int(p) for p in text.split(",") if p.strip())
    except ValueError:
        pids = ()
    if not pids or min(pids) <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of process ids")
    return pids


def _column_list(text: str) -> frozenset:
    """The columns *not* named in ``text`` (``TopState.hidden``)."""
    from ..live import top
    keys = [k.strip() for k in text.split(",") if k.strip()]
    unknown = [k for k in keys if k not in top.CHOOSABLE]
    if unknown or not keys:
        raise argparse.ArgumentTypeError(
            f"{', '.join(unknown) or repr(text)}: not a column; the columns are "
            + ", ".join(top.CHOOSABLE))
    return frozenset(top.CHOOSABLE) - set(keys)


def _uid(user: Optional[str]) -> Optional[int]:
    if user is None:
        return None
    try:
        return pwd.getpwnam(user).pw_uid
    except KeyError:
        if user.isdigit():
            return int(user)
        raise UsageError(f"-u {user}: no such user (give a user name or a numeric uid)") from None


def run(args: argparse.Namespace) -> int:
    from ..accounting import Accounting
    from ..live import header, top, top_formats
    state = top.TopState(grouping="process" if args.tree else args.group, sort=args.sort,
                         filter=args.filter, pids=args.pid, uid=_uid(args.user), tree=args.tree,
                         hidden=args.columns or frozenset())
    args.batch = args.batch or args.format != "text"
    if not args.batch and not (sys.stdin.isatty() and sys.stdout.isatty()):
        raise UsageError("top without -b needs a terminal; use -b for plain text")
    system = header.SystemHeader()   # its first sample starts the first interval's CPU modes
    with Accounting(interval=args.delay) as accounting:
        if args.batch:
            printer = top_formats.FORMATS[args.format](state, width=args.width)
            sink = top.TopSink(state, out=sys.stdout, width=args.width, system=system,
                               printer=printer)
            try:
                for interval in top.intervals(accounting):
                    sink.write(interval)
                    sink.flush()
                    if args.iterations and sink.intervals >= args.iterations:
                        break
            except KeyboardInterrupt:
                pass   # Ctrl-C is how a batch run without -n ends
            return EXIT_OK
        return _interactive(accounting, top.TopSink(state, system=system), args)


def _interactive(accounting: Any, sink: Any, args: argparse.Namespace) -> int:
    from ..live import screen, top
    stop = threading.Event()
    failure: List[BaseException] = []

    def pump() -> None:
        try:
            for interval in top.intervals(accounting):
                if stop.is_set():
                    return
                sink.write(interval)
                if args.iterations and sink.intervals >= args.iterations:
                    return
        except BaseException as e:   # shown after the screen is gone, as one line
            failure.append(e)
        finally:
            stop.set()

    def terminated(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt   # so curses puts the terminal back, as on Ctrl-C

    thread = threading.Thread(target=pump, name="top-accounting", daemon=True)
    thread.start()
    # SIGHUP too (the terminal went away): curses is closed as on Ctrl-C
    previous = {s: signal.signal(s, terminated) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        screen.run_screen(sink, stop.is_set,
                          waiting="taskstats-fast top: taking the first look ...")
    except KeyboardInterrupt:
        pass
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        stop.set()
        thread.join(timeout=args.delay + 2.0)
    if failure:
        raise failure[0]
    return EXIT_OK
