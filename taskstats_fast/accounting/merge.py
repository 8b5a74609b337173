"""The merge: two looks and the exit records between them -> one row per task, as deltas.

Owns how tasks are matched across time and which cgroup gets a task's time.  The rules below
run twice over: ``merge`` hands the join to the C core (csrc/tsf_join.c, one pass over the rows:
numpy's per-call cost, not the rows, was what an interval's merge spent), and
``reference_merge`` is the same rules in numpy over whole arrays, the oracle that
tests/test_accounting_join.py holds the C pass to, row for row.  The exits' order and
de-duplication (``_unique_exits``) are C too (tsf_exit_order: numpy's lexsort and the gather of
every exit's sighting by it were most of a busy interval's merge), and the exit reader's batches
become sightings one by one, never joined into one record array.  Inheriting a cgroup (below)
stays numpy in both: it runs only for tasks born and dead between two looks.

Identity.  A task is its pid *and* its birth.  No record carries the birth exactly (``ac_btime``
is "now minus elapsed" in whole seconds and jitters by one), but every record bounds it: a look's
record was filled between the moment the look began and the moment its reply arrived, so its
task was born in ``[look - ac_etime, received - ac_etime]``; an exit record was filled after the
opening look began (one filled earlier was in the sockets when the previous interval was cut),
so ``[opening look - ac_etime, received - ac_etime]``; and every record was filled within a
second of ``ac_btime``.  Two sightings with one pid are the same task when those ranges overlap and their
counters move the same way (a task's counters only grow; a pid is reused only after its task
died, so a newcomer was born after the other's range ended).  The test can only err towards
"same" for a task that lived shorter than the ranges are wide, and then what is lost is that
short task's counters, never a lifetime.

Counted once, by construction.  Every row is the growth of a *ledger*: the last counted
sighting of each task, carried from interval to interval in the closing look.  An exit record
and the closing look's sighting of the same task are folded into one row before anything is
charged, whichever of the two the kernel produced first (the look can query a task that already
sent its exit record: it stays listed and queryable until ``cgroup_exit``/reaping), and the
folded values, the later of the two counter by counter, replace the look's entry in the ledger,
marked exited.  A later sighting of an exited ledger entry (a zombie listed again) is dropped,
and so is a second exit record of it.  So a task's charge summed over intervals is the growth
of its own running maximum, which no arrival order can make larger.

No start, no lifetime.  A sighting that matches nothing in the ledger but was certainly born
before the opening look (the look missed it: it moved cgroups during the walk, or its listing
raced) is not a newborn: it is charged the share of its counters that its elapsed time inside
the interval is of its whole elapsed time (``FLAG_NO_START``), never its whole lifetime.

Rows.  Each *end sighting* makes one row: an exit record received in the interval (folded with
the closing look's sighting when there is one), or a thread in the closing look's snapshot.
Its delta is the sighting minus the task's ledger entry (when the task was there), else the
sighting itself (born inside the interval, so all of it belongs here).  A ledger entry with no
end sighting left without an exit record: its exit message was lost (``Interval.lost`` counts
those).

Start.  The kernel's ``ac_btime`` is ``floor(now) - floor(elapsed)``, so two records of one task
can disagree by a second, and rows grouped by (tgid, start) would split a process in two.  Every
row carries the start of its task's first sighting in this ``Accounting``, which the ledger keeps.

CPU.  ``cpu_ns`` is the scheduler's clock (the ``cpu_run_virtual_total`` delta) for every row,
exited or not; reconcile.py then makes exited rows up to their cgroup's ``cpu.stat``.  Chosen by
measurement against ``wait4`` (tests/test_accounting_cpu_kernel.py; README "Interval
accounting" has the figures): at exit that clock is stale by the task's last stretch on the CPU,
so it is a lower bound, and it was the closest field for 2 ms spinners, threaded processes and
tasks killed by a signal, where the tick-sampled ``ac_utime + ac_stime`` was far low and the
larger of the two far high; for fork+exec shell loops every field is far low.  A lower bound
never charges a task more than it used, and what it misses is in the cgroup's usage, where the
reconciliation finds it.  The raw fields stay in the row beside it.

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
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np

from .. import _native, layout
from ..kernel.delayacct import DELAYACCT_FIELDS
from .cgroupfs import CgroupLook, lookup
from .interval import (BORN, DELTA_FIELDS, EXACT, EXITED, FLAG_DELAYACCT_OFF, FLAG_NO_START,
                       FLAG_PID_REUSED, IDENTITY_FIELDS, INHERITED, LEVEL_FIELDS, SUMMED_FIELDS,
                       TASK_DTYPE, summed_block)

__all__ = ["Look", "merge", "reference_merge", "sightings", "reference_sightings", "birth_ns",
           "SIGHTING_DTYPE", "BIRTH_TOLERANCE_NS"]

#: How far apart two birth ranges of one task may seem (ns): ``ac_etime`` is truncated to µs and
#: measured on the kernel's monotonic clock, the ranges' ends on CLOCK_REALTIME.
BIRTH_TOLERANCE_NS = 2_000_000
# Rounds of "inherit from a task that itself exited in this interval" (sh -c -> child -> ...).
_INHERIT_DEPTH = 8
_SWITCHED_DELTAS = tuple(f for f in DELTA_FIELDS if f in DELAYACCT_FIELDS)
_S = 1_000_000_000


#: What only grows while a task lives: its counters, then its elapsed time.
_MONOTONE = DELTA_FIELDS + ("ac_etime",)
_CARRIED = IDENTITY_FIELDS + LEVEL_FIELDS + ("ac_btime64", "ac_btime", "ac_exitcode", "time_ns",
                                             "layout", "kind")
#: Computed per sighting: btime (s), the earliest and latest possible birth (ns), exited (0/1).
_COMPUTED = ("btime", "birth_lo", "birth_ns", "exited")
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
    for i, name in enumerate(_COMPUTED):        # computed: more words at the end
        names.append(name)
        formats.append("i8")
        offsets.append(8 * (len(words) + i))
    dtype = np.dtype({"names": names, "formats": formats, "offsets": offsets,
                      "itemsize": 8 * (len(words) + len(_COMPUTED))})
    return np.array(words, np.intp), dtype


_SIGHTING_WORDS, SIGHTING_DTYPE = _plan_sighting()


def _sighting_plan() -> dict:
    """Where tsf_sightings (csrc/tsf_join.c) takes each word of a sighting from."""
    r = {name: f[1] for name, f in (layout.DTYPE.fields or {}).items()}
    s = {name: f[1] for name, f in (SIGHTING_DTYPE.fields or {}).items()}
    assert s["mono"] == 0 and _MONOTONE[-1] == "ac_etime"
    return dict(word=[int(w) for w in _SIGHTING_WORDS], r_kind=r["kind"], r_layout=r["layout"],
                r_btime=r["ac_btime"], r_btime64=r["ac_btime64"], r_time_ns=r["time_ns"],
                r_etime=r["ac_etime"], kind_pid=layout.KIND_PID, btime64_since=_BTIME64_SINCE,
                s_pid=s["ac_pid"], s_btime=s["btime"], s_birth_lo=s["birth_lo"],
                s_birth_ns=s["birth_ns"], s_exited=s["exited"])


_SIGHTINGS = _native.Sightings(SIGHTING_DTYPE, _sighting_plan())


def sightings(records: np.ndarray, look_ns: Optional[int] = None) -> np.ndarray:
    """The PID records of ``records`` (DTYPE) as SIGHTING_DTYPE rows, in the same order (in the
    C core; ``reference_sightings`` is the same in numpy).

    ``look_ns``: the earliest moment the kernel can have filled them (for a look's records, when
    it began), which bounds their task's birth from below (None: only ``ac_btime`` does)."""
    return _SIGHTINGS.run(records, None if look_ns is None else int(look_ns))[0]


def reference_sightings(records: np.ndarray, look_ns: Optional[int] = None) -> np.ndarray:
    """``sightings`` in numpy: the reference tsf_sightings is tested against."""
    records = np.ascontiguousarray(records)
    n, width = len(records), len(_SIGHTING_WORDS)
    words = records.view(np.uint64).reshape(n, layout.DTYPE.itemsize // 8)
    block = np.empty((n, width + len(_COMPUTED)), np.uint64)
    np.take(words, _SIGHTING_WORDS, axis=1, out=block[:, :width])
    out = block.view(SIGHTING_DTYPE).reshape(n)
    out = out[out["kind"] == layout.KIND_PID]
    out["btime"] = np.where(out["layout"] >= _BTIME64_SINCE, out["ac_btime64"], out["ac_btime"])
    elapsed_ns = out["mono"][:, -1].astype(np.int64) * 1000
    out["birth_ns"] = out["time_ns"].astype(np.int64) - elapsed_ns
    # ac_btime is floor(now) - floor(elapsed) in seconds: within a second of the true birth
    out["birth_lo"] = (out["btime"] - 1) * _S
    if look_ns is not None:
        out["birth_lo"] = np.maximum(out["birth_lo"], int(look_ns) - elapsed_ns)
    out["exited"] = 0
    return out


@dataclass
class Look:
    """One look at the machine: every thread's sighting (sorted by pid, unique) and where each
    thread sat in the cgroup hierarchy.  As an opening look, ``records`` is the ledger: the
    last counted sighting of each task (``exited`` set where that was its exit record)."""
    time_ns: int                 # CLOCK_REALTIME when the look began
    records: np.ndarray          # SIGHTING_DTYPE
    cgroups: CgroupLook
    delayacct: Optional[bool]

    @classmethod
    def of(cls, time_ns: int, records: np.ndarray, cgroups: CgroupLook,
           delayacct: Optional[bool]) -> "Look":
        """A Look from DTYPE records (a bulk lookup answers in the order asked: usually sorted)."""
        seen, ordered = _SIGHTINGS.run(records, int(time_ns))
        if not ordered:
            seen = seen[np.argsort(seen["ac_pid"], kind="stable")]
            keep = np.ones(len(seen), bool)
            keep[1:] = seen["ac_pid"][1:] != seen["ac_pid"][:-1]
            seen = seen[keep]
        return cls(int(time_ns), seen, cgroups, delayacct)


def birth_ns(records: np.ndarray) -> np.ndarray:
    """Latest possible CLOCK_REALTIME birth of each record's task (ns): its receive time minus
    its elapsed time, late (never early) by how long it waited in the socket."""
    return records["time_ns"].astype(np.int64) - records["ac_etime"].astype(np.int64) * 1000


def _match(seen: np.ndarray, ref: np.ndarray, rank: Tuple[np.ndarray, ...],
           ordered: bool) -> np.ndarray:
    """For each sighting, the index of the same task in ``ref`` (sorted by unique ``ac_pid``),
    or -1 (see the module docstring).  ``ordered``: every ``ref`` sighting was filled before
    every ``seen`` one, so the same task's counters can only have grown; else they may have
    moved either way, but all the same way.  At most one sighting continues each reference
    task: the first by ``rank`` (keys, most significant last, as ``np.lexsort`` takes them)."""
    out = np.full(len(seen), -1, np.int64)
    ref_pids, pids = ref["ac_pid"], seen["ac_pid"]
    if len(ref_pids) == 0 or len(pids) == 0:
        return out
    at = np.searchsorted(ref_pids, pids)
    at[at == len(ref_pids)] = 0
    cand = np.flatnonzero(ref_pids[at] == pids)
    if len(cand) == 0:
        return out
    ref_at = at[cand]
    same = (seen["birth_lo"][cand] <= ref["birth_ns"][ref_at] + BIRTH_TOLERANCE_NS) & \
        (ref["birth_lo"][ref_at] <= seen["birth_ns"][cand] + BIRTH_TOLERANCE_NS)
    later = seen["mono"][cand][:, _IDENTITY_COLUMNS]
    earlier = ref["mono"][ref_at][:, _IDENTITY_COLUMNS]
    grew = np.all(later >= earlier, axis=1)
    same &= grew if ordered else grew | np.all(later <= earlier, axis=1)
    cand = cand[same]
    order = cand[np.lexsort(tuple(r[cand] for r in rank) + (at[cand],))]
    first = np.ones(len(order), bool)
    first[1:] = at[order][1:] != at[order][:-1]
    out[order[first]] = at[order[first]]
    return out


def _fold(exits: np.ndarray, ends: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Fold each exit record with the closing look's sighting of the same task, in whichever
    order the kernel filled them: the later value of every counter, the tighter birth range.
    Returns, per exit, the index of its sighting in ``ends`` (or -1), and the ledger for the
    next interval: ``ends`` with each folded task's entry replaced and marked exited."""
    x_to_end = _match(exits, ends, (-exits["birth_ns"],), ordered=False)   # last user of a pid
    xi = np.flatnonzero(x_to_end >= 0)
    ei = x_to_end[xi]
    if len(xi):
        exits["mono"][xi] = np.maximum(exits["mono"][xi], ends["mono"][ei])
        for name in LEVEL_FIELDS:
            exits[name][xi] = np.maximum(exits[name][xi], ends[name][ei])
        exits["birth_lo"][xi] = np.maximum(exits["birth_lo"][xi], ends["birth_lo"][ei])
        exits["birth_ns"][xi] = np.minimum(exits["birth_ns"][xi], ends["birth_ns"][ei])
    exits["exited"] = 1
    ledger = ends.copy()
    ledger[ei] = exits[xi]
    return x_to_end, ledger


def _unique_exits(exits: np.ndarray) -> np.ndarray:
    """``exits`` without repeats of one exit record (a task has one exit: two records of one
    pid with the same start second and the same counters and elapsed time are one)."""
    if len(exits) < 2:
        return exits
    exits = exits[np.lexsort((exits["btime"], exits["ac_pid"]))]
    a, b = exits[:-1], exits[1:]
    repeat = (a["ac_pid"] == b["ac_pid"]) & (a["btime"] == b["btime"]) & \
        np.all(a["mono"] == b["mono"], axis=1)
    if not repeat.any():
        return exits
    keep = np.ones(len(exits), bool)
    keep[np.flatnonzero(repeat)] = False
    return exits[keep]


def _no_start_share(seen: np.ndarray, start_ns: int) -> np.ndarray:
    """The share of a sighting's lifetime that fell after ``start_ns``: its time since then
    (to when it was received, the latest it can have been filled) over its elapsed time."""
    elapsed_ns = seen["mono"][:, -1].astype(np.float64) * 1000
    since = seen["time_ns"].astype(np.int64) - start_ns
    return np.clip(since / np.maximum(elapsed_ns, 1.0), 0.0, 1.0)


def _join_plan() -> dict:
    """Where tsf_join (csrc/tsf_join.c) finds each field of a sighting and puts each of a row."""
    s = {name: f[1] for name, f in (SIGHTING_DTYPE.fields or {}).items()}
    t = {name: f[1] for name, f in (TASK_DTYPE.fields or {}).items()}
    copied = IDENTITY_FIELDS + LEVEL_FIELDS + ("ac_btime64",)
    assert all(SIGHTING_DTYPE[n].itemsize == TASK_DTYPE[n].itemsize for n in copied)
    assert all(SIGHTING_DTYPE[n].itemsize == 8 for n in LEVEL_FIELDS + ("time_ns", "ac_btime64"))
    assert SUMMED_FIELDS == ("cpu_ns",) + DELTA_FIELDS and _MONOTONE[:len(DELTA_FIELDS)] == DELTA_FIELDS
    return dict(
        s_mono=s["mono"], n_mono=len(_MONOTONE), n_counters=len(DELTA_FIELDS),
        elapsed_word=_MONOTONE.index("ac_etime"), cpu_word=DELTA_FIELDS.index("cpu_run_virtual_total"),
        identity=[int(i) for i in _IDENTITY_COLUMNS], s_level=[s[n] for n in LEVEL_FIELDS],
        s_pid=s["ac_pid"], s_time_ns=s["time_ns"], s_btime64=s["ac_btime64"],
        s_exitcode=s["ac_exitcode"], s_birth_lo=s["birth_lo"], s_birth_ns=s["birth_ns"],
        s_exited=s["exited"], s_btime=s["btime"],
        copy=[(s[n], t[n], TASK_DTYPE[n].itemsize) for n in copied],
        r_btime64=t["ac_btime64"], r_exitcode=t["ac_exitcode"], r_cgroup=t["cgroup_id"],
        r_state=t["state"], r_attribution=t["attribution"], r_flags=t["flags"], r_summed=t["cpu_ns"],
        zero_when_off=[int(n in _SWITCHED_DELTAS) for n in DELTA_FIELDS],
        tolerance_ns=BIRTH_TOLERANCE_NS, state_born=BORN, state_exited=EXITED,
        attribution_exact=EXACT, flag_no_start=FLAG_NO_START, flag_pid_reused=FLAG_PID_REUSED,
        flag_delayacct_off=FLAG_DELAYACCT_OFF)


_JOIN = _native.Join(SIGHTING_DTYPE, TASK_DTYPE, _join_plan())


def merge(start: Look, end: Look,
          exits: Union[np.ndarray, Sequence[np.ndarray]]) -> Tuple[np.ndarray, Look]:
    """The rows of the interval between ``start`` and ``end`` (TASK_DTYPE), and ``end`` as the
    next interval's opening look: the ledger (see the module docstring).  ``exits``: the exit
    records (DTYPE), one array or the exit reader's batches as they came.  The join runs in the
    C core (csrc/tsf_join.c), in one pass; ``reference_merge`` is the same rules in numpy."""
    ends = end.records
    batches = [exits] if isinstance(exits, np.ndarray) else exits
    # an exit record in this interval was filled after the opening look began: one filled
    # earlier was in the sockets when the previous interval was cut, so it is that interval's
    seen_exits = _JOIN.unique_exits(_SIGHTINGS.run_batches(batches, start.time_ns)) \
        if any(len(b) for b in batches) else ends[:0]
    joined = _JOIN.run(start.records, ends, seen_exits, start.time_ns,
                       (start.cgroups.tids, start.cgroups.tid_cgroup),
                       (end.cgroups.tids, end.cgroups.tid_cgroup),
                       start.delayacct is False or end.delayacct is False)
    rows = joined.rows
    if joined.unresolved:
        _inherit(rows, rows["cgroup_id"].copy(), start, end)
    if joined.keep is not None:
        rows = rows[joined.keep]
    return rows, Look(end.time_ns, joined.ledger, end.cgroups, end.delayacct)


def reference_merge(start: Look, end: Look, exits: np.ndarray) -> Tuple[np.ndarray, Look]:
    """``merge`` in numpy over whole arrays: the reference tsf_join is tested against."""
    # an exit record in this interval was filled after the opening look began: one filled
    # earlier was in the sockets when the previous interval was cut, so it is that interval's
    ends = end.records
    if len(exits):
        exits = _unique_exits(reference_sightings(exits, look_ns=start.time_ns))
        # 1. an exit record and the closing look's sighting of the same task become one
        x_to_end, ledger = _fold(exits, ends)
        end_folded = np.zeros(len(ends), bool)
        end_folded[x_to_end[x_to_end >= 0]] = True
        live_at = np.flatnonzero(~end_folded)
        live = ends[live_at]
    else:       # an idle interval: none of the folding's passes over the look
        exits = ends[:0]
        x_to_end = np.zeros(0, np.int64)
        ledger = ends.copy()
        live_at = np.arange(len(ends))
        live = ends

    # 2. the end sightings: exit records, then live threads
    seen = np.concatenate([exits, live]) if len(exits) else live
    n, nx = len(seen), len(exits)
    is_exit = np.zeros(n, bool)
    is_exit[:nx] = True
    counters = seen["mono"][:, :len(DELTA_FIELDS)]

    # 3. the same task in the ledger (its exit record first: a pid is reused after death)
    starts = start.records
    s_at = _match(seen, starts, (seen["birth_ns"], ~is_exit), ordered=True)
    matched = s_at >= 0
    # an exited ledger entry is final: a zombie listed again, or a repeated exit, adds nothing
    already = np.zeros(n, bool)
    already[matched] = starts["exited"][s_at[matched]] != 0
    ledger["exited"][live_at[already[nx:]]] = 1

    rows = np.zeros(n, TASK_DTYPE)
    for name in IDENTITY_FIELDS + LEVEL_FIELDS + ("ac_btime64",):
        rows[name] = seen[name]
    rows["ac_exitcode"][:nx] = exits["ac_exitcode"]
    # one start per task (see "Start" in the module docstring)
    rows["ac_btime64"][matched] = starts["ac_btime64"][s_at[matched]]
    ledger["ac_btime64"][live_at] = rows["ac_btime64"][nx:]
    folded = np.flatnonzero(x_to_end >= 0)
    ledger["ac_btime64"][x_to_end[folded]] = rows["ac_btime64"][folded]
    base = np.zeros_like(counters)
    base[matched] = starts["mono"][s_at[matched], :len(DELTA_FIELDS)]
    block = summed_block(rows)                          # cpu_ns, then DELTA_FIELDS
    np.subtract(counters, np.minimum(base, counters), out=block[:, 1:])   # never negative

    flags = np.zeros(n, np.uint8)
    # born before the opening look (the latest it can have been born is earlier), yet not in it
    no_start = ~matched & (seen["birth_ns"] < start.time_ns)
    flags[no_start] |= FLAG_NO_START
    if no_start.any():
        share = _no_start_share(seen[no_start], start.time_ns)
        block[no_start, 1:] = (block[no_start, 1:] * share[:, None]).astype(np.uint64)
    # CPU: the scheduler's clock, for exited tasks too (see "CPU" in the module docstring)
    rows["cpu_ns"] = rows["cpu_run_virtual_total"]
    rows["state"] = np.where(is_exit, EXITED, 0) | np.where(matched, 0, BORN)

    pids = seen["ac_pid"]
    if nx:      # a look's pids are unique: only an exit can share a pid with another row
        sorted_pids = np.sort(pids)
        twice = sorted_pids[1:][sorted_pids[1:] == sorted_pids[:-1]]
        if len(twice):
            flags[np.isin(pids, twice)] |= FLAG_PID_REUSED
    unmatched = np.flatnonzero(~matched)
    if len(unmatched):
        in_start = lookup(starts["ac_pid"], np.ones(len(starts), np.uint8), pids[unmatched])
        flags[unmatched[in_start != 0]] |= FLAG_PID_REUSED
    if start.delayacct is False or end.delayacct is False:
        flags |= FLAG_DELAYACCT_OFF
        for name in _SWITCHED_DELTAS:
            rows[name] = 0
    rows["flags"] = flags

    _attribute(rows, is_exit, matched, x_to_end, nx, start, end)
    return rows[~already], Look(end.time_ns, ledger, end.cgroups, end.delayacct)


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
    _inherit(rows, cg, start, end)


def _inherit(rows: np.ndarray, cg: np.ndarray, start: Look, end: Look) -> None:
    """Rows with no cgroup yet (``cg`` 0: born and dead between two looks) get their thread
    group's, else their parent's; then ``cgroup_id`` is ``cg``."""
    pids = rows["ac_pid"]
    todo = cg == 0
    if not todo.any():
        rows["cgroup_id"] = cg
        return
    tgid, ppid = rows["ac_tgid"], rows["ac_ppid"]
    # the thread group in either look before the parent in any: a thread's ppid is its
    # process's parent, which sits elsewhere (a thread that died with its process, whose
    # leader only the opening look listed, went to the parent's cgroup when the closing
    # look was asked for the parent first)
    for parent in (np.where(tgid != pids, tgid, 0), ppid):
        for look in (end.cgroups, start.cgroups):
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
