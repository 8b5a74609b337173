"""Snapshot rows: which tasks are live (one listing of /proc) and how a process's row is made
from its threads' PID records and its TGID record (``PROCESS_COLUMNS``, ``process_rows``).

``Connection.snapshot`` asks the kernel; this module only lists and combines, so its rules are
tested on records we encoded ourselves.
"""

from __future__ import annotations

import os
from typing import Callable, Tuple

import numpy as np

from .. import layout
from .._native import ATTR_PID, ATTR_TGID
from .queries import Lookup

__all__ = ["list_tasks", "PROCESS_COLUMNS", "process_rows", "snapshot"]

#: A bulk lookup: (ids, ATTR_PID or ATTR_TGID) -> Lookup.
BulkLookup = Callable[[np.ndarray, int], Lookup]


def list_tasks(threads: bool) -> Tuple[np.ndarray, np.ndarray]:
    """(task ids, the pid of each one's process): the pids of /proc (thread-group leaders, their
    own owners) or, with ``threads``, every /proc/PID/task entry."""
    pids = [int(name) for name in os.listdir("/proc") if name.isdigit()]
    if not threads:
        arr = np.array(pids, np.uint32)
        return arr, arr
    tids: list = []
    owners: list = []
    for pid in pids:
        try:
            entries = [int(t) for t in os.listdir(f"/proc/{pid}/task")]
        except (FileNotFoundError, ProcessLookupError, NotADirectoryError):
            continue  # exited while we listed
        tids += entries
        owners += [pid] * len(entries)
    return np.array(tids, np.uint32), np.array(owners, np.uint32)


def snapshot(bulk: BulkLookup, threads: bool, aggregate: bool) -> Lookup:
    """Every live process or thread (see ``Connection.snapshot``), each looked up by ``bulk``."""
    if threads and aggregate:
        raise ValueError("aggregate=True sums threads into processes: it needs threads=False")
    if aggregate:
        return bulk(list_tasks(False)[0], ATTR_TGID)
    tids, owners = list_tasks(True)
    if threads:
        return bulk(tids, ATTR_PID)
    pids = np.unique(owners)
    per_thread = bulk(tids, ATTR_PID)
    groups = bulk(pids, ATTR_TGID)
    return process_rows(pids, tids, owners, per_thread, groups)


#: Where each column of a process row (``snapshot()``) comes from.  "tgid": the kernel's TGID
#: record (summed over every thread, exited ones included); "sum": summed over the live threads'
#: PID records; "max"/"min": the extreme over the live threads (a TGID record's max/min are the
#: last thread's, not the group's); every other column: the leader thread's PID record.
PROCESS_COLUMNS = {
    **{name: "tgid" for name in layout.TGID_FIELDS
       if name not in ("version", "ac_etime") and not name.endswith(("_delay_max", "_delay_min",
                                                                       "_delay_max_ts"))},
    **{name: "sum" for name in ("read_char", "write_char", "read_syscalls", "write_syscalls",
                                "read_bytes", "write_bytes", "cancelled_write_bytes", "ac_minflt",
                                "ac_majflt", "ac_utimescaled", "ac_stimescaled")},
    **{name: "max" for name in layout.TGID_FIELDS if name.endswith("_delay_max")},
    **{name: "min" for name in layout.TGID_FIELDS if name.endswith("_delay_min")},
}


def process_rows(pids: np.ndarray, tids: np.ndarray, owners: np.ndarray, per_thread: Lookup,
                 groups: Lookup) -> Lookup:
    """One row per process of ``pids`` from its threads' PID records (``per_thread``, asked for
    ``tids`` whose processes are ``owners``) and its TGID record (``groups``, asked for ``pids``
    in that order), by the rule of ``PROCESS_COLUMNS``.  Vectorised: no Python loop per task."""
    thread_owner = owners[per_thread.found]
    thread_id = tids[per_thread.found]
    # threads grouped by process: sort by owner, one segment per process
    order = np.argsort(thread_owner, kind="stable")
    sorted_owner = thread_owner[order]
    starts = np.flatnonzero(np.r_[True, sorted_owner[1:] != sorted_owner[:-1]]) if len(order) else order
    seg_owner = sorted_owner[starts]
    leader_row = np.flatnonzero(thread_id == thread_owner)
    leader_owner = thread_owner[leader_row]
    leader_order = np.argsort(leader_owner)
    # a process counts when its leader's PID record and its TGID record both came back
    group_pids = pids[groups.found]
    has_leader = np.isin(group_pids, leader_owner)
    found = np.zeros(len(pids), bool)
    found[np.flatnonzero(groups.found)[has_leader]] = True
    proc = pids[found]
    leaders = leader_row[leader_order[np.searchsorted(leader_owner[leader_order], proc)]]
    out = layout.take_records(per_thread.records, leaders)
    tgid_records = groups.records[has_leader]
    seg = np.searchsorted(seg_owner, proc)    # every process with a leader has a segment
    for name, rule in PROCESS_COLUMNS.items():
        if rule == "tgid":
            out[name] = tgid_records[name]
            continue
        column = per_thread.records[name][order]
        if rule == "sum":
            out[name] = np.add.reduceat(column, starts)[seg] if len(column) else 0
        elif rule == "max":
            out[name] = np.maximum.reduceat(column, starts)[seg] if len(column) else 0
        else:   # min over the threads that had such a delay at all
            counted = np.where(column == 0, np.iinfo(column.dtype).max, column)
            low = np.minimum.reduceat(counted, starts)[seg] if len(column) else 0
            out[name] = np.where(low == np.iinfo(column.dtype).max, 0, low)
    return Lookup(out, pids, found, per_thread.resent + groups.resent)
