"""Which listed threads a look queries: the threads of a thread group none of whose threads ran
since the previous look are carried forward from it instead of queried one by one.

Owns that rule and the records it carries between looks.

Why.  A TASKSTATS GET costs the kernel the same for a thread that slept as for one that ran,
and the family serialises GETs, so a look of thousands of sleeping threads was thousands of GETs
that each answered what the previous look already knew.  One TGID GET per multi-threaded group
tells whether any of its threads ran: the kernel's TGID record sums, over the group's live
threads (and its exited ones, for the delays), counters that move whenever a thread of it is
scheduled or charged: ``cpu_count`` (one per arrival on a CPU), the scheduler clock, the tick
times, the context switches and every delay class.  If they are all what they were at the
previous look's TGID GET, which was taken *before* that look's PID GETs, no thread of the group
ran in between, so the PID records of that look are still what the kernel would answer now.

What a carried record changes: its receive time (``time_ns``) and elapsed time (``ac_etime``)
both move on by the time between the two looks (whole µs), so the birth range it gives the merge
(receive time minus elapsed, and the look's start minus elapsed) is the one it gave before.

What can change while no thread of a group runs, and how each is handled:
- a thread exits: it runs ``do_exit`` first (an arrival on a CPU), and its context switches
  leave the live sum, so the group is queried; its exit record comes through the exit stream;
- a new thread: ``clone`` ran in the group, and a thread id the previous look did not see is
  queried anyway;
- its parent dies: the kernel reparents it (``ac_ppid`` changes) without it running, so a group
  whose recorded parent is no longer listed is queried;
- a move to another cgroup: the cgroup comes from the look's listing, never from a record;
- the memory levels: another process can fault pages into the group's memory
  (``process_vm_writev``, ptrace) or reclaim can shrink it without a thread of it running; the
  carried ``hiwater_rss``/``hiwater_vm`` are those of the group's last query.

Only groups that had at least ``MIN_THREADS`` threads at the previous look are checked, and only
when such groups hold ``MIN_CHECKED_THREADS`` threads together: the check has a fixed cost (one
more bulk call and a dozen numpy calls, about what a hundred GETs cost with an interval's cold
caches), which a few small groups do not repay.  A group's first check after it appears only
sets its reference, so it is carried from its second on.
"""

from __future__ import annotations

from typing import List, Optional, Tuple

import numpy as np

from .. import layout
from .interval import DELTA_FIELDS

__all__ = ["QuietGroups", "MIN_THREADS", "MIN_CHECKED_THREADS", "SIGNATURE_FIELDS"]

#: Threads a group needs at the previous look to be checked with one TGID GET.
MIN_THREADS = 4
#: Threads the groups to check must hold together, or none is checked.
MIN_CHECKED_THREADS = 128
#: The TGID record's counters compared: any thread of the group scheduled or charged moves one.
#: (Of DELTA_FIELDS, the TGID record leaves the I/O and fault counters zero: equal at both.)
SIGNATURE_FIELDS = DELTA_FIELDS
_OFFSETS = {name: spec[1] for name, spec in (layout.DTYPE.fields or {}).items()}
_SIGNATURE_WORDS = np.array([_OFFSETS[name] // 8 for name in SIGNATURE_FIELDS], np.intp)
assert all(layout.DTYPE[name] == np.uint64 and _OFFSETS[name] % 8 == 0 for name in SIGNATURE_FIELDS)


def _signatures(records: np.ndarray) -> np.ndarray:
    """The SIGNATURE_FIELDS of each DTYPE record, as an (n, fields) uint64 array."""
    words = np.ascontiguousarray(records).view(np.uint64).reshape(len(records), -1)
    return words[:, _SIGNATURE_WORDS]


class QuietGroups:
    """A look's PID records, each thread of a quiet group carried from the previous look.

    ``records(connection, tids, began_ns, workers)`` returns the DTYPE records a full
    ``connection.pids(tids)`` would have returned, sorted by pid as ``tids`` are, having asked
    the kernel only for the threads of groups that ran.  ``carried`` and ``checked`` count, for the last
    look, the records carried forward and the groups checked."""

    def __init__(self, min_threads: int = MIN_THREADS, min_checked: int = MIN_CHECKED_THREADS):
        self.min_threads, self.min_checked = int(min_threads), int(min_checked)
        self._records: Optional[np.ndarray] = None   # the previous look's records, by ac_pid
        self._began_ns = 0
        self._groups = np.zeros(0, np.uint32)         # groups to check at the next look, sorted
        self._reference_ids = np.zeros(0, np.uint32)  # groups with a reference signature, sorted
        self._reference = np.zeros((0, len(SIGNATURE_FIELDS)), np.uint64)
        self._kept: List[Optional[np.ndarray]] = [None, None]
        self._columns: Tuple[np.ndarray, ...] = ()
        self.carried = 0
        self.checked = 0

    def records(self, connection, tids: np.ndarray, began_ns: int, workers: int = 1) -> np.ndarray:
        """DTYPE records of the listed ``tids`` (sorted, unique) at the look that began at
        ``began_ns`` (CLOCK_REALTIME ns)."""
        previous = self._records
        carry, carried = np.zeros(0, np.intp), None
        self.checked = len(self._groups)
        if previous is not None and len(self._groups):
            found = connection.tgids(self._groups, workers=workers).records
            ids, signatures = found["id"], _signatures(found)
            quiet = self._quiet(ids, signatures)
            self._reference_ids, self._reference = ids, signatures
            if len(quiet):
                carry, carried = self._carried(quiet, tids)
        else:
            self._reference_ids = self._groups[:0]
            self._reference = self._reference[:0]
        if previous is None or carried is None or not len(carry):
            records = connection.pids(tids, workers=workers).records
        else:
            got = connection.pids(tids[~carried], workers=workers)
            records = self._merged(got, carried, previous, carry, int(began_ns) - self._began_ns)
        self.carried = len(carry)
        self._remember(records, int(began_ns))
        return records

    def _quiet(self, ids: np.ndarray, signatures: np.ndarray) -> np.ndarray:
        """The groups of ``ids`` (sorted: the order they were asked in) whose signature equals
        the one the previous look took."""
        ref_ids = self._reference_ids
        if len(ref_ids) == 0 or len(ids) == 0:
            return ids[:0]
        at = np.minimum(np.searchsorted(ref_ids, ids), len(ref_ids) - 1)
        same = (ref_ids[at] == ids) & np.all(self._reference[at] == signatures, axis=1)
        return ids[same]

    def _carried(self, quiet: np.ndarray, tids: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """The rows of the previous look's records to carry: threads of a quiet group that are still listed
        and whose parent is (a dead parent reparents a process without it running); and which
        of ``tids`` they are (a mask)."""
        pids, tgids, ppids = self._columns
        at = np.minimum(np.searchsorted(pids, tids), len(pids) - 1)
        listed = np.flatnonzero(pids[at] == tids)          # tids with a previous row
        rows = at[listed]
        tgid = tgids[rows]
        keep = _member(quiet, tgid)
        # a group's threads share a parent: check it once per run of one group's rows
        first = np.flatnonzero(keep & np.r_[True, tgid[1:] != tgid[:-1]])
        parents = ppids[rows[first]]
        orphaned = (parents != 0) & ~_member(tids, parents)
        if orphaned.any():
            keep &= ~_member(np.unique(tgid[first[orphaned]]), tgid)
        carried = np.zeros(len(tids), bool)
        carried[listed[keep]] = True
        return rows[keep], carried

    def _merged(self, got, carried: np.ndarray, previous: np.ndarray, carry: np.ndarray,
                shift_ns: int) -> np.ndarray:
        """The records of the listed tids in their order: ``got`` (the Lookup of the tids not
        ``carried``) and the rows ``carry`` of ``previous`` (the ``carried`` ones), those moved
        on by ``shift_ns`` (in whole µs)."""
        present = carried.copy()
        present[np.flatnonzero(~carried)[got.found]] = True     # the asked ids the kernel knew
        place = np.cumsum(present) - 1                          # each present tid's row
        out = self._buffer(int(place[-1]) + 1, previous)
        rows = _rows(out)
        rows[place[~carried & present]] = _rows(got.records)
        at = place[carried]
        _copy_runs(rows, at, _rows(previous), carry)
        shift_us = max(0, shift_ns // 1000)
        out["ac_etime"][at] += np.uint64(shift_us)
        out["time_ns"][at] += np.uint64(shift_us * 1000)
        return out

    def _buffer(self, n: int, previous: np.ndarray) -> np.ndarray:
        """``n`` records in one of two kept arrays, not the one ``previous`` lies in: a fresh
        array of thousands of records is fresh pages, whose zeroing by the kernel cost more
        than the copy into them."""
        i = next(i for i, kept in enumerate(self._kept)   # at most one holds ``previous``
                 if kept is None or not np.may_share_memory(kept, previous))
        kept = self._kept[i]
        if kept is None or len(kept) < n:
            kept = self._kept[i] = layout.empty_records(n + n // 4)
        return kept[:n]

    def _remember(self, records: np.ndarray, began_ns: int) -> None:
        """Keep this look's records and choose the groups the next look checks."""
        self._records, self._began_ns = records, began_ns
        self._groups = self._groups[:0]
        pids, tgids = records["ac_pid"], records["ac_tgid"]
        followers = tgids[pids != tgids]            # each thread but a group's leader
        if len(followers) < self.min_checked:       # a small host: cheap to know, nothing to do
            return
        groups, counts = np.unique(followers, return_counts=True)
        big = counts + 1 >= self.min_threads
        if int(counts[big].sum()) + int(big.sum()) < self.min_checked:
            return
        self._groups = groups[big].astype(np.uint32)
        # the columns the next look reads, compact: read from 712-byte records, each is a
        # cache line per record, and the records are cold by the next look
        self._columns = (np.ascontiguousarray(pids), np.ascontiguousarray(tgids),
                         np.ascontiguousarray(records["ac_ppid"]))


#: Above this many runs, carried rows are copied with one gather instead of run by run.
_MAX_RUNS = 64


def _copy_runs(dst: np.ndarray, dst_at: np.ndarray, src: np.ndarray, src_at: np.ndarray) -> None:
    """``dst[dst_at] = src[src_at]`` (both increasing), one slice copy per run of rows that are
    consecutive in both: a group's threads usually have consecutive pids, so a few memcpys
    instead of a gather into a temporary as large as the rows."""
    breaks = np.flatnonzero((np.diff(dst_at) != 1) | (np.diff(src_at) != 1)) + 1
    if len(breaks) >= _MAX_RUNS:
        dst[dst_at] = src[src_at]
        return
    for lo, hi in zip([0, *breaks.tolist()], [*breaks.tolist(), len(dst_at)]):
        d, s = int(dst_at[lo]), int(src_at[lo])
        dst[d:d + hi - lo] = src[s:s + hi - lo]


def _rows(records: np.ndarray) -> np.ndarray:
    """``records`` as one opaque item per record: numpy gathers and scatters a structured dtype
    field by field, and a (rows, bytes) view byte by byte, both many times slower."""
    return np.ascontiguousarray(records).view(np.dtype((np.void, records.dtype.itemsize)))


def _member(sorted_keys: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    """For each of ``wanted``, whether it is in ``sorted_keys`` (sorted, unique)."""
    if len(sorted_keys) == 0:
        return np.zeros(len(wanted), bool)
    at = np.minimum(np.searchsorted(sorted_keys, wanted), len(sorted_keys) - 1)
    return sorted_keys[at] == wanted
