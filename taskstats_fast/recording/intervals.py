"""Accounting intervals as recordings: the row layout of an interval's rows on disk, and
``record_intervals()``, the loop that drives an ``Accounting`` into a sink.

An interval recording holds one row per task (``by="task"``: ``Interval.tasks``) or per process
(``by="process"``: ``Interval.by("process")``) for every interval, each row stamped with its
interval's bounds (``interval_start``/``interval_end`` columns, UTC timestamps).  The other
columns carry the field names of ``accounting.interval`` (deltas over the interval, in the
units its docstring gives).  Files go through the same registry, writers and ``FileSink`` as
exit recordings (hive-partitioned datasets, rotation, metadata); their metadata says
``rows: "interval"`` and ``by``, which is how ``read_frame`` and ``summarize`` tell them from
exit records and snapshots.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, Mapping, Optional, Tuple

import numpy as np

from ..accounting.interval import TASK_DTYPE, Interval, group_dtype, group_rows
from .columns import RowSchema, TableSchema
from .driver import Stop, stop_check
from .metadata import utc
from .sinks import CountingSink, Sink, SinkStats

__all__ = ["INTERVAL_ROWS", "BY", "row_dtype", "interval_schema", "interval_rows",
           "schema_of_metadata", "record_intervals", "IntervalRecordResult", "IntervalStats"]

#: The ``rows`` metadata value of files holding interval rows.
INTERVAL_ROWS = "interval"
#: What one row can be: a task (thread), or a process (its threads summed).
BY: Tuple[str, ...] = ("task", "process")
#: The fields stamping each row with its interval (u64 ns since the epoch in the rows, UTC
#: timestamp columns of the same names in tables: so npy files and tables have the same names).
_TIME_COLUMNS = {"interval_start": "interval_start", "interval_end": "interval_end"}
_DOCS = {"interval_start": "when the interval began (the opening look)",
         "interval_end": "when the interval ended (the closing look)"}


@functools.lru_cache(maxsize=None)
def row_dtype(by: str = "task") -> np.dtype:
    """The dtype of the rows an interval recording holds ``by`` task or process."""
    if by not in BY:
        raise ValueError(f"interval rows are per {' or per '.join(BY)}, not {by!r}")
    source = TASK_DTYPE if by == "task" else group_dtype("process")
    return np.dtype([(name, "u8") for name in _TIME_COLUMNS]
                    + [(name, source[name]) for name in source.names or ()
                       if not name.startswith("_pad")])


class IntervalStats:
    """What one file's interval rows add up to (its metadata): rows, intervals, time span."""

    def __init__(self) -> None:
        self.records = 0
        self.starts: set = set()
        self.first_ns: Optional[int] = None
        self.last_ns: Optional[int] = None

    def add(self, rows: np.ndarray) -> None:
        if not len(rows):
            return
        self.records += len(rows)
        self.starts.update(int(s) for s in np.unique(rows["interval_start"]))
        lo, hi = int(rows["interval_start"].min()), int(rows["interval_end"].max())
        self.first_ns = lo if self.first_ns is None else min(self.first_ns, lo)
        self.last_ns = hi if self.last_ns is None else max(self.last_ns, hi)

    def as_metadata(self) -> Dict[str, Any]:
        return {"records": self.records, "intervals": len(self.starts),
                "first_interval_start": utc(self.first_ns), "last_interval_end": utc(self.last_ns),
                "first_record_ns": self.first_ns, "last_record_ns": self.last_ns}


@functools.lru_cache(maxsize=None)
def interval_schema(by: str = "task") -> RowSchema:
    """The ``columns`` schema of interval rows ``by`` task or process (for ``FileSink`` and the
    readers)."""
    return RowSchema(row_dtype(by), timestamps=_TIME_COLUMNS, required=tuple(_TIME_COLUMNS.values()),
                     docs=_DOCS, stats=IntervalStats,
                     metadata={"rows": INTERVAL_ROWS, "by": by, "source": "accounting intervals"})


def schema_of_metadata(metadata: Mapping[str, Any]) -> Optional[TableSchema]:
    """The schema of a file with this metadata when it holds interval rows (None: records)."""
    if metadata.get("rows") != INTERVAL_ROWS:
        return None
    return interval_schema(str(metadata.get("by", "task")))


def interval_rows(iv: Interval, by: str = "task") -> np.ndarray:
    """The rows of one interval as an interval recording holds them (``row_dtype(by)``)."""
    source = iv.tasks if by == "task" else group_rows(iv.tasks, "process")
    out = np.zeros(len(source), row_dtype(by))
    out["interval_start"] = iv.start_ns
    out["interval_end"] = iv.end_ns
    for name in source.dtype.names or ():
        if name in out.dtype.names:
            out[name] = source[name]
    return out


@dataclass(frozen=True)
class IntervalRecordResult:
    """What ``record_intervals`` did: ``intervals`` and ``rows`` written to the sink, ``lost``
    (exit messages the kernel dropped, summed over the intervals), ``sink`` its last stats,
    ``elapsed`` seconds, ``stopped_by`` ("stop", "deadline", "interrupt" or "error")."""

    intervals: int
    rows: int
    lost: int
    sink: SinkStats
    elapsed: float
    stopped_by: str


_SLICE = 0.1   # how often the wait for an interval's end looks at ``stop``


def record_intervals(accounting: Any, sink: Sink, stop: Stop = None, *, by: str = "task",
                     progress: Optional[Callable[[IntervalRecordResult], None]] = None
                     ) -> IntervalRecordResult:
    """Drive ``accounting`` (an ``Accounting``) into ``sink`` (e.g. ``FileSink(path,
    schema=interval_schema(by))``): every ``accounting.interval`` seconds the interval's rows
    (``interval_rows(iv, by)``) go to the sink, until ``stop`` (as for ``record()``) says so;
    then the interval in progress is closed early and written too, so the recording covers the
    whole time it ran.  Closes the sink (not the accounting).  ``progress(result_so_far)`` is
    called after each interval.  An error (or KeyboardInterrupt) closes the sink and is raised.
    """
    row_dtype(by)   # refuse a bad ``by`` before opening anything
    should_stop = stop_check(stop)
    counting = isinstance(sink, CountingSink)
    accounting.open()
    started = now = time.monotonic()
    intervals = rows = lost = 0
    stopped_by: Optional[str] = None
    next_end = started + accounting.interval

    def result(reason: str) -> IntervalRecordResult:
        return IntervalRecordResult(intervals, rows, lost, sink.stats(),
                                    time.monotonic() - started, reason)

    try:
        while stopped_by is None:
            while (now := time.monotonic()) < next_end:
                stopped_by = should_stop()
                if stopped_by is not None:
                    break
                time.sleep(min(_SLICE, next_end - now))
            iv = accounting.next(deadline=now)
            batch = interval_rows(iv, by)
            intervals, rows, lost = intervals + 1, rows + len(batch), lost + iv.lost
            if counting:
                sink.update_counters({"lost": lost})  # type: ignore[attr-defined]
            sink.write(batch)
            next_end = max(next_end + accounting.interval, time.monotonic())
            if progress is not None:
                progress(result("running"))
            stopped_by = stopped_by or should_stop()
    except BaseException:
        sink.close()
        raise
    sink.close()
    return result(stopped_by)
