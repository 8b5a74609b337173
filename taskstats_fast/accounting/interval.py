"""One accounting interval: who used what between two looks at the machine.

Contract (other modules and the live surfaces build on it; names marked *fixed* never change):

* ``Interval.start_ns``, ``Interval.end_ns`` (*fixed*): CLOCK_REALTIME ns of the two looks that
  bound the interval (when each look's snapshot began).
* ``Interval.tasks`` (*fixed*): a numpy array of ``TASK_DTYPE``, one row per task (thread) that
  existed at any moment of the interval.  Counter fields are **deltas over the interval** in the
  kernel's units (CPU times µs, ``cpu_run_*`` and every ``*_delay_total`` ns, I/O bytes, counts);
  ``cpu_ns`` is the best CPU estimate (see DERIVED_FIELDS);
  ``hiwater_rss``/``hiwater_vm`` are **levels** (KB) at the task's last sighting.  Identity
  fields come from the task's last record.  ``state`` says which of the four cases the row is
  (``ALIVE``: 0, or ``BORN`` | ``EXITED`` bits); ``attribution`` how ``cgroup_id`` was found.
  Fields ``ac_pid``, ``ac_comm``, ``ac_utime``, ``ac_stime``, ``cgroup_id`` are *fixed*.
* ``Interval.cgroups`` (*fixed*): ``{cgroup_id: "/path/below/the/v2/root"}`` for every cgroup
  seen at either look (the root is ``"/"``); empty when the host has no cgroup v2.
* ``Interval.psi`` (*fixed* name): a ``Pressure``: ``system`` is one ``PSI_DTYPE`` row from
  ``/proc/pressure`` (``cgroup_id`` 0), ``cgroups`` one row per cgroup seen at both looks;
  fields ``<resource>_some_us`` / ``<resource>_full_us`` are stall-time deltas in **µs** (the
  kernel's ``total=``), resources cpu, io, memory, irq.  A resource the kernel does not report
  there is 0 and absent from ``Pressure.resources``.
* ``Interval.lost`` (*fixed*): exit messages the kernel dropped during the interval (0: complete).
* ``Interval.cpu_stat_us``: ``{cgroup_id: µs}``, each cgroup's own ``cpu.stat`` usage over the
  interval where it is known (see accounting/reconcile.py); ``tasks["cpu_ns"]`` of its rows
  adds up to it when its exited tasks were reconciled (``FLAG_RECONCILED``).
* ``Interval.by(key)`` (*fixed*): rows summed per "process" | "cgroup" | "user" | "command" |
  "thread"; a pandas DataFrame, or a numpy structured array when pandas is not installed (or
  ``frame=False``).
* ``Interval.from_arrays(...)`` builds an Interval from plain arrays (synthetic tests, replay).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import (TYPE_CHECKING, Dict, List, Literal, Mapping, NamedTuple, Optional, Sequence, Tuple, Union,
                    overload)

import numpy as np

from .. import layout
from ..schema import PSI_KINDS, PSI_RESOURCES, require, to_pandas

if TYPE_CHECKING:  # pragma: no cover - typing only
    import pandas

__all__ = [
    "TASK_DTYPE", "TASK_FIELDS", "PSI_DTYPE", "PSI_FIELDS", "DELTA_FIELDS", "DERIVED_FIELDS", "SUMMED_FIELDS",
    "LEVEL_FIELDS", "IDENTITY_FIELDS", "DELAY_FIELDS", "summed_block", "psi_words", "stall_block",
    "PSI_RESOURCES", "PSI_KINDS", "ALIVE", "BORN", "EXITED", "EXACT", "INHERITED", "UNKNOWN",
    "FLAG_DELAYACCT_OFF", "FLAG_PID_REUSED", "FLAG_NO_START", "FLAG_RECONCILED", "GROUP_KEYS",
    "process_starts",
    "Pressure", "Interval",
]

# ---- row states: bit flags, so "born and exited inside" is BORN | EXITED ------------------
ALIVE = 0    #: alive at both looks
BORN = 1     #: not there at the first look (born inside the interval)
EXITED = 2   #: its exit record arrived inside the interval

# ---- how cgroup_id was found ----------------------------------------------------------------
UNKNOWN = 0    #: no v2 hierarchy, or never seen in one and no parent/thread group seen either
EXACT = 1      #: the task's thread id was listed in that cgroup's cgroup.threads at a look
INHERITED = 2  #: born and died between two looks: its thread group's or parent's cgroup

# ---- row flags ------------------------------------------------------------------------------
FLAG_DELAYACCT_OFF = 0x01  #: kernel.task_delayacct was off at a look: delays other than cpu are 0
FLAG_PID_REUSED = 0x02     #: another task used this pid inside the same interval
FLAG_NO_START = 0x04       #: not in the first look although older than it (the
                           #: first look raced its birth or missed it): charged the share of its
                           #: counters its time since the opening look is of its elapsed time
FLAG_RECONCILED = 0x08     #: exited, and ``cpu_ns`` is its share of its cgroup's cpu.stat usage
                           #: that the live tasks do not explain (accounting/reconcile.py)


DELAY_CLASSES: Tuple[str, ...] = tuple(c.name for c in layout.DELAY_CLASSES)
DELAY_FIELDS: Tuple[str, ...] = tuple(
    name for c in DELAY_CLASSES for name in (f"{c}_count", f"{c}_delay_total"))

#: Fields that are deltas over the interval (sums in ``by``).
DELTA_FIELDS: Tuple[str, ...] = (
    "ac_utime", "ac_stime", "cpu_run_real_total", "cpu_run_virtual_total",
    *DELAY_FIELDS,
    "read_bytes", "write_bytes", "cancelled_write_bytes",
    "read_char", "write_char", "read_syscalls", "write_syscalls",
    "ac_minflt", "ac_majflt", "nvcsw", "nivcsw",
)
#: Our own per-row figures, summed in ``by`` like the deltas.
#: ``cpu_ns``: the best CPU estimate for the row's interval (ns): the scheduler's own clock (the
#: ``cpu_run_virtual_total`` delta, the figure cgroup ``cpu.stat`` sums), for an exited task made
#: up to its share of what its cgroup's ``cpu.stat`` says the live tasks do not explain
#: (``FLAG_RECONCILED``; accounting/reconcile.py).  The raw kernel fields stay beside it:
#: ``ac_utime``/``ac_stime`` (tick samples, µs) and ``cpu_run_virtual_total`` (the scheduler's
#: clock, ns, stale at exit by the task's last stretch on the CPU).
DERIVED_FIELDS: Tuple[str, ...] = ("cpu_ns",)
SUMMED_FIELDS: Tuple[str, ...] = DERIVED_FIELDS + DELTA_FIELDS
#: Fields that are levels at the task's last sighting (maxima in ``by``).
LEVEL_FIELDS: Tuple[str, ...] = ("hiwater_rss", "hiwater_vm")
#: Identity fields copied from the task's last record.
IDENTITY_FIELDS: Tuple[str, ...] = ("ac_pid", "ac_tgid", "ac_ppid", "ac_uid", "ac_gid", "ac_comm")


def _build_task_dtype() -> np.dtype:
    d = layout.DTYPE
    fields: List[Tuple[str, object]] = [(name, d[name]) for name in IDENTITY_FIELDS]
    fields += [
        ("ac_btime64", "u8"),   # start time, s since the epoch (jitters by a second: not a key)
        ("cgroup_id", "u8"),    # cgroup v2 directory inode (0: unknown)
        ("ac_exitcode", "u4"),  # raw wait status; 0 unless EXITED
        ("state", "u1"),        # ALIVE / BORN | EXITED
        ("attribution", "u1"),  # EXACT / INHERITED / UNKNOWN
        ("flags", "u1"),        # FLAG_*
        ("_pad", "u1"),
    ]
    fields += [(name, "u8") for name in SUMMED_FIELDS + LEVEL_FIELDS]
    return np.dtype(fields, align=True)


#: One row of ``Interval.tasks``.
TASK_DTYPE: np.dtype = _build_task_dtype()
_TASK_OFFSETS = {name: spec[1] for name, spec in (TASK_DTYPE.fields or {}).items()}
_SUMMED_OFFSET = _TASK_OFFSETS[SUMMED_FIELDS[0]]
assert [_TASK_OFFSETS[f] for f in SUMMED_FIELDS + LEVEL_FIELDS] == \
    list(range(_SUMMED_OFFSET, _SUMMED_OFFSET + 8 * len(SUMMED_FIELDS + LEVEL_FIELDS), 8))


def summed_block(tasks: np.ndarray) -> np.ndarray:
    """The SUMMED_FIELDS of ``tasks`` (contiguous TASK_DTYPE rows) as one writable (n, fields)
    uint64 view: one pass over the rows instead of one per field."""
    if len(tasks) == 0:
        return np.zeros((0, len(SUMMED_FIELDS)), np.uint64)
    return np.ndarray((len(tasks), len(SUMMED_FIELDS)), np.uint64, buffer=tasks,
                      offset=_SUMMED_OFFSET, strides=(TASK_DTYPE.itemsize, 8))


#: Bytes of a cgroup path in rows that carry it (recorded interval rows): longer paths are cut
#: there (``cgroup_id`` stays exact; ``Interval.cgroups`` keeps the whole path).
CGROUP_PATH_BYTES = 256


def cgroup_paths(ids: np.ndarray, cgroups: Mapping[int, str]) -> np.ndarray:
    """The path of each cgroup id as fixed-width UTF-8 bytes (empty where unknown), looked up
    once per distinct id."""
    unique, index = np.unique(ids, return_inverse=True)
    paths = np.array([cgroups.get(int(i), "").encode("utf-8", "replace")[:CGROUP_PATH_BYTES]
                      for i in unique], dtype=f"S{CGROUP_PATH_BYTES}")
    return paths[index] if len(ids) else np.zeros(0, f"S{CGROUP_PATH_BYTES}")


#: TASK_DTYPE's field names.
TASK_FIELDS: Tuple[str, ...] = tuple(TASK_DTYPE.names or ())

#: The stall-time fields of a PSI_DTYPE row, in its order: each resource's some, then full.
PSI_FIELDS: Tuple[str, ...] = tuple(f"{r}_{kind}_us" for r in PSI_RESOURCES for kind in PSI_KINDS)
#: One row of pressure-stall time deltas (µs): cgroup_id 0 is the system (/proc/pressure).
PSI_DTYPE: np.dtype = np.dtype([("cgroup_id", "u8")] + [(name, "u8") for name in PSI_FIELDS])


# PSI_DTYPE is one u8 word per field: rows are viewed as an (n, words) block, so a delta is one
# subtraction over all counters, not one per field.
assert PSI_DTYPE.itemsize == 8 * (1 + len(PSI_FIELDS)) and all(
    PSI_DTYPE[name] == np.uint64 for name in PSI_DTYPE.names or ())


def psi_words(rows: np.ndarray) -> np.ndarray:
    """``rows`` (contiguous PSI_DTYPE rows, or one row) as one writable (n, 1 + fields) uint64
    view: ``cgroup_id``, then the PSI_FIELDS."""
    rows = np.ascontiguousarray(rows).reshape(-1)
    return rows.view(np.uint64).reshape(len(rows), 1 + len(PSI_FIELDS))


def stall_block(rows: np.ndarray) -> np.ndarray:
    """The PSI_FIELDS of ``rows`` (as for ``psi_words``) as one (n, fields) uint64 view."""
    return psi_words(rows)[:, 1:]

GROUP_KEYS: Dict[str, Tuple[str, ...]] = {
    "process": ("ac_tgid", "ac_btime64"),   # a process is (tgid, start): see _processes
    "cgroup": ("cgroup_id",),
    "user": ("ac_uid",),
    "command": ("ac_comm",),
    "thread": ("ac_pid", "ac_btime64"),
}


class Pressure(NamedTuple):
    """Pressure-stall time in one interval (deltas, µs)."""
    system: np.void                 #: one PSI_DTYPE row (cgroup_id 0) from /proc/pressure
    cgroups: np.ndarray             #: PSI_DTYPE rows, one per cgroup seen at both looks
    resources: Tuple[str, ...]      #: resources /proc/pressure reported (e.g. no irq: not built in)

    @classmethod
    def empty(cls) -> "Pressure":
        return cls(np.zeros(1, PSI_DTYPE)[0], np.zeros(0, PSI_DTYPE), ())

    def of(self, cgroup_id: int) -> Optional[np.void]:
        """The row of one cgroup, or None if it was not seen at both looks."""
        hit = np.flatnonzero(self.cgroups["cgroup_id"] == cgroup_id)
        return self.cgroups[hit[0]] if len(hit) else None


@dataclass
class Interval:
    """One interval of accounting: see the module docstring for the contract."""
    start_ns: int
    end_ns: int
    tasks: np.ndarray
    cgroups: Dict[int, str] = field(default_factory=dict)
    psi: Pressure = field(default_factory=Pressure.empty)
    lost: int = 0
    #: kernel.task_delayacct at both looks (None: unreadable)
    delayacct: Optional[bool] = None
    #: where the cgroup v2 hierarchy is mounted ("" when the host has none: no attribution)
    cgroup_root: str = ""
    #: sequence number of this interval within its Accounting (0 for the first)
    index: int = 0
    #: each cgroup's own cpu.stat ``usage_usec`` delta over the interval (its usage minus its
    #: children's; µs), where it is known: the exact figure the exited tasks are reconciled to
    cpu_stat_us: Dict[int, int] = field(default_factory=dict)

    # -- construction ------------------------------------------------------------------------
    @classmethod
    def from_arrays(cls, start_ns: int, end_ns: int, columns: Mapping[str, Sequence] | None = None,
                    *, n: Optional[int] = None, cgroups: Optional[Dict[int, str]] = None,
                    psi: Optional[Pressure] = None, lost: int = 0, **kw) -> "Interval":
        """An Interval from plain columns (``{"ac_pid": [...], "ac_utime": [...], ...}``); missing
        fields are zero.  For synthetic tests of the live surfaces and for replay."""
        columns = dict(columns or {})
        if n is None:
            n = len(next(iter(columns.values()))) if columns else 0
        tasks = np.zeros(n, TASK_DTYPE)
        for name, values in columns.items():
            if name not in TASK_FIELDS:
                raise KeyError(f"{name!r} is not a field of TASK_DTYPE")
            tasks[name] = values
        return cls(int(start_ns), int(end_ns), tasks, dict(cgroups or {}),
                   psi if psi is not None else Pressure.empty(), int(lost), **kw)

    # -- facts -------------------------------------------------------------------------------
    @property
    def seconds(self) -> float:
        return (self.end_ns - self.start_ns) / 1e9

    @property
    def complete(self) -> bool:
        """No exit message was lost: every task that ran is in ``tasks``."""
        return self.lost == 0

    @property
    def births(self) -> int:
        return int(np.count_nonzero(self.tasks["state"] & BORN))

    @property
    def exits(self) -> int:
        return int(np.count_nonzero(self.tasks["state"] & EXITED))

    @property
    def short_lived(self) -> int:
        """Tasks born and exited inside the interval."""
        return int(np.count_nonzero(self.tasks["state"] == BORN | EXITED))

    def counts(self) -> Dict[str, int]:
        """Rows by state and attribution."""
        state, attr = self.tasks["state"], self.tasks["attribution"]
        return {"tasks": len(self.tasks), "alive": int(np.count_nonzero(state == ALIVE)),
                "born": self.births, "exited": self.exits, "short_lived": self.short_lived,
                "exact": int(np.count_nonzero(attr == EXACT)),
                "inherited": int(np.count_nonzero(attr == INHERITED)),
                "unknown": int(np.count_nonzero(attr == UNKNOWN)), "lost": self.lost}

    def cpu_us(self) -> np.ndarray:
        """Tick-sampled CPU time of each row (µs): ``ac_utime + ac_stime``.  ``tasks["cpu_ns"]``
        is the closer estimate (see DERIVED_FIELDS)."""
        return self.tasks["ac_utime"] + self.tasks["ac_stime"]

    def __repr__(self) -> str:
        return (f"<Interval #{self.index} {self.seconds:.3f}s tasks={len(self.tasks)} "
                f"exits={self.exits} cgroups={len(self.cgroups)} lost={self.lost}>")

    # -- grouping ----------------------------------------------------------------------------
    @overload
    def by(self, key: str, *, frame: Literal[False]) -> np.ndarray: ...
    @overload
    def by(self, key: str, *, frame: Literal[True]) -> "pandas.DataFrame": ...
    @overload
    def by(self, key: str, *, frame: None = None) -> "Union[pandas.DataFrame, np.ndarray]": ...

    def by(self, key: str, *, frame: Optional[bool] = None) -> "Union[pandas.DataFrame, np.ndarray]":
        """The rows summed per ``key`` ("process", "cgroup", "user", "command", "thread").

        Deltas are summed, levels (hiwater_*) take the maximum; ``tasks``, ``born`` and
        ``exited`` count rows.  A process is (``ac_tgid``, start): when its id was reused inside
        the interval, the two processes are two groups.  Per process,
        ``ac_comm``/``ac_uid``/``ac_btime``/``cgroup_id`` are the leader's when it is among the
        rows (else the earliest row's), so (``ac_tgid``, ``ac_btime``) also tells a process
        from one that reused its id in another interval.  Returns a pandas
        DataFrame under the table column names (``frame()``; ``frame=None`` and pandas
        installed, or ``frame=True``) or a numpy structured array of the rows' field names
        (``frame=False``).
        """
        grouped = group_rows(self.tasks, key)
        if frame is None:
            try:
                import pandas  # noqa: F401
            except ImportError:
                return grouped
            frame = True
        if not frame:
            return grouped
        return self.frame(grouped)

    def frame(self, rows: Optional[np.ndarray] = None) -> "pandas.DataFrame":
        """``rows`` (default: ``tasks``; or an ``Interval.by(..., frame=False)`` result) as a
        pandas DataFrame under the one naming table's column names and units (``ac_utime_us``,
        ``cpu_delay_total_ns``, ``ac_btime`` as a UTC timestamp, int64 counters, the decoded
        exit status), with the cgroup's path (``cgroup``, a category) where the rows carry
        ``cgroup_id``.  Needs ``taskstats_fast[pandas]``."""
        rows = self.tasks if rows is None else rows
        df = to_pandas(rows)
        if "cgroup_id" in df:
            position = list(df.columns).index("cgroup_id") + 1
            paths = cgroup_paths(rows["cgroup_id"], self.cgroups)
            df.insert(position, "cgroup", require("pandas", "pandas", "Interval.frame()").Categorical(
                [p.decode("utf-8", "replace") for p in paths]))
        return df


def group_dtype(key: str) -> np.dtype:
    """The dtype of ``Interval.by(key, frame=False)``."""
    if key not in GROUP_KEYS:
        raise ValueError(f"by() takes one of {', '.join(GROUP_KEYS)}, not {key!r}")
    return _group_dtype(key)


@functools.lru_cache(maxsize=None)
def _group_dtype(key: str) -> np.dtype:   # built once per key: np.dtype of 40 fields is not free
    carried = {"process": ("ac_tgid", "ac_comm", "ac_uid", "ac_btime64", "cgroup_id"),
               "cgroup": ("cgroup_id",), "user": ("ac_uid",), "command": ("ac_comm",),
               "thread": IDENTITY_FIELDS + ("ac_btime64", "cgroup_id", "attribution", "state")}[key]
    fields: List[Tuple[str, object]] = [(name, TASK_DTYPE[name]) for name in carried]
    fields += [("tasks", "u8"), ("born", "u8"), ("exited", "u8")]
    fields += [(name, "u8") for name in SUMMED_FIELDS + LEVEL_FIELDS]
    return np.dtype(fields)


def _run_starts(rows: np.ndarray, keys: Sequence[str]) -> np.ndarray:
    """Where each run of equal ``keys`` begins in sorted ``rows``."""
    change = np.zeros(len(rows), bool)
    change[0] = True
    for k in keys:
        change[1:] |= rows[k][1:] != rows[k][:-1]
    return np.flatnonzero(change)


def process_starts(tgid: np.ndarray, pid: np.ndarray, btime: np.ndarray,
                   alive: Optional[np.ndarray] = None) -> np.ndarray:
    """The start (``ac_btime``, s) of the process each row belongs to, so that (tgid, start)
    is a process even where its tgid was reused: a leader's (``pid == tgid``) is its own; a
    thread's is that of the latest leader of its tgid that started no later than it did (a pid
    is reused only after its whole thread group is gone, so an earlier process's threads all
    started before the next leader), else the first leader's.  ``ac_btime`` is whole seconds
    and can read a second late (``floor(now) - floor(elapsed)``), so a thread can seem to start
    a second before its leader: a leader that seems to start at most a second after a thread
    counts as no later (an earlier process's thread started within about two seconds of the
    next one's start is then taken for the next one's).  A thread still ``alive`` at the end of
    an interval can only be the last leader's.  0 where the tgid has no leader among the rows."""
    tgid, btime = tgid.astype(np.uint64), btime.astype(np.uint64)
    key = (tgid << np.uint64(32)) | btime              # starts fit 32 bits until 2106
    leaders = np.unique(key[pid == tgid])
    if not len(leaders):
        return np.zeros(len(key), np.uint64)
    low = np.uint64(2**32 - 1)

    def of_tgid(at: np.ndarray) -> np.ndarray:   # leader ``at`` valid and of the row's tgid?
        inside = (at >= 0) & (at < len(leaders))
        return inside & ((leaders[np.clip(at, 0, len(leaders) - 1)] >> np.uint64(32)) == tgid)

    latest = np.searchsorted(leaders, key + np.uint64(1), side="right") - 1   # a second late
    first = np.searchsorted(leaders, tgid << np.uint64(32))
    last = np.searchsorted(leaders, (tgid + np.uint64(1)) << np.uint64(32)) - 1
    if alive is not None:
        latest = np.where(alive & (pid != tgid), last, latest)
    chosen = np.where(of_tgid(latest), latest, first)
    return np.where(of_tgid(chosen), leaders[np.clip(chosen, 0, len(leaders) - 1)] & low,
                    np.uint64(0))


def _processes(tasks: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """``tasks`` ordered by process (tgid, start: ``process_starts``), and where each process
    begins; the leader heads its process's rows (then the earliest), so its identity is the
    group's."""
    leader = tasks["ac_pid"] == tasks["ac_tgid"]
    tasks = layout.take_records(tasks, np.lexsort((tasks["ac_btime64"], ~leader, tasks["ac_tgid"])))
    leader = tasks["ac_pid"] == tasks["ac_tgid"]
    tgid_starts = _run_starts(tasks, ("ac_tgid",))
    if (np.add.reduceat(leader.astype(np.int64), tgid_starts) <= 1).all():
        return tasks, tgid_starts   # no tgid reused inside the interval: one process per tgid
    start = process_starts(tasks["ac_tgid"], tasks["ac_pid"], tasks["ac_btime64"],
                           alive=(tasks["state"] & EXITED) == 0)
    order = np.lexsort((tasks["ac_btime64"], ~leader, start, tasks["ac_tgid"]))
    tasks, start = layout.take_records(tasks, order), start[order]
    change = np.zeros(len(tasks), bool)
    change[0] = True
    change[1:] = (tasks["ac_tgid"][1:] != tasks["ac_tgid"][:-1]) | (start[1:] != start[:-1])
    return tasks, np.flatnonzero(change)


def group_rows(tasks: np.ndarray, key: str, *, fields: Optional[Sequence[str]] = None) -> np.ndarray:
    """``tasks`` summed per ``key`` (see ``Interval.by``), in numpy: one sort, then
    ``np.add.reduceat`` per field (exact in uint64, unlike bincount's float weights).
    ``fields``: sum (or take the maximum of) only these counters, the others stay 0 -- for a
    caller that shows a few columns of a large interval (``top``'s screen)."""
    out_dtype = group_dtype(key)
    summed = SUMMED_FIELDS if fields is None else tuple(f for f in SUMMED_FIELDS if f in fields)
    levels = LEVEL_FIELDS if fields is None else tuple(f for f in LEVEL_FIELDS if f in fields)
    keys = GROUP_KEYS[key]
    if len(tasks) == 0:
        return layout.zeros_records(0, out_dtype)
    if key == "process":
        rows, starts = _processes(tasks)
    else:
        rows = layout.take_records(tasks, np.lexsort(tuple(tasks[k] for k in reversed(keys))))
        starts = _run_starts(rows, keys)
    out = layout.zeros_records(len(starts), out_dtype)
    for name in out_dtype.names or ():
        if name in TASK_FIELDS and name not in SUMMED_FIELDS + LEVEL_FIELDS:
            out[name] = rows[name][starts]
    out["tasks"] = np.diff(np.append(starts, len(rows)))
    out["born"] = np.add.reduceat((rows["state"] & BORN).astype(np.uint64) // BORN, starts)
    out["exited"] = np.add.reduceat((rows["state"] & EXITED).astype(np.uint64) // EXITED, starts)
    for name in summed:
        out[name] = np.add.reduceat(rows[name], starts)
    for name in levels:
        out[name] = np.maximum.reduceat(rows[name], starts)
    return out
