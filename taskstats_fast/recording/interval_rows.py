"""The row layout of accounting intervals on disk: ``row_dtype``, the ``interval_schema`` every
reader and writer of interval recordings shares, and ``interval_rows``, one interval as such rows.

An interval recording holds one row per task (``by="task"``: ``Interval.tasks``) or per process
(``by="process"``: ``Interval.by("process")``) for every interval, each row stamped with its
interval's bounds (``interval_start``/``interval_end`` columns, UTC timestamps).  Files go
through the same registry, writers and ``FileSink`` as exit recordings; their metadata says
``rows: "interval"`` and ``by``, which is how readers tell them from exit records and snapshots.
This module is a leaf of the recording layer: the readers, the sinks and the recording loop all
build on it, and it imports none of them.
"""

from __future__ import annotations

import functools
from typing import Tuple

import numpy as np

from ..accounting.interval import (CGROUP_PATH_BYTES, TASK_DTYPE, Interval, cgroup_paths, group_dtype,
                                   group_rows)
from ..schema import RowSchema
from .metadata import FileStats, StatsColumns

__all__ = ["INTERVAL_ROWS", "BY", "row_dtype", "interval_schema", "interval_rows",
           "INTERVAL_STATS"]

#: The ``rows`` metadata value of files holding interval rows.
INTERVAL_ROWS = "interval"
#: What one row can be: a task (thread), or a process (its threads summed).
BY: Tuple[str, ...] = ("task", "process")
#: The fields stamping each row with its interval (u64 ns since the epoch in the rows, UTC
#: timestamp columns in tables).
_TIME_FIELDS = ("interval_start", "interval_end")


@functools.lru_cache(maxsize=None)
def row_dtype(by: str = "task") -> np.dtype:
    """The dtype of the rows an interval recording holds ``by`` task or process: the interval's
    bounds, then the fields of ``TASK_DTYPE`` (or of a process group), with the cgroup's path
    (``cgroup``) beside ``cgroup_id`` so that a recording names its cgroups after they are gone."""
    if by not in BY:
        raise ValueError(f"interval rows are per {' or per '.join(BY)}, not {by!r}")
    source = TASK_DTYPE if by == "task" else group_dtype("process")
    fields: list = [(name, "u8") for name in _TIME_FIELDS]
    for name in source.names or ():
        if not name.startswith("_pad"):
            fields.append((name, source[name]))
        if name == "cgroup_id":
            fields.append(("cgroup", f"S{CGROUP_PATH_BYTES}"))
    return np.dtype(fields)


#: What a file of interval rows adds up to: the intervals, from the first start to the last end.
INTERVAL_STATS = StatsColumns("interval_start", "interval_end", "first_interval_start",
                              "last_interval_end", "interval_start",
                              lambda starts: {"intervals": len(starts)}, kinds=False)


@functools.lru_cache(maxsize=None)
def interval_schema(by: str = "task") -> RowSchema:
    """The ``columns`` schema of interval rows ``by`` task or process (for ``FileSink`` and the
    readers)."""
    return RowSchema(row_dtype(by), required=_TIME_FIELDS, stats=functools.partial(FileStats, INTERVAL_STATS),
                     metadata={"rows": INTERVAL_ROWS, "by": by, "source": "accounting intervals"})


def interval_rows(iv: Interval, by: str = "task") -> np.ndarray:
    """The rows of one interval as an interval recording holds them (``row_dtype(by)``)."""
    source = iv.tasks if by == "task" else group_rows(iv.tasks, "process")
    out = np.zeros(len(source), row_dtype(by))
    out["interval_start"] = iv.start_ns
    out["interval_end"] = iv.end_ns
    for name in source.dtype.names or ():
        if name in out.dtype.names:
            out[name] = source[name]
    out["cgroup"] = cgroup_paths(source["cgroup_id"], iv.cgroups)
    return out
