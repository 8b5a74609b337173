"""Fake TASKSTATS kernels: the far ends of AF_UNIX datagram socketpairs (one datagram per send,
like netlink), served by a thread, for tests that need no root.

``FakeKernel`` is the exit stream's kernel: it answers (de)registrations and sends exit messages.
``QueryKernel`` is the query side's: it answers GET requests the way TASKSTATS does (a record,
ESRCH, or what a test's policy says), on as many sockets as a ``Connection`` opens.

    with FakeKernel(2) as kernel:
        listener = kernel.listener(cpus=[0, 1])     # ExitListener.over_sockets the near ends
        kernel.exit(0, pid=100, seq=1)              # CPU 0's socket gets an exit message
        batch = listener.read(timeout=1)

``FakeKernel(n, refuse=errno.EPERM)`` refuses every registration with that errno, the way the
kernel refuses a process without CAP_NET_ADMIN.  ``requests`` lists what each socket asked:
``(socket index, "register" | "deregister", cpulist)``, in arrival order.  Messages are encoded
with tests/wire.py.  No root needed.
"""

from __future__ import annotations

import errno
import random
import select
import socket
import struct
import threading
from typing import Callable, Dict, Iterable, List, Mapping, Optional, Tuple

import wire
from taskstats_fast.kernel import netlink

FAMILY = netlink.Family(wire.TASKSTATS_FAMILY, 1, 6)
ATTR_REGISTER_CPUMASK, ATTR_DEREGISTER_CPUMASK = 3, 4


def exit_message(pid: int, seq: int, *, tgid: Optional[int] = None, version: int = 16,
                 comm: bytes = b"fake") -> bytes:
    """An exit event as the kernel sends it (port 0, the CPU's seq): AGGR_PID, plus AGGR_TGID for
    the last thread of a group."""
    parts = [wire.aggr(1, pid, wire.stats(version, {"ac_pid": pid, "ac_exitcode": pid * 256,
                                                    "ac_comm": comm}))]
    if tgid is not None:
        parts.append(wire.aggr(2, tgid, wire.stats(version, {"ac_pid": 0})))
    return wire.nlmsg(wire.TASKSTATS_FAMILY, wire.genl(wire.CMD_NEW, parts), seq=seq, pid=0)


class FakeKernel:
    """``n`` listener sockets' kernel side, served by one thread."""

    def __init__(self, n: int, *, refuse: int = 0, ack: bool = True, rcvbuf: int = 1 << 20):
        self.refuse = refuse
        self.refuse_deregister = 0     #: errno for deregistrations (0: ACK them)
        self.ack = ack
        self.requests: List[Tuple[int, str, str]] = []
        self.ours: List[socket.socket] = []
        self.theirs: List[socket.socket] = []
        for _ in range(n):
            a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
            b.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, rcvbuf)
            self.ours.append(a)
            self.theirs.append(b)
        self._changed = threading.Condition()
        self._stop_r, self._stop_w = socket.socketpair()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def listener(self, cpus=(0,), **kw):
        """An ExitListener over this kernel's sockets (one per shard)."""
        from taskstats_fast import ExitListener
        kw.setdefault("rcvbuf", 1 << 16)   # within net.core.rmem_max: no warning without root
        kw.setdefault("ack_timeout", 2.0)
        return ExitListener.over_sockets(self.ours, FAMILY, cpus=cpus, **kw)

    def exit(self, sock: int, pid: int, seq: int, **kw) -> None:
        """Send an exit message on socket ``sock``."""
        self.send(sock, exit_message(pid, seq, **kw))

    def send(self, sock: int, datagram: bytes) -> None:
        self.theirs[sock].send(datagram)

    def wait_for(self, count: int, timeout: float = 2.0) -> bool:
        """Wait until ``count`` requests have arrived."""
        with self._changed:
            return self._changed.wait_for(lambda: len(self.requests) >= count, timeout)

    def _serve(self) -> None:
        live = list(self.theirs)
        while True:
            ready, _, _ = select.select(live + [self._stop_r], [], [])
            if self._stop_r in ready:
                return
            for sock in ready:
                try:
                    data = sock.recv(1 << 16)
                except OSError:
                    data = b""
                if len(data) < 24:     # the listener closed its end
                    live.remove(sock)
                    continue
                self._answer(self.theirs.index(sock), sock, data)

    def _answer(self, index: int, sock: socket.socket, data: bytes) -> None:
        _, _, _, seq, _ = struct.unpack_from("=IHHII", data)
        alen, atype = struct.unpack_from("=HH", data, 20)
        mask = data[24:20 + alen].rstrip(b"\0").decode()
        what = {ATTR_REGISTER_CPUMASK: "register", ATTR_DEREGISTER_CPUMASK: "deregister"}[atype]
        with self._changed:
            self.requests.append((index, what, mask))
            self._changed.notify_all()
        if self.ack:
            err = -(self.refuse if what == "register" else self.refuse_deregister)
            sock.send(wire.error_msg(err, seq))

    def close(self) -> None:
        self._stop_w.send(b"x")
        self._thread.join(2)
        for s in self.theirs + self.ours + [self._stop_r, self._stop_w]:
            s.close()

    def __enter__(self) -> "FakeKernel":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# ---- queries -------------------------------------------------------------------------------------
ATTR_PID, ATTR_TGID = 1, 2
#: Fields a TGID reply sums over the group's threads (times, context switches, delays); the rest
#: of a TGID record is zero, as the kernel sends it.
TGID_SUMMED = ("ac_utime", "ac_stime", "nvcsw", "nivcsw", "cpu_count", "cpu_delay_total",
               "cpu_run_real_total", "cpu_run_virtual_total", "blkio_count", "blkio_delay_total")


class QueryKernel:
    """Answers GET requests like TASKSTATS does.

    ``live``: ids that exist, each a single-threaded process whose record has ``ac_pid`` = id,
    ``ac_utime`` = 10 x id and comm ``fake<id>``.  ``tasks``: {tid: {"ac_tgid": tgid, field:
    value...}} for thread groups: a PID query answers with the thread's values, a TGID query with
    the TGID_SUMMED fields summed over the group (plus ``dead`` {tgid: {field: value}}, the totals
    of threads that already exited, which only TGID replies include).  Anything else is ESRCH.
    ``policy(seq, ident)`` may override an answer: return a list of datagrams to send instead.
    ``shuffle`` reorders the replies to one request datagram; ``reply=False`` never answers.

        with QueryKernel(live={1, 2}) as kernel:
            conn = kernel.connection()       # Connection.over_socket on a new socketpair
            conn.pids([1, 2, 3]).missing     # -> [3]
    """

    def __init__(self, live: Iterable[int] = (), *, tasks: Optional[Mapping[int, Dict]] = None,
                 dead: Optional[Mapping[int, Dict]] = None,
                 policy: Optional[Callable[[int, int], Optional[List[bytes]]]] = None,
                 shuffle: bool = False, reply: bool = True, rcvbuf: int = 1 << 20):
        self.live = set(live)
        self.tasks = dict(tasks or {})
        self.dead = dict(dead or {})
        self.policy = policy
        self.shuffle = shuffle
        self.reply = reply
        self.rcvbuf = rcvbuf
        self.request_datagrams: List[int] = []
        self._theirs: List[socket.socket] = []
        self._ours: List[socket.socket] = []
        self._lock = threading.Lock()
        self._wake_r, self._wake_w = socket.socketpair()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def socket(self) -> socket.socket:
        """A new near end, served like the others (what a Connection opens per worker)."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        ours.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.rcvbuf)
        with self._lock:
            self._ours.append(ours)
            self._theirs.append(theirs)
        self._wake_w.send(b"x")
        return ours

    def connection(self, **kw):
        """A Connection over a new socket of this kernel; its extra sockets come from here too."""
        from taskstats_fast import Connection
        kw.setdefault("timeout", 2.0)
        return Connection.over_socket(self.socket(), FAMILY, open_socket=self.socket, **kw)

    # -- answers -----------------------------------------------------------------------------
    def record(self, attr: int, ident: int) -> Optional[bytes]:
        """The STATS payload for a query, or None (ESRCH)."""
        if attr == ATTR_PID and ident in self.tasks:
            return wire.stats(16, {"ac_pid": ident, **self.tasks[ident]})
        if attr == ATTR_TGID and (ident in self.tasks or ident in self.dead):
            tgid = self.tasks[ident]["ac_tgid"] if ident in self.tasks else ident
            group = [v for v in self.tasks.values() if v.get("ac_tgid") == tgid]
            group.append(self.dead.get(tgid, {}))
            return wire.stats(16, {f: sum(int(v.get(f, 0)) for v in group) for f in TGID_SUMMED})
        if ident in self.live:
            values = {"ac_utime": ident * 10}
            if attr == ATTR_PID:
                values.update(ac_pid=ident, ac_tgid=ident, ac_comm=b"fake%d" % ident)
            return wire.stats(16, values)
        return None

    def answer(self, seq: int, attr: int, ident: int) -> List[bytes]:
        if self.policy:
            custom = self.policy(seq, ident)
            if custom is not None:
                return custom
        return self.default_answer(seq, attr, ident)

    def default_answer(self, seq: int, attr: int, ident: int) -> List[bytes]:
        payload = self.record(attr, ident)
        if payload is None:
            return [wire.error_msg(-errno.ESRCH, seq)]
        return [wire.taskstats_msg(wire.aggr(attr, ident, payload), seq=seq)]

    # -- the serving thread ------------------------------------------------------------------
    def _serve(self) -> None:
        while True:
            with self._lock:
                live = list(self._theirs)
            ready, _, _ = select.select(live + [self._wake_r], [], [])
            if self._wake_r in ready:
                self._wake_r.recv(64)          # a new socket to watch, or close()
                if self._thread is None:
                    return
            for sock in ready:
                if sock is self._wake_r:
                    continue
                try:
                    data = sock.recv(1 << 20)
                except OSError:
                    data = b""
                if not data:
                    with self._lock:
                        self._theirs.remove(sock)
                    continue
                self._requests(sock, data)

    def _requests(self, sock: socket.socket, data: bytes) -> None:
        self.request_datagrams.append(len(data))
        replies: List[bytes] = []
        off = 0
        while off + 28 <= len(data):
            length, _, _, seq, _ = struct.unpack_from("=IHHII", data, off)
            _, atype, ident = struct.unpack_from("=HHI", data, off + 20)
            replies += self.answer(seq, atype, ident)
            off += max(length, 28)
        if self.shuffle:
            random.Random(len(self.request_datagrams)).shuffle(replies)
        if not self.reply:
            return
        for r in replies:
            try:
                sock.send(r)
            except OSError:
                return

    def close(self) -> None:
        thread, self._thread = self._thread, None
        self._wake_w.send(b"q")
        if thread is not None:
            thread.join(2)
        for s in self._theirs + self._ours + [self._wake_r, self._wake_w]:
            s.close()

    def __enter__(self) -> "QueryKernel":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
