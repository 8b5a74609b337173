"""The output formats of ``taskstats-fast top -b``: the registry ``FORMATS`` (text, json, csv).

This module owns what batch mode prints for a script to parse: which columns a row of each
grouping carries, their names (every one from the one naming table, ``schema.ROW_COLUMNS``,
through ``schema.column_name``), and how values are written:

* ``json``: one JSON object per interval, on one line (JSON Lines): the interval's bounds,
  grouping, task, exit and loss counts, and ``rows``, one object per group in the screen's order;
* ``csv``: a header line once, then one line per group per interval, the interval's bounds and
  loss repeated on each line so that every line stands alone.

The rows are the ones text batch mode prints (``top.batch_table``): what the filter, ``-p`` and
``-u`` keep, less the groups that did nothing.  Numbers are the quantities the screen shows at
full precision (percentages of the interval, bytes per second, counts); a value that is not
known (a folded row's pid, a process gone before it was read) is JSON null, an empty CSV cell.
"""

from __future__ import annotations

import csv
import datetime
import io
import json
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..schema import column_name
from . import procfs as _procfs
from . import top

__all__ = ["FORMATS", "TopFormat", "TextFormat", "JsonFormat", "CsvFormat", "row_fields",
           "interval_fields"]

#: Each grouping's identity fields, before the numbers.
_IDENTITY: Dict[str, Tuple[str, ...]] = {
    "process": ("ac_tgid", "ac_comm", "ac_uid", "user", "processes"),
    "thread": ("ac_pid", "ac_tgid", "ac_comm", "ac_uid", "user"),
    "cgroup": ("cgroup_id", "cgroup"),
    "user": ("ac_uid", "user"),
    "command": ("ac_comm", "processes"),
}
#: What /proc says of a process or thread row when it is printed (``top.PROCESS_COLUMNS``).
_PROCESS = {"state": "process_state", "nice": "ac_nice", "res": "rss_bytes", "time": "cpu_time_us"}
#: The interval's own figures (a JSON object's keys; the first columns of a CSV line).
_INTERVAL = ("interval_start", "interval_end", "grouping", "tasks", "exited", "lost")
_CSV_INTERVAL = ("interval_start", "interval_end", "lost")


def row_fields(grouping: str, state: top.TopState, procfs: bool) -> List[str]:
    """The naming-table fields of one row of ``grouping``, in order: identity, ``born``, the
    numeric columns ``state`` shows, then (process and thread views with a ``procfs``) what
    /proc says of the process and its command line."""
    fields = list(_IDENTITY[grouping]) + ["born"]
    fields += [c.field for c in top.shown_columns(state)]
    if procfs and grouping in ("process", "thread"):
        fields += [_PROCESS[key] for key in top.shown_process_columns(state) if key in _PROCESS]
        fields.append("cmdline")
    return fields


def interval_fields() -> List[str]:
    """The naming-table fields of one interval's own figures (a JSON object's keys)."""
    return list(_INTERVAL)


def _utc(ns: int) -> str:
    """An instant as ISO 8601 UTC to the microsecond, ``Z``-terminated."""
    when = datetime.datetime.fromtimestamp(ns / 1e9, datetime.timezone.utc)
    return when.isoformat(timespec="microseconds").replace("+00:00", "Z")


class TopFormat:
    """One batch format: ``__call__(interval, system view, procfs, first)`` -> the text to
    print for the interval (``top.TopSink``'s printer)."""

    name = ""

    def __init__(self, state: top.TopState, *, width: Optional[int] = None):
        self.state = state
        self.width = width

    def __call__(self, interval, view, procfs: Optional[_procfs.ProcFS], first: bool) -> str:
        raise NotImplementedError

    # -- rows as records -------------------------------------------------------------------
    def records(self, interval, procfs: Optional[_procfs.ProcFS]) -> Tuple[top.TopTable, List[Dict[str, Any]]]:
        """The batch table of ``interval`` and its rows as ``{column name: value}``."""
        table = top.batch_table(interval, self.state)
        fields = row_fields(table.grouping, self.state, procfs is not None)
        columns = _Columns(table, self.state, procfs, interval.cgroups or {})
        values = [columns.values(field) for field in fields]
        names = [column_name(field) for field in fields]
        return table, [dict(zip(names, row)) for row in zip(*values)] if values and table.groups else []

    def interval_record(self, interval, table: top.TopTable) -> Dict[str, Any]:
        figures = {"interval_start": _utc(int(interval.start_ns)), "interval_end": _utc(int(interval.end_ns)),
                   "grouping": table.grouping, "tasks": table.tasks, "exited": table.exits,
                   "lost": int(interval.lost or 0)}
        return {column_name(field): figures[field] for field in _INTERVAL}


class _Columns:
    """The values of one table's rows, column by column (numpy where it can be)."""

    def __init__(self, table: top.TopTable, state: top.TopState, procfs: Optional[_procfs.ProcFS],
                 cgroups):
        self.table = table
        self.rows: Any = table.rows if table.rows is not None else np.zeros(0)
        self.cgroups = cgroups
        self.samples: List[Optional[_procfs.ProcessSample]] = []
        self.procfs = procfs
        if procfs is not None and table.grouping in ("process", "thread"):
            threads = table.grouping == "thread"
            self.samples = [procfs.process(pid, pid if threads else None) if pid > 0 else None
                            for pid in table.ids.tolist()]

    def values(self, field: str) -> Sequence[Any]:
        table, rows = self.table, self.rows
        keys = [c.field for c in top.COLUMNS]
        if field in keys:
            column = table.values[:, keys.index(field)]
            unit = top.COLUMNS[keys.index(field)].unit
            return column.round(6).tolist() if unit != "count" else column.astype(np.int64).tolist()
        if field in ("ac_tgid", "ac_pid") and table.processes is not None:
            ids = rows[field].astype(np.int64).tolist()
            return [None if n > 1 else i for i, n in zip(ids, table.processes.tolist())]
        if field in ("ac_uid", "cgroup_id", "born"):
            return rows[field].astype(np.int64).tolist()
        if field == "ac_comm":
            return [c.decode("utf-8", "replace") for c in rows["ac_comm"].tolist()]
        if field == "cgroup":
            return [self.cgroups.get(c, "") for c in rows["cgroup_id"].tolist()]
        if field == "user":
            return [top.user_name(u) for u in rows["ac_uid"].tolist()]
        if field == "processes":
            return (table.processes.tolist() if table.processes is not None
                    else [1] * len(table.names))
        return self._process_values(field)

    def _process_values(self, field: str) -> List[Any]:
        pick: Callable[[_procfs.ProcessSample], Any] = {
            "process_state": lambda s: s.state, "ac_nice": lambda s: s.nice,
            "rss_bytes": lambda s: s.rss_bytes, "cpu_time_us": lambda s: round(s.cpu_seconds * 1e6),
        }.get(field)  # type: ignore[assignment]
        if pick is not None:
            return [None if s is None else pick(s) for s in self.samples]
        if field == "cmdline" and self.procfs is not None:
            return [(self.procfs.cmdline(pid) or "") if s is not None else None
                    for pid, s in zip(self.table.ids.tolist(), self.samples)]
        raise KeyError(f"top has no values for {field!r}")


class TextFormat(TopFormat):
    """The text batch mode always printed: header and table, as the screen draws them."""

    name = "text"

    def __call__(self, interval, view, procfs, first: bool) -> str:
        text = "\n".join(top.render(interval, self.state, width=self.width, system=view, procfs=procfs))
        return ("" if first else "\n") + text + "\n"


class JsonFormat(TopFormat):
    """One JSON object per interval, one per line."""

    name = "json"

    def __call__(self, interval, view, procfs, first: bool) -> str:
        table, rows = self.records(interval, procfs)
        record = self.interval_record(interval, table)
        record["rows"] = rows
        return json.dumps(record, ensure_ascii=False, separators=(",", ":"), allow_nan=False) + "\n"


class CsvFormat(TopFormat):
    """A header line, then a line per group per interval (RFC 4180 quoting)."""

    name = "csv"

    def __call__(self, interval, view, procfs, first: bool) -> str:
        table, rows = self.records(interval, procfs)
        figures = self.interval_record(interval, table)
        lead = [column_name(field) for field in _CSV_INTERVAL]
        names = [column_name(f) for f in row_fields(table.grouping, self.state, procfs is not None)]
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        if first:
            writer.writerow(lead + names)
        for row in rows:
            writer.writerow([figures[n] for n in lead] + ["" if row[n] is None else row[n] for n in names])
        return out.getvalue()


#: The formats ``top -b --format`` takes, by name.
FORMATS: Dict[str, Callable[..., TopFormat]] = {f.name: f for f in (TextFormat, JsonFormat, CsvFormat)}
