"""The layout of ``struct taskstats`` as data, and everything derived from it.

This module is the single source of truth for the record format.  ``FIELDS`` lists every field
of the kernel's struct in v16/v17 order with its C type, the struct version that added it, its unit
and a one-line meaning.  From that table (and nothing else) we derive:

* the byte offsets of every field in every struct version, using the C layout rules
  (natural alignment plus the kernel's ``aligned(8)`` attributes);
* ``DTYPE``: one numpy record that mirrors the v17 ABI byte for byte and appends our metadata
  (kind, id, seq, ...), so a payload of any version is a prefix copy into it;
* ``STRUCT_SIZE[v]`` per version, and the copy plan the C core follows (v15 is the only version
  that is not a prefix of v17: its ``*_delay_max/min`` pairs sit in the middle of the struct);
* which fields a record of a given version carries (``fields_in(version)``).

It also owns how arrays of a structured dtype (this one, or any other many-field record) are
made, joined, taken and copied: as bytes (``join_records``, ``empty_records``...), because numpy
walks every field each time it makes, views or copies such an array (see ``empty_records``).

``DELAY_CLASSES`` lists the kinds of delay (run queue, block I/O, ...): the fields of each class
are generated from it, and everything else that names delay classes reads it.

``tests/test_layout_compiler.py`` checks every derived offset and size against a C compiler.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, FrozenSet, Iterable, List, Optional, Sequence, Tuple

import numpy as np

__all__ = [
    "Field", "FIELDS", "FIELD_BY_NAME", "MIN_VERSION", "MAX_VERSION", "STRUCT_SIZE",
    "DelayClass", "DELAY_CLASSES", "DELAY_CLASS_BY_NAME",
    "DTYPE", "RECORD_FIELDS", "STATS_SIZE", "META_FIELDS", "offsets", "fields_in", "copy_segments",
    "KIND_PID", "KIND_TGID", "TGID_FIELDS", "FLAG_NEWER_VERSION", "FLAG_LAYOUT_INFERRED",
    "join_records", "empty_records", "zeros_records", "take_records", "copy_records",
]

#: Oldest struct version we decode: v1-v3 (2006 kernels) have word-size-dependent layouts.
MIN_VERSION = 4
#: Newest struct version whose layout we know; newer versions are decoded as their v17 prefix.
MAX_VERSION = 17

#: C type -> (numpy format, size, natural alignment)
_CTYPES = {
    "__u8": ("u1", 1, 1),
    "__u16": ("u2", 2, 2),
    "__u32": ("u4", 4, 4),
    "__u64": ("u8", 8, 8),
    "__s64": ("i8", 8, 8),
    "char": ("S1", 1, 1),
}


@dataclass(frozen=True)
class Field:
    """One member of ``struct taskstats``.

    ``count`` > 1 makes a C array; ``char`` arrays become numpy ``S<count>`` strings.
    ``aligned8`` mirrors the kernel's ``__attribute__((aligned(8)))``.
    ``v15_after`` names the field this one followed in the broken v15 layout (only the
    ``*_delay_max/min`` fields moved).  ``padding`` members keep their C offset but get no
    numpy field (the kernel zeroes them; they would only clutter every table).  ``c_name`` is the C
    expression for ``offsetof`` when the numpy name differs (the flattened ``struct timespec64`` members of v17).
    """

    name: str
    ctype: str
    since: int
    unit: str
    doc: str
    count: int = 1
    aligned8: bool = False
    v15_after: Optional[str] = None
    c_name: Optional[str] = None
    padding: bool = False

    @property
    def size(self) -> int:
        return _CTYPES[self.ctype][1] * self.count

    @property
    def align(self) -> int:
        return 8 if self.aligned8 else _CTYPES[self.ctype][2]

    @property
    def numpy_format(self):
        fmt = _CTYPES[self.ctype][0]
        if self.ctype == "char":
            return f"S{self.count}"
        return fmt if self.count == 1 else (fmt, (self.count,))


@dataclass(frozen=True)
class DelayClass:
    """One kind of delay the kernel accounts: the ``<name>_count`` / ``<name>_delay_total``
    pair (and from v15 ``_delay_max``/``_delay_min``, from v17 ``_delay_max_ts``).

    ``label`` is the short human name (reports, plots, help); ``waiting`` completes "time
    waiting ..." in the field docs; ``since`` is the struct version that added the pair;
    ``switched`` says whether the ``kernel.task_delayacct`` sysctl turns it on and off (run-queue
    delays come from the scheduler's own statistics and are always filled).
    ``short`` is a column title of at most 6 characters (the delay columns of ``top``).
    ``waits_for`` names what the task waited for, as the ``class`` label of ``serve``'s delay
    metrics (node_exporter style: ``runqueue``, not the struct's ``cpu``).
    """

    name: str
    label: str
    waiting: str
    since: int
    switched: bool
    short: str
    waits_for: str

    @property
    def fields(self) -> Tuple[str, ...]:
        """The struct fields of this class (count, total, max, min, max timestamp)."""
        return tuple(f.name for f in FIELDS if f.name == f"{self.name}_count"
                     or f.name.startswith(f"{self.name}_delay_"))


#: Every delay class, in the order of the v16 ``*_delay_max/min`` block (also the order of
#: their count/total pairs in the struct).  The one list: fields, the delay-accounting switch,
#: reports and summaries all derive from it.
DELAY_CLASSES: Tuple[DelayClass, ...] = (
    DelayClass("cpu", "run queue", "on a run queue", 1, False, short="RUNQ", waits_for="runqueue"),
    DelayClass("blkio", "block I/O", "for synchronous block I/O", 1, True, short="BLKIO", waits_for="block_io"),
    DelayClass("swapin", "swap-in", "for swap-in", 1, True, short="SWAPIN", waits_for="swap_in"),
    DelayClass("freepages", "memory reclaim", "in memory reclaim", 7, True, short="RECLM", waits_for="reclaim"),
    DelayClass("thrashing", "thrashing", "on thrashing (refaults of recently evicted pages)", 9,
               True, short="THRASH", waits_for="thrashing"),
    DelayClass("compact", "compaction", "in memory compaction", 11, True, short="COMPCT", waits_for="compaction"),
    DelayClass("wpcopy", "write-protect copy", "on write-protect copy (copy-on-write faults)", 13,
               True, short="WPCOPY", waits_for="write_protect_copy"),
    DelayClass("irq", "IRQ/softirq", "in IRQ/softirq handling", 14, True, short="IRQ", waits_for="irq"),
)
DELAY_CLASS_BY_NAME: Dict[str, DelayClass] = {c.name: c for c in DELAY_CLASSES}


def _u64(name, since, unit, doc, **kw):
    return Field(name, "__u64", since, unit, doc, **kw)


def _delay_pair(name: str, **count_options) -> List[Field]:
    cls = DELAY_CLASS_BY_NAME[name]
    return [
        _u64(f"{name}_count", cls.since, "count", f"times the task waited {cls.waiting}",
             **count_options),
        _u64(f"{name}_delay_total", cls.since, "ns", f"total time waiting {cls.waiting}"),
    ]


def _build_fields() -> List[Field]:
    f: List[Field] = []
    f += [
        Field("version", "__u16", 1, "", "struct taskstats version of this record"),
        Field("ac_exitcode", "__u32", 1, "", "raw wait status (exit code << 8 | signal)"),
        Field("ac_flag", "__u8", 1, "", "accounting flags: AFORK 1, ASU 2, ACORE 8, AXSIG 16, AGROUP 32"),
        Field("ac_nice", "__u8", 1, "", "task nice value"),
    ]
    f += _delay_pair("cpu", aligned8=True)
    f += _delay_pair("blkio")
    f += _delay_pair("swapin")
    f += [
        _u64("cpu_run_real_total", 1, "ns", "CPU time, user + system as the tick accounting sees it"),
        _u64("cpu_run_virtual_total", 1, "ns", "CPU time the scheduler measured (sum_exec_runtime)"),
        Field("ac_comm", "char", 2, "", "command name (NUL padded)", count=32),
        Field("ac_sched", "__u8", 2, "", "scheduling discipline", aligned8=True),
        Field("ac_pad", "__u8", 2, "", "padding", count=3, padding=True),
        Field("ac_uid", "__u32", 2, "", "user id", aligned8=True),
        Field("ac_gid", "__u32", 2, "", "group id"),
        Field("ac_pid", "__u32", 2, "", "process (thread) id"),
        Field("ac_ppid", "__u32", 2, "", "parent process id"),
        Field("ac_btime", "__u32", 2, "s", "begin time since the epoch (clamped to u32)"),
        _u64("ac_etime", 2, "us", "elapsed time since the task began", aligned8=True),
        _u64("ac_utime", 2, "us", "user CPU time"),
        _u64("ac_stime", 2, "us", "system CPU time"),
        _u64("ac_minflt", 2, "count", "minor page faults"),
        _u64("ac_majflt", 2, "count", "major page faults"),
        _u64("coremem", 2, "MB*us", "accumulated RSS usage"),
        _u64("virtmem", 2, "MB*us", "accumulated virtual memory usage"),
        _u64("hiwater_rss", 2, "KB", "high-water mark of RSS"),
        _u64("hiwater_vm", 2, "KB", "high-water mark of virtual memory"),
        _u64("read_char", 2, "bytes", "bytes read (rounded down to KiB)"),
        _u64("write_char", 2, "bytes", "bytes written (rounded down to KiB)"),
        _u64("read_syscalls", 2, "count", "read syscalls"),
        _u64("write_syscalls", 2, "count", "write syscalls"),
        _u64("read_bytes", 3, "bytes", "bytes read from storage"),
        _u64("write_bytes", 3, "bytes", "bytes written to storage"),
        _u64("cancelled_write_bytes", 3, "bytes", "bytes of cancelled writeback"),
        _u64("nvcsw", 5, "count", "voluntary context switches"),
        _u64("nivcsw", 5, "count", "involuntary context switches"),
        _u64("ac_utimescaled", 6, "us", "user CPU time scaled by CPU frequency"),
        _u64("ac_stimescaled", 6, "us", "system CPU time scaled by CPU frequency"),
        _u64("cpu_scaled_run_real_total", 6, "ns", "scaled CPU time on the wall clock"),
    ]
    f += _delay_pair("freepages")
    f += _delay_pair("thrashing")
    f.append(_u64("ac_btime64", 10, "s", "begin time since the epoch (64-bit)"))
    f += _delay_pair("compact")
    f += [
        Field("ac_tgid", "__u32", 12, "", "thread group id"),
        _u64("ac_tgetime", 12, "us", "elapsed time of the thread group", aligned8=True),
        _u64("ac_exe_dev", 12, "", "device of the executable (kernel dev_t encoding)"),
        _u64("ac_exe_inode", 12, "", "inode of the executable"),
    ]
    f += _delay_pair("wpcopy")
    f += _delay_pair("irq")
    # v15 added max/min per delay class right after each X_delay_total; v16 moved them here.
    for cls in DELAY_CLASSES:
        prefix, what = cls.name, cls.waiting
        f.append(_u64(f"{prefix}_delay_max", 15, "ns", f"longest single delay {what}",
                      v15_after=f"{prefix}_delay_total"))
        f.append(_u64(f"{prefix}_delay_min", 15, "ns", f"shortest single delay {what}",
                      v15_after=f"{prefix}_delay_max"))
    for cls in DELAY_CLASSES:
        prefix, what = cls.name, cls.waiting
        f.append(Field(f"{prefix}_delay_max_ts_sec", "__s64", 17, "s",
                       f"when the longest delay {what} happened (seconds)",
                       c_name=f"{prefix}_delay_max_ts.tv_sec"))
        f.append(Field(f"{prefix}_delay_max_ts_nsec", "__s64", 17, "ns",
                       f"when the longest delay {what} happened (nanoseconds part)",
                       c_name=f"{prefix}_delay_max_ts.tv_nsec"))
    return f


# ---- metadata appended after the v17 stats area -------------------------------------------
KIND_PID = 1    #: record came from a TASKSTATS_TYPE_AGGR_PID nest (one thread)
KIND_TGID = 2   #: record came from a TASKSTATS_TYPE_AGGR_TGID nest (a whole thread group)

FLAG_NEWER_VERSION = 0x01    #: version > MAX_VERSION: only the known v17 prefix was decoded
FLAG_LAYOUT_INFERRED = 0x02  #: version-0 TGID record decoded with its message's PID record layout

#: (name, numpy format, meaning) of the fields after the stats area, in order.
META_FIELDS = (
    ("time_ns", "u8", "CLOCK_REALTIME ns when the datagram was received (0 when decoded from bytes)"),
    ("kind", "u1", "1 = PID record (one thread), 2 = TGID record (thread group aggregate)"),
    ("flags", "u1", "FLAG_NEWER_VERSION, FLAG_LAYOUT_INFERRED"),
    ("layout", "u2", "struct version whose layout decoded the payload: fields newer than it are "
                     "not reported (0 would mean none)"),
    ("id", "u4", "pid (kind 1) or tgid (kind 2) carried beside the stats"),
    ("seq", "u4", "netlink sequence number of the message (per-CPU counter for exit events)"),
    ("shard", "u4", "index of the listener socket that delivered the record (0 for queries)"),
)


def _fill_alignment_holes(names, formats, offsets_):
    """Name the holes that natural alignment alone would not leave (the bytes before ac_uid,
    which only the kernel's aligned(8) puts at 120).

    numpy canonicalises structured dtypes whenever it combines arrays (np.concatenate,
    np.result_type): it re-lays the fields out by natural alignment.  With every such hole
    named, that re-layout is the identity, so concatenated batches keep DTYPE byte for byte.
    """
    out = ([], [], [])
    pos = 0
    for name, fmt, off in zip(names, formats, offsets_):
        natural = -(-pos // np.dtype(fmt).alignment) * np.dtype(fmt).alignment
        if natural != off:
            out[0].append(f"_pad{pos}")
            out[1].append(f"V{off - pos}")
            out[2].append(pos)
        out[0].append(name)
        out[1].append(fmt)
        out[2].append(off)
        pos = off + np.dtype(fmt).itemsize
    return out


class Layout:
    """Everything derived from one field table: per-version offsets and sizes, the copy plans,
    ``DTYPE``.  The module's names (``FIELDS``, ``DTYPE``, ``offsets`` ...) are those of
    ``CURRENT``, the layout of today's table; tests build others (``CURRENT.extended``: a
    future struct version) to prove that what we write today stays readable.

    ``fields``: every field in the newest version's order; ``max_version``: the newest struct
    version the table describes.
    """

    def __init__(self, fields: Iterable[Field], max_version: int):
        self.FIELDS: Tuple[Field, ...] = tuple(fields)
        self.FIELD_BY_NAME: Dict[str, Field] = {f.name: f for f in self.FIELDS}
        self.MIN_VERSION = MIN_VERSION
        self.MAX_VERSION = max_version
        self.META_FIELDS = META_FIELDS
        self._layouts = {v: self._layout(v) for v in range(MIN_VERSION, max_version + 1)}
        #: sizeof(struct taskstats) for each supported version.
        self.STRUCT_SIZE: Dict[int, int] = {v: size for v, (_, size) in self._layouts.items()}
        #: Bytes of the stats area at the start of every DTYPE record (the newest struct).
        self.STATS_SIZE = self.STRUCT_SIZE[max_version]
        self.DTYPE: np.dtype = self._build_dtype()
        self.RECORD_FIELDS: Tuple[str, ...] = tuple(
            n for n in self.DTYPE.names or () if not n.startswith("_pad"))

    def extended(self, fields: Iterable[Field], max_version: int) -> "Layout":
        """This table plus ``fields`` (appended, as the kernel appends to the struct), up to
        struct version ``max_version``."""
        return Layout(self.FIELDS + tuple(fields), max_version)

    def _order(self, version: int) -> List[Field]:
        """The fields present in ``version``, in that version's memory order."""
        present = [f for f in self.FIELDS if f.since <= version]
        if version != 15:
            return present
        moved = [f for f in present if f.v15_after]
        order = [f for f in present if not f.v15_after]
        for f in moved:  # each moved field goes right after the one it followed in v15
            after = f.v15_after
            assert after is not None   # that is what put it in ``moved``
            order.insert(order.index(self.FIELD_BY_NAME[after]) + 1, f)
        return order

    def _layout(self, version: int) -> Tuple[Dict[str, int], int]:
        """C layout rules: each member at the next multiple of its alignment; size padded to 8."""
        offs: Dict[str, int] = {}
        pos = 0
        for f in self._order(version):
            pos = -(-pos // f.align) * f.align
            offs[f.name] = pos
            pos += f.size
        return offs, -(-pos // 8) * 8

    def offsets(self, version: int) -> Dict[str, int]:
        """Byte offset of every field carried by struct version ``version``."""
        return dict(self._layouts[version][0])

    def fields_in(self, version: int) -> Tuple[str, ...]:
        """Names of the fields a record of struct version ``version`` carries (newer versions:
        all known fields; below 4: none, such records are refused)."""
        if version < MIN_VERSION:
            return ()
        return tuple(f.name for f in self.FIELDS
                     if f.since <= min(version, self.MAX_VERSION) and not f.padding)

    def carried(self, records: np.ndarray, field: str) -> np.ndarray:
        """Boolean array: does each record's struct version report ``field``?"""
        try:
            since = self.FIELD_BY_NAME[field].since
        except KeyError:
            raise KeyError(f"{field!r} is not a struct taskstats field") from None
        return records["layout"] >= max(since, MIN_VERSION)

    def copy_segments(self, version: int) -> List[Tuple[int, int, int]]:
        """How a payload of ``version`` lands in a DTYPE record: ``(src, dst, length)`` runs.

        Every version but 15 is a prefix of the newest: one run.  v15 is split wherever a
        field's offset differs from its newest offset by a different amount than its
        neighbour's.
        """
        size = self.STRUCT_SIZE[version]
        if version != 15:
            return [(0, 0, size)]
        src = self._layouts[15][0]
        dst = self._layouts[self.MAX_VERSION][0]
        runs: List[List[int]] = []
        for f in sorted(self._order(15), key=lambda f: src[f.name]):
            s, d = src[f.name], dst[f.name]
            if runs and s - runs[-1][0] == d - runs[-1][1]:
                runs[-1][2] = s + f.size - runs[-1][0]   # extend (holes between come along, both zero)
            else:
                runs.append([s, d, f.size])
        return [tuple(r) for r in runs]  # type: ignore[misc]

    def _build_dtype(self) -> np.dtype:
        offs = self._layouts[self.MAX_VERSION][0]
        names, formats, offsets_ = [], [], []
        for f in self.FIELDS:
            if f.padding:
                continue
            names.append(f.name)
            formats.append(f.numpy_format)
            offsets_.append(offs[f.name])
        pos = self.STATS_SIZE
        for name, fmt, _ in META_FIELDS:
            size = np.dtype(fmt).itemsize
            pos = -(-pos // size) * size
            names.append(name)
            formats.append(fmt)
            offsets_.append(pos)
            pos += size
        names, formats, offsets_ = _fill_alignment_holes(names, formats, offsets_)
        return np.dtype({"names": names, "formats": formats, "offsets": offsets_,
                         "itemsize": -(-pos // 8) * 8, "aligned": True})


#: The layout of today's table.
CURRENT = Layout(_build_fields(), MAX_VERSION)
#: Every field of ``struct taskstats`` in v16/v17 order.
FIELDS: Tuple[Field, ...] = CURRENT.FIELDS
FIELD_BY_NAME: Dict[str, Field] = CURRENT.FIELD_BY_NAME
#: sizeof(struct taskstats) for each supported version.
STRUCT_SIZE: Dict[int, int] = CURRENT.STRUCT_SIZE
#: Bytes of the stats area at the start of every DTYPE record (the v17 struct).
STATS_SIZE = CURRENT.STATS_SIZE
offsets = CURRENT.offsets
fields_in = CURRENT.fields_in
copy_segments = CURRENT.copy_segments
#: One decoded record: the v17 ``struct taskstats`` byte for byte, then our metadata.
DTYPE: np.dtype = CURRENT.DTYPE
#: DTYPE's fields that carry data (DTYPE also names its alignment holes ``_pad<offset>``).
RECORD_FIELDS: Tuple[str, ...] = CURRENT.RECORD_FIELDS


#: The fields a TGID record fills: the kernel sums times, context switches and delays over the
#: group's threads (fill_stats_for_tgid); identity, memory, I/O and page-fault fields stay zero
#: in a TGID record, which means "not reported", not "none".
TGID_FIELDS: FrozenSet[str] = frozenset(
    ["version", "ac_etime", "ac_utime", "ac_stime", "nvcsw", "nivcsw", "cpu_run_real_total",
     "cpu_run_virtual_total", "cpu_scaled_run_real_total"]
    + [name for c in DELAY_CLASSES for name in c.fields])


def join_records(arrays: Sequence[np.ndarray], dtype: Optional[np.dtype] = None) -> np.ndarray:
    """``np.concatenate(arrays)`` of one-dimensional record arrays, into a fresh array of
    ``dtype`` (default: the first array's, or DTYPE when there is none), joined as bytes when
    every array has that dtype.

    np.concatenate promotes a structured dtype field by field, in Python, on every call (with
    ``out=`` too), which costs far more than the copy for DTYPE's 95 fields.  The bytes of
    records of one dtype are the records, holes and tail padding included, so joining them as
    bytes keeps the dtype exactly (np.concatenate alone would drop a tail padding).  Arrays of
    another dtype are cast into ``dtype`` as ``np.concatenate(arrays, out=...)`` does."""
    if dtype is None:
        dtype = arrays[0].dtype if len(arrays) else DTYPE
    if not len(arrays):
        return np.zeros(0, dtype)
    if any(a.dtype != dtype for a in arrays):
        out = np.empty(sum(len(a) for a in arrays), dtype)
        return np.concatenate(arrays, out=out)
    as_bytes = [np.ascontiguousarray(a).view(np.uint8) for a in arrays]
    return np.concatenate(as_bytes).view(dtype)


def empty_records(n: int, dtype: np.dtype = DTYPE) -> np.ndarray:
    """``np.empty(n, dtype)`` for a structured ``dtype``, made over a byte buffer.

    numpy walks a structured dtype's fields each time it allocates an array of it (several
    microseconds for DTYPE's 95 fields, whatever ``n``) and checks its bytes on each ``view``
    into it; an array over a buffer it did not allocate skips both (a fraction of a
    microsecond).  The array's ``base`` is that uint8 buffer."""
    return np.frombuffer(np.empty(n * dtype.itemsize, np.uint8), dtype)


def zeros_records(n: int, dtype: np.dtype = DTYPE) -> np.ndarray:
    """``np.zeros(n, dtype)`` for a structured ``dtype``, made as ``empty_records`` is."""
    return np.frombuffer(np.zeros(n * dtype.itemsize, np.uint8), dtype)


def take_records(records: np.ndarray, index: np.ndarray) -> np.ndarray:
    """``records[index]`` (an integer index or a boolean mask) copied as bytes: numpy copies a
    structured dtype field by field, tens of times slower for DTYPE than its bytes."""
    raw = np.ascontiguousarray(records).view(np.uint8).reshape(len(records), records.dtype.itemsize)
    return np.frombuffer(raw[index], records.dtype)


def copy_records(records: np.ndarray) -> np.ndarray:
    """``records.copy()`` as bytes (see ``take_records``)."""
    return np.frombuffer(np.ascontiguousarray(records).view(np.uint8).copy(), records.dtype)


def field_version_table() -> Iterable[Tuple[str, str, str, int, str]]:
    """(name, C type, unit, version added, meaning) rows, for documentation."""
    for f in FIELDS:
        ctype = f"{f.ctype}[{f.count}]" if f.count > 1 else f.ctype
        yield f.name, ctype, f.unit, f.since, f.doc
