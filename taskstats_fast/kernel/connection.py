"""Connection: TASKSTATS queries over one generic netlink socket.

Owns the query side of the library: single pid/tgid lookups, bulk lookups (``pids``/``tgids``),
process and thread snapshots, cgroupstats, and the errors that explain what went wrong.

How a bulk lookup works: one C call (``_native.Query``, csrc/tsf_query.c) with the GIL released,
no Python object per record:

1. Request i carries seq first + i, so a reply's ``nlmsg_seq`` minus the first seq is the index
   of its request.
2. The requests go out in *rounds* of at most ``in_flight`` requests, one ``send`` each.  The
   kernel answers every request of a round inside that ``send`` and queues the replies on our
   socket, so a round must fit in the receive buffer: ``in_flight`` comes from the granted
   SO_RCVBUF and the buffer cost (skb truesize) of one reply, measured once per connection.
3. The drain (poll + recvmmsg + decode) writes the replies straight into the result array; an
   NLMSG_ERROR carries the seq of its request: ESRCH marks that id missing, anything else raises.
4. Loss is never silent: if the kernel dropped replies anyway (SO_MEMINFO drops, ENOBUFS,
   a note that did not fit), the requests still unanswered are sent again; a reply that never
   comes raises ``ReplyTimeoutError`` after ``timeout`` seconds without progress.
5. ``workers=N`` splits the ids over N sockets queried from N threads: the kernel does its
   per-task work inside each sender's ``send``, so it spreads over the cores.
"""

from __future__ import annotations

import ctypes
import errno
import operator
import os
import socket
import threading
import time
import warnings
from typing import Any, Callable, Iterable, NamedTuple, Optional, Tuple, Union

import numpy as np

from .. import _native, layout
from . import namespaces, netlink
from .._native import (ATTR_PID, ATTR_TGID, NOTE_BAD, NOTE_ERROR, QUERY_DONE, QUERY_FOUND, QUERY_INTERRUPTED,
                       QUERY_KERNEL, QUERY_MALFORMED, QUERY_PENDING, QUERY_SOCKET, QUERY_TIMEOUT, Drain, Query,
                       strerror)
from .delayacct import DELAYACCT_OFF_MESSAGE, DelayAccountingOffWarning, delayacct_enabled
from ..errors import (CgroupV1RequiredError, DecodeError, InvalidTaskIdError, KernelError, NoSuchTaskError,
                      ReplyTimeoutError,
                     TaskstatsError, kernel_error)

__all__ = ["Connection", "Lookup", "CgroupStats", "CgroupV1RequiredError", "DEFAULT_TIMEOUT",
           "requests_in_flight", "process_rows", "PROCESS_COLUMNS"]

DEFAULT_TIMEOUT = netlink.DEFAULT_TIMEOUT

REQUEST_SIZE = _native.GET_REQUEST_SIZE

#: Fewest ids a parallel worker gets: below this, a thread hand-off costs more than it saves.
_MIN_IDS_PER_WORKER = 256
#: Most requests one round sends.  Larger rounds gain nothing (the kernel's per-request work
#: dominates) and keep megabytes of reply skbs cold in memory before we read them.
MAX_IN_FLIGHT = 1024
#: Buffer cost of one reply (skb truesize) before it is measured: a v16 reply is 1280 bytes.
DEFAULT_REPLY_TRUESIZE = 1280
#: Receive buffer asked for by default: a full round at twice the default truesize.  The kernel
#: doubles what it is asked for, so this is generous.
DEFAULT_RCVBUF = MAX_IN_FLIGHT * DEFAULT_REPLY_TRUESIZE
#: Datagrams one drain call takes at most (its recvmmsg arena; a query reply is ~600 bytes, so
#: MSG_TRUNC cannot happen: tsf_drain counts it anyway and we raise if it does).
NSLOTS = _native.DRAIN_SLOTS
# Spare rows in a result array: tsf_drain stops when fewer than two record slots are free.
_SPARE_ROWS = 2 * NSLOTS + 2
# errnos the kernel uses for a reply it could not queue: resend, do not raise.
_RESEND_ERRNOS = (errno.EAGAIN, errno.ENOBUFS, errno.ENOMEM)

_U32 = 0xFFFFFFFF

_CGROUP_SUPER_MAGIC = 0x27E0EB
_CGROUP2_SUPER_MAGIC = 0x63677270


# ---- pure helpers (byte-level tested) ------------------------------------------------------
def requests_in_flight(rcvbuf: int, reply_truesize: int, sndbuf: int = 1 << 30,
                       cap: Optional[int] = None) -> int:
    """How many requests one round may send so that all their replies fit in the receive buffer.

    ``rcvbuf`` is the socket's SO_RCVBUF as granted (the kernel's own, doubled, figure);
    ``reply_truesize`` the buffer one reply costs.  The kernel queues a reply while the bytes
    already queued do not exceed ``rcvbuf``; we keep an eighth of the buffer spare.  The request
    datagram itself must fit in the send buffer (netlink refuses ``len > sndbuf - 32``).
    """
    if rcvbuf <= 0 or reply_truesize <= 0:
        raise ValueError("rcvbuf and reply_truesize must be positive")
    by_rcvbuf = (rcvbuf - rcvbuf // 8) // reply_truesize
    by_sndbuf = (sndbuf - 64) // REQUEST_SIZE
    return max(1, min(MAX_IN_FLIGHT if cap is None else cap, by_rcvbuf, by_sndbuf))


def _invalid_id(what: str, value: object) -> InvalidTaskIdError:
    return InvalidTaskIdError(f"{what} must be positive integers 1 .. {_U32} (a task id), not {value}")


def _as_ids(ids, what: str) -> np.ndarray:
    """Validate pids/tgids: a 1-D array of uint32, values 1..2**32-1."""
    if isinstance(ids, np.ndarray):
        arr = ids
    elif isinstance(ids, (list, tuple, range)):
        arr = np.asarray(ids)
    else:
        arr = np.asarray(list(ids))
    if arr.ndim != 1:
        arr = arr.reshape(-1)
    if arr.size == 0:
        return np.empty(0, np.uint32)
    if arr.dtype.kind not in "iu":
        raise TypeError(f"{what} must be integers, not {arr.dtype}")
    low, high = int(arr.min()), int(arr.max())
    if low < 1 or high > _U32:
        raise _invalid_id(what, low if low < 1 else high)
    return np.ascontiguousarray(arr, dtype=np.uint32)


def _permission_hint() -> str:
    if namespaces.in_initial("user") is False:
        return ("This process runs in a non-initial user namespace (a rootless container or "
                "`unshare -U`): the kernel answers TASKSTATS queries only to CAP_NET_ADMIN in "
                "the initial user namespace, which nothing inside can hold. Run the query from "
                "the host (or a privileged container sharing the host's user namespace).")
    return ("TASKSTATS queries need CAP_NET_ADMIN: run as root, or grant the capability "
            "(e.g. systemd AmbientCapabilities=CAP_NET_ADMIN, or `setpriv --inh-caps "
            "+net_admin --ambient-caps +net_admin` from root). cgroupstats needs no privilege.")


def _missing_hint() -> str:
    if namespaces.in_initial("pid") is False:
        return ("It may have exited. Note: this process is in a non-initial pid namespace, so "
                "pids are looked up in that namespace, not the host's.")
    return "It may already have exited."


def _fs_magic(fd: int) -> Optional[int]:
    """f_type of fstatfs(fd) (the file system's magic number), or None."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        buf = ctypes.create_string_buffer(256)  # struct statfs is 120 bytes on 64-bit Linux
        if libc.fstatfs(fd, buf) != 0:
            return None
    except (OSError, AttributeError):
        return None
    return ctypes.c_ulong.from_buffer(buf).value & _U32  # f_type is the first member


# ---- results -----------------------------------------------------------------------------
class Lookup(NamedTuple):
    """Result of a bulk lookup (``pids``, ``tgids``, ``snapshot``).

    ``records``: one ``DTYPE`` row per id that exists, in request order (``records["id"]`` is
    the id asked for).  ``ids``: every id asked for, in order.  ``found``: bool per id, so
    ``ids[found]`` lines up row for row with ``records``.  ``missing``: the ids the kernel did not
    know (ESRCH: exited, or never existed).  ``resent``: requests sent again because the kernel
    dropped their replies (0 unless the receive buffer overflowed; nothing is lost either way).
    """

    records: np.ndarray
    ids: np.ndarray
    found: np.ndarray
    resent: int = 0

    @property
    def missing(self) -> np.ndarray:
        return self.ids[~self.found]

    def __repr__(self) -> str:
        return (f"Lookup({len(self.records)} records, {len(self.ids) - len(self.records)} "
                f"missing of {len(self.ids)} ids, resent={self.resent})")


class CgroupStats(NamedTuple):
    """Task counts of a cgroup v1 directory (CGROUPSTATS_CMD_GET), by scheduler state."""

    nr_sleeping: int
    nr_running: int
    nr_stopped: int
    nr_uninterruptible: int
    nr_io_wait: int


# ---- the connection --------------------------------------------------------------------------
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
        self._setup(sock, family, timeout=timeout, rcvbuf=granted, warn_delayacct=warn_delayacct)

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
        self._setup(sock, family, timeout=timeout,
                    rcvbuf=sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF),
                    warn_delayacct=warn_delayacct)
        self._reply_truesize = reply_truesize
        if open_socket is not None:
            self._open_socket = open_socket
        return self

    def _setup(self, sock, family, *, timeout, rcvbuf, warn_delayacct):
        self._sock: Optional[socket.socket] = sock
        self.family = family
        self.timeout = float(timeout)
        self.rcvbuf = int(rcvbuf)
        self._sndbuf = sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
        #: upper bound of ``in_flight`` (the receive buffer may lower it further)
        self.max_in_flight = MAX_IN_FLIGHT
        self._lock = threading.RLock()
        self._dirty = False          # replies of an abandoned request may still be queued
        self._reply_truesize: Optional[int] = None
        self._warn_delayacct = warn_delayacct
        self._drain = Drain(family.id, [sock.fileno()], notes=MAX_IN_FLIGHT + NSLOTS)
        self._src = self._drain.source(0)
        #: makes the extra sockets of parallel lookups (over_socket replaces it)
        self._open_socket: Callable[[], socket.socket] = lambda: netlink.open_socket(self.rcvbuf // 2)
        self._helpers: list = []     # Connections over extra sockets, one per extra worker
        self._pool: Any = None       # their threads (concurrent.futures), made on first use
        self._pool_size = 0

    # -- lifecycle ---------------------------------------------------------------------------
    def close(self) -> None:
        """Close the socket, and those of parallel workers (idempotent)."""
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()
        helpers, self._helpers = getattr(self, "_helpers", []), []
        for helper in helpers:
            helper.close()
        pool, self._pool = getattr(self, "_pool", None), None
        if pool is not None:
            pool.shutdown(wait=False)

    @property
    def closed(self) -> bool:
        return self._sock is None

    def fileno(self) -> int:
        return self._socket().fileno()

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
        sock = self._sock
        state = "closed" if sock is None else f"fd={sock.fileno()}"
        return f"<taskstats_fast.Connection {state} family={self.family.id} in_flight={self.in_flight}>"

    def _socket(self) -> socket.socket:
        if self._sock is None:
            raise ValueError("I/O on a closed taskstats_fast.Connection")
        return self._sock

    # -- facts -------------------------------------------------------------------------------
    @property
    def in_flight(self) -> int:
        """Requests one round of a bulk lookup sends (from the granted receive buffer)."""
        return requests_in_flight(self.rcvbuf, self._reply_truesize or DEFAULT_REPLY_TRUESIZE,
                                  self._sndbuf, self.max_in_flight)

    @property
    def delayacct_enabled(self) -> Optional[bool]:
        """``kernel.task_delayacct`` right now (see ``taskstats_fast.kernel.delayacct``)."""
        return delayacct_enabled()

    @property
    def counters(self) -> dict:
        """The socket's receive counters since the connection opened (datagrams, records,
        drops, overruns, truncated, bad, kernel_errors)."""
        s = self._src
        return {name: getattr(s, name) for name in
                ("datagrams", "bytes", "records", "drops", "overruns", "truncated", "bad",
                 "kernel_errors")}

    # -- single lookups ----------------------------------------------------------------------
    def pid(self, pid: int) -> np.void:
        """Statistics of one task (thread) as a ``DTYPE`` record (a numpy structured scalar:
        ``rec["ac_utime"]``).  Raises ``NoSuchTaskError`` if there is no such task, and
        ``InvalidTaskIdError`` (a ValueError) for an id no task can have (0, negative, >= 2**32)."""
        return self._one(pid, ATTR_PID)

    def tgid(self, tgid: int) -> np.void:
        """Statistics summed over a thread group (process), as a ``DTYPE`` record.  The kernel
        fills times, context switches and delays; identity fields (comm, pid, uid...) are zero
        in TGID records.  Any thread id of the group works."""
        return self._one(tgid, ATTR_TGID)

    def _one(self, ident, attr: int) -> np.void:
        ident = operator.index(ident)
        kind = "pid" if attr == ATTR_PID else "tgid"
        if not 0 < ident <= _U32:
            raise _invalid_id(f"{kind}s", ident)
        # One request, one reply: a lean path (no batch arrays) at ~1/3 of the bulk path's cost.
        out = np.empty(2, layout.DTYPE)  # tsf_drain takes a datagram only with 2 rows free
        with self._lock:
            sock = self._socket()
            self._flush_if_dirty()
            seq = netlink.next_seq()
            request = _native.build_get(self.family.id, seq, attr, np.array([ident], np.uint32))
            self._dirty = True
            sock.send(request)
            found = self._collect_one(seq, out, f"TASKSTATS query for {kind} {ident}", request)
            self._dirty = False
        if not found:
            raise NoSuchTaskError(errno.ESRCH, f"no task with {kind} {ident}. {_missing_hint()}")
        if self._warn_delayacct:
            self._warn_delayacct_once(stacklevel=3)
        return out[0]

    def _collect_one(self, seq: int, out: np.ndarray, what: str, request: bytes) -> bool:
        """Wait for the answer to the single request ``seq``: True with its record in ``out[0]``,
        False for ESRCH (no such task); other errors raise."""
        src, drain, res = self._src, self._drain, self._drain.last
        deadline = time.monotonic() + self.timeout
        truncated, bad, overruns = src.truncated, src.bad, src.overruns
        while True:
            # capacity 2: one datagram per call, so a stale one cannot push ours out
            drain.run(out, 0, 2, min_records=1,
                      timeout_ms=max(0, int((deadline - time.monotonic()) * 1000 + 0.999)))
            if src.truncated != truncated or src.bad != bad:
                raise DecodeError(f"{src.truncated - truncated} truncated and {src.bad - bad} "
                                  "malformed replies from the kernel")
            if res.records and int(out["seq"][0]) == seq:
                return True
            resend = src.overruns != overruns
            for note in drain.notes().tolist():
                kind_, code, _, note_seq = note
                if kind_ == NOTE_BAD:
                    raise DecodeError(f"malformed reply from the kernel: {strerror(code)}", code)
                if kind_ != NOTE_ERROR or note_seq != seq:
                    continue
                if code == errno.ESRCH:
                    return False
                if code in _RESEND_ERRNOS:
                    resend = True
                    continue
                raise kernel_error(code, what, _permission_hint() if code == errno.EPERM else None)
            if res.error:
                raise OSError(res.error, f"receiving TASKSTATS replies: {os.strerror(res.error)}")
            if resend:  # the kernel could not queue our reply: ask again
                overruns = src.overruns
                self._socket().send(request)
                deadline = time.monotonic() + self.timeout
                continue
            if res.interrupted:
                continue  # back in Python: signal handlers run now (KeyboardInterrupt propagates)
            if res.timed_out:
                raise ReplyTimeoutError(f"no reply from the kernel for {self.timeout:g} s to the "
                                        f"{what} (Connection(timeout=...) sets the limit)")

    def _warn_delayacct_once(self, stacklevel: int) -> None:
        """Warn (once per connection) that delay fields are zero; ``stacklevel`` counts frames
        above the caller, so the warning points at user code."""
        self._warn_delayacct = False
        if delayacct_enabled() is False:
            warnings.warn(DELAYACCT_OFF_MESSAGE, DelayAccountingOffWarning, stacklevel=stacklevel + 1)

    # -- bulk lookups ------------------------------------------------------------------------
    def pids(self, pids: Iterable[int], *, workers: int = 1) -> Lookup:
        """Statistics of many tasks in one batch: a ``Lookup`` whose ``records`` hold one row per
        task that exists, in the order asked; ``missing`` lists the others.

        ``workers`` > 1 splits the ids over that many sockets, each queried from its own thread:
        the kernel answers a GET inside the sender's ``send`` call and the receive loop runs in
        C, both without the GIL, so the kernel's per-task work spreads over the cores.  The
        extra sockets are opened on first use and kept until ``close()``."""
        return self._bulk(_as_ids(pids, "pids"), ATTR_PID, workers)

    def tgids(self, tgids: Iterable[int], *, workers: int = 1) -> Lookup:
        """``pids`` for thread groups: one summed TGID record per process that exists."""
        return self._bulk(_as_ids(tgids, "tgids"), ATTR_TGID, workers)

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
        if threads and aggregate:
            raise ValueError("aggregate=True sums threads into processes: it needs threads=False")
        if aggregate:
            return self._bulk(_list_tasks(False)[0], ATTR_TGID, workers)
        tids, owners = _list_tasks(True)
        if threads:
            return self._bulk(tids, ATTR_PID, workers)
        pids = np.unique(owners)
        per_thread = self._bulk(tids, ATTR_PID, workers)
        groups = self._bulk(pids, ATTR_TGID, workers)
        return process_rows(pids, tids, owners, per_thread, groups)

    # -- cgroupstats -------------------------------------------------------------------------
    def cgroup(self, path: Union[str, os.PathLike]) -> CgroupStats:
        """Task counts by state in a cgroup **v1** directory (CGROUPSTATS_CMD_GET).  Needs no
        privilege.  A cgroup v2 or non-cgroup directory raises ``CgroupV1RequiredError``."""
        path = os.fspath(path)
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            seq = netlink.next_seq()
            request = _native.build_cgroupstats(self.family.id, seq, fd)
            with self._lock:
                self._flush_if_dirty()
                self._dirty = True
                try:
                    data = netlink.transact(self._socket(), request, seq,
                                            timeout=self.timeout, what=f"cgroupstats of {path}")
                except KernelError as e:
                    if e.errno == errno.EINVAL:
                        raise CgroupV1RequiredError(errno.EINVAL, _cgroup_einval_message(path, fd)) from None
                    raise
                self._dirty = False
        finally:
            os.close(fd)
        try:
            counts, err = _native.parse_cgroupstats(data, self.family.id)
        except DecodeError as e:
            raise KernelError(errno.EPROTO, f"cgroupstats of {path}: {e}") from None
        if counts is None:
            raise kernel_error(err, f"cgroupstats of {path}")
        return CgroupStats(*counts)

    # -- the bulk machinery ------------------------------------------------------------------
    def _bulk(self, ids: np.ndarray, attr: int, workers: int) -> Lookup:
        """A bulk lookup, split over ``workers`` sockets and threads when asked (and worth it)."""
        workers = operator.index(workers)
        if workers < 1:
            raise ValueError("workers must be at least 1")
        workers = min(workers, max(1, len(ids) // _MIN_IDS_PER_WORKER))
        if workers == 1:
            return self._lookup(ids, attr, stacklevel=4)
        helpers = self._workers(workers - 1)
        bounds = np.linspace(0, len(ids), workers + 1).astype(np.intp)
        chunks = [ids[bounds[i]:bounds[i + 1]] for i in range(workers)]
        assert self._pool is not None
        futures = [self._pool.submit(helper._lookup, chunk, attr)
                   for helper, chunk in zip(helpers, chunks[1:])]
        parts = [self._lookup(chunks[0], attr, stacklevel=4)] + [f.result() for f in futures]
        return Lookup(np.concatenate([p.records for p in parts]), ids,
                      np.concatenate([p.found for p in parts]), sum(p.resent for p in parts))

    def _workers(self, n: int) -> list:
        """``n`` helper Connections over sockets of their own (kept for the next call)."""
        with self._lock:
            self._socket()
            while len(self._helpers) < n:
                helper = Connection.over_socket(self._open_socket(), self.family, timeout=self.timeout,
                                                reply_truesize=self._reply_truesize,
                                                warn_delayacct=False)
                helper.max_in_flight = self.max_in_flight
                self._helpers.append(helper)
            if self._pool is None or self._pool_size < n:
                from concurrent.futures import ThreadPoolExecutor
                if self._pool is not None:
                    self._pool.shutdown(wait=False)
                self._pool = ThreadPoolExecutor(n, thread_name_prefix="taskstats-query")
                self._pool_size = n
            return self._helpers[:n]

    def _lookup(self, ids: np.ndarray, attr: int, stacklevel: int = 3) -> Lookup:
        with self._lock:
            sock = self._socket()
            self._flush_if_dirty()
            if len(ids) and self._reply_truesize is None:
                self._calibrate(sock)
            query = Query(self._drain, attr, ids, netlink.next_seq(max(len(ids), 1)), self.in_flight,
                          max(1, int(self.timeout * 1000)))
            self._dirty = True
            self._run(query, f"TASKSTATS query for {'pid' if attr == ATTR_PID else 'tgid'}")
            self._dirty = False
            if query.rows and self._warn_delayacct:
                self._warn_delayacct_once(stacklevel)
            records = query.records()
            if query.unordered:
                records = records[np.argsort(query.row_index[:query.rows], kind="stable")]
            elif len(query.out) - query.rows > max(query.rows, _SPARE_ROWS):
                records = records.copy()  # do not pin a mostly empty array
            return Lookup(records, ids, query.state == QUERY_FOUND, query.resent)

    def _run(self, query: Query, what: str) -> None:
        """Run ``query`` to its end in C, turning each way it can stop into an exception."""
        src = self._src
        truncated, bad = src.truncated, src.bad
        while True:
            reason = query.run()
            if reason == QUERY_DONE:
                return
            if reason == QUERY_INTERRUPTED:
                continue  # back in Python: signal handlers run now (KeyboardInterrupt propagates)
            if reason == QUERY_KERNEL:
                code = query.kernel_error
                raise kernel_error(code, f"{what} {int(query.ids[query.kernel_error_index])}",
                                   _permission_hint() if code == errno.EPERM else None)
            if reason == QUERY_MALFORMED:
                raise DecodeError(f"{src.truncated - truncated} truncated and {src.bad - bad} "
                                  "malformed replies from the kernel")
            if reason == QUERY_SOCKET:
                raise OSError(query.error, f"receiving TASKSTATS replies: {os.strerror(query.error)}")
            if reason == QUERY_TIMEOUT:
                pending = int((query.state == QUERY_PENDING).sum())
                raise ReplyTimeoutError(
                    f"no reply from the kernel for {self.timeout:g} s: {pending} of "
                    f"{len(query.ids)} requests unanswered (Connection(timeout=...) sets the limit)")
            raise TaskstatsError(
                "the kernel dropped every reply of a round of requests several times in a row "
                f"(receive buffer {self.rcvbuf} bytes): is something else filling this socket?")

    def _calibrate(self, sock: socket.socket) -> None:
        """Measure the receive-buffer cost of one reply (skb truesize, SO_MEMINFO rmem_alloc)
        with a query about ourselves, so rounds fit the buffer on any kernel and architecture."""
        seq = netlink.next_seq()
        request = _native.build_get(self.family.id, seq, ATTR_PID, np.array([os.getpid()], np.uint32))
        self._dirty = True
        sock.send(request)
        rmem = _native.rmem_alloc(sock.fileno())
        out = np.empty(2, layout.DTYPE)
        try:
            found = self._collect_one(seq, out, "calibration query", request)
        except KernelError:
            return  # refused (EPERM...): the caller's own request will say so about its own id
        self._dirty = False
        if found:  # an error reply is smaller than a record: only a record calibrates
            self._reply_truesize = max(rmem, 256)

    def _flush_if_dirty(self) -> None:
        """Discard whatever an abandoned request (exception, KeyboardInterrupt) left queued."""
        if not self._dirty:
            return
        scratch = np.empty(NSLOTS * 2 + 2, layout.DTYPE)
        res = self._drain.last
        while True:
            self._drain.run(scratch, timeout_ms=0, min_records=1 << 62)
            if res.datagrams == 0 or res.error:
                break
        self._dirty = False


def _list_tasks(threads: bool) -> Tuple[np.ndarray, np.ndarray]:
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


# ---- process rows ------------------------------------------------------------------------------
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


def _take_rows(records: np.ndarray, index: np.ndarray) -> np.ndarray:
    """``records[index]`` copied as bytes (numpy copies a structured dtype field by field)."""
    raw = np.ascontiguousarray(records).view(np.uint8).reshape(len(records), records.dtype.itemsize)
    return np.ascontiguousarray(raw[index]).view(records.dtype).reshape(-1)


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
    out = _take_rows(per_thread.records, leaders)
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


def _cgroup_einval_message(path: str, fd: int) -> str:
    magic = _fs_magic(fd)
    mount_hint = ("mount one, e.g. `mkdir -p /sys/fs/cgroup/cpu && mount -t cgroup -o cpu cgroup "
                  "/sys/fs/cgroup/cpu`, and ask about a directory inside it")
    if magic == _CGROUP2_SUPER_MAGIC:
        return (f"{path} is a cgroup v2 directory: the kernel's cgroupstats serves only cgroup v1 "
                f"hierarchies; {mount_hint} (for v2, read cgroup.procs and cpu.stat instead)")
    if magic == _CGROUP_SUPER_MAGIC:
        return f"the kernel refused cgroupstats for the cgroup v1 directory {path} (EINVAL)"
    shown = f" (file system magic {magic:#x})" if magic is not None else ""
    return (f"{path} is not a cgroup directory{shown}: cgroupstats needs a directory inside a "
            f"mounted cgroup v1 hierarchy (`grep -w cgroup /proc/mounts` lists them); "
            f"{mount_hint}")
