"""``taskstats-fast pid`` / ``tgid``: report on live threads or processes (text or JSON)."""

from __future__ import annotations

import argparse
import json
from typing import Any, Optional

from .common import EXIT_NO_SUCH_TASK, EXIT_OK, add_command, positive_float, say, task_id

__all__ = ["add_parser", "run"]

_KINDS = (
    ("pid", "report on live threads",
     "Report accounting of live threads (a pid names one thread: the main thread of a "
     "process): CPU, delays with count/total/average/max/min, I/O, context switches, page "
     "faults, memory peaks."),
    ("tgid", "report on live processes",
     "Report accounting of live processes, summing all their threads: CPU, context switches "
     "and delays with count/total/average. The kernel does not sum identity, memory, I/O or "
     "page faults over a thread group: those show as \"not reported\" (ask with `pid`)."),
)


def add_parser(subparsers: Any) -> None:
    for kind, help, description in _KINDS:
        p = add_command(subparsers, kind, help=help, description=description)
        p.add_argument("ids", nargs="+", type=task_id, metavar=kind.upper(),
                       help=f"{kind}s to report on")
        p.add_argument("--json", action="store_true",
                       help="print JSON instead of text: {kind, tasks: [...], missing: [...], "
                            "delayacct_enabled}; task keys are the pandas/Arrow column names")
        p.add_argument("--timeout", type=positive_float, default=5.0, metavar="S",
                       help="seconds to wait for the kernel's replies (default: %(default)g)")
        p.set_defaults(run=run)


def _proc_comm(pid: int) -> Optional[str]:
    try:
        with open(f"/proc/{pid}/comm", encoding="utf-8", errors="replace") as f:
            return f.read().strip() or None
    except OSError:
        return None


def run(args: argparse.Namespace) -> int:
    from .. import report
    from ..kernel.connection import Connection
    from ..kernel.delayacct import delayacct_enabled
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
        say(f"no task with {args.command} {int(missing)}: it may have exited "
            "(or never existed)")
    return EXIT_NO_SUCH_TASK if len(lookup.missing) else EXIT_OK
