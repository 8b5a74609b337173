"""The row layout of recorded pressure stalls (PSI) on disk: ``PSI_ROW_DTYPE``, the
``psi_schema`` every reader and writer of them shares, ``psi_rows`` (one interval's ``Interval.psi``
as such rows) and ``psi_paths`` (where an interval dataset keeps them).

An interval recording into a dataset directory keeps its PSI beside its interval rows, as a
dataset of its own under ``DIR/_psi/`` (``host=…/date=…/part-….<ext>``, the same formats,
rotation, flush and fsync rules).  The leading ``_`` keeps the interval rows' dataset one table
for every dataset reader (pyarrow.dataset, Spark and our own ``find_files`` skip ``_`` entries),
and copying many hosts' directories side by side merges both.  One row per cgroup seen at both
looks of an interval, stamped with the interval's bounds, with the cgroup's id and path and the
stall-time deltas (``<resource>_some_us`` / ``<resource>_full_us``, resources cpu, io, memory,
irq; 0 where the kernel reports none).  The root cgroup's row (``cgroup`` "/") holds the system's
stalls from ``/proc/pressure``: the kernel keeps the root's pressure as the system's and gives
the root no pressure files of its own (a host without cgroup v2 gets that row with
``cgroup_id`` 0).  Metadata says ``rows: "psi"``.  A leaf of the recording layer, like
``interval_rows``.
"""

from __future__ import annotations

import functools
import os
from typing import List, Optional, Tuple

import numpy as np

from ..accounting.interval import CGROUP_PATH_BYTES, PSI_DTYPE, Interval, cgroup_paths
from ..schema import RowSchema
from .metadata import FileStats, StatsColumns
from .paths import PSI_DIRECTORY, PathOrPaths, is_dataset_path, path_list

__all__ = ["PSI_ROWS", "PSI_DIRECTORY", "PSI_ROW_DTYPE", "PSI_STALL_FIELDS", "PSI_STATS",
           "psi_schema", "psi_rows", "psi_path", "psi_paths", "SYSTEM_CGROUP"]

#: The ``rows`` metadata value of files holding PSI rows.
PSI_ROWS = "psi"
#: The ``cgroup`` of the row holding the system's stalls (/proc/pressure): the root.
SYSTEM_CGROUP = "/"
#: The stall-time fields, in ``PSI_DTYPE`` order.
PSI_STALL_FIELDS: Tuple[str, ...] = tuple(n for n in PSI_DTYPE.names or () if n != "cgroup_id")

#: One recorded PSI row: the interval's bounds (u64 ns since the epoch; UTC timestamp columns in
#: tables), the cgroup, its stall-time deltas (µs).
PSI_ROW_DTYPE: np.dtype = np.dtype(
    [("interval_start", "u8"), ("interval_end", "u8"), ("cgroup_id", "u8"),
     ("cgroup", f"S{CGROUP_PATH_BYTES}")] + [(name, "u8") for name in PSI_STALL_FIELDS])

#: What a file of PSI rows adds up to: the intervals, from the first start to the last end.
PSI_STATS = StatsColumns("interval_start", "interval_end", "first_interval_start",
                         "last_interval_end", "interval_start",
                         lambda starts: {"intervals": len(starts)}, kinds=False)


@functools.lru_cache(maxsize=None)
def psi_schema() -> RowSchema:
    """The ``columns`` schema of PSI rows (for ``FileSink`` and the readers)."""
    return RowSchema(PSI_ROW_DTYPE, required=("interval_start", "interval_end"),
                     stats=functools.partial(FileStats, PSI_STATS),
                     metadata={"rows": PSI_ROWS, "source": "accounting intervals: pressure stall"})


def psi_rows(iv: Interval) -> np.ndarray:
    """``iv.psi`` as rows of ``PSI_ROW_DTYPE``: the cgroups' rows, the root's holding the
    system's stalls (first, with cgroup_id 0 when the root was not seen)."""
    cgroups = iv.psi.cgroups
    root = [i for i, path in iv.cgroups.items() if path == SYSTEM_CGROUP]
    root_id = root[0] if root else 0
    others = cgroups[cgroups["cgroup_id"] != root_id] if root_id else cgroups
    out = np.zeros(1 + len(others), PSI_ROW_DTYPE)
    out["interval_start"] = iv.start_ns
    out["interval_end"] = iv.end_ns
    out["cgroup_id"][0] = root_id
    out["cgroup"][0] = SYSTEM_CGROUP.encode()
    out["cgroup_id"][1:] = others["cgroup_id"]
    out["cgroup"][1:] = cgroup_paths(others["cgroup_id"], iv.cgroups)
    for name in PSI_STALL_FIELDS:
        out[name][0] = iv.psi.system[name]
        out[name][1:] = others[name]
    return out


def psi_path(output: str) -> Optional[str]:
    """Where an interval recording written to ``output`` keeps its PSI: ``output/_psi`` for a
    dataset directory; None for a single file (which holds one kind of rows, and no PSI)."""
    return os.path.join(output, PSI_DIRECTORY) if is_dataset_path(output) else None


def psi_paths(paths: PathOrPaths) -> List[str]:
    """The PSI datasets of the interval datasets ``paths`` that have one (a path that already
    names a PSI dataset is kept); old datasets, written before PSI was recorded, have none."""
    out: List[str] = []
    for path in path_list(paths):
        if os.path.basename(os.path.normpath(path)) == PSI_DIRECTORY:
            out.append(path)
            continue
        found = psi_path(path)
        if found is not None and os.path.isdir(found):
            out.append(found)
    return out
