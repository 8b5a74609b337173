"""The merge: two looks and the exit records between them -> one row per task, as deltas.

Owns how tasks are matched across time and which cgroup gets a task's time.  Everything is
numpy over whole arrays (sorts, searchsorted, masks): no Python loop per task.

Identity.  A task is its pid *and* its birth; ``ac_btime`` jitters by a second (it is "now minus
elapsed" rounded to seconds), so it is not a key on its own.  Two sightings with the same pid are
the same task when their ``ac_btime64`` agree within ``BTIME_SLACK_S`` and no counter (nor
``ac_etime``) went backwards; otherwise the pid was reused and the later sighting is a new task
(``BORN``): a delta is never negative.  A pid is reused only after its task died, so when several
sightings could continue one task, its exit record is preferred, then the one born earliest
(birth estimated as receive time minus ``ac_etime``).

Rows.  Each *end sighting* makes one row: an exit record received in the interval, or a thread
in the closing look's snapshot.  Its delta is the sighting minus the task's record in the opening
look (when the task was there), else the sighting itself (born inside the interval, so all of it
belongs here).  A task that exits while the closing look runs shows up in both the snapshot and
the exit stream: the exit record wins and the snapshot entry is dropped, also from the next
interval's opening look, so it is counted once.  A task in the opening look with no end sighting
left without an exit record: its exit message was lost (``Interval.lost`` counts those).

Cgroups.  A task's interval goes to the cgroup it was in at the last look that saw it: the
closing look for live tasks, the opening look for tasks that exited (a move between looks is
applied at look granularity).  Tasks born and dead between two looks inherit the cgroup of their
thread group, else of their parent (``ac_ppid``), resolved through the looks and, for chains of
short-lived tasks (``sh -c`` spawning a child), through the other exit records of the interval.
No record says which cgroup a task was in, so a task moved right after its fork (as service
managers start things) that also dies before the next look is attributed to its parent's cgroup.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Tuple

import numpy as np

from .. import layout
from ..kernel.delayacct import DELAYACCT_FIELDS
from .cgroupfs import CgroupLook, lookup
from .interval import (BORN, DELTA_FIELDS, EXACT, EXITED, FLAG_DELAYACCT_OFF, FLAG_NO_START,
                       FLAG_PID_REUSED, IDENTITY_FIELDS, INHERITED, LEVEL_FIELDS, TASK_DTYPE,
                       summed_block)

__all__ = ["Look", "merge", "sightings", "birth_ns", "SIGHTING_DTYPE", "BTIME_SLACK_S"]

#: How far two ``ac_btime64`` of one task may differ (s): each is "now minus elapsed", rounded.
BTIME_SLACK_S = 2
# Rounds of "inherit from a task that itself exited in this interval" (sh -c -> child -> ...).
_INHERIT_DEPTH = 8
_SWITCHED_DELTAS = tuple(f for f in DELTA_FIELDS if f in DELAYACCT_FIELDS)


#: What only grows while a task lives: its counters, then its elapsed time.
_MONOTONE = DELTA_FIELDS + ("ac_etime",)
_CARRIED = IDENTITY_FIELDS + LEVEL_FIELDS + ("ac_btime64", "ac_btime", "ac_exitcode", "time_ns",
                                             "layout", "kind")
_BTIME64_SINCE = layout.FIELD_BY_NAME["ac_btime64"].since
#: The monotone columns compared to tell a continued task from a reused pid: elapsed time and
#: the counters that move for almost any task (checking all 46 costs more and adds nothing:
#: deltas are clamped at zero anyway).
_IDENTITY_COLUMNS = np.array([_MONOTONE.index(name) for name in (
    "ac_etime", "ac_utime", "ac_stime", "cpu_run_virtual_total", "nvcsw", "nivcsw", "ac_minflt",
    "read_char", "cpu_count")], np.intp)


def _plan_sighting() -> Tuple[np.ndarray, np.dtype]:
    """Which 8-byte words of a DTYPE record a sighting keeps, and the dtype of the kept words.

    A DTYPE record is 712 bytes; the merge needs about 60 fields of it.  Copying field by field
    streams every record once per field; gathering the needed words in one ``take`` streams
    them once.  The monotone counters come first, so they are one (n, len(_MONOTONE)) block.
    """
    spec = {name: (f[0], f[1]) for name, f in (layout.DTYPE.fields or {}).items()}
    words: List[int] = []
    for name in _MONOTONE:                      # all u8 at 8-byte offsets: one word each
        words.append(spec[name][1] // 8)
    for name in _CARRIED:
        dt, off = spec[name]
        for w in range(off // 8, (off + dt.itemsize - 1) // 8 + 1):
            if w not in words:
                words.append(w)
    names: List[str] = ["mono"]
    formats: List[object] = [("u8", (len(_MONOTONE),))]
    offsets: List[int] = [0]
    for name in _CARRIED:
        dt, off = spec[name]
        names.append(name)
        formats.append(dt)
        offsets.append(words.index(off // 8) * 8 + off % 8)
    names += ["btime", "birth_ns"]              # computed: two more words at the end
    formats += ["i8", "i8"]
    offsets += [8 * len(words), 8 * len(words) + 8]
    dtype = np.dtype({"names": names, "formats": formats, "offsets": offsets,
                      "itemsize": 8 * len(words) + 16})
    return np.array(words, np.intp), dtype


_SIGHTING_WORDS, SIGHTING_DTYPE = _plan_sighting()


def sightings(records: np.ndarray) -> np.ndarray:
    """The PID records of ``records`` (DTYPE) as SIGHTING_DTYPE rows, in the same order."""
    records = np.ascontiguousarray(records)
    n, width = len(records), len(_SIGHTING_WORDS)
    words = records.view(np.uint64).reshape(n, layout.DTYPE.itemsize // 8)
    block = np.empty((n, width + 2), np.uint64)
    np.take(words, _SIGHTING_WORDS, axis=1, out=block[:, :width])
    out = block.view(SIGHTING_DTYPE).reshape(n)
    out = out[out["kind"] == layout.KIND_PID]
    out["btime"] = np.where(out["layout"] >= _BTIME64_SINCE, out["ac_btime64"], out["ac_btime"])
    out["birth_ns"] = out["time_ns"].astype(np.int64) - out["mono"][:, -1].astype(np.int64) * 1000
    return out


@dataclass
class Look:
    """One look at the machine: every thread's sighting (sorted by pid, unique) and where each
    thread sat in the cgroup hierarchy."""
    time_ns: int                 # CLOCK_REALTIME when the look began
    records: np.ndarray          # SIGHTING_DTYPE
    cgroups: CgroupLook
    delayacct: Optional[bool]

    @classmethod
    def of(cls, time_ns: int, records: np.ndarray, cgroups: CgroupLook,
           delayacct: Optional[bool]) -> "Look":
        """A Look from DTYPE records (a bulk lookup answers in the order asked: usually sorted)."""
        seen = sightings(records)
        pids = seen["ac_pid"]
        if not np.all(pids[1:] > pids[:-1]):
            seen = seen[np.argsort(pids, kind="stable")]
            keep = np.ones(len(seen), bool)
            keep[1:] = seen["ac_pid"][1:] != seen["ac_pid"][:-1]
            seen = seen[keep]
        return cls(int(time_ns), seen, cgroups, delayacct)


def birth_ns(records: np.ndarray) -> np.ndarray:
    """Estimated CLOCK_REALTIME birth of each record's task (ns): its receive time minus its
    elapsed time, late (never early) by how long it waited in the socket."""
    return records["time_ns"].astype(np.int64) - records["ac_etime"].astype(np.int64) * 1000


def _match(seen: np.ndarray, ref: np.ndarray, priority: np.ndarray,
           allowed: Optional[np.ndarray] = None) -> np.ndarray:
    """For each sighting, the index of the same task in ``ref`` (sorted by unique ``ac_pid``),
    or -1.  At most one sighting continues each reference task: the one with the lowest
    ``priority``, then the earliest birth (see the module docstring)."""
    out = np.full(len(seen), -1, np.int64)
    ref_pids, pids = ref["ac_pid"], seen["ac_pid"]
    if len(ref_pids) == 0 or len(pids) == 0:
        return out
    at = np.searchsorted(ref_pids, pids)
    at[at == len(ref_pids)] = 0
    ok = ref_pids[at] == pids
    if allowed is not None:
        ok &= allowed
    cand = np.flatnonzero(ok)
    if len(cand) == 0:
        return out
    ref_at = at[cand]
    same = np.abs(seen["btime"][cand] - ref["btime"][ref_at]) <= BTIME_SLACK_S
    cols = _IDENTITY_COLUMNS
    same &= np.all(seen["mono"][cand][:, cols] >= ref["mono"][ref_at][:, cols], axis=1)
    cand = cand[same]
    order = cand[np.lexsort((seen["birth_ns"][cand], priority[cand], at[cand]))]
    first = np.ones(len(order), bool)
    first[1:] = at[order][1:] != at[order][:-1]
    out[order[first]] = at[order[first]]
    return out


def merge(start: Look, end: Look, exits: np.ndarray) -> Tuple[np.ndarray, Look]:
    """The rows of the interval between ``start`` and ``end`` (TASK_DTYPE), and ``end`` as the
    next interval's opening look (without the tasks whose exit this interval already counted)."""
    exits = sightings(exits)
    ends = end.records

    # 1. a task that exited while the closing look ran: keep its exit record, drop the snapshot
    late = exits["time_ns"].astype(np.int64) >= end.time_ns
    x_to_end = _match(exits, ends, np.zeros(len(exits), np.uint8), allowed=late)
    end_dropped = np.zeros(len(ends), bool)
    end_dropped[x_to_end[x_to_end >= 0]] = True
    live = ends[~end_dropped]

    # 2. the end sightings: exit records, then live threads
    seen = np.concatenate([exits, live]) if len(exits) else live
    n, nx = len(seen), len(exits)
    is_exit = np.zeros(n, bool)
    is_exit[:nx] = True
    counters = seen["mono"][:, :len(DELTA_FIELDS)]

    # 3. the same task in the opening look (its exit record first: a pid is reused after death)
    starts = start.records
    s_at = _match(seen, starts, (~is_exit).astype(np.uint8))
    matched = s_at >= 0

    rows = np.zeros(n, TASK_DTYPE)
    for name in IDENTITY_FIELDS + LEVEL_FIELDS + ("ac_btime64",):
        rows[name] = seen[name]
    rows["ac_exitcode"][:nx] = exits["ac_exitcode"]
    base = np.zeros_like(counters)
    base[matched] = starts["mono"][s_at[matched], :len(DELTA_FIELDS)]
    block = summed_block(rows)                          # cpu_ns, then DELTA_FIELDS
    np.subtract(counters, np.minimum(base, counters), out=block[:, 1:])   # never negative
    # CPU: the scheduler's clock, except where an exit record's clock fell behind the ticks
    ticks_ns = (rows["ac_utime"] + rows["ac_stime"]) * np.uint64(1000)
    scheduler_ns = rows["cpu_run_virtual_total"]
    rows["cpu_ns"] = np.where(is_exit, np.maximum(ticks_ns, scheduler_ns), scheduler_ns)
    rows["state"] = np.where(is_exit, EXITED, 0) | np.where(matched, 0, BORN)

    flags = np.zeros(n, np.uint8)
    # birth_ns is late (never early) by how long the record waited: earlier than the opening look
    # means the task was alive then, yet that look did not list it
    flags[~matched & (seen["birth_ns"] < start.time_ns)] |= FLAG_NO_START
    pids = seen["ac_pid"]
    sorted_pids = np.sort(pids)
    dup = np.zeros(n, bool)
    if n > 1:
        twice = sorted_pids[1:][sorted_pids[1:] == sorted_pids[:-1]]
        dup = np.isin(pids, twice)
    in_start = lookup(starts["ac_pid"], np.ones(len(starts), np.uint8), pids).astype(bool)
    flags[dup | (~matched & in_start)] |= FLAG_PID_REUSED
    if start.delayacct is False or end.delayacct is False:
        flags |= FLAG_DELAYACCT_OFF
        for name in _SWITCHED_DELTAS:
            rows[name] = 0
    rows["flags"] = flags

    _attribute(rows, is_exit, matched, x_to_end, nx, start, end)
    return rows, Look(end.time_ns, live, end.cgroups, end.delayacct)


def _attribute(rows: np.ndarray, is_exit: np.ndarray, matched: np.ndarray,
               x_to_end: np.ndarray, nx: int, start: Look, end: Look) -> None:
    """Fill cgroup_id and attribution (see the module docstring)."""
    pids = rows["ac_pid"]
    cg = np.zeros(len(rows), np.uint64)
    # live at the closing look, or exited while it ran: the closing look listed it
    at_end = ~is_exit
    at_end[:nx] |= x_to_end >= 0
    cg[at_end] = end.cgroups.cgroup_of(pids[at_end])
    # exited, and in the opening look: where the opening look listed it
    at_start = is_exit & matched & (cg == 0)
    cg[at_start] = start.cgroups.cgroup_of(pids[at_start])
    rows["attribution"][cg != 0] = EXACT

    # born and dead between two looks: the thread group's cgroup, else the parent's
    todo = cg == 0
    tgid, ppid = rows["ac_tgid"], rows["ac_ppid"]
    for look in (end.cgroups, start.cgroups):
        for parent in (np.where(tgid != pids, tgid, 0), ppid):
            pick = todo & (parent != 0)
            found = look.cgroup_of(parent[pick])
            idx = np.flatnonzero(pick)[found != 0]
            cg[idx] = found[found != 0]
            todo[idx] = False
    # ... or of a task that itself exited in this interval (chains of short-lived tasks)
    for _ in range(_INHERIT_DEPTH):
        if not todo.any():
            break
        known = ~todo & (cg != 0)
        order = np.argsort(pids[known], kind="stable")
        k_pids, k_cg = pids[known][order], cg[known][order]
        progress = False
        for parent in (np.where(tgid != pids, tgid, 0), ppid):
            pick = todo & (parent != 0)
            found = lookup(k_pids, k_cg, parent[pick])
            idx = np.flatnonzero(pick)[found != 0]
            cg[idx] = found[found != 0]
            todo[idx] = False
            progress |= len(idx) > 0
        if not progress:
            break
    inherited = (cg != 0) & (rows["attribution"] != EXACT)
    rows["attribution"][inherited] = INHERITED
    rows["cgroup_id"] = cg
