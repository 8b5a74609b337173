"""What a recording adds up to: the top commands by CPU time, by each delay class and by I/O,
the time window it covers, and what was lost or could not be read.

``summarize(paths)`` reads recorded files or dataset directories (only the columns it needs,
file by file) and returns a ``Summary``; ``summarize_columns`` does the same over columns already
read.  Two kinds of recording are told apart by their metadata (``source``):

* an **exit recording** (``record``): one PID record per exited thread, plus a TGID record per
  exited process that would count its threads twice, so only the PID records are summed; the
  rows are *exits*, and the rate is exits per second of the recording window;
* a **snapshot** (``snapshot``): one row per live process or thread at one moment; every row
  counts (a snapshot holds either kind, never both), the rows are *tasks*, and there is no rate.
* an **interval recording** (``record --interval``, metadata ``rows: "interval"``): what every
  task (or process) used in each interval; nothing in it is an exit.  The tables rank commands,
  processes and cgroups by what they used over the whole window, and, from the PSI rows the
  dataset keeps (``psi_rows``), says how much of the window the system stalled and which
  cgroups stalled most (``pressure``).

The window is what the files' metadata says they cover (``window_started`` .. ``window_finished``,
else ``file_started`` .. ``file_finished`` for files written before those keys existed), not the
span between the first and the last record.  Turning a ``Summary`` into text or a plot is
``report``'s job.
"""

from __future__ import annotations

import datetime as _dt
import warnings
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from .. import layout
from ..accounting.interval import process_starts
from .paths import PathOrPaths
from .psi_rows import PSI_STALL_FIELDS, SYSTEM_CGROUP, psi_paths, psi_schema
from .reading import Recordings, columns_of

__all__ = ["SUMMARY_COLUMNS", "INTERVAL_SUMMARY_COLUMNS", "PSI_SUMMARY_COLUMNS", "Summary",
           "summarize", "summarize_pressure",
           "summarize_columns", "recording_window", "recording_windows", "EXITS",
           "SNAPSHOT", "INTERVALS", "PRESSURE"]

#: ``Summary["kind"]`` of a recording of the exit stream, of a snapshot, of intervals.
EXITS = "exits"
SNAPSHOT = "snapshot"
INTERVALS = "intervals"
#: ``Summary["kind"]`` of the PSI rows of an interval dataset named by themselves (``DIR/_psi``).
PRESSURE = "pressure"
#: What the rows of each kind are called (``Summary["counted"]``, the key of each row's count).
_COUNTED = {EXITS: "exits", SNAPSHOT: "tasks", INTERVALS: "tasks"}

#: Columns ``summarize`` reads.
SUMMARY_COLUMNS: Tuple[str, ...] = (
    "ac_comm", "kind", "time", "ac_utime_us", "ac_stime_us", "read_bytes", "write_bytes",
    "read_char_bytes", "write_char_bytes",
    *(name for c in layout.DELAY_CLASSES
      for name in (f"{c.name}_count", f"{c.name}_delay_total_ns", f"{c.name}_delay_max_ns")),
)

#: Columns ``summarize`` reads from an interval recording (``intervals`` row names).
INTERVAL_SUMMARY_COLUMNS: Tuple[str, ...] = (
    "interval_start", "interval_end", "ac_comm", "ac_tgid", "ac_btime", "cgroup_id", "cgroup",
    "cpu_ns", "ac_utime_us", "ac_stime_us", "read_bytes", "write_bytes", "read_char_bytes",
    "write_char_bytes",
    *(name for c in layout.DELAY_CLASSES for name in (f"{c.name}_count", f"{c.name}_delay_total_ns")),
)

#: Columns ``summarize`` reads from the PSI rows an interval dataset keeps (``psi_rows``).
PSI_SUMMARY_COLUMNS: Tuple[str, ...] = ("interval_start", "interval_end", "cgroup", *PSI_STALL_FIELDS)

Columns = Mapping[str, Tuple[np.ndarray, Optional[np.ndarray]]]


class Summary(dict):
    """What ``summarize`` found, as a JSON-able dict:

    ``kind`` (``"exits"`` or ``"snapshot"``), ``counted`` (what a row is: ``"exits"`` or
    ``"tasks"``, also the key of each table row's count), ``records``, the count under the
    ``counted`` key, ``tgid_records``, ``commands``, ``windows`` (``[start, end]`` ISO pairs:
    the union of what the files cover, gaps between recordings left out),
    ``window_start``/``window_end`` (its bounds), ``seconds`` (the time covered),
    ``span_seconds`` (start to end, gaps included), ``exits_per_second`` (exit recordings:
    exits over ``seconds``),
    ``first``/``last`` (ISO times of the first and last record), ``hosts``, ``files``,
    ``damaged`` (``[{"path", "error"}]`` of files that could not be read), ``lost``,
    ``overruns``, ``not_written``, ``delayacct_enabled``, and the tables ``cpu``, ``io`` and
    ``delays[class]`` (lists of row dicts, largest first).  An interval recording's also has
    ``pressure`` (``summarize_pressure``: None when its dataset keeps no PSI rows); the PSI rows
    summarised by themselves are kind ``"pressure"``, with the files, the window and
    ``pressure`` only.

    ``columns`` (an attribute, not a key) holds the columns read, for ``report.plot_summary``.
    """

    columns: Optional[Columns] = None


def _iso_ns(ns: Optional[int]) -> Optional[str]:
    if ns is None:
        return None
    return _dt.datetime.fromtimestamp(ns / 1e9, _dt.timezone.utc).isoformat(
        timespec="microseconds")


def _ns_of_iso(text: Any) -> Optional[int]:
    if not isinstance(text, str):
        return None
    try:
        when = _dt.datetime.fromisoformat(text)
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=_dt.timezone.utc)
    return int(round(when.timestamp() * 1e6)) * 1000


def recording_window(metadata: Sequence[Mapping[str, Any]]) -> Tuple[Optional[int], Optional[int]]:
    """(start, end) in ns since the epoch of the time ``metadata``'s files cover (None where
    no file says)."""
    starts = [_ns_of_iso(m.get("window_started", m.get("file_started"))) for m in metadata]
    ends = [_ns_of_iso(m.get("window_finished", m.get("file_finished"))) for m in metadata]
    start = min((s for s in starts if s is not None), default=None)
    end = max((e for e in ends if e is not None), default=None)
    return start, end


def recording_windows(metadata: Sequence[Mapping[str, Any]]) -> List[Tuple[int, int]]:
    """The time ``metadata``'s files cover, as the union of each file's (start, end) in ns
    since the epoch: sorted, overlapping or touching spans merged, gaps between recordings
    kept as gaps."""
    spans = sorted((s, e) for s, e in (
        (_ns_of_iso(m.get("window_started", m.get("file_started"))),
         _ns_of_iso(m.get("window_finished", m.get("file_finished")))) for m in metadata)
        if s is not None and e is not None and e >= s)
    merged: List[Tuple[int, int]] = []
    for start, end in spans:
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def _window_part(metadata: Sequence[Mapping[str, Any]], first: Optional[int],
                 last: Optional[int]) -> Dict[str, Any]:
    """What every kind of summary says about time: ``windows`` (the union the files cover, as
    ISO pairs; the first to the last row when no file says), ``window_start``/``window_end``
    (its bounds), ``seconds`` (the time covered: gaps between recordings do not count) and
    ``span_seconds`` (from the first start to the last end)."""
    windows = recording_windows(metadata)
    if not windows and first is not None and last is not None:
        windows = [(first, last)]
    start = windows[0][0] if windows else first
    end = windows[-1][1] if windows else last
    return dict(windows=[[_iso_ns(a), _iso_ns(b)] for a, b in windows],
                window_start=_iso_ns(start), window_end=_iso_ns(end),
                seconds=sum(b - a for a, b in windows) / 1e9,
                span_seconds=(end - start) / 1e9 if start is not None and end is not None else 0.0)


def _kind_of(metadata: Sequence[Mapping[str, Any]]) -> str:
    sources = {m.get("source") for m in metadata}
    return SNAPSHOT if sources == {"snapshot"} else EXITS


def _sum_by(inverse: np.ndarray, n: int, values: np.ndarray) -> np.ndarray:
    return np.bincount(inverse, weights=values.astype(np.float64), minlength=n)


def _max_by(inverse: np.ndarray, n: int, values: np.ndarray) -> np.ndarray:
    out = np.full(n, -1.0)
    np.maximum.at(out, inverse, values.astype(np.float64))
    return out


def summarize(paths: PathOrPaths, *, top: int = 10) -> Summary:
    """Summarise the recorded files or dataset directories ``paths``.  A file that cannot be
    read is skipped and listed in ``Summary["damaged"]`` (the others are still summed); a file
    written by a newer, incompatible version raises ``NewerFormatError``."""
    schema = Recordings(paths).peek_schema()
    if schema is psi_schema():   # a PSI dataset named by itself (``DIR/_psi``)
        return _pressure_summary(Recordings(paths, schema=schema), top)
    intervals = "interval_start" in schema.by_name
    names = tuple(n for n in INTERVAL_SUMMARY_COLUMNS + ("ac_pid",) if n in schema.by_name) \
        if intervals else SUMMARY_COLUMNS
    recordings = Recordings(paths, columns=names)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cols = columns_of(recordings, names, skip_damaged=True)
    summary = summarize_columns(cols, top=top, metadata=recordings.metadata)
    summary["damaged"] = [{"path": path, "error": str(error)}
                          for path, error in recordings.damaged]
    summary["files"] += len(recordings.damaged)
    if intervals:
        pressure = _pressure_summary(Recordings(psi_paths(paths), schema=psi_schema()), top)
        summary["pressure"] = pressure["pressure"]
        summary["damaged"] += pressure["damaged"]
    return summary


def _pressure_summary(recordings: Recordings, top: int) -> Summary:
    """The ``Summary`` of PSI rows alone (kind ``"pressure"``): the files, the window, and
    ``pressure`` (``summarize_pressure``)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cols = columns_of(recordings, PSI_SUMMARY_COLUMNS, skip_damaged=True)
    starts, ends = cols["interval_start"][0], cols["interval_end"][0]
    first = int(starts.min().astype(np.int64)) if len(starts) else None
    last = int(ends.max().astype(np.int64)) if len(ends) else None
    files = _files_part(recordings.metadata)
    files["files"] += len(recordings.damaged)
    files["damaged"] = [{"path": path, "error": str(error)} for path, error in recordings.damaged]
    return Summary(kind=PRESSURE, counted="intervals", records=len(starts),
                   intervals=int(len(np.unique(starts))), **_window_part(recordings.metadata, first, last),
                   first=_iso_ns(first), last=_iso_ns(last), **files, top=top,
                   pressure=summarize_pressure(cols, top=top))


def summarize_pressure(cols: Columns, *, top: int = 10) -> Optional[Dict[str, Any]]:
    """What PSI rows (``PSI_SUMMARY_COLUMNS``) add up to, None when there are none (a dataset
    recorded before PSI was, or a single file): ``seconds`` the intervals of the system's rows
    cover, ``intervals``, ``system`` the system's stall per field (``<field>`` µs and
    ``<field>_pct`` of ``seconds``), and ``cgroups``, the ``top`` cgroups by some-stall
    summed over the resources, each with the same per field over the time its own rows cover."""
    paths = cols["cgroup"][0]
    if not len(paths):
        return None
    covered = (cols["interval_end"][0] - cols["interval_start"][0]).astype("timedelta64[us]") \
        .astype(np.float64)
    ranking = _Ranking(paths, None, "intervals", "cgroup", top)
    seconds = ranking.sum(covered)
    stalls = {f: ranking.sum(cols[f][0]) for f in PSI_STALL_FIELDS}
    some = np.sum([stalls[f] for f in PSI_STALL_FIELDS if f.endswith("_some_us")], axis=0)

    def figures(i: int) -> Dict[str, Any]:
        out: Dict[str, Any] = {"seconds": float(seconds[i]) / 1e6}
        for f in PSI_STALL_FIELDS:
            out[f] = int(stalls[f][i])
            out[f"{f[:-3]}_pct"] = 100.0 * stalls[f][i] / seconds[i] if seconds[i] > 0 else None
        return out

    system = np.flatnonzero(ranking.names == SYSTEM_CGROUP)
    others = np.flatnonzero(ranking.names != SYSTEM_CGROUP)
    ranked = others[np.argsort(-some[others], kind="stable")][:top]
    starts = cols["interval_start"][0]
    return dict(intervals=int(len(np.unique(starts))),
                seconds=float(seconds[system[0]]) / 1e6 if len(system) else 0.0,
                system=figures(int(system[0])) if len(system) else None,
                cgroups=[{"cgroup": str(ranking.names[i]), **figures(int(i))} for i in ranked
                         if some[i] > 0])


def summarize_columns(cols: Columns, *, top: int = 10,
                      metadata: Sequence[Mapping[str, Any]] = ()) -> Summary:
    """The ``Summary`` of columns already read: ``SUMMARY_COLUMNS`` of exit records or a
    snapshot, or ``INTERVAL_SUMMARY_COLUMNS`` of an interval recording (told apart by its
    ``interval_start`` column); ``metadata``: the files' metadata (kind of recording, window,
    hosts, loss totals).  Commands are ranked by CPU, each delay class and I/O; an interval
    recording also ranks ``processes`` (``tgid``, its ``start``, ``comm``) and ``cgroups`` by CPU
    with their summed delays; a task is (pid, start) and a process (tgid, start) there, so a
    reused id is counted and ranked as another one."""
    kind = INTERVALS if "interval_start" in cols else _kind_of(metadata)
    counted = _COUNTED[kind]
    # an exit recording sums its PID records only: a TGID record counts its threads again
    rows = cols["kind"][0] == 0 if kind == EXITS else None
    v = {name: values if rows is None else values[rows] for name, (values, _) in cols.items()}
    valid = {name: ok if ok is None or rows is None else ok[rows] for name, (_, ok) in cols.items()}
    comm = np.where(v["ac_comm"] == "", "?", v["ac_comm"])
    # interval rows repeat a task once per interval: there a command counts its distinct tasks
    commands = _Ranking(comm, _identities(v)[0] if kind == INTERVALS else None,
                        counted, "comm", top)
    user, system = commands.sum(v["ac_utime_us"]) * 1e3, commands.sum(v["ac_stime_us"]) * 1e3
    cpu_total = commands.sum(v["cpu_ns"]) if "cpu_ns" in v else user + system
    cpu = commands.table(cpu_total, {"cpu_ns": cpu_total, "user_ns": user, "system_ns": system,
                                     f"cpu_per_{counted[:-1]}_ns":
                                         cpu_total / np.maximum(commands.tasks, 1)})
    io = {k: commands.sum(v[k]) for k in
          ("read_bytes", "write_bytes", "read_char_bytes", "write_char_bytes")}
    io_rows = commands.table(np.sum(list(io.values()), axis=0), io)
    delays: Dict[str, List[Dict[str, Any]]] = {}
    for cls in (c.name for c in layout.DELAY_CLASSES):
        count, total = commands.sum(v[f"{cls}_count"]), commands.sum(v[f"{cls}_delay_total_ns"])
        mx = _delay_max(commands, v, valid, f"{cls}_delay_max_ns")
        delays[cls] = commands.table(total, {"delays": count, "total_ns": total,
                                             "average_ns": total / np.maximum(count, 1), "max_ns": mx})
    head = _interval_head(v, commands, metadata) if kind == INTERVALS else \
        _record_head(cols, v, kind, commands, metadata)
    summary = Summary(**head, **_files_part(metadata), cpu=cpu, io=io_rows, delays=delays, top=top,
                      **(_group_rankings(v, comm, top) if kind == INTERVALS else {}))
    summary.columns = None if kind == INTERVALS else cols
    return summary


def _delay_max(commands: "_Ranking", v: Mapping[str, np.ndarray],
               valid: Mapping[str, Optional[np.ndarray]], name: str) -> Optional[np.ndarray]:
    """The largest delay of one class per command (-1: none known), where the rows have it."""
    if name not in v:
        return None
    ok = valid[name]
    values = v[name] if ok is None else np.where(ok, v[name], -1)
    return _max_by(commands.inverse, commands.n, values)


def _record_head(cols: Columns, v: Mapping[str, np.ndarray], kind: str, commands: "_Ranking",
                 metadata: Sequence[Mapping[str, Any]]) -> Dict[str, Any]:
    """What a summary of exit records or a snapshot says first: counts, window, exit rate."""
    counted = _COUNTED[kind]
    codes = cols["kind"][0]
    times = v["time"][~np.isnat(v["time"])]
    first = int(times.min().astype("datetime64[ns]").astype(np.int64)) if len(times) else None
    last = int(times.max().astype("datetime64[ns]").astype(np.int64)) if len(times) else None
    window = _window_part(metadata, first, last)
    counted_total = len(v["kind"])
    return dict(kind=kind, counted=counted, records=int(len(codes)), **{counted: counted_total},
                tgid_records=int((codes == 1).sum()), commands=commands.n, **window,
                exits_per_second=(counted_total / window["seconds"]
                                  if kind == EXITS and window["seconds"] > 0 else None),
                first=_iso_ns(first), last=_iso_ns(last))


def _interval_head(v: Mapping[str, np.ndarray], commands: "_Ranking",
                   metadata: Sequence[Mapping[str, Any]]) -> Dict[str, Any]:
    """What a summary of interval rows says first: tasks (or processes, for ``by: process``
    recordings) counted once however many intervals hold them, the intervals, the window."""
    by_process = any(m.get("by") == "process" for m in metadata)
    starts = v["interval_start"][~np.isnat(v["interval_start"])]
    ends = v["interval_end"][~np.isnat(v["interval_end"])]
    first = int(starts.min().astype(np.int64)) if len(starts) else None
    last = int(ends.max().astype(np.int64)) if len(ends) else None
    return dict(kind=INTERVALS, counted="tasks", by="process" if by_process else "task",
                records=len(v["ac_comm"]), tasks=int(len(np.unique(_identities(v)[1]))) if by_process else
                int(commands.tasks.sum()), tgid_records=0, commands=commands.n,
                intervals=int(len(np.unique(starts))), **_window_part(metadata, first, last),
                exits_per_second=None, first=_iso_ns(first), last=_iso_ns(last))


_START_BITS = np.uint64(32)   # an identity is id << 32 | start (s): starts fit until 2106


def _identities(v: Mapping[str, np.ndarray]) -> Tuple[np.ndarray, np.ndarray]:
    """Each interval row's task and process as one uint64 each, id << 32 | start, so that a
    pid reused by a later task or process is another one: a task is (pid, ``ac_btime``); a
    process is (tgid, its leader's start), which rows per process carry as their ``ac_btime``
    and rows per task get from ``process_starts``.  Files without ``ac_btime``: ids alone."""
    tgid = v["ac_tgid"].astype(np.uint64)
    pid = v["ac_pid"].astype(np.uint64) if "ac_pid" in v else tgid   # rows per process: no pid
    if "ac_btime" not in v:
        return pid << _START_BITS, tgid << _START_BITS
    btime = v["ac_btime"]
    btime = np.where(np.isnat(btime), np.datetime64(0, "s"), btime) \
        .astype("datetime64[s]").astype(np.int64).clip(0).astype(np.uint64)
    start = btime if "ac_pid" not in v else process_starts(tgid, pid, btime)
    return (pid << _START_BITS) | btime, (tgid << _START_BITS) | start


def _group_rankings(v: Mapping[str, np.ndarray], comm: np.ndarray, top: int
                    ) -> Dict[str, List[Dict[str, Any]]]:
    """``processes`` (each a tgid and its start: a reused tgid is another process) and
    ``cgroups`` of interval rows ranked by CPU, with their summed delays."""
    who = _identities(v)[1]
    cpu_ns = v["cpu_ns"].astype(np.float64)
    delay_total = np.zeros(len(comm))
    for cls in (c.name for c in layout.DELAY_CLASSES):
        delay_total += v[f"{cls}_delay_total_ns"]
    ranked: Dict[str, List[Dict[str, Any]]] = {}
    ids, paths = _cgroup_keys(v)
    for name, key in (("processes", who), ("cgroups", ids)):
        group = _Ranking(key, who, "processes", "tgid" if name == "processes" else "cgroup_id",
                         top)
        cpu_of = group.sum(cpu_ns)
        rows = group.table(cpu_of, {"cpu_ns": cpu_of, "delay_ns": group.sum(delay_total)})
        if name == "processes":
            names_of = dict(zip(who.tolist(), comm.tolist()))
            for row in rows:
                key = row["tgid"]
                start = key & int(2**32 - 1)
                row.update(tgid=key >> int(_START_BITS), comm=names_of[key],
                           start=_iso_ns(start * 10**9) if start else None)
        else:
            for row in rows:
                row["cgroup"] = paths.get(row["cgroup_id"])
        ranked[name] = rows
    return ranked


def _cgroup_keys(v: Mapping[str, np.ndarray]) -> Tuple[np.ndarray, Dict[int, str]]:
    """Each interval row's cgroup id, and the path of each id where some row of it names one
    (files written before rows carried ``cgroup``, and ids no path was found for, have none):
    a cgroup is ranked by its id, so one removed and made again under the same path (a new
    inode) stays another cgroup, and is shown by its path."""
    ids = v["cgroup_id"]
    if "cgroup" not in v or not len(ids):
        return ids, {}
    known = np.flatnonzero(v["cgroup"] != "")
    unique, first = np.unique(ids[known], return_index=True)
    return ids, {int(i): str(v["cgroup"][known[k]]) for i, k in zip(unique, first)}


def _files_part(metadata: Sequence[Mapping[str, Any]]) -> Dict[str, Any]:
    """What every kind of summary says about the files: hosts, counts, losses, the switch."""
    return dict(
        hosts=sorted({str(m["hostname"]) for m in metadata if m.get("hostname")}),
        files=len(metadata), damaged=[],
        lost=sum(int(m.get("lost", 0) or 0) for m in metadata),
        overruns=sum(int(m.get("overruns", 0) or 0) for m in metadata),
        not_written=sum(int(m.get("not_written", 0) or 0) for m in metadata),
        delayacct_enabled=sorted({m.get("delayacct_enabled") for m in metadata
                                  if "delayacct_enabled" in m}, key=str))


class _Ranking:
    """Rows grouped by one key, ranked: ``table(order_by, fields)`` gives the top groups.
    ``tasks`` counts each group's distinct values of it (None: its rows)."""

    def __init__(self, key: np.ndarray, tasks: Optional[np.ndarray], counted: str, name: str,
                 top: int):
        self.names, inverse = np.unique(key, return_inverse=True)
        self.inverse = inverse.reshape(-1)
        self.n = len(self.names)
        if tasks is None:   # every row is its own task (an exit, a snapshot's task)
            self.tasks = np.bincount(self.inverse, minlength=self.n)
            self.counted, self.name, self.top = counted, name, top
            return
        pairs = np.unique(np.stack([self.inverse, tasks.astype(np.int64)]), axis=1) \
            if len(key) else np.zeros((2, 0), np.int64)
        self.tasks = np.bincount(pairs[0], minlength=self.n)
        self.counted, self.name, self.top = counted, name, top

    def sum(self, values: np.ndarray) -> np.ndarray:
        return _sum_by(self.inverse, self.n, values)

    def table(self, order: np.ndarray, fields: Mapping[str, Optional[np.ndarray]]
              ) -> List[Dict[str, Any]]:
        ranked = np.argsort(-order, kind="stable")[:self.top]
        return [{self.name: _plain(self.names[i]), self.counted: int(self.tasks[i]),
                 **{k: (None if v is None or v[i] < 0 else float(v[i])) for k, v in fields.items()}}
                for i in ranked if order[i] > 0]


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value


