"""The Prometheus/OpenMetrics exporter: a sink that turns accounting intervals into counters.

It owns the counters behind ``taskstats-fast serve``'s ``/metrics``:

* every interval row is a delta (live tasks' growth plus the final values of tasks that exited),
  so adding each interval's rows into a per-group running sum gives counters that are monotonic
  and complete between scrapes, short-lived tasks included;
* groups are cgroups (label ``cgroup``, the path below the v2 root) and commands (label
  ``command``).  Each grouping has a cap on its series: past it, further groups are folded into
  one ``other`` series, and a counter says how many tasks (a gauge how many distinct names) were
  folded.  Series are never evicted, so every counter stays monotonic;
* the group-by is the accounting's own (``group_rows``, numpy); Python loops only over the
  distinct groups of an interval, to find their series.

A scrape renders text straight from the counter arrays with each series' label text cached,
because ``prometheus_client``'s own exposition costs microseconds per sample (bench/bench_exporter.py
has the ratio).  The same families are also a ``prometheus_client`` collector (``collect()``), so
the exporter can be registered in any registry; the tests cross-check the two.
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterator, List, Mapping, NamedTuple, Optional, Sequence, Tuple

import numpy as np

from .. import layout
from ..accounting import interval as _interval
from ..schema import require
from ..sink import SinkStats

__all__ = ["PrometheusExporter", "ExporterCounts", "ListenerCounters", "ExpositionFormat",
           "TEXT_FORMAT", "OPENMETRICS_FORMAT", "negotiate", "command_label",
           "OTHER", "UNKNOWN_CGROUP", "DEFAULT_MAX_COMMANDS", "DEFAULT_MAX_CGROUPS"]

#: The label value of the series that holds every group past the cap.  A command really named
#: ``other`` is counted in it too (it never gets a series of its own), so the sums stay right.
OTHER = "other"
#: The cgroup label of rows whose cgroup is not known (no cgroup v2 on the host, or a task that
#: was born and died between two looks with no parent to inherit from).
UNKNOWN_CGROUP = "unknown"
DEFAULT_MAX_COMMANDS = 200
DEFAULT_MAX_CGROUPS = 1000
#: Distinct folded names remembered for the ``folded_names`` gauge; past this it stops growing
#: (a lower bound), so names that never repeat cannot grow memory without end.
FOLDED_NAMES_REMEMBERED = 100_000

_PSI_KINDS = ("some", "full")
# divisors to seconds; a division (not a product with 1e-6) keeps 1821653 µs printing as 1.821653
_NS = 1e9
_US = 1e6

Labels = Tuple[Tuple[str, str], ...]


# ---- what is counted: data, one entry per family --------------------------------------------
@dataclass(frozen=True)
class _Member:
    """One labelled sample of a family per series: the column it shows, in units of ``1/per_second``."""
    extra_labels: Labels
    column: str
    per_second: float = 1.0   # 1.0: an integer count shown as is


@dataclass(frozen=True)
class _Family:
    """A counter family every series of a grouping has: ``taskstats_<grouping>_<suffix>_total``."""
    suffix: str
    help: str
    members: Tuple[_Member, ...]


#: ``group_rows``' column counting the rows of tasks that exited inside the interval.
_EXITS = "exited"


def _task_families() -> Tuple[_Family, ...]:
    classes = [c.name for c in layout.DELAY_CLASSES]
    return (
        # cAdvisor's split: usage is the best total (accounting's cpu_ns: the scheduler clock, and
        # ticks for exited tasks); user and system are tick samples and need not add up to it
        _Family("cpu_usage_seconds", "CPU time of the tasks (accounting's cpu_ns), exited tasks included",
                (_Member((), "cpu_ns", _NS),)),
        _Family("cpu_user_seconds", "user CPU time of the tasks (ac_utime, tick-sampled)",
                (_Member((), "ac_utime", _US),)),
        _Family("cpu_system_seconds", "system CPU time of the tasks (ac_stime, tick-sampled)",
                (_Member((), "ac_stime", _US),)),
        _Family("delay_seconds", "time the tasks waited, per delay class (delay accounting)",
                tuple(_Member((("class", c),), f"{c}_delay_total", _NS) for c in classes)),
        _Family("delays", "number of waits of the tasks, per delay class",
                tuple(_Member((("class", c),), f"{c}_count") for c in classes)),
        _Family("read_bytes", "bytes the tasks caused to be read from storage", (_Member((), "read_bytes"),)),
        _Family("write_bytes", "bytes the tasks caused to be written to storage", (_Member((), "write_bytes"),)),
        _Family("task_exits", "tasks (threads) that exited", (_Member((), _EXITS),)),
    )


def _pressure_family() -> _Family:
    return _Family("pressure_stall_seconds", "pressure-stall time (PSI) per resource, some and full",
                   tuple(_Member((("resource", r), ("kind", k)), f"{r}_{k}_us", _US)
                         for r in _interval.PSI_RESOURCES for k in _PSI_KINDS))


# ---- label text ------------------------------------------------------------------------------
_ESCAPES = {"\\": "\\\\", "\n": "\\n", '"': '\\"'}
_NEEDS_ESCAPE = re.compile(r'[\\\n"]')


def _label_text(labels: Labels) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{_NEEDS_ESCAPE.sub(lambda m: _ESCAPES[m.group()], v)}"'
                          for k, v in labels) + "}"


def command_label(comm: bytes) -> str:
    """A command name (``ac_comm``, NUL padded) as label text; bytes that are not UTF-8 stay visible."""
    return comm.rstrip(b"\0").decode("utf-8", "backslashreplace")


# ---- bounded series --------------------------------------------------------------------------
class _Series:
    """Group name -> series row, at most ``cap`` series plus ``other`` (row 0).

    A group gets a series the first time it is seen while there is room, and keeps it; later
    groups go to ``other``.  First come is the only rule under which no series ever has to move,
    and so the only one that keeps every counter monotonic.
    """

    def __init__(self, label: str, cap: int):
        if cap < 0:
            raise ValueError(f"the cap on {label} series must be >= 0, not {cap}")
        self.label = label
        self.cap = cap
        self.names: List[str] = [OTHER]
        self._row: Dict[str, int] = {OTHER: 0}
        self._folded: set = set()

    @property
    def folded_names(self) -> int:
        return len(self._folded)

    def rows_of(self, names: Sequence[str]) -> np.ndarray:
        """The row of each name, giving new groups a series while there is room."""
        rows = np.empty(len(names), dtype=np.intp)
        for i, name in enumerate(names):
            row = self._row.get(name)
            if row is None:
                if len(self.names) <= self.cap:
                    row = self._row[name] = len(self.names)
                    self.names.append(name)
                else:
                    row = 0
                    if len(self._folded) < FOLDED_NAMES_REMEMBERED:
                        self._folded.add(name)
            rows[i] = row
        return rows


class _Sums:
    """Running uint64 sums of some columns, one row per series of a ``_Series``."""

    def __init__(self, series: _Series, columns: Sequence[str]):
        self.series = series
        self.columns = tuple(columns)
        self.index = {c: i for i, c in enumerate(self.columns)}
        self._sums = np.zeros((16, len(self.columns)), dtype=np.uint64)
        self.folded_tasks = 0

    def add(self, names: Sequence[str], table: np.ndarray) -> None:
        """Add ``table`` (one row per distinct group, named by ``names``: ``group_rows`` output or PSI
        rows) into the series: numpy over the columns, Python only over the groups."""
        if not len(table):
            return
        rows = self.series.rows_of(names)
        if len(self.series.names) > len(self._sums):
            grown = np.zeros((2 * len(self.series.names), len(self.columns)), dtype=np.uint64)
            grown[:len(self._sums)] = self._sums
            self._sums = grown
        values = np.empty((len(table), len(self.columns)), dtype=np.uint64)
        for i, column in enumerate(self.columns):
            values[:, i] = table[column]
        np.add.at(self._sums, rows, values)
        if "tasks" in (table.dtype.names or ()):
            self.folded_tasks += int(table["tasks"][rows == 0].sum())

    def snapshot(self) -> np.ndarray:
        """A copy of the sums of every series that exists now (rows beyond the buffer are zero)."""
        out = np.zeros((len(self.series.names), len(self.columns)), dtype=np.uint64)
        n = min(len(out), len(self._sums))
        out[:n] = self._sums[:n]
        return out


# ---- the exposition formats: registry entries, chosen by the Accept header -------------------
class ExpositionFormat(NamedTuple):
    """One text exposition format: how a counter family's header is named and how the text ends."""
    content_type: str
    counter_header_suffix: str   # the 0.0.4 text format names a counter family with its _total
    trailer: str


TEXT_FORMAT = ExpositionFormat("text/plain; version=0.0.4; charset=utf-8", "_total", "")
OPENMETRICS_FORMAT = ExpositionFormat("application/openmetrics-text; version=1.0.0; charset=utf-8", "", "# EOF\n")
_FORMAT_BY_MEDIA_TYPE = {"application/openmetrics-text": OPENMETRICS_FORMAT}


def negotiate(accept: Optional[str]) -> ExpositionFormat:
    """The format an HTTP ``Accept`` header asks for: OpenMetrics when offered, else the text format."""
    for part in (accept or "").split(","):
        fmt = _FORMAT_BY_MEDIA_TYPE.get(part.split(";")[0].strip())
        if fmt is not None:
            return fmt
    return TEXT_FORMAT


_SAMPLE_SUFFIXES = {"counter": ("_total",), "gauge": ("",), "summary": ("_count", "_sum")}


class _Samples(NamedTuple):
    """A metric family at scrape time, ready for either output."""
    name: str
    type: str
    help: str
    sample_names: Sequence[str]     # per sample
    labels: Sequence[Labels]        # per sample (only when asked for: the text needs the prefixes alone)
    prefixes: Sequence[str]         # per sample: 'name{labels} ', cached for the series
    values: Sequence[Any]           # per sample


def _scalar(name: str, typ: str, help: str, samples: Sequence[Tuple[Labels, Any]]) -> _Samples:
    """A small family built per scrape (no cache): a summary's value is a (count, sum) pair."""
    names, labels, prefixes, values = [], [], [], []
    suffixes = _SAMPLE_SUFFIXES[typ]
    for lbl, value in samples:
        for suffix, part in zip(suffixes, value if len(suffixes) > 1 else (value,)):
            names.append(name + suffix)
            labels.append(lbl)
            prefixes.append(f"{name}{suffix}{_label_text(lbl)} ")
            values.append(part)
    return _Samples(name, typ, help, names, labels, prefixes, values)


def _render(families: Sequence[_Samples], fmt: ExpositionFormat) -> bytes:
    out: List[str] = []
    for fam in families:
        header = fam.name + (fmt.counter_header_suffix if fam.type == "counter" else "")
        out.append(f"# HELP {header} {fam.help}\n# TYPE {header} {fam.type}\n")
        if fam.prefixes:
            out.append("\n".join(map(str.__add__, fam.prefixes, map(repr, fam.values))))
            out.append("\n")
    out.append(fmt.trailer)
    return "".join(out).encode()


# ---- the sink --------------------------------------------------------------------------------
class ExporterCounts(NamedTuple):
    """What the exporter took in and shows (``stats()`` is the Sink protocol's short form)."""
    intervals: int
    rows: int       #: task rows taken in
    series: int     #: cgroup + command series shown (``other`` included)
    scrapes: int
    lost: int       #: exit messages the intervals reported lost: the counters miss those tasks


class ListenerCounters(NamedTuple):
    """The exit listener's running totals read at each scrape (an ``ExitListener.stats`` has them)."""
    lost: int
    dropped: int
    overruns: int


class PrometheusExporter:
    """A sink of accounting intervals whose counters a Prometheus server scrapes.

    ``write(interval)`` takes an ``accounting.Interval`` (rows, cgroup paths, PSI, loss).
    ``exposition(accept)`` renders ``/metrics`` for an HTTP ``Accept`` header; ``collect()`` yields
    the same families as ``prometheus_client`` metrics.  ``listener_counters``, when given, is
    called at each scrape for the exit listener's running totals: anything with the fields of
    ``ListenerCounters`` (``lambda: listener.stats`` will do), or None while there is no
    listener.  Thread-safe: intervals arrive on one thread while scrapes are served on others.
    """

    def __init__(self, *, max_commands: int = DEFAULT_MAX_COMMANDS, max_cgroups: int = DEFAULT_MAX_CGROUPS,
                 listener_counters: Optional[Callable[[], Any]] = None):
        self._task_families = _task_families()
        self._pressure = _pressure_family()
        columns = tuple(dict.fromkeys(m.column for f in self._task_families for m in f.members))
        self._cgroup_series = _Series("cgroup", max_cgroups)
        self._command_series = _Series("command", max_commands)
        self._by_cgroup = _Sums(self._cgroup_series, columns)
        self._by_command = _Sums(self._command_series, columns)
        self._cgroup_pressure = _Sums(self._cgroup_series, [m.column for m in self._pressure.members])
        self._system_pressure = np.zeros(len(self._pressure.members), dtype=np.uint64)
        self._resources: set = set()     # PSI resources the kernel reported (irq may be missing)
        self._listener_counters = listener_counters
        self._lock = threading.Lock()
        self._prefix_cache: Dict[Tuple[str, Labels, str], List[str]] = {}
        self._intervals = 0
        self._rows = 0
        self._lost = 0
        self._delayacct: Optional[bool] = None
        self._processing = (0, 0.0)   # intervals, seconds
        self._scraping = (0, 0.0)     # scrapes, seconds

    # -- the Sink protocol --
    def write(self, interval: Any) -> None:
        """Add one ``Interval``'s rows (deltas) and pressure to the running sums.  An empty array
        is the Sink protocol's tick (nothing to do); rows without their Interval are refused, since
        the cgroup paths and the pressure come with it."""
        if isinstance(interval, np.ndarray):
            if len(interval):
                raise TypeError("PrometheusExporter.write() takes an accounting Interval, not its rows alone")
            return
        started = time.perf_counter()
        by_cgroup = _interval.group_rows(interval.tasks, "cgroup")
        by_command = _interval.group_rows(interval.tasks, "command")
        psi = interval.psi
        system = np.array([psi.system[m.column] for m in self._pressure.members], dtype=np.uint64)
        with self._lock:
            self._by_cgroup.add(_cgroup_names(by_cgroup["cgroup_id"], interval.cgroups), by_cgroup)
            self._by_command.add([command_label(c) for c in by_command["ac_comm"].tolist()], by_command)
            self._cgroup_pressure.add(_cgroup_names(psi.cgroups["cgroup_id"], interval.cgroups), psi.cgroups)
            self._system_pressure += system
            self._resources.update(psi.resources)
            self._intervals += 1
            self._rows += len(interval.tasks)
            self._lost += int(interval.lost)
            if interval.delayacct is not None:
                self._delayacct = bool(interval.delayacct)
            count, seconds = self._processing
            self._processing = (count + 1, seconds + time.perf_counter() - started)

    def flush(self) -> None:
        """Nothing is buffered: the counters are current as soon as write() returns."""

    def close(self) -> None:
        """Nothing to release: the HTTP server that shows the counters is the caller's."""

    def stats(self) -> SinkStats:
        """The Sink protocol's account: every row taken in is counted at once, none is held or lost."""
        with self._lock:
            return SinkStats(written=self._rows)

    def counts(self) -> ExporterCounts:
        with self._lock:
            series = len(self._cgroup_series.names) + len(self._command_series.names)
            return ExporterCounts(self._intervals, self._rows, series, self._scraping[0], self._lost)

    # -- reading --
    def exposition(self, accept: Optional[str] = None) -> Tuple[bytes, str]:
        """The ``/metrics`` body for an HTTP ``Accept`` header, and its content type."""
        started = time.perf_counter()
        fmt = negotiate(accept)
        body = _render(self._snapshot(), fmt)
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
    def _snapshot(self, with_labels: bool = False) -> List[_Samples]:
        """Every family's samples, read under the lock (sums are copied; formatting is the caller's)."""
        with self._lock:
            families: List[_Samples] = []
            for sums in (self._by_cgroup, self._by_command):
                families += [self._grouped(sums, fam, with_labels) for fam in self._task_families]
                label = sums.series.label
                families.append(_scalar(f"taskstats_{label}_folded_tasks", "counter",
                                        f"tasks counted in the {OTHER!r} {label} series, past the series cap",
                                        [((), sums.folded_tasks)]))
                families.append(_scalar(f"taskstats_{label}_folded_names", "gauge",
                                        f"distinct {label}s counted in the {OTHER!r} series "
                                        f"(remembered up to {FOLDED_NAMES_REMEMBERED:,})",
                                        [((), sums.series.folded_names)]))
            families.append(self._grouped(self._cgroup_pressure, self._pressure, with_labels))
            families += self._process_families()
        return families

    def _shown(self, fam: _Family) -> Tuple[_Member, ...]:
        if fam is self._pressure:   # a resource the kernel does not report is left out, not shown as 0
            return tuple(m for m in fam.members if m.extra_labels[0][1] in self._resources)
        return fam.members

    def _grouped(self, sums: _Sums, fam: _Family, with_labels: bool) -> _Samples:
        series = sums.series
        name = f"taskstats_{series.label}_{fam.suffix}"
        sample_name = name + "_total"
        values_by_row = sums.snapshot()
        n = len(values_by_row)
        labels: List[Labels] = []
        prefixes: List[str] = []
        values: List[Any] = []
        for member in self._shown(fam):
            column = values_by_row[:, sums.index[member.column]]
            prefixes += self._prefixes(sample_name, member.extra_labels, series)[:n]
            if with_labels:
                labels += [((series.label, key),) + member.extra_labels for key in series.names[:n]]
            values += column.tolist() if member.per_second == 1.0 else (column / member.per_second).tolist()
        return _Samples(name, "counter", fam.help, [sample_name] * len(values), labels, prefixes, values)

    def _prefixes(self, sample_name: str, extra: Labels, series: _Series) -> List[str]:
        """Cached 'name{group="...",extra} ' strings, one per series, grown as series appear."""
        cache = self._prefix_cache.setdefault((sample_name, extra, series.label), [])
        for key in series.names[len(cache):]:
            cache.append(f"{sample_name}{_label_text(((series.label, key),) + extra)} ")
        return cache

    def _process_families(self) -> List[_Samples]:
        out = [
            _scalar("taskstats_intervals", "counter", "accounting intervals counted", [((), self._intervals)]),
            _scalar("taskstats_interval_lost_exits", "counter",
                    "exit messages the intervals reported lost: those tasks' last values are missing",
                    [((), self._lost)]),
        ]
        counters = self._listener_counters() if self._listener_counters is not None else None
        if counters is not None:
            out += [
                _scalar("taskstats_listener_lost_messages", "counter",
                        "exit messages the exit listener lost (dropped + truncated)", [((), counters.lost)]),
                _scalar("taskstats_listener_dropped_messages", "counter",
                        "exit messages the kernel dropped because a receive buffer was full",
                        [((), counters.dropped)]),
                _scalar("taskstats_listener_overruns", "counter",
                        "receive-buffer overrun episodes (ENOBUFS) the exit listener saw", [((), counters.overruns)]),
            ]
        if self._delayacct is not None:
            out.append(_scalar("taskstats_delay_accounting_enabled", "gauge",
                               "1 when kernel.task_delayacct was on in the last interval (else most delays are 0)",
                               [((), int(self._delayacct))]))
        shown = self._shown(self._pressure)
        out += [
            _scalar("taskstats_pressure_stall_seconds", "counter",
                    "system-wide pressure-stall time (PSI, /proc/pressure) per resource, some and full",
                    [(m.extra_labels, int(self._system_pressure[self._pressure.members.index(m)]) / m.per_second)
                     for m in shown]),
            _scalar("taskstats_exporter_cpu_seconds", "counter",
                    "CPU time of the exporting process, accounting included", [((), time.process_time())]),
            _scalar("taskstats_exporter_interval_processing_seconds", "summary",
                    "time spent adding intervals to the counters", [((), self._processing)]),
            _scalar("taskstats_exporter_scrape_duration_seconds", "summary",
                    "time spent rendering /metrics (earlier scrapes)", [((), self._scraping)]),
        ]
        return out


def _cgroup_names(ids: np.ndarray, paths: Mapping[int, str]) -> List[str]:
    return [paths.get(i, UNKNOWN_CGROUP) for i in ids.tolist()]
