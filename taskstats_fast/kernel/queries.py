"""TASKSTATS queries over one generic netlink socket: the request/reply exchange behind
``Connection``.

Owns ``QueryChannel`` (one socket: single lookups, bulk lookups in rounds, the receive-buffer
calibration, and the clean-up after an abandoned request), ``ParallelLookups`` (a bulk lookup
split over extra sockets and threads), the ``Lookup`` result, id validation, and the hints that
explain a refusal.

How a bulk lookup works: one C call (``_native.Query``, csrc/tsf_query.c) with the GIL released,
no Python object per record:

1. Request i carries seq first + i, so a reply's ``nlmsg_seq`` minus the first seq is the index
   of its request.
2. The requests go out in *rounds* of at most ``in_flight`` requests, one ``send`` each.  The
   kernel answers every request of a round inside that ``send`` and queues the replies on our
   socket, so a round must fit in the receive buffer: ``in_flight`` comes from the granted
   SO_RCVBUF and the buffer cost (skb truesize) of one reply, measured once per channel.
3. The drain (poll + recvmmsg + decode) writes the replies straight into the result array; an
   NLMSG_ERROR carries the seq of its request: ESRCH marks that id missing, anything else raises.
4. Loss is never silent: if the kernel dropped replies anyway (SO_MEMINFO drops, ENOBUFS,
   a note that did not fit), the requests still unanswered are sent again; a reply that never
   comes raises ``ReplyTimeoutError`` after ``timeout`` seconds without progress.
5. ``ParallelLookups`` splits the ids over N sockets queried from N threads: the kernel does its
   per-task work inside each sender's ``send``, so it spreads over the cores.  Each thread's C
   call claims the ids a round at a time as it goes (``_native.QueryClaims``), so they finish
   together (the caller's from the front, the helpers' from the back), and copies each record to
   its id's row of one shared array (``placed``), so no two write a row in common and nothing is
   copied once they are done.
"""

from __future__ import annotations

import concurrent.futures
import errno
import operator
import os
import socket
import threading
import time
from typing import Any, Callable, List, NamedTuple, Optional

import numpy as np

from .. import _native, layout
from . import namespaces, netlink
from .._native import (ATTR_PID, NOTE_BAD, NOTE_ERROR, QUERY_DONE, QUERY_FOUND, QUERY_INTERRUPTED,
                       QUERY_KERNEL, QUERY_MALFORMED, QUERY_PENDING, QUERY_SOCKET, QUERY_TIMEOUT,
                       ROWS_PER_DATAGRAM, Drain, Query, QueryClaims, placed_scratch_rows, strerror)
from ..errors import (DecodeError, InvalidTaskIdError, KernelError, NoSuchTaskError, ReplyTimeoutError,
                      TaskstatsError, kernel_error)

__all__ = ["QueryChannel", "ParallelLookups", "Lookup", "requests_in_flight", "as_ids",
           "invalid_id", "permission_hint", "missing_hint", "MAX_IN_FLIGHT", "DEFAULT_REPLY_TRUESIZE", "DEFAULT_RCVBUF",
           "REQUEST_SIZE", "U32"]

REQUEST_SIZE = _native.GET_REQUEST_SIZE

#: Fewest ids a parallel worker gets: below this, a thread hand-off costs more than it saves.
_MIN_IDS_PER_WORKER = 256
#: Most requests one round sends.  Larger rounds are slower, not faster: the kernel's
#: per-request work dominates either way, and a round of a thousand leaves a megabyte of reply
#: skbs to go cold before we read them (bench_queries' floor runs 64, 256 and 1024 side by side).
MAX_IN_FLIGHT = 256
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

#: The largest task id (ids are u32 on the wire).
U32 = 0xFFFFFFFF


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


def invalid_id(what: str, value: object) -> InvalidTaskIdError:
    return InvalidTaskIdError(f"{what} must be positive integers 1 .. {U32} (a task id), not {value}")


def as_ids(ids, what: str) -> np.ndarray:
    """Validate pids/tgids: a 1-D array of uint32, values 1..2**32-1."""
    if isinstance(ids, np.ndarray) and ids.dtype == np.uint32 and ids.ndim == 1:
        # ids the C core listed (each look's cgroup.threads) come this way: no id can be above
        # the top, so one pass for a zero is all the check there is to do
        if ids.size and not ids.all():
            raise invalid_id(what, 0)
        return np.ascontiguousarray(ids)
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
    if low < 1 or high > U32:
        raise invalid_id(what, low if low < 1 else high)
    return np.ascontiguousarray(arr, dtype=np.uint32)


def permission_hint() -> str:
    if namespaces.in_initial("user") is False:
        return ("This process runs in a non-initial user namespace (a rootless container or "
                "`unshare -U`): the kernel answers TASKSTATS queries only to CAP_NET_ADMIN in "
                "the initial user namespace, which nothing inside can hold. Run the query from "
                "the host (or a privileged container sharing the host's user namespace).")
    return ("TASKSTATS queries need CAP_NET_ADMIN: run as root, or grant the capability "
            "(e.g. systemd AmbientCapabilities=CAP_NET_ADMIN, or `setpriv --inh-caps "
            "+net_admin --ambient-caps +net_admin` from root). cgroupstats needs no privilege.")


def missing_hint() -> str:
    if namespaces.in_initial("pid") is False:
        return ("It may have exited. Note: this process is in a non-initial pid namespace, so "
                "pids are looked up in that namespace, not the host's.")
    return "It may already have exited."


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


# ---- one socket's exchange -------------------------------------------------------------------
class QueryChannel:
    """One generic netlink socket's TASKSTATS exchange, one request (or bulk query) at a time
    under a lock, so threads may share it.  It owns the socket (``close()`` closes it).

    ``reply_truesize``: the buffer cost of one reply, or None to measure it before the first
    bulk lookup (that needs the kernel's SO_MEMINFO accounting)."""

    def __init__(self, sock: socket.socket, family: netlink.Family, *, timeout: float, rcvbuf: int,
                 reply_truesize: Optional[int] = None):
        self._sock: Optional[socket.socket] = sock
        self.family = family
        self.timeout = float(timeout)
        self.rcvbuf = int(rcvbuf)
        self.sndbuf = sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
        #: upper bound of ``in_flight`` (the receive buffer may lower it further)
        self.max_in_flight = MAX_IN_FLIGHT
        self.reply_truesize = reply_truesize
        self.lock = threading.RLock()   # serialises requests: threads may share the channel
        self._dirty = False          # replies of an abandoned request may still be queued
        self._drain = Drain(family.id, [sock.fileno()], notes=MAX_IN_FLIGHT + NSLOTS)
        self._src = self._drain.source(0)
        self._scratch: Optional[np.ndarray] = None   # a claimed share's receives (lookup_claimed)

    # -- lifecycle and facts -----------------------------------------------------------------
    def close(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()

    @property
    def closed(self) -> bool:
        return self._sock is None

    def live_socket(self) -> socket.socket:
        if self._sock is None:
            raise ValueError("I/O on a closed taskstats_fast.Connection")
        return self._sock

    @property
    def in_flight(self) -> int:
        """Requests one round of a bulk lookup sends (from the granted receive buffer)."""
        return requests_in_flight(self.rcvbuf, self.reply_truesize or DEFAULT_REPLY_TRUESIZE,
                                  self.sndbuf, self.max_in_flight)

    @property
    def counters(self) -> dict:
        """The socket's receive counters since the channel opened."""
        s = self._src
        return {name: getattr(s, name) for name in
                ("datagrams", "bytes", "records", "drops", "overruns", "truncated", "bad",
                 "kernel_errors")}

    # -- one request, one reply ----------------------------------------------------------------
    def one(self, ident: int, attr: int) -> np.void:
        """The record of one task (``attr``: ATTR_PID or ATTR_TGID); ``NoSuchTaskError`` if none."""
        ident = operator.index(ident)
        kind = "pid" if attr == ATTR_PID else "tgid"
        if not 0 < ident <= U32:
            raise invalid_id(f"{kind}s", ident)
        # One request, one reply: a lean path (no batch arrays) at ~1/3 of the bulk path's cost.
        out = np.empty(2, layout.DTYPE)  # tsf_drain takes a datagram only with 2 rows free
        with self.lock:
            sock = self.live_socket()
            self._flush_if_dirty()
            seq = netlink.next_seq()
            request = _native.build_get(self.family.id, seq, attr, np.array([ident], np.uint32))
            self._dirty = True
            sock.send(request)
            found = self._collect_one(seq, out, f"TASKSTATS query for {kind} {ident}", request)
            self._dirty = False
        if not found:
            raise NoSuchTaskError(errno.ESRCH, f"no task with {kind} {ident}. {missing_hint()}")
        return out[0]

    def transact(self, request: bytes, seq: int, what: str) -> bytes:
        """Send one request that is not a task lookup (cgroupstats) and return its reply's bytes;
        a kernel refusal raises ``KernelError``."""
        with self.lock:
            self._flush_if_dirty()
            self._dirty = True
            data = netlink.transact(self.live_socket(), request, seq, timeout=self.timeout, what=what)
            self._dirty = False
        return data

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
                raise kernel_error(code, what, permission_hint() if code == errno.EPERM else None)
            if res.error:
                raise OSError(res.error, f"receiving TASKSTATS replies: {os.strerror(res.error)}")
            if resend:  # the kernel could not queue our reply: ask again
                overruns = src.overruns
                self.live_socket().send(request)
                deadline = time.monotonic() + self.timeout
                continue
            if res.interrupted:
                continue  # back in Python: signal handlers run now (KeyboardInterrupt propagates)
            if res.timed_out:
                raise ReplyTimeoutError(f"no reply from the kernel for {self.timeout:g} s to the "
                                        f"{what} (Connection(timeout=...) sets the limit)")

    # -- bulk lookups ------------------------------------------------------------------------
    def lookup(self, ids: np.ndarray, attr: int, out: Optional[np.ndarray] = None) -> Lookup:
        """The records of every task of ``ids`` (validated uint32) that exists, in order.

        With ``out`` (a DTYPE array of at least ``len(ids) + ROWS_PER_DATAGRAM`` rows, see
        ``_native.Query``) the records are a view of its first rows, never a copy: the caller
        owns the array and decides whether it is worth keeping."""
        with self.lock:
            query = self._query(ids, attr, out)
            records = query.records()
            if query.unordered:
                records = _in_request_order(query, in_place=out is not None)
            elif out is None:
                records = _unpinned(records, query.out)
            return Lookup(records, ids, query.state == QUERY_FOUND, query.resent)

    def lookup_claimed(self, claims: QueryClaims, attr: int, placed: np.ndarray, *,
                       from_back: bool) -> Query:
        """This channel's share of a bulk lookup that several channels run at once, each from
        its own thread: the rounds it claims from ``claims`` as it goes, from the back with
        ``from_back``, each record copied to its id's row of ``placed`` (so the shares never
        write a row in common).  Once every share is done, ``claims.state`` says which ids were
        found and ``_native.compact_placed`` closes up the rest."""
        with self.lock:
            rows = placed_scratch_rows(self.in_flight)
            scratch = self._scratch
            if scratch is None or len(scratch) < rows:
                scratch = self._scratch = layout.empty_records(rows)
            return self._query(claims.ids, attr, scratch, claims, from_back, placed)

    def _query(self, ids: np.ndarray, attr: int, out: Optional[np.ndarray],
               claims: Optional[QueryClaims] = None, from_back: bool = False,
               placed: Optional[np.ndarray] = None) -> Query:
        """One bulk query run to its end on this socket (the caller holds the lock), after
        whatever an abandoned one left is flushed and the reply size is measured."""
        sock = self.live_socket()
        self._flush_if_dirty()
        if len(ids) and self.reply_truesize is None:
            self._calibrate(sock)
        first_seq = claims.first_seq if claims is not None else netlink.next_seq(max(len(ids), 1))
        query = Query(self._drain, attr, ids, first_seq, self.in_flight, max(1, int(self.timeout * 1000)),
                      out=out, claims=claims, from_back=from_back, placed=placed)
        self._dirty = True
        self._run(query, _what(attr))
        self._dirty = False
        return query

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
                                   permission_hint() if code == errno.EPERM else None)
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
            self.reply_truesize = max(rmem, 256)

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


# ---- a bulk lookup over several sockets ----------------------------------------------------------
class ParallelLookups:
    """Bulk lookups of ``main`` split over extra sockets (``open_socket`` makes them), each
    queried from its own thread.  The kernel answers a GET inside the sender's ``send`` call and
    the receive loop runs in C, both without the GIL, so the kernel's per-task work spreads over
    the cores.  The threads' C calls claim the ids a round at a time (``QueryClaims``): the
    kernel serialises GETs and favours one sender or the other by the millisecond, so any fixed
    split leaves the first to finish waiting for the other.  The extra channels and threads are
    made on first use and kept until ``close()``."""

    def __init__(self, main: QueryChannel, open_socket: Callable[[], socket.socket]):
        self.main = main
        self.open_socket = open_socket
        self.helpers: List[QueryChannel] = []   # one per extra worker
        self._pool: Any = None                  # their threads (concurrent.futures)
        self._pool_size = 0

    def lookup(self, ids: np.ndarray, attr: int, workers: int) -> Lookup:
        """``main.lookup``, split over ``workers`` sockets and threads when asked (and worth it)."""
        workers = operator.index(workers)
        if workers < 1:
            raise ValueError("workers must be at least 1")
        workers = min(workers, max(1, len(ids) // _MIN_IDS_PER_WORKER))
        if workers == 1:
            return self.main.lookup(ids, attr)
        helpers = self._workers(workers - 1)
        claims = QueryClaims(ids, netlink.next_seq(len(ids)), self.main.in_flight)
        # every share copies its records to their ids' rows of one array as they come, so when
        # the last is done the result is that array, with the rows of ids not found closed up
        out = layout.empty_records(len(ids) + ROWS_PER_DATAGRAM)
        futures = [self._pool.submit(_helper_share, helper, claims, attr, out) for helper in helpers]
        try:
            part = self.main.lookup_claimed(claims, attr, out, from_back=False)
        except BaseException:
            claims.stop()
            concurrent.futures.wait(futures)   # their sockets stay usable: let them finish
            raise
        shares = [future.result() for future in futures]
        records = _unpinned(_native.compact_placed(out, claims.state), out)
        return Lookup(records, claims.ids, claims.state == QUERY_FOUND,
                      part.resent + sum(share.resent for share in shares))

    def _workers(self, n: int) -> List[QueryChannel]:
        """``n`` helper channels over sockets of their own (kept for the next call)."""
        main = self.main
        with main.lock:
            main.live_socket()
            while len(self.helpers) < n:
                sock = self.open_socket()
                helper = QueryChannel(sock, main.family, timeout=main.timeout,
                                      rcvbuf=sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF),
                                      reply_truesize=main.reply_truesize)
                helper.max_in_flight = main.max_in_flight
                self.helpers.append(helper)
            if self._pool is None or self._pool_size < n:
                if self._pool is not None:
                    self._pool.shutdown(wait=False)
                self._pool = concurrent.futures.ThreadPoolExecutor(n, thread_name_prefix="taskstats-query")
                self._pool_size = n
            return self.helpers[:n]

    def close(self) -> None:
        """Close the extra sockets and let their threads go (idempotent)."""
        helpers, self.helpers = self.helpers, []
        for helper in helpers:
            helper.close()
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False)


def _helper_share(helper: QueryChannel, claims: QueryClaims, attr: int, placed: np.ndarray) -> Query:
    """A helper thread's share of a parallel lookup: the rounds it claimed from the back.  A
    failure stops the claims, so the others do not go on for nothing."""
    try:
        return helper.lookup_claimed(claims, attr, placed, from_back=True)
    except BaseException:
        claims.stop()
        raise


def _unpinned(records: np.ndarray, array: np.ndarray) -> np.ndarray:
    """``records`` (the first rows of ``array``), copied when they fill so little of it that a
    view would keep a mostly empty array alive."""
    if len(array) - len(records) > max(len(records), _SPARE_ROWS):
        return layout.copy_records(records)
    return records


def _what(attr: int) -> str:
    return f"TASKSTATS query for {'pid' if attr == ATTR_PID else 'tgid'}"


def _in_request_order(query: Query, in_place: bool) -> np.ndarray:
    """The records of a finished ``query`` that arrived out of order, in request order: sorted
    where they lie with ``in_place`` (so they stay a view of the caller's array), else a copy."""
    records = query.records()
    order = np.argsort(query.row_index[:query.rows], kind="stable")
    if not in_place:
        return layout.take_records(records, order)
    # as bytes: a structured assignment goes field by field
    records.view(np.uint8)[:] = layout.take_records(records, order).view(np.uint8)
    return records
