"""Connection: TASKSTATS queries over one generic netlink socket, the library's query face.

This module puts the query side together from one-job parts and owns its public face:

* ``queries.QueryChannel``: one socket's request/reply exchange (single and bulk lookups in
  rounds that fit the receive buffer; ``queries`` explains how a bulk lookup works);
* ``queries.ParallelLookups``: a bulk lookup split over extra sockets and threads (``workers=``);
* ``snapshot_rows``: the live tasks of /proc and how a process row is made of its threads;
* ``cgroupstats``: task counts of a cgroup v1 directory, and what a refusal means;
* ``delayacct``: the warning when records are read while delay accounting is off.
"""

from __future__ import annotations

import os
import socket
import warnings
from typing import Callable, Iterable, Optional, Union

import numpy as np

from . import netlink, snapshot_rows
from .._native import ATTR_PID, ATTR_TGID
from .cgroupstats import CgroupStats, cgroupstats
from .delayacct import DELAYACCT_OFF_MESSAGE, DelayAccountingOffWarning, delayacct_enabled
from .queries import (DEFAULT_RCVBUF, DEFAULT_REPLY_TRUESIZE, MAX_IN_FLIGHT, Lookup, ParallelLookups,
                      QueryChannel, as_ids, requests_in_flight)
from .snapshot_rows import PROCESS_COLUMNS, process_rows
from ..errors import CgroupV1RequiredError

__all__ = ["Connection", "Lookup", "CgroupStats", "CgroupV1RequiredError", "DEFAULT_TIMEOUT",
           "requests_in_flight", "process_rows", "PROCESS_COLUMNS", "MAX_IN_FLIGHT", "DEFAULT_RCVBUF"]

DEFAULT_TIMEOUT = netlink.DEFAULT_TIMEOUT


class Connection:
    """A generic netlink socket for TASKSTATS queries (and cgroupstats).

    ``timeout``: seconds to wait for a reply the kernel owes before ``ReplyTimeoutError`` (bulk
    lookups: seconds without progress).  ``rcvbuf``: receive buffer to ask for (default: room
    for a full round of MAX_IN_FLIGHT replies; SO_RCVBUFFORCE is used when privileged, so
    net.core.rmem_max does not cap it); bulk lookups size their rounds to what the kernel
    grants, so a small buffer only means more rounds, never lost replies.
    ``warn_delayacct``: warn once (``DelayAccountingOffWarning``) when records are read while
    ``kernel.task_delayacct`` is off, since most delay fields are then zero.

    TASKSTATS queries need CAP_NET_ADMIN in the initial user namespace; cgroupstats needs no
    privilege.  A Connection may be shared by threads (calls are serialised) and is a context
    manager.
    """

    def __init__(self, *, timeout: float = DEFAULT_TIMEOUT, rcvbuf: int = DEFAULT_RCVBUF,
                 warn_delayacct: bool = True):
        sock = netlink.open_socket()
        try:
            granted = netlink.set_rcvbuf(sock, rcvbuf, warn=False)
            family = netlink.resolve_family(sock, timeout=timeout)
        except BaseException:
            sock.close()
            raise
        self._setup(QueryChannel(sock, family, timeout=timeout, rcvbuf=granted), warn_delayacct,
                    lambda: netlink.open_socket(self.rcvbuf // 2))

    @classmethod
    def over_socket(cls, sock: socket.socket, family: netlink.Family, *,
                    timeout: float = DEFAULT_TIMEOUT,
                    reply_truesize: Optional[int] = DEFAULT_REPLY_TRUESIZE,
                    open_socket: Optional[Callable[[], socket.socket]] = None,
                    warn_delayacct: bool = False) -> "Connection":
        """A Connection over a socket you made and its family: the test seam.  Tests hand it
        the near end of a socketpair whose far end plays the kernel (tests/fakekernel.py,
        ``QueryKernel``), so every query path runs without root.  ``open_socket`` makes the
        extra sockets of parallel lookups (``workers=``); ``reply_truesize`` skips the receive
        buffer calibration, which needs the kernel's SO_MEMINFO accounting.  The Connection owns
        ``sock`` from now on (``close()`` closes it)."""
        self = cls.__new__(cls)
        channel = QueryChannel(sock, family, timeout=timeout,
                               rcvbuf=sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF),
                               reply_truesize=reply_truesize)
        self._setup(channel, warn_delayacct,
                    open_socket or (lambda: netlink.open_socket(self.rcvbuf // 2)))
        return self

    def _setup(self, channel: QueryChannel, warn_delayacct: bool,
               open_socket: Callable[[], socket.socket]) -> None:
        self._channel = channel
        self._parallel = ParallelLookups(channel, open_socket)
        self._warn_delayacct = warn_delayacct

    # -- lifecycle ---------------------------------------------------------------------------
    def close(self) -> None:
        """Close the socket, and those of parallel workers (idempotent)."""
        channel = getattr(self, "_channel", None)
        if channel is not None:
            channel.close()
        parallel = getattr(self, "_parallel", None)
        if parallel is not None:
            parallel.close()

    @property
    def closed(self) -> bool:
        return self._channel.closed

    def fileno(self) -> int:
        return self._channel.live_socket().fileno()

    def __enter__(self) -> "Connection":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"fd={self.fileno()}"
        return f"<taskstats_fast.Connection {state} family={self.family.id} in_flight={self.in_flight}>"

    # -- facts -------------------------------------------------------------------------------
    @property
    def family(self) -> netlink.Family:
        """The TASKSTATS generic netlink family this connection talks to."""
        return self._channel.family

    @property
    def timeout(self) -> float:
        """Seconds to wait for a reply the kernel owes (bulk lookups: without progress)."""
        return self._channel.timeout

    @timeout.setter
    def timeout(self, seconds: float) -> None:
        self._channel.timeout = float(seconds)

    @property
    def rcvbuf(self) -> int:
        """The receive buffer the kernel granted, in bytes."""
        return self._channel.rcvbuf

    @property
    def max_in_flight(self) -> int:
        """Upper bound of ``in_flight`` (the receive buffer may lower it further)."""
        return self._channel.max_in_flight

    @max_in_flight.setter
    def max_in_flight(self, requests: int) -> None:
        self._channel.max_in_flight = int(requests)

    @property
    def in_flight(self) -> int:
        """Requests one round of a bulk lookup sends (from the granted receive buffer)."""
        return self._channel.in_flight

    @property
    def delayacct_enabled(self) -> Optional[bool]:
        """``kernel.task_delayacct`` right now (see ``taskstats_fast.kernel.delayacct``)."""
        return delayacct_enabled()

    @property
    def counters(self) -> dict:
        """The socket's receive counters since the connection opened (datagrams, records,
        drops, overruns, truncated, bad, kernel_errors)."""
        return self._channel.counters

    # -- single lookups ----------------------------------------------------------------------
    def pid(self, pid: int) -> np.void:
        """Statistics of one task (thread) as a ``DTYPE`` record (a numpy structured scalar:
        ``rec["ac_utime"]``).  Raises ``NoSuchTaskError`` if there is no such task, and
        ``InvalidTaskIdError`` (a ValueError) for an id no task can have (0, negative, >= 2**32)."""
        return self._delays_checked(self._channel.one(pid, ATTR_PID))

    def tgid(self, tgid: int) -> np.void:
        """Statistics summed over a thread group (process), as a ``DTYPE`` record.  The kernel
        fills times, context switches and delays; identity fields (comm, pid, uid...) are zero
        in TGID records.  Any thread id of the group works."""
        return self._delays_checked(self._channel.one(tgid, ATTR_TGID))

    # -- bulk lookups ------------------------------------------------------------------------
    def pids(self, pids: Iterable[int], *, workers: int = 1) -> Lookup:
        """Statistics of many tasks in one batch: a ``Lookup`` whose ``records`` hold one row per
        task that exists, in the order asked; ``missing`` lists the others.

        ``workers`` > 1 splits the ids over that many sockets, each queried from its own thread:
        the kernel answers a GET inside the sender's ``send`` call and the receive loop runs in
        C, both without the GIL, so the kernel's per-task work spreads over the cores.  The
        extra sockets are opened on first use and kept until ``close()``."""
        return self._delays_checked(self._parallel.lookup(as_ids(pids, "pids"), ATTR_PID, workers))

    def tgids(self, tgids: Iterable[int], *, workers: int = 1) -> Lookup:
        """``pids`` for thread groups: one summed TGID record per process that exists."""
        return self._delays_checked(self._parallel.lookup(as_ids(tgids, "tgids"), ATTR_TGID, workers))

    def snapshot(self, threads: bool = False, *, aggregate: bool = False, workers: int = 1) -> Lookup:
        """Every live process (default) or every thread (``threads=True``), from one listing of
        /proc and bulk lookups.

        ``threads=True``: one PID record per /proc/*/task entry, each thread's own numbers.

        Default, one row per process, ``id`` its pid, carrying the **process** (see
        ``PROCESS_COLUMNS`` for the rule per column):
        - CPU times, context switches, CPU run time and every delay count and total from the
          kernel's TGID record: summed over the threads, including threads that already exited;
        - I/O, page faults and scaled times summed over the PID records of its live threads (the
          kernel keeps no total of exited threads' I/O for TASKSTATS); per-delay-class maximum
          and minimum over its live threads;
        - identity (comm, uid, gid, ppid, btime, nice, exe...) and memory (coremem, hiwater...)
          from the leader thread's PID record.
        ``aggregate=True`` returns the raw TGID records instead (identity fields zero).
        ``workers``: query over that many sockets and threads (see ``pids``).

        Tasks that exit between listing /proc and the query are absent from ``records`` and
        listed in ``missing``; a process is missing when its leader or its TGID record is."""
        got = snapshot_rows.snapshot(lambda ids, attr: self._parallel.lookup(ids, attr, workers),
                                     threads, aggregate)
        return self._delays_checked(got)

    # -- cgroupstats -------------------------------------------------------------------------
    def cgroup(self, path: Union[str, os.PathLike]) -> CgroupStats:
        """Task counts by state in a cgroup **v1** directory (CGROUPSTATS_CMD_GET).  Needs no
        privilege.  A cgroup v2 or non-cgroup directory raises ``CgroupV1RequiredError``."""
        return cgroupstats(self._channel, path)

    def _delays_checked(self, got):
        """``got``, after warning (once per connection, at the caller of the public method) that
        delay fields are zero when records arrived while delay accounting is off."""
        rows = len(got.records) if isinstance(got, Lookup) else 1
        if self._warn_delayacct and rows:
            self._warn_delayacct = False
            if delayacct_enabled() is False:
                warnings.warn(DELAYACCT_OFF_MESSAGE, DelayAccountingOffWarning, stacklevel=3)
        return got
