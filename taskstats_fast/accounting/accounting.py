"""Accounting: a Connection and an ExitListener on every CPU, turned into one Interval at a time.

Owns the schedule and the looks.  A *look* walks the cgroup v2 hierarchy (every thread id with its
cgroup, and pressure totals) and queries the listed threads in one bulk lookup, except those of
a multi-threaded process none of whose threads ran since the previous look, which are carried
from it (``quiet.QuietGroups``, one TGID GET per such process instead); the exit stream
is read continuously on a thread of its own (during looks and merges too), and after each look
everything the sockets hold is cut into this interval, so an exit that raced the look is in it.
``merge.merge`` turns the two looks and the exits into rows; each closing look is the next
interval's opening look, so the intervals tile time: summed over intervals, every task's counters
are counted once.

    with tsf.Accounting(interval=1.0) as acct:
        for iv in acct:
            print(iv.by("cgroup"))

Only the public API of the streams is used (``Connection.pids``/``snapshot``, ``ExitListener.read``
and ``lost``), so they can change inside without touching this module.
"""

from __future__ import annotations

import time
from typing import Iterator, Optional

import numpy as np

from .. import layout
from ..kernel.delayacct import delayacct_enabled
from ..kernel import receive_buffer
from . import cgroupfs
from .exit_reader import ExitReader
from .interval import Interval, Pressure, PSI_DTYPE, PSI_RESOURCES, psi_words
from .merge import Look, merge
from .quiet import QuietGroups
from .reconcile import reconcile

__all__ = ["Accounting", "AUTO"]

#: ``cgroup_root=AUTO``: find cgroup v2 in /proc/self/mountinfo.
AUTO = "auto"
# Exit messages each socket can hold (one socket per CPU) while the reader waits for the GIL
# that a look or a merge holds: four times the listener's default, charged only while used.
_EVENTS_PER_SOCKET = 4 * receive_buffer.DEFAULT_EVENTS_PER_CPU


class Accounting:
    """Intervals of per-task accounting: ``for iv in Accounting(interval=1.0): ...``.

    ``interval``: seconds between looks (the schedule does not drift; if a look overruns, the
    next one is taken at once).  ``cgroup_root``: where cgroup v2 is mounted (``AUTO``: found in
    mountinfo; None: no attribution).  ``pressure``: read PSI.  ``workers``: sockets and
    threads each look's bulk query runs on (``Connection.pids(workers=)``; default 1: the
    kernel serialises TASKSTATS GETs under ``genl_mutex``, the family having no
    ``parallel_ops``, so a second thread buys little time and costs CPU per look).
    ``carry_quiet``: a multi-threaded process none of whose threads ran since the previous look
    is checked with one TGID GET and its threads' records carried forward, not queried one by
    one (accounting/quiet.py says what that can miss; False: query every listed thread).
    ``connection``/``listener``: use these instead of opening a ``Connection`` and an
    ``ExitListener()`` (they are then not closed here).  ``listener_options`` go to
    ``ExitListener`` when this class opens it.
    """

    def __init__(self, interval: float = 1.0, *, cgroup_root: Optional[str] = AUTO,
                 pressure: bool = True, workers: Optional[int] = None, carry_quiet: bool = True,
                 connection=None, listener=None, **listener_options):
        if not interval > 0:
            raise ValueError("interval is in seconds and must be positive")
        self.interval = float(interval)
        self.cgroup_root = cgroupfs.find_cgroup2() if cgroup_root == AUTO else (cgroup_root or None)
        self.pressure = bool(pressure)
        #: sockets and threads of each look's bulk query (default 1, see the class docstring)
        self.workers = max(1, int(workers if workers is not None else 1))
        self._own_connection = connection is None
        self._own_listener = listener is None
        self._connection = connection
        self._listener = listener
        self._listener_options = listener_options
        self._look: Optional[Look] = None
        #: which listed threads a look queries (None: every one)
        self.quiet: Optional[QuietGroups] = QuietGroups() if carry_quiet else None
        self._files = cgroupfs.OpenFiles()
        self._reader: Optional[ExitReader] = None
        self._lost_at_look = 0
        self._next_deadline = 0.0
        self._index = 0
        self.closed = True

    # -- lifecycle ---------------------------------------------------------------------------
    def open(self) -> "Accounting":
        """Open the sockets and take the first look (the start of the first interval)."""
        if not self.closed:
            return self
        from ..kernel.connection import Connection   # the exit stream brings asyncio: load on use
        from ..kernel.listener import ExitListener
        try:
            if self._listener is None:
                options = dict(self._listener_options)
                options.setdefault("rcvbuf", _EVENTS_PER_SOCKET * receive_buffer.EVENT_TRUESIZE)
                self._listener = ExitListener(**options)
            if self._connection is None:
                self._connection = Connection(warn_delayacct=False)
            self.closed = False
            self._lost_at_look = self._listener.lost
            self._reader = ExitReader(self._listener, self._listener.room or _EVENTS_PER_SOCKET)
            self._look = self._take_look()
            self._reader.cut()    # exits before the first look belong to no interval
        except BaseException:
            self.close()
            raise
        self._next_deadline = time.monotonic() + self.interval
        return self

    def close(self) -> None:
        """Deregister the listener and close the sockets this object opened (idempotent)."""
        self.closed = True
        if self._reader is not None:
            self._reader.stop()
            self._reader = None
        self._files.close()
        if self._own_listener and self._listener is not None:
            self._listener.close()
            self._listener = None
        if self._own_connection and self._connection is not None:
            self._connection.close()
            self._connection = None

    def __enter__(self) -> "Accounting":
        return self.open()

    def __exit__(self, *exc) -> None:
        self.close()

    def __iter__(self) -> Iterator[Interval]:
        self.open()
        while not self.closed:
            yield self.next()

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"interval #{self._index}"
        return (f"<taskstats_fast.Accounting every {self.interval:g}s, {state}, "
                f"cgroup v2 at {self.cgroup_root or 'nowhere (no attribution)'}>")

    # -- intervals ---------------------------------------------------------------------------
    def next(self, deadline: Optional[float] = None) -> Interval:
        """Wait for the end of the current interval (or until ``deadline``, a time.monotonic()
        value) and return it."""
        if self.closed:
            self.open()
        listener, reader = self._listener, self._reader
        assert listener is not None and reader is not None and self._look is not None
        end = self._next_deadline if deadline is None else deadline
        while (remaining := end - time.monotonic()) > 0:
            time.sleep(remaining)     # a signal's handler still runs at once (PEP 475)
        start = self._look
        closing = self._take_look()
        batches = reader.cut()                    # the exits that raced the look are in
        lost_now = listener.lost
        rows, self._look = merge(start, closing, batches)
        own_usage = reconcile(rows, start.cgroups, closing.cgroups)
        iv = Interval(start.time_ns, closing.time_ns, rows,
                      cgroups={**start.cgroups.paths, **closing.cgroups.paths},
                      psi=_pressure_delta(start, closing), lost=lost_now - self._lost_at_look,
                      delayacct=None if closing.delayacct is None else
                      bool(start.delayacct and closing.delayacct),
                      cgroup_root=self.cgroup_root or "", index=self._index,
                      cpu_stat_us=own_usage)
        self._lost_at_look = lost_now
        self._index += 1
        now = time.monotonic()
        self._next_deadline = max(self._next_deadline + self.interval, now) if deadline is None \
            else now + self.interval
        return iv

    __next__ = next

    def _take_look(self) -> Look:
        assert self._connection is not None
        began = time.time_ns()
        files = self._files
        delayacct = delayacct_enabled(lambda path: files.read(path, one_piece=True))
        cgroups = cgroupfs.look(self.cgroup_root, pressure=self.pressure, files=files)
        if self.cgroup_root and self.quiet is not None:
            records = self.quiet.records(self._connection, cgroups.tids, began, self.workers)
        elif self.cgroup_root:
            records = self._connection.pids(cgroups.tids, workers=self.workers).records
        else:
            records = self._connection.snapshot(threads=True, workers=self.workers).records
        if self.cgroup_root:
            cgroups.read_usage(files)   # after the queries: close to the cut of the exit stream
        files.sweep()
        return Look.of(began, records, cgroups, delayacct)


def _pressure_delta(start: Look, end: Look) -> Pressure:
    """Stall-time deltas: the system's, and each cgroup's seen at both looks."""
    a, b = start.cgroups, end.cgroups
    system = layout.zeros_records(1, PSI_DTYPE)
    before = np.frombuffer(a.system_psi, np.uint64)[1:]
    after = np.frombuffer(b.system_psi, np.uint64)[1:]
    psi_words(system)[0, 1:] = after - np.minimum(before, after)
    ids_a, ids_b = a.psi["cgroup_id"], b.psi["cgroup_id"]
    if np.array_equal(ids_a, ids_b):      # the same cgroups at both looks: no intersection
        common, before, after = ids_a, psi_words(a.psi)[:, 1:], psi_words(b.psi)[:, 1:]
    else:
        common, ia, ib = np.intersect1d(ids_a, ids_b, assume_unique=True, return_indices=True)
        before, after = psi_words(a.psi)[ia, 1:], psi_words(b.psi)[ib, 1:]
    rows = layout.empty_records(len(common), PSI_DTYPE)
    words = psi_words(rows)
    words[:, 0] = common
    np.subtract(after, np.minimum(before, after), out=words[:, 1:])
    resources = tuple(r for r in PSI_RESOURCES if r in a.resources and r in b.resources)
    return Pressure(system[0], rows, resources)
