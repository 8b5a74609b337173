"""Human-facing output: the per-task report of ``taskstats-fast pid``/``tgid`` (text and JSON),
the ``summary`` tables of a recording, and its ``--plot`` picture.

This module owns how numbers are shown to people: units (durations from ns/µs, sizes from bytes
and KB), what "not reported" looks like, and the delay-accounting note.  It reads records
through ``schema`` (so JSON keys are the pandas/Arrow column names); what a recording
adds up to is computed by ``recording.summary``, and this module only lays it out.  It never
talks to the kernel.
"""

from __future__ import annotations

import datetime as _dt
import math
import time
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from . import layout
from .schema import COLUMNS, KIND_CATEGORIES, ColumnKind, columns, require
from .kernel.delayacct import DELAYACCT_OFF_MESSAGE

__all__ = ["format_duration_ns", "format_bytes", "task_report", "task_json",
           "format_summary", "summary_json", "exit_rate", "plot_summary"]

#: Columns a TGID record leaves at zero (``layout.TGID_FIELDS``): missing, not zero, in JSON.
_NOT_IN_TGID = frozenset(
    col.name for col in COLUMNS
    if not any(source in layout.TGID_FIELDS or source in {m[0] for m in layout.META_FIELDS}
               for source in col.sources))
#: What a field the kernel does not fill in this kind of record shows.
_NOT_REPORTED = "not reported for a process (see below)"
_SCHED_POLICIES = {0: "normal", 1: "fifo", 2: "round-robin", 3: "batch", 5: "idle", 6: "deadline"}
_AC_FLAGS = ((0x01, "forked without exec"), (0x02, "used superuser privileges"),
             (0x08, "dumped core"), (0x10, "killed by a signal"), (0x20, "whole thread group"))


# ---- units -----------------------------------------------------------------------------------
def format_duration_ns(ns: Optional[float]) -> str:
    """``1234567`` -> ``'1.23 ms'``; None -> ``'n/a'``.

    Each unit is chosen after rounding, so a value just under a unit change moves up to the
    next unit (999.7 ms -> ``'1.000 s'``) instead of printing as ``'1e+03 ms'``.
    """
    if ns is None:
        return "n/a"
    ns = float(ns)
    sign, ns = ("-", -ns) if ns < 0 else ("", ns)
    text = f"{ns:.0f}"
    if float(text) < 1e3:
        return f"{sign}{text} ns"
    for div, unit in ((1e3, "µs"), (1e6, "ms")):
        text = f"{ns / div:.3g}"
        if float(text) < 1e3:
            return f"{sign}{text} {unit}"
    seconds = ns / 1e9
    for decimals, limit in ((3, 100), (1, 600)):
        text = f"{seconds:.{decimals}f}"
        if float(text) < limit:
            return f"{sign}{text} s"
    minutes, tenths = divmod(round(seconds * 10), 600)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{sign}{hours}h{minutes:02d}m{tenths / 10:04.1f}s"
    return f"{sign}{minutes}m{tenths / 10:04.1f}s"


def format_bytes(n: Optional[float]) -> str:
    """``123456`` -> ``'120.6 KiB'``; None -> ``'n/a'``."""
    if n is None:
        return "n/a"
    n = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"  # pragma: no cover


def _count(n: Optional[int]) -> str:
    return "n/a" if n is None else f"{n:,}"


def _kcount(n: Optional[int]) -> str:
    """A syscall count the kernel rounded down to a multiple of 1024, shown as the range it
    stands for."""
    if n is None:
        return "n/a"
    return "<1,024" if n == 0 else f"{n:,}-{n + 1023:,}"


def _iso(ts: Any) -> Optional[str]:
    if ts is None or (isinstance(ts, np.datetime64) and np.isnat(ts)):
        return None
    ns = int(np.datetime64(ts, "ns").astype(np.int64))
    return _dt.datetime.fromtimestamp(ns / 1e9, _dt.timezone.utc).isoformat(timespec="microseconds")


# ---- one task --------------------------------------------------------------------------------
def _row(cols: Mapping[str, Tuple[np.ndarray, Optional[np.ndarray]]], i: int) -> Dict[str, Any]:
    """Row ``i`` of ``schema.columns`` output as Python values (None where
    missing)."""
    out: Dict[str, Any] = {}
    tgid = KIND_CATEGORIES[int(cols["kind"][0][i])] == "tgid"
    for col in COLUMNS:
        values, valid = cols[col.name]
        if (valid is not None and not valid[i]) or (tgid and col.name in _NOT_IN_TGID):
            out[col.name] = None
        elif col.kind == ColumnKind.CATEGORY:
            out[col.name] = KIND_CATEGORIES[int(values[i])]
        elif col.kind == ColumnKind.TIMESTAMP:
            out[col.name] = values[i]
        elif col.kind == ColumnKind.STR:
            out[col.name] = str(values[i])
        else:
            out[col.name] = int(values[i])
    return out


def _delay_rows(row: Mapping[str, Any]) -> List[Dict[str, Any]]:
    rows = []
    for delay_class in layout.DELAY_CLASSES:
        cls = delay_class.name
        count, total = row[f"{cls}_count"], row[f"{cls}_delay_total_ns"]
        rows.append({
            "class": cls,
            "count": count,
            "total_ns": total,
            "average_ns": (total / count) if count else (None if count is None else 0),
            "max_ns": row[f"{cls}_delay_max_ns"],
            "min_ns": row[f"{cls}_delay_min_ns"],
            "max_at": row[f"{cls}_delay_max_ts"],
        })
    return rows


def task_json(records: np.ndarray, *, delayacct_enabled: Optional[bool] = None,
              comms: Optional[Sequence[Optional[str]]] = None) -> List[Dict[str, Any]]:
    """One JSON-able object per record: every ``schema`` column (timestamps as ISO 8601 UTC
    strings, missing values as null), plus ``delays`` (per class: count, total_ns, average_ns,
    max_ns, min_ns, max_at) and ``delayacct_enabled``.  ``comms`` fills in command names that a
    TGID record does not carry (e.g. from /proc)."""
    cols = columns(records)
    out = []
    for i in range(len(records)):
        row = _row(cols, i)
        delays = {}
        for d in _delay_rows(row):
            cls = d.pop("class")
            d["max_at"] = _iso(d["max_at"])
            delays[cls] = d
        obj = {k: (_iso(v) if isinstance(v, np.datetime64) else v) for k, v in row.items()}
        if comms is not None and not obj["ac_comm"] and comms[i]:
            obj["comm_from_proc"] = comms[i]
        obj["delays"] = delays
        obj["delayacct_enabled"] = delayacct_enabled
        out.append(obj)
    return out


def task_report(records: np.ndarray, *, delayacct_enabled: Optional[bool] = None,
                comms: Optional[Sequence[Optional[str]]] = None,
                now_ns: Optional[int] = None) -> str:
    """A readable report of each record (one block per task), ending with a note when delay
    accounting is off."""
    cols = columns(records)
    now_ns = time.time_ns() if now_ns is None else now_ns
    blocks = [_task_block(_row(cols, i), None if comms is None else comms[i], now_ns)
              for i in range(len(records))]
    text = "\n\n".join(blocks)
    if delayacct_enabled is False:
        text += "\n\nnote: " + DELAYACCT_OFF_MESSAGE
    return text


def _task_block(row: Mapping[str, Any], comm_hint: Optional[str], now_ns: int) -> str:
    is_tgid = row["kind"] == "tgid"
    version = row["version"]
    comm = row["ac_comm"] or comm_hint or "?"
    lines = []
    if is_tgid:
        lines.append(f"tgid {row['id']}  {comm}  (all threads of the process, summed)"
                     f"   struct taskstats v{version}")
    else:
        tgid = "n/a" if row["ac_tgid"] is None else row["ac_tgid"]
        lines.append(f"pid {row['id']}  {comm}  (tgid {tgid}, ppid "
                     f"{row['ac_ppid']}, uid {row['ac_uid']}, gid {row['ac_gid']})"
                     f"   struct taskstats v{version}")
        started = row["ac_btime"]
        if started is not None:
            when = _dt.datetime.fromtimestamp(int(np.datetime64(started, "s").astype(np.int64)),
                                              _dt.timezone.utc)
            policy = _SCHED_POLICIES.get(row["ac_sched"], str(row["ac_sched"]))
            lines.append(f"  started      {when:%Y-%m-%d %H:%M:%S} UTC, running for "
                         f"{format_duration_ns(row['ac_etime_us'] * 1000)}; nice "
                         f"{row['ac_nice']}, policy {policy}")
        flags = [text for bit, text in _AC_FLAGS if row["ac_flag"] & bit]
        if flags:
            lines.append(f"  flags        {', '.join(flags)}")
    us = 1000
    lines.append(f"  CPU          user {format_duration_ns(row['ac_utime_us'] * us)}   system "
                 f"{format_duration_ns(row['ac_stime_us'] * us)}   on a CPU (real) "
                 f"{format_duration_ns(row['cpu_run_real_total_ns'])}   (virtual "
                 f"{format_duration_ns(row['cpu_run_virtual_total_ns'])})")
    lines.append(f"  switches     voluntary {_count(row['nvcsw'])}   involuntary "
                 f"{_count(row['nivcsw'])}")
    if is_tgid:
        # zeros in a TGID record: the kernel does not sum these over the threads
        lines += [f"  {what:<13}{_NOT_REPORTED}" for what in ("page faults", "memory", "I/O")]
    else:
        lines.append(f"  page faults  minor {_count(row['ac_minflt'])}   major "
                     f"{_count(row['ac_majflt'])}")
        lines.append(f"  memory       peak RSS {format_bytes(row['hiwater_rss_kb'] * 1024)}   peak "
                     f"virtual {format_bytes(row['hiwater_vm_kb'] * 1024)}")
        # the kernel reports bytes and syscall counts rounded down to multiples of 1024
        lines.append(f"  I/O          read {format_bytes(row['read_char_bytes'])} in "
                     f"{_kcount(row['read_syscalls'])} calls ({format_bytes(row['read_bytes'])} "
                     f"from storage)")
        lines.append(f"               wrote {format_bytes(row['write_char_bytes'])} in "
                     f"{_kcount(row['write_syscalls'])} calls ({format_bytes(row['write_bytes'])}"
                     f" to storage, {format_bytes(row['cancelled_write_bytes'])} cancelled)")
    header = f"  {'delays':<22}{'count':>10}{'total':>12}{'average':>12}{'max':>12}{'min':>12}"
    lines.append(header)
    for d in _delay_rows(row):
        if is_tgid:
            maxi = mini = "-"
        else:
            maxi = format_duration_ns(d["max_ns"]) if d["max_ns"] is not None else "n/a"
            mini = format_duration_ns(d["min_ns"]) if d["min_ns"] is not None else "n/a"
            if d["count"] == 0 and d["max_ns"] is not None:
                maxi = mini = "-"
        average = "-" if d["count"] == 0 else format_duration_ns(d["average_ns"])
        total = "n/a" if d["total_ns"] is None else format_duration_ns(d["total_ns"])
        lines.append(f"    {layout.DELAY_CLASS_BY_NAME[d['class']].label:<20}{_count(d['count']):>10}{total:>12}"
                     f"{average:>12}{maxi:>12}{mini:>12}")
    notes = []
    if version < layout.FIELD_BY_NAME["cpu_delay_max"].since:
        notes.append(f"this kernel's struct (v{version}) has no per-delay max/min (v15+)")
    if is_tgid:
        notes.append("max/min are not shown for a process: the kernel reports the last thread's, "
                     "not the group's")
        notes.append("the kernel sums only CPU times, context switches and delays over a "
                     "process's threads; page faults, memory and I/O are per thread (ask with "
                     "`pid`)")
    lines += [f"  ({n})" for n in notes]
    return "\n".join(lines)


# ---- summary of a recording (computed by recording.summary) ---------------------------------
def summary_json(summary: Mapping[str, Any]) -> Dict[str, Any]:
    """``summary`` as a JSON-able dict (it already is one; this is the documented shape)."""
    return dict(summary)


def _table(title: str, headers: Sequence[str], rows: Iterable[Sequence[str]]) -> List[str]:
    rows = [list(r) for r in rows]
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]
    fmt = "  ".join(["{:<%d}" % widths[0]] + ["{:>%d}" % w for w in widths[1:]])
    return [title, "  " + fmt.format(*headers)] + ["  " + fmt.format(*r) for r in rows] + [""]


def _summary_head(s: Mapping[str, Any]) -> List[str]:
    counted = s["counted"]
    if s["kind"] == "intervals":
        what = (f"{s[counted]:,} {'processes' if s['by'] == 'process' else 'tasks'} of "
                f"{s['commands']:,} commands over {s['intervals']:,} accounting intervals "
                f"(per {s['by']}; usage, not exits)")
        when = (f"recorded {s['window_start']} → {s['window_end']} ({s['seconds']:.1f} s)"
                if s["window_start"] else "no times")
    elif s["kind"] == "pressure":
        what = f"pressure stalls (PSI) of {s['intervals']:,} accounting intervals"
        when = (f"recorded {s['window_start']} → {s['window_end']} ({s['seconds']:.1f} s)"
                if s["window_start"] else "no times")
    elif s["kind"] == "snapshot":
        what = f"{s[counted]:,} live tasks (processes or threads) of {s['commands']:,} commands"
        when = f"snapshot taken {s['window_end'] or s['last'] or 'at an unknown time'}"
    else:
        what = (f"{s[counted]:,} task (thread) exits of {s['commands']:,} commands, "
                f"{s['tgid_records']:,} thread-group totals")
        when = (f"recorded {s['window_start']} → {s['window_end']} ({s['seconds']:.1f} s"
                + (f", {s['exits_per_second']:.1f} task exits/s)" if s["exits_per_second"]
                   else ")")) if s["window_start"] else "no times"
    windows = s.get("windows") or []
    if len(windows) > 1:   # the files do not tile the span: say what is covered
        when += (f"; {len(windows)} separate windows covering {s['seconds']:.1f} s of "
                 f"{s['span_seconds']:.1f} s (gaps between recordings are not counted)")
    out = [f"{s['records']:,} records: {what}; {s['files']} file(s)", when]
    if s["hosts"]:
        out.append(f"hosts: {', '.join(s['hosts'])}")
    if s["kind"] not in ("snapshot", "pressure"):
        out.append(f"lost while recording: {s['lost']:,} "
                   f"{'exit messages' if s['kind'] == 'intervals' else 'records'}, "
                   f"{s['overruns']:,} "
                   "receive-buffer overruns"
                   + (f", {s['not_written']:,} received but not written" if s["not_written"]
                      else ""))
    if s["damaged"]:
        out.append(f"not read: {len(s['damaged'])} damaged file(s), named below")
    if False in s["delayacct_enabled"] and s["kind"] != "pressure":
        out.append("note: delay accounting was off while (some of) this was recorded: only "
                   "run-queue (cpu) delays are filled; `sysctl kernel.task_delayacct=1` turns the "
                   "rest on")
    return out + [""]


#: The stalls a summary shows: every one the kernel keeps (irq has no "some": one CPU's IRQ
#: time stalls every task on it).
_PSI_SHOWN = ("cpu_some", "cpu_full", "io_some", "io_full", "memory_some", "memory_full", "irq_full")


def _pressure_lines(pressure: Optional[Mapping[str, Any]], top: int) -> List[str]:
    """The PSI part of an interval recording's summary: the system's stall as % of the time its
    rows cover, and the cgroups that stalled most (none: the dataset keeps no PSI rows)."""
    if not pressure:
        return ["no pressure stalls (PSI) recorded: a single file, or recorded before they were", ""]
    out = []
    system = pressure["system"]
    if system is not None:
        out += [f"Pressure stall (PSI) of the system, % of the {pressure['seconds']:.1f} s its "
                f"{pressure['intervals']:,} intervals cover (some: at least one task stalled; "
                "full: all non-idle tasks at once)",
                "  " + "  ".join(f"{name.replace('_', ' ')} {system[name + '_pct']:.2f}%"
                                 for name in _PSI_SHOWN if system[name + "_pct"] is not None), ""]
    out += _table(f"Top {top} cgroups by pressure stall (PSI some, summed over the resources), "
                  "% of the time each was seen",
                  ["cgroup", "seconds", *(n.replace("_", " ") for n in _PSI_SHOWN)],
                  [[r["cgroup"], f"{r['seconds']:.1f}",
                    *(f"{r[n + '_pct']:.2f}%" if r[n + "_pct"] is not None else "n/a"
                      for n in _PSI_SHOWN)] for r in pressure["cgroups"]])
    if not pressure["cgroups"]:
        out[-1:] = ["  (no cgroup below the root stalled)", ""]
    return out


def _second(iso: Optional[str]) -> str:
    """An ISO UTC time to the second, as a table shows it ("?": not known)."""
    if not iso:
        return "?"
    return _dt.datetime.fromisoformat(iso).astimezone(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def _cgroup_names(rows: Sequence[Mapping[str, Any]]) -> List[str]:
    """What names each ranked cgroup in a table: its path, with its inode where another row
    shows the same path (removed and made again), and the inode alone where no path is known
    (files written before rows carried one)."""
    paths = [r.get("cgroup") for r in rows]
    return [f"cgroup_id {r['cgroup_id']}" if not path else
            f"{path} (cgroup_id {r['cgroup_id']})" if paths.count(path) > 1 else path
            for r, path in zip(rows, paths)]


def format_summary(summary: Mapping[str, Any]) -> str:
    """``summary`` (``recording.summarize``) as text tables."""
    s = summary
    counted = s["counted"]
    per = counted[:-1]
    out = _summary_head(s)
    if s["kind"] == "pressure":
        return "\n".join(out + _pressure_lines(s["pressure"], s["top"])).rstrip() + "\n"
    top = s["top"]
    cpu_heading = ("CPU time (cpu_ns: the scheduler's clock; user and system are tick samples)"
                   if s["kind"] == "intervals" else "CPU time (ac_utime + ac_stime)")
    out += _table(f"Top {top} commands by {cpu_heading}, over all their {counted}",
                  ["comm", counted, "cpu", "user", "system", f"cpu/{per}"],
                  [[r["comm"], f"{r[counted]:,}", format_duration_ns(r["cpu_ns"]),
                    format_duration_ns(r["user_ns"]), format_duration_ns(r["system_ns"]),
                    format_duration_ns(r[f"cpu_per_{per}_ns"])] for r in s["cpu"]])
    quiet = []
    for cls, rows in s["delays"].items():
        if not rows:
            quiet.append(cls)
            continue
        out += _table(f"Top {top} commands by {layout.DELAY_CLASS_BY_NAME[cls].label} delay ({cls})",
                      ["comm", counted, "delays", "total", "avg/delay", "max"],
                      [[r["comm"], f"{r[counted]:,}", f"{int(r['delays']):,}",
                        format_duration_ns(r["total_ns"]), format_duration_ns(r["average_ns"]),
                        format_duration_ns(r["max_ns"]) if r["max_ns"] is not None else "n/a"]
                       for r in rows])
    if quiet:
        out.append(f"no delays recorded for: {', '.join(quiet)}")
        out.append("")
    out += _table(f"Top {top} commands by I/O",
                  ["comm", counted, "read", "written", "storage read", "storage written"],
                  [[r["comm"], f"{r[counted]:,}", format_bytes(r["read_char_bytes"]),
                    format_bytes(r["write_char_bytes"]), format_bytes(r["read_bytes"]),
                    format_bytes(r["write_bytes"])] for r in s["io"]])
    if s["kind"] == "intervals":
        out += _table(f"Top {top} processes by CPU time (a process is its tgid and its start)",
                      ["tgid", "started (UTC)", "comm", "cpu", "delays"],
                      [[str(r["tgid"]), _second(r.get("start")), r["comm"],
                        format_duration_ns(r["cpu_ns"]), format_duration_ns(r["delay_ns"])]
                       for r in s["processes"]])
        out += _table(f"Top {top} cgroups by CPU time",
                      ["cgroup", "processes", "cpu", "delays"],
                      [[name, f"{r['processes']:,}",
                        format_duration_ns(r["cpu_ns"]), format_duration_ns(r["delay_ns"])]
                       for r, name in zip(s["cgroups"], _cgroup_names(s["cgroups"]))])
        out += _pressure_lines(s.get("pressure"), top)
    return "\n".join(out).rstrip() + "\n"


def _ns(iso: Optional[str]) -> Optional[int]:
    if iso is None:
        return None
    return int(np.datetime64(iso.replace("+00:00", ""), "ns").astype(np.int64))


def _summed_rows(summary: Any) -> np.ndarray:
    codes = summary.columns["kind"][0]
    return np.ones(len(codes), bool) if summary["kind"] == "snapshot" else codes == 0


def exit_rate(summary: Any) -> Optional[Tuple[np.ndarray, np.ndarray]]:
    """``(edges, per_second)`` of the exit-rate histogram of ``summary``: bin edges in seconds
    from the start of the recording window to its end, and the records per second in each bin
    (NaN in a bin no recording covers: a gap; None when the recording has no times)."""
    start, end = _ns(summary["window_start"]), _ns(summary["window_end"])
    if start is None or end is None:
        return None
    times = summary.columns["time"][0][_summed_rows(summary)]
    times = times[~np.isnat(times)].astype("datetime64[ns]").astype(np.int64)
    span = max((end - start) / 1e9, 0.01)
    width = _bin_width(span)
    edges = np.arange(0.0, span + width, width)
    if len(edges) < 2 or edges[-1] < span:
        edges = np.append(edges, edges[-1] + width)
    counts, _ = np.histogram((times - start) / 1e9, bins=edges)
    windows = [(((_ns(a) or start) - start) / 1e9, ((_ns(b) or end) - start) / 1e9) for a, b in
               summary.get("windows") or [[summary["window_start"], summary["window_end"]]]]
    covered = np.zeros(len(edges) - 1)
    for a, b in windows:   # seconds of each bin that some recording covers
        covered += np.clip(np.minimum(edges[1:], b) - np.maximum(edges[:-1], a), 0, None)
    return edges, np.where(covered > 0, counts / np.where(covered > 0, covered, 1), np.nan)


def plot_summary(summary: Any, path: str, *, title: str = "taskstats_fast recording") -> str:
    """A PNG at ``path`` of a ``recording.summarize`` result: task exits per second over the
    recording window (the time the files cover, not just from the first to the last record),
    and the distribution of each delay class's per-task average delay (log scale).  Needs
    ``taskstats_fast[plot]`` (matplotlib)."""
    require("matplotlib", "plot", "--plot")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    cols = summary.columns
    rows = _summed_rows(summary)
    fig = Figure(figsize=(11, 8), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    rate_ax, delay_ax = fig.subplots(2, 1)
    fig.suptitle(title)
    rate = exit_rate(summary)
    if rate is not None:
        edges, per_second = rate
        known = ~np.isnan(per_second)   # a gap between recordings is drawn as a gap, not as 0/s
        runs = np.flatnonzero(np.diff(np.concatenate([[0], known.astype(np.int8), [0]])))
        for lo, hi in zip(runs[::2], runs[1::2]):
            rate_ax.stairs(per_second[lo:hi], edges[lo:hi + 1], fill=True, alpha=0.6, color="C0")
        rate_ax.set_xlim(0, edges[-1])
        rate_ax.set_xlabel(f"seconds since {summary['window_start']}")
    else:
        rate_ax.text(0.5, 0.5, "no receive times in this data", ha="center",
                     transform=rate_ax.transAxes)
    rate_ax.set_ylabel("task exits / s")
    rate_ax.set_title("Exit rate")
    plotted = 0
    for delay_class in layout.DELAY_CLASSES:
        cls = delay_class.name
        count = cols[f"{cls}_count"][0][rows].astype(np.float64)
        total = cols[f"{cls}_delay_total_ns"][0][rows].astype(np.float64)
        has = count > 0
        if not has.any():
            continue
        average_us = total[has] / count[has] / 1e3
        average_us = average_us[average_us > 0]
        if not len(average_us):
            continue
        bins = np.logspace(np.log10(average_us.min()) - 0.1, np.log10(average_us.max()) + 0.1, 40)
        delay_ax.hist(average_us, bins=bins, histtype="step", linewidth=1.5,
                      label=f"{delay_class.label} ({len(average_us):,} tasks)")
        plotted += 1
    delay_ax.set_xscale("log")
    delay_ax.set_xlabel("average delay per task (µs, log scale)")
    delay_ax.set_ylabel("tasks")
    delay_ax.set_title("Delay distributions (per task: delay total / count)")
    if plotted:
        delay_ax.legend(loc="upper right", fontsize="small")
    else:
        delay_ax.text(0.5, 0.5, "no delays recorded", ha="center", transform=delay_ax.transAxes)
    fig.savefig(path, format="png")
    return path


def _bin_width(span_seconds: float) -> float:
    """A round bin width (seconds) giving between ~50 and ~120 bins."""
    raw = span_seconds / 120
    for step in (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60,
                 120, 300, 600, 900, 1800, 3600):
        if raw <= step:
            return float(step)
    return 3600.0 * math.ceil(raw / 3600)
