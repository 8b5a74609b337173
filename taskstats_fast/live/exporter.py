"""The Prometheus/OpenMetrics exporter: a sink that turns accounting intervals into counters.

It owns what ``taskstats-fast serve``'s ``/metrics`` says (the README's metric table lists it all):

* every interval row is a delta (live tasks' growth plus the final values of tasks that exited),
  so adding each interval's rows into a per-group running sum gives counters that are complete
  between scrapes, short-lived tasks included;
* groupings: cgroups (label ``cgroup``, the path below the v2 root, with ``unit``,
  ``container_id`` and ``pod_uid`` derived from it: ``cgroup_labels``), commands (``command``)
  and, given a grouping config, configured groups (``groupname``: ``grouping.py``).
  ``cgroup="/"`` is the whole host, every task, as cAdvisor's ``id="/"``; its pressure is the
  system's (/proc/pressure);
* each grouping's series are bounded and forgotten (``series.SeriesTable``): groups past the cap
  fold into ``other``; a group with no task for ``forget_after`` seconds, or a removed cgroup,
  leaves /metrics, and comes back with counters from 0;
* gauges per group, from the live tasks at the interval's end: threads, processes, and the sum
  of the processes' high-water RSS;
* the group-by is one numpy sort and one C pass per grouping (``_native.GroupSums``: each
  group's shown columns summed straight from the task rows, a narrower form of the accounting's
  ``group_rows``); Python loops only over the distinct groups of an interval, to find their
  series.

The same families are also a ``prometheus_client`` collector (``collect()``), so the exporter can
be registered in any registry; the tests cross-check the two.
"""

from __future__ import annotations

import platform
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, List, Mapping, NamedTuple, Optional, Sequence, Tuple, cast

import numpy as np

from .. import _native, layout
from .._version import __version__
from ..accounting import interval as _interval
from ..schema import require
from ..sink import SinkStats
from .defaults import DEFAULT_FORGET_AFTER, DEFAULT_MAX_CGROUPS, DEFAULT_MAX_COMMANDS, DEFAULT_MAX_GROUPS
from .cgroup_labels import cgroup_labels
from .exposition import (OPENMETRICS_FORMAT, TEXT_FORMAT, ExpositionFormat, Samples, negotiate, render,
                         scalar)
from .process_metrics import process_samples
from .series import FOLDED_NAMES_REMEMBERED, OTHER, Labels, SeriesTable

__all__ = ["PrometheusExporter", "ExporterCounts", "ListenerCounters", "ExpositionFormat",
           "TEXT_FORMAT", "OPENMETRICS_FORMAT", "negotiate", "command_label", "Grouping",
           "OTHER", "ROOT_CGROUP", "UNKNOWN_CGROUP", "DEFAULT_MAX_COMMANDS", "DEFAULT_MAX_CGROUPS",
           "DEFAULT_MAX_GROUPS", "DEFAULT_FORGET_AFTER"]

#: The cgroup label of rows whose cgroup is not known (no cgroup v2 on the host, or a task that
#: was born and died between two looks with no parent to inherit from).
UNKNOWN_CGROUP = "unknown"
#: The root cgroup's series: every task of the host (pinned: never capped or forgotten).
ROOT_CGROUP = "/"

# divisors to seconds; a division (not a product with 1e-6) keeps 1821653 µs printing as 1.821653
_NS = 1e9
_US = 1e6
_GAUGE_COLUMNS = ("threads", "processes", "rss_bytes")
_SUMMED_INDEX = {name: i for i, name in enumerate(_interval.SUMMED_FIELDS)}


# ---- what is counted: data, one entry per family --------------------------------------------
@dataclass(frozen=True)
class _Member:
    """One labelled sample of a family per series: the column it shows, in units of ``1/per_second``."""
    extra_labels: Labels
    column: str
    per_second: float = 1.0   # 1.0: an integer count shown as is


@dataclass(frozen=True)
class _Family:
    """A family every series of a grouping has: ``taskstats_<grouping>_<suffix>``."""
    suffix: str
    type: str
    help: str
    members: Tuple[_Member, ...]


#: ``group_rows``' column counting the rows of tasks that exited inside the interval.
_EXITS = "exited"


def _counter_families() -> Tuple[_Family, ...]:
    classes = [(c.name, c.waits_for) for c in layout.DELAY_CLASSES]
    return (
        # cAdvisor's usage is the best total (accounting's cpu_ns: the scheduler clock, exited
        # tasks reconciled to their cgroup's cpu.stat); the modes are tick samples and need not
        # add up to it
        _Family("cpu_usage_seconds", "counter", "CPU time of the tasks (scheduler clock), exited tasks included",
                (_Member((), "cpu_ns", _NS),)),
        _Family("cpu_seconds", "counter", "CPU time of the tasks per mode (user, system: tick-sampled)",
                (_Member((("mode", "user"),), "ac_utime", _US), _Member((("mode", "system"),), "ac_stime", _US))),
        _Family("delay_seconds", "counter", "time the tasks waited, per class of what they waited for",
                tuple(_Member((("class", label),), f"{c}_delay_total", _NS) for c, label in classes)),
        _Family("delays", "counter", "number of waits of the tasks, per class of what they waited for",
                tuple(_Member((("class", label),), f"{c}_count") for c, label in classes)),
        _Family("read_bytes", "counter", "bytes the tasks caused to be read from storage",
                (_Member((), "read_bytes"),)),
        _Family("write_bytes", "counter", "bytes the tasks caused to be written to storage",
                (_Member((), "write_bytes"),)),
        _Family("task_exits", "counter", "tasks (threads) that exited", (_Member((), _EXITS),)),
    )


def _gauge_families() -> Tuple[_Family, ...]:
    return (
        _Family("threads", "gauge", "tasks (threads) alive at the end of the last interval",
                (_Member((), "threads"),)),
        _Family("processes", "gauge", "processes alive at the end of the last interval",
                (_Member((), "processes"),)),
        _Family("resident_memory_peak_bytes", "gauge",
                "sum over the live processes of each one's high-water RSS (TASKSTATS has no current RSS)",
                (_Member((), "rss_bytes"),)),
    )


def _pressure_family() -> _Family:
    """Its members are in PSI_FIELDS' order: a write adds ``stall_block``'s columns as they are."""
    family = _Family("pressure_stall_seconds", "counter",
                     "pressure-stall time (PSI) per resource, some and full (cgroup=\"/\": /proc/pressure)",
                     tuple(_Member((("resource", r), ("kind", k)), f"{r}_{k}_us", _US)
                           for r in _interval.PSI_RESOURCES for k in _interval.PSI_KINDS))
    assert tuple(m.column for m in family.members) == _interval.PSI_FIELDS
    return family


def command_label(comm: bytes) -> str:
    """A command name (``ac_comm``, NUL padded) as label text; bytes that are not UTF-8 stay visible."""
    return comm.rstrip(b"\0").decode("utf-8", "backslashreplace")


def _block_columns(shown: Iterable[str]) -> Tuple[str, ...]:
    """The shown counter columns, each once, in SUMMED_FIELDS' order and then ``exited``: the
    C core's sums then read each row's words front to back (a Store finds its columns by
    name, so their order is the block's to choose)."""
    columns = dict.fromkeys(shown)
    columns.pop(_EXITS)
    return tuple(sorted(columns, key=_SUMMED_INDEX.__getitem__)) + (_EXITS,)


class RowBlock:
    """How a write's group sums are laid out, for every grouping alike: the counter columns
    first, in the counters' order (the SUMMED_FIELDS they show, summed by the C core straight
    from the task rows, then ``exited``, which is last), then one count per _GAUGE_COLUMNS (a
    live thread, a live leader, that leader's peak RSS in bytes), then 1 for the row itself.
    ``exited`` and what follows it are counted by the C core from tests of each row
    (``counts``)."""

    def __init__(self, counter_columns: Sequence[str]):
        if counter_columns[-1] != _EXITS:
            raise ValueError(f"the exporter's counter columns end with {_EXITS!r}")
        self.columns = tuple(counter_columns)
        self.words = self.columns[:-1]
        width = len(counter_columns)
        self.gauges = slice(width, width + len(_GAUGE_COLUMNS))
        self.row = width + len(_GAUGE_COLUMNS)
        exited = _interval.EXITED
        leader = _native.GroupCount("state", exited, 0, same=("ac_pid", "ac_tgid"))
        self.counts = (
            _native.GroupCount("state", exited, exited),             # exited
            _native.GroupCount("state", exited, 0),                  # threads: a live task
            leader,                                                  # processes: a live leader
            leader._replace(value="hiwater_rss", scale=1024),        # rss_bytes: its peak RSS
            _native.GroupCount(),                                    # the row itself
        )
        assert len(self.words) + len(self.counts) == self.row + 1


_COMM_DTYPE: np.dtype = _interval.TASK_DTYPE["ac_comm"]
_COMM_OFFSET: int = _interval.TASK_DTYPE.fields["ac_comm"][1]    # type: ignore[index]


def _by_command(tasks: np.ndarray) -> np.ndarray:
    """The stable order of ``tasks`` (contiguous TASK_DTYPE rows) by ``ac_comm``, as sorting the
    names themselves gives it: a lexsort of each name's big-endian 8-byte words, which compare
    as its bytes do, costs a fraction of numpy's sort of fixed-width byte strings."""
    if not len(tasks):
        return np.zeros(0, np.intp)
    words = np.ndarray((len(tasks), _COMM_DTYPE.itemsize // 8), np.dtype(">u8"), buffer=tasks,
                       offset=_COMM_OFFSET, strides=(_interval.TASK_DTYPE.itemsize, 8))
    return np.lexsort(words.T[::-1])


class Grouping(NamedTuple):
    """A grouping of processes by a rule set (``grouping.GroupConfig`` makes one):
    ``names(rows, cgroup_paths)`` gives each process row's group name (rows carry ``ac_tgid``,
    ``ac_comm``, ``ac_uid``, ``cgroup_id``); the series are ``taskstats_<family>_*{<label>=...}``."""
    names: Callable[[np.ndarray, Mapping[int, str]], List[Optional[str]]]
    family: str = "group"
    label: str = "groupname"


class _Grouped:
    """One grouping's series with its counters and gauges, and how rows are named."""

    def __init__(self, series: SeriesTable, key: str, key_field: str, layout: RowBlock,
                 names: Callable[[np.ndarray, Mapping[int, str]], List[Any]], total: Optional[str] = None):
        self.series = series
        self.key = key                  # "process": its leader names the group
        self.key_field = key_field      # the row field that key groups by
        # counters and gauges in one store, in the sums' own column order: one add per write
        self.store = series.store(layout.columns + _GAUGE_COLUMNS)
        self.names = names
        self.total = total              # a pinned series that every row is also added to
        self.folded_tasks = 0
        self._layout = layout
        self._sums = _native.GroupSums(_interval.TASK_DTYPE, key_field, layout.words, layout.counts)

    def _rows(self, names: List[Any], now_ns: int) -> np.ndarray:
        """Each name's series row; -1 for a row counted in no series of its own (no group, or
        the total's own tasks)."""
        rows = self.series.rows_of(names, now_ns)
        if self.total is not None and self.total in names:   # its own tasks: in the total alone
            rows[[i for i, n in enumerate(names) if n == self.total]] = -1
        return rows

    def _order(self, tasks: np.ndarray) -> np.ndarray:
        if self.key == "process":       # the leader first in each process: its identity names it
            return np.lexsort(((tasks["ac_pid"] != tasks["ac_tgid"]), tasks["ac_tgid"]))
        if self.key_field == "ac_comm":
            return _by_command(tasks)
        return np.argsort(tasks[self.key_field], kind="stable")

    def add(self, tasks: np.ndarray, paths: Mapping[int, str], now_ns: int) -> None:
        """Add one interval's rows (contiguous TASK_DTYPE): one sort by the key, then one C pass
        summing each group's words and counts (``RowBlock``) from the rows."""
        self.store.clear(self._layout.gauges)     # gauges are this interval's alone
        if not len(tasks):
            return
        order = self._order(tasks)
        summed, first = self._sums(tasks, order)
        rows = self._rows(self.names(layout.take_records(tasks, order[first]), paths), now_ns)
        values = summed[:, :self._layout.row]
        own = rows >= 0
        self.store.add(rows[own], values[own])
        if self.total is not None:
            self.store.add_row(self.series.row(self.total), values.sum(axis=0, dtype=np.uint64))
        self.folded_tasks += int(summed[rows == 0, self._layout.row].sum())


# ---- the sink --------------------------------------------------------------------------------
class ExporterCounts(NamedTuple):
    """What the exporter took in and shows (``stats()`` is the Sink protocol's short form)."""
    intervals: int
    rows: int       #: task rows taken in
    series: int     #: samples /metrics shows now (every line that is not a comment)
    scrapes: int
    lost: int       #: exit messages the intervals reported lost: the counters miss those tasks
    forgotten: int  #: series forgotten (no task for forget_after, or the cgroup removed)


class ListenerCounters(NamedTuple):
    """The exit listener's running totals read at each scrape (an ``ExitListener.stats`` has them)."""
    lost: int
    dropped: int
    overruns: int


def _cgroup_names(rows: np.ndarray, paths: Mapping[int, str]) -> List[str]:
    return [paths.get(i, UNKNOWN_CGROUP) for i in rows["cgroup_id"].tolist()]


class _CommandNames:
    """Each row's command label, remembered by its raw ``ac_comm`` (a host runs the same few
    hundred commands interval after interval); forgets them all past ``remembered`` names, so
    a stream of made-up names cannot grow it."""

    def __init__(self, remembered: int = 4096):
        self._labels: dict = {}
        self._remembered = remembered

    def __call__(self, rows: np.ndarray, paths: Mapping[int, str]) -> List[str]:
        labels = self._labels
        comms = rows["ac_comm"].tolist()
        if len(labels) + len(comms) > self._remembered:
            labels.clear()
        out: List[Optional[str]] = list(map(labels.get, comms))   # commonly, every one seen before
        if None in out:
            for i, label in enumerate(out):
                if label is None:
                    comm = comms[i]
                    out[i] = labels[comm] = labels.get(comm) or command_label(comm)
        return cast(List[str], out)


class PrometheusExporter:
    """A sink of accounting intervals whose counters a Prometheus server scrapes.

    ``write(interval)`` takes an ``accounting.Interval`` (rows, cgroup paths, PSI, loss).
    ``exposition(accept)`` renders ``/metrics`` for an HTTP ``Accept`` header; ``collect()`` yields
    the same families as ``prometheus_client`` metrics.  ``listener_counters``, when given, is
    called at each scrape for the exit listener's running totals: anything with the fields of
    ``ListenerCounters`` (``lambda: listener.stats`` will do), or None while there is no
    listener.  ``grouping`` adds the configured groups (``taskstats_group_*{groupname=...}``).
    ``forget_after``: seconds, by the intervals' clock, without a task before a series leaves.
    Thread-safe: intervals arrive on one thread while scrapes are served on others.
    """

    def __init__(self, *, max_commands: int = DEFAULT_MAX_COMMANDS, max_cgroups: int = DEFAULT_MAX_CGROUPS,
                 max_groups: int = DEFAULT_MAX_GROUPS, forget_after: float = DEFAULT_FORGET_AFTER,
                 grouping: Optional[Grouping] = None, listener_counters: Optional[Callable[[], Any]] = None):
        if not forget_after > 0:
            raise ValueError(f"forget_after is in seconds and must be positive, not {forget_after!r}")
        self._forget_after_ns = int(forget_after * 1e9)
        self._counter_families = _counter_families()
        self._gauge_families = _gauge_families()
        self._pressure = _pressure_family()
        self._row_block = RowBlock(_block_columns(m.column for f in self._counter_families for m in f.members))
        cgroups = SeriesTable("cgroup", max_cgroups, pinned=(ROOT_CGROUP,), labeller=cgroup_labels)
        self._groupings = [
            _Grouped(cgroups, "cgroup", "cgroup_id", self._row_block, _cgroup_names, total=ROOT_CGROUP),
            _Grouped(SeriesTable("command", max_commands), "command", "ac_comm", self._row_block, _CommandNames()),
        ]
        if grouping is not None:
            self._groupings.append(_Grouped(SeriesTable(grouping.label, max_groups, family=grouping.family),
                                            "process", "ac_tgid", self._row_block, grouping.names))
        self._cgroup_pressure = cgroups.store([m.column for m in self._pressure.members])
        self._resources: set = set()     # PSI resources the kernel reported (irq may be missing)
        self._listener_counters = listener_counters
        self._lock = threading.Lock()
        self._intervals = 0
        self._rows = 0
        self._lost = 0
        self._delayacct: Optional[bool] = None
        self._processing = (0, 0.0)   # intervals, seconds
        self._scraping = (0, 0.0)     # scrapes, seconds

    # -- the Sink protocol --
    def write(self, interval: Any) -> None:
        """Add one ``Interval``'s rows (deltas) and pressure to the running sums, then forget the
        series gone quiet.  An empty array is the Sink protocol's tick (nothing to do); rows
        without their Interval are refused, since the cgroup paths and the pressure come with it."""
        if isinstance(interval, np.ndarray):
            if len(interval):
                raise TypeError("PrometheusExporter.write() takes an accounting Interval, not its rows alone")
            return
        started = time.perf_counter()
        now = int(interval.end_ns)
        psi = interval.psi
        with self._lock:
            self._forget(interval, now)      # first, so the slots it frees serve this interval's new groups
            tasks = np.ascontiguousarray(interval.tasks)
            for grouped in self._groupings:
                grouped.add(tasks, interval.cgroups, now)
            cgroups = self._groupings[0].series
            pressure = np.concatenate([_interval.stall_block(psi.cgroups), _interval.stall_block(psi.system)])
            names = _cgroup_names(psi.cgroups, interval.cgroups) + [ROOT_CGROUP]
            rows = cgroups.rows_of(names, now)
            rows[[i for i, n in enumerate(names[:-1]) if n == ROOT_CGROUP]] = -1   # the root's is the system's
            self._cgroup_pressure.add(rows[rows >= 0], pressure[rows >= 0])
            self._resources.update(psi.resources)
            self._intervals += 1
            self._rows += len(interval.tasks)
            self._lost += int(interval.lost)
            if interval.delayacct is not None:
                self._delayacct = bool(interval.delayacct)
            count, seconds = self._processing
            self._processing = (count + 1, seconds + time.perf_counter() - started)

    def _forget(self, interval: Any, now: int) -> None:
        cgroups = self._groupings[0].series
        # a cgroup the looks no longer found was removed (with no cgroup map at all, none is known)
        existing = set(interval.cgroups.values())
        gone = [name for name in cgroups.names if existing and name not in existing and name != UNKNOWN_CGROUP]
        for grouped in self._groupings:
            grouped.series.forget(now - self._forget_after_ns, gone if grouped.series is cgroups else ())

    def flush(self) -> None:
        """Nothing is buffered: the counters are current as soon as write() returns."""

    def close(self) -> None:
        """Nothing to release: the HTTP server that shows the counters is the caller's."""

    def stats(self) -> SinkStats:
        """The Sink protocol's account: every row taken in is counted at once, none is held or lost."""
        with self._lock:
            return SinkStats(written=self._rows)

    def counts(self) -> ExporterCounts:
        shown = sum(len(fam.values) for fam in self._snapshot())
        with self._lock:
            forgotten = sum(g.series.forgotten for g in self._groupings)
            return ExporterCounts(self._intervals, self._rows, shown, self._scraping[0], self._lost, forgotten)

    # -- reading --
    def exposition(self, accept: Optional[str] = None) -> Tuple[bytes, str]:
        """The ``/metrics`` body for an HTTP ``Accept`` header, and its content type."""
        started = time.perf_counter()
        fmt = negotiate(accept)
        body = render(self._snapshot(), fmt)
        with self._lock:
            count, seconds = self._scraping
            self._scraping = (count + 1, seconds + time.perf_counter() - started)
        return body, fmt.content_type

    def collect(self) -> Iterator[Any]:
        """The families as ``prometheus_client`` metrics (its Collector protocol), to register the
        exporter in a registry of one's own.  ``/metrics`` itself needs no prometheus_client."""
        Metric = require("prometheus_client.core", "prometheus", "PrometheusExporter.collect()").Metric
        for fam in self._snapshot(with_labels=True):
            metric = Metric(fam.name, fam.help, fam.type)
            for name, labels, value in zip(fam.sample_names, fam.labels, fam.values):
                metric.add_sample(name, dict(labels), float(value))
            yield metric

    # -- scrape internals --
    def _snapshot(self, with_labels: bool = False) -> List[Samples]:
        """Every family's samples, read under the lock (values are copied; formatting is the caller's)."""
        with self._lock:
            families: List[Samples] = []
            pressure = self._cgroup_pressure
            for grouped in self._groupings:
                series, store = grouped.series, grouped.store
                values = store.first(series.n)      # one copy for all of its families
                families += [self._grouped(series, values, store.index, fam, with_labels)
                             for fam in self._counter_families + self._gauge_families]
                if grouped.total is not None:
                    families.append(self._grouped(series, pressure.first(series.n), pressure.index,
                                                  self._pressure, with_labels))
                families += self._housekeeping(grouped)
            families += self._process_families()
        families += [scalar(name[:-len("_total")] if typ == "counter" else name, typ, help, [((), value)])
                     for name, typ, help, value in process_samples()]
        return families

    def _housekeeping(self, grouped: _Grouped) -> List[Samples]:
        label, family = grouped.series.label, grouped.series.family
        return [
            scalar(f"taskstats_{family}_folded_tasks", "counter",
                   f"tasks counted in the {OTHER!r} {label} series, past the series cap",
                   [((), grouped.folded_tasks)]),
            scalar(f"taskstats_{family}_folded_names", "gauge",
                   f"distinct {label}s counted in the {OTHER!r} series (remembered up to {FOLDED_NAMES_REMEMBERED:,})",
                   [((), grouped.series.folded_names)]),
            scalar(f"taskstats_{family}_forgotten_series", "counter",
                   f"{label} series that left /metrics: no task for the forget-after time, or the cgroup removed",
                   [((), grouped.series.forgotten)]),
        ]

    def _shown(self, fam: _Family) -> Tuple[_Member, ...]:
        if fam is self._pressure:   # a resource the kernel does not report is left out, not shown as 0
            return tuple(m for m in fam.members if m.extra_labels[0][1] in self._resources)
        return fam.members

    def _grouped(self, series: SeriesTable, values_by_row: np.ndarray, index: Mapping[str, int], fam: _Family,
                 with_labels: bool) -> Samples:
        """One family's samples from ``values_by_row`` (a copy of a Store's first ``series.n``
        rows, whose column of each name is ``index``)."""
        name = f"taskstats_{series.family}_{fam.suffix}"
        sample_name = name + ("_total" if fam.type == "counter" else "")
        labels: List[Labels] = []
        prefixes: List[str] = []
        values: List[Any] = []
        for member in self._shown(fam):
            column = values_by_row[:, index[member.column]]
            prefixes += series.prefixes(sample_name, member.extra_labels)
            if with_labels:
                labels += [own + member.extra_labels for own in series.labels]
            values += column.tolist() if member.per_second == 1.0 else (column / member.per_second).tolist()
        return Samples(name, fam.type, fam.help, [sample_name] * len(values), labels, prefixes, values)

    def _process_families(self) -> List[Samples]:
        out = [
            scalar("taskstats_build_info", "gauge", "1, labelled with the versions of the exporter",
                   [((("version", __version__), ("python_version", platform.python_version()),
                      ("numpy_version", np.__version__)), 1)]),
            scalar("taskstats_intervals", "counter", "accounting intervals counted", [((), self._intervals)]),
            scalar("taskstats_interval_lost_exits", "counter",
                   "exit messages the intervals reported lost: those tasks' last values are missing",
                   [((), self._lost)]),
        ]
        counters = self._listener_counters() if self._listener_counters is not None else None
        if counters is not None:
            out += [
                scalar("taskstats_listener_lost_messages", "counter",
                       "exit messages the exit listener lost (dropped + truncated)", [((), counters.lost)]),
                scalar("taskstats_listener_dropped_messages", "counter",
                       "exit messages the kernel dropped because a receive buffer was full",
                       [((), counters.dropped)]),
                scalar("taskstats_listener_overruns", "counter",
                       "receive-buffer overrun episodes (ENOBUFS) the exit listener saw", [((), counters.overruns)]),
            ]
        if self._delayacct is not None:
            out.append(scalar("taskstats_delay_accounting_enabled", "gauge",
                              "1 when kernel.task_delayacct was on in the last interval (else most delays are 0)",
                              [((), int(self._delayacct))]))
        out += [
            scalar("taskstats_exporter_interval_processing_seconds", "summary",
                   "time spent adding intervals to the counters", [((), self._processing)]),
            scalar("taskstats_exporter_scrape_duration_seconds", "summary",
                   "time spent rendering /metrics (earlier scrapes)", [((), self._scraping)]),
        ]
        return out
