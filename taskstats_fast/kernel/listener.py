"""ExitListener: the kernel's stream of exit records, per CPU, in numpy batches.

This module owns the exit stream: registering listener sockets for CPUs (and deregistering them
on every way out), draining them with the C core, loss accounting, and the thread and asyncio
interfaces.

    import taskstats_fast as tsf

    with tsf.ExitListener() as listener:          # every possible CPU, one socket each
        for batch in listener:                    # numpy arrays of tsf.DTYPE
            print(batch["ac_pid"], batch["ac_comm"], batch["ac_exitcode"])
            print(listener.stats.lost)            # exact: the kernel's own drop counters

How it works
------------
The kernel sends an exit message to every listener registered for the CPU the task exits on,
without ever blocking: when a listener's receive buffer is full it drops the message and
counts it (``sk_drops``).  By default each CPU gets its own socket, so each socket carries one
CPU's sequence numbers.  ``read`` makes one C call (``tsf_drain``) that waits on all sockets,
receives in batches with ``recvmmsg`` and decodes straight into a preallocated record array, with
the GIL released; it returns when at least one record is in and, after a short linger that lets a
burst queue up, whatever else has arrived.  Memory is fixed at construction.

Loss accounting
---------------
Nothing is lost silently: a message is delivered, or counted in ``stats.lost``.

* ``dropped`` (authoritative): the kernel's per-socket drop counter (SO_MEMINFO), exact even when
  one socket serves many CPUs.
* ``truncated``: datagrams larger than a receive slot (cannot happen with today's 1.4 KB
  messages and 8 KiB slots; counted in case a future kernel grows them).
* ``seq_gaps`` (cross-check, one socket per CPU only): holes in each CPU's sequence numbers.
  A task that migrates between choosing a CPU's listeners and taking the sequence number sends
  its message to CPU A's socket with CPU B's number: A sees a *foreign* number (counted in
  ``seq_foreign``, not a loss) and B sees a hole that is not a loss either.  Hence, listening on
  every CPU, once each stream has received a message after its last drop (``seq_pending`` is 0):
  ``seq_gaps == dropped + seq_foreign``; ``seq_unexplained`` reports the difference (negative
  while a drop has not yet been followed by a message).  Listening on a subset of CPUs, a task
  that migrates in from an unlistened CPU leaves a hole that is no loss of ours.  Migration
  inside that window is rare: none showed in 240,000 unpinned fork/exits on this machine.
* ``overruns``: ENOBUFS errors, one per congestion episode (not a count of messages); the stream
  always continues after one.

``lost`` counts exit *messages*: one per exiting thread, the TGID record of a group's last thread
travels in the same message as its PID record.

Records
-------
Each record's ``seq`` is the CPU's sequence number and ``shard`` the socket that delivered it:
the CPU number with one socket per CPU (the default), else the shard index; ``listener.shards``
maps shards to CPUs.  ``time_ns`` is when the listener received the record, not the exit time
(that is ``ac_btime64`` + ``ac_etime``).

Lifetime
--------
``close()`` (also ``with``, iteration end by ``close`` from another thread, garbage collection
and ``atexit``) deregisters every socket before closing it; the kernel would otherwise keep a
closed socket's port on its list until the next message to it fails.  Records still queued then
are counted in ``stats.discarded``; ``stop()`` closes the same way and returns them instead.  A
child process after ``fork()`` leaves the parent's stream alone (the pid is recorded at open):
its ``close()`` and ``atexit`` only drop its copies of the fds, even while a parent thread was
reading, and reading the inherited listener raises.  A process killed by a signal cannot deregister: the kernel then
drops the port lazily.
"""

from __future__ import annotations

import asyncio
import atexit
import errno
import math
import os
import socket
import threading
import time
import warnings
import weakref
from typing import Dict, Iterable, Iterator, List, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np

from .. import _native, layout
from . import cpumask, netlink
from .._native import NOTE_ERROR, Drain
from ..errors import (CpumaskError, NamespaceError, PermissionDeniedError,
                     ReplyTimeoutError, TaskstatsError, kernel_error)

__all__ = ["ExitListener", "ListenerStats", "ShardStats", "ForeignNetnsWarning",
           "EVENT_TRUESIZE", "DEFAULT_EVENTS_PER_CPU", "DEFAULT_BATCH", "DEFAULT_LINGER"]

#: Receive-buffer bytes one exit message costs the kernel (skb truesize): measured 1326 B for a
#: single-threaded task's ~600-byte message on x86_64 (6.18).  Threads of multi-threaded
#: processes cost more (~2.3 KB on average: the kernel sizes their skb for a PID and a TGID record).
EVENT_TRUESIZE = 1300
#: Exit messages each CPU's share of receive buffer holds by default: ~0.23 s of the fastest
#: vfork/exit loop this 2-vCPU machine runs (~35,000 exits/s per CPU), 10.6 MB per CPU, charged
#: only while messages wait to be read.
DEFAULT_EVENTS_PER_CPU = 8192
#: Records one ``read`` can return (the preallocated record array: 4096 x 712 B = 2.9 MB).
DEFAULT_BATCH = 4096
#: Seconds ``read`` keeps gathering after the first record (sleeping, so a burst costs one wake-up
#: instead of one per message).  Adds at most this much latency.
DEFAULT_LINGER = 0.005
#: recvmmsg arena slots (a PID+TGID exit message is 1172..1428 bytes; a slot is 8 KiB).
NSLOTS = _native.DRAIN_SLOTS
#: Seconds to wait for the kernel's ACK to a (de)registration.
REGISTER_TIMEOUT = 5.0

# Fixed inode numbers of the initial namespaces (include/linux/proc_ns.h; stable since 3.8 for
# user and pid, since 6.x for net).
_INIT_NS_INO = {"user": 0xEFFFFFFD, "pid": 0xEFFFFFFC, "net": 0xEFFFFFF9}


#: Longest a read waits inside one C call before Python checks for signals (milliseconds).
SIGNAL_CHECK_MS = 200

class ForeignNetnsWarning(RuntimeWarning):
    """The listener registered, but from a network namespace the kernel sends no exit events to."""


class ShardStats(NamedTuple):
    """Counters of one listener socket."""
    shard: int
    cpus: Tuple[int, ...]
    messages: int         #: exit messages received (delivered or truncated)
    records: int          #: records decoded (a group's last thread brings two)
    dropped: int          #: messages the kernel dropped for this socket (its drop counter)
    truncated: int        #: datagrams cut by MSG_TRUNC (counted as lost)
    overruns: int         #: ENOBUFS reports (congestion episodes)
    malformed: int        #: undecodable parts
    seq_gaps: Optional[int]      #: holes in the CPU's seq (one socket per CPU only, else None)
    seq_foreign: Optional[int]   #: messages with another CPU's seq (task migrated while exiting)
    seq_pending: bool            #: the last message broke the sequence; the next one judges it

    @property
    def lost(self) -> int:
        return self.dropped + self.truncated


class ListenerStats(NamedTuple):
    """Totals over every socket of a listener, with the breakdown in ``shards``."""
    received: int         #: records decoded (delivered, or waiting for the next read)
    delivered: int        #: records handed out by read/iteration
    messages: int         #: exit messages received
    lost: int             #: exit messages lost: dropped + truncated
    dropped: int
    truncated: int
    overruns: int
    malformed: int
    seq_gaps: int         #: summed over the sockets that serve one CPU
    seq_foreign: int
    seq_pending: int      #: sockets whose last message is still held for judgement
    seq_unexplained: int  #: seq_gaps - dropped - seq_foreign on per-CPU sockets (0 when consistent)
    discarded: int        #: records received but never delivered because the listener closed
    lost_by_shard: Dict[int, int]
    lost_by_cpu: Optional[Dict[int, int]]   #: with one socket per CPU, else None
    shards: Tuple[ShardStats, ...]


_open_listeners: "weakref.WeakSet[ExitListener]" = weakref.WeakSet()


@atexit.register
def _close_at_exit() -> None:
    for listener in list(_open_listeners):
        try:
            listener.close()
        except Exception:
            pass


def _after_fork_in_child() -> None:
    """A forked child inherits the listeners' fds and locks, possibly held by threads that do
    not exist in it: give it fresh locks, so its close() (or atexit) only drops its copies."""
    for listener in list(_open_listeners):
        listener._read_lock = threading.RLock()
        listener._state_lock = threading.Lock()
        listener._waiters = set()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _ns_stat(path: str):
    try:
        st = os.stat(path)
        return st.st_dev, st.st_ino
    except OSError:
        return None


def _is_host_kthreadd() -> bool:
    try:
        with open("/proc/2/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        with open("/proc/2/comm") as f:
            return f.read().strip() == "kthreadd" and fields[1] == "0"   # ppid 0: a kernel thread
    except (OSError, IndexError):
        return False


def in_initial_namespace(kind: str) -> Optional[bool]:
    """Whether this process is in the initial ``kind`` ("net", "pid", "user") namespace, or None
    when that cannot be told.  Compares with pid 1 (and kthreadd, which is always in the initial
    namespaces), then with the kernel's fixed inode number of the initial namespace."""
    mine = _ns_stat(f"/proc/self/ns/{kind}")
    if mine is None:
        return None
    if kind == "net":
        # Same netns as pid 1: initial, unless pid 1 is a container's init, and then registering
        # fails anyway (child pid namespace).  Otherwise ask kthreadd, always in the initial
        # namespaces, when /proc shows the host's (pid 1's ns links need ptrace access to it).
        other = _ns_stat("/proc/1/ns/net")
        if other is not None and other == mine:
            return True
        if _is_host_kthreadd():
            other = _ns_stat("/proc/2/ns/net")
            if other is not None:
                return other == mine
    if mine[1] == _INIT_NS_INO[kind]:
        return True
    if kind in ("user", "pid"):   # fixed since 3.8: any other number is a child namespace
        return False
    return None


def _register_error(err: int, mask: str, register: bool) -> TaskstatsError:
    what = f"{'registering' if register else 'deregistering'} an exit listener for CPUs {mask!r}"
    user_ok, pid_ok = in_initial_namespace("user"), in_initial_namespace("pid")
    if err in (errno.EPERM, errno.EINVAL) and (user_ok is False or pid_ok is False):
        which = " and ".join(n for n, ok in (("user", user_ok), ("pid", pid_ok)) if ok is False)
        return NamespaceError(err, f"{what}: {os.strerror(err)} (errno {err}). The kernel serves "
                              f"exit listeners only in the initial user and pid namespaces, and this "
                              f"process runs in a child {which} namespace: run it on the host (for "
                              "containers: share the host's pid namespace and do not remap users, "
                              "e.g. docker --pid=host --userns=host --cap-add=NET_ADMIN)")
    if err == errno.EPERM:
        return PermissionDeniedError(err, f"{what}: {os.strerror(err)} (errno {err}). Registering "
                                     "needs CAP_NET_ADMIN: run as root or grant the capability "
                                     "(e.g. setcap cap_net_admin+ep, or --cap-add=NET_ADMIN)")
    if err in (errno.EINVAL, errno.ERANGE, errno.E2BIG):
        return CpumaskError(f"{what}: the kernel refused the CPU list ({os.strerror(err)}, errno "
                            f"{err}); possible CPUs here: {cpumask.format(cpumask.possible())}")
    return kernel_error(err, what)


class _Shard(NamedTuple):
    id: int
    cpus: Tuple[int, ...]
    mask: str
    sock: socket.socket


class ExitListener:
    """Exit records of every task that exits on ``cpus``, as numpy batches of ``DTYPE``.

    ``cpus``: a cpulist string (``"0-3,8"``) or CPU numbers; default every *possible* CPU, so
    CPUs brought online later are covered.  ``shards``: group the CPUs onto this many sockets
    (contiguous, balanced); default one socket per CPU, which makes loss exact per CPU.
    ``rcvbuf``: receive-buffer bytes per socket; default room for DEFAULT_EVENTS_PER_CPU
    messages per CPU (SO_RCVBUFFORCE, or SO_RCVBUF capped by net.core.rmem_max with a warning).
    ``batch_size``: most records one read returns.  ``linger``: seconds a blocking read keeps
    gathering after the first record.  ``ack_timeout``: seconds to wait for the kernel to
    acknowledge each (de)registration.

    Raises CpumaskError (bad CPU list), PermissionDeniedError (no CAP_NET_ADMIN),
    NamespaceError (child user or pid namespace); warns ForeignNetnsWarning when registered from
    a network namespace the kernel sends no exit events to.
    """

    def __init__(self, cpus: Union[None, str, Iterable[int]] = None, shards: Optional[int] = None,
                 rcvbuf: Optional[int] = None, *, batch_size: int = DEFAULT_BATCH,
                 linger: float = DEFAULT_LINGER, ack_timeout: float = REGISTER_TIMEOUT):
        self._closed = True          # until open succeeds; close() and __del__ rely on it
        self._shards: List[_Shard] = []
        possible = cpumask.possible()
        self.cpus: Tuple[int, ...] = cpumask.parse(cpumask.kernel_string(
            possible if cpus is None else cpus, possible))
        groups: List[Tuple[int, Tuple[int, ...]]]
        if shards is None:
            groups = [(c, (c,)) for c in self.cpus]
        else:
            groups = list(enumerate(cpumask.split(self.cpus, shards)))
        if batch_size < 2:
            raise ValueError("batch_size must be at least 2 (a message may carry two records)")
        if not 0 <= linger <= 60:
            raise ValueError("linger is in seconds, between 0 and 60")
        self.batch_size = int(batch_size)
        self.linger = float(linger)
        self._timeout = ack_timeout
        self._pid = os.getpid()
        # reentrant: a signal handler that calls close() runs inside read(), on the same thread
        self._read_lock = threading.RLock()
        self._state_lock = threading.Lock()
        self._closing = False
        self._waiters: set = set()   # (loop, future) of async iterators waiting for data

        # fixed memory: the record array here; the recvmmsg arena and the notes in the Drain
        self._records = np.zeros(self.batch_size, layout.DTYPE)
        self._record_bytes = self._records.view(np.uint8)
        self._notes_cap = NSLOTS + 2 * len(groups) + 8
        self._head = 0               # rows [head, filled) are decoded and not yet delivered
        self._filled = 0
        self._in_flight = False      # a tsf_drain call whose result is not yet accounted
        self._flight_base = 0        # _filled when that call started
        self._delivered = 0
        self._discarded = 0
        self._final_drops: Optional[List[int]] = None
        self._kept: Optional[List[np.ndarray]] = None   # stop() collects here instead of discarding
        self._keep_room = 0

        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._epoll = None
        try:
            self.family = netlink.resolve_family()
            self._open_shards(groups, rcvbuf)
            self._build_c_state()
            self._closed = False
            self._register()
        except BaseException:
            self._closed = False
            self._teardown(deregister=False)
            raise
        self._check_netns()
        self._epoll = _make_epoll([s.sock.fileno() for s in self._shards] + [self._wake_r])
        _open_listeners.add(self)

    # -- setup -----------------------------------------------------------------------------
    def _open_shards(self, groups, rcvbuf: Optional[int]) -> None:
        for shard_id, cpus in groups:
            sock = netlink.open_socket()
            try:
                self._size_rcvbuf(sock, len(cpus), rcvbuf)
            except BaseException:
                sock.close()
                raise
            self._shards.append(_Shard(shard_id, tuple(cpus), cpumask.format(cpus), sock))

    def _size_rcvbuf(self, sock: socket.socket, ncpus: int, rcvbuf: Optional[int]) -> None:
        if rcvbuf is not None:
            netlink.set_rcvbuf(sock, int(rcvbuf), warn=True)
            return
        want = DEFAULT_EVENTS_PER_CPU * ncpus * EVENT_TRUESIZE   # what sk_rcvbuf must reach
        granted = netlink.set_rcvbuf(sock, want // 2, warn=False)  # the kernel doubles requests
        if granted < want:
            warnings.warn(
                f"exit listener receive buffer is {granted} bytes, room for about "
                f"{granted // EVENT_TRUESIZE} exit messages (~{EVENT_TRUESIZE} B each) instead of "
                f"{want // EVENT_TRUESIZE}: without CAP_NET_ADMIN SO_RCVBUF is capped by "
                "net.core.rmem_max. Raise it (sysctl net.core.rmem_max) or pass rcvbuf=; bursts "
                "larger than that between two reads are dropped (and counted in stats.lost)",
                RuntimeWarning, stacklevel=4)

    def _build_c_state(self) -> None:
        self._drain_state = Drain(self.family.id, [s.sock.fileno() for s in self._shards],
                                  shards=[s.id for s in self._shards],
                                  track_seq=[len(s.cpus) == 1 for s in self._shards],
                                  wake_fd=self._wake_r, notes=self._notes_cap)
        self._src = [self._drain_state.source(i) for i in range(len(self._shards))]
        self._res = self._drain_state.last

    def _check_netns(self) -> None:
        if in_initial_namespace("net") is False:
            warnings.warn(
                "the exit listener registered, but this process is not in the initial network "
                "namespace, and the kernel sends exit events only to listeners there: it will "
                "receive nothing. Run it in the host's network namespace (e.g. docker --net=host)",
                ForeignNetnsWarning, stacklevel=3)

    # -- the C call --------------------------------------------------------------------------
    def _settle(self) -> None:
        """Account for a tsf_drain call that an exception (KeyboardInterrupt) cut off before its
        records were counted: they stay for the next read instead of being lost."""
        if self._in_flight:
            self._filled = self._flight_base + self._res.records   # idempotent
            self._in_flight = False

    def _drain(self, timeout_ms: int, capacity: int, linger_ms: int) -> None:
        self._flight_base = self._filled
        self._in_flight = True
        self._drain_state.run(self._records, self._filled, capacity, timeout_ms=timeout_ms,
                              min_records=1, linger_ms=linger_ms)
        # a signal handler may raise right after the call: _settle() then does this later
        self._filled = self._flight_base + self._res.records
        self._in_flight = False

    def _register(self) -> None:
        try:
            failures = self._exchange(self._shards, register=True)
        except BaseException:   # e.g. no ACK in time: undo whatever did register, best effort
            self._timeout = min(self._timeout, 1.0)
            try:
                self._exchange(self._shards, register=False)
            except (OSError, TaskstatsError):
                pass
            raise
        if failures:
            failed = {id(shard) for shard, _ in failures}
            registered = [s for s in self._shards if id(s) not in failed]
            if registered:   # undo the part that worked before giving up
                try:
                    self._exchange(registered, register=False)
                except (OSError, TaskstatsError):
                    pass
            shard, err = failures[0]
            raise _register_error(err, shard.mask, register=True)

    def _exchange(self, shards: Sequence[_Shard], register: bool) -> List[Tuple[_Shard, int]]:
        """Send a (de)registration on each of ``shards`` and wait for every ACK; returns the
        (shard, errno) of those the kernel refused.  Exit messages that arrive before an ACK go
        through the normal path: into the batch (when registering), counted, seq tracked."""
        pending: Dict[int, _Shard] = {}
        for shard in shards:
            seq = netlink.next_seq()
            shard.sock.send(_native.build_cpumask(self.family.id, seq, register, shard.mask))
            pending[seq] = shard
        failures: List[Tuple[_Shard, int]] = []
        deadline = time.monotonic() + self._timeout
        while pending:
            free = self.batch_size - self._filled
            if free < 2:
                if register:
                    raise ReplyTimeoutError("the exit stream filled the record array before the "
                                            "kernel acknowledged the registration")
                self._discard_pending()
                free = self.batch_size
            left = deadline - time.monotonic()
            if left <= 0:
                raise ReplyTimeoutError(
                    f"the kernel did not acknowledge {'registering' if register else 'deregistering'}"
                    f" CPUs {', '.join(s.mask for s in pending.values())} within {self._timeout:g} s")
            self._drain(max(1, math.ceil(left * 1000)), free, 0)
            if self._res.error:
                raise OSError(self._res.error, "receiving from a listener socket: "
                                               f"{os.strerror(self._res.error)}")
            for note in self._drain_state.notes():
                seq = int(note["seq"])
                if seq in pending:
                    shard = pending.pop(seq)
                    if int(note["kind"]) == NOTE_ERROR:
                        failures.append((shard, int(note["code"])))
            if not register:
                self._discard_pending()
        return failures

    # -- reading ---------------------------------------------------------------------------
    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def shards(self) -> Dict[int, Tuple[int, ...]]:
        """Shard number (the ``shard`` field of records) -> the CPUs its socket serves."""
        return {s.id: s.cpus for s in self._shards}

    def fileno(self) -> int:
        """An epoll fd that is readable whenever any listener socket is (or close() was called):
        for selectors and event loops.  Read with ``read(timeout=0)`` when it fires."""
        if self._epoll is None:
            raise ValueError("the listener is closed")
        return self._epoll.fileno()

    def read(self, timeout: Optional[float] = None, max_records: Optional[int] = None, *,
             copy: bool = True) -> np.ndarray:
        """The next batch of exit records (a DTYPE array).

        Waits up to ``timeout`` seconds (None: until a record arrives; 0: never) for the first
        record, then gathers for up to ``linger`` seconds more and returns up to ``max_records``
        (default ``batch_size``) records.  An empty array means the timeout passed, or the
        listener was closed from another thread while waiting.

        ``copy=True`` (default) returns a fresh array of just the rows: keep it as long as you
        like.  ``copy=False`` returns a view into the listener's reused record array, valid only
        until the next read: it saves one memcpy per record (~11 ns for 712 bytes; measured in
        bench/bench_exit_stream.py).

        A signal (KeyboardInterrupt) during the wait propagates; records already received stay
        for the next read.
        """
        if self._closed:
            raise ValueError("read from a closed ExitListener")
        self._check_owner()
        batch = self._read(timeout, max_records, copy)
        return _EMPTY.copy() if batch is None else batch

    def _check_owner(self) -> None:
        if os.getpid() != self._pid:
            raise TaskstatsError(
                f"this ExitListener belongs to process {self._pid}: a forked child shares its "
                "sockets and would steal the parent's records. Open a new ExitListener in the "
                "child (and close() the inherited one, which only drops the child's copies)")

    def _read(self, timeout: Optional[float], max_records: Optional[int],
              copy: bool) -> Optional[np.ndarray]:
        """read(), but None once the listener is closed."""
        limit = self.batch_size if max_records is None else int(max_records)
        if limit < 1:
            raise ValueError("max_records must be at least 1")
        limit = min(limit, self.batch_size)
        deadline = None if timeout is None else time.monotonic() + max(0.0, timeout)
        with self._read_lock:
            while True:
                if self._closed or self._closing:
                    return None
                self._settle()
                if self._head < self._filled:
                    return self._deliver(limit, copy)
                self._head = self._filled = 0
                # Never wait in C for long: a signal that lands between Python's last check and
                # poll() does not interrupt poll, so its handler (KeyboardInterrupt) would wait
                # for the next exit on a quiet machine.  Coming back every slice runs it.
                if deadline is None:
                    timeout_ms = SIGNAL_CHECK_MS
                else:
                    timeout_ms = min(SIGNAL_CHECK_MS,
                                     max(0, math.ceil((deadline - time.monotonic()) * 1000)))
                linger_ms = int(self.linger * 1000) if timeout_ms != 0 else 0
                self._drain(timeout_ms, max(limit, 2), linger_ms)
                res = self._res
                if res.error:
                    raise OSError(res.error, f"receiving exit records: {os.strerror(res.error)}")
                if self._filled:
                    continue
                if res.woken:
                    return None
                if res.timed_out and (deadline is not None and time.monotonic() >= deadline):
                    return _EMPTY.copy()
                # interrupted by a signal: looping back runs its handler (KeyboardInterrupt
                # propagates from here, with nothing lost); otherwise wait on

    def _deliver(self, limit: int, copy: bool) -> np.ndarray:
        n = min(limit, self._filled - self._head)
        if copy:
            # copy the bytes, not the records: numpy copies a structured dtype with holes field
            # by field (~170 ns per 712-byte record here) but raw bytes at memcpy speed (~11 ns)
            size = layout.DTYPE.itemsize
            rows = self._record_bytes[self._head * size:(self._head + n) * size].copy().view(layout.DTYPE)
        else:
            rows = self._records[self._head:self._head + n]
        self._head += n
        self._delivered += n
        return rows

    def _discard_pending(self) -> None:
        """Drop the decoded, undelivered rows (counting them in stats.discarded), or, inside
        stop(), keep them for its result up to its bound."""
        self._settle()
        if self._kept is not None and self._keep_room and self._head < self._filled:
            rows = self._deliver(self._keep_room, copy=True)
            self._kept.append(rows)
            self._keep_room -= len(rows)
        self._discarded += self._filled - self._head
        self._head = self._filled = 0

    def __iter__(self) -> Iterator[np.ndarray]:
        """Batches until the listener is closed (from another thread, or a signal handler)."""
        self._check_owner()
        while True:
            batch = self._read(None, None, True)
            if batch is None:
                return
            if len(batch):
                yield batch

    # -- asyncio ---------------------------------------------------------------------------
    def aiter(self, max_records: Optional[int] = None):
        """``async for batch in listener.aiter():`` batches on the running event loop, until the
        listener is closed.  Waits with ``loop.add_reader`` on ``fileno()`` (an epoll fd over all
        sockets) and never blocks the loop; lingers with ``asyncio.sleep`` like ``read`` does."""
        return self._aiter(max_records)

    def __aiter__(self):
        return self._aiter(None)

    async def _aiter(self, max_records: Optional[int]):
        loop = asyncio.get_running_loop()
        self._check_owner()
        if self._closing or self._closed:
            return
        # our own handle on the epoll instance: close() may close the listener's meanwhile
        fd = os.dup(self.fileno())
        try:
            while True:
                batch = self._read(0, max_records, True)
                if batch is None:
                    return
                if len(batch):
                    yield batch
                    continue
                ready = loop.create_future()
                waiter = (loop, ready)
                self._waiters.add(waiter)
                loop.add_reader(fd, _resolve, ready)
                try:
                    if not self._closing:   # close() resolves waiters it sees; check after adding
                        await ready
                finally:
                    loop.remove_reader(fd)
                    self._waiters.discard(waiter)
                if self.linger and not self._closing:
                    await asyncio.sleep(self.linger)
        finally:
            os.close(fd)

    # -- accounting --------------------------------------------------------------------------
    @property
    def stats(self) -> ListenerStats:
        """Counters so far, with the kernel's drop counters read now."""
        drops = self._final_drops if self._final_drops is not None else self._read_drops()
        shards = []
        for i, shard in enumerate(self._shards):
            src = self._src[i]
            per_cpu = src.track_seq == 1
            shards.append(ShardStats(
                shard=shard.id, cpus=shard.cpus,
                messages=int(src.events), records=int(src.records), dropped=drops[i],
                truncated=int(src.truncated), overruns=int(src.overruns), malformed=int(src.bad),
                seq_gaps=int(src.seq_lost) if per_cpu else None,
                seq_foreign=int(src.seq_foreign) if per_cpu else None,
                seq_pending=bool(src.held) if per_cpu else False))
        per_cpu_shards = [s for s in shards if s.seq_gaps is not None]
        gaps = sum(s.seq_gaps or 0 for s in per_cpu_shards)
        foreign = sum(s.seq_foreign or 0 for s in per_cpu_shards)
        one_per_cpu = all(len(s.cpus) == 1 for s in shards)
        return ListenerStats(
            received=sum(s.records for s in shards),
            delivered=self._delivered,
            messages=sum(s.messages for s in shards),
            lost=sum(s.lost for s in shards),
            dropped=sum(s.dropped for s in shards),
            truncated=sum(s.truncated for s in shards),
            overruns=sum(s.overruns for s in shards),
            malformed=sum(s.malformed for s in shards),
            seq_gaps=gaps, seq_foreign=foreign,
            seq_pending=sum(1 for s in per_cpu_shards if s.seq_pending),
            seq_unexplained=gaps - foreign - sum(s.dropped for s in per_cpu_shards),
            discarded=self._discarded,
            lost_by_shard={s.shard: s.lost for s in shards},
            lost_by_cpu={s.cpus[0]: s.lost for s in shards} if one_per_cpu else None,
            shards=tuple(shards))

    def _read_drops(self) -> List[int]:
        """The kernel's drop counters, read into a scratch copy so a concurrent read (which also
        refreshes them, on ENOBUFS) never sees a half-updated value."""
        if self._closed:
            return [src.drops for src in self._src]
        return [_native.read_drops(src.fd, src.drops) for src in self._src]

    # -- closing -----------------------------------------------------------------------------
    def close(self) -> None:
        """Deregister every socket, then close it (idempotent; safe from any thread: a read
        waiting in another thread returns, an async iterator ends)."""
        if os.getpid() != self._pid:
            self._close_in_child()
            return
        with self._state_lock:
            if self._closed:
                return
            self._closing = True
            try:
                os.write(self._wake_w, b"x")      # wake a read waiting in another thread
            except OSError:
                pass
            for loop, fut in list(self._waiters):
                try:
                    loop.call_soon_threadsafe(_resolve, fut)
                except RuntimeError:               # that loop is closed
                    pass
            with self._read_lock:
                try:   # the reader is out: empty the pipe so the deregistration drains can wait
                    os.read(self._wake_r, 64)
                except OSError:
                    pass
                self._teardown(deregister=os.getpid() == self._pid)

    def stop(self) -> np.ndarray:
        """Deregister, close, and return every record not yet read: those waiting in the listener
        and in its sockets, and exits that raced the deregistration.  The end of a recording:
        read until you want to stop, then ``stop()`` and keep its rows too.

        What it returns is bounded by what the sockets could hold (their receive buffers, about
        two records per exit message); past that (a flood that keeps the sockets full while we
        deregister) records are counted in ``stats.discarded``.  A closed listener returns an
        empty array.
        """
        self._check_owner()
        if self._closed:
            return _EMPTY.copy()
        room = self.batch_size
        for shard in self._shards:
            try:
                room += 2 * shard.sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) // EVENT_TRUESIZE
            except OSError:
                pass
        kept: List[np.ndarray] = []
        # not under _read_lock: close() first wakes a read waiting in another thread, which
        # holds it; the rows are only collected inside close(), under that lock
        self._kept, self._keep_room = kept, room
        try:
            self.close()
        finally:
            self._kept, self._keep_room = None, 0
        if not kept:
            return _EMPTY.copy()
        return kept[0] if len(kept) == 1 else np.concatenate(kept)

    def _close_in_child(self) -> None:
        """close() in a forked child: drop the child's copies of the fds and nothing else.  The
        sockets, their registrations and the wake pipe stay the parent's (writing the pipe
        would end the parent's read; deregistering would stop its stream)."""
        with self._state_lock:
            if self._closed:
                return
            self._closing = True
            self._teardown(deregister=False)

    def _teardown(self, deregister: bool) -> None:
        try:
            if deregister and self._shards and hasattr(self, "_src"):
                try:
                    self._discard_pending()
                    self._drain_everything()
                    failures = self._exchange(self._shards, register=False)
                    if failures:
                        raise _register_error(failures[0][1], failures[0][0].mask, register=False)
                    # an exit that found the socket on the list just before the deregistration
                    # can still land after its ACK: take it (or count it) before closing
                    self._drain_everything()
                except (OSError, TaskstatsError) as e:
                    warnings.warn(f"exit listener: deregistering failed ({e}); the kernel drops "
                                  "the closed sockets lazily", RuntimeWarning, stacklevel=3)
                self._discard_pending()
                self._final_drops = self._read_drops()
            elif self._shards and hasattr(self, "_src"):
                self._final_drops = [src.drops for src in self._src]
        finally:
            self._closed = True
            _open_listeners.discard(self)
            for shard in self._shards:
                shard.sock.close()
            if self._epoll is not None:
                self._epoll.close()
                self._epoll = None
            for fd in (self._wake_r, self._wake_w):
                try:
                    os.close(fd)
                except OSError:
                    pass

    def _drain_everything(self) -> None:
        """Empty every socket (counting what was in them as discarded) so the kernel has room
        for the deregistration ACK and the congestion flag is cleared."""
        for _ in range(1024):   # bounded: a flood of exits could keep the sockets busy forever
            self._drain(0, self.batch_size, 0)
            full = self._res.records >= self.batch_size - 1
            self._discard_pending()
            if not full or self._res.error:
                return              # the record space did not fill: every socket ran empty

    def __enter__(self) -> "ExitListener":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        if not getattr(self, "_closed", True):
            try:
                self.close()
            except Exception:
                pass

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return (f"<ExitListener {state} cpus={cpumask.format(self.cpus)!r} "
                f"sockets={len(self._shards)}>")


_EMPTY = np.zeros(0, layout.DTYPE)


def _resolve(fut: "asyncio.Future") -> None:
    if not fut.done():
        fut.set_result(None)


def _make_epoll(fds: Sequence[int]):
    import select
    ep = select.epoll(len(fds))
    for fd in fds:
        ep.register(fd, select.EPOLLIN)
    return ep
