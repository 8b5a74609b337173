"""A fake TASKSTATS kernel for the exit stream: the far ends of AF_UNIX datagram socketpairs
(one datagram per send, like netlink) that answer (de)registrations and send exit messages.

    with FakeKernel(2) as kernel:
        listener = kernel.listener(cpus=[0, 1])     # ExitListener._over the near ends
        kernel.exit(0, pid=100, seq=1)              # CPU 0's socket gets an exit message
        batch = listener.read(timeout=1)

``FakeKernel(n, refuse=errno.EPERM)`` refuses every registration with that errno, the way the
kernel refuses a process without CAP_NET_ADMIN.  ``requests`` lists what each socket asked:
``(socket index, "register" | "deregister", cpulist)``, in arrival order.  Messages are encoded
with tests/wire.py.  No root needed.
"""

from __future__ import annotations

import select
import socket
import struct
import threading
from typing import List, Optional, Tuple

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
        return ExitListener._over(self.ours, FAMILY, cpus=cpus, **kw)

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
