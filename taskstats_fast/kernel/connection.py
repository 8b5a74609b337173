"""Connection: TASKSTATS queries over one generic netlink socket.

Owns the query side of the library: single pid/tgid lookups, bulk lookups (``pids``/``tgids``),
process and thread snapshots, cgroupstats, and the errors that explain what went wrong.

How a bulk lookup works (every step is batched; no Python object is made per record):

1. ``_native.build_get`` writes all N GET requests into one buffer with consecutive sequence
   numbers, so a reply's ``nlmsg_seq`` minus the first seq is the index of its request.
2. The requests go out in *rounds* of at most ``in_flight`` requests, one ``send`` each.  The
   kernel answers every request of a round inside that ``send`` and queues the replies on our
   socket, so a round must fit in the receive buffer: ``in_flight`` comes from the granted
   SO_RCVBUF and the buffer cost (skb truesize) of one reply, measured once per connection.
3. ``_native.Drain`` (poll + recvmmsg + C decode) writes the replies straight into the result
   array.  Replies come back in request order; an NLMSG_ERROR carries the seq of its request:
   ESRCH marks that id missing, anything else raises.
4. Loss is never silent: if the kernel dropped replies anyway (SO_MEMINFO drops, ENOBUFS,
   a note that did not fit), the requests still unanswered are sent again; a reply that never
   comes raises ``ReplyTimeoutError`` after ``timeout`` seconds without progress.
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
from typing import Callable, Iterable, NamedTuple, Optional, Tuple, Union

import numpy as np

from .. import _native, layout
from . import namespaces, netlink
from .._native import ATTR_PID, ATTR_TGID, NOTE_BAD, NOTE_ERROR, Drain, strerror
from .delayacct import DELAYACCT_OFF_MESSAGE, DelayAccountingOffWarning, delayacct_enabled
from ..errors import (CgroupV1RequiredError, DecodeError, InvalidTaskIdError, KernelError, NoSuchTaskError,
                      ReplyTimeoutError,
                     TaskstatsError, kernel_error)

__all__ = ["Connection", "Lookup", "CgroupStats", "CgroupV1RequiredError", "DEFAULT_TIMEOUT",
           "requests_in_flight", "request_index"]

DEFAULT_TIMEOUT = netlink.DEFAULT_TIMEOUT

REQUEST_SIZE = _native.GET_REQUEST_SIZE

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
# Rounds in a row that the kernel dropped every reply of before we give up.
_MAX_FRUITLESS_RESENDS = 3
# errnos the kernel uses for a reply it could not queue: resend, do not raise.
_RESEND_ERRNOS = (errno.EAGAIN, errno.ENOBUFS, errno.ENOMEM)

_PENDING, _FOUND, _MISSING = 0, 1, 2
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


def request_index(seqs: np.ndarray, first_seq: int, n: int) -> np.ndarray:
    """Index of the request each sequence number answers (``seq - first_seq`` modulo 2**32, so a
    batch may straddle the wrap), or -1 for a seq outside the batch's ``n`` requests."""
    idx = (np.asarray(seqs).astype(np.int64) - int(first_seq)) & _U32
    idx[idx >= n] = -1
    return idx


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


class _Batch:
    """State of one bulk lookup: its requests, what each got, and the result rows so far."""

    __slots__ = ("ids", "attr", "first_seq", "requests", "state", "out", "got",
                 "last_index", "ordered", "resent", "unqueued")

    def __init__(self, ids: np.ndarray, attr: int, family: int):
        n = len(ids)
        self.ids = ids
        self.attr = attr
        self.first_seq = netlink.next_seq(max(n, 1))
        self.requests = np.frombuffer(_native.build_get(family, self.first_seq, attr, ids),
                                      np.uint8).reshape(n, REQUEST_SIZE)
        self.state = np.zeros(n, np.uint8)
        # tsf_drain wants two free rows per datagram it may take: small batches make do with
        # fewer drain calls' worth of spare rows rather than a mostly empty array
        self.out = np.empty(n + (2 if n <= NSLOTS else _SPARE_ROWS), layout.DTYPE)
        self.got = 0            # rows of out filled with this batch's records
        self.last_index = -1    # request index of the last row, to notice order breaks
        self.ordered = True
        self.resent = 0
        self.unqueued = 0       # error replies saying the answer could not be queued (EAGAIN...)

    def absorb(self, nrecords: int, notes: np.ndarray) -> int:
        """Account for ``nrecords`` rows tsf_drain just wrote at ``out[got:]`` and its notes.
        Returns how many of this batch's requests they answer; raises on a kernel error."""
        answered = 0
        if nrecords:
            answered += self._absorb_records(nrecords)
        if len(notes):
            answered += self._absorb_notes(notes)
        return answered

    def _absorb_records(self, nrecords: int) -> int:
        new = self.out[self.got:self.got + nrecords]
        idx = request_index(new["seq"], self.first_seq, len(self.ids))
        # Fast path: every row answers a pending request of ours, in increasing order.
        if idx[0] >= 0 and (nrecords == 1 or bool((np.diff(idx) > 0).all())) \
                and bool((self.state[idx] == _PENDING).all()):
            self.state[idx] = _FOUND
            if idx[0] < self.last_index:
                self.ordered = False
            self.last_index = int(idx[-1])
            self.got += nrecords
            return nrecords
        # Slow path: drop rows that are not ours (a reply to an abandoned batch) or duplicates.
        keep = []
        for i, k in enumerate(idx.tolist()):
            if k >= 0 and self.state[k] == _PENDING:
                self.state[k] = _FOUND
                keep.append(i)
        if keep:
            new[:len(keep)] = new[keep]   # fancy indexing copies first: safe in place
        self.ordered = False
        self.got += len(keep)
        return len(keep)

    def _absorb_notes(self, notes: np.ndarray) -> int:
        bad = notes[notes["kind"] == NOTE_BAD]
        if len(bad):
            note = bad[0]
            raise DecodeError(f"malformed reply from the kernel: {strerror(int(note['code']))} "
                              f"(message seq {int(note['seq'])})", int(note["code"]),
                              int(note["offset"]), int(note["seq"]))
        errs = notes[notes["kind"] == NOTE_ERROR]
        if not len(errs):
            return 0
        idx = request_index(errs["seq"], self.first_seq, len(self.ids))
        mine = idx >= 0
        idx, codes = idx[mine], errs["code"][mine]
        pending = self.state[idx] == _PENDING
        idx, codes = idx[pending], codes[pending]
        esrch = codes == errno.ESRCH
        self.state[idx[esrch]] = _MISSING
        resend = np.isin(codes, _RESEND_ERRNOS)  # stay pending: the round sends them again
        self.unqueued += int(resend.sum())
        other = ~esrch & ~resend
        if other.any():
            k = int(idx[other][0])
            code = int(codes[other][0])
            what = f"TASKSTATS query for {'pid' if self.attr == ATTR_PID else 'tgid'} {int(self.ids[k])}"
            raise kernel_error(code, what, _permission_hint() if code == errno.EPERM else None)
        return int(esrch.sum() + resend.sum())

    def result(self) -> Lookup:
        records = self.out[:self.got]
        if not self.ordered:
            idx = request_index(records["seq"], self.first_seq, len(self.ids))
            records = records[np.argsort(idx, kind="stable")]
        elif len(self.out) - self.got > max(self.got, _SPARE_ROWS):
            records = records.copy()  # do not pin a mostly empty array
        found = self.state == _FOUND
        if int(found.sum()) != len(records):  # an invariant of absorb(); guard the promise
            raise RuntimeError("internal error: result rows do not match the answered requests")
        return Lookup(records, self.ids, found, self.resent)


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

    # -- lifecycle ---------------------------------------------------------------------------
    def close(self) -> None:
        """Close the socket (idempotent)."""
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()

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
    def pids(self, pids: Iterable[int]) -> Lookup:
        """Statistics of many tasks in one batch: a ``Lookup`` whose ``records`` hold one row per
        task that exists, in the order asked; ``missing`` lists the others."""
        return self._lookup(_as_ids(pids, "pids"), ATTR_PID)

    def tgids(self, tgids: Iterable[int]) -> Lookup:
        """``pids`` for thread groups: one summed TGID record per process that exists."""
        return self._lookup(_as_ids(tgids, "tgids"), ATTR_TGID)

    def snapshot(self, threads: bool = False, *, aggregate: bool = False) -> Lookup:
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

        Tasks that exit between listing /proc and the query are absent from ``records`` and
        listed in ``missing``; a process is missing when its leader or its TGID record is."""
        if threads and aggregate:
            raise ValueError("aggregate=True sums threads into processes: it needs threads=False")
        if aggregate:
            return self._lookup(_list_tasks(False)[0], ATTR_TGID)
        tids, owners = _list_tasks(True)
        if threads:
            return self._lookup(tids, ATTR_PID)
        pids = np.unique(owners)
        per_thread = self._lookup(tids, ATTR_PID)
        groups = self._lookup(pids, ATTR_TGID)
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
    def _lookup(self, ids: np.ndarray, attr: int, stacklevel: int = 3) -> Lookup:
        with self._lock:
            sock = self._socket()
            self._flush_if_dirty()
            if len(ids) and self._reply_truesize is None:
                self._calibrate(sock)
            batch = _Batch(ids, attr, self.family.id)
            self._dirty = True
            step = self.in_flight
            self._drain.ensure_notes(step + NSLOTS)  # every request of a round may answer with a note
            for lo in range(0, len(ids), step):
                self._complete_round(batch, np.arange(lo, min(lo + step, len(ids))))
            self._dirty = False
            if batch.got and self._warn_delayacct:
                self._warn_delayacct_once(stacklevel)
            return batch.result()

    def _complete_round(self, batch: _Batch, indices: np.ndarray) -> None:
        """Send the requests at ``indices`` and collect their answers; resend what the kernel
        dropped until every one is answered."""
        fruitless = 0
        while True:
            lost = self._send_and_collect(batch, indices)
            if not lost:
                return
            before = len(indices)
            indices = indices[batch.state[indices] == _PENDING]
            if not len(indices):
                return
            fruitless = fruitless + 1 if len(indices) == before else 0
            if fruitless > _MAX_FRUITLESS_RESENDS:
                raise TaskstatsError(
                    f"the kernel dropped every reply of {len(indices)} requests "
                    f"{fruitless} times in a row (receive buffer {self.rcvbuf} bytes): "
                    "is something else filling this socket?")
            batch.resent += len(indices)

    def _send_and_collect(self, batch: _Batch, indices: np.ndarray) -> bool:
        """One round: send, then drain until every request is answered.  Returns True when the
        kernel dropped replies (the caller resends what is still pending)."""
        sock = self._socket()
        lo, hi = int(indices[0]), int(indices[-1]) + 1
        if hi - lo == len(indices):
            payload = batch.requests[lo:hi].data.cast("B")
        else:
            payload = batch.requests[indices].tobytes()
        drops_before = self._src.drops
        sock.send(payload)
        # The kernel answered inside send(): a drop has happened by now or never will.
        self._src.refresh_drops()
        return self._collect(batch, len(indices), lost=self._src.drops != drops_before)

    def _collect(self, batch: _Batch, expected: int, *, lost: bool = False,
                 timeout: Optional[float] = None) -> bool:
        """Drain replies until ``expected`` more requests of ``batch`` are answered.  With
        ``lost`` (or once a loss shows up) it only takes what is queued and returns True."""
        src, drain, res = self._src, self._drain, self._drain.last
        timeout = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        answered = 0
        overruns, truncated, bad = src.overruns, src.truncated, src.bad
        unqueued = batch.unqueued
        while answered < expected:
            timeout_ms = 0 if lost else max(0, int((deadline - time.monotonic()) * 1000 + 0.999))
            drain.run(batch.out, batch.got, timeout_ms=timeout_ms, min_records=expected - answered)
            if res.notes > drain.notes_cap:
                lost = True   # notes were counted but not stored: their requests stay pending
            step = batch.absorb(res.records, drain.notes())
            answered += step
            if step:
                deadline = time.monotonic() + timeout
            if src.truncated != truncated or src.bad != bad:
                raise DecodeError(f"{src.truncated - truncated} truncated and {src.bad - bad} "
                                  "malformed replies from the kernel")
            if src.overruns != overruns or batch.unqueued != unqueued:
                lost = True
            if res.error:
                raise OSError(res.error, f"receiving TASKSTATS replies: {os.strerror(res.error)}")
            if res.interrupted:
                continue  # back in Python: signal handlers run now (KeyboardInterrupt propagates)
            if answered < expected and res.timed_out:
                if lost:
                    return True
                raise ReplyTimeoutError(
                    f"no reply from the kernel for {timeout:g} s: {expected - answered} of "
                    f"{expected} requests unanswered (Connection(timeout=...) sets the limit)")
        return lost

    def _calibrate(self, sock: socket.socket) -> None:
        """Measure the receive-buffer cost of one reply (skb truesize, SO_MEMINFO rmem_alloc)
        with a query about ourselves, so rounds fit the buffer on any kernel and architecture."""
        probe = _Batch(np.array([os.getpid()], np.uint32), ATTR_PID, self.family.id)
        self._dirty = True
        sock.send(probe.requests.data.cast("B"))
        rmem = _native.rmem_alloc(sock.fileno())
        try:
            self._collect(probe, 1)
        except KernelError:
            return  # refused (EPERM...): the caller's own request will say so about its own id
        self._dirty = False
        if probe.got:  # an error reply is smaller than a record: only a record calibrates
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
